"""What a device is made of: the entities its hello declares, and the one check of a value.

A device describes itself as a list of **entities** (ESPHome's and Home
Assistant's model, smaller): each has a stable ``key``, a ``label`` people
read, and a ``kind``:

- controls, which take commands: ``switch`` (true/false, with its state),
  ``button`` (a momentary action: no value, no state), ``number`` (``min``,
  ``max``, optional ``step`` and ``unit``), ``select`` (one of ``options``);
- readings, which only report: ``sensor`` (a number: ``unit``, a
  ``device_class`` such as temperature, a ``state_class``),
  ``binary_sensor`` (true/false: a ``device_class`` such as motion or door),
  ``text_sensor`` (a short text).

A control may declare ``confirm`` (``true``, or the question to ask: the
panel asks before it sends) and ``safe``: the value vigil sends itself when
the operator holding the device's lease is lost, leaves or idles out (a
heater ``false``, a motor speed ``0``; for a button ``true``: pressed).

``Entity.command`` checks the value of a command against the entity before
anything goes to the device; ``Entity.reading`` checks a state the device
reports (telemetry, a result). Both return the value or the rule it breaks,
one line a person can read; ``refusal`` names the device and the entity in
front of it (``pump.speed: 140 is above max 100``).

The wire form is ``as_json`` and ``parse``, shared by vigil and the agents;
``PROTOCOL`` is the version of the hello that carries entities. Pure: no
socket, no clock; the agent imports it (it imports only ``server.link``).
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

PROTOCOL = 2  # a hello says "protocol": 2 and lists its "entities"

Value = bool | int | float | str | None

KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
KEY_RULE = "1-32 characters of a-z 0-9 _, starting with a letter"
MAX_ENTITIES = 32
MAX_LABEL = 64
MAX_UNIT = 16
MAX_OPTIONS = 32
MAX_OPTION = 64
MAX_CONFIRM = 200
MAX_TEXT = 255
MAX_INT = 2**53  # past it, an integer is no longer exact as a float (nor in JavaScript)


class Kind(enum.StrEnum):
    SWITCH = "switch"
    BUTTON = "button"
    NUMBER = "number"
    SELECT = "select"
    SENSOR = "sensor"
    BINARY_SENSOR = "binary_sensor"
    TEXT_SENSOR = "text_sensor"


KINDS = tuple(k.value for k in Kind)
CONTROLS = frozenset({Kind.SWITCH, Kind.BUTTON, Kind.NUMBER, Kind.SELECT})
# Home Assistant's names, so that the fleet can pass them on unchanged.
SENSOR_CLASSES = frozenset(
    {
        "apparent_power",
        "battery",
        "carbon_dioxide",
        "current",
        "distance",
        "duration",
        "energy",
        "frequency",
        "humidity",
        "illuminance",
        "power",
        "power_factor",
        "pressure",
        "signal_strength",
        "speed",
        "temperature",
        "voltage",
        "volume",
        "weight",
    }
)
BINARY_CLASSES = frozenset(
    {
        "battery",
        "connectivity",
        "door",
        "garage_door",
        "gas",
        "heat",
        "light",
        "lock",
        "moisture",
        "motion",
        "occupancy",
        "opening",
        "plug",
        "power",
        "presence",
        "problem",
        "running",
        "safety",
        "smoke",
        "tamper",
        "vibration",
        "window",
    }
)
STATE_CLASSES = frozenset({"measurement", "total", "total_increasing"})
# The fields each kind may carry beyond key, kind and label.
FIELDS: dict[Kind, frozenset[str]] = {
    Kind.SWITCH: frozenset({"confirm", "safe"}),
    Kind.BUTTON: frozenset({"confirm", "safe"}),
    Kind.NUMBER: frozenset({"min", "max", "step", "unit", "confirm", "safe"}),
    Kind.SELECT: frozenset({"options", "confirm", "safe"}),
    Kind.SENSOR: frozenset({"unit", "device_class", "state_class"}),
    Kind.BINARY_SENSOR: frozenset({"device_class"}),
    Kind.TEXT_SENSOR: frozenset(),
}


def shown(value: object) -> str:
    """A value as it was sent: JSON (``"fast"``, ``140``, ``true``), cut at 40 characters."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    return text if len(text) <= 40 else text[:39] + "…"


