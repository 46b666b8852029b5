"""The GPIO agent's pins (server/agent/gpio.py) on gpiozero's mock pins, its config, its CLI;
the reference agent's answer to a command (``Agent.command``) and its simulated ``Lamp``.

End to end through vigil over real SCTP: tests/sctp/test_gpio_e2e.py.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from server.agent.gpio import MAX_QUEUED, Pins, load_config, parse_config
from server.agent.hardware import Hardware, Lamp
from server.agent.run import Agent
from server.link import entities
from server.link.codec import Command, Result
from server.link.entities import Value
from tests.mockagent import serve_mock_pins
from tests.mockpins import MockPins
from tests.support import ROOT

EXAMPLE = ROOT / "dist" / "agents" / "gpio-example.toml"
PINS = """
[[output]]
name = "led"
kind = "led"
pin = 17

[[output]]
name = "relay1"
kind = "relay"
pin = 22
active_high = false
safe = false
label = "Heater"

[[output]]
name = "dimmer"
kind = "pwm"
pin = 18

[[input]]
name = "button"
kind = "button"
pin = 27
"""
OFF = {"led": False, "relay1": False, "dimmer": 0, "button": False}


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """gpiozero's mock pins, PWM-capable, in this process (a Raspberry Pi 3B's header)."""
    saved = Device.pin_factory
    Device.pin_factory = mock = MockFactory(pin_class=MockPWMPin)
    yield mock
    mock.reset()
    Device.pin_factory = saved


@pytest.fixture
def pins(factory: MockFactory) -> Iterator[Pins]:
    p = Pins(parse_config(PINS, "gpio.toml"), "gpio.toml")
    yield p
    p.close()


def changes_within(p: Pins, timeout: float = 5) -> list[dict[str, Value]]:
    """What the agent's loop would send once the pins' pipe is readable."""
    assert select.select([p.fileno()], [], [], timeout)[0], "the pins never woke the loop"
    return p.changes()


def command(hw: Hardware, key: str, value: Value, device: str = "g1") -> Result:
    """What the agent answers vigil's command ``c1`` to set ``key`` to ``value``."""
    agent = Agent(argparse.Namespace(name=device), b"", hw)
    return agent.command(Command("c1", key, value, "alice"))


def hello_entities(p: Pins) -> list[dict[str, object]]:
    """The entities as the hello carries them, read back as vigil reads them."""
    wire = [e.as_json() for e in p.entities]
    assert entities.parse(wire) == p.entities  # vigil takes the hello as it is
    return wire


def test_the_example_config_and_every_key_it_mentions() -> None:
    specs = load_config(EXAMPLE)
    assert [(s.name, s.kind, s.pin, s.bounce_time) for s in specs] == [
        ("led", "led", 17, None),
        ("button", "button", 27, 0.05),
    ]
    # its commented entries and keys are real: uncommented, they parse too
    text = re.sub(r"(?m)^# (\[\[|\w+ = )", r"\1", EXAMPLE.read_text())
    every = parse_config(text, "example")
    assert [(s.name, s.kind, s.pin) for s in every] == [
        ("led", "led", 17),
        ("heater", "relay", 22),
        ("dimmer", "pwm", 18),
        ("button", "button", 27),
        ("door", "contact", 23),
        ("pir", "motion", 24),
    ]
    assert [s.name for s in every if not s.active_high] == ["heater"]
    assert [s.name for s in every if not s.output and not s.pull_up] == ["pir"]
    assert [s.entity.as_json() for s in every] == [
        {"key": "led", "kind": "switch", "label": "Porch light"},
        {
            "key": "heater",
            "kind": "switch",
            "label": "heater",
            "confirm": "Switch the heater?",
            "safe": False,
        },
        {
            "key": "dimmer",
            "kind": "number",
            "label": "dimmer",
            "unit": "%",
            "min": 0,
            "max": 100,
            "step": 1,
            "safe": 0,
        },
        {"key": "button", "kind": "binary_sensor", "label": "button"},
        {"key": "door", "kind": "binary_sensor", "label": "door", "device_class": "door"},
        {"key": "pir", "kind": "binary_sensor", "label": "pir", "device_class": "motion"},
    ]


