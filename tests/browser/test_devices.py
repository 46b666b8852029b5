"""Real devices in the panel, several people at once, in Debian's chromium.

The whole module runs against one UML test host (tests/browser/uml_support.py,
booted once for the module): vigil with real SCTP and two reference agents
inside the guest, the browser here, talking to it over a tap network.

- lamp-1: the plain reference lamp (server/agent/hardware.py: a switch
  ``power``, a number ``brightness`` 0-100 %, a sensor ``temperature`` in °C);
- lamp-2: a lamp whose display name is markup, and which answers commands only
  after 30 s, so a command can be pending when its agent is killed.

Each browser context is one person (tests/support.py's USERS). Needs root,
/dev/net/tun and an x86-64 host (the harness sets up its UML kernel itself,
tests/uml/kernel.py); without them ``require`` skips, and fails under CI=true.

This host is not loopback to the guest's vigil, so everything here goes over
HTTPS: this module's chromium (``browser``, one for the module) trusts the
certificate that vigil made for itself in the guest, and nothing else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browser_support import VIEWPORTS, LoadWatch, call
from tests.browser.uml_support import (
    Target,
    TestHost,
    browser,
    card,
    entity,
    free_leases,
    host,
    message,
    open_panel,
    people,
    power,
)

__all__ = ["browser", "free_leases", "host", "open_panel"]  # fixtures, used by name

MARKUP = "<img src=x onerror=\"document.title='pwned'\">"
EVIL_NAME = f"Lamp {MARKUP}"
AGENTS = {
    "lamp-1": [],
    "lamp-2": ["--label", EVIL_NAME, "--reply-delay", "30"],
}
CONTROLS = ".entity :is(button, input, select)"  # the lamp's: its switch, slider, number input
DEGREES = re.compile(r"^\d+(\.\d+)? °C$")
pytestmark = pytest.mark.usefixtures("free_leases")


def word(switch: Any) -> str:
    """What clicking ``switch`` asks for: "on" or "off"."""
    return "off" if switch.get_attribute("aria-checked") == "true" else "on"


def state(host: TestHost, device: str, key: str) -> Any:
    """The state of entity ``key`` of ``device`` as vigil has it (GET /api/devices)."""
    status, _, devices = call(Target.of(host), "GET", "/api/devices", "alice")
    assert status == 200, devices
    return next(d for d in devices if d["id"] == device)["state"][key]


def commands(page: Any, key: str, device: str = "lamp-1") -> Any:
    """The activity feed's lines about commands to ``device``'s entity ``key``, newest first."""
    return page.locator("#feed li .ev-text").filter(has_text=f"{device} {key}")


def test_devices_are_listed_with_their_entities(open_panel: Callable[..., Any]) -> None:
    a = open_panel("alice")
    for device in ("lamp-1", "lamp-2"):
        expect(card(a, device).locator(".dev-status")).to_have_text("online")
        rows = card(a, device).locator(".entity .ent-label")
        expect(rows).to_have_text(["Power", "Brightness", "Temperature"])
        slider = card(a, device).get_by_role("slider", name="Brightness")
        expect(slider).to_have_attribute("min", "0")
        expect(slider).to_have_attribute("max", "100")
        expect(entity(a, device, "brightness").locator(".unit")).to_have_text("%")
        expect(entity(a, device, "temperature").locator(".ent-ctl")).to_have_text(DEGREES)
        for control in card(a, device).locator(CONTROLS).all():
            expect(control).to_be_enabled()
    expect(a.locator("#devices-count")).to_have_text("2 of 2 online")
    expect(card(a, "lamp-1").locator(".dev-name")).to_have_text("Lamp lamp-1")


def test_a_sees_b_join_and_leave(
    host: TestHost, open_panel: Callable[..., Any], contexts: Callable[..., Any]
) -> None:
    a = open_panel("alice")
    expect(people(a)).to_have_text(["alice"])
    b = open_panel("bob")
    expect(people(a)).to_have_text(["alice", "bob"], timeout=10000)
    expect(a.locator("#people-count")).to_have_text("2 of 10 online")
    row = a.locator("#people-list .person", has_text="bob")
    expect(row.locator(".addr")).to_have_text(host.host_ip)  # from where: this host, on the tap
    expect(a.locator("#feed")).to_contain_text(f"bob joined from {host.host_ip}")
    expect(people(b)).to_have_text(["alice", "bob"])
    b.context.close()
    # a clean close: bob stays for the 2 s grace, then leaves with the reason
    expect(people(a)).to_have_text(["alice"], timeout=15000)
    expect(a.locator("#presence-last")).to_contain_text(
        re.compile(r"bob left \((closed the panel|connection lost)\)")
    )


def test_b_switches_the_lamp_and_everyone_sees_it_with_the_result(
    open_panel: Callable[..., Any],
) -> None:
    a = open_panel("alice")
    v = open_panel("vera")
    b = open_panel("bob")
    for _ in range(2):  # there and back
        switch = power(b, "lamp-1")
        to = word(switch)
        switch.click()
        expect(message(b, "lamp-1", "power")).to_have_text(
            re.compile(rf"^{to}: ok \(\d+ ms\) · "), timeout=10000
        )
        line = re.compile(rf"^bob set lamp-1 power {to} → ok, [\d.]+ ms$")
        for page in (a, v, b):
            expect(power(page, "lamp-1")).to_have_attribute("aria-checked", str(to == "on").lower())
            expect(power(page, "lamp-1")).to_have_text(to)
            expect(commands(page, "power").first).to_have_text(line, timeout=10000)
    # a panel opened later has it from the audit log, in the same words
    late = open_panel("user01")
    expect(commands(late, "power").first).to_have_text(line)


def test_a_slider_sends_the_value_and_the_device_takes_it(
    host: TestHost, open_panel: Callable[..., Any]
) -> None:
    a = open_panel("alice")
    b = open_panel("bob")
    slider = card(b, "lamp-1").get_by_role("slider", name="Brightness")
    box = slider.bounding_box()
    assert box is not None
    before = int(slider.input_value())
    # a drag from the middle to a quarter: one command, when let go
    y = box["y"] + box["height"] / 2
    b.mouse.move(box["x"] + box["width"] / 2, y)
    b.mouse.down()
    for i in range(1, 6):
        b.mouse.move(box["x"] + box["width"] * (0.5 - 0.05 * i), y)
    b.mouse.up()
    expect(message(b, "lamp-1", "brightness")).to_have_attribute("data-kind", "ok")
    value = int(slider.input_value())
    assert value != before and 15 <= value <= 35, (before, value)
    expect(message(b, "lamp-1", "brightness")).to_contain_text(f"{value} %: ok")
    expect(card(a, "lamp-1").get_by_role("slider", name="Brightness")).to_have_value(str(value))
    expect(commands(a, "brightness").first).to_have_text(
        re.compile(rf"^bob set lamp-1 brightness {value} % → ok, [\d.]+ ms$")
    )
    # the lamp has it: vigil's state came from its result, and its next readings say so too
    assert state(host, "lamp-1", "brightness") == value
    time.sleep(1.5)  # the lamp reports every second
    assert state(host, "lamp-1", "brightness") == value


def test_a_value_out_of_range_is_refused_with_vigils_message(
    host: TestHost, open_panel: Callable[..., Any]
) -> None:
    b = open_panel("bob")
    number = card(b, "lamp-1").get_by_role("spinbutton", name="Brightness %")
    before = number.input_value()
    refusals = {
        "140": "lamp-1.brightness: 140 is above max 100",
        "40.5": "lamp-1.brightness: 40.5 is off the step 1 (from 0)",
    }
    for typed, refusal in refusals.items():
        number.fill(typed)
        number.press("Enter")
        result = message(b, "lamp-1", "brightness")
        expect(result).to_have_attribute("data-kind", "fail")
        expect(result).to_have_text(re.compile(rf"^refused: {re.escape(refusal)} · "))
        expect(number).to_have_value(before)  # the control shows the lamp's state again
    assert state(host, "lamp-1", "brightness") == int(before)


def test_telemetry_is_shown_live(open_panel: Callable[..., Any]) -> None:
    a = open_panel("alice")
    expect(entity(a, "lamp-1", "temperature").locator(".ent-ctl")).to_have_text(DEGREES)
    stamp = card(a, "lamp-1").locator(".tele-at time")
    first = stamp.get_attribute("datetime")
    time.sleep(2.5)  # the agent reports every second
    assert stamp.get_attribute("datetime") != first


def test_viewer_controls_are_disabled_with_the_reason(
    host: TestHost, open_panel: Callable[..., Any]
) -> None:
    v = open_panel("vera")
    expect(v.locator("#me-role")).to_have_text("viewer")
    expect(v.locator("#viewer-note")).to_be_visible()
    controls = v.locator(f"#device-list {CONTROLS}")
    expect(controls).to_have_count(2 * 3)
    for control in controls.all():
        expect(control).to_be_disabled()
        expect(control).to_have_attribute("title", "viewers cannot send commands")
    # vigil refuses a viewer's command whatever the page shows
    target = Target.of(host)
    body = {"entity": "power", "value": True}
    status, _, answer = call(target, "POST", "/api/devices/lamp-1/commands", "vera", body)
    assert status == 403, answer


def test_markup_from_devices_and_people_is_shown_as_text(open_panel: Callable[..., Any]) -> None:
    a = open_panel("alice")
    b = open_panel("bob")
    expect(card(a, "lamp-2").locator(".dev-name")).to_have_text(EVIL_NAME)
    expect(card(a, "lamp-2").locator("img")).to_have_count(0)
    # in chat, both ways
    b.fill("#chat-text", f"look {MARKUP}")
    b.click("#chat-send")
    expect(a.locator("#chat-log .msg-text").last).to_have_text(f"look {MARKUP}")
    a.fill("#chat-text", "seen it, bob")
    a.press("#chat-text", "Enter")
    expect(b.locator("#chat-log .msg-text").last).to_have_text("seen it, bob")
    for page in (a, b):
        expect(page.locator("#main img")).to_have_count(0)
        assert page.title() == "vigil"
        assert page.dialogs == []


def test_device_going_offline_is_shown_and_fails_its_pending_command(
    host: TestHost, open_panel: Callable[..., Any]
) -> None:
    a = open_panel("alice")
    b = open_panel("bob")
    switch = power(a, "lamp-2")
    to = word(switch)
    switch.click()  # lamp-2 answers after 30 s: still pending below
    result = message(a, "lamp-2", "power")
    expect(result).to_have_attribute("data-kind", "pending")
    expect(result).to_contain_text(f"sending {to}…")
    expect(switch).to_have_attribute("title", "waiting for the device")
    expect(commands(b, "power", "lamp-2").first).to_have_text(
        re.compile(rf"^alice set lamp-2 power {to} → sent…$")
    )
    host.kill_agent("lamp-2")  # SIGKILL: the association goes, vigil notices at once
    for page in (a, b):
        expect(card(page, "lamp-2").locator(".dev-status")).to_have_text("offline", timeout=10000)
        expect(card(page, "lamp-2")).to_have_class(re.compile(r"\boffline\b"))
        for control in card(page, "lamp-2").locator(CONTROLS).all():
            expect(control).to_be_disabled()
            expect(control).to_have_attribute("title", "the device is offline")
        expect(page.locator("#feed")).to_contain_text(f"{EVIL_NAME} (lamp-2) is offline")
        expect(page.locator("#devices-count")).to_have_text("1 of 2 online")
    # the pending command's answer: 503, beside the switch
    expect(result).to_have_attribute("data-kind", "fail")
    expect(result).to_contain_text("unavailable: device 'lamp-2' was lost before it answered")
    expect(commands(b, "power", "lamp-2").first).to_have_text(
        re.compile(rf"^alice set lamp-2 power {to} → failed: .*lost.*\[503\]")
    )
    # lamp-1 is unaffected; lamp-2 comes back when its agent does
    expect(card(a, "lamp-1").locator(".dev-status")).to_have_text("online")
    host.start_agent("lamp-2", *AGENTS["lamp-2"])
    expect(card(a, "lamp-2").locator(".dev-status")).to_have_text("online", timeout=10000)
    expect(power(a, "lamp-2")).to_be_enabled()
    expect(a.locator("#feed")).to_contain_text(f"{EVIL_NAME} (lamp-2) is online")


def chart(page: Any, device: str, key: str) -> Any:
    return entity(page, device, key).locator(".chart")


def points(page: Any, device: str, key: str) -> int:
    """How many points the chart of entity ``key`` on ``device``'s card shows."""
    return int(chart(page, device, key).get_attribute("data-points") or 0)


