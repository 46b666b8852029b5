"""The event vocabulary: every change everyone sees, one frozen dataclass each.

Each event has one JSON form (``as_json``) and one SSE event name (``type``):
the event stream (``feed.bus``), the fleet over MQTT (``fleet.model``) and
the panel (``static/app.js``) all read that form, so a new field is added
here, once. Events are made in two places only: the control channel makes
``CommandEvent``s as a command goes through its phases, and the announcer
(``server.core.announcer``) makes the rest, with the audit record and the
log line of the same change. A device appears in events as a ``DeviceView``
(the registry's device with its lease), built by ``server.core.views``.

Pure: no clock, no I/O; times are already ISO-8601 text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from server.link.entities import Entity, Value


@dataclass(frozen=True, slots=True)
class LeaseView:
    holder: str
    since: str  # ISO-8601 UTC

    def as_json(self) -> dict[str, str]:
        return {"holder": self.holder, "since": self.since}


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A device as the panel, ``GET /api/devices`` and the fleet show it: what it is made
    of (``entities``, as its hello declared them) and the state of each (None: unknown)."""

    id: str
    name: str
    entities: tuple[Entity, ...]
    state: dict[str, Value]  # every stateful entity's key
    online: bool
    since: str  # ISO-8601 UTC of the last online/offline change
    lease: LeaseView | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "online": self.online,
            "since": self.since,
            "lease": None if self.lease is None else self.lease.as_json(),
            "entities": [e.as_json() for e in self.entities],
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class Person:
    """One person online: ``GET /api/users``' entries and presence events' ``online``."""

    user: str
    since: str  # ISO-8601 UTC
    addr: str

    def as_json(self) -> dict[str, str]:
        return {"user": self.user, "since": self.since, "addr": self.addr}


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    type: ClassVar[str] = "presence"
    kind: str  # "join" or "leave"
    user: str
    addr: str
    reason: str | None  # why they left (``people.presence``); None for a join
    online: tuple[Person, ...]  # everyone online after the change

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "user": self.user,
            "addr": self.addr,
            "reason": self.reason,
            "online": [p.as_json() for p in self.online],
        }


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    type: ClassVar[str] = "device"
    device: DeviceView

    def as_json(self) -> dict[str, Any]:
        return {"kind": "online", "device": self.device.as_json()}


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    type: ClassVar[str] = "device"
    device: DeviceView
    replaced: bool = False  # a newer association of the same device took over

    def as_json(self) -> dict[str, Any]:
        out = {"kind": "offline", "device": self.device.as_json()}
        return out | {"reason": "replaced"} if self.replaced else out


@dataclass(frozen=True, slots=True)
class Telemetry:
    type: ClassVar[str] = "device"
    device: DeviceView
    data: dict[str, Any]  # the newest reading (coalesced: at most 5 a second)

    def as_json(self) -> dict[str, Any]:
        return {"kind": "telemetry", "device": self.device.as_json(), "data": self.data}


@dataclass(frozen=True, slots=True)
class LeaseChanged:
    type: ClassVar[str] = "device"
    change: str  # "start" or "end"
    device: DeviceView  # as it is after the change
    holder: str
    reason: str | None  # why it ended (``people.leases.End``); None for a start
    by: str | None = None  # who took it over

    def as_json(self) -> dict[str, Any]:
        out = {
            "kind": "lease",
            "change": self.change,
            "device": self.device.as_json(),
            "holder": self.holder,
            "reason": self.reason,
        }
        return out if self.by is None else out | {"by": self.by}


@dataclass(frozen=True, slots=True)
class CommandEvent:
    """A command's phase: ``issued``, then ``result`` or ``failed`` with its outcome.

    ``state`` is the entity's state after an answered command; ``reason`` says why vigil
    sent a command itself (its ``user`` is then ``vigil``: a safe state)."""

    type: ClassVar[str] = "command"
    id: str
    device: str
    entity: str
    value: Value
    user: str
    phase: str  # "issued", "result" or "failed"
    reason: str | None = None
    status: int = 0  # HTTP status of the answer; 0 while issued
    ok: bool = False
    state: Value = None
    error: str | None = None
    latency_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "device": self.device,
            "entity": self.entity,
            "value": self.value,
            "user": self.user,
            "phase": self.phase,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.phase == "issued":
            return out
        out["ok"] = self.ok
        if self.ok:
            out["state"] = self.state
        else:
            out["error"] = self.error
        return out | {"status": self.status, "latency_ms": self.latency_ms}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    type: ClassVar[str] = "chat"
    id: int  # the audit record's sequence number
    user: str
    text: str
    time: str  # ISO-8601 UTC

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "text": self.text, "time": self.time}


DeviceEvent = DeviceOnline | DeviceOffline | Telemetry | LeaseChanged
Event = PresenceChanged | DeviceEvent | CommandEvent | ChatMessage