class Invalid(ValueError):
    """A value an entity cannot take or have; its text is the rule it breaks."""


def _number(value: object) -> int | float:
    """``value`` if it is a finite number (not a boolean); ``Invalid`` if not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{shown(value)} is not a number")
    if isinstance(value, int):
        if abs(value) > MAX_INT:  # JSON's integers have no bound (isfinite would overflow)
            raise Invalid(f"{shown(value)} is too large a number")
        return value
    if not math.isfinite(value):
        raise Invalid(f"{shown(value)} is not a number")
    return value


def _plain(x: float) -> str:
    """A bound as people write it: 100, not 100.0."""
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True, slots=True)
class Entity:
    key: str
    kind: Kind
    label: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    confirm: bool | str = False  # ask before sending: True, or the question
    safe: Value = None  # sent by vigil when the holder vanishes; None: nothing

    @property
    def control(self) -> bool:
        """It takes commands."""
        return self.kind in CONTROLS

    @property
    def stateful(self) -> bool:
        """It has a state (every kind but a button)."""
        return self.kind is not Kind.BUTTON

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "kind": self.kind.value, "label": self.label}
        for name in ("unit", "device_class", "state_class", "min", "max", "step"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.options:
            out["options"] = list(self.options)
        if self.confirm:
            out["confirm"] = self.confirm
        if self.safe is not None:
            out["safe"] = self.safe
        return out

    def command(self, value: object) -> Value:
        """``value`` if this entity may be sent it; ``Invalid`` with the rule it breaks."""
        kind = self.kind
        if not self.control:
            raise Invalid(f"a {kind.value} only reports: it takes no commands")
        if kind is Kind.BUTTON:
            if value is not None and value is not True:
                raise Invalid(
                    f"{shown(value)}: a button takes no value (send null or leave it out)"
                )
            return None
        if kind is Kind.SWITCH:
            if not isinstance(value, bool):
                raise Invalid(f"{shown(value)} is not true or false")
            return value
        if kind is Kind.SELECT:
            if not isinstance(value, str) or value not in self.options:
                raise Invalid(f"{shown(value)} is not one of {', '.join(self.options)}")
            return value
        number = _number(value)
        assert self.min is not None and self.max is not None
        if number < self.min:
            raise Invalid(f"{shown(value)} is below min {_plain(self.min)}")
        if number > self.max:
            raise Invalid(f"{shown(value)} is above max {_plain(self.max)}")
        if self.step is not None:
            steps = (number - self.min) / self.step
            if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
                raise Invalid(
                    f"{shown(value)} is off the step {_plain(self.step)} (from {_plain(self.min)})"
                )
        return number

    def reading(self, value: object) -> Value:
        """``value`` if it can be this entity's state (None: unknown); ``Invalid`` if not."""
        if value is None:
            return None
        kind = self.kind
        if kind is Kind.BUTTON:
            raise Invalid("a button has no state")
        if kind in (Kind.SWITCH, Kind.BINARY_SENSOR):
            if not isinstance(value, bool):
                raise Invalid(f"{shown(value)} is not true or false")
            return value
        if kind in (Kind.NUMBER, Kind.SENSOR):
            return _number(value)
        if kind is Kind.SELECT:
            if not isinstance(value, str) or value not in self.options:
                raise Invalid(f"{shown(value)} is not one of {', '.join(self.options)}")
            return value
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise Invalid(f"{shown(value)} is not a text of at most {MAX_TEXT} characters")
        return value


def refusal(device: str, key: str, rule: str) -> str:
    """The message of a refused command or reading: ``pump.speed: 140 is above max 100``."""
    return f"{device}.{key}: {rule}"


