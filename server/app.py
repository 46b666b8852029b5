"""The server: accepts connections and decides every request.

Stages of a request, in order (boa's one file per stage, here one method each):
accept (allow-list, connection cap, socket options) → ``handle``: /healthz,
authentication (401/429), presence and the user cap (503), cross-site
checks for state-changing methods (403/415), routing (404/405) → a handler
in ``server.api`` or the static files → ``Connection.respond``.

Timers: a sweep once a second (TCP_INFO state, 408 and idle deadlines, SSE
heartbeats) and exact timers for presence grace expiry.
Signals (flags only, acted on by the loop): TERM/INT stop, HUP reloads.
"""

from __future__ import annotations

import logging
import signal
import socket
import time

from server import api, sockopts
from server import config as configmod
from server.audit import AuditLog
from server.auth import AllowList, Authenticator, Outcome, display_address
from server.config import Config, ConfigError
from server.connection import Connection
from server.events import HEARTBEAT, EventBus
from server.loop import READ, Loop, Timer
from server.presence import Change, Presence
from server.protocol import Limits, Request, Response, http_date
from server.responses import error, panel_full, unauthorized
from server.sctpchannel import ControlChannel
from server.static import FileCache

log = logging.getLogger(__name__)
access_log = logging.getLogger("server.access")

SHUTDOWN_SECONDS = 1.5
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


