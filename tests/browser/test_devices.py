"""Real devices in the panel, several people at once, in Debian's chromium.

The whole module runs against one UML test host (tests/browser/uml_support.py,
booted once for the module): vigil with real SCTP and two reference agents
inside the guest, the browser here, talking to it over a tap network.

- lamp-1: the plain reference lamp;
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
    COMMANDS,
    Target,
    TestHost,
    browser,
    button,
    card,
    free_leases,
    host,
    open_panel,
    people,
)

__all__ = ["browser", "free_leases", "host", "open_panel"]  # fixtures, used by name

MARKUP = "<img src=x onerror=\"document.title='pwned'\">"
EVIL_NAME = f"Lamp {MARKUP}"
AGENTS = {
    "lamp-1": [],
    "lamp-2": ["--label", EVIL_NAME, "--reply-delay", "30"],
}
pytestmark = pytest.mark.usefixtures("free_leases")


def test_devices_are_listed_with_their_commands(open_panel: Callable[..., Any]) -> None:
    a = open_panel("alice")
    for device in ("lamp-1", "lamp-2"):
        expect(card(a, device).locator(".dev-status")).to_have_text("online")
        expect(card(a, device).locator("button.cmd")).to_have_text(COMMANDS)
        for b in card(a, device).locator("button.cmd").all():
            expect(b).to_be_enabled()
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


def test_b_presses_a_button_and_a_sees_it_with_the_result(
    open_panel: Callable[..., Any],
) -> None:
    a = open_panel("alice")
    v = open_panel("vera")
    b = open_panel("bob")
    button(b, "lamp-1", "on").click()
    result = card(b, "lamp-1").locator(".result")
    expect(result).to_have_attribute("data-kind", "ok", timeout=10000)
    expect(result).to_contain_text(re.compile(r'on → ok: .*"on":true.* \(\d+ ms\)'))
    line = re.compile(r'^bob: lamp-1 on → ok \(.*"on":true.*\), \d+ ms$')
    for page in (a, v, b):
        expect(page.locator("#feed li .ev-text").first).to_have_text(line, timeout=10000)
    # the lamp's own telemetry follows
    for page in (a, b):
        on = card(page, "lamp-1").locator(".telemetry dt", has_text="on")
        expect(on.locator("xpath=following-sibling::dd[1]")).to_have_text("true", timeout=5000)
    button(b, "lamp-1", "off").click()
    expect(a.locator("#feed li").first).to_have_text(re.compile(r"bob: lamp-1 off → ok"))


def test_telemetry_is_shown_live(open_panel: Callable[..., Any]) -> None:
    a = open_panel("alice")
    tele = card(a, "lamp-1").locator(".telemetry")
    expect(tele.locator("dt")).to_have_text(["on", "temperature"], timeout=10000)
    expect(tele.locator("dd").nth(1)).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    stamp = card(a, "lamp-1").locator(".tele-at time")
    first = stamp.get_attribute("datetime")
    time.sleep(2.5)  # the agent reports every second
    assert stamp.get_attribute("datetime") != first


def test_viewer_buttons_are_disabled_with_the_reason(
    host: TestHost, open_panel: Callable[..., Any]
) -> None:
    v = open_panel("vera")
    expect(v.locator("#me-role")).to_have_text("viewer")
    expect(v.locator("#viewer-note")).to_be_visible()
    buttons = v.locator("#device-list button.cmd")
    expect(buttons).to_have_count(2 * len(COMMANDS))
    for b in buttons.all():
        expect(b).to_be_disabled()
        expect(b).to_have_attribute("title", "viewers cannot send commands")
    # vigil refuses a viewer's command whatever the page shows
    target = Target.of(host)
    status, _, body = call(target, "POST", "/api/devices/lamp-1/commands", "vera", {"action": "on"})
    assert status == 403, body


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
    button(a, "lamp-2", "on").click()  # lamp-2 answers after 30 s: still pending below
    result = card(a, "lamp-2").locator(".result")
    expect(result).to_have_attribute("data-kind", "pending")
    expect(result).to_contain_text("on: sending…")
    expect(button(a, "lamp-2", "on")).to_have_attribute("title", "waiting for the device")
    expect(b.locator("#feed li").first).to_have_text(re.compile(r"alice: lamp-2 on → sent…"))
    host.kill_agent("lamp-2")  # SIGKILL: the association goes, vigil notices at once
    for page in (a, b):
        expect(card(page, "lamp-2").locator(".dev-status")).to_have_text("offline", timeout=10000)
        expect(card(page, "lamp-2")).to_have_class(re.compile(r"\boffline\b"))
        for btn in card(page, "lamp-2").locator("button.cmd").all():
            expect(btn).to_be_disabled()
            expect(btn).to_have_attribute("title", "the device is offline")
        expect(page.locator("#feed")).to_contain_text(f"{EVIL_NAME} (lamp-2) is offline")
        expect(page.locator("#devices-count")).to_have_text("1 of 2 online")
    # the pending command's answer: 503, inline
    expect(result).to_have_attribute("data-kind", "fail")
    expect(result).to_contain_text("on → unavailable: device 'lamp-2' was lost before it answered")
    expect(b.locator("#feed li").first).to_have_text(
        re.compile(r"alice: lamp-2 on → failed: .*lost.*\[503\]")
    )
    # lamp-1 is unaffected; lamp-2 comes back when its agent does
    expect(card(a, "lamp-1").locator(".dev-status")).to_have_text("online")
    host.start_agent("lamp-2", *AGENTS["lamp-2"])
    expect(card(a, "lamp-2").locator(".dev-status")).to_have_text("online", timeout=10000)
    expect(button(a, "lamp-2", "on")).to_be_enabled()
    expect(a.locator("#feed")).to_contain_text(f"{EVIL_NAME} (lamp-2) is online")


def points(page: Any, device: str, metric: str) -> int:
    """How many points the chart of ``metric`` on ``device``'s card shows."""
    dd = (
        card(page, device)
        .locator(".telemetry dt", has_text=metric)
        .locator("xpath=following-sibling::dd[1]")
    )
    return int(dd.locator(".chart").get_attribute("data-points") or 0)


