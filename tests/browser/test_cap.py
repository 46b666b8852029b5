"""The user cap: with 10 people online the 11th sees why they cannot work, and when."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browser_support import STATIC_TYPES, EventStream
from tests.support import ROOT, Vigil

TEN = [f"user{i:02d}" for i in range(1, 11)]


@pytest.fixture
def ten_online(vigil: Vigil) -> Iterator[list[EventStream]]:
    """user01..user10 online, each holding an event stream open."""
    streams = [EventStream(vigil, user) for user in TEN]
    yield streams
    for s in streams:
        s.close()


def test_eleventh_user_sees_the_cap_page(
    vigil: Vigil, ten_online: list[EventStream], contexts: Callable[..., Any]
) -> None:
    page = contexts("user11").new_page()
    response = page.goto(vigil.https + "/")
    assert response is not None and response.status == 503
    assert int(response.headers["retry-after"]) >= 1
    expect(page.locator("h1")).to_have_text(re.compile("full", re.I))
    expect(page.locator("body")).to_contain_text("10 people are online")
    # someone already online is not affected
    ok = contexts("user01").new_page()
    ok.goto(vigil.https + "/")
    expect(ok.locator("#conn")).to_have_attribute("data-state", "connected")


def serve_static_from_disk(page: Any) -> None:
    """Answer the panel's files from static/ (vigil would answer them with the 503 page)."""
    static = ROOT / "static"

    def handle(route: Any) -> None:
        name = route.request.url.split("/", 3)[3].split("?")[0] or "index.html"
        path = static / name
        if not path.is_file() or ".." in Path(name).parts:
            route.fulfill(status=404, body="")
            return
        route.fulfill(status=200, body=path.read_bytes(), content_type=STATIC_TYPES[path.suffix])

    page.route(re.compile(r"^https://[^/]+/(?!api/)[^?]*$"), handle)


FULL = {  # the panel's own words for the 503 (the server's are English, for scripts)
    "en": r"^The panel is full \(10 people online\), retrying in \d+ s\.$",
    "zh-CN": r"^面板已满（10 人在线），\d+ 秒后重试。$",
}


@pytest.mark.parametrize("lang", sorted(FULL))
def test_open_panel_waits_while_full_and_gets_in_when_a_slot_frees(
    vigil: Vigil,
    ten_online: list[EventStream],
    contexts: Callable[..., Any],
    zh_contexts: Callable[..., Any],
    lang: str,
) -> None:
    # The panel is already loaded (files served from disk) when its API calls meet the cap:
    # it shows why and retries by itself.
    page = (contexts if lang == "en" else zh_contexts)("user11").new_page()
    serve_static_from_disk(page)
    page.goto(vigil.https + "/")
    full = page.locator("#full")
    expect(full).to_be_visible()
    expect(page.locator("#full-text")).to_have_text(re.compile(FULL[lang]))
    expect(page.locator("#main")).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "full")
    ten_online[0].close()  # user01 leaves; after the grace (2 s) a slot is free
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=20000)
    expect(full).to_be_hidden()
    expect(page.locator("#me-user")).to_have_text("user11")
    expect(page.locator("#people-list .name")).to_have_count(10)
