"""GPIO pins as one device of the reference agent: ``python -m server.agent --gpio CONFIG``.

The config is a small TOML file (README, "GPIO"; ``dist/agents/gpio-example.toml``)::

    [[output]]            # kind: led | relay (a switch) | pwm (a number 0-100 %)
    name = "led"          # the entity's key: 1-32 of a-z 0-9 _, starting with a letter
    kind = "led"
    pin = 17              # BCM number, or any gpiozero pin name: "GPIO17", "BOARD11"
    # safe = false        # what vigil switches it to when the lease holder vanishes

    [[input]]             # kind: button | contact | motion (a binary_sensor)
    name = "button"
    kind = "button"
    pin = 27
    # device_class = "door"

One agent is one vigil device, and every pin is one of its entities
(``server.link.entities``): ``led`` and ``relay`` are a ``switch``
(``true``: on), ``pwm`` a ``number`` from 0 to 100 % in steps of 1 (the
duty cycle), every input a ``binary_sensor``: a ``button`` is ``true``
while pressed (its circuit closed), ``motion`` while motion is seen (device
class ``motion``), a ``contact`` while its circuit is open (a reed switch:
the door is open; device class ``opening``, ``door``, ``window`` or
``garage_door``, whose ``true`` is open in Home Assistant's sense).
Optional keys: ``label`` (what people read; default: the name),
``active_high``, ``safe`` and ``confirm`` for outputs; ``pull_up``,
``bounce_time`` and ``device_class`` for inputs. A command sets one output; its result is that
output's new state. Every telemetry reading is the whole state,
``{name: value}`` of every pin.

Inputs are never polled. gpiozero calls ``when_activated`` and
``when_deactivated`` in its own threads (the pin factory's); those callbacks
only append ``(name, state)`` to a deque and write a byte to a pipe. The
agent's select() loop watches the pipe (``fileno``) and turns each queued
change, in order, into a reading (``changes``), so a press and its release
are two readings even when they arrive in one pass, and only the loop's
thread ever touches the SCTP socket. A commanded output needs no reading:
vigil takes its state from the command's result.

Which gpiozero classes: ``LED`` and ``OutputDevice`` (``active_high =
false`` for active-low relay boards), ``PWMLED``; ``Button`` and
``DigitalInputDevice`` for contacts and motion. Not ``MotionSensor``: it
samples the pin ten times a second in a thread of its own, and a PIR
module's output is already a clean digital signal, so an edge-triggered
``DigitalInputDevice`` gets it at once. The pin factory is gpiozero's
choice (lgpio on a Pi); ``GPIOZERO_PIN_FACTORY=mock`` gives its
``MockFactory``, for tests (``GPIOZERO_MOCK_PIN_CLASS=mockpwmpin`` for
``pwm`` pins).
"""

from __future__ import annotations

import contextlib
import logging
import os
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
    PWMLED,
    BadPinFactory,
    Button,
    Device,
    DigitalInputDevice,
    OutputDevice,
    PinFactoryFallback,
    PinPWMUnsupported,
)

from server.link import entities
from server.link.entities import KEY, KEY_RULE, MAX_ENTITIES, Entity, Kind, Value

log = logging.getLogger(__name__)

MAX_QUEUED = 1024  # changes kept while the loop is busy (or vigil is away); then a resync
PERCENT = (0, 100, 1)  # a pwm pin's number: min, max, step
OPEN = frozenset({"door", "garage_door", "opening", "window"})  # classes whose true is open


@dataclass(frozen=True, slots=True)
class PinKind:
    """What a config ``kind`` is: a direction, a gpiozero class, an entity kind, defaults."""

    output: bool
    make: type[Device]
    entity: Kind
    pull_up: bool = True  # inputs: wired to ground (True) or to 3V3 (False)
    bounce_time: float | None = None  # inputs: seconds gpiozero ignores after an edge
    device_class: str | None = None  # inputs: the binary_sensor's class
    classes: frozenset[str] | None = None  # inputs: the classes it may have; None: any
    inverted: bool = False  # inputs: true while gpiozero says inactive (an open contact)


KINDS = {
    "led": PinKind(output=True, make=LED, entity=Kind.SWITCH),
    "relay": PinKind(output=True, make=OutputDevice, entity=Kind.SWITCH),
    "pwm": PinKind(output=True, make=PWMLED, entity=Kind.NUMBER),
    "button": PinKind(output=False, make=Button, entity=Kind.BINARY_SENSOR, bounce_time=0.05),
    "contact": PinKind(
        output=False,
        make=DigitalInputDevice,
        entity=Kind.BINARY_SENSOR,
        bounce_time=0.05,
        device_class="opening",
        classes=OPEN,
        inverted=True,
    ),
    "motion": PinKind(
        output=False,
        make=DigitalInputDevice,
        entity=Kind.BINARY_SENSOR,
        pull_up=False,
        device_class="motion",
    ),
}
# The optional keys of each section; "label", "safe", "confirm", "device_class" are
# the entity's own fields, checked by server.link.entities as vigil checks the hello.
SECTIONS = {
    "output": ("label", "active_high", "safe", "confirm"),
    "input": ("label", "pull_up", "bounce_time", "device_class"),
}


