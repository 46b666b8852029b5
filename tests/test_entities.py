"""server.link.entities: the one check of a value, and every rule of a hello's entities.

Each refusal is asserted word for word: it is the line an operator reads in
the panel (a command) or a device author reads in the agent's log (a hello).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from server.link.entities import (
    MAX_ENTITIES,
    Entity,
    Invalid,
    Kind,
    parse,
    refusal,
    unknown,
)


def entity(**fields: Any) -> Entity:
    """One entity as a hello declares it (key "x", label "X" unless given)."""
    parsed = parse([{"key": "x", "label": "X", **fields}])
    assert not isinstance(parsed, str), parsed
    return parsed[0]


SWITCH = entity(kind="switch")
BUTTON = entity(kind="button")
NUMBER = entity(kind="number", min=0, max=100, step=1)
HALVES = entity(kind="number", min=0, max=10, step=0.5)
TENTHS = entity(kind="number", min=0, max=1, step=0.1)
ODD = entity(kind="number", min=1, max=9, step=2)
FREE = entity(kind="number", min=-0.5, max=2.5)  # no step: any number in range
SELECT = entity(kind="select", options=["slow", "fast"])
SENSOR = entity(kind="sensor")
BINARY = entity(kind="binary_sensor")
TEXT = entity(kind="text_sensor")


# -- Entity.command: what an operator may send ------------------------------------


@pytest.mark.parametrize(
    ("target", "value", "sent"),
    [
        (SWITCH, True, True),
        (SWITCH, False, False),
        (BUTTON, None, None),
        (BUTTON, True, None),  # "pressed": sent as null
        (NUMBER, 0, 0),
        (NUMBER, 100, 100),
        (NUMBER, 40.0, 40.0),
        (HALVES, 2.5, 2.5),
        (TENTHS, 0.3, 0.3),  # 0.3 / 0.1 is 2.9999999999999996: still on the step
        (TENTHS, 0.7, 0.7),
        (ODD, 7, 7),  # the step counts from min
        (FREE, -0.5, -0.5),
        (FREE, 1.2345, 1.2345),
        (SELECT, "fast", "fast"),
    ],
)
def test_command_accepts(target: Entity, value: object, sent: object) -> None:
    assert target.command(value) == sent


@pytest.mark.parametrize(
    ("target", "value", "rule"),
    [
        (SWITCH, 1, "1 is not true or false"),
        (SWITCH, "on", '"on" is not true or false'),
        (SWITCH, None, "null is not true or false"),
        (NUMBER, "40", '"40" is not a number'),
        (NUMBER, None, "null is not a number"),
        (NUMBER, [40], "[40] is not a number"),
        (NUMBER, math.nan, "NaN is not a number"),
        (NUMBER, math.inf, "Infinity is not a number"),
        (NUMBER, -math.inf, "-Infinity is not a number"),
        (NUMBER, True, "true is not a number"),
        (NUMBER, -1, "-1 is below min 0"),
        (NUMBER, 140, "140 is above max 100"),
        (NUMBER, 100.5, "100.5 is above max 100"),
        (NUMBER, 2.5, "2.5 is off the step 1 (from 0)"),
        (HALVES, 0.25, "0.25 is off the step 0.5 (from 0)"),
        (TENTHS, 0.35, "0.35 is off the step 0.1 (from 0)"),
        (ODD, 2, "2 is off the step 2 (from 1)"),
        (FREE, -1, "-1 is below min -0.5"),
        (FREE, 3, "3 is above max 2.5"),
        (SELECT, "turbo", '"turbo" is not one of slow, fast'),
        (SELECT, "Fast", '"Fast" is not one of slow, fast'),
        (SELECT, 1, "1 is not one of slow, fast"),
        (BUTTON, 1, "1: a button takes no value (send null or leave it out)"),
        (BUTTON, False, "false: a button takes no value (send null or leave it out)"),
        (BUTTON, "go", '"go": a button takes no value (send null or leave it out)'),
        (SENSOR, 21.5, "a sensor only reports: it takes no commands"),
        (BINARY, True, "a binary_sensor only reports: it takes no commands"),
        (TEXT, "hi", "a text_sensor only reports: it takes no commands"),
    ],
)
def test_command_refusals(target: Entity, value: object, rule: str) -> None:
    with pytest.raises(Invalid) as refused:
        target.command(value)
    assert str(refused.value) == rule


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(Invalid) as refused:
        SELECT.command("x" * 100)
    assert str(refused.value) == '"' + "x" * 38 + "… is not one of slow, fast"


def test_refusal_names_the_device_and_the_entity() -> None:
    speed = parse([{"key": "speed", "kind": "number", "label": "Speed", "min": 0, "max": 100}])
    assert not isinstance(speed, str)
    with pytest.raises(Invalid) as refused:
        speed[0].command(140)
    assert refusal("pump", "speed", str(refused.value)) == "pump.speed: 140 is above max 100"


def test_unknown_lists_the_keys_the_device_has() -> None:
    lamp = (replace(SWITCH, key="power"), replace(NUMBER, key="brightness"))
    assert unknown("lamp-1", "foo", lamp) == (
        "lamp-1.foo: no such entity (lamp-1 has: power, brightness)"
    )
    assert unknown("lamp-1", "foo", ()) == "lamp-1.foo: no such entity (lamp-1 has: none)"


# -- Entity.reading: what a device may report ------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        (SWITCH, True),
        (BINARY, False),
        (NUMBER, 140),  # a reading is not a command: out of range is still a state
        (NUMBER, 2.5),
        (SENSOR, -40.25),
        (SELECT, "slow"),
        (TEXT, ""),
        (TEXT, "ü" * 255),
    ],
)
def test_reading_accepts(source: Entity, value: object) -> None:
    assert source.reading(value) == value


@pytest.mark.parametrize("source", [SWITCH, BUTTON, NUMBER, SELECT, SENSOR, BINARY, TEXT])
def test_a_null_reading_is_unknown(source: Entity) -> None:
    assert source.reading(None) is None


@pytest.mark.parametrize(
    ("source", "value", "rule"),
    [
        (BUTTON, True, "a button has no state"),
        (SWITCH, 1, "1 is not true or false"),
        (BINARY, "open", '"open" is not true or false'),
        (NUMBER, "40", '"40" is not a number'),
        (NUMBER, True, "true is not a number"),
        (SENSOR, math.nan, "NaN is not a number"),
        (SENSOR, math.inf, "Infinity is not a number"),
        (SENSOR, {"t": 1}, '{"t": 1} is not a number'),
        (SELECT, "turbo", '"turbo" is not one of slow, fast'),
        (TEXT, 5, "5 is not a text of at most 255 characters"),
        (TEXT, "a" * 256, '"' + "a" * 38 + "… is not a text of at most 255 characters"),
    ],
)
def test_reading_refusals(source: Entity, value: object, rule: str) -> None:
    with pytest.raises(Invalid) as refused:
        source.reading(value)
    assert str(refused.value) == rule


# -- parse: a hello's entities ------------------------------------------------------


LAMP = [
    {"key": "power", "kind": "switch", "label": "Power", "safe": False, "confirm": True},
    {"key": "bell", "kind": "button", "label": "Bell", "safe": True},
    {
        "key": "brightness",
        "kind": "number",
        "label": "Brightness",
        "min": 0,
        "max": 100,
        "step": 1,
        "unit": "%",
        "safe": 0,
        "confirm": "Really change the brightness?",
    },
    {"key": "mode", "kind": "select", "label": "Mode", "options": ["eco", "boost"], "safe": "eco"},
    {
        "key": "temperature",
        "kind": "sensor",
        "label": "Temperature",
        "unit": "°C",
        "device_class": "temperature",
        "state_class": "measurement",
    },
    {"key": "door", "kind": "binary_sensor", "label": "Door", "device_class": "door"},
    {"key": "firmware", "kind": "text_sensor", "label": "Firmware"},
]


def test_parse_reads_every_kind_and_as_json_writes_it_back() -> None:
    parsed = parse(LAMP)
    assert not isinstance(parsed, str), parsed
    assert [e.kind for e in parsed] == list(Kind)
    power, bell, brightness, mode, temperature, door, _ = parsed
    assert (power.safe, power.confirm, power.control, power.stateful) == (False, True, True, True)
    assert (bell.safe, bell.stateful) == (True, False)
    assert (brightness.min, brightness.max, brightness.step, brightness.unit) == (0, 100, 1, "%")
    assert brightness.confirm == "Really change the brightness?" and brightness.safe == 0
    assert (mode.options, mode.safe) == (("eco", "boost"), "eco")
    assert (temperature.device_class, temperature.state_class) == ("temperature", "measurement")
    assert not temperature.control and door.device_class == "door"
    assert [e.as_json() for e in parsed] == LAMP  # the wire form, unchanged
    assert parse([e.as_json() for e in parsed]) == parsed


def test_as_json_leaves_out_what_was_not_declared() -> None:
    assert entity(kind="switch", confirm=False, safe=None).as_json() == {
        "key": "x",
        "kind": "switch",
        "label": "X",
    }


KINDS = "switch, button, number, select, sensor, binary_sensor, text_sensor"
KEY = "key must be 1-32 characters of a-z 0-9 _, starting with a letter"
LIST = f"entities must be a list of 1-{MAX_ENTITIES} objects"
LABEL = "label must be a non-empty string of at most 64 characters"
NUMBER_BOUNDS = "a number needs min and max, min < max"
OPTIONS = "options must be 1-32 different strings of at most 64 characters"
SENSOR_CLASSES = (
    "device_class must be one of apparent_power, battery, carbon_dioxide, current, "
    "distance, duration, energy, frequency, humidity, illuminance, power, power_factor, "
    "pressure, signal_strength, speed, temperature, voltage, volume, weight"
)
BINARY_CLASSES = (
    "device_class must be one of battery, connectivity, door, garage_door, gas, heat, "
    "light, lock, moisture, motion, occupancy, opening, plug, power, presence, problem, "
    "running, safety, smoke, tamper, vibration, window"
)
CONFIRM = "confirm must be true, false or a question of at most 200 characters"


def one(**fields: Any) -> list[dict[str, Any]]:
    return [{"key": "x", "label": "X", **fields}]


def num(**fields: Any) -> list[dict[str, Any]]:
    return one(kind="number", **({"min": 0, "max": 100} | fields))


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (None, LIST),
        ({"key": "x"}, LIST),
        ([], LIST),
        ([{"key": f"k{i}", "kind": "switch", "label": "K"} for i in range(33)], LIST),
        (["power"], "entities[0] must be an object"),
        ([{"kind": "switch", "label": "X"}], f"entities[0]: {KEY}"),
        (
            [*one(kind="switch"), {"key": "Power", "kind": "switch", "label": "P"}],
            f"entities[1]: {KEY}",
        ),
        ([{"key": "1a", "kind": "switch", "label": "X"}], f"entities[0]: {KEY}"),
        ([{"key": "_a", "kind": "switch", "label": "X"}], f"entities[0]: {KEY}"),
        ([{"key": "a-b", "kind": "switch", "label": "X"}], f"entities[0]: {KEY}"),
        ([{"key": "a" * 33, "kind": "switch", "label": "X"}], f"entities[0]: {KEY}"),
        ([{"key": 7, "kind": "switch", "label": "X"}], f"entities[0]: {KEY}"),
        (one(kind="switch") + one(kind="sensor"), "entities[1]: key 'x' is used twice"),
        (one(), f"entities[0] (x): kind must be one of {KINDS}"),
        (one(kind="light"), f"entities[0] (x): kind must be one of {KINDS}"),
        (one(kind="Switch"), f"entities[0] (x): kind must be one of {KINDS}"),
        (one(kind="switch", min=0), "entities[0] (x): a switch has no min"),
        (one(kind="switch", options=["a"]), "entities[0] (x): a switch has no options"),
        (one(kind="button", unit="s"), "entities[0] (x): a button has no unit"),
        (num(colour="red"), "entities[0] (x): a number has no colour"),
        (one(kind="select", options=["a"], unit="s"), "entities[0] (x): a select has no unit"),
        (one(kind="sensor", safe=0), "entities[0] (x): a sensor has no safe"),
        (one(kind="sensor", confirm=True), "entities[0] (x): a sensor has no confirm"),
        (one(kind="binary_sensor", unit="s"), "entities[0] (x): a binary_sensor has no unit"),
        (
            one(kind="text_sensor", unit="s", device_class="power"),
            "entities[0] (x): a text_sensor has no device_class, unit",
        ),
        ([{"key": "x", "kind": "switch"}], f"entities[0] (x): {LABEL}"),
        (one(kind="switch", label=""), f"entities[0] (x): {LABEL}"),
        (one(kind="switch", label="L" * 65), f"entities[0] (x): {LABEL}"),
        (one(kind="switch", label=5), f"entities[0] (x): {LABEL}"),
        (one(kind="number"), f"entities[0] (x): {NUMBER_BOUNDS}"),
        (one(kind="number", min=0), f"entities[0] (x): {NUMBER_BOUNDS}"),
        (one(kind="number", max=100), f"entities[0] (x): {NUMBER_BOUNDS}"),
        (num(min=100), f"entities[0] (x): {NUMBER_BOUNDS}"),
        (num(min=101), f"entities[0] (x): {NUMBER_BOUNDS}"),
        (num(min="0"), "entities[0] (x): min must be a number"),
        (num(max=True), "entities[0] (x): max must be a number"),
        (num(max=math.inf), "entities[0] (x): max must be a number"),
        (num(step=0), "entities[0] (x): step must be above 0"),
        (num(step=-1), "entities[0] (x): step must be above 0"),
        (num(step="1"), "entities[0] (x): step must be a number"),
        (
            num(unit="u" * 17),
            "entities[0] (x): unit must be a non-empty string of at most 16 characters",
        ),
        (num(unit=""), "entities[0] (x): unit must be a non-empty string of at most 16 characters"),
        (one(kind="select"), f"entities[0] (x): {OPTIONS}"),
        (one(kind="select", options=[]), f"entities[0] (x): {OPTIONS}"),
        (one(kind="select", options="a,b"), f"entities[0] (x): {OPTIONS}"),
        (one(kind="select", options=["a", "a"]), f"entities[0] (x): {OPTIONS}"),
        (one(kind="select", options=["a", ""]), f"entities[0] (x): {OPTIONS}"),
        (one(kind="select", options=["a", 1]), f"entities[0] (x): {OPTIONS}"),
        (one(kind="select", options=["o" * 65]), f"entities[0] (x): {OPTIONS}"),
        (one(kind="select", options=[f"o{i}" for i in range(33)]), f"entities[0] (x): {OPTIONS}"),
        (one(kind="sensor", device_class="motion"), f"entities[0] (x): {SENSOR_CLASSES}"),
        (one(kind="sensor", device_class="Temperature"), f"entities[0] (x): {SENSOR_CLASSES}"),
        (
            one(kind="binary_sensor", device_class="temperature"),
            f"entities[0] (x): {BINARY_CLASSES}",
        ),
        (
            one(kind="sensor", device_class="t" * 33),
            "entities[0] (x): device_class must be a non-empty string of at most 32 characters",
        ),
        (
            one(kind="sensor", state_class="average"),
            "entities[0] (x): state_class must be one of measurement, total, total_increasing",
        ),
        (one(kind="switch", confirm=""), f"entities[0] (x): {CONFIRM}"),
        (one(kind="switch", confirm=1), f"entities[0] (x): {CONFIRM}"),
        (one(kind="switch", confirm="?" * 201), f"entities[0] (x): {CONFIRM}"),
        (one(kind="switch", safe="off"), 'entities[0] (x): safe: "off" is not true or false'),
        (num(safe=140), "entities[0] (x): safe: 140 is above max 100"),
        (num(step=10, safe=5), "entities[0] (x): safe: 5 is off the step 10 (from 0)"),
        (
            one(kind="select", options=["eco"], safe="off"),
            'entities[0] (x): safe: "off" is not one of eco',
        ),
        (
            one(kind="button", safe=False),
            "entities[0] (x): a button's safe is true (pressed when the holder vanishes)",
        ),
        (
            one(kind="button", safe=1),
            "entities[0] (x): a button's safe is true (pressed when the holder vanishes)",
        ),
    ],
)
def test_parse_refusals(raw: object, error: str) -> None:
    assert parse(raw) == error


def test_parse_names_the_first_wrong_entity_by_its_place_and_key() -> None:
    raw = [*LAMP, {"key": "speed", "kind": "number", "label": "Speed", "min": 5, "max": 5}]
    assert parse(raw) == f"entities[7] (speed): {NUMBER_BOUNDS}"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"kind": "switch", "confirm": "Switch the heater off?"}, "Switch the heater off?"),
        ({"kind": "switch", "confirm": "?" * 200}, "?" * 200),
        ({"kind": "button", "confirm": True}, True),
        ({"kind": "number", "min": 0, "max": 1, "confirm": False}, False),
    ],
)
def test_confirm_is_true_or_a_question(fields: dict[str, Any], expected: bool | str) -> None:
    assert entity(**fields).confirm == expected


def test_at_most_32_entities_and_32_characters_of_key() -> None:
    most = [{"key": f"k{i}", "kind": "switch", "label": "K"} for i in range(MAX_ENTITIES)]
    most[0]["key"] = "a" * 32
    parsed = parse(most)
    assert not isinstance(parsed, str) and len(parsed) == 32
