"""How a device and the whole panel look to everyone: built here and nowhere else.

A device's view is the registry's device with its entities' states and its lease
(``feed.events.DeviceView``):
``GET /api/devices``, every device event, the ``reset`` that starts an event stream
and the fleet's retained state all show this one form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.base.dates import iso_utc
from server.control.registry import Device
from server.feed.events import DeviceView, LeaseView
from server.link.entities import Value
from server.people.leases import Lease, Leases
from server.people.presence import Presence

States = Callable[[str], dict[str, Value]]  # a device's entity states, a copy


def device_view(device: Device, state: dict[str, Value], lease: Lease | None) -> DeviceView:
    held = None if lease is None else LeaseView(lease.holder, iso_utc(lease.since))
    return DeviceView(
        device.id,
        device.name,
        device.entities,
        state,
        device.online,
        iso_utc(device.since),
        held,
    )


def devices(known: list[Device], states: States, leases: Leases) -> list[DeviceView]:
    """Every known device, as sorted as ``known`` is."""
    return [device_view(d, states(d.id), leases.of(d.id)) for d in known]


def snapshot(
    presence: Presence,
    known: list[Device],
    states: States,
    leases: Leases,
    control_off: str | None,
) -> dict[str, Any]:
    """What a ``reset`` event carries: everything a panel shows."""
    return {
        "online": [p.as_json() for p in presence.online()],
        "devices": [v.as_json() for v in devices(known, states, leases)],
        "control_off": control_off,
    }
