"""The server: owns every connection and service, and gates every request.

Stages of a request (boa's one file per stage; here the gate and the rest):
accept (allow-list, connection cap, socket options; ``_accept``) →
``Connection`` reads and parses → ``Server.handle``, the gate: routing
(public routes such as /healthz answer here), authentication (401/429),
presence and the user cap (503), cross-site checks for state-changing
methods (403) → the handler in ``server.api`` → an outcome the connection
sends. ``handle`` returns who the connection now belongs to with the
outcome; it never writes a connection's fields.

Who owns what:
- connections (``conns``): this module adds and drops them; each
  connection owns its own state (``server.connection``).
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

systemd (``server.notify``, a no-op outside a ``Type=notify`` unit): READY=1
at the end of ``start``, RELOADING=1 … READY=1 around ``reload``,
STOPPING=1 when ``shutdown`` begins, WATCHDOG=1 from a loop timer.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from server import api, certificate, presence, sockopts
from server import config as configmod
from server import tls as tlsmod
from server.accesslog import AccessLog
from server.audit import AuditLog
from server.auth import (
    AllowList,
    Authenticator,
    HashBudget,
    Verdict,
    display_address,
    hash_password,
    is_loopback,
)
from server.config import Config, ConfigError, User
from server.connection import Connection, Settings
from server.dates import PerSecond
from server.events import EventBus
from server.leases import Change as LeaseChange
from server.leases import End, Leases
from server.loop import READ, Loop, Timer
from server.notify import Notifier
from server.outcomes import Outcome
from server.presence import Change, Presence
from server.protocol import Limits, Request, Response
from server.responses import error, panel_full, unauthorized
from server.router import NoRoute
from server.sctpchannel import ControlChannel
from server.static import FileCache

if TYPE_CHECKING:
    from server.mqtt import Bridge

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 1.5
EXPIRY_CHECK_TICKS = 86400  # sweeps (seconds) between two checks of the certificate's expiry
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
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
        self.audit = AuditLog(cfg.audit.path)
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
        loop.at_end_of_pass(self.end_of_pass)
        self.mqtt = self._bridge(cfg)

    def _bridge(self, cfg: Config) -> Bridge | None:
        """The MQTT bridge if ``[mqtt]`` is on (paho is not even imported otherwise).

        Its end-of-pass hook comes after ``end_of_pass``, so the fleet hears of
        nothing before it is on disk.
        """
        if not cfg.mqtt.enabled:
            return None
        from server.mqtt import Bridge

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
        (made on first run by ``python -m server``, ``server.firstrun``)."""
        cert, key = certificate.location(cfg.tls.cert, cfg.tls.key, cfg.state.dir)
        ctx = tlsmod.server_context(cert, key)
        desc = certificate.describe(cert)
        self.certificate = desc
        log.info(
            "TLS certificate %s, SHA-256 %s, expires %s",
            cert,
            desc.fingerprint,
            desc.not_after.date(),
        )
        self._check_expiry()
        return ctx

    def _check_expiry(self) -> None:
        """A warning while the certificate has less than WARN_DAYS left (at start, daily)."""
        if self.certificate is None:
            return
        days = self.certificate.days_left(datetime.now(UTC))
        if days < certificate.WARN_DAYS:
            log.warning("TLS certificate expires in %.0f day(s): renew it", days)

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
        for _ in range(64):
            try:
                sock, peer = listener.accept()
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
            self.adopt(sock, addr, secure)

    def adopt(self, sock: socket.socket, addr: str, secure: bool = False) -> Connection:
        """Serve ``sock`` (non-blocking, options set) from now on; over TLS if ``secure``."""
        self._next_id += 1
        tls = self.tls if secure else None
        conn = Connection(self, sock, self._next_id, addr, tls, is_loopback(addr))
        self.conns[conn.id] = conn
        self.loop.register(sock, READ, conn.on_event)
        if len(self.conns) >= self.config.http.max_connections and not self._sheddable():
            self._listen(False)  # backpressure: the kernel's backlog holds the rest
        return conn

    def _sheddable(self) -> Connection | None:
        """The oldest connection that has not authenticated and is not busy."""
        return next((c for c in self.conns.values() if c.sheddable), None)

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

    # -- what connections ask of their host -------------------------------
    def date(self) -> bytes:
        self._clock.update(time.time())
        return self._clock.date

    def output_pending(self, conn: Connection) -> None:
        self._pending_output.append(conn)

    def end_of_pass(self) -> None:
        """Make the audit log durable, then write every connection's output."""
        try:
            self.audit.sync()
        except OSError:
            log.exception("audit log: fsync failed; records of this pass may be lost")
        pending, self._pending_output = self._pending_output, []
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
    def handle(self, conn: Connection, req: Request) -> tuple[User | None, Outcome]:
        """Who ``conn`` belongs to after ``req``, and the outcome to send."""
        match = api.ROUTER.match(req.method, req.path)
        if isinstance(match, NoRoute):
            if match.public:
                return conn.user, self._no_route(match)
        elif match.route.public:
            return conn.user, match.handler(self.services, api.Call(req, None, match.params))
        if self.tls is not None and not (conn.secure or conn.loopback):
            return conn.user, self._to_https(conn, req)  # before any password crosses the wire
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
        if req.method not in SAFE_METHODS:
            refusal = self._cross_site(req)
            if refusal is not None:
                return user, refusal
        if isinstance(match, NoRoute):
            return user, self._no_route(match)
        return user, match.handler(self.services, api.Call(req, user, match.params))

    def _to_https(self, conn: Connection, req: Request) -> Response:
        """308 to the same path over HTTPS (RFC 9110 §15.4.9: the method is kept)."""
        host = req.headers.get("host") or conn.local_address
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
