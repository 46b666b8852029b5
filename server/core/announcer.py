"""Every change everyone must know of: its audit record, its log line and its event, here.

The announcer is told what happened, by whoever saw it happen: the gate and the
connections (people joining and leaving), handlers (leases, chat), the control
channel (devices coming and going, readings, commands: it implements the
channel's ``ControlEvents``). For each change it writes the audit record (the
durable truth, on disk before anything is acknowledged: ``Server.end_of_pass``),
logs one line and publishes one typed event (``feed.events``). Consequences
that are announcements too are drawn here: a person who leaves, or a device
that goes offline, ends the leases they held; and a lease whose holder vanished
(lost, left, idle) sends the device's entities to their safe values
(``vanished``, wired to ``core.commands.safe_state``).

A device appears in events as its view (``core.views``): the registry's device
and its lease, built once per event, nothing climbs back to be decorated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from server.control.registry import Device
from server.feed.audit import AuditLog
from server.feed.bus import EventBus
from server.feed.events import (
    ChatMessage,
    CommandEvent,
    DeviceOffline,
    DeviceOnline,
    DeviceView,
    LeaseChanged,
    PresenceChanged,
    Telemetry,
)
from server.people import presence
from server.people.leases import Change as LeaseChange
from server.people.leases import End, Lease, Leases
from server.people.presence import Change, Presence

from .views import States, device_view

log = logging.getLogger(__name__)

# Why a holder's leases end when they leave (presence's reason; else "left").
LEASE_ENDS = {presence.LOST: End.LOST, presence.SHUTDOWN: End.SHUTDOWN}


# Lease ends after which a device's entities go to their safe values: its holder vanished.
VANISHED = frozenset({End.LOST, End.LEFT, End.IDLE})


class Announcer:
    """Audit, log and publish. The server wires in what it looks up and what it does:
    ``device`` and ``state`` (the control channel's), and ``vanished``, called with a
    lease that ended because its holder vanished (``VANISHED``: the safe state)."""

    def __init__(self, bus: EventBus, audit: AuditLog, people: Presence, leases: Leases) -> None:
        self.bus = bus
        self.audit = audit
        self.people = people
        self.leases = leases
        self.device: Callable[[str], Device | None] = lambda _id: None
        self.state: States = lambda _id: {}
        self.vanished: Callable[[Lease, End], None] = lambda _lease, _end: None

    def _view(self, device: Device) -> DeviceView:
        return device_view(device, self.state(device.id), self.leases.of(device.id))

    # -- people ------------------------------------------------------------
    def presence(self, change: Change) -> None:
        """A join or a leave; a leave ends the leases its person held."""
        if change.kind == "join":
            self.audit.append("login", user=change.user, addr=change.addr)
        else:
            self.audit.append("leave", user=change.user, addr=change.addr, reason=change.reason)
        reason = f" ({change.reason})" if change.reason else ""
        log.info("%s %s from %s%s", change.user, change.kind, change.addr, reason)
        self.bus.publish(
            PresenceChanged(
                change.kind, change.user, change.addr, change.reason, self.people.online()
            )
        )
        if change.kind == "leave":
            end = LEASE_ENDS.get(change.reason or presence.CLOSED, End.LEFT)
            self.lease_changes(self.leases.end_holder(change.user, end))

    def lease_changes(self, changes: list[LeaseChange]) -> None:
        """Lease starts and ends; each event shows the device as it is after the change."""
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
            device = self.device(lease.device)
            assert device is not None  # leases are taken on known devices, which stay known
            reason = None if change.reason is None else str(change.reason)
            view = self._view(device)
            self.bus.publish(LeaseChanged(change.kind, view, lease.holder, reason, change.by))
            if change.reason in VANISHED and device.online:
                self.vanished(lease, change.reason)

    def chat(self, user: str, text: str) -> ChatMessage:
        record = self.audit.append("chat", user=user, text=text)
        message = ChatMessage(record["seq"], user, text, record["time"])
        self.bus.publish(message)
        return message

    # -- the control channel (``control.channel.ControlEvents``) --------------
    def device_online(self, device: Device) -> None:
        self.bus.publish(DeviceOnline(self._view(device)))

    def device_offline(self, device: Device, replaced: bool) -> None:
        """Offline, then the end of its lease (its holder can no longer work it)."""
        self.bus.publish(DeviceOffline(self._view(device), replaced))
        self.lease_changes(self.leases.end_device(device.id, End.OFFLINE))

    def telemetry(self, device: Device, data: dict[str, Any]) -> None:
        self.bus.publish(Telemetry(self._view(device), data))

    def command(self, event: CommandEvent) -> None:
        self.bus.publish(event)

    def device_refused(self, device: str | None, addr: str | None, reason: str) -> None:
        self.audit.append("device_refused", device=device, addr=addr, reason=reason)
