"""The SCTP control channel: one one-to-many socket in the vigil loop.

Strategy: this is the imperative shell around ``server.control.registry``. One
``SOCK_SEQPACKET`` socket (pysctp's ``sctpsocket_udp``) listens for device
agents; each association is one device. The socket is non-blocking and
registered for reading only; ``sctp_recv`` is called only when select() says
it is readable, and at most ``MAX_READS`` messages per call, so a flooding
device delays the HTTP side by one bounded batch, never starves it
(select() is level-triggered: the rest is read on the next pass).

What arrives is either an in-band notification (MSG_NOTIFICATION: an
association came up or went away) or a piece of a message;
pieces are joined per association until MSG_EOR (``control.Reassembler``,
capped at ``codec.MAX_SEALED``). Every message is sealed
(``server.link.seal``): the first of an association is the handshake, every
later one is opened with the association's ``Session`` and the stream it
arrived on, then decoded; what goes out is sealed by ``SctpTransport``.
Messages go out with sendmsg() and an SCTP_SNDRCV control message naming
the association id, because pysctp's ``sctp_send`` can only address a
peer by IP address, and sending to an address would set up a new
association if the old one were gone.

Dead devices are noticed by SCTP itself: heartbeats every
``heartbeat_ms`` (H), ``path_max_retrans`` (N) retransmissions (also the
association limit, SCTP_ASSOCINFO's asocmaxrxt), a retransmission timeout
bounded to ``RTO_MIN_MS``..``RTO_MAX_MS`` (SCTP_RTOINFO) and no delayed
SACK are set as the socket's defaults before ``listen()``, so every
association gets them (``server.link.sctp.tune_peer``; the reference agent
uses it too). A
lost association takes its device offline and fails its pending commands
with 503 at once, not after the timeout. A ``kill -9`` of the agent is
reported by its kernel (ABORT) at once; a pulled cable is found by the
timers, and this is the arithmetic (Linux 7.2, net/sctp/transport.c
``sctp_transport_timeout``, sm_sideeffect.c ``sctp_do_8_2_transport_strike``
and ``sctp_generate_heartbeat_event``; default pf_enable = 1, pf_retrans = 0):

- on a LAN the RTO sits at its minimum, R = ``RTO_MIN_MS`` = 100 ms, as
  long as the peer does not delay its SACKs (see below); an idle path's
  heartbeat timer fires H + R/2 + rand(R) after its last heartbeat (or
  DATA) went out;
- T1, the first heartbeat after the pull, goes out 0 .. H + 1.5 R later;
  it is not yet an error (only a heartbeat still unanswered at the next
  expiry counts);
- T2 = T1 + H + [0.5, 1.5] R: error 1, RTO doubles to 2R (``RTO_MAX_MS`` =
  200 caps it there), and the path is "potentially failed": heartbeats go
  every max(RTO/2, 200 ms) + rand(RTO), without H, so every
  [200, 400] ms;
- T3 .. T(N+1): errors 2 .. N, each [200, 400] ms after the one before;
- T(N+2): the error count is asocmaxrxt = N: COMM_LOST, offline.

So with H = 400 ms and N = 4: pull -> offline at most 2 x 550 + 4 x 400 =
2.7 s, at least 0.45 + 0.8 = 1.25 s (less when a heartbeat sent just before
the pull was lost). Measured in UML over a veth pair (``make bench``,
section control, two runs of 30 pulls): median 1.97 / 2.13 s, max
2.49 / 2.44 s. The first round's H = 1000, N = 2, RTO 100 .. 400 ms
allowed 3.3 s, more after a command (the same bench: max 3.06 / 3.49 s,
the delayed SACK having raised R); the kernel's defaults (heartbeat 30 s,
RTO 1 .. 60 s, N = 10) take minutes. With HZ = 100, as in UML, a timer
longer than 630 ms may fire up to 80 ms late; H + 1.5 R = 550 ms does not.

False offlines: an association is declared dead only after N + 1 timeouts
in a row with no SACK or heartbeat ACK between them. At 5 % random loss
each way a round trip fails with p = 0.0975, so N + 1 = 5 in a row happens
with p^5 = 9e-6 per heartbeat or message, about once in 7 hours of such
loss per device (the reference agent: heartbeats both ways and a reading a
second), where N = 2 (p^3 = 9e-4) failed every few minutes (the bench, 6
minutes of association time at 5 % loss: 2 and 4 false offlines then, none
now).
The delayed SACK is off (SPP_SACKDELAY_DISABLE) because the kernel's 200 ms
SACK delay is longer than RTO_MIN: every message was sent twice, each spurious
retransmission counted as an error and put the path into the
potentially-failed state, so a single further loss came close to taking a
device offline. With SACKs at once, RTT samples are the network's own and
R stays at its minimum, which the arithmetic above assumes. A command sent
into a dead link fails sooner: its data's retransmission timer gives up
after R + 4 x 2R = 0.9 s. The price of the low RTO bounds: on a path whose
round trip exceeds ~100 ms, SCTP retransmits early (more packets), and one
with round trips near a second would lose associations; raise
``RTO_MIN_MS``/``RTO_MAX_MS`` and ``heartbeat_ms`` for such links.

Payload protocol ids (PPID) are 32-bit values the kernel passes through
untouched, so they travel in network byte order: ``htonl`` when sending,
``ntohl`` when reading ``sinfo_ppid``.

Who may be a device (``server.control.admission`` decides): on COMM_UP the peer's
primary address (SCTP_STATUS; the source of its INIT) is checked against
``control.allow`` and a timer is set at its deadline; its first message must
be the handshake's message 1, answered with message 2, and its first sealed
message its hello. A refusal is one log line, one ``device_refused`` audit
record (the sink's ``device_refused``), a sealed ``error`` message if the
association has keys, and then an SCTP ABORT (sendmsg with SCTP_ABORT, no
cause: nothing in clear). The error goes out first, in its own packet, so
the peer reads it before it sees the association lost. What a refused
association had queued before the ABORT is dropped unread. A message that
fails to open is such a refusal (reason ``unsealed``).

The seam (what a test's fake device uses, and nothing private): the
channel works at the level of ``server.link.codec`` messages.
``association_up(assoc, addr)``, ``handshake(assoc, message 1)`` (the
answer, message 2), ``receive(assoc, message)`` and
``association_lost(assoc, how)`` are what the SCTP shell calls after it
read a notification, the handshake, or opened and decoded a message;
``admit_proven(assoc, hello)`` is what a hello does once it is proven. What goes out goes through
``transport`` (``Transport``: ``send`` and ``abort``; ``SctpTransport`` over
the socket, or a fake's own after ``attach``). What happens is told to the
``sink`` (``ControlEvents``): devices online and offline, telemetry as the
coalescer releases it, every phase of a command, refused devices, in the
order it happens (a device is offline before its pending commands fail).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

import sctp

from server.base.addresses import AllowList, display_address
from server.base.loop import READ, Loop, Timer
from server.config import ControlConfig
from server.control import registry as control
from server.control.admission import Admission, Denial
from server.control.registry import Device, Phase, Refusal
from server.feed.events import CommandEvent
from server.link import codec
from server.link.codec import PPID, Stream
from server.link.entities import Value
from server.link.sctp import family_of, tune_peer
from server.link.seal import Session, Unsealed

log = logging.getLogger(__name__)

MAX_READS = 32  # messages read per readable callback
NAMED = 5  # problems of one telemetry reading named in the error reply (the rest counted)
RECV_SIZE = codec.MAX_SEALED + 1  # a whole allowed message in one recv
NO_SCTP = (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT)
NO_SCTP_REASON = "this kernel has no SCTP (on a Raspberry Pi: sudo modprobe sctp)"

SCTP_SNDRCV = 1  # cmsg type of struct sctp_sndrcvinfo, <linux/sctp.h>
# struct sctp_sndrcvinfo: stream, ssn, flags, (pad), ppid, context,
# timetolive, tsn, cumtsn, assoc_id
SNDRCVINFO = struct.Struct("=HHHxxIIIIIi")

AssocChange = sctp.assoc_change
LOST_STATES = frozenset({AssocChange.state_COMM_LOST, AssocChange.state_SHUTDOWN_COMP})

OnDone = Callable[[int, dict[str, Any]], None]


class ControlEvents(Protocol):
    """What the channel tells the server (its announcer) about devices and commands."""

    def device_online(self, device: Device) -> None:
        """``device`` proved its secret: it is online (after any ``device_offline`` it replaced)."""

    def device_offline(self, device: Device, replaced: bool) -> None:
        """``device`` went offline; ``replaced``: a newer association of it took over."""

    def telemetry(self, device: Device, data: dict[str, Any]) -> None:
        """The newest reading of ``device``, as the coalescer released it (history has it)."""

    def command(self, event: CommandEvent) -> None:
        """A command was issued, answered or failed."""

    def device_refused(self, device: str | None, addr: str | None, reason: str) -> None:
        """An association was refused (``admission.Reason``'s value), with the id it claimed."""


class Transport(Protocol):
    """Where the channel's messages go: one association each (SCTP, or a test's fake)."""

    def send(self, assoc: int, msg: codec.FromServer) -> None:
        """Send ``msg`` to ``assoc`` on the control stream; OSError if it cannot be sent."""

    def abort(self, assoc: int) -> None:
        """Abort ``assoc``; OSError if it is gone."""


class SctpTransport:
    """The channel's socket: sendmsg() with SCTP_SNDRCV naming the association, every
    message sealed with the association's session (``sessions``, the channel's)."""

    def __init__(self, sock: Any, sessions: dict[int, Session]) -> None:
        self.sock = sock
        self.sessions = sessions

    def _sendmsg(self, assoc: int, data: bytes, flags: int = 0) -> None:
        info = SNDRCVINFO.pack(Stream.CONTROL, 0, flags, socket.htonl(PPID), 0, 0, 0, 0, assoc)
        self.sock.sendmsg([data], [(socket.IPPROTO_SCTP, SCTP_SNDRCV, info)])

    def handshake(self, assoc: int, reply: bytes) -> None:
        """Send the handshake's message 2 (the only message not sealed)."""
        self._sendmsg(assoc, reply)

    def send(self, assoc: int, msg: codec.FromServer) -> None:
        session = self.sessions.get(assoc)
        if session is None:  # a refusal before the handshake: nothing is said
            raise OSError(errno.ENOTCONN, "no keys yet (before the handshake)")
        self._sendmsg(assoc, session.seal(Stream.CONTROL, codec.encode(msg)))

    def abort(self, assoc: int) -> None:
        self._sendmsg(assoc, b"", sctp.MSG_ABORT)


class _Unconnected:
    """The transport while the channel is off: nothing can be sent."""

    def send(self, assoc: int, msg: codec.FromServer) -> None:
        raise OSError(errno.ENOTCONN, "the control channel is off")

    def abort(self, assoc: int) -> None:
        raise OSError(errno.ENOTCONN, "the control channel is off")


class ControlChannel:
    """Device agents over SCTP: registry, commands and telemetry for the HTTP side."""

    def __init__(self, loop: Loop, cfg: ControlConfig, sink: ControlEvents) -> None:
        self._loop = loop
        self._cfg = cfg
        self._events = sink  # hears what happens (the server's announcer)
        self._sock: Any = None  # sctp.sctpsocket_udp while running
        self.transport: Transport = _Unconnected()
        self._admission = Admission(cfg.devices, AllowList(cfg.allow), cfg.hello_timeout)
        self._deadlines: dict[int, Timer] = {}  # association -> its hello's deadline
        self._sessions: dict[int, Session] = {}  # association -> its keys, after the handshake
        self._registry = control.Registry()
        self._coalescer = control.Coalescer()
        self._history = control.History()
        self._reassembler = control.Reassembler()
        self._waiting: dict[str, tuple[OnDone, Timer]] = {}
        self.off_reason: str | None = "not started"
        self.address: tuple[str, int] | None = None  # bound address, for logs and tests

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        """Listen; on a kernel without SCTP or when disabled, stay off and say why."""
        cfg = self._cfg
        if not cfg.enabled:
            self._off("disabled in the config ([control] enabled = false)")
            return
        family = family_of(cfg.host)
        try:
            sock = sctp.sctpsocket_udp(family)
        except OSError as e:
            if e.errno in NO_SCTP:
                self._off(NO_SCTP_REASON)
                return
            raise
        try:
            self._configure(sock, family)
            sock.bind((cfg.host, cfg.port))
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise OSError(
                e.errno, f"control channel: SCTP {cfg.host} port {cfg.port}: {e.strerror}"
            ) from None
        self._sock = sock
        self.transport = SctpTransport(sock, self._sessions)
        self.address = sock.getsockname()[:2]
        self.off_reason = None
        self._loop.register(sock.sock(), READ, self._on_readable)
        log.info(
            "control channel listening on SCTP %s port %d (%d streams, heartbeat %d ms)",
            self.address[0],
            self.address[1],
            cfg.streams,
            cfg.heartbeat_ms,
        )
        self._say_if_no_devices()

    def attach(self, transport: Transport) -> None:
        """Run over ``transport`` instead of an SCTP socket (a test's fake devices).

        The channel is on; devices come through ``admit_proven`` (or
        ``association_up``, ``handshake`` and a proven hello) and speak through ``receive``.
        """
        self.transport = transport
        self.off_reason = None

    def _say_if_no_devices(self) -> None:
        if not self._admission.keys:
            log.warning("control channel: no devices declared: python -m server add-device ID")

    def reload(self, cfg: ControlConfig) -> None:
        """SIGHUP: new device secrets, ``allow`` and ``hello_timeout`` (the rest needs a restart).

        A device whose secret changed or was removed, and any association
        whose address is no longer allowed, is disconnected: it has to prove
        itself again, as a person removed from the config is logged out.
        """
        allow = AllowList(cfg.allow)
        revoked, outside = self._admission.reload(cfg.devices, allow, cfg.hello_timeout)
        if self._sock is None:
            return
        self._say_if_no_devices()
        for assoc in outside:
            self._disconnect(assoc, "its address is no longer in control.allow")
        for dev_id in sorted(revoked):
            dev = self._registry.devices.get(dev_id)
            if dev is not None and dev.assoc is not None:
                self._disconnect(dev.assoc, "its secret changed or it is no longer declared")

    def _off(self, reason: str) -> None:
        self.off_reason = reason
        log.warning("%s", self.off_message)

    def _configure(self, sock: Any, family: int) -> None:
        """Socket defaults that every new association inherits."""
        cfg = self._cfg
        sock.setblocking(False)
        init = sock.initparams
        init.autoflush = False
        init.num_ostreams = cfg.streams
        init.max_instreams = cfg.streams
        init.flush()
        events = sock.events
        events.autoflush = False
        events.clear()  # data_io only, then what we handle:
        events.association = True
        events.shutdown = True
        # not send_failure: pysctp decodes the unsent bytes of the notification as text,
        # and sealed bytes are not (it crashed the process, in sctp_recv)
        events.flush()
        tune_peer(sock, family, cfg.heartbeat_ms, cfg.path_max_retrans)

    def close(self) -> None:
        """Stop listening; commands still waiting get 503."""
        if self._sock is None:
            return
        for cid in list(self._waiting):
            p = self._registry.expire(cid)
            if p is not None:
                self._fail(p, 503, "the server is shutting down")
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        self._loop.unregister(self._sock.sock())
        self._sock.close()
        self._sock = None
        self.transport = _Unconnected()
        self._sessions.clear()
        self.off_reason = "closed"

    # -- the HTTP side's interface ---------------------------------------
    @property
    def off_message(self) -> str | None:
        """``control channel off: <why>`` while there is no channel, else None."""
        return None if self.off_reason is None else f"control channel off: {self.off_reason}"

    def known(self) -> list[Device]:
        """Every known device, online or not, sorted by id."""
        return [d for _, d in sorted(self._registry.devices.items())]

    def device(self, device_id: str) -> Device | None:
        return self._registry.devices.get(device_id)

    def state(self, device_id: str) -> dict[str, Value]:
        """A copy of the entity states of a known device (None: not reported yet)."""
        return dict(self._registry.states.get(device_id, {}))

    def unavailable(self, device_id: str) -> Refusal | None:
        """Why a command (or a lease) for ``device_id`` would be refused now; None: it would not."""
        off = self.off_message
        if off is not None:
            return Refusal(503, off)
        return self._registry.unavailable(device_id)

    def check(self, device_id: str, entity: str, value: object) -> Refusal | None:
        """Why setting ``entity`` of ``device_id`` to ``value`` would be refused now (the
        device, or 400 naming the entity, the value and the rule); None: it would not."""
        refused = self.unavailable(device_id)
        if refused is not None:
            return refused
        checked = self._registry.check(device_id, entity, value)
        return checked if isinstance(checked, Refusal) else None

    def telemetry(self, device_id: str) -> dict[str, Any] | None:
        """The telemetry history of a known device (``control.History``), or None."""
        if device_id not in self._registry.devices:
            return None
        metrics = self._history.of(device_id, time.time())
        return {"device": device_id, "window_s": control.HISTORY_SECONDS, "metrics": metrics}

    def command(
        self,
        device_id: str,
        entity: str,
        value: object,
        user: str,
        on_done: OnDone,
        reason: str | None = None,
    ) -> None:
        """Set ``entity`` of a device to ``value``, checked first; ``on_done(status, body)``
        is called exactly once. ``reason``: why vigil sends it itself (a safe state)."""
        off = self.off_message
        if off is not None:
            on_done(503, {"error": off})
            return
        now = self._loop.now()
        timeout = self._cfg.command_timeout
        p = self._registry.issue(device_id, entity, value, user, now, timeout, reason)
        if isinstance(p, Refusal):
            on_done(p.status, {"error": p.error})
            return
        timer = self._loop.call_at(p.deadline, partial(self._expire, p.id))
        self._waiting[p.id] = (on_done, timer)
        self._events.command(p.event(Phase.ISSUED, now))
        assoc = self._registry.devices[device_id].assoc
        assert assoc is not None  # issue() checked that the device is online
        try:
            self.transport.send(assoc, p.command())
        except OSError as e:
            self._registry.expire(p.id)
            self._fail(p, 503, f"could not send to device {device_id!r}: {e.strerror}")

    def _expire(self, cid: str) -> None:
        p = self._registry.expire(cid)
        if p is not None:
            timeout = self._cfg.command_timeout
            self._fail(p, 504, f"device {p.device!r} did not answer within {timeout:g} s")

    def _fail(self, p: control.Pending, status: int, error: str) -> None:
        on_done, timer = self._waiting.pop(p.id)
        timer.cancel()
        log.info("command %s %s to %s failed: %s", p.id, p.entity.key, p.device, error)
        self._events.command(p.event(Phase.FAILED, self._loop.now(), status, ok=False, error=error))
        on_done(status, {"error": error})

    def _answer(self, p: control.Pending, res: control.Result, assoc: int) -> None:
        on_done, timer = self._waiting.pop(p.id)
        timer.cancel()
        now = self._loop.now()
        if res.ok:
            state = self._registry.answered(p, res)
            if isinstance(state, str):  # the device said a state its entity cannot have
                self._reply_error(assoc, f"result {p.id}: state dropped: {state}")
                state = self._registry.states[p.device].get(p.entity.key)
            self._events.command(p.event(Phase.RESULT, now, 200, ok=True, state=state))
            on_done(200, {"id": p.id, "ok": True, "state": state})
        else:
            self._events.command(p.event(Phase.RESULT, now, 200, ok=False, error=res.error))
            on_done(200, {"id": p.id, "ok": False, "error": res.error})

    # -- socket I/O ------------------------------------------------------
    def _abort(self, assoc: int, text: str) -> None:
        """Send ``text`` as an ``error`` (if it has keys), then ABORT the association;
        forget it at once."""
        try:
            self.transport.send(assoc, codec.Error(text))
        except OSError as e:  # it may be gone already, or have no keys yet
            log.debug("association %d: %s", assoc, e.strerror)
        try:
            self.transport.abort(assoc)
        except OSError as e:
            log.debug("association %d: %s", assoc, e.strerror)
        self.association_lost(assoc, "aborted")

    def _peer_address(self, assoc: int) -> str | None:
        """The peer's primary address: where its INIT came from."""
        try:
            return display_address(self._sock.get_status(assoc).primary.sockaddr[0])
        except (OSError, AttributeError, IndexError, TypeError, ValueError) as e:
            log.info("association %d: no peer address: %s", assoc, e)
            return None

    def _reply_error(self, assoc: int, text: str) -> None:
        log.info("association %d: %s", assoc, text)
        try:
            self.transport.send(assoc, codec.Error(text))
        except OSError as e:
            log.info("association %d: cannot send error reply: %s", assoc, e.strerror)

    def _on_readable(self, _mask: int) -> None:
        for _ in range(MAX_READS):
            try:
                _addr, flags, data, info = self._sock.sctp_recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("control channel: receive failed: %s", e)
                return
            if flags & sctp.FLAG_NOTIFICATION:
                self._on_notification(info)
            else:
                self._on_data(info.assoc_id, info.stream, socket.ntohl(info.ppid), data, flags)

    def _on_notification(self, n: Any) -> None:
        if isinstance(n, sctp.assoc_change):
            if n.state == AssocChange.state_COMM_UP:
                log.info(
                    "association %d up (%d/%d streams)",
                    n.assoc_id,
                    n.outbound_streams,
                    n.inbound_streams,
                )
                self.association_up(n.assoc_id, self._peer_address(n.assoc_id))
            elif n.state == AssocChange.state_RESTART:  # the peer restarted: a new association
                self.association_lost(n.assoc_id, "restarted")
                self.association_up(n.assoc_id, self._peer_address(n.assoc_id))
            elif n.state in LOST_STATES:
                closed = n.state == AssocChange.state_SHUTDOWN_COMP
                self.association_lost(n.assoc_id, "closed" if closed else "lost")
        elif isinstance(n, sctp.shutdown_event):
            self.association_lost(n.assoc_id, "shut down")

    # -- the message-level seam --------------------------------------------
    def association_up(self, assoc: int, addr: str | None) -> None:
        """A new association from ``addr``: refuse it, or wait for its handshake and hello."""
        arrival = self._admission.arrive(assoc, addr, self._loop.now())
        if isinstance(arrival, Denial):
            self._refuse(assoc, arrival)
            return
        self._deadlines[assoc] = self._loop.call_at(
            arrival.deadline, partial(self._hello_due, assoc)
        )

    def handshake(self, assoc: int, first: bytes) -> bytes | None:
        """Message 1 of ``assoc``'s handshake: message 2 to send back, or None (refused).
        The association has its keys from now on; it is believed once its hello opens."""
        answer = self._admission.handshake(assoc, first, self._loop.now())
        if isinstance(answer, Denial):
            self._refuse(assoc, answer)
            return None
        session, reply = answer
        self._sessions[assoc] = session
        return reply

    def association_lost(self, assoc: int, how: str) -> None:
        """``assoc`` is gone (``how``: lost, closed, aborted, ...); its device goes offline."""
        timer = self._deadlines.pop(assoc, None)
        if timer is not None:
            timer.cancel()
        self._admission.leave(assoc)
        self._sessions.pop(assoc, None)
        self._reassembler.forget(assoc)
        dev, lost = self._registry.drop_assoc(assoc, time.time())
        if dev is not None:
            self._offline(dev, f"association {assoc} {how}", lost)

    def receive(self, assoc: int, msg: codec.FromDevice) -> None:
        """One whole message from ``assoc``, decoded (``codec.decode_from_device``)."""
        if isinstance(msg, codec.Hello):
            self._on_hello(assoc, msg)
        elif self._registry.device_of(assoc) is None:
            self._reply_error(assoc, "say hello first")
        elif isinstance(msg, codec.Result):
            self._on_result(assoc, msg)
        else:
            self._on_telemetry(assoc, msg)

    def admit_proven(self, assoc: int, msg: codec.Hello) -> Device:
        """``assoc`` proved it is ``msg.device``: register it, welcome it, announce it.

        What a hello does once ``Admission.prove`` passed it (a fake device in
        tests starts here). A live association of the same id is replaced:
        that device goes offline (``replaced``), its commands fail, it is aborted.
        """
        joined = self._registry.hello(assoc, msg, time.time())
        dev = joined.device
        if joined.replaced is not None:
            old = joined.replaced
            if joined.gone is not None:
                why = f"association {old} replaced by association {assoc} (the agent reconnected)"
                self._offline(joined.gone, why, joined.lost, replaced=True)
            self._abort(old, "replaced by a newer association of this device")
        try:
            self.transport.send(assoc, codec.Welcome(dev.id))
        except OSError as e:
            log.info("association %d: cannot send welcome: %s", assoc, e.strerror)
        log.info(
            "device %s online on association %d from %s: %s",
            dev.id,
            assoc,
            self._admission.addrs.get(assoc, "?"),
            ", ".join(f"{e.key} ({e.kind.value})" for e in dev.entities),
        )
        self._events.device_online(dev)
        return dev

    def _offline(
        self, dev: Device, why: str, lost: Iterable[control.Pending], replaced: bool = False
    ) -> None:
        log.info("device %s offline: %s", dev.id, why)
        self._coalescer.forget(dev.id)
        self._events.device_offline(dev, replaced)
        for p in lost:
            self._fail(p, 503, f"device {dev.id!r} was lost before it answered")

    def _hello_due(self, assoc: int) -> None:
        self._deadlines.pop(assoc, None)
        denial = self._admission.due(assoc, self._loop.now())
        if denial is not None:
            self._refuse(assoc, denial)

    def _refuse(self, assoc: int, d: Denial) -> None:
        """One log line, an error message (sealed, if there are keys), ABORT, one audit record."""
        log.warning(
            "device %s from %s refused (association %d): %s",
            d.device or "(no hello)",
            d.addr or "?",
            assoc,
            d.detail,
        )
        self._abort(assoc, d.reply)
        self._events.device_refused(d.device, d.addr, d.reason.value)

    def _disconnect(self, assoc: int, why: str) -> None:
        """Throw out an association that was let in (SIGHUP took its right away)."""
        dev = self._registry.device_of(assoc)
        log.warning(
            "device %s from %s disconnected (association %d): %s",
            dev.id if dev else "(no hello)",
            self._admission.addrs.get(assoc, "?"),
            assoc,
            why,
        )
        self._abort(assoc, f"disconnected: {why}")

    def _on_data(self, assoc: int, stream: int, ppid: int, piece: bytes, flags: int) -> None:
        if not self._admission.knows(assoc):
            return  # refused (and aborted), or it never came up: not worth an answer
        whole = self._reassembler.feed(assoc, piece, bool(flags & sctp.FLAG_EOR))
        if whole is None:
            return
        if isinstance(whole, str):  # too large to be sealed
            self._refuse(assoc, self._admission.unsealed(assoc, whole))
            return
        if ppid not in codec.ACCEPTED_PPIDS:
            why = f"payload protocol id {ppid} (vigil's sealed messages: {codec.PPID} or 0)"
            self._refuse(assoc, self._admission.unsealed(assoc, why))
            return
        session = self._sessions.get(assoc)
        if session is None:
            if stream != Stream.CONTROL:
                why = f"a message on stream {stream} before the handshake"
                self._refuse(assoc, self._admission.unsealed(assoc, why))
                return
            reply = self.handshake(assoc, whole)
            if reply is None:
                return
            transport = self.transport
            assert isinstance(transport, SctpTransport)  # data comes from the socket
            try:
                transport.handshake(assoc, reply)
            except OSError as e:
                log.info("association %d: cannot answer the handshake: %s", assoc, e.strerror)
            return
        try:
            plain = session.open(stream, whole)
        except Unsealed as e:
            del self._sessions[assoc]  # closed: nothing more is sealed, not even the error
            self._refuse(assoc, self._admission.unsealed(assoc, str(e)))
            return
        msg = codec.decode_from_device(plain)
        if isinstance(msg, str):
            self._reply_error(assoc, msg)
        else:
            self.receive(assoc, msg)

    # -- messages --------------------------------------------------------
    def _on_hello(self, assoc: int, msg: codec.Hello) -> None:
        current = self._registry.device_of(assoc)
        if current is not None:
            self._reply_error(assoc, f"hello: this association is already device {current.id!r}")
            return
        timer = self._deadlines.pop(assoc, None)
        if timer is not None:
            timer.cancel()
        denial = self._admission.prove(assoc, msg.device, msg.protocol, self._loop.now())
        if denial is not None:
            self._refuse(assoc, denial)
            return
        self.admit_proven(assoc, msg)

    def _on_result(self, assoc: int, msg: codec.Result) -> None:
        p = self._registry.resolve(assoc, msg)
        if p is None:
            dev = self._registry.device_of(assoc)
            log.info(
                "result for unknown or expired command %r from %s dropped",
                msg.id,
                dev.id if dev else assoc,
            )
            return
        self._answer(p, msg, assoc)

    def _on_telemetry(self, assoc: int, msg: codec.Telemetry) -> None:
        dev = self._registry.device_of(assoc)
        assert dev is not None  # receive checked
        data, wrong = self._registry.readings(dev.id, msg.data)
        if wrong:
            more = f"; and {len(wrong) - NAMED} more" if len(wrong) > NAMED else ""
            self._reply_error(assoc, "telemetry: dropped " + "; ".join(wrong[:NAMED]) + more)
        if not data:
            return
        now = self._loop.now()
        when = self._coalescer.offer(dev.id, data, now)
        if when is None:
            return
        if when <= now:
            self._flush_telemetry(dev.id)
        else:
            self._loop.call_at(when, partial(self._flush_telemetry, dev.id))

    def _flush_telemetry(self, device_id: str) -> None:
        data = self._coalescer.release(device_id, self._loop.now())
        if data is not None:
            self._history.add(device_id, data, time.time())
            self._events.telemetry(self._registry.devices[device_id], data)
