"""Real devices in the panel, several people at once, in Debian's chromium.

vigil needs kernel SCTP for its control channel, which these machines do not
have, so the whole module runs against one UML test host (tests/uml/testhost.py,
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

import os
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_support import call, chromium
from playwright.sync_api import expect
from support import ROOT, require, write_config

sys.path.insert(0, str(ROOT / "tests" / "uml"))

from kernel import unsupported
from testhost import TestHost, uml_test_host

CONNECTED = "#conn[data-state=connected]"
COMMANDS = ["on", "off", "toggle", "status"]  # server/agent.py's Lamp
MARKUP = "<img src=x onerror=\"document.title='pwned'\">"
EVIL_NAME = f"Lamp {MARKUP}"
AGENTS = {
    "lamp-1": [],
    "lamp-2": ["--label", EVIL_NAME, "--reply-delay", "30"],
}


@dataclass(frozen=True)
class Target:
    """Where vigil answers, for browser_support.call (HTTPS beside the browser)."""

    host: str
    tls_port: int
    cert: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def uml_config(directory: Path) -> str:
    """The test users, vigil reachable from this host, the control channel on."""
    sections = {
        "http": {"host": "0.0.0.0", "port": 8080},
        "auth": {"allow": ["10.213.1.0/24", "127.0.0.0/8"]},
        "control": {"enabled": True, "port": 9900},
        "audit": {"path": "audit.jsonl"},
    }
    return write_config(directory, sections).read_text()


def require_test_host() -> None:
    require(
        os.geteuid() == 0 and os.path.exists("/dev/net/tun"),
        "the UML test host's tap network needs root and /dev/net/tun",
    )
    reason = unsupported()
    require(reason is None, reason or "")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    require_test_host()
    with uml_test_host(uml_config(tmp_path_factory.mktemp("uml")), AGENTS) as h:
        yield h


@pytest.fixture(scope="module")
def browser(playwright: Any, host: TestHost) -> Iterator[Any]:
    """A chromium that trusts the certificate the guest's vigil made (not the session's)."""
    with chromium(playwright, host.cert) as b:
        yield b


@pytest.fixture
def open_panel(host: TestHost, contexts: Callable[..., Any]) -> Callable[..., Any]:
    """``open_panel(user)`` → a Page of the connected panel; ``page.dialogs`` collects alerts."""

    def open_(user: str) -> Any:
        page = contexts(user).new_page()
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        page.goto(host.https_url + "/")
        page.wait_for_selector(CONNECTED)
        expect(card(page, "lamp-1")).to_be_visible()
        return page

    return open_


def card(page: Any, device: str) -> Any:
    return page.locator(f'#device-list .device[data-id="{device}"]')


def button(page: Any, device: str, action: str) -> Any:
    return card(page, device).locator(f'button.cmd[data-action="{action}"]')


def people(page: Any) -> Any:
    return page.locator("#people-list .person .name")


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
    target = Target(host.guest_ip, host.tls_port, host.cert)
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
