"""Two people on one panel: presence, chat, and user text shown as text."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from tests.browser.browser_support import call
from tests.support import Vigil

PersonPanel = Callable[..., Any]


def people(page: Any) -> list[str]:
    return page.locator("#people-list .name").all_text_contents()


def test_header_shows_user_role_and_connection(panel: PersonPanel) -> None:
    a = panel("alice")
    expect(a.locator("#me-user")).to_have_text("alice")
    expect(a.locator("#me-role")).to_have_text("operator")
    expect(a.locator("#conn")).to_have_text(re.compile("connected"))
    v = panel("vera")
    expect(v.locator("#me-role")).to_have_text("viewer")
    expect(v.locator("#viewer-note")).to_be_visible()
    assert not a.vigil_errors.errors and not v.vigil_errors.errors


def test_a_sees_b_join_live(panel: PersonPanel) -> None:
    a = panel("alice")
    expect(a.locator("#people-list .name")).to_have_text(["alice"])
    panel("bob")
    expect(a.locator("#people-list .name")).to_have_text(["alice", "bob"])
    expect(a.locator("#people-count")).to_have_text(re.compile(r"^2 of 10 online"))
    expect(a.locator("#feed")).to_contain_text("bob joined from 127.0.0.1")
    # since (local time) and address are shown for each person
    bob = a.locator("#people-list li", has_text="bob")
    expect(bob.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(bob).to_contain_text("127.0.0.1")


def test_a_sees_b_leave_when_b_closes(panel: PersonPanel) -> None:
    a = panel("alice")
    b = panel("bob")
    expect(a.locator("#people-list .name")).to_have_text(["alice", "bob"])
    b.context.close()
    # grace is 2 s in the test config; the reason is shown with the leave
    expect(a.locator("#people-list .name")).to_have_text(["alice"], timeout=10000)
    expect(a.locator("#presence-last")).to_have_text(
        re.compile(r"^bob left \((closed the panel|connection lost)\)")
    )
    expect(a.locator("#feed li").first).to_contain_text("bob left (")


def test_chat_both_ways(panel: PersonPanel) -> None:
    a = panel("alice")
    b = panel("bob")
    a.fill("#chat-text", "hello bob")
    a.press("#chat-text", "Enter")
    expect(b.locator("#chat-log .msg").last).to_contain_text("hello bob")
    expect(b.locator("#chat-log .msg").last.locator(".msg-user")).to_have_text("alice")
    expect(a.locator("#chat-text")).to_have_value("")
    b.fill("#chat-text", "hi alice")
    b.click("#chat-send")
    expect(a.locator("#chat-log .msg").last).to_contain_text("hi alice")
    # each message once, on both sides (POST answer and SSE event are merged)
    for page in (a, b):
        expect(page.locator("#chat-log .msg-text")).to_have_text(["hello bob", "hi alice"])


def test_chat_history_loads_for_latecomer(vigil: Vigil, panel: PersonPanel) -> None:
    status, _, _ = call(vigil, "POST", "/api/chat", "alice", {"text": "before you came"})
    assert status == 200
    b = panel("bob")
    expect(b.locator("#chat-log .msg-text")).to_have_text(["before you came"])


def test_injected_markup_in_chat_is_shown_as_text(panel: PersonPanel) -> None:
    payload = '<img src=x onerror="window.__pwned=1;alert(1)"><b>bold</b>'
    a = panel("alice")
    b = panel("bob")
    a.fill("#chat-text", payload)
    a.press("#chat-text", "Enter")
    for page in (a, b):
        msg = page.locator("#chat-log .msg-text").last
        expect(msg).to_have_text(payload)
        assert page.locator("#chat-log img, #chat-log b").count() == 0
    # the audit record of the chat (activity feed, loaded at start) is text too
    c = panel("user01")
    expect(c.locator("#feed")).to_contain_text(payload)
    for page in (a, b, c):
        assert page.locator("#feed img, #feed b").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert page.vigil_errors.dialogs == []


def test_chat_rejects_long_message_with_message(vigil: Vigil, panel: PersonPanel) -> None:
    a = panel("alice")
    # maxlength stops typing at 500; a longer body is refused by the server
    a.fill("#chat-text", "x" * 600)
    expect(a.locator("#chat-text")).to_have_value("x" * 500)
    expect(a.locator("#chat-hint")).to_have_text("0 characters left")
    status, _, body = call(vigil, "POST", "/api/chat", "alice", {"text": "x" * 501})
    assert status == 400 and "500" in body["error"]


def test_connection_indicator_follows_the_server(vigil: Vigil, panel: PersonPanel) -> None:
    a = panel("alice")
    vigil.stop()
    expect(a.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=10000)
    expect(a.locator("#conn")).to_have_text(re.compile("reconnecting"))
    again = Vigil(vigil.config)  # same port and audit log
    try:
        # the browser's own EventSource retry (default ~3 s) finds it again
        expect(a.locator("#conn")).to_have_attribute("data-state", "connected", timeout=20000)
        expect(a.locator("#people-list .name")).to_have_text(["alice"])
        a.fill("#chat-text", "still here")
        a.press("#chat-text", "Enter")
        expect(a.locator("#chat-log .msg-text").last).to_have_text("still here")
    finally:
        again.stop()


def test_phone_width_keyboard_and_screen_reader_basics(panel: PersonPanel) -> None:
    a = panel("alice", viewport={"width": 360, "height": 740}, color_scheme="dark")
    # nothing wider than a 360 px phone screen
    assert a.evaluate("document.documentElement.scrollWidth") <= 360
    # live regions for what changes by itself; the chat input has a label
    expect(a.locator("#feed")).to_have_attribute("aria-live", "polite")
    expect(a.locator("#chat-log")).to_have_attribute("aria-live", "polite")
    expect(a.locator("#conn")).to_have_attribute("role", "status")
    expect(a.get_by_label("Message", exact=True)).to_have_id("chat-text")
    # keyboard only: the first Tab reaches the skip link, the chat works with Enter
    a.keyboard.press("Tab")
    expect(a.locator(".skip")).to_be_focused()
    a.get_by_label("Message", exact=True).focus()
    a.keyboard.type("typed, not clicked")
    a.keyboard.press("Enter")
    expect(a.locator("#chat-log .msg-text").last).to_have_text("typed, not clicked")
    # no inline style or event-handler attributes anywhere (the CSP forbids them)
    assert a.locator("[style]").count() == 0
    assert (
        a.evaluate(
            "[...document.querySelectorAll('*')].some(e => [...e.attributes]"
            ".some(x => x.name.startsWith('on')))"
        )
        is False
    )
