"""The server: owns every connection and service, and gates every request.

Stages of a request (boa's one file per stage; here the gate and the rest):
accept (allow-list, connection cap, socket options; ``_accept``) →
``Connection`` reads and parses → ``Server.handle``, the gate: routing
(public routes such as /healthz answer here), authentication (401/429),
presence and the user cap (503), cross-site checks for state-changing
methods (403) → the handler in ``server.web.api`` → an outcome the connection
sends. ``handle`` returns who the connection now belongs to with the
outcome; it never writes a connection's fields.

Who owns what:
- connections (``conns``): this module adds and drops them; each
  connection owns its own state (``server.web.connection``).
- presence, leases, the event bus, the audit log, the control channel, the
  static file cache: this module creates them and hands handlers a
  ``Services`` view; presence and lease changes are announced only here
  (``_announce``, ``announce_leases``). Leases end here when their holder
  leaves, their device goes offline (``_control_event``) or they idle (the
  sweep).

End of every loop pass (``end_of_pass``): the audit log's fsync, then every
connection with output writes it: nothing is acknowledged before it is on
disk. The access log is written once a second by the sweep.

Timers: a sweep once a second (each connection's ``tick``: TCP_INFO state,
408 and idle deadlines, SSE heartbeats) and exact timers for presence grace
expiry. Signals (flags only, acted on by the loop): TERM/INT stop, HUP reloads.

systemd (``server.base.notify``, a no-op outside a ``Type=notify`` unit): READY=1
at the end of ``start``, RELOADING=1 … READY=1 around ``reload``,
STOPPING=1 when ``shutdown`` begins, WATCHDOG=1 from a loop timer.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import ssl
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from server import config as configmod
from server.base import sockopts
from server.base.addresses import AllowList, display_address, is_loopback
from server.base.buckets import Rate
from server.base.dates import PerSecond
from server.base.loop import READ, Loop, Timer
from server.base.notify import Notifier
from server.base.quiet import Throttled
from server.config import Config, ConfigError, User
from server.control.channel import ControlChannel
from server.feed.audit import AuditLog
from server.feed.bus import EventBus
from server.people import presence
from server.people.auth import Authenticator, HashBudget, Verdict, hash_password
from server.people.leases import Change as LeaseChange
from server.people.leases import End, Leases
from server.people.presence import Change, Presence
from server.web import api, certificate
from server.web.accesslog import AccessLog
from server.web.connection import Connection, Proceed, Settings, State
from server.web.outcomes import Outcome
from server.web.protocol import Limits, Request, Response
from server.web.responses import error, panel_full, unauthorized
from server.web.router import Match, NoRoute
from server.web.static import FileCache

if TYPE_CHECKING:
    from server.fleet.mqtt import Bridge

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 1.5
ACCEPT_PAUSE = 0.5  # seconds without accepting after accept() failed (EMFILE)
# File descriptors vigil keeps for itself beside connections: stdio, listeners, the
# loop's wake-up pair, the audit log and its directory, SCTP, MQTT and its resolver,
# the pid file, static files being read, openssl children.
RESERVED_FDS = 32
EXPIRY_CHECK_TICKS = 60  # sweeps (seconds) between two checks of the certificate's validity
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
# A Host header value: a DNS name or IPv4 address, or an IPv6 literal, and a port.
HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")
# Why a holder's leases end when they leave (presence's reason; else "left").
LEASE_ENDS = {presence.LOST: End.LOST, presence.SHUTDOWN: End.SHUTDOWN}


def _settings(cfg: Config) -> Settings:
    http = cfg.http
    return Settings(
        Limits(http.max_target, http.max_header_bytes, http.max_body),
        http.header_timeout,
        http.keepalive_timeout,
        http.max_sse_buffer,
        cfg.tls.handshake_timeout,
    )


def _rates(cfg: Config) -> tuple[Rate, Rate]:
    """Chat messages and commands per person (``[limits]``)."""
    limits = cfg.limits
    return (
        Rate(limits.chat_per_minute / 60, limits.chat_burst),
        Rate(limits.commands_per_second, limits.command_burst),
    )


def _hash_cost() -> float:
    """Seconds one password verification takes on this machine (measured once)."""
    started = time.perf_counter()
    hash_password("")  # one scrypt, as a verification is; the dummy hash stays lazy
    return max(time.perf_counter() - started, 1e-3)


class Server:
    def __init__(self, cfg: Config, loop: Loop, notify: Notifier | None = None) -> None:
        self.config = cfg
        self.loop = loop
        self.notify = notify or Notifier()
        self.settings = _settings(cfg)
        self.allow = AllowList(cfg.auth.allow)
        self.auth = Authenticator(
            cfg.auth.users,
            cfg.auth.lockout_failures,
            cfg.auth.lockout_window,
            HashBudget(
                _hash_cost(),
                cfg.auth.hash_share_address,
                cfg.auth.hash_share_total,
                cfg.auth.lockout_failures,
            ),
        )
        self.presence = Presence(cfg.auth.max_users, cfg.presence.grace)
        self.events = EventBus(first_id=int(time.time() * 1000))
        self.audit = AuditLog(
            cfg.audit.path,
            file_bytes=cfg.audit.file_bytes,
            keep_files=cfg.audit.keep_files,
            memory_bytes=cfg.audit.memory_bytes,
        )
        self.leases = Leases(cfg.control.lease_idle)
        self.control = ControlChannel(loop, cfg.control, self._control_event, self.audit.append)
        self.services = api.Services(
            self.presence,
            self.events,
            self.control,
            self.audit,
            FileCache(cfg.http.static_dir),
            self.leases,
            self.announce_leases,
            loop.now,
            time.time,
            *_rates(cfg),
        )
        self.access = AccessLog() if cfg.http.access_log else None
        self.conns: dict[int, Connection] = {}
        self.stopping = False
        self._stopped = False
        self.listener: socket.socket | None = None
        self.tls_listener: socket.socket | None = None
        self.tls: ssl.SSLContext | None = None  # for new handshakes; None: TLS off
        self.certificate: certificate.Description | None = None
        self._listening = False
        self._next_id = 0
        self._expiry: Timer | None = None
        self._clock = PerSecond()
        self._ticks = 0
        self._pending_output: list[Connection] = []
        self._quiet = Throttled(log)  # lines a client can cause: at most one a minute each
        self.host_names = self._host_names()
        loop.at_end_of_pass(self.end_of_pass)
        self.mqtt = self._bridge(cfg)

    def _host_names(self) -> frozenset[str]:
        """What a Host header may name: ``[http] allowed_hosts``, localhost, this machine's
        name (and NAME.local), and the names of the certificate served."""
        own = socket.gethostname().lower().partition(".")[0]
        names = {*self.config.http.allowed_hosts, "localhost", own, f"{own}.local"}
        if self.certificate is not None:
            dns = (n.partition(":")[2] for n in self.certificate.names if n.startswith("DNS:"))
            names.update(n.lower() for n in dns)
        return frozenset(names)

    def _bridge(self, cfg: Config) -> Bridge | None:
        """The MQTT bridge if ``[mqtt]`` is on (paho is not even imported otherwise).

        Its end-of-pass hook comes after ``end_of_pass``, so the fleet hears of
        nothing before it is on disk.
        """
        if not cfg.mqtt.enabled:
            return None
        from server.fleet.mqtt import Bridge

        return Bridge(self.loop, cfg.mqtt, cfg.presence, self.services)

    # -- start and stop --------------------------------------------------
    def start(self) -> None:
        """Listen (raises OSError, e.g. port in use), start services and signal handlers.

        With TLS on, the certificate is loaded first (``CertificateError``,
        ``ssl.SSLError`` or ``OSError`` if it cannot be).
        """
        http = self.config.http
        if self.listener is None:
            self.bind()
        if self.tls_listener is not None:
            self.tls = self._tls_context(self.config)
        self.host_names = self._host_names()
        self._listen(True)
        self.start_services()
        self.loop.on_signal(signal.SIGTERM, self.shutdown)
        self.loop.on_signal(signal.SIGINT, self.shutdown)
        self.loop.on_signal(signal.SIGHUP, self.reload)
        log.info("listening on http://%s:%d/", http.host, self.port)
        if self.tls_listener is not None:
            log.info("listening on https://%s:%d/", http.host, self.tls_port)
        if self.notify.watchdog_interval is not None:
            self.loop.call_every(self.notify.watchdog_interval, self.notify.watchdog)
        self.notify.ready(self._status())

    def _status(self) -> str:
        """What ``systemctl status`` shows (systemd's STATUS=)."""
        listeners = (self.listener, self.tls_listener)
        ports = ", ".join(str(sock.getsockname()[1]) for sock in listeners if sock is not None)
        return f"serving on port {ports}; {len(self.config.auth.users)} user(s)"

    def bind(self) -> None:
        """Take the HTTP (and HTTPS) ports; OSError if one is in use."""
        http, tls = self.config.http, self.config.tls
        self.listener = sockopts.listen(http.host, http.port)
        if tls.enabled:
            self.tls_listener = sockopts.listen(http.host, tls.port)

    def _tls_context(self, cfg: Config) -> ssl.SSLContext:
        """The context for new handshakes: the configured certificate, or this device's own
        (made on first run by ``python -m server``, ``server.firstrun``; made again here when
        ``certificate.remake_reason`` says so). Raises ``CertificateError``, one line naming
        the file and what is wrong."""
        if cfg.tls.cert is None or cfg.tls.key is None:
            ctx, desc, made = certificate.own_pair(cfg.state.dir, datetime.now(UTC))
        else:
            (ctx, desc), made = certificate.load(cfg.tls.cert, cfg.tls.key, own=False), None
        self.certificate = desc
        log.info(
            "TLS certificate %s, SHA-256 %s, expires %s",
            desc.path,
            desc.fingerprint,
            desc.not_after.date(),
        )
        if made is not None:
            log.warning(
                "made a new TLS certificate for this device (%s): SHA-256 %s, valid until %s;"
                " browsers ask again: compare the fingerprint with what they show",
                made,
                desc.fingerprint,
                desc.not_after.date(),
            )
        self._check_expiry(loaded=True)
        return ctx

    def _check_expiry(self, loaded: bool = False) -> None:
        """Once a minute (the sweep) and at every load: this device's own certificate is made
        again when ``certificate.remake_reason`` says so (the clock was wrong when it was
        made) and the new context replaces ``self.tls`` for new handshakes (open connections
        keep theirs); what is wrong with a certificate (``certificate.warning``) is logged
        at load and then daily."""
        desc = self.certificate
        if desc is None:
            return
        now = datetime.now(UTC)
        own = self.config.tls.cert is None
        if own and not loaded and certificate.remake_reason(desc, now) is not None:
            try:
                self.tls = self._tls_context(self.config)
            except (OSError, ssl.SSLError, certificate.CertificateError) as e:
                log.error("no new TLS certificate, keeping the one in use: %s", e)
            return
        if loaded or self._ticks % certificate.REPEAT_WARNING == 0:
            said = certificate.warning(desc, now, own)
            if said is not None:
                log.log(said[0], "%s", said[1])

    def start_services(self) -> None:
        """The control channel and the sweep (``start`` without a listener: tests)."""
        self.control.start()
        if self.mqtt is not None:
            self.mqtt.start()
        self.loop.call_every(1.0, self.sweep)

    @property
    def port(self) -> int:
        assert self.listener is not None
        return int(self.listener.getsockname()[1])

    @property
    def tls_port(self) -> int:
        assert self.tls_listener is not None
        return int(self.tls_listener.getsockname()[1])

    def _listen(self, on: bool) -> None:
        if on == self._listening:
            return
        self._listening = on
        for listener, secure in ((self.listener, False), (self.tls_listener, True)):
            if listener is None:
                continue
            if on:
                self.loop.register(listener, READ, partial(self._accept, listener, secure))
            else:
                self.loop.unregister(listener)

    def shutdown(self) -> None:
        """Stop accepting, finish what is in flight, then stop the loop (≤ 1.5 s)."""
        if self.stopping:
            return
        log.info("stopping: finishing %d connection(s)", len(self.conns))
        self.notify.stopping()
        self.stopping = True
        self._listen(False)
        for conn in list(self.conns.values()):
            conn.shutdown()
        self.loop.call_later(SHUTDOWN_SECONDS, self._stop_now)
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        if self.stopping and not self.conns:
            self._stop_now()

    def _stop_now(self) -> None:
        """Answer what still waits (503), write it, close everyone, log every leave."""
        if self._stopped:
            return
        self._stopped = True
        self.control.close()
        self.end_of_pass()
        for conn in list(self.conns.values()):
            conn.close(lost=False)
        for change in self.presence.end_all():
            self._announce(change)
        self.end_of_pass()  # the leaves on disk before the fleet hears of them
        if self.mqtt is not None:
            self.mqtt.close()
        self.loop.stop()

    def close(self) -> None:
        if self.access is not None:
            self.access.flush()
        for listener in (self.listener, self.tls_listener):
            if listener is not None:
                listener.close()
        self.control.close()
        if self.mqtt is not None:
            self.mqtt.close()
        self.audit.close()
        self.notify.close()

    def reload(self) -> None:
        """SIGHUP: re-read the config; keep the old one if the new one is invalid."""
        self.notify.reloading()
        try:
            self._reload()
        finally:
            self.notify.ready(self._status())

    def _reload(self) -> None:
        try:
            cfg = configmod.load(self.config.path)
        except ConfigError as e:
            log.error("reload failed, keeping the running config: %s", e)
            return
        old = self.config
        self.config = cfg
        self.settings = _settings(cfg)
        self.allow = AllowList(cfg.auth.allow)
        self.auth.update(cfg.auth.users, cfg.auth.lockout_failures, cfg.auth.lockout_window)
        self.presence.resize(cfg.auth.max_users, cfg.presence.grace)
        self.control.reload(cfg.control)
        self.leases.idle = cfg.control.lease_idle
        if cfg.limits != old.limits:
            self.services.chat_rate, self.services.command_rate = _rates(cfg)
        if self.mqtt is not None:
            self.mqtt.reload(cfg.mqtt, cfg.presence)
        else:
            self.mqtt = self._bridge(cfg)
            if self.mqtt is not None:
                self.mqtt.start()
        if cfg.http.static_dir != old.http.static_dir:
            self.services.files = FileCache(cfg.http.static_dir)
        if self.access is not None:
            self.access.flush()
        self.access = AccessLog() if cfg.http.access_log else None
        if self.tls is not None:
            try:
                self.tls = self._tls_context(cfg)  # for new handshakes
            except (OSError, ssl.SSLError, certificate.CertificateError) as e:
                log.error("reload: keeping the old TLS certificate: %s", e)
        self.host_names = self._host_names()
        for conn in list(self.conns.values()):
            if conn.user is not None and conn.user.name not in self.auth.users:
                log.info(
                    "%s: %s was removed from the config: logged out", conn.addr, conn.user.name
                )
                conn.close(lost=False)
        if (cfg.http.host, cfg.http.port, cfg.control, cfg.tls.enabled, cfg.tls.port) != (
            old.http.host,
            old.http.port,
            old.control,
            old.tls.enabled,
            old.tls.port,
        ):
            log.warning("reload: listen addresses and [control] change only on restart")
        log.info("reloaded %s: %d user(s)", cfg.path, len(cfg.auth.users))

    # -- accept ----------------------------------------------------------
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
                self._listen(False)
                self.loop.call_later(ACCEPT_PAUSE, self._resume_accepting)
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
                sockopts.configure_accepted(sock, self.config.presence)
            except OSError as e:
                log.debug("%s: dropped at accept: %s", addr, e.strerror or e)
                sock.close()
                continue
            self.adopt(sock, addr, secure)

    def _resume_accepting(self) -> None:
        if not self.stopping:
            self._listen(True)

    @property
    def capacity(self) -> int:
        """Connections vigil serves at once: ``max_connections``, or fewer if the process
        may not open that many files (RLIMIT_NOFILE, less what vigil keeps for itself)."""
        return max(1, min(self.config.http.max_connections, self.loop.fd_limit - RESERVED_FDS))

    def adopt(self, sock: socket.socket, addr: str, secure: bool = False) -> Connection:
        """Serve ``sock`` (non-blocking, options set) from now on; over TLS if ``secure``."""
        self._next_id += 1
        tls = self.tls if secure else None
        conn = Connection(self, sock, self._next_id, addr, tls, is_loopback(addr))
        self.conns[conn.id] = conn
        self.loop.register(sock, READ, conn.on_event)
        if len(self.conns) >= self.capacity and not self._sheddable():
            self._listen(False)  # backpressure: the kernel's backlog holds the rest
        return conn

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

    # -- what connections ask of their host -------------------------------
    def date(self) -> bytes:
        self._clock.update(time.time())
        return self._clock.date

    def output_pending(self, conn: Connection) -> None:
        self._pending_output.append(conn)

    def end_of_pass(self) -> None:
        """Make the audit log durable, then write every connection's output.

        If the fsync fails, what this pass would have sent may acknowledge a
        record that is not on disk: those connections close unanswered instead.
        """
        pending, self._pending_output = self._pending_output, []
        try:
            self.audit.sync()
        except OSError as e:
            log.error("audit log: fsync failed (%s): %d answer(s) not sent", e, len(pending))
            for conn in pending:
                conn.close(lost=False)
            return
        for conn in pending:
            conn.flush()

    def log_access(self, conn: Connection, req: Request | None, status: int, size: int) -> None:
        """One access-log line; its time is the Date of the response just formatted."""
        if self.access is None:
            return
        line = f"{req.method} {req.target} HTTP/{req.http_version}" if req else "-"
        name = conn.user.name if conn.user else "-"
        self.access.record(conn.addr, name, self._clock.clf, line, status, size)

    def connection_closed(self, conn: Connection, lost: bool) -> None:
        del self.conns[conn.id]
        change = self.presence.detach(conn.id, self.loop.now(), lost)
        if change is not None:
            self._announce(change)
        self._schedule_expiry()
        if not self._listening and not self.stopping:
            self._listen(True)
        self._stop_when_idle()

    # -- the gate --------------------------------------------------------
    def admit(self, conn: Connection, req: Request) -> tuple[User | None, Response | Proceed]:
        """Who ``conn`` belongs to after the head of ``req``, and a refusal or what to run
        on the whole request. Decided before any byte of the body is read."""
        match = api.ROUTER.match(req.method, req.path)
        if isinstance(match, NoRoute):
            if match.public:
                return conn.user, self._no_route(match)
        elif match.route.public:
            return conn.user, partial(self._run, match, None)
        if self.tls is not None and not (conn.secure or conn.loopback):
            return conn.user, self._to_https(conn, req)  # before any password crosses the wire
        refusal = self._cross_site_read(req) or self._misdirected(req)
        if refusal is not None:
            return conn.user, refusal
        now = self.loop.now()
        result = self.auth.check(req.headers.get("authorization"), conn.addr, now)
        if result.verdict is not Verdict.OK:
            return conn.user, self._refuse(result.verdict, result.name, result.retry_after)
        user = result.user
        assert user is not None
        if self.presence.user_of(conn.id) != user.name:
            if not self.presence.admits(user.name):
                return conn.user, self._full(req)
            for change in self.presence.attach(conn.id, user.name, conn.addr, now, time.time()):
                self._announce(change)
            self._schedule_expiry()
            if not self._shed_for(user.name, conn):
                return user, self._too_many(user.name)
        if req.method not in SAFE_METHODS:
            refusal = self._cross_site(req, conn.secure)
            if refusal is not None:
                return user, refusal
        if isinstance(match, NoRoute):
            return user, self._no_route(match)
        return user, partial(self._run, match, user)

    def _run(self, match: Match[api.Handler], user: User | None, req: Request) -> Outcome:
        return match.handler(self.services, api.Call(req, user, match.params))

    def _shed_for(self, user: str, conn: Connection) -> bool:
        """Keep ``user`` within ``limits.connections_per_user``: close their oldest event
        streams, then their oldest idle connections (never ``conn``, never a busy one).
        False if their busy connections alone are too many."""
        limit = self.config.limits.connections_per_user
        mine = sorted(
            (self.conns[c] for c in self.presence.connections(user) if c != conn.id),
            key=lambda c: c.id,
        )
        over = len(mine) + 1 - limit
        if over <= 0:
            return True
        victims = [c for c in mine if c.state is State.STREAMING]
        victims += [c for c in mine if c.state is State.IDLE]
        log.info("%s: more than %d connections: closing the oldest", user, limit)
        for victim in victims[:over]:
            victim.close(lost=False)
        return len(victims) >= over

    def _too_many(self, user: str) -> Response:
        limit = self.config.limits.connections_per_user
        return error(
            429,
            f"{user} has {limit} connections busy at once, the most one person may have",
            [("Retry-After", "1"), ("Connection", "close")],
        )

    def _to_https(self, conn: Connection, req: Request) -> Response:
        """308 to the same path over HTTPS (RFC 9110 §15.4.9: the method is kept).

        The host comes from the Host header only if it is a host name or an
        address (RFC 3986 §3.2.2), never anything that could end the authority.
        """
        host = req.headers.get("host", "")
        if not HOST.fullmatch(host):
            host = conn.local_address
        name = host.rpartition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
        port = "" if self.tls_port == 443 else f":{self.tls_port}"
        location = f"https://{name}{port}{req.target}"
        return error(308, f"use HTTPS: {location}", [("Location", location)])

    @staticmethod
    def _no_route(match: NoRoute) -> Response:
        return error(match.status, match.message, [("Allow", match.allow)] if match.allow else None)

    def _refuse(self, verdict: Verdict, name: str, retry: int) -> Response:
        if verdict is Verdict.LOCKED:
            log.warning("too many failed logins for %r: locked for %d s", name, retry)
            return error(
                429,
                f"too many failed logins for {name!r}; try again later",
                [("Retry-After", str(retry))],
            )
        if verdict is Verdict.BUSY:
            return error(
                429,
                f"too many login attempts at once; try again in {retry} s",
                [("Retry-After", str(retry))],
            )
        msg = "wrong user name or password" if verdict is Verdict.WRONG else "login required"
        return unauthorized(self.config.auth.realm, msg)

    def _full(self, req: Request) -> Response:
        retry = self.presence.retry_after(self.loop.now())
        html = "text/html" in req.headers.get("accept", "")
        return panel_full(self.presence.max_users, retry, html)

    def _misdirected(self, req: Request) -> Response | None:
        """421 for a Host that names neither an address nor a name this panel goes by:
        a page of another site whose name was re-pointed here (DNS rebinding)."""
        host = req.headers.get("host", "").lower()
        if host.startswith("["):
            return None  # an IPv6 literal (its syntax was checked by h11)
        name = host.partition(":")[0]
        if name in self.host_names or name.replace(".", "").isdigit():
            return None
        return error(421, f"this panel is not served as {name!r} (see [http] allowed_hosts)")

    @staticmethod
    def _cross_site_read(req: Request) -> Response | None:
        """403 before authentication for what another site embeds or fetches (an ``<img>``
        with cached credentials would otherwise log its victim in): Fetch Metadata's
        resource isolation; only a top-level navigation may come from elsewhere."""
        site = req.headers.get("sec-fetch-site")
        if site is None or site in ("same-origin", "none"):
            return None
        if req.headers.get("sec-fetch-mode") == "navigate" and req.method in ("GET", "HEAD"):
            return None
        return error(403, f"cross-site request refused ({site})")

    @staticmethod
    def _cross_site(req: Request, secure: bool) -> Response | None:
        """403 for a state-changing request another site made the browser send (CSRF)."""
        site = req.headers.get("sec-fetch-site")
        origin = req.headers.get("origin")
        if site is not None and site not in ("same-origin", "none"):
            return error(403, f"cross-site request refused ({site})")
        if origin is not None:
            scheme = "https" if secure else "http"
            if origin.lower() != f"{scheme}://{req.headers.get('host', '')}".lower():
                return error(403, f"cross-origin request refused ({origin})")
        return None

    # -- presence ----------------------------------------------------------
    def _announce(self, change: Change) -> None:
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
        if change.kind == "leave":
            end = LEASE_ENDS.get(change.reason or presence.CLOSED, End.LEFT)
            self.announce_leases(self.leases.end_holder(change.user, end))

    # -- leases and the devices' events ------------------------------------
    def announce_leases(self, changes: list[LeaseChange]) -> None:
        """Audit and broadcast lease starts and ends (the ``device`` shows the lease after them)."""
        for change in changes:
            lease = change.lease
            extra = {} if change.by is None else {"by": change.by}
            self.audit.append(
                "lease",
                change=change.kind,
                device=lease.device,
                user=lease.holder,
                reason=change.reason,
                **extra,
            )
            ended = "" if change.reason is None else f": {change.reason}"
            log.info("lease of %s by %s %s%s", lease.device, lease.holder, change.kind, ended)
            device = self.control.device(lease.device)
            assert device is not None  # leases are taken on known devices, which stay known
            self.events.publish(
                "device",
                {
                    "kind": "lease",
                    "change": change.kind,
                    "device": self.leases.annotate(device.as_json()),
                    "holder": lease.holder,
                    "reason": change.reason,
                    **extra,
                },
            )

    def _control_event(self, kind: str, data: dict[str, object]) -> None:
        """An event of the control channel: devices carry their lease; offline ends it."""
        if kind != "device":
            self.events.publish(kind, data)
            return
        device = data["device"]
        assert isinstance(device, dict)
        self.events.publish(kind, {**data, "device": self.leases.annotate(device)})
        if data["kind"] == "offline":
            self.announce_leases(self.leases.end_device(device["id"], End.OFFLINE))

    def _schedule_expiry(self) -> None:
        when = self.presence.next_expiry()
        if self._expiry is not None and (when is None or self._expiry.when != when):
            self._expiry.cancel()
            self._expiry = None
        if when is not None and self._expiry is None:
            self._expiry = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        for change in self.presence.expire(self.loop.now()):
            self._announce(change)
        self._schedule_expiry()

    # -- the sweep ---------------------------------------------------------
    def sweep(self) -> None:
        """Once a second: every connection's deadlines, TCP state and heartbeat."""
        now = self.loop.now()
        self._ticks += 1
        heartbeat = self._ticks % max(1, round(self.config.http.sse_heartbeat)) == 0
        for conn in list(self.conns.values()):
            conn.tick(now, heartbeat)
        self.announce_leases(self.leases.expire(now))
        if self.access is not None:
            self.access.flush()
        if self._ticks % EXPIRY_CHECK_TICKS == 0:
            self._check_expiry()