@dataclass(frozen=True, slots=True)
class PinSpec:
    """One ``[[output]]`` or ``[[input]]`` of the config, checked, and its entity."""

    name: str
    kind: str
    pin: int | str
    entity: Entity
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
    if len(specs) > MAX_ENTITIES:
        raise ValueError(
            f"{source}: {len(specs)} pins, at most {MAX_ENTITIES} (a device's entities)"
        )
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
    if not isinstance(name, str) or not KEY.fullmatch(name):
        raise ValueError(f"name must be {KEY_RULE}, not {name!r}")
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
    device_class = entry.get("device_class")
    if defaults.classes is not None and device_class not in (None, *defaults.classes):
        raise ValueError(
            f"{name}: a {kind}'s device_class is one of {', '.join(sorted(defaults.classes))} "
            f"(true: open), not {device_class!r}; for a circuit that is true when closed "
            "(a float switch: moisture), kind button"
        )
    entity = _entity(name, defaults, entry)
    return PinSpec(name, kind, pin, entity, bounce_time=(bounce or None), **flags)


def _entity(name: str, kind: PinKind, entry: dict[str, Any]) -> Entity:
    """The pin's entity, checked as vigil checks the hello; ValueError naming the key."""
    obj: dict[str, Any] = {"key": name, "kind": kind.entity.value, "label": name}
    if kind.entity is Kind.NUMBER:
        obj |= dict(zip(("min", "max", "step"), PERCENT, strict=True), unit="%")
    if kind.device_class is not None:
        obj["device_class"] = kind.device_class
    obj |= {k: entry[k] for k in ("label", "safe", "confirm", "device_class") if k in entry}
    parsed = entities.parse([obj])
    if isinstance(parsed, str):  # "entities[0] (name): what is wrong"
        raise ValueError(f"{name}: {parsed.partition('): ')[2]}")
    return parsed[0]


class Pins:
    """The pins of a config as one device (the agent's ``Hardware``): see the module header."""

    interval = None  # no periodic readings: inputs are sent when they change

    def __init__(self, specs: Iterable[PinSpec], source: str) -> None:
        specs = tuple(specs)
        self.entities = tuple(s.entity for s in specs)
        self._outputs: dict[str, OutputDevice] = {}
        self._inputs: dict[str, DigitalInputDevice] = {}
        self._inverted = {s.name for s in specs if KINDS[s.kind].inverted}
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
                    active = not kind.inverted  # the state an activation reports
                    dev.when_activated = partial(self._changed, spec.name, active)
                    dev.when_deactivated = partial(self._changed, spec.name, not active)
                    self._inputs[spec.name] = dev
            except BadPinFactory:
                tried = "; ".join(str(w.message) for w in caught)
                raise ValueError(
                    f"no GPIO here: gpiozero has no pin factory ({tried}); on a Pi "
                    "`pip install lgpio` (README, GPIO); for tests GPIOZERO_PIN_FACTORY=mock"
                ) from None
            except PinPWMUnsupported:
                raise ValueError(
                    f"{source}: {spec.describe()}: pin {spec.pin!r}: this pin factory has no "
                    "PWM (gpiozero's mock pins: GPIOZERO_MOCK_PIN_CLASS=mockpwmpin)"
                ) from None
            except Exception as e:  # gpiozero's errors, and its pin library's ("GPIO busy")
                raise ValueError(f"{source}: {spec.describe()}: pin {spec.pin!r}: {e}") from None
        for w in caught:
            if issubclass(w.category, PinFactoryFallback):
                log.info("gpiozero: %s", w.message)
            else:
                log.warning("gpiozero: %s", w.message)

    # -- what the agent's loop calls (server.agent.hardware.Hardware) ---------

    def reading(self) -> dict[str, Value]:
        """Every pin's state, as of the last change handed on."""
        return dict(self._seen)

    def set(self, key: str, value: Value) -> Value:
        """Set output ``key`` to ``value`` (checked against its entity); its state now."""
        out = self._outputs[key]
        if isinstance(out, PWMLED):
            assert isinstance(value, int | float)
            out.value = value / 100
        elif value:
            out.on()
        else:
            out.off()
        self._seen[key] = state = self._state(key, out)
        return state

    def fileno(self) -> int:
        """Readable when ``changes()`` has readings."""
        return self._wake_r

    def changes(self) -> list[dict[str, Value]]:
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

    def _state(self, name: str, dev: Device) -> Value:
        if isinstance(dev, PWMLED):
            return round(dev.value * 100)  # the duty cycle in % (step 1)
        return bool(dev.is_active) != (name in self._inverted)

    def _live(self) -> dict[str, Value]:
        devices = {**self._outputs, **self._inputs}
        return {name: self._state(name, dev) for name, dev in devices.items()}

    # -- gpiozero's threads ---------------------------------------------------

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
