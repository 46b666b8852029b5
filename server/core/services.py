"""What handlers and the fleet bridge may use: the server owns it, they borrow it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.base.buckets import Rate
from server.base.tally import Tally
from server.control.channel import ControlChannel
from server.feed.audit import AuditLog
from server.feed.bus import EventBus
from server.people.leases import Leases
from server.people.presence import Presence

from . import views
from .announcer import Announcer


@dataclass(slots=True)
class Services:
    """The parts a request (HTTP or MQTT) may use (rates change on SIGHUP)."""

    presence: Presence
    events: EventBus
    control: ControlChannel
    audit: AuditLog
    leases: Leases
    announcer: Announcer  # every change's audit record, log line and event
    now: Callable[[], float]  # the loop's monotonic clock
    wall: Callable[[], float]  # epoch seconds, for the ``since`` people read
    chat_rate: Rate  # chat messages per person
    command_rate: Rate  # commands per person (HTTP) or fleet user (MQTT)
    commands: Tally  # every settled command by outcome, and its latency (``/metrics``)

    def devices(self) -> list[views.DeviceView]:
        """Every known device as everyone sees it, sorted by id."""
        return views.devices(self.control.known(), self.control.state, self.leases)

    def snapshot(self) -> dict[str, Any]:
        """What a ``reset`` event carries: everything a panel shows."""
        control = self.control
        return views.snapshot(
            self.presence, control.known(), control.state, self.leases, control.off_message
        )
