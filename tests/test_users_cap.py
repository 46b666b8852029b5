"""End-to-end: at most ``max_users`` people online; the next one waits for a free slot.

Each person holds one authenticated keep-alive connection (an httpx client
with its pooled connection). Closing that client closes the connection
cleanly (FIN), so its user stays online for ``[presence] grace`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from support import Vigil, basic

GRACE = 0.5
MAX_USERS = 10
PEOPLE = [f"user{i:02d}" for i in range(1, MAX_USERS + 1)]
NEXT = "user11"


def me(c: httpx.Client, user: str, accept: str = "application/json") -> httpx.Response:
    return c.get("/api/me", headers={"Authorization": basic(user), "Accept": accept})


def online(c: httpx.Client, user: str) -> list[str]:
    resp = c.get("/api/users", headers={"Authorization": basic(user)})
    assert resp.status_code == 200
    assert resp.json()["max_users"] == MAX_USERS
    return sorted(u["user"] for u in resp.json()["online"])


@pytest.fixture
def full(start_vigil: Callable[..., Vigil]) -> Iterator[tuple[Vigil, dict[str, httpx.Client]]]:
    """A vigil with ``MAX_USERS`` people online, each holding a keep-alive connection."""
    vigil = start_vigil(sections={"auth": {"max_users": MAX_USERS}, "presence": {"grace": GRACE}})
    clients = {u: httpx.Client(base_url=vigil.base, timeout=5) for u in PEOPLE}
    for user, c in clients.items():
        assert me(c, user).json()["user"] == user
    yield vigil, clients
    for c in clients.values():
        c.close()


def test_the_next_user_gets_503_with_retry_after(
    full: tuple[Vigil, dict[str, httpx.Client]],
) -> None:
    vigil, clients = full
    with httpx.Client(base_url=vigil.base, timeout=5) as c:
        resp = me(c, NEXT)
        assert resp.status_code == 503
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.headers["cache-control"] == "no-store"
        message = resp.json()["error"]
        assert "full" in message and str(MAX_USERS) in message

        page = me(c, NEXT, accept="text/html,application/xhtml+xml,*/*;q=0.8")
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert int(page.headers["retry-after"]) >= 1
        assert page.text.lstrip().lower().startswith("<!doctype html")
        assert "full" in page.text

        # people already online keep working, also on new connections
        assert me(c, PEOPLE[3]).json()["user"] == PEOPLE[3]
    assert online(clients[PEOPLE[0]], PEOPLE[0]) == PEOPLE


def test_a_slot_freed_by_a_clean_close_admits_the_next_user_after_grace(
    full: tuple[Vigil, dict[str, httpx.Client]],
) -> None:
    vigil, clients = full
    leaving = PEOPLE[4]
    clients.pop(leaving).close()
    closed_at = time.monotonic()
    with httpx.Client(base_url=vigil.base, timeout=5) as c:
        first = me(c, NEXT)
        if time.monotonic() - closed_at < GRACE * 0.8:  # still in the grace period
            assert first.status_code == 503
            assert 1 <= int(first.headers["retry-after"]) <= 1 + GRACE
        while (resp := me(c, NEXT)).status_code == 503:
            assert time.monotonic() - closed_at < GRACE + 2, "the slot never freed"
            time.sleep(0.05)
        assert resp.json()["user"] == NEXT
        assert time.monotonic() - closed_at >= GRACE * 0.8
        expected = sorted([*PEOPLE[:4], *PEOPLE[5:], NEXT])
        assert online(c, NEXT) == expected
        # now the one who left is the one too many
        assert me(c, leaving).status_code == 503


def test_returning_within_grace_keeps_the_slot(full: tuple[Vigil, dict[str, httpx.Client]]) -> None:
    vigil, clients = full
    clients.pop(PEOPLE[0]).close()
    with (
        httpx.Client(base_url=vigil.base, timeout=5) as back,
        httpx.Client(base_url=vigil.base, timeout=5) as other,
    ):
        assert me(back, PEOPLE[0]).status_code == 200  # within grace: still theirs
        time.sleep(GRACE + 0.5)
        assert me(other, NEXT).status_code == 503
        assert PEOPLE[0] in online(back, PEOPLE[0])


def test_users_lists_the_people_online(start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(sections={"presence": {"grace": GRACE}})
    with (
        httpx.Client(base_url=vigil.base, timeout=5) as a,
        httpx.Client(base_url=vigil.base, timeout=5) as b,
    ):
        assert online(a, "alice") == ["alice"]
        assert me(b, "vera").status_code == 200
        resp = a.get("/api/users", headers={"Authorization": basic("alice")}).json()
        assert [u["user"] for u in resp["online"]] == ["alice", "vera"]  # longest online first
        for entry in resp["online"]:
            assert entry["addr"] == "127.0.0.1"
            assert entry["since"].endswith("Z") and entry["since"][:2] == "20"
        b.close()
        time.sleep(GRACE + 0.5)
        assert online(a, "alice") == ["alice"]
