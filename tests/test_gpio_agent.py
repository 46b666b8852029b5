"""The GPIO agent's pins (server/agent/gpio.py) on gpiozero's mock pins, its config, its CLI.

End to end through vigil over real SCTP: tests/sctp/test_gpio_e2e.py.
"""

from __future__ import annotations

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
from gpiozero.pins.mock import MockFactory

from server.agent.gpio import MAX_QUEUED, Pins, PinSpec, load_config, parse_config
from tests.mockagent import serve_mock_pins
from tests.mockpins import MockPins
from tests.support import ROOT

EXAMPLE = ROOT / "dist" / "agents" / "gpio-example.toml"
LED_AND_BUTTON = """
[[output]]
name = "led"
kind = "led"
pin = 17

[[output]]
name = "relay1"
kind = "relay"
pin = 22
active_high = false

[[input]]
name = "button"
kind = "button"
pin = 27
"""


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """gpiozero's mock pins in this process (a Raspberry Pi 3B's header), fresh for each test."""
    saved = Device.pin_factory
    Device.pin_factory = mock = MockFactory()
    yield mock
    mock.reset()
    Device.pin_factory = saved


@pytest.fixture
def pins(factory: MockFactory) -> Iterator[Pins]:
    p = Pins(parse_config(LED_AND_BUTTON, "gpio.toml"), "gpio.toml")
    yield p
    p.close()


def changes_within(p: Pins, timeout: float = 5) -> list[dict[str, bool]]:
    """What the agent's loop would send once the pins' pipe is readable."""
    assert select.select([p.fileno()], [], [], timeout)[0], "the pins never woke the loop"
    return p.changes()


