"""What the reference agent drives (``Hardware``), and the simulated ``Lamp``.

For other hardware, write a class with the members of ``Hardware``; the GPIO
pins of a config file are one (``server.agent.gpio.Pins``, README "GPIO").
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Protocol


class Hardware(Protocol):
    """What the agent drives: what it announces, does, and reports."""

    @property
    def commands(self) -> tuple[str, ...]:
        """The actions of the hello (one button each in the panel)."""

    @property
    def interval(self) -> float | None:
        """Seconds between two ``reading()``s sent as telemetry; None: only the first."""

    def run(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Do ``action``; return the result or raise ValueError for the error text."""

    def reading(self) -> dict[str, Any]:
        """The telemetry now: sent once welcomed, then every ``interval``."""

    def fileno(self) -> int | None:
        """A file descriptor readable when ``changes()`` has readings; None if never."""

    def changes(self) -> list[dict[str, Any]]:
        """Readings to send at once, oldest first (after ``fileno()`` was readable)."""


class Lamp:
    """The simulated hardware: a lamp and a thermometer next to it."""

    commands = ("on", "off", "toggle", "status")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.on = False

    def run(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Do ``action``; return the result or raise ValueError for the error text."""
        if action == "on":
            self.on = True
        elif action == "off":
            self.on = False
        elif action == "toggle":
            self.on = not self.on
        elif action != "status":
            raise ValueError(f"unknown action {action!r}")
        return self.reading()

    def reading(self) -> dict[str, Any]:
        return {"on": self.on, "temperature": self.temperature()}

    def fileno(self) -> None:
        return None  # it changes only when told to

    def changes(self) -> list[dict[str, Any]]:
        return []

    def temperature(self) -> float:
        # A room that warms up while the lamp is on, plus some sensor noise.
        base = 23.5 if self.on else 21.0
        return round(base + 0.3 * math.sin(time.time() / 10) + random.uniform(-0.05, 0.05), 2)
