"""Browsers -> vigil -> real SCTP -> the GPIO agent on gpiozero's mock pins, and back.

The agent is the real command line (``python -m server.agent --gpio`` with
the shipped example config: an LED on GPIO17, a button on GPIO27) under
``GPIOZERO_PIN_FACTORY=mock``, run by ``python -m tests.mockagent``, which
serves the mock pins on ``--mock-control SOCKET`` first; the test reads and
drives them through it (tests/mockpins.py), as a multimeter and a finger would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server.control.registry import TELEMETRY_INTERVAL
from tests.mockpins import MockPins
from tests.sctp.panel import ROOT, Events, Panel
from tests.wire import Event

EXAMPLE = ROOT / "dist" / "agents" / "gpio-example.toml"
DEVICE = "gpio-1"


def telemetry(events: Events, after: float, **state: bool) -> Callable[[Event], bool]:
    """Matches a telemetry event of DEVICE, after ``after``, that shows ``state``."""
    is_telemetry = events.device("telemetry", DEVICE, after)
    return lambda ev: is_telemetry(ev) and state.items() <= ev.data["data"].items()


def test_browser_command_switches_the_pin_and_a_press_reaches_every_browser(
    panel: Panel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")  # the agent's environment
    sock = tmp_path / "pins.sock"
    with panel.events("alice") as alice, panel.events("bob") as bob:
        panel.agent(
            DEVICE, "--gpio", str(EXAMPLE), "--mock-control", str(sock), module="tests.mockagent"
        )
        panel.wait(lambda: panel.online(DEVICE))
        pins = MockPins(sock)
        try:
            _, devices = panel.curl("GET", "/api/devices")
            (entry,) = [d for d in devices if d["id"] == DEVICE]
            assert entry["name"] == f"GPIO {DEVICE}"
            assert entry["commands"] == ["led on", "led off", "led toggle", "status"]
            for browser in (alice, bob):  # the state on welcome
                browser.wait_for(telemetry(browser, 0, led=False, button=False))
            assert pins.state(17) == 0

            start = time.monotonic()
            status, body = panel.curl(
                "POST", f"/api/devices/{DEVICE}/commands", body={"action": "led on"}
            )
            assert status == 200 and body["ok"] is True, body
            assert body["result"] == {"led": True, "button": False}
            assert pins.state(17) == 1
            for browser in (alice, bob):  # not only the one who sent it
                browser.wait_for(telemetry(browser, start, led=True))

            time.sleep(TELEMETRY_INTERVAL)  # past vigil's 5/s limit: the press is not held back
            pressed = time.monotonic()
            pins.drive(27, "low")  # the button connects GPIO27 to ground
            seen = [b.wait_for(telemetry(b, pressed, button=True)).at for b in (alice, bob)]
            print(f"button press -> both SSE streams in {(max(seen) - pressed) * 1000:.1f} ms")
            released = time.monotonic()
            pins.drive(27, "high")
            for browser in (alice, bob):
                browser.wait_for(telemetry(browser, released, led=True, button=False))

            status, body = panel.curl(
                "POST", f"/api/devices/{DEVICE}/commands", body={"action": "led toggle"}
            )
            assert status == 200 and body["result"]["led"] is False
            assert pins.state(17) == 0
            status, body = panel.curl(
                "POST", f"/api/devices/{DEVICE}/commands", body={"action": "button on"}
            )
            assert status == 400, body  # inputs take no commands: vigil knows the list
        finally:
            pins.close()
