"""One connection's HTTP exchange, sans I/O: its state, deadlines and output.

``Exchange`` is the core of a connection (hypercorn's shape: a protocol
object and a thin transport around it). It owns no socket, no loop and no
clock. What comes in:

- ``received(data, now)``: bytes read from the socket (``b""``: the peer
  sent FIN), ciphertext if the connection is TLS;
- ``lost(reason)``: the socket failed (ECONNRESET, ETIMEDOUT, EPIPE);
- ``writable()`` and ``flush()``: the socket can take more, and the host's
  end of the pass (after the audit log is on disk) says to write;
- ``tick(now, alive, heartbeat)``: the once-a-second sweep, with whether the
  kernel's TCP state (read by the shell) is still ESTABLISHED/CLOSE_WAIT;
- ``shutdown()``, ``close(lost)``: the server stops, or wants it gone;
- ``push(data)`` and a ``Deferred``'s answer: from the event bus or the
  control channel, between any of the above.

What goes out is a call on its ``Port`` (the shell): ``write`` (one
``send`` of the queued bytes, which reports what the kernel took),
``shut_write`` (our FIN), ``watch`` (the readiness mask, only when it
changes) and ``release`` (unregister and close). Deadlines set by the
inputs that bring ``now`` use it; the few set where no input brings the time
(a pipelined request after a flush, the linger after the last answer, a
device's reply) read the ``clock`` the shell passed in, the host's loop
clock.

The host (the server) decides on requests and learns of output and closes:
``Host.admit`` on each head, ``date``, ``log_access``, ``output_pending``
(once per pass with output, so one ``send`` per connection per pass) and
``connection_closed``. The host is handed the shell (``conn``), never the
core.

States (``State``; ``TRANSITIONS`` is the whole machine):

- ``HANDSHAKE``: a TLS connection before its handshake is done; closed at
  ``handshake_timeout`` from accept. Counts as unauthenticated.
- ``IDLE``: between requests, nothing buffered; closed after the idle
  timeout (``keepalive_timeout`` once authenticated, else ``header_timeout``).
- ``READING``: part of a request is buffered; it must be complete within
  ``header_timeout`` of its first byte, or the answer is 408.
- ``PARKED``: a ``Deferred`` answer is pending; pipelined requests wait.
- ``STREAMING``: the response is an endless chunked body (SSE).
- ``CLOSING``: the last answer is queued; the socket closes once it is written.
  If the client may still be sending (a body that was refused unread), the
  close lingers (Apache's lingering close): our side is shut down after
  the answer and what comes in is discarded, up to ``LINGER_BYTES`` or
  ``LINGER_SECONDS``, so the client reads the answer instead of a reset.
- ``CLOSED``.

Output is bounded too: past ``OUT_HIGH_WATER`` bytes queued for a client
that does not read, no further pipelined request is answered and its
socket is not read until it does (TCP's own flow control then stops it).

Each request is decided at its head (``Host.admit``: routing,
authentication, redirect, the user cap) before any byte of its body is
read; a refusal is answered at once and, if a body was coming, the
connection closes without reading it. An admitted head gets ``100
Continue`` if the client waits for one; the whole request then goes to
what ``admit`` returned (``Proceed``).

The error boundary: an exception while handling a request, opening a
stream or finishing a deferred answer is logged once with its traceback,
answered with a 500 JSON error (if no head was sent yet) and the
connection closes; the server goes on.

TLS (``server.web.tls``) is a ``TlsSession`` between memory BIOs: the
ciphertext received goes through it, which returns all the plaintext it
completes (nothing stays buffered where select() cannot see it); what the
HTTP side queues is encrypted as it is queued, so ``_out`` always holds
bytes for the wire. The gate and the handlers see no difference but
``secure``.
"""

from __future__ import annotations

import enum
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from server.feed.bus import HEARTBEAT
from server.web.outcomes import Deferred, Outcome, Stream
from server.web.protocol import Head, HttpSession, Limits, ProtocolError, Request, Response
from server.web.responses import HSTS, error
from server.web.tls import TlsClosed, TlsSession