class Server:
    def __init__(self, cfg: Config, loop: Loop) -> None:
        self.config = cfg
        self.loop = loop
        self.limits = Limits(cfg.http.max_target, cfg.http.max_header_bytes, cfg.http.max_body)
        self.allow = AllowList(cfg.auth.allow)
        self.auth = Authenticator(
            cfg.auth.users, cfg.auth.lockout_failures, cfg.auth.lockout_window
        )
        self.presence = Presence(cfg.auth.max_users, cfg.presence.grace)
        self.files = FileCache(cfg.http.static_dir)
        self.events = EventBus(first_id=int(time.time() * 1000))
        self.audit = AuditLog(cfg.audit.path)
        self.control = ControlChannel(loop, cfg.control, self.events.publish)
        self.conns: dict[int, Connection] = {}
        self.stopping = False
        self.listener: socket.socket | None = None
        self._listening = False
        self._next_id = 0
        self._expiry: Timer | None = None
        self._clock = (0, "", "")
        self._ticks = 0

    # -- start and stop --------------------------------------------------
    def start(self) -> None:
        """Listen (raises OSError, e.g. port in use), start timers and signal handlers."""
        http = self.config.http
        self.listener = sockopts.listen(http.host, http.port)
        self._listen(True)
        self.control.start()
        self.loop.call_every(1.0, self.sweep)
        self.loop.on_signal(signal.SIGTERM, self.shutdown)
        self.loop.on_signal(signal.SIGINT, self.shutdown)
        self.loop.on_signal(signal.SIGHUP, self.reload)
        log.info("listening on http://%s:%d/", http.host, self.port)

    @property
    def port(self) -> int:
        assert self.listener is not None
        return int(self.listener.getsockname()[1])

    def _listen(self, on: bool) -> None:
        if on != self._listening and self.listener is not None:
            self._listening = on
            if on:
                self.loop.register(self.listener, READ, self._accept)
            else:
                self.loop.unregister(self.listener)

    def shutdown(self) -> None:
        """Stop accepting, finish what is in flight, then stop the loop (≤ 2 s)."""
        if self.stopping:
            return
        log.info("stopping: finishing %d connection(s)", len(self.conns))
        self.stopping = True
        self._listen(False)
        for conn in list(self.conns.values()):
            if conn.streaming:
                conn.end_stream()
            elif not (conn.parked or conn.outbuf or conn.head_started):
                conn.close(lost=False)
        self.loop.call_later(SHUTDOWN_SECONDS, self._stop_now)
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        if self.stopping and not self.conns:
            self._stop_now()

    def _stop_now(self) -> None:
        for conn in list(self.conns.values()):
            conn.close(lost=False)
        self.loop.stop()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.control.close()
        self.audit.close()

    def reload(self) -> None:
        """SIGHUP: re-read the config; keep the old one if the new one is invalid."""
        try:
            cfg = configmod.load(self.config.path)
        except ConfigError as e:
            log.error("reload failed, keeping the running config: %s", e)
            return
        old = self.config
        self.config = cfg
        self.limits = Limits(cfg.http.max_target, cfg.http.max_header_bytes, cfg.http.max_body)
        self.allow = AllowList(cfg.auth.allow)
        failures = self.auth._failures
        self.auth = Authenticator(
            cfg.auth.users, cfg.auth.lockout_failures, cfg.auth.lockout_window
        )
        self.auth._failures = failures
        self.presence.resize(cfg.auth.max_users, cfg.presence.grace)
        if cfg.http.static_dir != old.http.static_dir:
            self.files = FileCache(cfg.http.static_dir)
        for conn in self.conns.values():
            conn.user = None  # re-authenticate with the new user table
        if (cfg.http.host, cfg.http.port, cfg.control) != (
            old.http.host,
            old.http.port,
            old.control,
        ):
            log.warning("reload: listen addresses and [control] change only on restart")
        log.info("reloaded %s: %d user(s)", cfg.path, len(cfg.auth.users))

    # -- accept ----------------------------------------------------------
    def _accept(self, _mask: int) -> None:
        assert self.listener is not None
        for _ in range(64):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE, ENFILE, ECONNABORTED: try again next pass
                log.warning("accept failed: %s", e.strerror or e)
                return
            addr = display_address(peer[0])
            if not self.allow.allows(addr):
                log.warning("%s: refused: not in auth.allow", addr)
                sock.close()
                continue
            if not self._make_room() or sock.fileno() >= self.loop.fd_limit - 8:
                log.warning("%s: refused: %d connections open", addr, len(self.conns))
                sock.close()
                continue
            try:
                sockopts.configure_accepted(sock, self.config.presence)
            except OSError as e:
                log.info("%s: dropped at accept: %s", addr, e.strerror or e)
                sock.close()
                continue
            self._next_id += 1
            conn = Connection(self, sock, self._next_id, addr)
            self.conns[conn.id] = conn
            self.loop.register(sock, READ, conn.on_event)
            if len(self.conns) >= self.config.http.max_connections and not self._sheddable():
                self._listen(False)  # backpressure: the kernel's backlog holds the rest

    def _sheddable(self) -> Connection | None:
        """The oldest connection that has not authenticated and is not busy."""
        for conn in self.conns.values():
            if conn.user is None and not (conn.parked or conn.streaming):
                return conn
        return None

    def _make_room(self) -> bool:
        """Below max_connections, shedding the oldest unauthenticated one if needed."""
        if len(self.conns) < self.config.http.max_connections:
            return True
        victim = self._sheddable()
        if victim is None:
            return False
        log.info("%s: shed (unauthenticated) to make room", victim.addr)
        victim.close(lost=False)
        return True

    def connection_closed(self, conn: Connection, lost: bool) -> None:
        del self.conns[conn.id]
        self.events.unsubscribe(conn.id)
        change = self.presence.detach(conn.id, self.loop.now(), lost)
        if change is not None:
            self.announce(change)
        else:
            self._schedule_expiry()
        if not self._listening and not self.stopping:
            self._listen(True)
        self._stop_when_idle()

    # -- presence ----------------------------------------------------------
    def announce(self, change: Change) -> None:
        """Audit and broadcast a join or leave."""
        if change.kind == "join":
            self.audit.append("login", user=change.user, addr=change.addr)
        else:
            self.audit.append("leave", user=change.user, addr=change.addr, reason=change.reason)
        log.info(
            "%s %s from %s%s",
            change.user,
            change.kind,
            change.addr,
            f" ({change.reason})" if change.reason else "",
        )
        self.events.publish(
            "presence",
            {
                "kind": change.kind,
                "user": change.user,
                "addr": change.addr,
                "reason": change.reason,
                "online": self.presence.online(),
            },
        )

    def _schedule_expiry(self) -> None:
        when = self.presence.next_expiry()
        if when is None or (self._expiry is not None and self._expiry.when == when):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        for change in self.presence.expire(self.loop.now()):
            self.announce(change)
        self._schedule_expiry()

    # -- the sweep ---------------------------------------------------------
    def sweep(self) -> None:
        """Once a second: TCP_INFO states, request deadlines, SSE heartbeats."""
        now = self.loop.now()
        http = self.config.http
        self._ticks += 1
        heartbeat = self._ticks % max(1, round(http.sse_heartbeat)) == 0
        for conn in list(self.conns.values()):
            state = sockopts.tcp_state(conn.sock)
            if state not in (sockopts.TCP_ESTABLISHED, sockopts.TCP_CLOSE_WAIT):
                log.info("%s: connection lost (TCP state %d)", conn.addr, state)
                conn.close(lost=True)
            elif conn.streaming:
                if heartbeat:
                    conn.push(HEARTBEAT)
            elif conn.parked or conn.closing:
                continue
            elif conn.head_started is not None:
                if now - conn.head_started > http.header_timeout:
                    conn.respond(error(408, "request not received in time"), None)
                    conn.closing = True
                    if not conn.outbuf:
                        conn.close(lost=False)
            else:
                idle = http.keepalive_timeout if conn.authenticated else http.header_timeout
                if now - conn.last_active > idle:
                    conn.close(lost=False)

    # -- requests ------------------------------------------------------------
    def handle(self, conn: Connection, req: Request) -> Response | None:
        """The response to ``req``, or None if a handler took the connection over."""
        path = req.path
        if path == "/healthz":
            if req.method not in ("GET", "HEAD"):
                return error(405, "method not allowed", [("Allow", "GET, HEAD")])
            return Response(
                200, [("Content-Type", "text/plain"), ("Cache-Control", "no-store")], b"ok\n"
            )
        result = self.auth.check(req.headers.get("authorization"), conn.addr, self.loop.now())
        if result.outcome is not Outcome.OK:
            return self._refuse(req, result.outcome, result.name, result.retry_after)
        user = result.user
        assert user is not None
        if conn.user is not user:
            if not self.presence.admits(user.name):
                return self._full(req)
            if self.presence.user_of(conn.id) not in (None, user.name):  # now another user
                self.presence.detach(conn.id, self.loop.now(), lost=False)
                self._schedule_expiry()
            conn.user = user
            change = self.presence.attach(conn.id, user.name, conn.addr, time.time())
            if change is not None:
                self.announce(change)
        if req.method not in SAFE_METHODS:
            refusal = self._cross_site(req)
            if refusal is not None:
                return refusal
        return api.dispatch(self, conn, req)

    def _refuse(self, req: Request, outcome: Outcome, name: str, retry: int) -> Response:
        if outcome is Outcome.LOCKED:
            log.warning("too many failed logins for %r: locked for %d s", name, retry)
            return error(
                429,
                f"too many failed logins for {name!r}; try again later",
                [("Retry-After", str(retry))],
            )
        msg = "wrong user name or password" if outcome is Outcome.WRONG else "login required"
        return unauthorized(self.config.auth.realm, msg)

    def _full(self, req: Request) -> Response:
        retry = self.presence.retry_after(self.loop.now())
        html = "text/html" in req.headers.get("accept", "")
        return panel_full(self.presence.max_users, retry, html)

    @staticmethod
    def _cross_site(req: Request) -> Response | None:
        """403 for a state-changing request another site made the browser send (CSRF)."""
        site = req.headers.get("sec-fetch-site")
        origin = req.headers.get("origin")
        host = req.headers.get("host", "")
        if site is not None and site not in ("same-origin", "none"):
            return error(403, f"cross-site request refused ({site})")
        if origin is not None and origin.partition("://")[2] != host:
            return error(403, f"cross-origin request refused ({origin})")
        return None

    # -- logging -----------------------------------------------------------
    def _clock_strings(self) -> tuple[int, str, str]:
        """(second, Date header, CLF time), formatted once a second."""
        now = int(time.time())
        if self._clock[0] != now:
            clf = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
            self._clock = (now, http_date(now), clf)
        return self._clock

    def date(self) -> str:
        return self._clock_strings()[1]

    def log_access(self, conn: Connection, req: Request | None, status: int, size: int) -> None:
        """One Common Log Format line (plus the user) per response."""
        if not self.config.http.access_log or not access_log.isEnabledFor(logging.INFO):
            return
        line = f"{req.method} {req.target} HTTP/{req.http_version}" if req else "-"
        access_log.info(
            '%s - %s [%s] "%s" %d %d',
            conn.addr,
            conn.user.name if conn.user else "-",
            self._clock_strings()[2],
            line,
            status,
            size,
        )
