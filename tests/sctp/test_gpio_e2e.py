"""Browsers -> vigil -> real SCTP -> the GPIO agent on gpiozero's mock pins, and back.

The agent is the real command line (``python -m server.agent --gpio``) under
``GPIOZERO_PIN_FACTORY=mock``, run by ``python -m tests.mockagent``, which
serves the mock pins (PWM-capable) on ``--mock-control SOCKET`` first; the
test reads and drives them through it (tests/mockpins.py), as a multimeter
and a finger would. The first test uses the shipped example config (an LED
on GPIO17, a button on GPIO27); the others a heater relay that declares a
safe value and a PWM dimmer.

The safe state: alice holds the lease of the device and watches it from a
machine behind a cable (a network namespace, tests/uml/guestnet.py, over
HTTPS as every non-loopback client); when her cable is pulled, vigil finds
her lost (presence: the unacknowledged events of her stream) and switches
the relay to its safe value itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.control.registry import TELEMETRY_INTERVAL
from tests.mockpins import MockPins
from tests.netns import Client
from tests.sctp.panel import ROOT, Events, Panel
from tests.support import CHATTY, Chatter, basic, require
from tests.uml.guestnet import AgentNet
from tests.wire import Event

EXAMPLE = ROOT / "dist" / "agents" / "gpio-example.toml"
DEVICE = "gpio-1"
COMMANDS = f"/api/devices/{DEVICE}/commands"
PINS = """
[[output]]
name = "heater"
kind = "relay"
pin = 22
active_high = false
safe = false

[[output]]
name = "dimmer"
kind = "pwm"
pin = 18
label = "Fan speed"
"""
SAFE_BOUND = 3.0  # s from the pull to the relay off: the presence time of a stream


@pytest.fixture(autouse=True)
def _mock_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")  # the agent's environment


@contextlib.contextmanager
def gpio_agent(panel: Panel, tmp_path: Path, config: Path) -> Iterator[MockPins]:
    """The GPIO agent of ``config`` as DEVICE, online; its mock pins."""
    sock = tmp_path / "pins.sock"
    panel.agent(
        DEVICE, "--gpio", str(config), "--mock-control", str(sock), module="tests.mockagent"
    )
    panel.wait(lambda: panel.online(DEVICE))
    pins = MockPins(sock)
    try:
        yield pins
    finally:
        pins.close()


def telemetry(events: Events, after: float, **state: bool) -> Callable[[Event], bool]:
    """Matches a telemetry event of DEVICE, after ``after``, that shows ``state``."""
    is_telemetry = events.device("telemetry", DEVICE, after)
    return lambda ev: is_telemetry(ev) and state.items() <= ev.data["data"].items()


def result(after: float, **fields: Any) -> Callable[[Event], bool]:
    """Matches the ``result`` phase of a command to DEVICE, after ``after``, with ``fields``."""
    return lambda ev: (
        ev.type == "command"
        and ev.at >= after
        and ev.data["device"] == DEVICE
        and ev.data["phase"] == "result"
        and fields.items() <= ev.data.items()
    )


def device_state(panel: Panel) -> dict[str, Any]:
    _, devices = panel.curl("GET", "/api/devices")
    (entry,) = [d for d in devices if d["id"] == DEVICE]
    return dict(entry["state"])


def test_browser_command_switches_the_pin_and_a_press_reaches_every_browser(
    panel: Panel, tmp_path: Path
) -> None:
    with (
        panel.events("alice") as alice,
        panel.events("bob") as bob,
        gpio_agent(panel, tmp_path, EXAMPLE) as pins,
    ):
        _, devices = panel.curl("GET", "/api/devices")
        (entry,) = [d for d in devices if d["id"] == DEVICE]
        assert entry["name"] == f"GPIO {DEVICE}"
        assert entry["entities"] == [
            {"key": "led", "kind": "switch", "label": "led"},
            {"key": "button", "kind": "binary_sensor", "label": "button"},
        ]
        for browser in (alice, bob):  # the state on welcome
            browser.wait_for(telemetry(browser, 0, led=False, button=False))
        assert pins.state(17) == 0

        start = time.monotonic()
        status, body = panel.curl("POST", COMMANDS, body={"entity": "led", "value": True})
        assert status == 200 and body["ok"] is True and body["state"] is True, body
        assert pins.state(17) == 1
        for browser in (alice, bob):  # not only the one who sent it
            browser.wait_for(result(start, entity="led", state=True, user="alice"))
        assert device_state(panel) == {"led": True, "button": False}

        time.sleep(TELEMETRY_INTERVAL)  # past vigil's 5/s limit: the press is not held back
        pressed = time.monotonic()
        pins.drive(27, "low")  # the button connects GPIO27 to ground
        seen = [b.wait_for(telemetry(b, pressed, button=True)).at for b in (alice, bob)]
        print(f"button press -> both SSE streams in {(max(seen) - pressed) * 1000:.1f} ms")
        released = time.monotonic()
        pins.drive(27, "high")
        for browser in (alice, bob):
            browser.wait_for(telemetry(browser, released, led=True, button=False))

        status, body = panel.curl("POST", COMMANDS, body={"entity": "led", "value": False})
        assert status == 200 and body["state"] is False
        assert pins.state(17) == 0
        status, body = panel.curl("POST", COMMANDS, body={"entity": "button", "value": True})
        assert (status, body) == (  # inputs take no commands: vigil knows the entities
            400,
            {"error": f"{DEVICE}.button: a binary_sensor only reports: it takes no commands"},
        )


def test_a_slider_command_moves_the_pwm_pin(panel: Panel, tmp_path: Path) -> None:
    config = tmp_path / "gpio.toml"
    config.write_text(PINS)
    with panel.events("bob") as bob, gpio_agent(panel, tmp_path, config) as pins:
        _, devices = panel.curl("GET", "/api/devices")
        (entry,) = [d for d in devices if d["id"] == DEVICE]
        assert entry["entities"][1] == {
            "key": "dimmer",
            "kind": "number",
            "label": "Fan speed",
            "min": 0,
            "max": 100,
            "step": 1,
            "unit": "%",
        }
        assert pins.state(18) == 0
        start = time.monotonic()
        status, body = panel.curl("POST", COMMANDS, body={"entity": "dimmer", "value": 40})
        assert status == 200 and body["state"] == 40, body
        assert pins.state(18) == pytest.approx(0.4)  # the duty cycle: 40 % of the time high
        bob.wait_for(result(start, entity="dimmer", value=40, state=40))
        status, body = panel.curl("POST", COMMANDS, body={"entity": "dimmer", "value": 140})
        assert (status, body) == (400, {"error": f"{DEVICE}.dimmer: 140 is above max 100"})
        status, body = panel.curl("POST", COMMANDS, body={"entity": "dimmer", "value": 12.5})
        assert (status, body) == (
            400,
            {"error": f"{DEVICE}.dimmer: 12.5 is off the step 1 (from 0)"},
        )
        assert pins.state(18) == pytest.approx(0.4)  # neither reached the pin
        status, body = panel.curl("POST", COMMANDS, body={"entity": "dimmer", "value": 0})
        assert status == 200 and body["state"] == 0 and pins.state(18) == 0
        assert device_state(panel) == {"heater": False, "dimmer": 0}


def browser_behind(net: AgentNet, panel: Panel, user: str) -> Client:
    """``user``'s event stream from inside ``net``, over HTTPS; once it is open."""
    url = f"https://{net.vigil_ip}:{panel.vigil.tls_port}"
    argv = [sys.executable, "-m", "tests.netns", "client", url, basic(user), "sse"]
    proc = subprocess.Popen(
        net.wrap([*argv, str(panel.vigil.cert)]),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = Client(proc)
    line = client.line(15)
    if line != "ready":
        client.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"{user}'s browser behind the cable: {line!r} {err[-300:]}")
    return client


