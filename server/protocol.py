"""HTTP/1.1 for one connection, sans I/O: bytes in, requests out; responses in, bytes out.

``HttpSession`` wraps one ``h11.Connection`` and adds what h11 leaves to the
server: request limits and their status codes (RFC 9110 §15.5), whole
request bodies, and the framing of whole and streamed responses.

- 414 when the request target exceeds ``max_target`` (RFC 9112 §3: a server
  that receives a longer target than it wishes to parse answers 414); also
  when a request line still has no end after ``max_target`` bytes.
- 431 when the head exceeds ``max_header_bytes`` (RFC 6585 §5; h11's
  ``max_incomplete_event_size`` enforces it and hints 431).
- 413 when Content-Length, or the body read so far, exceeds ``max_body``.
- 400 for anything else h11 rejects (h11's ``error_status_hint``).

Errors are returned as ``ProtocolError`` values, never raised past this
module: the connection sends the error response and closes. The caller
owns time (the 408 deadline) and the socket. Responses go out through
``respond`` in one ``bytes`` so that one ``send`` carries a whole response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import h11

SERVER_NAME = "vigil"
SERVER_BYTES = SERVER_NAME.encode()

REASONS = {
    200: b"OK",
    204: b"No Content",
    304: b"Not Modified",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class Limits:
    max_target: int = 4096
    max_header_bytes: int = 16384
    max_body: int = 65536


@dataclass(slots=True)
class Request:
    """One complete request: head and whole body. Header names are lower-case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    http_version: str = "1.1"

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


Headers = Sequence[tuple[str, str]]
_ENCODED: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}
_MAX_ENCODED = 256


def _encoded(headers: Headers) -> list[tuple[bytes, bytes]]:
    """``headers`` as h11 takes them; a tuple (the constant headers of JSON and of
    each static file) is encoded and checked once, then found in a cache."""
    if isinstance(headers, tuple):
        cached = _ENCODED.get(headers)
        if cached is not None:
            return cached
    out = []
    for name, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} would split the response")
        out.append((name.encode("ascii"), value.encode("latin-1")))
    if isinstance(headers, tuple):
        if len(_ENCODED) >= _MAX_ENCODED:
            _ENCODED.clear()
        _ENCODED[headers] = out
    return out


@dataclass(slots=True)
class Response:
    """A response to send: ``body`` whole, or ``stream`` for a chunked body sent later.

    Make ``headers`` a tuple when the same headers go out again and again.
    """

    status: int
    headers: Headers = ()
    body: bytes = b""
    stream: bool = False


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A request that cannot be served; answer ``status`` with ``message`` and close."""

    status: int
    message: str


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("ascii")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


class HttpSession:
    """The HTTP state of one TCP connection. Not thread-safe; no I/O."""

    __slots__ = ("_body", "_conn", "_head", "limits")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._head: h11.Request | None = None
        self._body: list[bytes] = []

    # -- input -----------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed."""
        self._conn.receive_data(data)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed into a request."""
        return len(self._conn.trailing_data[0])

    @property
    def max_buffered(self) -> int:
        """The most a whole request can take; more while busy is abuse."""
        limits = self.limits
        return limits.max_target + limits.max_header_bytes + limits.max_body

    @property
    def idle(self) -> bool:
        """True between requests with no byte of the next one buffered."""
        return self._conn.their_state is h11.IDLE and not self._conn.trailing_data[0]

    def next_request(self) -> Request | ProtocolError | None:
        """The next complete request, an error to answer, or None (need data / paused)."""
        conn = self._conn
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return self._check_request_line()
                if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    return None
                if isinstance(event, h11.Request):
                    error = self._start(event)
                    if error:
                        return error
                elif isinstance(event, h11.Data):
                    self._body.append(event.data)
                    if sum(map(len, self._body)) > self.limits.max_body:
                        return ProtocolError(413, "request body too large")
                elif isinstance(event, h11.EndOfMessage):
                    return self._finish()
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint
            if status == 431 and self._head is None and self._line_too_long():
                return ProtocolError(414, "request target too long")
            detail = str(e).partition(": bytearray")[0]  # h11 appends the raw bytes
            msg = (
                "request header fields too large"
                if status == 431
                else f"malformed request: {detail}"
            )
            return ProtocolError(status, msg)

    def _start(self, event: h11.Request) -> ProtocolError | None:
        if len(event.target) > self.limits.max_target:
            return ProtocolError(414, "request target too long")
        # h11 checks max_incomplete_event_size only while the head is incomplete;
        # a whole oversized head that arrives in one read must be refused here.
        if sum(len(n) + len(v) + 4 for n, v in event.headers) > self.limits.max_header_bytes:
            return ProtocolError(431, "request header fields too large")
        for name, value in event.headers:
            if name == b"content-length" and int(value) > self.limits.max_body:
                return ProtocolError(413, "request body too large")
        self._head = event
        self._body = []
        return None

    def _finish(self) -> Request:
        head = self._head
        assert head is not None
        body = b"".join(self._body)
        self._body = []
        headers = _headers(head.headers)
        return Request(
            method=head.method.decode("ascii"),
            target=head.target.decode("latin-1"),
            headers=headers,
            body=body,
            http_version=head.http_version.decode("ascii"),
        )

    def _line_too_long(self) -> bool:
        buffered = self._conn.trailing_data[0]
        return b"\n" not in buffered[: self.limits.max_target + 16]

    def _check_request_line(self) -> ProtocolError | None:
        if self._head is None and self._conn.their_state is h11.IDLE:
            buffered = self._conn.trailing_data[0]
            if len(buffered) > self.limits.max_target + 16 and self._line_too_long():
                return ProtocolError(414, "request target too long")
        return None

    # -- output ----------------------------------------------------------
    def respond(self, response: Response, date: bytes) -> bytes:
        """Bytes of ``response`` (head and, unless streamed or HEAD, the body).

        Header names and values come from the server itself, never from a
        request, so h11's per-header regex validation (the costliest step of
        a small response) is skipped; a CR or LF would still be refused.
        """
        conn = self._conn
        head_only = self._head is not None and self._head.method == b"HEAD"
        headers = [(b"Date", date), (b"Server", SERVER_BYTES), *_encoded(response.headers)]
        if not response.stream and response.status != 304:
            headers.append((b"Content-Length", str(len(response.body)).encode("ascii")))
        out = conn.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=REASONS.get(response.status, b""),
                _parsed=True,
            )
        )
        if response.stream:
            return out or b""
        if response.body and not head_only and response.status != 304:
            out += conn.send(h11.Data(data=response.body)) or b""
        return out + (conn.send(h11.EndOfMessage()) or b"")

    def chunk(self, data: bytes) -> bytes:
        """Bytes of one piece of a streamed body."""
        return self._conn.send(h11.Data(data=data)) or b""

    def end_stream(self) -> bytes:
        """Bytes that end a streamed body."""
        return self._conn.send(h11.EndOfMessage()) or b""

    def next_cycle(self) -> bool:
        """After a whole response: ready for the next request (True) or must close."""
        conn = self._conn
        self._head = None
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False
