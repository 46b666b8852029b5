"""What the reference agent drives (``Hardware``), and the simulated ``Lamp``.

Hardware is a set of entities (``server.link.entities``): what the hello
declares, what commands set and what readings report, keyed by the
entity's key. For other hardware, write a class with the members of
``Hardware``; the GPIO pins of a config file are one (``server.agent.gpio.Pins``,
README "GPIO").
"""

from __future__ import annotations

import math
import random
import time
from typing import Protocol

from server.link.entities import Entity, Kind, Value


class Hardware(Protocol):
    """What the agent drives: what it declares, sets, and reports."""

    @property
    def entities(self) -> tuple[Entity, ...]:
        """The entities of the hello (one control or reading each in the panel)."""

    @property
    def interval(self) -> float | None:
        """Seconds between two ``reading()``s sent as telemetry; None: only the first."""

    def set(self, key: str, value: Value) -> Value:
        """Set control ``key`` to ``value`` (the agent checked it against the entity).

        Returns the entity's state now (None for a button), or raises
        ValueError with the error text for the result.
        """

    def reading(self) -> dict[str, Value]:
        """The telemetry now, {entity key: state}: sent once welcomed, then every ``interval``."""

    def fileno(self) -> int | None:
        """A file descriptor readable when ``changes()`` has readings; None if never."""

    def changes(self) -> list[dict[str, Value]]:
        """Readings to send at once, oldest first (after ``fileno()`` was readable)."""


class Lamp:
    """The simulated hardware: a dimmable lamp and a thermometer next to it."""

    entities = (
        Entity("power", Kind.SWITCH, "Power", safe=False),
        Entity("brightness", Kind.NUMBER, "Brightness", min=0, max=100, step=1, unit="%"),
        Entity(
            "temperature",
            Kind.SENSOR,
            "Temperature",
            unit="°C",
            device_class="temperature",
            state_class="measurement",
        ),
    )

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.power = False
        self.brightness: int | float = 100

    def set(self, key: str, value: Value) -> Value:
        """Switch the lamp (``power``) or dim it (``brightness``); the new state."""
        if key == "power":
            self.power = bool(value)
            return self.power
        assert isinstance(value, int | float)  # the agent checked it: 0 .. 100
        self.brightness = value
        return self.brightness

    def reading(self) -> dict[str, Value]:
        return {
            "power": self.power,
            "brightness": self.brightness,
            "temperature": self.temperature(),
        }

    def fileno(self) -> None:
        return None  # it changes only when told to

    def changes(self) -> list[dict[str, Value]]:
        return []

    def temperature(self) -> float:
        # A room that warms up with the lamp's light, plus some sensor noise.
        base = 21.0 + (2.5 * self.brightness / 100 if self.power else 0.0)
        return round(base + 0.3 * math.sin(time.time() / 10) + random.uniform(-0.05, 0.05), 2)
