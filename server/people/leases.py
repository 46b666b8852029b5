"""Device leases: which operator works a device now, and when that ends.

A device has at most one holder. The holder's commands go through; anyone
else's get 409 with who holds it and since when, until the lease ends:

- the holder releases it (``released``);
- no command for ``idle`` seconds (``idle``; each command renews it);
- the holder leaves: their presence ended after a clean close and its
  grace (``left``) or at once when their connection was lost (``lost``);
- the device goes offline (``device offline``);
- another operator takes it over, explicitly (``taken over``, ``by`` them);
- the server stops (``shutdown``).

A command on a free device takes the lease for its sender (``take``): a
person working alone never has to ask for one, and everyone else still sees
who is at the controls. Channels without presence (the MQTT bridge) only
``check``: they never hold a lease, since nothing would end it but idling.

Pure, like ``presence``: callers pass ``now`` (monotonic, for the idle
deadline) and ``at`` (epoch seconds, for the ``since`` people read). Every
method returns the changes to announce; the server announces them
(``Server.announce_leases``: audit record, log line, ``device`` event).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from server.base.dates import iso_utc


class End(enum.StrEnum):
    RELEASED = "released"
    IDLE = "idle"
    LEFT = "left"
    LOST = "lost"
    OFFLINE = "device offline"
    TAKEN_OVER = "taken over"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class Lease:
    device: str
    holder: str
    since: float  # epoch seconds: when the holder took it
    used: float  # monotonic: the last take or command; idle from here

    def as_json(self) -> dict[str, Any]:
        return {"holder": self.holder, "since": iso_utc(self.since)}


@dataclass(frozen=True, slots=True)
class Change:
    """A lease began (``reason`` None) or ended (``reason``; ``by``: who took it over)."""

    lease: Lease
    reason: End | None = None
    by: str | None = None

    @property
    def kind(self) -> str:
        return "start" if self.reason is None else "end"


@dataclass(frozen=True, slots=True)
class Held:
    """The refusal of a device someone else holds: 409 with this body."""

    lease: Lease

    def body(self) -> dict[str, Any]:
        lease = self.lease
        clock = datetime.fromtimestamp(lease.since, UTC).strftime("%H:%M:%S")
        return {
            "error": f"{lease.device} is held by {lease.holder} since {clock} UTC",
            **lease.as_json(),
        }


class Leases:
    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._held: dict[str, Lease] = {}

    def __len__(self) -> int:
        """Leases held now."""
        return len(self._held)

    def of(self, device: str) -> Lease | None:
        return self._held.get(device)

    def check(self, device: str, user: str) -> Held | None:
        """Held if someone other than ``user`` holds ``device``."""
        lease = self._held.get(device)
        return Held(lease) if lease is not None and lease.holder != user else None

    def take(
        self, device: str, user: str, now: float, at: float, take_over: bool = False
    ) -> list[Change] | Held:
        """``user`` takes ``device`` (renewed if theirs; another's only with ``take_over``)."""
        lease = self._held.get(device)
        if lease is not None and lease.holder == user:
            self._held[device] = replace(lease, used=now)
            return []
        if lease is not None and not take_over:
            return Held(lease)
        new = Lease(device, user, at, now)
        self._held[device] = new
        ended = [] if lease is None else [Change(lease, End.TAKEN_OVER, user)]
        return [*ended, Change(new)]

    def release(self, device: str, user: str) -> list[Change] | Held:
        """``user`` lets go; nothing to do if the device is free; Held if it is another's."""
        held = self.check(device, user)
        if held is not None:
            return held
        lease = self._held.pop(device, None)
        return [] if lease is None else [Change(lease, End.RELEASED)]

    def end_holder(self, user: str, reason: End) -> list[Change]:
        """Every lease of ``user`` ends (they left, were lost, or the server stops)."""
        return self._end([d for d, lease in self._held.items() if lease.holder == user], reason)

    def end_device(self, device: str, reason: End) -> list[Change]:
        return self._end([device] if device in self._held else [], reason)

    def expire(self, now: float) -> list[Change]:
        """Leases idle for ``idle`` seconds end."""
        due = [d for d, lease in self._held.items() if now - lease.used >= self.idle]
        return self._end(due, End.IDLE)

    def _end(self, devices: list[str], reason: End) -> list[Change]:
        return [Change(self._held.pop(d), reason) for d in sorted(devices)]
