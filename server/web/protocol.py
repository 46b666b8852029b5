"""HTTP/1.1 for one connection, sans I/O: bytes in, requests out; responses in, bytes out.

``HttpSession`` wraps one ``h11.Connection`` and adds what h11 leaves to the
server: request limits and their status codes (RFC 9110 §15.5), whole
request bodies, and the framing of whole and streamed responses.

- 414 when the request target exceeds ``max_target`` (RFC 9112 §3: a server
  that receives a longer target than it wishes to parse answers 414); also
  when a request line still has no end after ``max_target`` bytes.
- 431 when the head exceeds ``max_header_bytes`` (RFC 6585 §5; h11's
  ``max_incomplete_event_size`` enforces it and hints 431).
- 413 when Content-Length, or the body read so far, exceeds ``max_body``;
  also when a chunked body's framing takes more than ``2 * max_body`` bytes
  on the wire (a body of one-byte chunks is 6 wire bytes a byte).
- 400 for a request with both Content-Length and Transfer-Encoding (RFC
  9112 §6.3: the server MUST close after answering such a request; it is
  refused and closed), a target with a fragment (``#``; RFC 9112 §3.2), and
  anything else h11 rejects (h11's ``error_status_hint``).
- 505 for an HTTP version other than 1.0 and 1.1 (RFC 9110 §15.6.6).

A request comes out twice: first its head (``Head``), as soon as the head
is parsed, so the server can decide on it (authentication, redirect, the
user cap) before a byte of the body is read; then, unless the server
refused it (``refuse_body``), the whole ``Request``. A refused request
with a body is answered with ``Connection: close`` and its body is never
parsed (``wants_close``). ``continue_body`` answers ``Expect:
100-continue`` (RFC 9110 §10.1.1) once the head is admitted.

Absolute-form targets (``GET http://host/path``, RFC 9112 §3.2.2) are
served: the target becomes the path and the authority replaces Host. One
or more empty lines before a request line are ignored (RFC 9112 §2.2).

The body is collected in pieces and counted as it comes (one addition a
piece): the time to read a body is linear in its bytes, whatever its
chunking (16,000 one-byte chunks once took 3.4 s here; now h11's own
0.13 s).

Errors are returned as ``ProtocolError`` values, never raised past this
module: the connection sends the error response and closes. The caller
owns time (the 408 deadline) and the socket. Responses go out through
``respond`` in one ``bytes`` so that one ``send`` carries a whole response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import h11

SERVER_NAME = "vigil"
SERVER_BYTES = SERVER_NAME.encode()

REASONS = {
    200: b"OK",
    204: b"No Content",
    304: b"Not Modified",
    100: b"Continue",
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
    421: b"Misdirected Request",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}
VERSIONS = frozenset((b"1.0", b"1.1"))


def _reason(status: int) -> bytes:
    """The reason phrase of ``status`` (never empty for a status the stdlib knows)."""
    reason = REASONS.get(status)
    if reason is None:
        try:
            reason = REASONS[status] = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            reason = b""
    return reason


@dataclass(frozen=True, slots=True)
class Limits:
    max_target: int = 4096
    max_header_bytes: int = 16384
    max_body: int = 65536


@dataclass(slots=True)
class Request:
    """One request: head, and the whole body once ``complete``. Header names are lower-case."""

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


@dataclass(frozen=True, slots=True)
class Head:
    """The head of ``request`` has come; its body (if any) has not been read yet."""

    request: Request


Headers = Sequence[tuple[str, str]]
# The headers h11 frames a response by; it is handed these and formats them itself.
_FRAMING = frozenset(("connection", "content-length", "transfer-encoding"))


@dataclass(frozen=True, slots=True)
class _Formatted:
    framing: list[tuple[bytes, bytes]]  # for h11
    block: bytes  # the rest, as they go on the wire: "Name: value\r\n" each


_FORMATTED: dict[tuple[tuple[str, str], ...], _Formatted] = {}
_MAX_FORMATTED = 256


def _formatted(headers: Headers) -> _Formatted:
    """``headers`` split into those h11 frames the response by and the wire form of the
    rest; a tuple (the constant headers of JSON and of each static file) is formatted
    and checked once, then found in a cache."""
    if isinstance(headers, tuple):
        cached = _FORMATTED.get(headers)
        if cached is not None:
            return cached
    framing = []
    block = []
    for name, value in headers:
        line = f"{name}: {value}"
        if "\r" in line or "\n" in line or not name.isascii() or ":" in name:
            raise ValueError(f"header {name!r} would split the response")
        if name.lower() in _FRAMING:
            framing.append((name.encode("ascii"), value.encode("latin-1")))
        else:
            block.append(f"{line}\r\n".encode("latin-1"))
    out = _Formatted(framing, b"".join(block))
    if isinstance(headers, tuple):
        if len(_FORMATTED) >= _MAX_FORMATTED:
            _FORMATTED.clear()
        _FORMATTED[headers] = out
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


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], int]:
    """Lower-case names to values (repeats joined with ", ") and the head's size."""
    out: dict[str, str] = {}
    size = 0
    for name, value in raw:
        size += len(name) + len(value) + 4
        key = name.lower().decode("ascii")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out, size