def test_chart_grows_with_telemetry_and_a_late_panel_starts_full(
    open_panel: Callable[..., Any],
) -> None:
    a = open_panel("alice")
    # a chart for the number and the sensor, none for the switch
    expect(card(a, "lamp-1").locator(".entity .chart")).to_have_count(2)
    temperature = chart(a, "lamp-1", "temperature")
    expect(temperature).to_have_attribute("aria-hidden", "true")
    expect(temperature.locator(".spark-line")).to_have_attribute("points", re.compile(r"\d"))
    # the unit on its axis; the value stays text beside it
    expect(temperature).to_have_attribute("data-max", DEGREES)
    expect(entity(a, "lamp-1", "temperature").locator(".ent-ctl")).to_have_text(DEGREES)
    expect(chart(a, "lamp-1", "brightness")).to_have_attribute("data-max", re.compile(r"^\d+ %$"))
    first = grown = points(a, "lamp-1", "temperature")
    deadline = time.monotonic() + 10  # the agent reports every second: 2 points in ~2 s
    while grown < first + 2 and time.monotonic() < deadline:
        time.sleep(0.25)
        grown = points(a, "lamp-1", "temperature")
    assert grown >= first + 2, (first, grown)
    # a panel opened now draws the last minutes at once, from GET /api/devices/{id}/telemetry
    b = open_panel("bob")
    expect(chart(b, "lamp-1", "temperature")).not_to_have_attribute("data-points", "0")
    at_once = points(b, "lamp-1", "temperature")
    assert at_once >= grown - 1, (grown, at_once)


