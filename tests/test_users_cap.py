"""In-process: at most ``max_users`` people online; the next one waits for a free slot.

Each person holds one authenticated keep-alive connection. Closing it
cleanly (FIN) keeps its user online for ``[presence] grace`` seconds, on
the test's clock.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.testclient import App, Client

GRACE = 0.5
MAX_USERS = 10
PEOPLE = [f"user{i:02d}" for i in range(1, MAX_USERS + 1)]
NEXT = "user11"


@pytest.fixture
def full(make_app: Callable[..., App]) -> tuple[App, dict[str, Client]]:
    """A vigil with ``MAX_USERS`` people online, each holding a keep-alive connection."""
    app = make_app({"auth": {"max_users": MAX_USERS}, "presence": {"grace": GRACE}})
    clients = {u: app.client() for u in PEOPLE}
    for user, c in clients.items():
        assert c.me(user).json()["user"] == user
    return app, clients


def test_the_next_user_gets_503_with_retry_after(full: tuple[App, dict[str, Client]]) -> None:
    app, clients = full
    c = app.client()
    resp = c.me(NEXT, headers={"Accept": "application/json"})
    assert resp.status == 503
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["cache-control"] == "no-store"
    message = resp.json()["error"]
    assert "full" in message and str(MAX_USERS) in message

    page = c.me(NEXT, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status == 503
    assert page.headers["content-type"].startswith("text/html")
    assert int(page.headers["retry-after"]) >= 1
    text = page.body.decode()
    assert text.lstrip().lower().startswith("<!doctype html")
    assert "full" in text

    # people already online keep working, also on new connections
    assert c.me(PEOPLE[3]).json()["user"] == PEOPLE[3]
    users = clients[PEOPLE[0]].get("/api/users", PEOPLE[0]).json()
    assert users["max_users"] == MAX_USERS
    assert sorted(u["user"] for u in users["online"]) == PEOPLE


def test_a_slot_freed_by_a_clean_close_admits_the_next_user_after_grace(
    full: tuple[App, dict[str, Client]],
) -> None:
    app, clients = full
    leaving = PEOPLE[4]
    clients.pop(leaving).close()
    c = app.client()
    first = c.me(NEXT)  # still in the grace period
    assert first.status == 503
    assert 1 <= int(first.headers["retry-after"]) <= 1 + GRACE
    app.advance(GRACE - 0.1)
    assert c.me(NEXT).status == 503  # not a moment before the grace is over
    app.advance(0.2)
    assert c.me(NEXT).json()["user"] == NEXT
    assert sorted(c.online(NEXT)) == sorted([*PEOPLE[:4], *PEOPLE[5:], NEXT])
    # now the one who left is the one too many
    assert app.client().me(leaving).status == 503


def test_returning_within_grace_keeps_the_slot(full: tuple[App, dict[str, Client]]) -> None:
    app, clients = full
    clients.pop(PEOPLE[0]).close()
    back, other = app.client(), app.client()
    app.advance(GRACE - 0.1)
    assert back.me(PEOPLE[0]).status == 200  # within grace: still theirs
    app.advance(GRACE + 0.5)
    assert other.me(NEXT).status == 503
    assert PEOPLE[0] in back.online(PEOPLE[0])


def test_users_lists_the_people_online(make_app: Callable[..., App]) -> None:
    app = make_app({"presence": {"grace": GRACE}})
    a, b = app.client(), app.client("10.1.2.3")
    assert a.online("alice") == ["alice"]
    assert b.me("vera").status == 200
    resp = a.get("/api/users").json()
    assert resp["max_users"] == 10
    assert [u["user"] for u in resp["online"]] == ["alice", "vera"]  # longest online first
    assert [u["addr"] for u in resp["online"]] == ["127.0.0.1", "10.1.2.3"]
    for entry in resp["online"]:
        assert entry["since"].endswith("Z") and entry["since"][:2] == "20"
    b.close()
    app.advance(GRACE - 0.1)
    assert a.online("alice") == ["alice", "vera"]  # vera's grace
    app.advance(0.2)
    assert a.online("alice") == ["alice"]
