"""A device agent in this process: the control channel's message-level seam, no SCTP.

``FakeDevice`` (``App.device(...)`` in tests/testclient.py) is what
``ControlChannel`` sees of an agent after its proven hello, through public
members only: it comes online with ``admit_proven``, answers and sends
telemetry with ``receive``, and is lost with ``association_lost``. What the
channel sends reaches it through ``FakeLink``, the channel's transport while
fake devices are on it (``ControlChannel.attach``), which hands each message
to the device of its association. tests/sctp runs the real agent over
kernel SCTP.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

from server.agent.hardware import Lamp
from server.control.channel import ControlChannel
from server.link import codec, entities
from server.link.codec import Command, Hello, Result, Telemetry
from server.link.entities import Entity, Value

if TYPE_CHECKING:
    from tests.testclient import App


def described(*declared: dict[str, Any]) -> tuple[Entity, ...]:
    """Entities as a hello declares them (``server.link.entities.parse``)."""
    parsed = entities.parse(list(declared))
    assert not isinstance(parsed, str), parsed
    return parsed


# What the reference agent's simulated lamp is made of: power (safe: off), brightness,
# temperature.
LAMP = Lamp.entities


class FakeLink:
    """The transport of a channel whose devices are ``FakeDevice``s: one per channel."""

    def __init__(self, channel: ControlChannel) -> None:
        self.devices: dict[int, FakeDevice] = {}
        channel.attach(self)

    @classmethod
    def of(cls, channel: ControlChannel) -> FakeLink:
        """The channel's fake link, attached now if it has none yet."""
        link = channel.transport
        return link if isinstance(link, FakeLink) else cls(channel)

    def send(self, assoc: int, msg: codec.FromServer) -> None:
        device = self.devices.get(assoc)
        if device is None:
            raise OSError(f"no fake device on association {assoc}")
        device.deliver(msg)

    def abort(self, assoc: int) -> None:
        del self.devices[assoc]


class FakeDevice:
    """A device agent as ``ControlChannel`` sees it after its proven hello.

    It answers each command ``ok`` on the next loop pass with the value sent as
    the entity's state, as a quick device would, unless made with
    ``answers=False``: then the test calls ``answer``.
    """

    _assocs = itertools.count(1)

    def __init__(
        self, app: App, device_id: str, described: tuple[Entity, ...], answers: bool = True
    ) -> None:
        self.app = app
        self.id = device_id
        self.assoc = next(self._assocs)
        self.answers = answers
        self.received: list[dict[str, Any]] = []  # what vigil sent this device, as JSON
        self.channel = app.server.control
        FakeLink.of(self.channel).devices[self.assoc] = self
        self.channel.admit_proven(self.assoc, Hello(device_id, device_id, described))
        app.pump()

    @property
    def commands(self) -> list[tuple[str, Value]]:
        """The entity and value of each command vigil sent, oldest first."""
        return [(m["entity"], m["value"]) for m in self.received if m["type"] == "command"]

    def deliver(self, msg: codec.FromServer) -> None:
        """A message from vigil (``FakeLink``): kept as its JSON; a command answered soon."""
        self.received.append(json.loads(codec.encode(msg)))
        if self.answers and isinstance(msg, Command):
            result = Result(msg.id, True, msg.value)
            self.app.loop.call_later(0, lambda: self.channel.receive(self.assoc, result))

    def answer(self, ok: bool = True, state: Value = None) -> None:
        """Answer the newest command vigil sent (``state``: the state it reports)."""
        command = [m for m in self.received if m["type"] == "command"][-1]
        error = None if ok else "it failed"
        self.channel.receive(self.assoc, Result(command["id"], ok, state, error))
        self.app.pump()

    def telemetry(self, data: dict[str, Any]) -> None:
        self.channel.receive(self.assoc, Telemetry(data))
        self.app.pump()

    def lose(self) -> None:
        """The association is lost (COMM_LOST)."""
        self.channel.association_lost(self.assoc, "lost")
        self.app.pump()
