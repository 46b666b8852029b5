"""GET /api/events in-process: the preamble, resumed, reset, kept alive.

Each stream starts with ``retry:`` and, when there is nothing to resume, a
``reset`` carrying the current state; every event has an increasing ``id:``.
``Last-Event-ID`` inside the ring buffer (1,000 events) resumes exactly;
older, newer or not a number → ``reset``. Real clients (httpx-sse, curl)
and a client that never reads: tests/test_sse_e2e.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import CHATTY
from tests.testclient import App, Client
from tests.wire import Event


def hold(app: App, user: str) -> Client:
    """A keep-alive connection that keeps ``user`` online (no presence events meanwhile)."""
    c = app.client()
    assert c.me(user).status == 200
    return c


def stream(
    app: App, user: str = "alice", last_id: str | None = None, in_query: bool = False
) -> Client:
    """An open event stream as ``user``; its preamble (``retry: 1000``) is checked.

    ``last_id`` goes in the Last-Event-ID header, or with ``in_query`` as
    ``?last_event_id=`` (how a panel tab continues another tab's stream).
    """
    c = app.client()
    if in_query and last_id is not None:
        head = c.get(f"/api/events?last_event_id={last_id}", user)
    else:
        head = c.get("/api/events", user, headers={"Last-Event-ID": last_id})
    assert head.status == 200
    assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert head.headers["cache-control"] == "no-store"
    return c


def first_events(c: Client) -> list[Event]:
    """What a stream sent first, after checking that it began with ``retry: 1000``."""
    got = c.events()
    assert c.retry == 1000
    return got


def test_a_stream_starts_with_retry_and_a_reset_then_increasing_ids(app: App) -> None:
    bob = hold(app, "bob")
    c = stream(app)
    c.poll()
    assert c.reader.buf.split(b"\r\n", 1)[1].startswith(b"retry: 1000\n\n")
    (reset,) = first_events(c)
    assert reset.type == "reset" and reset.id is not None
    assert set(reset.data) == {"online", "devices", "control_off"}
    assert reset.data["control_off"].startswith("control channel off: disabled")  # as this config
    assert [u["user"] for u in reset.data["online"]] == ["bob", "alice"]
    bob.post_chats("bob", ["one", "two", "three"])
    chats = c.events()
    assert [(e.type, e.data["text"]) for e in chats] == [
        ("chat", t) for t in ("one", "two", "three")
    ]
    assert [e.id for e in chats] == [reset.id + 1, reset.id + 2, reset.id + 3]


@pytest.mark.parametrize("in_query", [False, True], ids=["header", "query"])
def test_resume_with_last_event_id_misses_and_repeats_nothing(app: App, in_query: bool) -> None:
    holders = [hold(app, "alice"), hold(app, "bob")]  # no presence events from here on
    bob = holders[1]
    c = stream(app)
    assert [e.type for e in first_events(c)] == ["reset"]
    bob.post_chats("bob", ["before"])
    (event,) = c.events()
    assert (event.type, event.data["text"]) == ("chat", "before")
    last = event.id
    assert last is not None
    c.close()
    missed = [f"missed {i}" for i in range(7)]
    bob.post_chats("bob", missed)
    c = stream(app, last_id=str(last), in_query=in_query)
    got = first_events(c)
    assert [(e.type, e.data["text"]) for e in got] == [("chat", t) for t in missed]
    assert [e.id for e in got] == list(range(last + 1, last + 1 + len(missed)))
    bob.post_chats("bob", ["after"])
    (after,) = c.events()  # nothing repeated, nothing in between
    assert (after.type, after.data["text"], after.id) == ("chat", "after", last + len(missed) + 1)


def test_reset_when_the_id_is_not_in_the_ring(make_app: Callable[..., App]) -> None:
    app = make_app(CHATTY)
    holders = [hold(app, "alice"), hold(app, "bob")]  # no presence events from here on
    bob = holders[1]
    c = stream(app)
    (reset,) = first_events(c)
    oldest = reset.id
    assert oldest is not None
    c.close()
    bob.post_chats("bob", [f"chat {i}" for i in range(1100)])
    c = stream(app)
    (reset,) = first_events(c)
    newest = reset.id
    assert newest is not None and newest >= oldest + 1100
    c.close()
    # (Last-Event-ID from the newest id, events expected before the live one: None = reset)
    table: list[tuple[Callable[[int], str], int | None]] = [
        (lambda _: str(oldest), None),  # 1,100+ events ago: older than the ring buffer
        (lambda _: "0", None),
        (lambda _: "not-a-number", None),
        (lambda n: str(n + 1000), None),  # from the future: not one of ours
        (lambda n: str(n - 1000), 1000),  # the oldest id the ring can still resume from
        (lambda n: str(n - 1001), None),
        (lambda n: str(n - 5), 5),
        (lambda n: str(n), 0),
    ]
    for last_id_of, backlog in table:
        last_id = last_id_of(newest)
        c = stream(app, last_id=last_id)
        got = first_events(c)
        if backlog is None:
            assert [e.type for e in got] == ["reset"], last_id
            assert got[0].id == newest and "online" in got[0].data
        else:
            assert [e.id for e in got] == list(range(int(last_id) + 1, newest + 1)), last_id
        bob.post_chats("bob", ["live"])
        (live,) = c.events()
        assert (live.type, live.data["text"]) == ("chat", "live"), last_id
        newest = live.id
        assert newest is not None
        c.close()


def test_heartbeat_comments(make_app: Callable[..., App]) -> None:
    app = make_app({"http": {"sse_heartbeat": 1}})
    c = stream(app)
    assert [e.type for e in first_events(c)] == ["reset"]
    for _ in range(3):
        app.advance(1)
        assert [(e.type, e.data) for e in c.events()] == [("comment", "heartbeat")]


def test_no_heartbeat_before_its_interval(make_app: Callable[..., App]) -> None:
    app = make_app({"http": {"sse_heartbeat": 5}})
    c = stream(app)
    first_events(c)
    app.advance(4)
    assert c.events() == []
    app.advance(1)
    assert [(e.type, e.data) for e in c.events()] == [("comment", "heartbeat")]