def test_chart_grows_with_telemetry_and_a_late_panel_starts_full(
    open_panel: Callable[..., Any],
) -> None:
    a = open_panel("alice")
    tele = card(a, "lamp-1").locator(".telemetry")
    # a chart for each numeric field (the lamp's temperature), none for the boolean "on"
    expect(tele.locator(".chart")).to_have_count(1, timeout=10000)
    chart = tele.locator("dt", has_text="temperature").locator("xpath=following-sibling::dd[1]")
    expect(chart.locator(".chart")).to_have_attribute("aria-hidden", "true")
    expect(chart.locator(".val")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))  # the value, as text
    expect(chart.locator(".spark-line")).to_have_attribute("points", re.compile(r"\d"))
    first = points(a, "lamp-1", "temperature")
    time.sleep(3.5)  # the agent reports every second
    grown = points(a, "lamp-1", "temperature")
    assert grown >= first + 2, (first, grown)
    # a panel opened now draws the last minutes at once, from GET /api/devices/{id}/telemetry
    b = open_panel("bob")
    expect(card(b, "lamp-1").locator(".telemetry .chart")).to_have_count(1)
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
    button(tabs[7], "lamp-1", "status").click()
    line = re.compile(r"^alice: lamp-1 status → ok")
    for page in [*tabs, v]:
        expect(page.locator("#feed li .ev-text").first).to_have_text(line, timeout=10000)
    expect(card(tabs[7], "lamp-1").locator(".result")).to_have_attribute("data-kind", "ok")
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
    expect(card(page, "lamp-1").locator(".telemetry .chart")).to_have_count(1)
    expect(page.locator("#devices-off")).to_be_hidden()
    watch.check(screen)