LED = "[[output]]\nname = 'led'\nkind = 'led'\npin = 17\n"
RELAY = "[[output]]\nname = 'r'\nkind = 'relay'\npin = 22\n"
PWM = "[[output]]\nname = 'dim'\nkind = 'pwm'\npin = 18\n"
CONTACT = "[[input]]\nname = 'door'\nkind = 'contact'\npin = 23\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[[output]\n", "gpio.toml: invalid TOML: "),
        ("[[outputs]]\nname = 'a'\n", "gpio.toml: unknown section 'outputs' (only [[output]]"),
        ("output = 1\n", "gpio.toml: output must be tables: [[output]]"),
        ("", "gpio.toml: no [[output]] or [[input]]: nothing to drive"),
        (
            LED + "colour = 'red'\n",
            "[[output]] 1: unknown key 'colour' "
            "(allowed: name, kind, pin, label, active_high, safe, confirm)",
        ),
        (
            "[[input]]\nname = 'b'\nkind = 'button'\npin = 27\nactive_high = true\n",
            "unknown key 'active_high' "
            "(allowed: name, kind, pin, label, pull_up, bounce_time, device_class)",
        ),
        (CONTACT + "safe = false\n", "unknown key 'safe' (allowed: name, kind, pin, label,"),
        (
            "[[output]]\nname = 'my led'\nkind = 'led'\npin = 17\n",
            "name must be 1-32 characters of a-z 0-9 _, starting with a letter, not 'my led'",
        ),
        ("[[output]]\nname = 'LED'\nkind = 'led'\npin = 17\n", "name must be 1-32 characters"),
        ("[[output]]\nkind = 'led'\npin = 17\n", "name must be 1-32 characters of a-z"),
        (
            "[[output]]\nname = 'led'\nkind = 'lamp'\npin = 17\n",
            "[[output]] 1: led: kind must be one of led, relay, pwm, not 'lamp'",
        ),
        (
            "[[output]]\nname = 'b'\nkind = 'button'\npin = 27\n",
            "b: kind must be one of led, relay, pwm, not 'button' (an input)",
        ),
        (
            "[[input]]\nname = 'r'\nkind = 'relay'\npin = 27\n",
            "r: kind must be one of button, contact, motion, not 'relay' (an output)",
        ),
        ("[[output]]\nname = 'led'\nkind = 'led'\n", "led: pin must be a GPIO number (17)"),
        ("[[output]]\nname = 'led'\nkind = 'led'\npin = -1\n", "led: pin must be a GPIO number"),
        ("[[output]]\nname = 'led'\nkind = 'led'\npin = true\n", "led: pin must be a GPIO number"),
        (RELAY + "active_high = 'no'\n", "r: active_high must be true or false, not 'no'"),
        (
            "[[input]]\nname = 'b'\nkind = 'button'\npin = 27\nbounce_time = 5\n",
            "b: bounce_time must be seconds from 0 to 1, not 5",
        ),
        (RELAY + "safe = 'off'\n", '[[output]] 1: r: safe: "off" is not true or false'),
        (PWM + "safe = 140\n", "dim: safe: 140 is above max 100"),
        (PWM + "safe = 2.5\n", "dim: safe: 2.5 is off the step 1 (from 0)"),
        (PWM + "safe = true\n", "dim: safe: true is not a number"),
        (RELAY + "confirm = ''\n", "r: confirm must be true, false or a question of at most 200"),
        (RELAY + f"label = '{'x' * 65}'\n", "r: label must be a non-empty string of at most 64"),
        (
            "[[input]]\nname = 'b'\nkind = 'button'\npin = 27\ndevice_class = 'doorbell'\n",
            "b: device_class must be one of battery,",
        ),
        (
            CONTACT + "device_class = 'moisture'\n",
            "door: a contact's device_class is one of door, garage_door, opening, window "
            "(true: open), not 'moisture'; for a circuit that is true when closed "
            "(a float switch: moisture), kind button",
        ),
        (
            LED + "[[input]]\nname = 'led'\nkind = 'button'\npin = 27\n",
            "gpio.toml: input led: name led is also output led",
        ),
        (
            LED + "[[input]]\nname = 'b'\nkind = 'button'\npin = 17\n",
            "gpio.toml: input b: pin 17 is also output led",
        ),
        (
            "".join(f"[[output]]\nname = 'o{i}'\nkind = 'led'\npin = {i}\n" for i in range(33)),
            "gpio.toml: 33 pins, at most 32 (a device's entities)",
        ),
    ],
)
def test_config_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_config(text, "gpio.toml")
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.toml: cannot read: No such file"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("pin", "other", "error"),
    [
        (99, None, "output led: pin 99: 99 is not a valid pin name"),
        ('"GPIO99"', None, "output led: pin 'GPIO99': GPIO99 is not a valid pin name"),
        # the same pin by two names: gpiozero knows the header
        (17, '"BOARD11"', "input b: pin 'BOARD11': pin GPIO17 is already in use"),
    ],
)
def test_pins_gpiozero_refuses(
    factory: MockFactory, pin: object, other: str | None, error: str
) -> None:
    text = f"[[output]]\nname = 'led'\nkind = 'led'\npin = {pin}\n"
    if other:
        text += f"[[input]]\nname = 'b'\nkind = 'button'\npin = {other}\n"
    with pytest.raises(ValueError, match=re.escape(f"gpio.toml: {error}")):
        Pins(parse_config(text, "gpio.toml"), "gpio.toml")
    # what was opened before the error is released again
    Pins(parse_config("[[output]]\nname = 'a'\nkind = 'led'\npin = 17\n", "x"), "x").close()


