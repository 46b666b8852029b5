"""One accepted TCP connection: socket I/O around an ``HttpSession``.

This is the imperative shell for HTTP (socketserver's "table of partially
finished requests"): it reads what the socket has, feeds the session, hands
complete requests to the server, and writes the answers.

States, checked in this order by ``process``:
- ``closing``: an answer that ends the connection is queued; nothing more is read
  into requests; the socket closes once the write buffer is empty.
- ``parked``: a request is waiting for something outside (a device's result);
  ``finish`` answers it later and processing resumes (pipelined requests wait).
- ``streaming``: the response is an endless chunked body (SSE); ``push`` adds to it.

Writes: a whole response is one ``send``; what the kernel does not take stays
in ``outbuf`` and the socket is watched for writability only while that buffer
is non-empty. Errors on this socket (ECONNRESET, ETIMEDOUT, EPIPE) close this
connection only, as a loss.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from server.config import User
from server.loop import READ, WRITE
from server.protocol import HttpSession, Request, Response
from server.responses import error

if TYPE_CHECKING:
    from server.app import Server

log = logging.getLogger(__name__)

RECV_SIZE = 65536


class Connection:
    __slots__ = (
        "addr",
        "closed",
        "closing",
        "head_started",
        "id",
        "last_active",
        "outbuf",
        "parked",
        "server",
        "session",
        "sock",
        "streaming",
        "user",
        "watching_write",
    )

    def __init__(self, server: Server, sock: socket.socket, conn_id: int, addr: str) -> None:
        self.server = server
        self.sock = sock
        self.id = conn_id
        self.addr = addr
        self.session = HttpSession(server.limits)
        self.outbuf = bytearray()
        self.user: User | None = None
        self.closed = self.closing = self.parked = self.streaming = False
        self.watching_write = False
        self.last_active = server.loop.now()
        self.head_started: float | None = None

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    # -- events from the loop -------------------------------------------
    def on_event(self, mask: int) -> None:
        if mask & WRITE:
            self._flush()
        if mask & READ and not self.closed:
            self._read()

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(e)
            return
        if not data:
            self.close(lost=False)
            return
        now = self.server.loop.now()
        self.last_active = now
        if self.closing:
            return
        if self.head_started is None:
            self.head_started = now
        self.session.receive(data)
        if not (self.parked or self.streaming):
            self.process()

    def process(self) -> None:
        """Answer every complete request buffered, until parked, streaming or closing."""
        server = self.server
        while not (self.parked or self.streaming or self.closing):
            item = self.session.next_request()
            if item is None:
                if self.head_started is None and not self.session.idle:
                    # part of a pipelined request is buffered: it is in flight now
                    self.head_started = server.loop.now()
                return
            if not isinstance(item, Request):
                self.respond(error(item.status, item.message), None)
                self.closing = True
                break
            response = server.handle(self, item)
            if response is None:
                return  # a handler parked the request or started a stream
            self.respond(response, item)
        if self.closing and not self.outbuf:
            self.close(lost=False)

    # -- output ----------------------------------------------------------
    def respond(self, response: Response, request: Request | None) -> None:
        """Send ``response`` to ``request`` (None: an error before a request was read)."""
        server = self.server
        self.send(self.session.respond(response, server.date()))
        server.log_access(self, request, response.status, len(response.body))
        if response.stream:
            self.streaming = True
            return
        self.head_started = None
        if not self.session.next_cycle() or server.stopping:
            self.closing = True

    def finish(self, response: Response, request: Request) -> None:
        """Answer a parked request and go on with any pipelined ones."""
        if self.closed:
            return
        self.parked = False
        self.respond(response, request)
        self.process()

    def push(self, data: bytes) -> None:
        """Append ``data`` to a streamed body; cut the stream off if the client lags."""
        if self.closed:
            return
        self.send(self.session.chunk(data))
        if len(self.outbuf) > self.server.config.http.max_sse_buffer:
            log.warning(
                "%s (%s): event stream not read, %d bytes queued: cut off",
                self.addr,
                self.user.name if self.user else "-",
                len(self.outbuf),
            )
            self.outbuf.clear()
            self.close(lost=False)

    def end_stream(self) -> None:
        """End a streamed body and close once it is written."""
        if self.closed:
            return
        self.send(self.session.end_stream())
        self.streaming = False
        self.closing = True
        if not self.outbuf:
            self.close(lost=False)

    def send(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self.outbuf:
            self.outbuf += data
            return
        sent = self._write(data)
        if sent is not None and sent < len(data):
            self.outbuf += data[sent:]
            self._watch_write(True)

    def _write(self, data: bytes | bytearray) -> int | None:
        """One ``send``: bytes the kernel took (0 if its buffer is full), None if lost."""
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            self._lost(e)
            return None

    def _lost(self, e: OSError) -> None:
        log.info("%s: connection lost: %s", self.addr, e.strerror or e)
        self.close(lost=True)

    def _flush(self) -> None:
        sent = self._write(self.outbuf)
        if sent is None:
            return
        del self.outbuf[:sent]
        if not self.outbuf:
            self._watch_write(False)
            if self.closing:
                self.close(lost=False)

    def _watch_write(self, on: bool) -> None:
        if self.watching_write != on and not self.closed:
            self.watching_write = on
            self.server.loop.modify(self.sock, READ | WRITE if on else READ, self.on_event)

    # -- the end -----------------------------------------------------------
    def close(self, lost: bool) -> None:
        """Close the socket and tell the server whether the peer was ``lost``."""
        if self.closed:
            return
        self.closed = True
        self.server.loop.unregister(self.sock)
        self.sock.close()
        self.server.connection_closed(self, lost)
