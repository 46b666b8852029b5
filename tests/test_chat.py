"""The chat room, in-process: broadcast to every stream, history, limits, restarts.

``POST /api/chat`` ``{"text"}`` (1 to 500 characters, not only whitespace,
valid UTF-8, ``application/json``) → 200 and a ``chat`` event to every
stream; anyone logged in may chat, viewers too. ``GET /api/chat`` gives the
last 100 messages, which come back after a restart (they live in the audit log).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.support import CHATTY
from tests.testclient import App

JSON = "application/json"


def text(value: object) -> bytes:
    return json.dumps({"text": value}).encode()


def history(app: App) -> list[dict[str, Any]]:
    r = app.client().get("/api/chat", "vera")
    assert r.status == 200
    return list(r.json()["messages"])


def test_a_message_reaches_every_stream_and_the_history(app: App) -> None:
    streams = {u: app.client() for u in ("alice", "bob", "vera")}
    for user, stream in streams.items():
        assert stream.get("/api/events", user).status == 200
        assert [e.type for e in stream.events()] == ["reset"]
    c = app.client()
    r = c.post("/api/chat", {"text": "hello from a viewer ✓"}, "vera")  # viewers may chat
    assert r.status == 200, r
    sent = r.json()
    assert sent["user"] == "vera" and sent["text"] == "hello from a viewer ✓"
    assert {"id", "time"} <= set(sent)
    for user, stream in streams.items():
        chats = [e for e in stream.events() if e.type == "chat"]
        assert [e.data for e in chats] == [sent], f"{user} got {chats}"
    assert history(app)[-1] == sent


# (case, body, content type, extra headers, expected status)
LIMITS: list[tuple[str, bytes, str | None, dict[str, str], int]] = [
    ("empty", text(""), JSON, {}, 400),
    ("whitespace only", text(" \t\n "), JSON, {}, 400),
    ("501 characters", text("x" * 501), JSON, {}, 400),
    ("500 characters", text("x" * 500), JSON, {}, 200),
    ("500 four-byte characters", text("😀" * 500), JSON, {}, 200),
    ("501 four-byte characters", text("😀" * 501), JSON, {}, 400),
    ("one character", text("x"), JSON, {}, 200),
    ("charset parameter", text("ok"), "application/json; charset=utf-8", {}, 200),
    ("not UTF-8", b'{"text": "caf\xe9"}', JSON, {}, 400),
    ("lone surrogate (not UTF-8 text)", b'{"text": "\\ud800"}', JSON, {}, 400),
    ("not JSON", b"hello", JSON, {}, 400),
    ("JSON, not an object", b'["hello"]', JSON, {}, 400),
    ("text not a string", text(5), JSON, {}, 400),
    ("no text", b"{}", JSON, {}, 400),
    ("text/plain", b"hello", "text/plain", {}, 415),
    ("form", b"text=hello", "application/x-www-form-urlencoded", {}, 415),
    ("no content type", text("hello"), None, {}, 415),
    ("another site", text("hello"), JSON, {"Origin": "http://evil.example"}, 403),
]


def test_limits(app: App) -> None:
    c = app.client()
    before = len(history(app))
    accepted = 0
    for case, body, ctype, extra, status in LIMITS:
        r = c.request("POST", "/api/chat", headers={"Content-Type": ctype, **extra}, body=body)
        assert r.status == status, f"{case}: {r.status} {r.body!r}"
        if status != 200:
            assert "error" in r.json(), case
        accepted += status == 200
    assert len(history(app)) == before + accepted
    assert app.client().get("/healthz", None).status == 200


def test_other_methods_are_405(app: App) -> None:
    r = app.client().request("PUT", "/api/chat")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD, POST"


def test_history_survives_a_restart(make_app: Callable[..., App]) -> None:
    app = make_app(CHATTY)
    c = app.client()
    c.post_chats("bob", [f"message {i}" for i in range(105)])
    kept = history(app)
    assert [m["text"] for m in kept] == [f"message {i}" for i in range(5, 105)]
    app.server.shutdown()
    app.advance(2)
    app.close()
    again = make_app(CHATTY, directory=app.directory)  # same config, same audit log
    assert history(again) == kept
    r = again.client().post("/api/chat", {"text": "after the restart"})
    assert r.status == 200
    assert r.json()["id"] > kept[-1]["id"]
    assert history(again)[-1]["text"] == "after the restart"