def test_the_hello_declares_every_pin_with_its_safe_value(pins: Pins) -> None:
    assert pins.interval is None
    assert hello_entities(pins) == [
        {"key": "led", "kind": "switch", "label": "led"},
        {"key": "relay1", "kind": "switch", "label": "Heater", "safe": False},
        {
            "key": "dimmer",
            "kind": "number",
            "label": "dimmer",
            "unit": "%",
            "min": 0,
            "max": 100,
            "step": 1,
        },
        {"key": "button", "kind": "binary_sensor", "label": "button"},
    ]


def test_commands_set_the_pins(pins: Pins, factory: MockFactory) -> None:
    led, relay, dimmer = factory.pin(17), factory.pin(22), factory.pin(18)
    assert pins.reading() == OFF
    assert (led.state, relay.state, dimmer.state) == (0, 1, 0)  # the relay board is active-low
    assert command(pins, "led", True) == Result("c1", True, state=True) and led.state == 1
    assert command(pins, "relay1", True).state is True and relay.state == 0
    assert command(pins, "dimmer", 40) == Result("c1", True, state=40)
    assert dimmer.state == pytest.approx(0.4)  # the duty cycle: high 40 % of the time
    assert command(pins, "dimmer", 57).state == 57 and dimmer.state == pytest.approx(0.57)
    assert pins.reading() == {"led": True, "relay1": True, "dimmer": 57, "button": False}
    assert command(pins, "led", False).state is False and led.state == 0
    assert command(pins, "relay1", False).state is False and relay.state == 1
    assert command(pins, "dimmer", 0).state == 0 and dimmer.state == 0
    assert pins.changes() == []  # vigil takes a command's state from its result


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("dimmer", 140, "g1.dimmer: 140 is above max 100"),
        ("dimmer", 40.5, "g1.dimmer: 40.5 is off the step 1 (from 0)"),
        ("dimmer", True, "g1.dimmer: true is not a number"),
        ("led", "on", 'g1.led: "on" is not true or false'),
        ("button", True, "g1.button: a binary_sensor only reports: it takes no commands"),
        ("fan", True, "g1.fan: no such entity (g1 has: led, relay1, dimmer, button)"),
    ],
)
def test_a_command_the_entity_does_not_allow_never_reaches_a_pin(
    pins: Pins, factory: MockFactory, key: str, value: Value, error: str
) -> None:
    """vigil checks first; the agent checks again, whoever sent it."""
    assert command(pins, key, value) == Result("c1", False, error=error)
    assert pins.reading() == OFF
    assert [factory.pin(n).state for n in (17, 22, 18)] == [0, 1, 0]


def test_the_lamp_dims_and_warms_the_room() -> None:
    lamp = Lamp(1.0)
    wire = [e.as_json() for e in lamp.entities]
    assert entities.parse(wire) == lamp.entities
    assert wire == [
        {"key": "power", "kind": "switch", "label": "Power", "safe": False},
        {
            "key": "brightness",
            "kind": "number",
            "label": "Brightness",
            "min": 0,
            "max": 100,
            "step": 1,
            "unit": "%",
        },
        {
            "key": "temperature",
            "kind": "sensor",
            "label": "Temperature",
            "unit": "°C",
            "device_class": "temperature",
            "state_class": "measurement",
        },
    ]
    cold = lamp.reading()
    assert (cold["power"], cold["brightness"]) == (False, 100)
    assert command(lamp, "power", True, "lamp-1") == Result("c1", True, state=True)
    assert command(lamp, "brightness", 40, "lamp-1") == Result("c1", True, state=40)
    warm = lamp.reading()
    assert (warm["power"], warm["brightness"]) == (True, 40)
    assert isinstance(cold["temperature"], float) and isinstance(warm["temperature"], float)
    assert warm["temperature"] > cold["temperature"] + 0.3  # +1 °C at 40 %, noise 0.65 at most
    refused = command(lamp, "temperature", 30, "lamp-1")
    assert refused.error == "lamp-1.temperature: a sensor only reports: it takes no commands"
    assert command(lamp, "brightness", -1, "lamp-1").error == "lamp-1.brightness: -1 is below min 0"
    assert lamp.reading()["brightness"] == 40