class HttpSession:
    """The HTTP state of one TCP connection. Not thread-safe; no I/O."""

    __slots__ = (
        "_body",
        "_body_size",
        "_close",
        "_conn",
        "_extra",
        "_head",
        "_received",
        "_request",
        "_wire_start",
        "limits",
    )

    def __init__(self, limits: Limits, extra_headers: Headers = ()) -> None:
        self.limits = limits
        # on every response (HSTS), after Date and Server
        self._extra = b"Server: %s\r\n%s" % (SERVER_BYTES, _formatted(tuple(extra_headers)).block)
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._head: h11.Request | None = None
        self._request: Request | None = None  # the request being read (its head has come)
        self._body: list[bytes] = []
        self._body_size = 0
        self._received = 0  # bytes fed so far
        self._wire_start = 0  # ``_received`` less the unparsed bytes when the body began
        self._close = False  # the next response closes the connection

    # -- input -----------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed."""
        if data and self.idle:
            data = data.lstrip(b"\r\n")  # empty lines before a request line (RFC 9112 §2.2)
            if not data:
                return
        self._received += len(data)
        self._conn.receive_data(data)

    def _unparsed(self) -> int:
        # h11's public ``trailing_data`` copies the buffer; this is its length, O(1)
        return len(self._conn._receive_buffer)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed into a request."""
        return self._unparsed()

    @property
    def max_buffered(self) -> int:
        """The most a whole request can take; more while busy is abuse."""
        limits = self.limits
        return limits.max_target + limits.max_header_bytes + limits.max_body

    @property
    def idle(self) -> bool:
        """True between requests with no byte of the next one buffered."""
        return self._conn.their_state is h11.IDLE and not self._unparsed()

    @property
    def wants_close(self) -> bool:
        """The connection must close after the response being prepared."""
        return self._close

    def next_request(self) -> Head | Request | ProtocolError | None:
        """The next head, whole request, error to answer, or None (need data / paused)."""
        conn = self._conn
        try:
            while True:
                event = conn.next_event()
                # h11's events are ABCs, for which isinstance() is a call in Python
                if type(event) is h11.Request:
                    return self._start(event)
                if type(event) is h11.EndOfMessage:
                    return self._finish()
                if type(event) is h11.Data:
                    self._body.append(event.data)
                    self._body_size += len(event.data)
                    if self._body_size > self.limits.max_body:
                        return self._refuse(413, "request body too large")
                    if self._received - self._unparsed() - self._wire_start > 2 * (
                        self.limits.max_body + 1024
                    ):
                        return self._refuse(413, "request body framing too large")
                elif event is h11.NEED_DATA:
                    return self._check_request_line()
                else:  # PAUSED, ConnectionClosed
                    return None
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint
            if status == 431 and self._head is None and self._line_too_long():
                return self._refuse(414, "request target too long")
            detail = str(e).partition(": bytearray")[0]  # h11 appends the raw bytes
            msg = (
                "request header fields too large"
                if status == 431
                else f"malformed request: {detail}"
            )
            return self._refuse(status, msg)

    def _refuse(self, status: int, message: str) -> ProtocolError:
        self._close = True
        return ProtocolError(status, message)

    def _start(self, event: h11.Request) -> Head | ProtocolError:
        self._head = event
        if len(event.target) > self.limits.max_target:
            return self._refuse(414, "request target too long")
        if event.http_version not in VERSIONS:
            return self._refuse(505, "only HTTP/1.1 (and 1.0) is served")
        headers, size = _headers(event.headers.raw_items())
        # h11 checks max_incomplete_event_size only while the head is incomplete;
        # a whole oversized head that arrives in one read must be refused here.
        if size > self.limits.max_header_bytes:
            return self._refuse(431, "request header fields too large")
        length = headers.get("content-length")
        if length is not None:
            if "transfer-encoding" in headers:
                return self._refuse(400, "Content-Length and Transfer-Encoding together")
            if int(length) > self.limits.max_body:  # h11 has made it one number
                return self._refuse(413, "request body too large")
        target = event.target
        if b"#" in target:
            return self._refuse(400, "a request target has no fragment (#)")
        if not target.startswith(b"/") and b"://" in target:  # absolute form
            scheme, _, rest = target.partition(b"://")
            authority, slash, path = rest.partition(b"/")
            if scheme.lower() not in (b"http", b"https") or not authority:
                return self._refuse(400, "malformed request target")
            headers["host"] = authority.decode("latin-1")
            target = slash + path if slash else b"/"
        self._body = []
        self._body_size = 0
        self._wire_start = self._received - self._unparsed()
        self._request = Request(
            method=event.method.decode("ascii"),
            target=target.decode("latin-1"),
            headers=headers,
            body=b"",
            http_version=event.http_version.decode("ascii"),
        )
        return Head(self._request)

    def continue_body(self) -> bytes:
        """``100 Continue`` if the client waits for it before sending the body, else b""."""
        conn = self._conn
        if not conn.they_are_waiting_for_100_continue:
            return b""
        return (
            conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
            or b""
        )

    def refuse_body(self) -> None:
        """The head was answered without its body: the connection closes after the answer
        (nothing of the body is read) unless the request has no body at all."""
        if self._conn.their_state is h11.SEND_BODY:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError:
                event = None
            if isinstance(event, h11.EndOfMessage):
                self._request = None
                return
            self._close = True

    def _finish(self) -> Request:
        request = self._request
        assert request is not None
        request.body = b"".join(self._body)
        self._body = []
        self._request = None
        return request

    def _line_too_long(self) -> bool:
        buffered = self._conn.trailing_data[0]
        return b"\n" not in buffered[: self.limits.max_target + 16]

    def _check_request_line(self) -> ProtocolError | None:
        idle = self._head is None and self._conn.their_state is h11.IDLE
        if idle and self._unparsed() > self.limits.max_target + 16 and self._line_too_long():
            return self._refuse(414, "request target too long")
        return None

    # -- output ----------------------------------------------------------
    def respond(self, response: Response, date: bytes) -> bytes:
        """Bytes of ``response`` (head and, unless streamed or HEAD, the body).

        h11 frames the response: it is given the status and the headers that
        decide framing and keep-alive (``Connection``, ``Content-Length``,
        ``Transfer-Encoding``) and writes the status line and those. The rest
        come from the server itself, never from a request; they are formatted
        once per constant tuple (``_formatted``: a CR or LF is refused) and
        joined to h11's head before its final empty line, so h11 does not
        validate and copy them again on every response.
        """
        conn = self._conn
        head_only = self._head is not None and self._head.method == b"HEAD"
        formatted = _formatted(response.headers)
        framing = formatted.framing
        if self._close or (not response.stream and response.status != 304):
            framing = framing.copy()
            if self._close:
                framing.append((b"Connection", b"close"))
            if not response.stream and response.status != 304:
                framing.append((b"Content-Length", b"%d" % len(response.body)))
        out = conn.send(
            h11.Response(
                status_code=response.status,
                headers=framing,
                reason=_reason(response.status),
                _parsed=True,
            )
        )
        assert out is not None and out.endswith(b"\r\n\r\n")
        out = b"%sDate: %s\r\n%s%s\r\n" % (out[:-2], date, self._extra, formatted.block)
        if response.stream:
            return out
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
        if self._close:
            return False
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False
