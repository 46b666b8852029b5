"""Loading the panel: no console error, and no layout shift worth the name.

The outside audit (Lighthouse) found every load on a machine without kernel
SCTP logging a console error (GET /api/devices → 503 "control channel off")
and a cumulative layout shift of 0.109. The control channel is off in the
test config (these machines have no SCTP), as on such a machine: the panel
must show that as a normal state, log no error, and keep CLS under 0.1
(Lighthouse's "good"), on a desktop and on a phone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browser_support import CONNECTED, VIEWPORTS, LoadWatch
from tests.support import Vigil


@pytest.mark.parametrize("device", VIEWPORTS)
def test_load_without_console_errors_or_layout_shift(
    vigil: Vigil, contexts: Callable[..., Any], device: str
) -> None:
    page = contexts("alice", **VIEWPORTS[device]).new_page()
    watch = LoadWatch(page)
    page.goto(vigil.https + "/")
    page.wait_for_selector(CONNECTED)
    off = page.locator("#devices-off")
    expect(off).to_be_visible()
    expect(off).to_have_text(
        "control channel off: disabled in the config ([control] enabled = false)"
    )
    expect(page.locator("#devices-empty")).to_be_hidden()
    expect(page.locator("#device-list .device")).to_have_count(0)
    expect(page.locator("#people-list .name")).to_have_text(["alice"])
    watch.check(device)