def test_the_example_config_and_every_key_it_mentions() -> None:
    specs = load_config(EXAMPLE)
    assert specs == (
        PinSpec("led", "led", 17),
        PinSpec("button", "button", 27, bounce_time=0.05),
    )
    # its commented entries and keys are real: uncommented, they parse too
    text = re.sub(r"(?m)^# (\[\[|\w+ = )", r"\1", EXAMPLE.read_text())
    every = parse_config(text, "example")
    assert [(s.name, s.kind, s.pin) for s in every] == [
        ("led", "led", 17),
        ("relay1", "relay", 22),
        ("button", "button", 27),
        ("door", "contact", 23),
        ("pir", "motion", 24),
    ]
    assert [s.name for s in every if not s.active_high] == ["relay1"]
    assert [s.name for s in every if not s.output and not s.pull_up] == ["pir"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[[output]\n", "gpio.toml: invalid TOML: "),
        ("[[outputs]]\nname = 'a'\n", "gpio.toml: unknown section 'outputs' (only [[output]]"),
        ("output = 1\n", "gpio.toml: output must be tables: [[output]]"),
        ("", "gpio.toml: no [[output]] or [[input]]: nothing to drive"),
        (
            "[[output]]\nname = 'led'\nkind = 'led'\npin = 17\ncolour = 'red'\n",
            "[[output]] 1: unknown key 'colour' (allowed: name, kind, pin, active_high)",
        ),
        (
            "[[input]]\nname = 'b'\nkind = 'button'\npin = 27\nactive_high = true\n",
            "unknown key 'active_high' (allowed: name, kind, pin, pull_up, bounce_time)",
        ),
        ("[[output]]\nname = 'my led'\nkind = 'led'\npin = 17\n", "name must be 1-32 characters"),
        ("[[output]]\nkind = 'led'\npin = 17\n", "name must be 1-32 characters of A-Z"),
        (
            "[[output]]\nname = 'led'\nkind = 'lamp'\npin = 17\n",
            "[[output]] 1: led: kind must be one of led, relay, not 'lamp'",
        ),
        (
            "[[output]]\nname = 'b'\nkind = 'button'\npin = 27\n",
            "b: kind must be one of led, relay, not 'button' (an input)",
        ),
        (
            "[[input]]\nname = 'r'\nkind = 'relay'\npin = 27\n",
            "r: kind must be one of button, contact, motion, not 'relay' (an output)",
        ),
        ("[[output]]\nname = 'led'\nkind = 'led'\n", "led: pin must be a GPIO number (17)"),
        ("[[output]]\nname = 'led'\nkind = 'led'\npin = -1\n", "led: pin must be a GPIO number"),
        ("[[output]]\nname = 'led'\nkind = 'led'\npin = true\n", "led: pin must be a GPIO number"),
        (
            "[[output]]\nname = 'r'\nkind = 'relay'\npin = 22\nactive_high = 'no'\n",
            "r: active_high must be true or false, not 'no'",
        ),
        (
            "[[input]]\nname = 'b'\nkind = 'button'\npin = 27\nbounce_time = 5\n",
            "b: bounce_time must be seconds from 0 to 1, not 5",
        ),
        (
            "[[output]]\nname = 'x'\nkind = 'led'\npin = 17\n"
            "[[input]]\nname = 'x'\nkind = 'button'\npin = 27\n",
            "gpio.toml: input x: name x is also output x",
        ),
        (
            "[[output]]\nname = 'led'\nkind = 'led'\npin = 17\n"
            "[[input]]\nname = 'b'\nkind = 'button'\npin = 17\n",
            "gpio.toml: input b: pin 17 is also output led",
        ),
        (
            "".join(f"[[output]]\nname = 'o{i}'\nkind = 'led'\npin = {i}\n" for i in range(22)),
            "gpio.toml: 22 outputs, at most 21 (64 commands)",
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


def test_commands_switch_the_pins(pins: Pins, factory: MockFactory) -> None:
    led, relay = factory.pin(17), factory.pin(22)
    assert pins.commands == (
        *("led on", "led off", "led toggle"),
        *("relay1 on", "relay1 off", "relay1 toggle"),
        "status",
    )
    assert pins.interval is None
    off = {"led": False, "relay1": False, "button": False}
    assert pins.run("status", {}) == off
    assert (led.state, relay.state) == (0, 1)  # the relay board is active-low: off is high
    assert pins.run("led on", {}) == {**off, "led": True} and led.state == 1
    assert pins.run("relay1 on", {}) == {**off, "led": True, "relay1": True}
    assert relay.state == 0
    assert pins.run("led toggle", {})["led"] is False and led.state == 0
    assert pins.run("relay1 off", {})["relay1"] is False and relay.state == 1
    for action in ("explode", "button on", "led", "led blink", "status on"):
        with pytest.raises(ValueError, match=f"unknown action '{action}' \\(known: led on, "):
            pins.run(action, {})


def test_switched_outputs_are_sent_like_inputs(pins: Pins) -> None:
    pins.run("led on", {})
    pins.run("led off", {})
    assert [r["led"] for r in changes_within(pins)] == [True, False]
    assert pins.changes() == []


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
    assert [r["button"] for r in changes_within(pins)] == [True, False]
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


def test_inputs_of_every_kind(factory: MockFactory) -> None:
    text = """
    [[input]]
    name = "door"
    kind = "contact"
    pin = 23
    [[input]]
    name = "pir"
    kind = "motion"
    pin = 24
    """
    p = Pins(parse_config(text, "x"), "x")
    try:
        assert p.commands == ("status",)
        assert p.reading() == {"door": False, "pir": False}
        factory.pin(23).drive_low()  # the reed switch closes to ground
        factory.pin(24).drive_high()  # the PIR module drives its output high
        assert changes_within(p) == [{"door": True, "pir": False}, {"door": True, "pir": True}]
    finally:
        p.close()


def test_mock_control_reads_and_drives_pins(
    pins: Pins, factory: MockFactory, tmp_path: Path
) -> None:
    server = serve_mock_pins(tmp_path / "pins.sock")
    mock = MockPins(tmp_path / "pins.sock")
    try:
        pins.run("led on", {})
        assert mock.state(17) == 1 and mock.state("GPIO22") == 1
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
