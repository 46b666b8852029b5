"""The control channel without sockets: devices, pending commands, telemetry.

Strategy (h11's sans-I/O core): this module decides, ``server.control.channel``
does the I/O. Nothing here imports ``socket``, ``select`` or ``time``; every
function that needs the clock takes it as an argument:

- ``now``: monotonic seconds (the loop's clock), for deadlines, latencies and
  the telemetry rate limit;
- ``at``: wall-clock seconds since the epoch, only for the ``since`` that
  people read (ISO-8601 UTC).

The wire (README.md, "Devices"): ``server.link.codec`` turns bytes from a
device into a ``Hello``, ``Result`` or ``Telemetry`` (or a one-line error
text for the ``{"type": "error"}`` reply; the association stays up after
such an error) and writes what vigil sends; ``Pending.command`` is the
``Command`` message of a pending command. (A hello that fails to prove its
secret is another matter: ``server.control.admission``.)

Invariants of ``Registry``:
- only proven hellos reach it (sealed, after the handshake ``server.control.admission``
  checked), and an association is one device for its whole life;
- a device id is online on at most one association: a second proven
  association of the same id replaces the first (the agent restarted before
  SCTP noticed its old association die), whose commands fail at once;
- devices stay known after they go offline (``online=False``, ``since`` = when
  they went), so the panel can still show them;
- a pending command belongs to one device; ``Registry.drop_assoc`` returns the
  commands that can never be answered so the shell fails them at once.
"""

from __future__ import annotations

import enum
import itertools
import math
import secrets
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from server.feed.events import CommandEvent
from server.link.codec import MAX_SEALED, Command, Hello, Result
from server.link.entities import Entity, Invalid, Value, refusal, unknown

TELEMETRY_INTERVAL = 0.2  # seconds between two telemetry events of one device
HISTORY_SECONDS = 300  # telemetry history kept per device and metric ...
HISTORY_STEP = 1.0  # ... at most one point a second ...
HISTORY_METRICS = 32  # ... for at most this many numeric fields of a device


class Phase(enum.Enum):
    ISSUED = "issued"
    RESULT = "result"
    FAILED = "failed"


# -- devices and commands ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    name: str
    entities: tuple[Entity, ...]  # as its last hello declared them
    online: bool
    since: float  # epoch seconds of the last online/offline change
    assoc: int | None  # SCTP association id while online (``core.views`` shows it)


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    device: str
    entity: Entity
    value: Value  # checked against ``entity``
    user: str
    reason: str | None  # why vigil sent it itself (a safe state); None: a person did
    started: float  # monotonic
    deadline: float  # monotonic

    def command(self) -> Command:
        """The command message sent to the device."""
        return Command(self.id, self.entity.key, self.value, self.user)

    def event(
        self,
        phase: Phase,
        now: float,
        status: int = 0,
        ok: bool = False,
        state: Value = None,
        error: str | None = None,
    ) -> CommandEvent:
        """The "command" event for ``phase``; once answered, its outcome and latency."""
        ev = CommandEvent(
            self.id, self.device, self.entity.key, self.value, self.user, phase.value, self.reason
        )
        if phase is Phase.ISSUED:
            return ev
        latency = round((now - self.started) * 1000)
        return replace(ev, status=status, ok=ok, state=state, error=error, latency_ms=latency)


@dataclass(frozen=True, slots=True)
class Joined:
    """A proven hello, registered; ``replaced``: the association it took over, if any."""

    device: Device
    replaced: int | None = None
    gone: Device | None = None  # the device as the replaced association left it (offline)
    lost: tuple[Pending, ...] = ()  # commands sent to the replaced association


@dataclass(frozen=True, slots=True)
class Refusal:
    """A command that cannot be issued: the HTTP status and the error text."""

    status: int
    error: str


