"""HTTP on the wire, for tests and bench/: request bytes, a response reader, clients, SSE.

Used over real sockets (end-to-end tests against a vigil process:
``Remote``) and over a loopback pair driven in-process
(``tests/testclient.py``): ``Reader`` calls ``pump`` before each read when
one is given, so the in-process server gets to run its loop. Both clients
share one request API (``Client``: ``request``, ``get``, ``post``, ``me``,
``online``, ``post_chats``).

``SSEParser`` is the one Server-Sent Events parser of the tests, the bench
and tests/sctp: line by line (``sse_events``) or text in pieces (``feed``).

Stdlib only (with tests/support.py, itself stdlib-only at import), so that
tests/netns.py can import it in its namespace client and in the bench.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support import basic

AUTH = basic("alice")


@dataclass
class Resp:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    method: str, target: str, headers: Mapping[str, str | None] | None = None, body: bytes = b""
) -> bytes:
    """The bytes of one request (Host and alice's credentials unless given; None drops one)."""
    hdrs = {"Host": "vigil.test", "Authorization": AUTH, **(headers or {})}
    if body and "Content-Length" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None
    )
    return head.encode("latin-1") + b"\r\n" + body


def chat(text: str, user: str = "alice") -> bytes:
    """The bytes of ``POST /api/chat`` with ``text`` as ``user``."""
    body = json.dumps({"text": text}).encode()
    return request(
        "POST",
        "/api/chat",
        {"Authorization": basic(user), "Content-Type": "application/json"},
        body,
    )


