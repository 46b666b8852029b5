"""One accepted connection: the socket shell around its ``Exchange``.

This is socketserver's "table of partially finished requests", one entry,
in hypercorn's shape: the core (``server.web.exchange.Exchange``) holds the
state machine (``State``, ``TRANSITIONS``), the HTTP and TLS sessions, the
output buffer and every deadline, and decides; this shell owns the socket
and its loop registration and does what the core asks through its
``Port``: one ``send`` of the queued bytes, our FIN, a new readiness mask,
the close. It reads the socket (one ``recv`` a readiness event) and, for
the sweep, the kernel's TCP state, and hands both to the core with the
time. The module header of ``server.web.exchange`` has the states, the
deadlines and the error boundary.

The server knows only this shell: it asks (``tick``, ``shutdown``,
``close``, ``flush``), the core decides, and the core asks the server in
turn (``Host``: ``admit`` on each head, ``date``, ``log_access``,
``output_pending``, ``connection_closed``), naming this shell.

Output is queued in the core and written by ``flush``, which the server
calls at the end of each loop pass, after the audit log is on disk: one
``send`` per connection per pass, and nothing is acknowledged before it
is durable. What the kernel does not take stays queued and the socket is
watched for writability only while it does.

Errors of this socket (ECONNRESET, ETIMEDOUT, EPIPE) close this connection
only, as a loss. TLS is the core's (a ``TlsSession`` over memory BIOs): the
socket carries ciphertext, and the gate and the handlers see no difference
but ``secure``.
"""

from __future__ import annotations

import socket
import ssl
from typing import Protocol

from server.base import sockopts
from server.base.loop import READ, WRITE, Loop
from server.people.auth import User
from server.web.exchange import READ as _READ
from server.web.exchange import WRITE as _WRITE
from server.web.exchange import Exchange, Proceed, Settings, State, log
from server.web.protocol import Request, Response

assert (_READ, _WRITE) == (READ, WRITE), "the core's masks are the loop's"

RECV_SIZE = 65536
_ALIVE = (sockopts.TCP_ESTABLISHED, sockopts.TCP_CLOSE_WAIT)


class Host(Protocol):
    """What a connection needs from the server that owns it."""

    loop: Loop
    settings: Settings
    stopping: bool

    def admit(self, conn: Connection, req: Request) -> tuple[User | None, Response | Proceed]: ...
    def date(self) -> bytes: ...
    def log_access(self, conn: Connection, req: Request | None, status: int, size: int) -> None: ...
    def output_pending(self, conn: Connection) -> None: ...
    def connection_closed(self, conn: Connection, lost: bool) -> None: ...


class Connection:
    """The socket of one connection; its ``Exchange`` decides."""

    __slots__ = ("_core", "_loop", "addr", "id", "loopback", "secure", "sock")

    def __init__(
        self,
        host: Host,
        sock: socket.socket,
        conn_id: int,
        addr: str,
        tls: ssl.SSLContext | None = None,
        loopback: bool = False,
    ) -> None:
        loop = host.loop
        self._loop = loop
        self.sock = sock
        self.id = conn_id
        self.addr = addr
        self.secure = tls is not None
        self.loopback = loopback  # the peer is this machine
        self._core: Exchange[Connection, User] = Exchange(
            host, self, self, addr, tls, loop.now(), loop.now
        )

    # -- what the core knows, read by the server ----------------------------
    @property
    def state(self) -> State:
        return self._core.state

    @property
    def user(self) -> User | None:
        """Who the last request authenticated as."""
        return self._core.user

    @property
    def last_active(self) -> float:
        return self._core.last_active

    @property
    def sheddable(self) -> bool:
        """Unauthenticated and not busy: the first to go when connections run out."""
        return self._core.sheddable

    @property
    def local_address(self) -> str:
        """The address the peer reached us at, as a Host header would name it."""
        host = str(self.sock.getsockname()[0])
        return f"[{host}]" if ":" in host else host

    # -- events from the loop -------------------------------------------
    def on_event(self, mask: int) -> None:
        core = self._core
        if mask & WRITE:
            core.writable()
        if mask & READ and core.state is not State.CLOSED:
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                core.lost(e.strerror or e)
                return
            core.received(data, self._loop.now())

    # -- asked by the server, decided by the core -------------------------
    def flush(self) -> None:
        """Write what is queued (the host calls this at the end of a pass)."""
        self._core.flush()

    def tick(self, now: float, heartbeat: bool) -> None:
        """Once a second: TCP state, the 408 and idle deadlines, SSE heartbeats."""
        tcp = sockopts.tcp_state(self.sock)
        alive = tcp in _ALIVE
        if not alive:
            log.debug("%s: connection lost (TCP state %d)", self.addr, tcp)
        self._core.tick(now, alive, heartbeat)

    def shutdown(self) -> None:
        """The server stops: end a stream, close if idle; answers in flight finish."""
        self._core.shutdown()

    def close(self, lost: bool) -> None:
        """Close the socket and tell the host whether the peer was ``lost``."""
        self._core.close(lost)

    def push(self, data: bytes) -> None:
        """Append ``data`` to a streamed body; cut the stream off if the client lags."""
        self._core.push(data)

    def process(self) -> None:
        """Answer every complete request buffered, until parked, streaming or closing."""
        self._core.process()

    # -- the core's Port: the socket's verbs ---------------------------------
    def write(self, data: bytes | bytearray) -> int | None:
        """One ``send``: bytes the kernel took (0 if its buffer is full), None if lost."""
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            self._core.lost(e.strerror or e)
            return None

    def shut_write(self) -> bool:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True

    def watch(self, mask: int) -> None:
        self._loop.modify(self.sock, mask, self.on_event)

    def release(self, goodbye: bytes) -> None:
        self._loop.unregister(self.sock)
        if goodbye:
            self.write(goodbye)
        self.sock.close()