def test_eight_tabs_are_all_live_and_the_eighth_commands(
    open_panel: Callable[..., Any], contexts: Callable[..., Any]
) -> None:
    ctx = contexts("alice")
    tabs = [open_panel("alice", ctx) for _ in range(8)]
    v = open_panel("vera")
    for t in tabs:
        expect(people(t)).to_have_text(["alice", "vera"])
        expect(card(t, "lamp-1").locator(".dev-status")).to_have_text("online")
    to = word(power(tabs[7], "lamp-1"))
    power(tabs[7], "lamp-1").click()
    line = re.compile(rf"^alice set lamp-1 power {to} → ok")
    for page in [*tabs, v]:
        expect(commands(page, "power").first).to_have_text(line, timeout=10000)
        expect(power(page, "lamp-1")).to_have_text(to)
    expect(message(tabs[7], "lamp-1", "power")).to_have_attribute("data-kind", "ok")
    # telemetry keeps coming in every tab
    before = [points(t, "lamp-1", "temperature") for t in tabs]
    time.sleep(2.5)
    after = [points(t, "lamp-1", "temperature") for t in tabs]
    assert all(x > y for x, y in zip(after, before, strict=True)), (before, after)


@pytest.mark.parametrize("screen", VIEWPORTS)
def test_loading_with_devices_logs_no_error_and_does_not_jump(
    host: TestHost, contexts: Callable[..., Any], screen: str
) -> None:
    page = contexts("alice", **VIEWPORTS[screen]).new_page()
    watch = LoadWatch(page)
    page.goto(host.https_url + "/")
    expect(chart(page, "lamp-1", "temperature")).not_to_have_attribute("data-points", "0")
    expect(page.locator("#devices-off")).to_be_hidden()
    watch.check(screen)