class Reader:
    """Reads responses one after another from one socket."""

    def __init__(self, sock: socket.socket, pump: Callable[[], bool] | None = None) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False
        self._pump = pump

    def more(self) -> bool:
        """Read more bytes; False at EOF."""
        try:
            data = self._recv()
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _recv(self) -> bytes:
        if self._pump is None:
            return self.sock.recv(65536)
        for _ in range(1000):
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                if not self._pump():
                    raise TimeoutError("the in-process server has nothing more to do") from None
        raise TimeoutError("no answer after 1000 passes")

    def response(self, head_only: bool = False) -> Resp:
        while b"\r\n\r\n" not in self.buf:
            if not self.more():
                raise AssertionError(f"connection closed before a response: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            return Resp(status, headers, b"")  # a stream: read it with chunk()
        size = 0 if head_only or status == 304 else int(headers.get("content-length", "0"))
        while len(self.buf) < size:
            if not self.more():
                raise AssertionError("connection closed inside a body")
        body, self.buf = self.buf[:size], self.buf[size:]
        return Resp(status, headers, body)

    def buffered_chunk(self) -> bytes | None:
        """The next piece of a chunked body if it is wholly buffered (b"" for the last)."""
        size_line, crlf, rest = self.buf.partition(b"\r\n")
        if not crlf:
            return None
        size = int(size_line, 16)
        if len(rest) < size + 2:
            return None
        self.buf = rest[size + 2 :]
        return rest[:size]

    def chunk(self) -> bytes:
        """The next piece of a chunked body (b"" for the last), reading as needed."""
        while (piece := self.buffered_chunk()) is None:
            if not self.more():
                raise AssertionError("connection closed inside a chunked body")
        return piece

    def closed(self, timeout: float = 3.0) -> bool:
        """True if the server closes the connection (within ``timeout``), sending nothing more."""
        if self._pump is None:
            self.sock.settimeout(timeout)
        try:
            while self.more():
                pass
        except TimeoutError:
            return False
        return self.eof


class Client:
    """HTTP/1.1 on one connection, as ``user`` (alice unless told): one request API.

    Subclasses own the socket: ``send`` and ``reader`` (``Remote``: a real
    TCP connection; ``testclient.Client``: one end of an in-process pair).
    """

    reader: Reader
    host_header = "vigil.test"

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def response(self, head_only: bool = False) -> Resp:
        return self.reader.response(head_only)

    def request(
        self,
        method: str,
        target: str,
        user: str | None = "alice",
        headers: Mapping[str, str | None] | None = None,
        body: bytes = b"",
        json_body: Any = None,
        *,
        pw: str | None = None,
    ) -> Resp:
        """One request: Basic credentials of ``user`` (``pw``: another password; None: none)."""
        hdrs: dict[str, str | None] = {
            "Host": self.host_header,
            "Authorization": basic(user, pw) if user else None,
        }
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        self.send(request(method, target, {**hdrs, **(headers or {})}, body))
        return self.response(head_only=method == "HEAD")

    def get(self, target: str, user: str | None = "alice", **kw: Any) -> Resp:
        return self.request("GET", target, user, **kw)

    def post(self, target: str, json_body: Any, user: str | None = "alice", **kw: Any) -> Resp:
        return self.request("POST", target, user, json_body=json_body, **kw)

    def me(self, user: str = "alice", pw: str | None = None, **kw: Any) -> Resp:
        """``GET /api/me`` as ``user``."""
        return self.get("/api/me", user, pw=pw, **kw)

    def online(self, user: str = "alice") -> list[str]:
        """The names ``GET /api/users`` lists, longest online first."""
        resp = self.get("/api/users", user)
        assert resp.status == 200, resp
        return [u["user"] for u in resp.json()["online"]]

    def post_chats(self, user: str, texts: list[str]) -> None:
        """Every text posted to /api/chat, pipelined; each must be answered 200."""
        self.send(b"".join(chat(text, user) for text in texts))
        statuses = [self.response().status for _ in texts]
        assert statuses == [200] * len(texts), statuses

    def closed(self) -> bool:
        """Does the server close this connection, sending nothing more?"""
        return self.reader.closed()


class Remote(Client):
    """A real TCP connection to ``host:port`` (from ``source``, if given), over TLS if ``tls``.

    ``keep_alive=False``: every request goes on a new connection, closed
    after its answer (as ``httpx.get`` does). ``tls``: the client context
    (its trust decides; the name checked is ``host``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        source: str | None = None,
        timeout: float = 5.0,
        keep_alive: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = (host, port)
        self.host_header = f"{host}:{port}"  # as real clients send it (Origin checks)
        self.source = (source, 0) if source else None
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.tls = tls
        self.sock: socket.socket | None = None

    @classmethod
    def of(
        cls, server: Any, source: str | None = None, keep_alive: bool = True, secure: bool = False
    ) -> Remote:
        """To ``server`` (a ``support.Vigil``: ``host``, ``port``; with ``secure``:
        ``tls_port`` and ``ssl_context()``, over HTTPS)."""
        if secure:
            return cls(server.host, server.tls_port, source, 5.0, keep_alive, server.ssl_context())
        return cls(server.host, server.port, source, keep_alive=keep_alive)

    def connect(self) -> socket.socket:
        """The connection (opened now, with its TLS handshake, if there is none)."""
        if self.sock is None:
            sock = socket.create_connection(self.address, self.timeout, self.source)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.address[0])
                except BaseException:
                    sock.close()
                    raise
            self.sock = sock
            self.reader = Reader(sock)
        return self.sock

    def send(self, data: bytes) -> None:
        self.connect().sendall(data)

    def request(self, *args: Any, **kw: Any) -> Resp:
        try:
            return super().request(*args, **kw)
        finally:
            if not self.keep_alive:
                self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# -- Server-Sent Events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE message, or a comment (``type`` "comment", ``data`` its text)."""

    at: float  # the parser's stamp (time.monotonic() by default) when it was complete
    id: int | None
    type: str
    data: Any  # JSON decoded when it is JSON, else the text


class SSEParser:
    """Server-Sent Events from text lines (WHATWG §9.2.6, enough for vigil's streams).

    A message is dispatched at its blank line if it has ``data`` or
    ``event``; a block with only ``retry:`` sets ``retry`` (ms) and
    dispatches nothing, as in a browser.
    """

    def __init__(self, stamp: Callable[[], float] = time.monotonic) -> None:
        self.stamp = stamp
        self.retry: int | None = None
        self._fields: dict[str, str] = {}
        self._partial = ""

    def line(self, line: str) -> Event | None:
        """Take one line (without its end); the message or comment it completes."""
        fields = self._fields
        if line == "":
            self._fields = {}
            if "data" not in fields and "event" not in fields:
                return None
            data = fields.get("data", "")
            try:
                value: Any = json.loads(data)
            except ValueError:
                value = data
            ident = fields.get("id")
            return Event(
                self.stamp(),
                int(ident) if ident and ident.isdigit() else None,
                fields.get("event", "message"),
                value,
            )
        if line.startswith(":"):
            return Event(self.stamp(), None, "comment", line[1:].strip())
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "retry" and value.isdigit():
            self.retry = int(value)
        elif name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        else:
            fields[name] = value
        return None

    def feed(self, text: str) -> list[Event]:
        """Take text as it arrives (in any pieces); the events it completes."""
        *lines, self._partial = (self._partial + text).split("\n")
        return [e for e in map(self.line, (x.removesuffix("\r") for x in lines)) if e]


def sse_events(
    lines: Iterable[str], stamp: Callable[[], float] = time.monotonic
) -> Iterator[Event]:
    """The events and comments in a stream of text lines, as each is complete."""
    parser = SSEParser(stamp)
    for line in lines:
        event = parser.line(line)
        if event is not None:
            yield event


def sse_messages(text: str) -> list[Event]:
    """The events and comments in a whole text."""
    return SSEParser().feed(text)