# The connection's log, whichever half of it speaks.
log = logging.getLogger("server.web.connection")

LINGER_SECONDS = 2.0
LINGER_BYTES = 262144
# Answers queued and not yet taken by the kernel, past which no further pipelined
# request is answered until the client reads (a 40-byte request may ask for 30 KB).
OUT_HIGH_WATER = 262144

# The readiness a socket is watched for: selectors.EVENT_READ and EVENT_WRITE.
READ = 1
WRITE = 2

# What the server does with a whole request whose head it admitted.
Proceed = Callable[[Request], Outcome]


class State(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code

    HANDSHAKE = "handshake"
    IDLE = "idle"
    READING = "reading"
    PARKED = "parked"
    STREAMING = "streaming"
    CLOSING = "closing"
    CLOSED = "closed"


_S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    _S.HANDSHAKE: frozenset({_S.IDLE, _S.CLOSED}),
    _S.IDLE: frozenset({_S.READING, _S.PARKED, _S.STREAMING, _S.CLOSING, _S.CLOSED}),
    _S.READING: frozenset({_S.IDLE, _S.READING, _S.PARKED, _S.STREAMING, _S.CLOSING, _S.CLOSED}),
    _S.PARKED: frozenset({_S.IDLE, _S.READING, _S.CLOSING, _S.CLOSED}),
    _S.STREAMING: frozenset({_S.CLOSING, _S.CLOSED}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}
# States in which the next request is read and answered.
_SERVING = frozenset({_S.IDLE, _S.READING})
_SHEDDABLE = frozenset({_S.HANDSHAKE, _S.IDLE, _S.READING})


@dataclass(frozen=True, slots=True)
class Settings:
    """The limits a connection enforces (new ones take effect on SIGHUP)."""

    limits: Limits
    header_timeout: float
    keepalive_timeout: float
    max_sse_buffer: int
    handshake_timeout: float


class Named(Protocol):
    """Who a connection belongs to, as far as the core cares (the log names them)."""

    @property
    def name(self) -> str: ...


C = TypeVar("C")  # the shell, as the host knows it
U = TypeVar("U", bound=Named)  # a user
_C = TypeVar("_C", contravariant=True)
_U = TypeVar("_U", bound=Named, covariant=True)


class Host(Protocol[_C, _U]):
    """What the core asks of the server: it decides, formats, logs and learns."""

    @property
    def settings(self) -> Settings: ...
    @property
    def stopping(self) -> bool: ...

    def admit(self, conn: _C, req: Request) -> tuple[_U | None, Response | Proceed]: ...
    def date(self) -> bytes: ...
    def log_access(self, conn: _C, req: Request | None, status: int, size: int) -> None: ...
    def output_pending(self, conn: _C) -> None: ...
    def connection_closed(self, conn: _C, lost: bool) -> None: ...


class Port(Protocol):
    """What the shell does for the core: the socket's four verbs."""

    def write(self, data: bytes | bytearray) -> int | None:
        """One ``send``: bytes the kernel took (0 if its buffer is full); None if the
        peer was lost (the shell has then told the core, ``Exchange.lost``)."""
        ...

    def shut_write(self) -> bool:
        """Shut our side down (FIN); False if the socket would not."""
        ...

    def watch(self, mask: int) -> None:
        """Watch the socket for ``mask`` (``READ``, ``WRITE``) from now on."""
        ...

    def release(self, goodbye: bytes) -> None:
        """Stop watching the socket, write ``goodbye`` if any (best effort), close it."""
        ...


class Exchange(Generic[C, U]):
    """The state of one connection: bytes and ``now`` in, calls on ``port`` out."""

    __slots__ = (
        "_clock",
        "_conn",
        "_deadline",
        "_detach",
        "_dispatching",
        "_eof",
        "_host",
        "_lingering",
        "_out",
        "_port",
        "_proceed",
        "_queued",
        "_session",
        "_tls",
        "_watching",
        "addr",
        "last_active",
        "state",
        "user",
    )

    def __init__(
        self,
        host: Host[C, U],
        conn: C,
        port: Port,
        addr: str,
        tls: ssl.SSLContext | None,
        now: float,
        clock: Callable[[], float],
    ) -> None:
        self._host = host
        self._conn = conn  # what the host is told about
        self._port = port
        self._clock = clock  # the host's, for deadlines set where no input brings the time
        self.addr = addr  # for the log
        self._tls = TlsSession(tls) if tls is not None else None
        self.state = State.HANDSHAKE if tls is not None else State.IDLE
        self.user: U | None = None  # who the last request authenticated as
        self.last_active = now
        self._session = HttpSession(host.settings.limits, HSTS if tls is not None else ())
        self._out = bytearray()
        self._queued = False  # told the host we have output
        self._watching = READ  # what the loop watches the socket for (the host registers READ)
        # the 408 deadline while READING, the handshake's while HANDSHAKE, the linger's
        self._deadline: float | None = (
            now + host.settings.handshake_timeout if tls is not None else None
        )
        self._detach: Callable[[], None] | None = None  # ends a stream's subscription
        self._dispatching = False  # inside process(): a deferred answer must not re-enter
        self._eof = False  # the peer sent FIN
        self._proceed: Proceed | None = None  # for the request whose head was admitted
        self._lingering: int | None = None  # bytes discarded since our side was shut down

    # -- state -------------------------------------------------------------
    def _to(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"connection {self.addr}: {self.state.name} -> {new.name}")
        self.state = new

    @property
    def sheddable(self) -> bool:
        """Unauthenticated and not busy: the first to go when connections run out."""
        return self.user is None and self.state in _SHEDDABLE

    @property
    def queued(self) -> int:
        """Bytes waiting for the kernel to take them."""
        return len(self._out)

    # -- input ---------------------------------------------------------------
    def received(self, data: bytes, now: float) -> None:
        """Bytes read from the socket at ``now``; ``b""``: the peer sent FIN."""
        if self._tls is not None:
            plain = self._decrypt(data)
            if not plain:
                return
            data = plain
        elif not data:
            self._peer_closed()
            return
        self.last_active = now
        if self.state is State.CLOSING:
            self._discard(len(data))  # the last answer is queued; what follows is not read
            return
        self._session.receive(data)
        if self.state not in _SERVING and self._session.buffered > self._session.max_buffered:
            log.info("%s: %d bytes sent while busy: closed", self.addr, self._session.buffered)
            self.close(lost=False)
            return
        if self.state is State.IDLE:
            self._to(State.READING)
            self._deadline = now + self._host.settings.header_timeout
        if self.state is State.READING:
            self.process()

    def _decrypt(self, wire: bytes) -> bytes | None:
        """Plaintext from TLS records (None: nothing yet, or TLS ended)."""
        tls = self._tls
        assert tls is not None
        try:
            data = tls.receive(wire)
        except TlsClosed as e:
            if self.state is State.HANDSHAKE:
                log.info("%s: TLS handshake failed: %s", self.addr, e)
                self._port.write(tls.pending())  # the alert, if it fits
                self.close(lost=False)
            else:
                self._peer_closed()
            return None
        handshake = tls.pending()
        if handshake:
            self._out += handshake
            self.writable()
        if self.state is State.HANDSHAKE and tls.established:
            self._to(State.IDLE)
            self._deadline = None
        return data

    def _peer_closed(self) -> None:
        self._eof = True
        if self.state is State.PARKED:
            return  # answered (and then closed) when the device replies
        if self.state is State.CLOSING and self._out:
            return  # closed once the last answer is written
        if self._out and self.state is not State.STREAMING:
            self._to(State.CLOSING)
        else:
            self.close(lost=False)

    def lost(self, reason: object) -> None:
        """The socket failed: the peer is gone."""
        log.debug("%s: connection lost: %s", self.addr, reason)
        self.close(lost=True)

    def process(self) -> None:
        """Answer every complete request buffered, until parked, streaming or closing
        (``IDLE``: nothing is buffered)."""
        self._dispatching = True
        try:
            while self.state is State.READING and len(self._out) <= OUT_HIGH_WATER:
                item = self._session.next_request()
                if item is None:
                    return
                if isinstance(item, ProtocolError):
                    self._respond(error(item.status, item.message), None)
                    self._closing()
                    return
                if isinstance(item, Head):
                    self._admit(item.request)
                else:
                    self._dispatch(item)
        finally:
            self._dispatching = False

    def _admit(self, req: Request) -> None:
        """The server decides on a head; a refusal is answered before the body is read."""
        try:
            self.user, verdict = self._host.admit(self._conn, req)
            if isinstance(verdict, Response):
                self._session.refuse_body()
                self._respond(verdict, req)
            else:
                self._proceed = verdict
                self._send(self._session.continue_body())
        except Exception:
            self._failed(req)

    def _dispatch(self, req: Request) -> None:
        """The error boundary around one request."""
        proceed, self._proceed = self._proceed, None
        try:
            assert proceed is not None, "a whole request comes after its admitted head"
            outcome = proceed(req)
            if isinstance(outcome, Response):
                self._respond(outcome, req)
            elif isinstance(outcome, Stream):
                self._stream(outcome, req)
            else:
                self._park(outcome, req)
        except Exception:
            self._failed(req)

    def _failed(self, req: Request) -> None:
        log.exception("%s: %s %s failed", self.addr, req.method, req.target)
        if self.state is State.CLOSED:
            return
        if self.state is State.STREAMING:
            self.close(lost=False)  # the head is out: no status can be sent any more
            return
        if self.state is State.PARKED:
            self._to(State.READING)
        try:
            self._respond(error(500, "internal server error; the server log has the details"), req)
        except Exception:  # the session itself is broken: no answer is possible
            self.close(lost=False)
            return
        self._closing()

    def _stream(self, stream: Stream, req: Request) -> None:
        if req.method == "HEAD":
            self._respond(Response(200, stream.headers), req)
            return
        self._respond(Response(200, stream.headers, stream=True), req)
        self._detach = stream.open(self.push)

    def _park(self, deferred: Deferred[Any], req: Request) -> None:
        self._to(State.PARKED)
        answered = False

        def done(value: Any) -> None:
            nonlocal answered
            if answered:
                raise RuntimeError(f"{req.method} {req.target}: answered twice")
            answered = True
            self._unpark(deferred, value, req)

        deferred.start(done)

    def _unpark(self, deferred: Deferred[Any], value: Any, req: Request) -> None:
        try:
            response = deferred.finish(value)
        except Exception:
            self._failed(req)
            return
        if self.state is not State.PARKED:
            return  # the client has gone; finish() still ran (its audit record)
        self._to(State.READING)
        self._respond(response, req)
        if self._eof:
            self._closing()
        elif not self._dispatching:
            self.process()

    # -- output ----------------------------------------------------------
    def _respond(self, response: Response, req: Request | None) -> None:
        """Queue ``response`` to ``req`` (None: an error before a request was read)."""
        host = self._host
        self._send(self._session.respond(response, host.date()))
        host.log_access(self._conn, req, response.status, len(response.body))
        if response.stream:
            self._to(State.STREAMING)
            return
        if not self._session.next_cycle() or host.stopping:
            self._closing()
        elif self._session.idle:
            self._to(State.IDLE)
            self._deadline = None
        else:  # the next, pipelined request has begun
            self._to(State.READING)
            self._deadline = self._clock() + host.settings.header_timeout

    def _closing(self) -> None:
        if self.state is not State.CLOSING:
            self._to(State.CLOSING)
        if not self._out:
            self._finish_closing()

    def push(self, data: bytes) -> None:
        """Append ``data`` to a streamed body; cut the stream off if the client lags."""
        if self.state is not State.STREAMING:
            return
        self._send(self._session.chunk(data))
        if len(self._out) > self._host.settings.max_sse_buffer:
            log.warning(
                "%s (%s): event stream not read, %d bytes queued: cut off",
                self.addr,
                self.user.name if self.user else "-",
                len(self._out),
            )
            self._out.clear()
            self.close(lost=False)

    def _send(self, data: bytes) -> None:
        if data and self.state is not State.CLOSED:
            if self._tls is not None:
                self._tls.send(data)
                data = self._tls.pending()
            self._out += data
            self.writable()

    def writable(self) -> None:
        """There is output (or the socket takes more): the host flushes at the end of the pass."""
        if not self._queued:
            self._queued = True
            self._host.output_pending(self._conn)

    def flush(self) -> None:
        """Write what is queued: one ``send`` (the host calls this at the end of a pass)."""
        self._queued = False
        if self.state is State.CLOSED or not self._out:
            return
        sent = self._port.write(self._out)
        if sent is None:
            return
        backed_up = len(self._out) > OUT_HIGH_WATER
        del self._out[:sent]
        if backed_up and len(self._out) <= OUT_HIGH_WATER and self.state in _SERVING:
            self.process()  # the client reads again: answer what it pipelined meanwhile
        self._watch()
        if not self._out and self.state is State.CLOSING:
            self._finish_closing()

    def _finish_closing(self) -> None:
        """All is written: close, or linger if the client may still be sending."""
        if self._eof or not self._session.wants_close or self._lingering is not None:
            self.close(lost=False)
            return
        if self._tls is not None and self._tls.established:
            self._port.write(self._tls.close_notify())
            if self.state is State.CLOSED:
                return  # lost while saying goodbye
        if not self._port.shut_write():
            self.close(lost=False)
            return
        self._lingering = 0
        self._deadline = self._clock() + LINGER_SECONDS

    def _discard(self, size: int) -> None:
        """Input after the last answer: dropped; too much of it ends the linger."""
        if self._lingering is not None:
            self._lingering += size
            if self._lingering > LINGER_BYTES:
                self.close(lost=False)

    def _watch(self) -> None:
        """Writability while the kernel has not taken everything; readability unless
        too much is queued for a client that does not read (TCP pushes back on it)."""
        out = len(self._out)
        mask = (READ if out <= OUT_HIGH_WATER else 0) | (WRITE if out else 0)
        if mask != self._watching and self.state is not State.CLOSED:
            self._watching = mask
            self._port.watch(mask)

    # -- asked by the server -----------------------------------------------
    def tick(self, now: float, alive: bool, heartbeat: bool) -> None:
        """Once a second: ``alive`` (the TCP state), the deadlines, SSE heartbeats."""
        if not alive:
            self.close(lost=True)
            return
        state = self.state
        if state is State.HANDSHAKE:
            if self._deadline is not None and now > self._deadline:
                log.info("%s: no TLS handshake within the deadline: closed", self.addr)
                self.close(lost=False)
        elif state is State.STREAMING:
            if heartbeat:
                self.push(HEARTBEAT)
        elif state is State.CLOSING:
            if self._lingering is not None and self._deadline is not None and now > self._deadline:
                self.close(lost=False)
        elif state is State.READING:
            if self._deadline is not None and now > self._deadline:
                self._respond(error(408, "request not received in time"), None)
                self._closing()
        elif state is State.IDLE:
            settings = self._host.settings
            idle = settings.keepalive_timeout if self.user else settings.header_timeout
            if now - self.last_active > idle:
                self.close(lost=False)

    def shutdown(self) -> None:
        """The server stops: end a stream, close if idle; answers in flight finish."""
        if self.state is State.STREAMING:
            self._send(self._session.end_stream())
            self._to(State.CLOSING)
            self._closing()
        elif self.state is State.IDLE:
            self.close(lost=False)

    def close(self, lost: bool) -> None:
        """Release the socket and tell the host whether the peer was ``lost``."""
        if self.state is State.CLOSED:
            return
        self._to(State.CLOSED)
        if self._detach is not None:
            self._detach()
            self._detach = None
        tls = self._tls
        goodbye = b""
        if tls is not None and tls.established and not lost and self._lingering is None:
            goodbye = tls.close_notify()  # best effort, as a FIN is
        self._port.release(goodbye)
        self._host.connection_closed(self._conn, lost)
