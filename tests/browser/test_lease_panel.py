"""Device leases in the panel: one operator at a time, seen by everyone, freed when they vanish.

Two (or three) people, each in a browser context of their own, on real
devices (the UML test host, tests/browser/uml_support.py) with a short
``lease_idle``. What each of them sees: who holds a device and since when,
a Take / Release button, "held by alice" on the controls, a 409 beside
the control, a take-over asked in a <dialog>, and the end of a lease with
its reason: released, taken over, idle, device offline, and ``lost`` when
the holder's cable is pulled (the holder then is a client in a network
namespace routed to the guest, tests/netns.py). When the holder vanished
(idle, lost), vigil switches the lamp's ``power`` to its safe value, off,
and everyone sees that it did, and why.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browser_support import call
from tests.browser.uml_support import (
    Target,
    TestHost,
    browser,
    card,
    free_leases,
    host,
    message,
    open_panel,
    power,
)
from tests.netns import HOST, HOST_DEV, NAME, SUBNET, Namespace, available
from tests.support import basic, require

__all__ = ["browser", "free_leases", "host", "open_panel"]  # fixtures, used by name

AGENTS = {"lamp-1": [], "lamp-2": []}
LEASE_IDLE = 6
CONTROL = {"lease_idle": LEASE_IDLE}
HHMM = r"\d{1,2}:\d{2}(\s?[AP]M)?"
pytestmark = pytest.mark.usefixtures("free_leases")


def lease(page: Any, device: str = "lamp-1") -> Any:
    return card(page, device).locator(".lease")


def lease_button(page: Any, device: str = "lamp-1") -> Any:
    return card(page, device).locator(".lease-btn")


def result(page: Any, device: str = "lamp-1") -> Any:
    """The card's word about its lease ("bob took lamp-1 over from you")."""
    return card(page, device).locator(".result")


def answer(page: Any, device: str = "lamp-1") -> Any:
    """The answer to the last command to the lamp's power switch, beside it."""
    return message(page, device, "power")


def take(page: Any, device: str = "lamp-1") -> None:
    expect(lease_button(page, device)).to_have_text("Take")
    lease_button(page, device).click()
    expect(lease(page, device)).to_have_attribute("data-state", "mine")


def test_a_takes_b_sees_the_holder_and_gets_409_a_releases_b_can(
    open_panel: Callable[..., Any],
) -> None:
    a = open_panel("alice")
    b = open_panel("bob")
    v = open_panel("vera")
    for page in (a, b, v):
        expect(lease(page)).to_have_text("free")
    take(a)
    expect(lease(a)).to_have_text(re.compile(rf"^held by you since {HHMM}$"))
    expect(lease_button(a)).to_have_text("Release")
    for page in (b, v):
        expect(lease(page)).to_have_attribute("data-state", "held")
        expect(lease(page)).to_have_text(re.compile(rf"^held by alice since {HHMM}$"))
    # bob's controls say who holds the device; using one anyway: the 409, beside it
    expect(lease_button(b)).to_have_text("Take over…")
    for control in card(b, "lamp-1").locator(".entity :is(button, input)").all():
        expect(control).to_have_attribute("title", "held by alice")
        expect(control).to_be_enabled()
    power(b, "lamp-1").click()
    expect(answer(b)).to_have_attribute("data-kind", "fail")
    expect(answer(b)).to_contain_text(re.compile(r"^refused: lamp-1 is held by alice since"))
    # a viewer sees the holder, but has no lease button
    expect(lease_button(v)).to_be_hidden()
    # alice releases: everyone sees it, and bob's command goes through (taking the lease)
    lease_button(a).click()
    for page in (a, b, v):
        expect(lease(page)).to_have_attribute("data-state", re.compile("free"))
        expect(lease(page)).to_have_text("free · alice's lease ended: released")
    power(b, "lamp-1").click()
    expect(answer(b)).to_have_attribute("data-kind", "ok")
    expect(lease(b)).to_have_attribute("data-state", "mine")
    expect(lease(a)).to_have_text(re.compile(rf"^held by bob since {HHMM}$"))
    expect(a.locator("#feed")).to_contain_text("bob holds Lamp lamp-1 (lamp-1)")


def test_take_over_asks_first_and_the_previous_holder_sees_it(
    open_panel: Callable[..., Any],
) -> None:
    a = open_panel("alice")
    b = open_panel("bob")
    take(a)
    expect(lease(b)).to_have_attribute("data-holder", "alice")
    since = lease(b).locator("time").inner_text()
    dialog = b.locator("#takeover")
    # asked in a real, modal dialog; Cancel changes nothing
    lease_button(b).click()
    expect(dialog).to_be_visible()
    expect(b.get_by_role("dialog", name="Take over the device?")).to_be_visible()
    expect(dialog.locator("#takeover-text")).to_have_text(
        f"alice holds lamp-1 since {since} — take over?"
    )
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(lease_button(b)).to_be_focused()
    expect(lease(a)).to_have_attribute("data-state", "mine")
    # confirmed: bob holds it, and alice sees at once that it was taken from her
    lease_button(b).click()
    b.keyboard.press("Tab")  # from Cancel (autofocus) to "Take over"
    b.keyboard.press("Enter")
    expect(lease(b)).to_have_attribute("data-state", "mine")
    expect(lease(a)).to_have_text(re.compile(rf"^held by bob since {HHMM}$"), timeout=3000)
    expect(result(a)).to_have_text(re.compile(r"^bob took lamp-1 over from you"))
    expect(a.locator("#feed")).to_contain_text("alice's lease ended: taken over by bob")
    power(a, "lamp-1").click()
    expect(answer(a)).to_contain_text("refused: lamp-1 is held by bob")
    assert a.dialogs == [] and b.dialogs == []  # no window.confirm / alert


