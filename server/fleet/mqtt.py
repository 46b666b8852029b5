"""The MQTT fleet bridge: one paho-mqtt client inside the vigil loop.

Strategy: the shell around ``server.fleet.model``. Events from the bus and
``command`` audit records become messages (``Fleet.on_event``,
``on_record``) that wait in a bounded ``Outbox`` and go to the broker at
the end of the loop pass, after the audit log's fsync (this bridge's
end-of-pass hook is added after the server's), so the fleet, like a
browser, never hears of an action before it is on disk. Commands the
broker delivers (``Fleet.command``: an entity and a value) go through
``core.commands.issue_command`` as ``mqtt:<user>``, the same path as a
browser's (the value checked against the entity, roles, leases, audit),
with ``take=False``; the answer, a refusal too, is published to
``devices/<id>/result``.

Never blocking the loop. paho's ``connect()``/``reconnect()`` resolve the
name and connect TCP (and TLS) with blocking calls, so the bridge does
those itself and hands paho a socket that is already connected:

1. resolve: an IP literal needs nothing; a name is looked up by
   ``getent ahosts NAME`` in a child process (the system's resolver, NSS
   and /etc/hosts included) whose stdout is a pipe in the selector;
2. TCP: a non-blocking ``connect`` watched for writability (SO_ERROR says
   how it went), with the keepalive and TCP_USER_TIMEOUT of ``[presence]``
   so a pulled cable to the broker is noticed in seconds;
3. TLS (``tls = true``): ``do_handshake`` on the non-blocking socket,
   re-tried whenever select() says so; the certificate and the host name
   are checked against ``ca_file`` (or the system's CAs);
4. MQTT: ``_Client._create_socket`` (paho's one seam for where its socket
   comes from) returns that socket, so ``reconnect()`` only queues
   CONNECT; paho's socket callbacks (``on_socket_open``, ``_close``,
   ``_register_write``, ``_unregister_write``) put the socket in the
   selector, and ``loop_read``/``loop_write`` run when select() says so,
   ``loop_misc`` (keepalive pings) once a second.

Every stage has a deadline (``connect_timeout``, also for CONNACK); a
failure anywhere closes what there is and retries after a backoff of
0.25 s doubling to 5 s (randomised by up to a half, so a fleet does not
come back in step), reset by a CONNACK. One log line when the broker goes
away or the reason changes, one when it is back, with the messages
dropped meanwhile (``Outbox.dropped``).

paho keeps a QoS-1 message it has sent until the broker acknowledges it
and sends it again after a reconnect; ``max_queued_messages`` bounds that
to ``queue``. Messages are handed to paho only while its write buffer is
empty, so a slow broker backs up into the bounded outbox, never into memory
without bound.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import ipaddress
import logging
import os
import random
import socket
import ssl
import subprocess
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from server.base import sockopts
from server.base.loop import READ, WRITE, Loop, Timer
from server.config import MqttConfig, PresenceConfig
from server.core.commands import issue_command
from server.core.services import Services
from server.feed.bus import Published
from server.fleet.model import OFFLINE, Command, Fleet, Message, Outbox, Rejection
from server.people.auth import User

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.25
try:
    VERSION = importlib.metadata.version("vigil")  # the hub's sw_version in Home Assistant
except importlib.metadata.PackageNotFoundError:  # run from a checkout not pip-installed
    VERSION = "unknown"
BACKOFF_MAX = 5.0


class _Client(paho.Client):
    """paho's client, handed a socket the bridge connected without blocking."""

    ready: Any = None  # the socket for the next reconnect()

    def _create_socket(self) -> Any:
        sock, self.ready = self.ready, None
        if sock is None:
            raise ConnectionError("no connected socket")  # only the bridge calls reconnect()
        return sock