@dataclass(slots=True)
class Registry:
    """Devices by id, which association is which device, and pending commands."""

    devices: dict[str, Device] = field(default_factory=dict)
    by_assoc: dict[int, str] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    # each known device's entity states (None: unknown), kept when it goes offline
    states: dict[str, dict[str, Value]] = field(default_factory=dict)
    # Command ids: a per-process random prefix, so a result meant for a
    # command of a previous run can never match a new one.
    _prefix: str = field(default_factory=lambda: secrets.token_hex(3))
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def hello(self, assoc: int, msg: Hello, at: float) -> Joined:
        """Register the proven device of ``assoc`` (not yet a device: see ``device_of``).

        If the id is online on another association, that one is dropped: the
        device proved its secret here, so this is where it is now.
        """
        assert assoc not in self.by_assoc, "one hello per association"
        known = self.devices.get(msg.device)
        old = known.assoc if known is not None else None
        gone, lost = self.drop_assoc(old, at) if old is not None else (None, [])
        dev = Device(msg.device, msg.name, msg.entities, True, at, assoc)
        self.devices[dev.id] = dev
        self.by_assoc[assoc] = dev.id
        self.states[dev.id] = {e.key: None for e in msg.entities if e.stateful}
        return Joined(dev, old, gone, tuple(lost))

    def device_of(self, assoc: int) -> Device | None:
        """The device that said hello on ``assoc``, if any."""
        dev_id = self.by_assoc.get(assoc)
        return None if dev_id is None else self.devices[dev_id]

    def drop_assoc(self, assoc: int, at: float) -> tuple[Device | None, list[Pending]]:
        """``assoc`` is gone: its device (now offline) and its unanswerable commands."""
        dev_id = self.by_assoc.pop(assoc, None)
        if dev_id is None:
            return None, []
        dev = replace(self.devices[dev_id], online=False, since=at, assoc=None)
        self.devices[dev_id] = dev
        lost = [p for p in self.pending.values() if p.device == dev_id]
        for p in lost:
            del self.pending[p.id]
        return dev, lost

    def unavailable(self, device: str) -> Refusal | None:
        """Why ``device`` cannot take a command or be leased now; None if it can."""
        dev = self.devices.get(device)
        if dev is None:
            return Refusal(404, f"unknown device {device!r}")
        if not dev.online:
            return Refusal(503, f"device {device!r} is offline")
        return None

    def check(self, device: str, entity: str, value: object) -> tuple[Entity, Value] | Refusal:
        """The entity a command names and its value, checked (``Entity.command``); else why
        not: 404 or 503 for the device, 400 naming the entity, the value and the rule."""
        refused = self.unavailable(device)
        if refused is not None:
            return refused
        described = self.devices[device].entities
        found = next((e for e in described if e.key == entity), None)
        if found is None:
            return Refusal(400, unknown(device, entity, described))
        try:
            return found, found.command(value)
        except Invalid as e:
            return Refusal(400, refusal(device, entity, str(e)))

    def issue(
        self,
        device: str,
        entity: str,
        value: object,
        user: str,
        now: float,
        timeout: float,
        reason: str | None = None,
    ) -> Pending | Refusal:
        """Check and record a command for ``device``; the shell then sends it."""
        checked = self.check(device, entity, value)
        if isinstance(checked, Refusal):
            return checked
        found, value = checked
        cid = f"{self._prefix}-{next(self._ids)}"
        p = Pending(cid, device, found, value, user, reason, now, now + timeout)
        self.pending[p.id] = p
        return p

    def resolve(self, assoc: int, msg: Result) -> Pending | None:
        """The pending command ``msg`` answers, removed; None if unknown or late.

        A result counts only from the device the command went to.
        """
        p = self.pending.get(msg.id)
        if p is None or self.by_assoc.get(assoc) != p.device:
            return None
        return self.pending.pop(msg.id)

    def answered(self, p: Pending, msg: Result) -> Value | str:
        """The entity's state after ``p`` succeeded (``msg.state``, or else the value sent),
        kept at once; or what is wrong with the state the device said (then kept as it was)."""
        entity = p.entity
        if not entity.stateful:
            return None
        said = msg.state if msg.state is not None else p.value
        try:
            state = entity.reading(said)
        except Invalid as e:
            return refusal(p.device, entity.key, str(e))
        self.states[p.device][entity.key] = state
        return state

    def readings(self, device: str, data: dict[str, Any]) -> tuple[dict[str, Value], list[str]]:
        """The states of a telemetry reading that fit the device's entities, kept at once;
        and what was wrong with the rest (``device.key: rule``), dropped."""
        described = {e.key: e for e in self.devices[device].entities}
        states = self.states[device]
        good: dict[str, Value] = {}
        wrong: list[str] = []
        for key, value in data.items():
            entity = described.get(key)
            if entity is None:
                wrong.append(unknown(device, key, self.devices[device].entities))
                continue
            try:
                if not entity.stateful:
                    raise Invalid(f"a {entity.kind.value} has no state")
                good[key] = states[key] = entity.reading(value)
            except Invalid as e:
                wrong.append(refusal(device, key, str(e)))
        return good, wrong

    def expire(self, cid: str) -> Pending | None:
        """Remove and return command ``cid`` if it is still pending."""
        return self.pending.pop(cid, None)


