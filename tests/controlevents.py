"""A ``ControlEvents`` sink for tests that run a ``ControlChannel`` of their own.

``RecordingEvents`` keeps every call in order (``calls``: the method's name
and its arguments), the device and command events as the JSON the event
stream carries (``events``: ``("device" | "command", dict)``, each device
without a lease: leases are the server's), and each refusal as the
``device_refused`` audit record it becomes (``refused``).
"""

from __future__ import annotations

from typing import Any

from server.control.registry import Device
from server.core.views import device_view
from server.feed.events import CommandEvent, DeviceEvent, DeviceOffline, DeviceOnline, Telemetry


class RecordingEvents:
    """What a control channel told its sink, oldest first."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[dict[str, Any]] = []

    def device_online(self, device: Device) -> None:
        self.calls.append(("device_online", (device,)))
        self._device(DeviceOnline(device_view(device, {}, None)))

    def device_offline(self, device: Device, replaced: bool) -> None:
        self.calls.append(("device_offline", (device, replaced)))
        self._device(DeviceOffline(device_view(device, {}, None), replaced))

    def telemetry(self, device: Device, data: dict[str, Any]) -> None:
        self.calls.append(("telemetry", (device, data)))
        self._device(Telemetry(device_view(device, {}, None), data))

    def _device(self, event: DeviceEvent) -> None:
        self.events.append(("device", event.as_json()))

    def command(self, event: CommandEvent) -> None:
        self.calls.append(("command", (event,)))
        self.events.append(("command", event.as_json()))

    def device_refused(self, device: str | None, addr: str | None, reason: str) -> None:
        self.calls.append(("device_refused", (device, addr, reason)))
        self.refused.append(
            {"type": "device_refused", "device": device, "addr": addr, "reason": reason}
        )
