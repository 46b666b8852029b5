"""The server: wires the parts together and runs their lifecycle; the parts decide.

What each part decides (docs/design.md has the picture):

- ``web.acceptor``: the listeners and every open connection: accept, the
  allow-list, the connection cap, shedding;
- ``web.connection``: one connection's state, deadlines and bytes;
- ``web.gate``: who a request is from and whether it may go on (pure);
- ``web.api``: the handlers, over the shared ``core.services.Services``;
- ``core.announcer``: every change's audit record, log line and event;
- ``control.channel``: the device agents over SCTP;
- ``fleet.mqtt``: the fleet over MQTT.

The server keeps what is only wiring: it makes the parts and hands each the
others it needs, applies the gate's decisions (announce the presence changes,
keep a person within their connections), answers the connections' questions
(``web.connection.Host``), and runs the lifecycle: ``start``, ``reload``
(SIGHUP), ``shutdown`` (TERM/INT), the sweep once a second, presence's grace
timers, and the end of every loop pass (``end_of_pass``): the audit log's
fsync, then every connection with output writes it, so nothing is
acknowledged before it is on disk. The access log is written by the sweep.

systemd (``server.base.notify``, a no-op outside a ``Type=notify`` unit): READY=1
at the end of ``start``, RELOADING=1 … READY=1 around ``reload``,
STOPPING=1 when ``shutdown`` begins, WATCHDOG=1 from a loop timer.

Metrics (``web.metrics``, made once ``[metrics]`` names a token): the server
counts every response by status class with its latency (``log_access``)
and hands the exposition the parts it reads at scrape time.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from server import config as configmod
from server.base import sockopts
from server.base.addresses import AllowList
from server.base.buckets import Rate
from server.base.dates import PerSecond, iso_utc
from server.base.loop import Loop, Timer
from server.base.notify import Notifier
from server.base.tally import SECONDS, Tally
from server.config import Config, ConfigError
from server.control.channel import ControlChannel
from server.core import commands
from server.core.announcer import Announcer
from server.feed.audit import AuditLog
from server.feed.bus import EventBus, personal
from server.people.auth import Authenticator, HashBudget, User, hash_password
from server.people.leases import Leases
from server.people.presence import Presence
from server.people.sessions import Session, Sessions
from server.web import api
from server.web.acceptor import Acceptor
from server.web.accesslog import AccessLog
from server.web.connection import Connection
from server.web.exchange import Proceed, Settings
from server.web.gate import Gate, too_many
from server.web.https import ServedCertificate
from server.web.outcomes import Outcome
from server.web.protocol import Limits, Request, Response
from server.web.router import Match
from server.web.static import FileCache

if TYPE_CHECKING:
    from server.fleet.mqtt import Bridge

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 1.5
EXPIRY_CHECK_TICKS = 60  # sweeps (seconds) between two checks of the certificate's validity


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


def _scrape_rate(cfg: Config) -> Rate:
    """Scrapes of ``/metrics``, by every scraper together (``[metrics]``)."""
    return Rate(cfg.metrics.scrapes_per_second, cfg.metrics.scrape_burst)


def _session_limits(cfg: Config) -> tuple[float, float, int, int]:
    auth = cfg.auth
    return auth.session_idle, auth.session_max_age, auth.sessions_per_user, auth.max_sessions


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
        self.auth = Authenticator(
            (),
            cfg.auth.lockout_failures,
            cfg.auth.lockout_window,
            HashBudget(
                _hash_cost(),
                cfg.auth.hash_share_address,
                cfg.auth.hash_share_total,
                cfg.auth.lockout_failures,
            ),
            Sessions(*_session_limits(cfg)),
        )
        self._configure_auth(cfg, loop.now())
        self.presence = Presence(cfg.auth.max_users, cfg.presence.grace)
        self.events = EventBus(first_id=int(time.time() * 1000))
        self.audit = AuditLog(
            cfg.audit.path,
            file_bytes=cfg.audit.file_bytes,
            keep_files=cfg.audit.keep_files,
            memory_bytes=cfg.audit.memory_bytes,
        )
        self.leases = Leases(cfg.control.lease_idle)
        self.announcer = Announcer(self.events, self.audit, self.presence, self.leases)
        self.control = ControlChannel(loop, cfg.control, self.announcer)
        self.announcer.device = self.control.device
        self.announcer.state = self.control.state
        self.services = api.Context(
            self.presence,
            self.events,
            self.control,
            self.audit,
            self.leases,
            self.announcer,
            loop.now,
            time.time,
            *_rates(cfg),
            Tally(commands.OUTCOMES, SECONDS),
            files=FileCache(cfg.http.static_dir),
            scrape_rate=_scrape_rate(cfg),
            auth=self.auth,
        )
        self.announcer.vanished = partial(commands.safe_state, self.services)
        self.gate = Gate(api.ROUTER, self.auth, self.presence, time.time)
        self.https = ServedCertificate(cfg.tls, cfg.state.dir)
        self.acceptor = Acceptor(loop, self, lambda: self.https.context)
        self.access = AccessLog() if cfg.http.access_log else None
        self.responses = Tally(range(1, 6), SECONDS)  # by status class, and their latency
        self.stopping = False
        self._stopped = False
        self.listener: socket.socket | None = None
        self.tls_listener: socket.socket | None = None
        self._expiry: Timer | None = None
        self._clock = PerSecond()
        self._ticks = 0
        self._pending_output: list[Connection] = []
        self._session_of: dict[int, bytes] = {}  # connection id -> the key of its session
        self._ending: list[Connection] = []  # closed after this pass's output is written
        self._configure_parts()
        loop.at_end_of_pass(self.end_of_pass)
        self.mqtt = self._bridge(cfg)
        self._metrics()

    def _configure_auth(self, cfg: Config, now: float) -> None:
        auth = self.auth
        auth.step_up_window = cfg.auth.step_up_window
        auth.operators_need_totp = cfg.auth.operators_need_totp
        auth.update(cfg.auth.users, cfg.auth.lockout_failures, cfg.auth.lockout_window, now)
        for name, when in cfg.auth.logouts:  # python -m server user logout NAME
            begun = [s for s in auth.sessions.of(name) if s.since <= when]
            auth.sessions.end(begun, "ended by an operator (vigil user logout)", now)
        if cfg.auth.operators_need_totp:
            for name in sorted(
                u.name for u in cfg.auth.users if u.role == "operator" and not u.totp
            ):
                log.warning(
                    "%s is an operator without a second factor: a viewer until"
                    " python -m server user totp %s",
                    name,
                    name,
                )

    def _configure_parts(self) -> None:
        """What the gate and the acceptor take from the config (at start, on SIGHUP)."""
        cfg = self.config
        https = self.tls_port if self.tls_listener is not None else None
        self.gate.configure(cfg.auth.realm, self._host_names(), https, cfg.metrics.token_sha256)
        self.acceptor.configure(AllowList(cfg.auth.allow), cfg.presence, cfg.http.max_connections)

    def _host_names(self) -> frozenset[str]:
        """What a Host header may name: ``[http] allowed_hosts``, localhost, this machine's
        name (and NAME.local), and the names of the certificate served."""
        own = socket.gethostname().lower().partition(".")[0]
        names = {*self.config.http.allowed_hosts, "localhost", own, f"{own}.local"}
        return frozenset(names.union(self.https.dns_names()))

    def _bridge(self, cfg: Config) -> Bridge | None:
        """The MQTT bridge if ``[mqtt]`` is on (paho is not even imported otherwise).

        Its end-of-pass hook comes after ``end_of_pass``, so the fleet hears of
        nothing before it is on disk.
        """
        if not cfg.mqtt.enabled:
            return None
        from server.fleet.mqtt import Bridge

        return Bridge(self.loop, cfg.mqtt, cfg.presence, self.services)

    def _metrics(self) -> None:
        """``GET /metrics``'s exposition, made once ``[metrics]`` names a token (the gate
        refuses the route until then): prometheus_client is not even imported otherwise."""
        if not self.config.metrics.token_sha256 or self.services.scrape is not None:
            return
        from server.web.metrics import Exposition, Parts

        parts = Parts(
            self.services,
            lambda: (conn.state for conn in self.conns.values()),
            self.responses,
            lambda: self.https.description if self.tls_listener is not None else None,
            lambda: None if self.mqtt is None else self.mqtt.connected,
            lambda: len(self.config.control.devices),
        )
        self.services.scrape = Exposition(parts).scrape

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
            self.https.load()
        self._configure_parts()
        self.acceptor.listen(True)
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
        self.acceptor.listeners = [(self.listener, False)]
        if tls.enabled:
            self.tls_listener = sockopts.listen(http.host, tls.port)
            self.acceptor.listeners.append((self.tls_listener, True))

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

    @property
    def conns(self) -> dict[int, Connection]:
        return self.acceptor.conns

    def shutdown(self) -> None:
        """Stop accepting, finish what is in flight, then stop the loop (≤ 1.5 s)."""
        if self.stopping:
            return
        log.info("stopping: finishing %d connection(s)", len(self.conns))
        self.notify.stopping()
        self.stopping = True
        self.acceptor.shutdown()
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
        self.acceptor.close_all()
        for change in self.presence.end_all():
            self.announcer.presence(change)
        self.end_of_pass()  # the leaves on disk before the fleet hears of them
        if self.mqtt is not None:
            self.mqtt.close()
        self.loop.stop()

    def close(self) -> None:
        if self.access is not None:
            self.access.flush()
        self.acceptor.close()
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
        self._configure_auth(cfg, self.loop.now())
        self.auth.sessions.configure(*_session_limits(cfg))
        self.sessions_ended()
        self.presence.resize(cfg.auth.max_users, cfg.presence.grace)
        self.control.reload(cfg.control)
        self.leases.idle = cfg.control.lease_idle
        if cfg.limits != old.limits:
            self.services.chat_rate, self.services.command_rate = _rates(cfg)
        if cfg.metrics != old.metrics:
            self.services.scrape_rate = _scrape_rate(cfg)
            self._metrics()
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
        if self.tls_listener is not None:
            self.https.reload(cfg.tls, cfg.state.dir)
        self._configure_parts()
        later = configmod.restart_needed(old, cfg)
        if later:
            log.warning("reload: %s change(s) only on restart", ", ".join(later))
        log.info("reloaded %s: %d user(s)", cfg.path, len(cfg.auth.users))

    # -- what connections ask of their host (web.connection.Host) ----------
    def admit(self, conn: Connection, req: Request) -> tuple[User | None, Response | Proceed]:
        """The gate's decision on the head of ``req``, applied: presence changes announced,
        the person kept within ``connections_per_user``; a refusal, or what runs the route."""
        user, outcome, changes, attached, session = self.gate.admit(conn, req, self.loop.now())
        if session is not None:
            self._session_of[conn.id] = session.key
        if self.auth.sessions.news:
            self.sessions_ended()
        if attached:
            assert user is not None
            for change in changes:
                self.announcer.presence(change)
            self._schedule_expiry()
            limit = self.config.limits.connections_per_user
            theirs = self.presence.connections(user.name)
            if not self.acceptor.shed_for(user.name, conn, theirs, limit):
                return user, too_many(user.name, limit)
        if isinstance(outcome, Response):
            return user, outcome
        if outcome.route.public:
            return user, partial(self._run, outcome, None, None, conn.addr)
        return user, partial(self._run, outcome, user, session, conn.addr)

    def _run(
        self,
        match: Match[Any],
        user: User | None,
        session: Session | None,
        addr: str,
        req: Request,
    ) -> Outcome:
        handler: api.Handler = match.handler
        outcome = handler(self.services, api.Call(req, user, match.params, session, addr))
        if self.auth.sessions.news:
            self.sessions_ended()
        return outcome

    def sessions_ended(self) -> None:
        """Announce the sessions that ended (audit record, log line) and close their
        connections once this pass's output is written: a stream is told why first (a
        ``signedout`` event, for it alone), and the browser's next request with that
        header gets 401 saying why."""
        ends = self.auth.sessions.drain()
        for session, ended in ends:
            self.audit.append(
                "session_end",
                user=ended.user,
                addr=session.addr,
                since=iso_utc(session.since),
                reason=ended.reason,
            )
            log.info("session of %s from %s ended: %s", ended.user, session.addr, ended.reason)
        why = {session.key: ended.reason for session, ended in ends}
        for conn_id, key in self._session_of.items():
            conn = self.conns.get(conn_id)
            if key in why and conn is not None:
                conn.push(personal("signedout", {"reason": why[key]}))  # a stream: the panel
                self._ending.append(conn)

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
        if self._ending:
            ending, self._ending = self._ending, []
            for conn in ending:
                if conn.id in self.conns:
                    conn.close(lost=False)

    def log_access(self, conn: Connection, req: Request | None, status: int, size: int) -> None:
        """Count the response (its latency: from the request's last bytes read), and one
        access-log line; its time is the Date of the response just formatted."""
        self.responses.add(status // 100, self.loop.now() - conn.last_active)
        if self.access is None:
            return
        line = f"{req.method} {req.target} HTTP/{req.http_version}" if req else "-"
        name = conn.user.name if conn.user else "-"
        self.access.record(conn.addr, name, self._clock.clf, line, status, size)

    def connection_closed(self, conn: Connection, lost: bool) -> None:
        self.acceptor.closed(conn)
        self._session_of.pop(conn.id, None)
        change = self.presence.detach(conn.id, self.loop.now(), lost)
        if change is not None:
            self.announcer.presence(change)
        self._schedule_expiry()
        self._stop_when_idle()

    # -- timers ------------------------------------------------------------
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
            self.announcer.presence(change)
        self._schedule_expiry()

    def sweep(self) -> None:
        """Once a second: every connection's deadlines, TCP state and heartbeat."""
        now = self.loop.now()
        self._ticks += 1
        heartbeat = self._ticks % max(1, round(self.config.http.sse_heartbeat)) == 0
        for conn in list(self.conns.values()):
            conn.tick(now, heartbeat)
        self.announcer.lease_changes(self.leases.expire(now))
        self.auth.sessions.expire(now)
        if self.auth.sessions.news:
            self.sessions_ended()
        if self.access is not None:
            self.access.flush()
        if self._ticks % EXPIRY_CHECK_TICKS == 0:
            self.https.check(self._ticks)
