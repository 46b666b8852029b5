"""In-process: presence as another user's event stream sees it, on the test's clock.

A user is online while any of their connections is; a clean close (FIN) of
the last one keeps them online for ``[presence] grace`` (3 s here), a reset
(RST) of one of several is no leave. When FIN and RST arrive over a real
network and how long they take: tests/test_presence_e2e.py and
tests/test_pulled_cable.py.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from tests.testclient import App, Client

GRACE = 3.0
SECTIONS = {"presence": {"grace": GRACE}}


def watch(app: App, user: str = "alice") -> Client:
    """``user``'s event stream, past its reset."""
    c = app.client()
    assert c.get("/api/events", user).status == 200
    assert [e.type for e in c.events()] == ["reset"]
    return c


def presence(stream: Client) -> list[tuple[str, str, str | None]]:
    """(kind, user, reason) of the presence events the stream got since the last call."""
    return [
        (e.data["kind"], e.data["user"], e.data["reason"])
        for e in stream.events()
        if e.type == "presence"
    ]


def logged_in(app: App, user: str) -> Client:
    c = app.client()
    assert c.me(user).status == 200
    return c


def reset(c: Client) -> None:
    """Close with RST (SO_LINGER 0), as a killed process with unread data does."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def test_one_of_two_connections_lost_is_no_leave(make_app: Callable[..., App]) -> None:
    app = make_app(SECTIONS)
    watcher = watch(app)
    keep = logged_in(app, "bob")
    second = logged_in(app, "bob")
    assert presence(watcher) == [("join", "bob", None)]
    reset(second)
    assert not second.open  # the server saw the reset ...
    app.advance(GRACE + 1)
    assert presence(watcher) == []  # ... and bob is still online
    assert "bob" in logged_in(app, "alice").online()
    keep.close()
    app.advance(GRACE - 0.1)
    assert presence(watcher) == []  # his grace
    app.advance(0.2)
    assert presence(watcher) == [("leave", "bob", "closed")]


def test_the_last_connection_reset_is_a_leave_at_once(make_app: Callable[..., App]) -> None:
    app = make_app(SECTIONS)
    watcher = watch(app)
    reset(logged_in(app, "bob"))
    assert presence(watcher) == [("join", "bob", None), ("leave", "bob", "lost")]


def test_back_within_grace_is_no_leave_and_no_second_join(make_app: Callable[..., App]) -> None:
    app = make_app(SECTIONS)
    watcher = watch(app)
    logged_in(app, "bob").close()
    app.advance(GRACE / 2)
    again = logged_in(app, "bob")
    app.advance(GRACE / 2 + 0.5)
    assert presence(watcher) == [("join", "bob", None)]
    assert again.open
