"""Roles in the panel: viewers see command buttons disabled, with the reason.

Without SCTP (these machines' kernel has none; the control channel is off) no
device can announce itself, so these tests give the panel one stubbed
device: the event stream (its reset carries the devices) is answered by the
test (page.route); everything else, /api/me (the role) and the command POSTs,
goes to the real vigil. test_devices.py runs the same checks against real
devices where SCTP exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from tests.browser.browser_support import call, sse_body
from tests.support import Vigil

LAMP = {
    "id": "lamp-1",
    "name": "Hall <b>lamp</b>",
    "commands": ["on", "off"],
    "online": True,
    "since": "2026-11-21T06:12:03Z",
}


def stub_devices(page: Any, user: str) -> None:
    """Answer /api/events with one online lamp (the panel takes its devices from the reset)."""
    online = [{"user": user, "since": "2026-11-21T06:12:03Z", "addr": "127.0.0.1"}]
    events = sse_body(
        [
            ("reset", {"online": online, "devices": [LAMP]}),
            ("device", {"kind": "telemetry", "device": LAMP, "data": {"temp_c": 21.5}}),
        ]
    )
    page.route(
        re.compile(r"/api/events$"),
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=events),
    )


def open_stubbed(vigil: Vigil, contexts: Callable[..., Any], user: str) -> Any:
    page = contexts(user).new_page()
    stub_devices(page, user)
    page.goto(vigil.https + "/")
    page.wait_for_selector("#me-role:not(:empty)")
    page.wait_for_selector("#device-list .device")
    return page


def test_viewer_command_buttons_are_disabled(vigil: Vigil, contexts: Callable[..., Any]) -> None:
    page = open_stubbed(vigil, contexts, "vera")
    expect(page.locator("#me-role")).to_have_text("viewer")
    buttons = page.locator("#device-list button.cmd")
    expect(buttons).to_have_text(["on", "off"])
    for i in range(buttons.count()):
        expect(buttons.nth(i)).to_be_disabled()
        expect(buttons.nth(i)).to_have_attribute("title", "viewers cannot send commands")
    expect(page.locator("#viewer-note")).to_be_visible()
    # the device name is text, telemetry is shown
    expect(page.locator(".dev-name")).to_have_text("Hall <b>lamp</b>")
    expect(page.locator(".telemetry dd")).to_have_text(["21.5"])
    # and vigil itself refuses a viewer's command, whatever the page shows
    status, _, body = call(vigil, "POST", "/api/devices/lamp-1/commands", "vera", {"action": "on"})
    assert status == 403, body
    assert "viewer" in body["error"]


def test_operator_buttons_are_enabled_and_show_the_answer(
    vigil: Vigil, contexts: Callable[..., Any]
) -> None:
    page = open_stubbed(vigil, contexts, "alice")
    button = page.locator("#device-list button.cmd", has_text="on")
    expect(button).to_be_enabled()
    expect(button).not_to_have_attribute("title", re.compile("."))
    button.click()
    # the real vigil answers: its control channel is off (503) and the panel says so inline
    result = page.locator(".device .result")
    expect(result).to_have_attribute("data-kind", "fail")
    expect(result).to_contain_text("on → unavailable: ")
    expect(button).to_be_enabled()


def test_offline_device_buttons_are_disabled(vigil: Vigil, contexts: Callable[..., Any]) -> None:
    page = contexts("alice").new_page()
    off = {**LAMP, "online": False}
    page.route(
        re.compile(r"/api/events$"),
        lambda route: route.fulfill(
            status=200,
            content_type="text/event-stream",
            body=sse_body([("reset", {"online": [], "devices": [off]})]),
        ),
    )
    page.goto(vigil.https + "/")
    expect(page.locator(".dev-status")).to_have_text("offline")
    expect(page.locator("button.cmd").first).to_be_disabled()
    expect(page.locator("button.cmd").first).to_have_attribute("title", "the device is offline")
