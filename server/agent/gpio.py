"""GPIO pins as one device of the reference agent: ``python -m server.agent --gpio CONFIG``.

The config is a small TOML file (README, "GPIO"; ``dist/agents/gpio-example.toml``)::

    [[output]]            # kind: led | relay; commands "<name> on|off|toggle"
    name = "led"
    kind = "led"
    pin = 17              # BCM number, or any gpiozero pin name: "GPIO17", "BOARD11"

    [[input]]             # kind: button | contact | motion; sent when it changes
    name = "button"
    kind = "button"
    pin = 27

One agent is one vigil device. Its commands are one per output and verb,
``"led on"``, ``"led off"``, ``"led toggle"``, and ``"status"``: the panel
shows one button per command and sends no arguments. Every result and every
telemetry reading is the whole state, ``{name: bool}`` for each output (on)
and input (active: pressed, contact closed, motion seen).

Inputs are never polled. gpiozero calls ``when_activated`` and
``when_deactivated`` in its own threads (the pin factory's); those callbacks
only append ``(name, state)`` to a deque and write a byte to a pipe. The
agent's select() loop watches the pipe (``fileno``) and turns each queued
change, in order, into a reading (``changes``), so a press and its release
are two readings even when they arrive in one pass, and only the loop's
thread ever touches the SCTP socket. A switched output is queued the same
way, so every browser sees it, not only the one that sent the command.

Which gpiozero classes: ``LED`` and ``OutputDevice`` (``active_high =
false`` for active-low relay boards); ``Button`` and ``DigitalInputDevice``
for contacts and motion. Not ``MotionSensor``: it samples the pin ten times
a second in a thread of its own, and a PIR module's output is already a
clean digital signal, so an edge-triggered ``DigitalInputDevice`` gets it at
once. The pin factory is gpiozero's choice (lgpio on a Pi);
``GPIOZERO_PIN_FACTORY=mock`` gives its ``MockFactory``, for tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tomllib
import warnings
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from gpiozero import (
    LED,
    BadPinFactory,
    Button,
    Device,
    DigitalInputDevice,
    OutputDevice,
    PinFactoryFallback,
)

log = logging.getLogger(__name__)

VERBS = ("on", "off", "toggle")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
NAME_RULE = "1-32 characters of A-Z a-z 0-9 _ - (not first: _ -)"
MAX_OUTPUTS = 21  # vigil takes 64 commands from a device: 3 an output, and "status"
MAX_QUEUED = 1024  # changes kept while the loop is busy (or vigil is away); then a resync


@dataclass(frozen=True, slots=True)
class Kind:
    """What a config ``kind`` is: a direction, a gpiozero class and its defaults."""

    output: bool
    make: type[Device]
    pull_up: bool = True  # inputs: wired to ground (True) or to 3V3 (False)
    bounce_time: float | None = None  # inputs: seconds gpiozero ignores after an edge


KINDS = {
    "led": Kind(output=True, make=LED),
    "relay": Kind(output=True, make=OutputDevice),
    "button": Kind(output=False, make=Button, bounce_time=0.05),
    "contact": Kind(output=False, make=DigitalInputDevice, bounce_time=0.05),
    "motion": Kind(output=False, make=DigitalInputDevice, pull_up=False),
}
SECTIONS = {"output": ("active_high",), "input": ("pull_up", "bounce_time")}  # optional keys


@dataclass(frozen=True, slots=True)
class PinSpec:
    """One ``[[output]]`` or ``[[input]]`` of the config, checked."""

    name: str
    kind: str
    pin: int | str
    active_high: bool = True
    pull_up: bool = True
    bounce_time: float | None = None

    @property
    def output(self) -> bool:
        return KINDS[self.kind].output

    def describe(self) -> str:
        return f"{'output' if self.output else 'input'} {self.name}"


def load_config(path: Path) -> tuple[PinSpec, ...]:
    """The pins of GPIO config file ``path``; ValueError with one line naming the file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str) -> tuple[PinSpec, ...]:
    """The pins of a GPIO config; ValueError "SOURCE: what is wrong" for bad input."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: invalid TOML: {e}") from None
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown section {unknown[0]!r} (only [[output]], [[input]])")
    specs: list[PinSpec] = []
    for section in SECTIONS:
        entries = doc.get(section, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(f"{source}: {section} must be tables: [[{section}]]")
        for i, entry in enumerate(entries, 1):
            try:
                specs.append(_entry(section, entry))
            except ValueError as e:
                raise ValueError(f"{source}: [[{section}]] {i}: {e}") from None
    if not specs:
        raise ValueError(f"{source}: no [[output]] or [[input]]: nothing to drive")
    outputs = sum(s.output for s in specs)
    if outputs > MAX_OUTPUTS:
        raise ValueError(f"{source}: {outputs} outputs, at most {MAX_OUTPUTS} (64 commands)")
    seen: dict[str, PinSpec] = {}
    for spec in specs:
        for key in (f"name {spec.name}", f"pin {spec.pin!r}"):
            other = seen.setdefault(key, spec)
            if other is not spec:
                raise ValueError(f"{source}: {spec.describe()}: {key} is also {other.describe()}")
    return tuple(specs)


def _entry(section: str, entry: dict[str, Any]) -> PinSpec:
    unknown = sorted(set(entry) - {"name", "kind", "pin", *SECTIONS[section]})
    if unknown:
        allowed = ", ".join(("name", "kind", "pin", *SECTIONS[section]))
        raise ValueError(f"unknown key {unknown[0]!r} (allowed: {allowed})")
    name, kind, pin = entry.get("name"), entry.get("kind"), entry.get("pin")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"name must be {NAME_RULE}, not {name!r}")
    kinds = [k for k, v in KINDS.items() if v.output == (section == "output")]
    if kind not in kinds:
        hint = f" (an {'input' if section == 'output' else 'output'})" if kind in KINDS else ""
        raise ValueError(f"{name}: kind must be one of {', '.join(kinds)}, not {kind!r}{hint}")
    if isinstance(pin, bool) or not (
        (isinstance(pin, int) and pin >= 0) or (isinstance(pin, str) and pin)
    ):
        raise ValueError(f'{name}: pin must be a GPIO number (17) or a pin name ("GPIO17")')
    defaults = KINDS[kind]
    flags = {}
    for key, default in (("active_high", True), ("pull_up", defaults.pull_up)):
        value = entry.get(key, default)
        if not isinstance(value, bool):
            raise ValueError(f"{name}: {key} must be true or false, not {value!r}")
        flags[key] = value
    bounce = entry.get("bounce_time", defaults.bounce_time)
    if bounce is not None and (
        isinstance(bounce, bool) or not isinstance(bounce, int | float) or not 0 <= bounce <= 1
    ):
        raise ValueError(f"{name}: bounce_time must be seconds from 0 to 1, not {bounce!r}")
    return PinSpec(name, kind, pin, bounce_time=(bounce or None), **flags)


class Pins:
    """The pins of a config as one device (the agent's ``Hardware``): see the module header."""

    interval = None  # no periodic readings: inputs are sent when they change

    def __init__(self, specs: Iterable[PinSpec], source: str) -> None:
        specs = tuple(specs)
        self.commands = (
            *(f"{s.name} {verb}" for s in specs if s.output for verb in VERBS),
            "status",
        )
        self._outputs: dict[str, OutputDevice] = {}
        self._inputs: dict[str, DigitalInputDevice] = {}
        self._queued: deque[tuple[str, bool]] = deque(maxlen=MAX_QUEUED)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            for spec in specs:
                self._open(spec, source)
        except BaseException:
            self.close()
            raise
        self._seen = self._live()

    def _open(self, spec: PinSpec, source: str) -> None:
        kind = KINDS[spec.kind]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if spec.output:
                    out = kind.make(spec.pin, active_high=spec.active_high, initial_value=False)
                    self._outputs[spec.name] = out
                else:
                    dev = kind.make(spec.pin, pull_up=spec.pull_up, bounce_time=spec.bounce_time)
                    dev.when_activated = partial(self._changed, spec.name, True)
                    dev.when_deactivated = partial(self._changed, spec.name, False)
                    self._inputs[spec.name] = dev
            except BadPinFactory:
                tried = "; ".join(str(w.message) for w in caught)
                raise ValueError(
                    f"no GPIO here: gpiozero has no pin factory ({tried}); on a Pi "
                    "`pip install lgpio` (README, GPIO); for tests GPIOZERO_PIN_FACTORY=mock"
                ) from None
            except Exception as e:  # gpiozero's errors, and its pin library's ("GPIO busy")
                raise ValueError(f"{source}: {spec.describe()}: pin {spec.pin!r}: {e}") from None
        for w in caught:
            if issubclass(w.category, PinFactoryFallback):
                log.info("gpiozero: %s", w.message)
            else:
                log.warning("gpiozero: %s", w.message)

    # -- what the agent's loop calls (server.agent.hardware.Hardware) ---------

    def reading(self) -> dict[str, bool]:
        """Every output (on?) and input (active?), as of the last change handed on."""
        return dict(self._seen)

    def run(self, action: str, args: dict[str, Any]) -> dict[str, bool]:
        """Do ``action`` ("<output> on|off|toggle", "status"); the state, or ValueError."""
        name, _, verb = action.rpartition(" ")
        out = self._outputs.get(name)
        if out is not None and verb in VERBS:
            getattr(out, verb)()
            self._seen[name] = bool(out.is_active)
            self._changed(name, self._seen[name])
        elif action != "status":
            raise ValueError(f"unknown action {action!r} (known: {', '.join(self.commands)})")
        return self.reading()

    def fileno(self) -> int:
        """Readable when ``changes()`` has readings."""
        return self._wake_r

    def changes(self) -> list[dict[str, bool]]:
        """One reading per change since the last call, oldest first."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        readings = []
        overflowed = len(self._queued) == MAX_QUEUED
        while self._queued:
            name, state = self._queued.popleft()
            self._seen[name] = state
            readings.append(self.reading())
        if overflowed:  # the oldest changes are lost: read what the pins say now
            self._seen = self._live()
            readings.append(self.reading())
        return readings

    def _live(self) -> dict[str, bool]:
        devices = {**self._outputs, **self._inputs}
        return {name: bool(dev.is_active) for name, dev in devices.items()}

    # -- gpiozero's threads (and run) ----------------------------------------

    def _changed(self, name: str, state: bool) -> None:
        self._queued.append((name, state))  # deque.append is atomic
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"!")

    def close(self) -> None:
        """Release the pins (gpiozero makes them inputs again) and the pipe."""
        for dev in (*self._outputs.values(), *self._inputs.values()):
            dev.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