# -- telemetry rate limit ---------------------------------------------------


@dataclass(slots=True)
class Coalescer:
    """Newest telemetry per device and key, released at most every ``interval`` seconds.

    How the shell uses it: ``offer()`` returns when to publish (``now`` or
    later) or None when a release is already due; at that time the shell calls
    ``release()`` and publishes what it returns. So a device that sends 100
    readings a second costs the browsers 5 events a second, always the newest.
    """

    interval: float = TELEMETRY_INTERVAL
    _latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)

    def offer(self, device: str, data: dict[str, Any], now: float) -> float | None:
        """Keep ``data`` as the newest of each of its keys (a reading may say only some);
        return when to ``release`` it, or None (already due)."""
        waiting = device in self._latest
        self._latest[device] = {**self._latest[device], **data} if waiting else data
        if waiting:
            return None
        return max(now, self._last.get(device, float("-inf")) + self.interval)

    def release(self, device: str, now: float) -> dict[str, Any] | None:
        """The newest data of ``device`` to publish now, or None if it was forgotten."""
        data = self._latest.pop(device, None)
        if data is not None:
            self._last[device] = now
        return data

    def forget(self, device: str) -> None:
        """Drop unpublished telemetry of a device that went offline."""
        self._latest.pop(device, None)


@dataclass(slots=True)
class History:
    """The last ``HISTORY_SECONDS`` of every numeric telemetry field, per device.

    One point per ``HISTORY_STEP`` and metric (a newer reading in the same
    step replaces the older), at most ``HISTORY_METRICS`` fields a device:
    so a device costs at most 32 x 301 points however fast it sends. Only
    numbers are kept (not booleans, not NaN or infinities: JSON has none).
    """

    _series: dict[str, dict[str, deque[tuple[float, float]]]] = field(default_factory=dict)

    def add(self, device: str, data: dict[str, Any], at: float) -> None:
        """Keep the numeric fields of one reading taken at ``at`` (epoch seconds)."""
        series = self._series.setdefault(device, {})
        step = math.floor(at / HISTORY_STEP)
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            points = series.get(name)
            if points is None:
                if len(series) >= HISTORY_METRICS:
                    continue
                points = series[name] = deque(maxlen=round(HISTORY_SECONDS / HISTORY_STEP) + 1)
            if points and math.floor(points[-1][0] / HISTORY_STEP) == step:
                points.pop()
            points.append((at, value))

    def of(self, device: str, at: float) -> dict[str, list[list[float]]]:
        """Each metric's points of the last ``HISTORY_SECONDS`` before ``at``: [epoch ms, value]."""
        start = at - HISTORY_SECONDS
        return {
            name: [[round(t * 1000), v] for t, v in points if t >= start]
            for name, points in sorted(self._series.get(device, {}).items())
        }


# -- partial messages -------------------------------------------------------


@dataclass(slots=True)
class Reassembler:
    """Joins the pieces of SCTP messages per association (MSG_EOR marks the end).

    A message that grows past ``MAX_SEALED`` (the largest sealed message) is not
    kept: its pieces are counted and dropped until its end, when ``feed`` returns
    the error text.
    """

    _parts: dict[int, bytearray] = field(default_factory=dict)
    _oversize: dict[int, int] = field(default_factory=dict)

    def feed(self, assoc: int, piece: bytes, eor: bool) -> bytes | str | None:
        """Add a piece; return the whole message, an error text, or None (more to come)."""
        if assoc in self._oversize:
            self._oversize[assoc] += len(piece)
        else:
            buf = self._parts.setdefault(assoc, bytearray())
            buf += piece
            if len(buf) > MAX_SEALED:
                self._oversize[assoc] = len(self._parts.pop(assoc))
        if not eor:
            return None
        if assoc in self._oversize:
            size = self._oversize.pop(assoc)
            return f"message too large: {size} bytes sealed (at most {MAX_SEALED})"
        return bytes(self._parts.pop(assoc))

    def forget(self, assoc: int) -> None:
        self._parts.pop(assoc, None)
        self._oversize.pop(assoc, None)