def unknown(device: str, key: object, entities: tuple[Entity, ...]) -> str:
    """The message for a key that names no entity (one a device sent is shown cut short)."""
    name = key if isinstance(key, str) and KEY.fullmatch(key) else shown(key)
    known = ", ".join(e.key for e in entities) or "none"
    return f"{device}.{name}: no such entity ({device} has: {known})"


# -- parsing a hello's entities ------------------------------------------------


def _text(obj: dict[str, Any], name: str, most: int, required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > most:
        raise ValueError(f"{name} must be a non-empty string of at most {most} characters")
    return value


def _bound(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    try:
        return _number(value)
    except Invalid:
        raise ValueError(f"{name} must be a number") from None


def _entity(key: str, obj: dict[str, Any]) -> Entity:
    kind_name = obj.get("kind")
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    kind = Kind(kind_name)
    extra = set(obj) - {"key", "kind", "label"} - FIELDS[kind]
    if extra:
        raise ValueError(f"a {kind.value} has no {', '.join(sorted(extra))}")
    label = _text(obj, "label", MAX_LABEL, required=True)
    assert label is not None
    low, high, step = _bound(obj, "min"), _bound(obj, "max"), _bound(obj, "step")
    if kind is Kind.NUMBER:
        if low is None or high is None or not low < high:
            raise ValueError("a number needs min and max, min < max")
        if step is not None and not step > 0:
            raise ValueError("step must be above 0")
    options: tuple[str, ...] = ()
    if kind is Kind.SELECT:
        raw = obj.get("options")
        if (
            not isinstance(raw, list)
            or not 1 <= len(raw) <= MAX_OPTIONS
            or not all(isinstance(o, str) and 0 < len(o) <= MAX_OPTION for o in raw)
            or len(set(raw)) != len(raw)
        ):
            raise ValueError(
                f"options must be 1-{MAX_OPTIONS} different strings of at most "
                f"{MAX_OPTION} characters"
            )
        options = tuple(raw)
    device_class = _text(obj, "device_class", 32)
    classes = SENSOR_CLASSES if kind is Kind.SENSOR else BINARY_CLASSES
    if device_class is not None and device_class not in classes:
        raise ValueError(f"device_class must be one of {', '.join(sorted(classes))}")
    state_class = _text(obj, "state_class", 32)
    if state_class is not None and state_class not in STATE_CLASSES:
        raise ValueError(f"state_class must be one of {', '.join(sorted(STATE_CLASSES))}")
    confirm = obj.get("confirm", False)
    if not isinstance(confirm, bool) and not (
        isinstance(confirm, str) and 0 < len(confirm) <= MAX_CONFIRM
    ):
        raise ValueError(
            f"confirm must be true, false or a question of at most {MAX_CONFIRM} characters"
        )
    entity = Entity(
        key=key,
        kind=kind,
        label=label,
        unit=_text(obj, "unit", MAX_UNIT),
        device_class=device_class,
        state_class=state_class,
        min=low,
        max=high,
        step=step,
        options=options,
        confirm=confirm,
    )
    safe = obj.get("safe")
    if safe is None:
        return entity
    if kind is Kind.BUTTON:
        if safe is not True:
            raise ValueError("a button's safe is true (pressed when the holder vanishes)")
    else:
        try:
            entity.command(safe)
        except Invalid as e:
            raise ValueError(f"safe: {e}") from None
    return replace(entity, safe=safe)


def parse(raw: object) -> tuple[Entity, ...] | str:
    """A hello's ``entities``, or the error text naming the first one that is wrong."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ENTITIES:
        return f"entities must be a list of 1-{MAX_ENTITIES} objects"
    out: list[Entity] = []
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            return f"entities[{i}] must be an object"
        key = obj.get("key")
        if not isinstance(key, str) or not KEY.fullmatch(key):
            return f"entities[{i}]: key must be {KEY_RULE}"
        if any(e.key == key for e in out):
            return f"entities[{i}]: key {key!r} is used twice"
        try:
            out.append(_entity(key, obj))
        except ValueError as e:
            return f"entities[{i}] ({key}): {e}"
    return tuple(out)