def test_the_hardwares_own_error_is_the_results() -> None:
    class Burnt(Lamp):
        def set(self, key: str, value: Value) -> Value:
            raise ValueError("the bulb is burnt out")

    failed = command(Burnt(1.0), "power", True, "lamp-1")
    assert failed == Result("c1", False, error="the bulb is burnt out")


def test_a_press_from_gpiozeros_thread_is_two_readings_in_order(
    pins: Pins, factory: MockFactory
) -> None:
    button = factory.pin(27)  # pulled up: high while nobody presses
    assert button.state == 1 and pins.reading()["button"] is False

    def press() -> None:  # a pin factory's callback thread on a Pi; here the test's own
        button.drive_low()
        button.drive_high()

    presser = threading.Thread(target=press)
    presser.start()
    presser.join()
    # both edges came before the loop looked: still two readings, press first
    assert changes_within(pins) == [{**OFF, "button": True}, OFF]
    assert pins.changes() == [] and pins.reading()["button"] is False


def test_more_changes_than_kept_end_with_what_the_pins_say(
    pins: Pins, factory: MockFactory
) -> None:
    button = factory.pin(27)
    for _ in range(MAX_QUEUED // 2 + 10):
        button.drive_low()
        button.drive_high()
    button.drive_low()  # held down
    got = changes_within(pins)
    assert len(got) == MAX_QUEUED + 1 and got[-1]["button"] is True


def test_inputs_of_every_kind_with_their_device_class(factory: MockFactory) -> None:
    text = """
    [[input]]
    name = "door"
    kind = "contact"
    pin = 23
    device_class = "door"
    [[input]]
    name = "window"
    kind = "contact"
    pin = 25
    [[input]]
    name = "pir"
    kind = "motion"
    pin = 24
    """
    p = Pins(parse_config(text, "x"), "x")
    try:
        assert [(e["key"], e["kind"], e.get("device_class")) for e in hello_entities(p)] == [
            ("door", "binary_sensor", "door"),
            ("window", "binary_sensor", "opening"),
            ("pir", "binary_sensor", "motion"),
        ]
        # the reed switches are closed (the door and window shut), nobody moves
        for pin in (23, 25):
            factory.pin(pin).drive_low()
        assert changes_within(p)[-1] == {"door": False, "window": False, "pir": False}
        factory.pin(23).drive_high()  # the door opens: its reed switch opens
        factory.pin(24).drive_high()  # the PIR module drives its output high
        assert changes_within(p) == [
            {"door": True, "window": False, "pir": False},
            {"door": True, "window": False, "pir": True},
        ]
        assert p.reading() == {"door": True, "window": False, "pir": True}
    finally:
        p.close()


def test_a_pwm_pin_needs_a_factory_that_can_do_pwm(factory: MockFactory) -> None:
    Device.pin_factory = MockFactory()  # gpiozero's default mock pins: no PWM
    try:
        with pytest.raises(ValueError) as caught:
            Pins(parse_config(PINS, "gpio.toml"), "gpio.toml")
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = factory
    assert str(caught.value) == (
        "gpio.toml: output dimmer: pin 18: this pin factory has no PWM "
        "(gpiozero's mock pins: GPIOZERO_MOCK_PIN_CLASS=mockpwmpin)"
    )


def test_mock_control_reads_and_drives_pins(
    pins: Pins, factory: MockFactory, tmp_path: Path
) -> None:
    server = serve_mock_pins(tmp_path / "pins.sock")
    mock = MockPins(tmp_path / "pins.sock")
    try:
        command(pins, "led", True)
        command(pins, "dimmer", 25)
        assert mock.state(17) == 1 and mock.state("GPIO22") == 1 and mock.state(18) == 0.25
        mock.drive(27, "low")
        assert changes_within(pins)[-1]["button"] is True
        assert mock.ask("27 sideways") == "error: 'sideways' is not high or low"
        assert mock.ask("17 low") == "error: GPIO17 is an output"
        assert mock.ask("nope").startswith("error: nope is not a valid pin name")
    finally:
        mock.close()
        server.shutdown()
        server.server_close()
    # an agent started again finds the socket of the last run, and takes its place
    again = serve_mock_pins(tmp_path / "pins.sock")
    mock = MockPins(tmp_path / "pins.sock")
    assert mock.state(17) == 1
    mock.close()
    again.shutdown()
    again.server_close()
    with pytest.raises(ValueError, match=r"--mock-control .*/nope/s: No such file or directory"):
        serve_mock_pins(tmp_path / "nope" / "s")


def agent(
    tmp_path: Path, *extra: str, mock: bool = True, module: str = "server.agent"
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE --name g1 ...`` with a secret; it should exit at once."""
    env = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    env["VIGIL_DEVICE_SECRET"] = "ab" * 32
    if mock:
        env["GPIOZERO_PIN_FACTORY"] = "mock"
    argv = [sys.executable, "-m", module, "--name", "g1", "--port", "9", *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def test_agent_command_line_refusals(tmp_path: Path) -> None:
    bad = tmp_path / "gpio.toml"
    bad.write_text("[[output]]\nname = 'led'\nkind = 'lamp'\npin = 17\n")
    unknown_pin = tmp_path / "pin.toml"
    unknown_pin.write_text("[[output]]\nname = 'led'\nkind = 'led'\npin = 40\n")
    cases = [
        ((f"--gpio={bad}",), True, f"{bad}: [[output]] 1: led: kind must be one of led, relay"),
        ((f"--gpio={unknown_pin}",), True, f"{unknown_pin}: output led: pin 40: 40 is not a"),
        ((f"--gpio={EXAMPLE}", "--interval", "2"), True, "--interval is for the lamp"),
        # no Pi and no mock: gpiozero finds no pin factory
        ((f"--gpio={EXAMPLE}",), False, "no GPIO here: gpiozero has no pin factory (Falling"),
    ]
    for extra, mock, error in cases:
        done = agent(tmp_path, *extra, mock=mock)
        assert done.returncode == 2, (extra, done.stderr)
        assert f"agent g1: {error}" in done.stderr, (extra, done.stderr)
        assert "Traceback" not in done.stderr


def test_production_agent_has_no_mock_control(tmp_path: Path) -> None:
    done = agent(tmp_path, f"--gpio={EXAMPLE}", "--mock-control", str(tmp_path / "s"))
    assert done.returncode == 2 and "unrecognized arguments: --mock-control" in done.stderr
    assert not (tmp_path / "s").exists()


def test_mock_agent_command_line_refusals(tmp_path: Path) -> None:
    """``python -m tests.mockagent``: mock pins only with --gpio and gpiozero's mock factory."""
    sock = str(tmp_path / "s")
    cases = [
        (("--mock-control", sock), True, "--mock-control needs --gpio CONFIG"),
        # no Pi and no mock: mock pins are never served
        ((f"--gpio={EXAMPLE}", "--mock-control", sock), False, "--mock-control needs GPIOZERO_"),
        (
            (f"--gpio={EXAMPLE}", f"--mock-control={tmp_path}/nope/s"),
            True,
            f"--mock-control {tmp_path}/nope/s: No such file or directory",
        ),
        # the agent's own refusals come through
        ((f"--gpio={EXAMPLE}", "--interval", "2", "--mock-control", sock), True, "--interval is"),
    ]
    for extra, mock, error in cases:
        done = agent(tmp_path, *extra, mock=mock, module="tests.mockagent")
        assert done.returncode == 2, (extra, done.stderr)
        assert f"agent g1: {error}" in done.stderr, (extra, done.stderr)
        assert "Traceback" not in done.stderr


def test_mock_control_only_with_mock_pins(factory: MockFactory, tmp_path: Path) -> None:
    Device.pin_factory = None  # as on a Pi, where gpiozero picks a real factory
    try:
        with pytest.raises(ValueError, match="needs GPIOZERO_PIN_FACTORY=mock"):
            serve_mock_pins(tmp_path / "s")
    finally:
        Device.pin_factory = factory
    assert not (tmp_path / "s").exists()
