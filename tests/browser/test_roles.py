"""Roles in the panel: viewers see a device's controls disabled, with the reason.

Without SCTP (these machines' kernel has none; the control channel is off) no
device can announce itself, so these tests give the panel one stubbed
device: the event stream (its reset carries the devices) is played by the
test (browser_support.StubEvents); everything else, /api/me (the role) and
the command POSTs, goes to the real vigil. test_devices.py runs the same
checks against real devices where SCTP exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from tests.browser.browser_support import call, open_stubbed
from tests.support import Vigil

LAMP = {
    "id": "lamp-1",
    "name": "Hall <b>lamp</b>",
    "online": True,
    "since": "2026-11-21T06:12:03Z",
    "lease": None,
    "entities": [
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
        {"key": "temperature", "kind": "sensor", "label": "Temperature", "unit": "°C"},
    ],
    "state": {"power": True, "brightness": 40, "temperature": 21.5},
}
# The form controls of the lamp's card: the switch, the slider and the number input.
CONTROLS = "#device-list .entity :is(button, input, select)"


def test_viewer_controls_are_disabled(vigil: Vigil, contexts: Callable[..., Any]) -> None:
    page, _ = open_stubbed(vigil, contexts, "vera", [LAMP])
    expect(page.locator("#me-role")).to_have_text("viewer")
    expect(page.get_by_role("switch", name="Power")).to_be_checked()
    controls = page.locator(CONTROLS)
    expect(controls).to_have_count(3)
    for control in controls.all():
        expect(control).to_be_disabled()
        expect(control).to_have_attribute("title", "viewers cannot send commands")
    expect(page.locator("#viewer-note")).to_be_visible()
    # the device name is text, the sensor is shown with its unit
    expect(page.locator(".dev-name")).to_have_text("Hall <b>lamp</b>")
    temperature = page.locator('.entity[data-key="temperature"] .ent-ctl')
    expect(temperature).to_have_text("21.5 °C")
    # and vigil itself refuses a viewer's command, whatever the page shows
    body = {"entity": "power", "value": False}
    status, _, answer = call(vigil, "POST", "/api/devices/lamp-1/commands", "vera", body)
    assert status == 403, answer
    assert "viewer" in answer["error"]


def test_operator_controls_are_enabled_and_show_the_answer(
    vigil: Vigil, contexts: Callable[..., Any]
) -> None:
    page, _ = open_stubbed(vigil, contexts, "alice", [LAMP])
    switch = page.get_by_role("switch", name="Power")
    for control in page.locator(CONTROLS).all():
        expect(control).to_be_enabled()
        expect(control).not_to_have_attribute("title", re.compile("."))
    switch.click()
    # the real vigil answers: its control channel is off (503); the answer is beside the switch
    message = page.locator('.entity[data-key="power"] .ent-msg')
    expect(message).to_have_attribute("data-kind", "fail")
    expect(message).to_contain_text("unavailable: control channel off")
    expect(switch).to_be_enabled()
    expect(switch).to_be_checked()  # the device never got it: the state stays


def test_offline_device_controls_are_disabled(vigil: Vigil, contexts: Callable[..., Any]) -> None:
    page, _ = open_stubbed(vigil, contexts, "alice", [{**LAMP, "online": False}])
    expect(page.locator(".dev-status")).to_have_text("offline")
    for control in page.locator(CONTROLS).all():
        expect(control).to_be_disabled()
        expect(control).to_have_attribute("title", "the device is offline")
