"""The browser tests with real devices: the UML test host, its chromium, page helpers.

vigil needs kernel SCTP for its control channel, which these machines do not
have, so the device tests run against one UML test host per module
(tests/uml/testhost.py): vigil with real SCTP and reference agents inside the
guest, the browser here, talking to it over a tap network, over HTTPS (the
module's chromium trusts the certificate the guest's vigil made for itself).

A module imports the fixtures ``host``, ``browser``, ``open_panel`` and
``free_leases`` from here and sets ``AGENTS`` (name → extra agent arguments)
and optionally ``CONTROL`` (more ``[control]`` keys, e.g. a short
``lease_idle``). Needs root, /dev/net/tun and an x86-64 host; without them
``require`` skips, and fails under CI=true.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browser_support import CONNECTED, call, chromium
from tests.uml.testhost import TestHost, require_test_host, uml_config, uml_test_host


@dataclass(frozen=True)
class Target:
    """Where vigil answers, for browser_support.call (HTTPS beside the browser)."""

    host: str
    tls_port: int
    cert: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    @classmethod
    def of(cls, host: TestHost) -> Target:
        return cls(host.guest_ip, host.tls_port, host.cert)


@pytest.fixture(scope="module")
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestHost]:
    require_test_host()
    control = getattr(request.module, "CONTROL", None) or {}
    text = uml_config(tmp_path_factory.mktemp("uml"), control=control)
    with uml_test_host(text, request.module.AGENTS) as h:
        yield h


@pytest.fixture(scope="module")
def browser(playwright: Any, host: TestHost) -> Iterator[Any]:
    """A chromium that trusts the certificate the guest's vigil made (not the session's)."""
    with chromium(playwright, host.cert) as b:
        yield b


@pytest.fixture
def open_panel(host: TestHost, contexts: Callable[..., Any]) -> Callable[..., Any]:
    """``open_panel(user, ctx=None)`` → a Page of the connected panel (in ``ctx``, or a
    context of its own: one person); ``page.dialogs`` collects alert() messages."""

    def open_(user: str, ctx: Any = None) -> Any:
        page = (ctx or contexts(user)).new_page()
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        page.goto(host.https_url + "/")
        page.wait_for_selector(CONNECTED)
        expect(card(page, "lamp-1")).to_be_visible()
        return page

    return open_


@pytest.fixture
def free_leases(host: TestHost) -> Iterator[None]:
    """After the test, every lease is released by its holder (the next test starts free)."""
    yield
    target = Target.of(host)
    status, _, devices = call(target, "GET", "/api/devices", "alice")
    assert status == 200, devices
    for dev in devices:
        lease = dev.get("lease")
        if lease:
            call(target, "DELETE", f"/api/devices/{dev['id']}/lease", lease["holder"])


def card(page: Any, device: str) -> Any:
    return page.locator(f'#device-list .device[data-id="{device}"]')


def entity(page: Any, device: str, key: str) -> Any:
    """The row of entity ``key`` on ``device``'s card."""
    return card(page, device).locator(f'.entity[data-key="{key}"]')


def power(page: Any, device: str) -> Any:
    """The switch of the reference lamp (server/agent/hardware.py, ``Lamp``)."""
    return card(page, device).get_by_role("switch", name="Power")


def message(page: Any, device: str, key: str) -> Any:
    """What the panel says about the last command to entity ``key``, beside its control."""
    return entity(page, device, key).locator(".ent-msg")


def people(page: Any) -> Any:
    return page.locator("#people-list .person .name")
