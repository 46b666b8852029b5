"""In-process: who gets in and what they may do.

Brute-force lockout and its expiry (per address and name: 127.0.0.2 is
another address), who can log in at all, roles, cross-site requests. The
allow-list, which acts at accept: tests/test_auth_e2e.py; the rationing of
failed checks: tests/test_gate.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import password
from tests.testclient import App

WINDOW = 2  # [auth] lockout_window in these tests: short, so expiry is quick
FAILURES = 5


@pytest.fixture
def lockout_app(make_app: Callable[..., App]) -> App:
    return make_app(
        # the lockout alone: failed checks are not rationed here (test_gate.py does that)
        {
            "auth": {
                "lockout_failures": FAILURES,
                "lockout_window": WINDOW,
                "hash_share_address": 1.0,
                "hash_share_total": 1.0,
            }
        },
        users={"alice": "operator", "bob": "operator"},
    )


def test_lockout_after_failures_then_expiry(lockout_app: App) -> None:
    app = lockout_app
    c, other = app.client(), app.client("127.0.0.2")
    for _ in range(FAILURES - 1):
        assert c.me("alice", "wrong").status == 401
    assert c.me("alice", "wrong").status == 429  # the last failure locks

    locked = c.me("alice")  # the right password, but the pair is locked
    assert locked.status == 429
    assert locked.json()["error"]
    assert int(locked.headers["retry-after"]) == WINDOW

    app.advance(0.5)  # (the password checks just spent refill)
    assert c.me("bob").json()["user"] == "bob"  # another user, same address
    assert other.me("alice").json()["user"] == "alice"  # same user, another address
    assert c.me("alice").status == 429  # still locked

    app.advance(WINDOW - 0.5 - 0.1)
    assert c.me("alice").status == 429  # until the window is over ...
    app.advance(0.2)
    assert c.me("alice").json() == {"user": "alice", "role": "operator"}  # ... not longer


def test_failures_older_than_the_window_are_forgotten(lockout_app: App) -> None:
    c = lockout_app.client()
    for _ in range(FAILURES - 1):
        assert c.me("alice", "wrong").status == 401
    lockout_app.advance(WINDOW + 0.2)
    for _ in range(FAILURES - 1):
        assert c.me("alice", "wrong").status == 401
    assert c.me("alice").status == 200


def test_lockout_with_default_settings_says_when_to_retry(make_app: Callable[..., App]) -> None:
    c = make_app(users={"alice": "operator"}).client()
    statuses = [c.me("alice", "wrong").status for _ in range(5)]
    assert statuses == [401] * 4 + [429]
    resp = c.me("alice")
    assert resp.status == 429
    assert int(resp.headers["retry-after"]) == 60  # lockout_window's default


def test_viewer_cannot_send_commands(app: App) -> None:
    body = {"entity": "power", "value": True}
    c = app.client()
    assert c.me("vera").json() == {"user": "vera", "role": "viewer"}
    resp = c.post("/api/devices/lamp-1/commands", body, "vera")
    assert resp.status == 403
    assert "viewer" in resp.json()["error"]
    # an operator passes the role check (the control channel is off in tests)
    resp = c.post("/api/devices/lamp-1/commands", body, "alice")
    assert resp.status == 503
    assert resp.json()["error"].startswith("control channel off")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"Origin": "http://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
        ({"Origin": "http://vigil.test"}, 200),  # the Host the request names
    ],
)
def test_cross_site_posts_are_refused(app: App, headers: dict[str, str], status: int) -> None:
    resp = app.client().post("/api/chat", {"text": "hello"}, headers=headers)
    assert resp.status == status
    if status == 403:
        assert resp.json()["error"]
    else:
        assert resp.json()["text"] == "hello"


def test_every_known_user_can_log_in_and_others_cannot(app: App) -> None:
    c = app.client()
    assert c.me("bob").json() == {"user": "bob", "role": "operator"}
    assert c.me("bob", password("alice")).status == 401
    assert c.me("Bob", password("bob")).status == 401
