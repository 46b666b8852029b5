"""The listeners and the connections they made: accept, refuse, make room, shed.

Accepting (``_accept``, at most 64 a pass): a peer outside ``auth.allow`` is
closed at once; when ``capacity`` connections are open the oldest
unauthenticated, idle one is shed to make room, and if there is none the
new one is closed (and accepting pauses: the kernel's backlog holds the
rest until a connection closes). ``accept()`` failing (EMFILE, ENFILE)
pauses accepting for ``ACCEPT_PAUSE`` seconds instead of spinning. Each line
a client can cause is logged at most once a minute (``base.quiet``).

A person is kept within ``[limits] connections_per_user`` (``shed_for``):
their oldest event streams go first, then their oldest idle connections;
never a busy one, never the one asking.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from functools import partial

from server.base.addresses import AllowList, display_address, is_loopback
from server.base.loop import READ, Loop
from server.base.quiet import Throttled
from server.base.sockopts import Keepalive, configure_accepted
from server.web.connection import Connection, Host
from server.web.exchange import State

log = logging.getLogger(__name__)

ACCEPT_PAUSE = 0.5  # seconds without accepting after accept() failed (EMFILE)
# File descriptors vigil keeps for itself beside connections: stdio, listeners, the
# loop's wake-up pair, the audit log and its directory, SCTP, MQTT and its resolver,
# the pid file, static files being read, openssl children.
RESERVED_FDS = 32


class Acceptor:
    """Owns the listening sockets and every open connection (``conns``)."""

    def __init__(self, loop: Loop, host: Host, tls: Callable[[], ssl.SSLContext | None]) -> None:
        self.loop = loop
        self.host = host
        self.tls = tls  # the context for new handshakes (it changes on SIGHUP)
        self.conns: dict[int, Connection] = {}
        self.listeners: list[tuple[socket.socket, bool]] = []  # and whether it is HTTPS
        self.allow = AllowList(())
        self.keepalive: Keepalive | None = None
        self.max_connections = 1
        self.listening = False
        self.stopping = False
        self._next_id = 0
        self._quiet = Throttled(log)  # lines a client can cause: at most one a minute each

    def configure(self, allow: AllowList, keepalive: Keepalive, max_connections: int) -> None:
        """At start and on SIGHUP: who may connect, their socket options, how many at once."""
        self.allow, self.keepalive, self.max_connections = allow, keepalive, max_connections

    @property
    def capacity(self) -> int:
        """Connections vigil serves at once: ``max_connections``, or fewer if the process
        may not open that many files (RLIMIT_NOFILE, less what vigil keeps for itself)."""
        return max(1, min(self.max_connections, self.loop.fd_limit - RESERVED_FDS))

    def listen(self, on: bool) -> None:
        """Watch the listeners for new connections, or stop (backpressure, shutdown)."""
        if on == self.listening or (on and self.stopping):
            return
        self.listening = on
        for listener, secure in self.listeners:
            if on:
                self.loop.register(listener, READ, partial(self._accept, listener, secure))
            else:
                self.loop.unregister(listener)

    def _accept(self, listener: socket.socket, secure: bool, _mask: int) -> None:
        now = self.loop.now()
        for _ in range(64):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE, ENFILE, ECONNABORTED: stop accepting a moment
                self._quiet.log(
                    logging.WARNING,
                    "accept",
                    now,
                    "accept failed: %s; not accepting for %.1f s",
                    e.strerror or e,
                    ACCEPT_PAUSE,
                )
                self.listen(False)
                self.loop.call_later(ACCEPT_PAUSE, partial(self.listen, True))
                return
            addr = display_address(peer[0])
            if not self.allow.allows(addr):
                self._quiet.log(
                    logging.WARNING, "allow", now, "%s: refused: not in auth.allow", addr
                )
                sock.close()
                continue
            if not self._make_room() or sock.fileno() >= self.loop.fd_limit - 8:
                self._quiet.log(
                    logging.WARNING,
                    "full",
                    now,
                    "%s: refused: %d connections open (at most %d)",
                    addr,
                    len(self.conns),
                    self.capacity,
                )
                sock.close()
                continue
            try:
                assert self.keepalive is not None, "configure() before listening"
                configure_accepted(sock, self.keepalive)
            except OSError as e:
                log.debug("%s: dropped at accept: %s", addr, e.strerror or e)
                sock.close()
                continue
            self.adopt(sock, addr, secure)

    def adopt(self, sock: socket.socket, addr: str, secure: bool = False) -> Connection:
        """Serve ``sock`` (non-blocking, options set) from now on; over TLS if ``secure``."""
        self._next_id += 1
        tls = self.tls() if secure else None
        conn = Connection(self.host, sock, self._next_id, addr, tls, is_loopback(addr))
        self.conns[conn.id] = conn
        self.loop.register(sock, READ, conn.on_event)
        if len(self.conns) >= self.capacity and not self._sheddable():
            self.listen(False)  # backpressure: the kernel's backlog holds the rest
        return conn

    def closed(self, conn: Connection) -> None:
        """``conn`` is closed: forget it, and accept again if that made room."""
        del self.conns[conn.id]
        if not self.listening:
            self.listen(True)

    def _sheddable(self) -> Connection | None:
        """The oldest connection that has not authenticated and is not busy."""
        return next((c for c in self.conns.values() if c.sheddable), None)

    def _make_room(self) -> bool:
        """Below ``capacity``, shedding the oldest unauthenticated one if needed."""
        if len(self.conns) < self.capacity:
            return True
        victim = self._sheddable()
        if victim is None:
            return False
        self._quiet.log(
            logging.INFO,
            "shed",
            self.loop.now(),
            "%s: shed (unauthenticated) to make room",
            victim.addr,
        )
        victim.close(lost=False)
        return True

    def shed_for(self, user: str, conn: Connection, theirs: Iterable[int], limit: int) -> bool:
        """Keep ``user`` (whose connections are ``theirs``) within ``limit``: close their
        oldest event streams, then their oldest idle connections (never ``conn``, never a
        busy one). False if their busy connections alone are too many."""
        mine = sorted((self.conns[c] for c in theirs if c != conn.id), key=lambda c: c.id)
        over = len(mine) + 1 - limit
        if over <= 0:
            return True
        victims = [c for c in mine if c.state is State.STREAMING]
        victims += [c for c in mine if c.state is State.IDLE]
        log.info("%s: more than %d connections: closing the oldest", user, limit)
        for victim in victims[:over]:
            victim.close(lost=False)
        return len(victims) >= over

    def shutdown(self) -> None:
        """Stop accepting; end streams and idle connections, let answers in flight finish."""
        self.listen(False)
        self.stopping = True
        for conn in list(self.conns.values()):
            conn.shutdown()

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            conn.close(lost=False)

    def close(self) -> None:
        for listener, _secure in self.listeners:
            listener.close()
