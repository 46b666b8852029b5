"""Peer: a bare h11 server, the floor h11 allows for vigil's request cycle.

The least a correct server built on h11's public API does per request:
one ``selectors.SelectSelector`` (select(), as vigil), non-blocking sockets
with TCP_NODELAY, one ``h11.Connection`` per connection, keep-alive and
pipelining. h11 parses every request and writes every response (Response,
Data and EndOfMessage, sent with one ``send``); what the kernel does not
take waits for writability. Basic auth is a dict lookup of the
Authorization header's bytes (given with ``--authorization``; vigil too
caches a verified header); anything else gets 401. ``/index.html`` is read
once into memory, ``/api/me`` is a small JSON body; both carry Date,
Content-Type and Content-Length, the file an ETag too. No access log.
``python -m bench.peer_h11 --port P --root DIR --authorization VALUE``;
stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import http
import json
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

import h11

RECV_SIZE = 65536
ME = json.dumps({"user": "bench", "role": "operator"}, separators=(",", ":")).encode()
REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}
JSON = b"application/json"
HTTP_DATE = "%a, %d %b %Y %H:%M:%S GMT"

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]


class Peer:
    """The listening socket, the selector, and what there is to serve."""

    def __init__(self, port: int, index: Path, authorization: bytes) -> None:
        self.selector = selectors.SelectSelector()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=128)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self.accept)
        self.users = {authorization: "bench"}  # verified Authorization header -> user
        st = index.stat()
        etag = b'"%x-%x"' % (st.st_mtime_ns, st.st_size)
        page = (200, [(b"Content-Type", b"text/html"), (b"ETag", etag)], index.read_bytes())
        self.pages: dict[bytes, Answer] = {
            b"/index.html": page,
            b"/api/me": (200, [(b"Content-Type", JSON)], ME),
        }
        self._date = (0, b"")

    def date(self) -> bytes:
        """The Date header, formatted once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, time.strftime(HTTP_DATE, time.gmtime(now)).encode())
        return self._date[1]

    def answer(self, request: h11.Request) -> Answer:
        page = self.pages.get(request.target)
        if page is None:
            return 404, [(b"Content-Type", JSON)], b'{"error":"not found"}'
        if request.method != b"GET":
            return 405, [(b"Content-Type", JSON), (b"Allow", b"GET")], b'{"error":"GET only"}'
        auth = next((v for k, v in request.headers if k == b"authorization"), None)
        if auth not in self.users:
            challenge = (b"WWW-Authenticate", b'Basic realm="bench"')
            return 401, [(b"Content-Type", JSON), challenge], b'{"error":"login required"}'
        return page

    def accept(self, _mask: int) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # BlockingIOError: none left; or aborted before accept
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock)
            self.selector.register(sock, selectors.EVENT_READ, conn.on_event)

    def serve(self) -> None:
        while True:
            for key, mask in self.selector.select():
                key.data(mask)


class Connection:
    """One client: its socket, its h11 state and what is left to write."""

    def __init__(self, peer: Peer, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER)
        self.request: h11.Request | None = None  # read, its body not yet whole
        self.outbuf = b""
        self.done = self.closed = False  # done: close once outbuf is written

    def on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.write(b"")
        if mask & selectors.EVENT_READ and not (self.done or self.closed):
            self.read()

    def read(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        conn = self.h11
        conn.receive_data(data)  # b"" when the client closed
        try:
            self.process()
        except h11.RemoteProtocolError as e:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self.respond((e.error_status_hint, [(b"Connection", b"close")], b""))
        if conn.our_state is not h11.DONE and conn.our_state is not h11.IDLE:
            self.done = True  # MUST_CLOSE, CLOSED or ERROR
            self.write(b"")

    def process(self) -> None:
        """Answer every complete request buffered."""
        conn = self.h11
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                self.request = event
            elif isinstance(event, h11.EndOfMessage):
                assert self.request is not None
                self.respond(self.peer.answer(self.request))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            elif not isinstance(event, h11.Data):  # NEED_DATA, PAUSED, ConnectionClosed
                return

    def respond(self, answer: Answer) -> None:
        status, headers, body = answer
        conn = self.h11
        head = [(b"Date", self.peer.date()), *headers, (b"Content-Length", b"%d" % len(body))]
        out = conn.send(h11.Response(status_code=status, headers=head, reason=REASONS[status]))
        out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
        self.write(out + (conn.send(h11.EndOfMessage()) or b""))

    def write(self, data: bytes) -> None:
        """One ``send`` of what is pending plus ``data``; watch writability for the rest."""
        if self.closed:
            return
        pending = self.outbuf + data
        try:
            sent = self.sock.send(pending) if pending else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        was_pending = bool(self.outbuf)
        self.outbuf = pending[sent:]
        if self.done and not self.outbuf:
            self.close()
        elif bool(self.outbuf) != was_pending:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
            self.peer.selector.modify(self.sock, events, self.on_event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.peer.selector.unregister(self.sock)
            self.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--authorization", required=True, help="the header value to accept")
    args = parser.parse_args()
    peer = Peer(args.port, Path(args.root) / "index.html", args.authorization.encode())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    peer.serve()


if __name__ == "__main__":
    main()