class Bridge:
    """The fleet bridge of one server; ``start``, ``close``, ``reload``."""

    def __init__(
        self, loop: Loop, cfg: MqttConfig, presence: PresenceConfig, svc: Services
    ) -> None:
        self._loop = loop
        self.cfg = cfg
        self._presence_cfg = presence
        self._svc = svc
        self._fleet = Fleet(cfg, VERSION)
        self._outbox = Outbox(cfg.queue)
        self._client: _Client | None = None
        self._sock: Any = None  # the socket being connected (before paho has it)
        self._resolver: subprocess.Popen[bytes] | None = None
        self._answer = b""  # getent's output so far
        self._addr: tuple[Any, ...] | None = None
        self._deadline: Timer | None = None
        self._retry: Timer | None = None
        self._misc: Timer | None = None
        self._delay = BACKOFF_MIN
        self._unsubscribe: Any = None
        self._running = False
        self.connected = False  # CONNACK received and not lost since
        self._trouble: str | None = None  # the last failure logged
        self._refusal: str | None = None  # why the broker refused the last CONNECT
        loop.at_end_of_pass(self.flush)

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        if not self.cfg.enabled or self._running:
            return
        self._running = True
        self._unsubscribe = self._svc.events.subscribe(self._deliver)
        self._svc.audit.watchers.append(self._on_record)
        log.info(
            "mqtt: bridging to %s:%d%s as site %r (topics %s/…, commands %s)",
            self.cfg.host,
            self.cfg.port,
            " (TLS)" if self.cfg.tls else "",
            self.cfg.site,
            self.cfg.topic_prefix,
            "on" if self.cfg.commands else "off",
        )
        self._connect()

    def close(self) -> None:
        """Say ``offline`` (retained) and disconnect cleanly if connected; stop everything."""
        if not self._running:
            return
        self._running = False
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._svc.audit.watchers.remove(self._on_record)
        client = self._client
        if client is not None and self.connected:
            self.flush()
            client.publish(self._fleet.topics.status, OFFLINE, qos=1, retain=True)
            client.disconnect()
            client.loop_write()  # DISCONNECT written: paho closes the socket
            log.info("mqtt: disconnected from %s:%d", self.cfg.host, self.cfg.port)
        self._abandon()
        if client is not None and client.socket() is not None:
            client._sock_close()  # paho's own close: our on_socket_close unregisters it
        self._client = None
        self.connected = False

    def reload(self, cfg: MqttConfig, presence: PresenceConfig) -> None:
        """SIGHUP: a changed [mqtt] means a new connection (status offline, then online)."""
        if cfg == self.cfg and presence == self._presence_cfg:
            return
        self.close()
        self.cfg = cfg
        self._presence_cfg = presence
        self._fleet = Fleet(cfg, VERSION)
        self._outbox = Outbox(cfg.queue)
        self._delay = BACKOFF_MIN
        self.start()

    # -- events in, messages out -------------------------------------------
    def _deliver(self, published: Published) -> None:
        for msg in self._fleet.on_event(published.event):
            self._outbox.put(msg)

    def _on_record(self, record: dict[str, Any]) -> None:
        for msg in self._fleet.on_record(record):
            self._outbox.put(msg)

    def _send(self, msg: Message) -> None:
        self._outbox.put(msg)

    def flush(self) -> None:
        """End of pass: hand what waits to paho (if its buffer is empty) and write it."""
        client = self._client
        if client is None or not self.connected:
            return
        if not client.want_write() and len(self._outbox):
            for msg in self._outbox.take():
                info = client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    self._outbox.dropped[msg.kind] += 1
        if client.want_write():
            client.loop_write()

    # -- connecting, stage by stage ------------------------------------------
    def _connect(self) -> None:
        self._retry = None
        cfg = self.cfg
        self._deadline = self._loop.call_later(cfg.connect_timeout, self._timed_out)
        try:
            ip = ipaddress.ip_address(cfg.host)
        except ValueError:
            self._resolve(cfg.host)
            return
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self._tcp(family, (str(ip), cfg.port))

    def _resolve(self, name: str) -> None:
        try:
            self._resolver = subprocess.Popen(
                ["getent", "ahosts", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as e:
            self._failed(f"cannot resolve {name}: getent: {e.strerror}")
            return
        assert self._resolver.stdout is not None
        self._answer = b""
        self._loop.register(self._resolver.stdout, READ, self._on_resolver)

    def _on_resolver(self, _mask: int) -> None:
        proc = self._resolver
        assert proc is not None and proc.stdout is not None
        data = os.read(proc.stdout.fileno(), 65536)
        if data:
            self._answer += data
            return
        self._end_resolver()
        for line in self._answer.decode("ascii", "replace").splitlines():
            addr, *kind = line.split()
            if kind[:1] == ["STREAM"]:
                family = socket.AF_INET6 if ":" in addr else socket.AF_INET
                self._tcp(family, (addr, self.cfg.port))
                return
        self._failed(f"cannot resolve {self.cfg.host}")

    def _end_resolver(self) -> None:
        proc, self._resolver = self._resolver, None
        if proc is None:
            return
        assert proc.stdout is not None
        self._loop.unregister(proc.stdout)
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()  # only when given up on: it has closed stdout otherwise
        proc.wait()

    def _tcp(self, family: int, addr: tuple[Any, ...]) -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock = sock
        self._addr = addr
        try:
            sockopts.configure_accepted(sock, self._presence_cfg)
            err = sock.connect_ex(addr)
        except OSError as e:
            self._failed(f"{addr[0]} port {addr[1]}: {e.strerror}")
            return
        if err not in (0, errno.EINPROGRESS):
            self._failed(f"{addr[0]} port {addr[1]}: {os.strerror(err)}")
            return
        self._loop.register(sock, WRITE, self._on_connected)

    def _on_connected(self, _mask: int) -> None:
        sock, addr = self._sock, self._addr
        assert addr is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._failed(f"{addr[0]} port {addr[1]}: {os.strerror(err)}")
            return
        if not self.cfg.tls:
            self._mqtt()
            return
        ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._loop.unregister(sock)
        self._sock = ctx.wrap_socket(
            sock, server_hostname=self.cfg.host, do_handshake_on_connect=False
        )
        self._loop.register(self._sock, READ | WRITE, self._on_handshake)

    def _on_handshake(self, _mask: int) -> None:
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._loop.modify(self._sock, READ, self._on_handshake)
            return
        except ssl.SSLWantWriteError:
            self._loop.modify(self._sock, WRITE, self._on_handshake)
            return
        except (ssl.SSLError, OSError) as e:
            self._failed(f"TLS with {self.cfg.host}: {getattr(e, 'reason', None) or e}")
            return
        self._mqtt()

    def _mqtt(self) -> None:
        """The connected socket to paho: it sends CONNECT; CONNACK ends the deadline."""
        sock, self._sock = self._sock, None
        self._loop.unregister(sock)
        client = self._client or self._new_client()
        client.ready = sock
        client.reconnect()

    def _new_client(self) -> _Client:
        cfg = self.cfg
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        client.will_set(self._fleet.topics.status, OFFLINE, qos=1, retain=True)
        client.max_queued_messages_set(cfg.queue)
        # connect_async only records where to (no I/O); reconnect() uses it
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        client.on_connect = self._on_connack
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._client = client
        return client

    def _timed_out(self) -> None:
        self._deadline = None
        self._failed(
            f"no answer from {self.cfg.host} port {self.cfg.port} within "
            f"{self.cfg.connect_timeout:g} s"
        )

    def _abandon(self) -> None:
        """Stop every stage under way and every timer."""
        for timer in (self._deadline, self._retry, self._misc):
            if timer is not None:
                timer.cancel()
        self._deadline = self._retry = self._misc = None
        self._end_resolver()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(KeyError):
                self._loop.unregister(sock)
            sock.close()

    def _failed(self, why: str) -> None:
        """A connection (attempt) ended: close what there is and retry after the backoff."""
        was = self.connected
        self.connected = False
        self._abandon()
        client = self._client
        if client is not None and client.socket() is not None:
            client._sock_close()
        if not self._running:
            return
        self._outbox.forget_retained()  # the snapshot after the reconnect supersedes them
        delay = self._delay * random.uniform(0.5, 1.0)
        self._delay = min(self._delay * 2, BACKOFF_MAX)
        if was or why != self._trouble:
            how = "lost" if was else "unreachable"
            log.warning("mqtt: broker %s: %s; retrying with backoff", how, why)
            self._trouble = why
        self._retry = self._loop.call_later(delay, self._connect)

    # -- paho's callbacks ----------------------------------------------------
    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._loop.register(sock, READ, self._on_io)

    def _on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._loop.unregister(sock)

    def _on_register_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._loop.modify(sock, READ | WRITE, self._on_io)

    def _on_unregister_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        if sock.fileno() >= 0:
            self._loop.modify(sock, READ, self._on_io)

    def _on_io(self, mask: int) -> None:
        client = self._client
        assert client is not None
        if mask & READ:
            client.loop_read()
            sock = client.socket()
            while isinstance(sock, ssl.SSLSocket) and sock.pending() and client.socket():
                client.loop_read()  # plaintext TLS already decrypted: select() cannot see it
        if mask & WRITE and client.socket() is not None:
            client.loop_write()

    def _tick(self) -> None:
        self._misc = None
        client = self._client
        if client is None or client.socket() is None:
            return
        self._misc = self._loop.call_later(1.0, self._tick)
        client.loop_misc()

    def _on_connack(self, client: paho.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:  # paho closes the socket: _on_disconnect retries
            self._refusal = f"the broker refused the connection: {reason}"
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.connected = True
        self._delay = BACKOFF_MIN
        self._trouble = None
        dropped = self._outbox.take_dropped()
        lost = ", ".join(f"{n} {kind}" for kind, n in sorted(dropped.items()))
        log.info(
            "mqtt: connected to %s:%d as %s%s",
            self.cfg.host,
            self.cfg.port,
            self.cfg.client_id,
            f"; dropped while away: {lost} message(s)" if lost else "",
        )
        if self.cfg.commands:
            client.subscribe(self._fleet.topics.commands, qos=1)
        for topic in self._fleet.subscriptions():  # what earlier runs left retained
            client.subscribe(topic, qos=1)
        for msg in self._fleet.snapshot(self._svc.presence.online(), self._svc.devices()):
            self._outbox.put(msg)
        self._misc = self._loop.call_later(1.0, self._tick)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        why, self._refusal = self._refusal or f"connection closed ({reason})", None
        if self._running:
            self._failed(why)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if self._fleet.topics.device_of(msg.topic, "command") is None:
            if msg.retain:  # an earlier run's, heard as we subscribed; not our own echo
                for out in self._fleet.retained(msg.topic, bytes(msg.payload)):
                    self._send(out)
            return
        read = self._fleet.command(msg.topic, bytes(msg.payload), bool(msg.retain))
        if read is None:
            return
        if isinstance(read, Rejection):
            log.info("mqtt: command refused on %s: %s", msg.topic, read.message.payload[:200])
            self._send(read.message)
            return
        self._issue(read)

    def _issue(self, cmd: Command) -> None:
        user = User(f"mqtt:{cmd.user}", "operator")

        def done(status: int, body: dict[str, Any]) -> None:
            self._send(self._fleet.result(cmd.device, cmd.id, status, body))

        issue_command(self._svc, user, cmd.device, cmd.entity, cmd.value, done, take=False)
