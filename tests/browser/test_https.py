"""The panel over HTTPS in chromium: one certificate trusted, by its key, and no other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Error

from tests.support import Vigil

PersonPanel = Callable[..., Any]


def test_the_panel_and_its_event_stream_run_over_https(vigil: Vigil, panel: PersonPanel) -> None:
    a = panel("alice")
    assert a.url == vigil.https + "/"
    assert a.evaluate("location.protocol") == "https:"
    assert a.evaluate("window.isSecureContext") is True
    # the panel's own requests went to the same origin: no mixed content, no redirect
    status = a.evaluate("fetch('/api/me').then(r => [r.status, r.url])")
    assert status == [200, vigil.https + "/api/me"]


def test_a_vigil_with_another_certificate_is_not_trusted(
    start_vigil: Callable[..., Vigil], contexts: Callable[..., Any]
) -> None:
    other = start_vigil()  # it makes a certificate of its own, which this chromium never saw
    page = contexts("alice").new_page()
    with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
        page.goto(other.https + "/")
