"""The panel in many tabs of one browser: one event stream, shared (static/stream.js).

A browser keeps at most 6 HTTP/1.1 connections per host; with an EventSource
per tab the 7th tab never loaded and the first could not send anything. Here
8 tabs of one context (one person's browser) must all be live on one stream,
and when the tab holding it closes, another takes over without a reload and
without missing an event.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from tests.browser.browser_support import CONNECTED, EventStream, call, eventually
from tests.support import Vigil

TABS = 8


class Streams:
    """The /api/events requests of a browser context, and which of them are still open."""

    def __init__(self, ctx: Any) -> None:
        self.urls: list[str] = []
        self.open: set[Any] = set()
        self.other: list[str] = []  # every other request, in order
        ctx.on("request", self._request)
        ctx.on("requestfinished", self._done)
        ctx.on("requestfailed", self._done)

    def _done(self, req: Any) -> None:
        self.open.discard(req)

    def live(self) -> list[str]:
        """The streams still open in pages still open (a closed page ends its own)."""
        return [r.url for r in self.open if not r.frame.page.is_closed()]

    def _request(self, req: Any) -> None:
        if "/api/events" in req.url:
            self.urls.append(req.url)
            self.open.add(req)
        else:
            self.other.append(req.url)


def open_tabs(vigil: Vigil, ctx: Any, n: int) -> list[Any]:
    pages = []
    for _ in range(n):
        page = ctx.new_page()
        page.goto(vigil.https + "/")
        pages.append(page)
    for page in pages:
        page.wait_for_selector(CONNECTED)
        expect(page.locator("#me-user")).to_have_text("alice")
    return pages


def names(page: Any) -> Any:
    return page.locator("#people-list .name")


def test_eight_tabs_share_one_stream_and_all_are_live(
    vigil: Vigil, contexts: Callable[..., Any]
) -> None:
    ctx = contexts("alice")
    streams = Streams(ctx)
    tabs = open_tabs(vigil, ctx, TABS)
    roles = [t.evaluate("document.documentElement.dataset.streamRole") for t in tabs]
    assert roles == ["leader"] + ["follower"] * (TABS - 1)
    assert len(streams.live()) == 1, streams.urls
    # presence counts the person once, and is live in every tab
    for t in tabs:
        expect(names(t)).to_have_text(["alice"])
        expect(t.locator("#people-count")).to_have_text(re.compile(r"^1 of 10 online"))
    bob = EventStream(vigil, "bob")
    try:
        for t in tabs:
            expect(names(t)).to_have_text(["alice", "bob"])
        # the 8th tab can send, and everyone, tabs and others, gets it
        tabs[-1].fill("#chat-text", "from the eighth tab")
        tabs[-1].press("#chat-text", "Enter")
        for t in tabs:
            expect(t.locator("#chat-log .msg-text")).to_have_text(["from the eighth tab"])
        # and the first tab can still make requests of its own
        tabs[0].fill("#chat-text", "and from the first")
        tabs[0].press("#chat-text", "Enter")
        for t in tabs:
            expect(t.locator("#chat-log .msg-text").last).to_have_text("and from the first")
        status, _, body = call(vigil, "GET", "/api/users", "bob")
        assert status == 200 and sorted(p["user"] for p in body["online"]) == ["alice", "bob"]
    finally:
        bob.close()
    for t in tabs:
        expect(names(t)).to_have_text(["alice"], timeout=10000)
    assert len(streams.live()) == 1, streams.urls


def test_leader_tab_closes_the_others_keep_every_event(
    vigil: Vigil, contexts: Callable[..., Any]
) -> None:
    ctx = contexts("alice")
    streams = Streams(ctx)
    tabs = open_tabs(vigil, ctx, 4)
    leader, rest = tabs[0], tabs[1:]
    assert leader.evaluate("document.documentElement.dataset.streamRole") == "leader"
    texts = [f"message {i:02d}" for i in range(30)]
    sent: list[str] = []

    def chatter() -> None:  # bob talks on while the stream changes hands
        for text in texts:
            status, _, _ = call(vigil, "POST", "/api/chat", "bob", {"text": text})
            assert status == 200
            sent.append(text)
            time.sleep(0.05)

    talk = threading.Thread(target=chatter)
    talk.start()
    eventually(lambda: len(sent) >= 10, what="the first messages")
    seen = len(streams.other)
    leader.close()
    talk.join(30)
    assert sent == texts
    for t in rest:
        expect(t.locator("#chat-log .msg-text")).to_have_text(texts, timeout=10000)
        expect(t.locator("#conn")).to_have_attribute("data-state", "connected")
    # one tab took the lock and resumed after the last event id it had seen ...
    roles = [t.evaluate("document.documentElement.dataset.streamRole") for t in rest]
    assert sorted(roles) == ["follower", "follower", "leader"]
    assert len(streams.live()) == 1, streams.urls
    resumed = streams.urls[-1]
    assert re.search(r"/api/events\?last_event_id=\d+$", resumed), streams.urls
    # ... so the server replayed what came in between: no tab reloaded or resynchronised
    assert not [u for u in streams.other[seen:] if re.search(r"/api/(chat|audit|users)\b", u)]
    # the new leader relays as the old one did
    rest[-1].fill("#chat-text", "after the hand-over")
    rest[-1].press("#chat-text", "Enter")
    for t in rest:
        expect(t.locator("#chat-log .msg-text").last).to_have_text("after the hand-over")


def test_without_web_locks_each_tab_has_a_stream_of_its_own(
    vigil: Vigil, contexts: Callable[..., Any]
) -> None:
    ctx = contexts("alice")
    ctx.add_init_script("delete Navigator.prototype.locks;")  # a browser without Web Locks
    streams = Streams(ctx)
    tabs = open_tabs(vigil, ctx, 2)
    assert [t.evaluate("document.documentElement.dataset.streamRole") for t in tabs] == [
        "alone",
        "alone",
    ]
    assert len(streams.live()) == 2, streams.urls
    tabs[1].fill("#chat-text", "the old way")
    tabs[1].press("#chat-text", "Enter")
    for t in tabs:
        expect(t.locator("#chat-log .msg-text")).to_have_text(["the old way"])
        expect(names(t)).to_have_text(["alice"])