def test_a_pulled_cable_of_the_holder_switches_the_relay_to_its_safe_value(
    tmp_path: Path,
) -> None:
    require(os.geteuid() == 0, "network namespaces need root")
    config = tmp_path / "gpio.toml"
    config.write_text(PINS)
    with AgentNet("vigil-test-browser", slot=2) as net:
        # made after the veth exists, vigil's certificate names net.vigil_ip
        allow = ["127.0.0.0/8", "::1/128", "10.213.0.0/24"]
        panel = Panel(tmp_path, http={"host": "0.0.0.0"}, auth={"allow": allow}, **CHATTY)
        alice = None
        chatter = None
        try:
            with panel.events("bob") as bob, gpio_agent(panel, tmp_path, config) as pins:
                alice = browser_behind(net, panel, "alice")  # her panel, open
                status, body = panel.curl(
                    "POST", COMMANDS, body={"entity": "heater", "value": True}
                )
                assert status == 200 and body["state"] is True, body
                status, body = panel.curl("POST", COMMANDS, body={"entity": "dimmer", "value": 60})
                assert status == 200 and body["state"] == 60, body
                assert pins.state(22) == 0  # on: the relay board is active-low
                _, devices = panel.curl("GET", "/api/devices")
                assert devices[0]["lease"]["holder"] == "alice"
                chatter = Chatter(  # her stream has events to acknowledge
                    httpx.Client(base_url=panel.vigil.base, headers={"Authorization": basic("bob")})
                )
                time.sleep(1)
                pulled = time.monotonic()
                net.pull()
                panel.wait(lambda: pins.state(22) == 1, 10)
                took = time.monotonic() - pulled
                print(f"holder's cable pulled: relay at its safe value after {took:.2f} s")
                assert took <= SAFE_BOUND, took
                assert pins.state(18) == pytest.approx(0.6)  # no safe value: left as it was
                safe = bob.wait_for(result(pulled, entity="heater", user="vigil"))
                assert safe.data["value"] is False and safe.data["state"] is False
                assert safe.data["reason"] == "safe state: alice lost"
                assert device_state(panel) == {"heater": False, "dimmer": 60}
                _, devices = panel.curl("GET", "/api/devices")
                assert devices[0]["lease"] is None
            _, audit = panel.curl("GET", "/api/audit?limit=50")
            (record,) = [r for r in audit["records"] if r.get("user") == "vigil"]
            assert (record["type"], record["entity"], record["value"]) == (
                "command",
                "heater",
                False,
            )
            assert record["reason"] == "safe state: alice lost" and record["status"] == 200
            assert chatter.errors == []
        finally:
            if chatter is not None:
                chatter.stop()
            if alice is not None:
                alice.kill()
            panel.close()
