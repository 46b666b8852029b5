"""The chat room end to end: broadcast to every stream, history, limits, restarts.

``POST /api/chat`` ``{"text"}`` (1 to 500 characters, not only whitespace,
valid UTF-8, ``application/json``) → 200 and a ``chat`` event to every
stream; anyone logged in may chat, viewers too. ``GET /api/chat`` gives the
last 100 messages, which come back after a restart (they live in the audit log).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from netns import EventWatcher
from support import Vigil, basic

JSON = "application/json"


def post(
    vigil: Vigil,
    user: str,
    body: bytes,
    ctype: str | None = JSON,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {"Authorization": basic(user), **(extra or {})}
    if ctype is not None:
        headers["Content-Type"] = ctype
    return httpx.post(f"{vigil.base}/api/chat", content=body, headers=headers)


def text(value: object) -> bytes:
    return json.dumps({"text": value}).encode()


def history(vigil: Vigil) -> list[dict[str, object]]:
    r = httpx.get(f"{vigil.base}/api/chat", headers={"Authorization": basic("vera")})
    assert r.status_code == 200
    return list(r.json()["messages"])


def test_a_message_reaches_every_stream_and_the_history(vigil: Vigil) -> None:
    watchers = {u: EventWatcher(vigil.base, basic(u)) for u in ("alice", "bob", "vera")}
    try:
        r = post(vigil, "vera", text("hello from a viewer ✓"))  # viewers may chat
        assert r.status_code == 200, r.text
        sent = r.json()
        assert sent["user"] == "vera" and sent["text"] == "hello from a viewer ✓"
        assert {"id", "time"} <= set(sent)
        for user, watcher in watchers.items():
            got = watcher.wait_for(lambda e: e.type == "chat", 2)
            assert got is not None, f"{user} got no chat event"
            assert got.data == sent
        assert history(vigil)[-1] == sent
    finally:
        for watcher in watchers.values():
            watcher.close()


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


def test_limits(vigil: Vigil) -> None:
    before = len(history(vigil))
    accepted = 0
    for case, body, ctype, extra, status in LIMITS:
        r = post(vigil, "alice", body, ctype, extra)
        assert r.status_code == status, f"{case}: {r.status_code} {r.text}"
        if status != 200:
            assert "error" in r.json(), case
        accepted += status == 200
    assert len(history(vigil)) == before + accepted
    assert httpx.get(f"{vigil.base}/healthz").status_code == 200


def test_other_methods_are_405(vigil: Vigil) -> None:
    r = httpx.put(f"{vigil.base}/api/chat", headers={"Authorization": basic("alice")})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"


def test_history_survives_a_restart(start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil()
    with httpx.Client(base_url=vigil.base, headers={"Authorization": basic("bob")}) as c:
        for i in range(105):
            assert c.post("/api/chat", json={"text": f"message {i}"}).status_code == 200
    kept = history(vigil)
    assert [m["text"] for m in kept] == [f"message {i}" for i in range(5, 105)]
    vigil.stop()
    again = Vigil(vigil.config)  # same config, same audit log
    try:
        assert history(again) == kept
        r = post(again, "alice", text("after the restart"))
        assert r.status_code == 200
        assert r.json()["id"] > kept[-1]["id"]  # type: ignore[operator]
        assert history(again)[-1]["text"] == "after the restart"
    finally:
        again.stop()