def test_an_idle_lease_ends_by_itself(open_panel: Callable[..., Any]) -> None:
    a = open_panel("alice")
    b = open_panel("bob")
    take(a)
    expect(lease(b)).to_have_attribute("data-holder", "alice")
    if power(a, "lamp-1").get_attribute("aria-checked") != "true":
        power(a, "lamp-1").click()
    expect(power(b, "lamp-1")).to_be_checked()
    started = time.monotonic()
    expect(lease(b)).to_have_attribute("data-reason", "idle", timeout=(LEASE_IDLE + 5) * 1000)
    assert time.monotonic() - started >= LEASE_IDLE - 1.5
    expect(lease(b)).to_have_text("free · alice's lease ended: idle too long")
    expect(lease(a)).to_have_attribute("data-state", "free")
    expect(lease_button(a)).to_have_text("Take")
    # alice is gone from the lamp: vigil switched it to its safe state, off, and says why
    for page in (a, b):
        expect(power(page, "lamp-1")).not_to_be_checked()
        expect(page.locator("#feed li .ev-text").filter(has_text="power").first).to_have_text(
            re.compile(r"^vigil set lamp-1 power off: safe state: alice idle → ok")
        )


def test_a_device_going_offline_ends_its_lease(
    host: TestHost, open_panel: Callable[..., Any]
) -> None:
    a = open_panel("alice")
    b = open_panel("bob")
    take(a, "lamp-2")
    expect(lease(b, "lamp-2")).to_have_attribute("data-holder", "alice")
    host.kill_agent("lamp-2")
    for page in (a, b):
        expect(lease(page, "lamp-2")).to_have_attribute("data-reason", "device offline")
        expect(lease(page, "lamp-2")).to_have_text("free · alice's lease ended: device offline")
        expect(lease_button(page, "lamp-2")).to_be_disabled()
    host.start_agent("lamp-2")
    expect(lease_button(b, "lamp-2")).to_be_enabled(timeout=10000)
    expect(lease(b, "lamp-1")).to_have_attribute("data-state", "free")  # lamp-1 unaffected


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def namespace_to_guest(host: TestHost) -> Iterator[Namespace]:
    """The network namespace of tests/netns.py, routed to the guest through this host.

    The guest knows only its tap network, so what leaves the namespace for it
    is masqueraded to this host's tap address (vigil sees it come from
    ``host.host_ip``, like the browser). Forwarding is switched on for the
    two devices only, never for the whole host.
    """
    ok, why = available()
    require(ok, why)
    tap = host.tap.name
    table = "vigil_lease_nat"
    with Namespace() as ns:
        try:
            _run("ip", "-n", NAME, "route", "add", f"{host.guest_ip}/32", "via", HOST)
            for dev in (HOST_DEV, tap):
                _run("sysctl", "-qw", f"net.ipv4.conf.{dev}.forwarding=1")
            rules = (
                f"table ip {table} {{\n chain post {{ type nat hook postrouting priority srcnat;"
                f" ip saddr {SUBNET} oifname {tap} masquerade; }}\n}}\n"
            )
            subprocess.run(["nft", "-f", "-"], input=rules, check=True, text=True)
            yield ns
        finally:
            subprocess.run(["nft", "delete", "table", "ip", table], check=False)
            subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.{tap}.forwarding=0"], check=False)


def test_the_holders_cable_is_pulled_the_lease_ends_lost_within_3_s(
    host: TestHost, open_panel: Callable[..., Any]
) -> None:
    b = open_panel("bob")
    with namespace_to_guest(host) as ns:
        # alice is online only through her event stream from the namespace ...
        ns.client(host.https_url, basic("alice"), "sse", timeout=10, cafile=host.cert)
        expect(b.locator("#people-list .name")).to_have_text(["alice", "bob"])
        # ... and takes lamp-1 (one request beside it, closed at once)
        status, _, body = call(Target.of(host), "POST", "/api/devices/lamp-1/lease", "alice")
        assert status == 200 and body["lease"]["holder"] == "alice", body
        expect(lease(b)).to_have_attribute("data-holder", "alice")
        on = {"entity": "power", "value": True}
        status, _, body = call(Target.of(host), "POST", "/api/devices/lamp-1/commands", "alice", on)
        assert status == 200 and body["state"] is True, body
        expect(power(b, "lamp-1")).to_be_checked()
        power(b, "lamp-1").click()
        expect(answer(b)).to_contain_text("refused: lamp-1 is held by alice")
        pulled = ns.pull()
        expect(lease(b)).to_have_attribute("data-reason", "lost", timeout=6000)
        took = time.monotonic() - pulled
        print(f"the lease ended (lost) {took:.2f} s after the cable was pulled")
        assert took <= 4.0, f"the lease ended {took:.2f} s after the cable was pulled"
        expect(lease(b)).to_have_text("free · alice's lease ended: connection lost")
        # and vigil switched the lamp off, its safe state, for everyone to see
        expect(power(b, "lamp-1")).not_to_be_checked()
        expect(b.locator("#feed")).to_contain_text(
            "vigil set lamp-1 power off: safe state: alice lost → ok"
        )
        power(b, "lamp-1").click()
        expect(answer(b)).to_have_attribute("data-kind", "ok")
        expect(power(b, "lamp-1")).to_be_checked()
        expect(b.locator("#people-list .name")).to_have_text(["bob"])
