"""Presence bookkeeping: joins, leaves (closed after grace, lost at once), the cap."""

from __future__ import annotations

from server.feed.events import Person
from server.people.presence import CLOSED, LOST, SHUTDOWN, Change, Presence


def test_join_once_per_user() -> None:
    p = Presence(max_users=10, grace=2)
    assert p.attach(1, "alice", "10.0.0.1", 0, 1000.0) == [Change("join", "alice", "10.0.0.1")]
    assert p.attach(2, "alice", "10.0.0.1", 0, 1001.0) == []
    assert p.attach(2, "alice", "10.0.0.1", 0, 1001.0) == []
    assert p.online() == (Person("alice", "1970-01-01T00:16:40Z", "10.0.0.1"),)


def test_lost_last_connection_leaves_at_once() -> None:
    p = Presence(10, 2)
    p.attach(1, "alice", "a", 0, 0)
    p.attach(2, "alice", "a", 0, 0)
    assert p.detach(1, 5.0, lost=True) is None  # another connection is still open
    assert p.detach(2, 5.0, lost=True) == Change("leave", "alice", "a", LOST)
    assert p.online() == ()


def test_clean_close_leaves_after_grace_unless_back() -> None:
    p = Presence(10, 2)
    p.attach(1, "alice", "a", 0, 0)
    assert p.detach(1, 10.0, lost=False) is None
    assert p.next_expiry() == 12.0
    assert p.expire(11.9) == []
    p.attach(2, "alice", "a", 11.0, 0)  # came back within grace: no leave
    assert p.expire(12.0) == [] and p.next_expiry() is None
    p.detach(2, 20.0, lost=False)
    assert p.expire(22.0) == [Change("leave", "alice", "a", CLOSED)]


def test_cap_counts_users_in_grace() -> None:
    p = Presence(max_users=2, grace=2)
    p.attach(1, "a", "x", 0, 0)
    p.attach(2, "b", "x", 0, 0)
    assert p.admits("a") and not p.admits("c")
    p.detach(2, 10.0, lost=False)
    assert not p.admits("c")
    assert p.retry_after(10.5) == 2
    p.expire(12.0)
    assert p.admits("c")


def test_detach_of_unknown_connection_is_nothing() -> None:
    p = Presence(10, 0)
    assert p.detach(99, 0, lost=True) is None
    p.attach(1, "a", "x", 0, 0)
    assert p.detach(1, 0, lost=False) == Change("leave", "a", "x", CLOSED)  # grace 0


def test_a_connection_that_logs_in_as_another_user_leaves_the_first() -> None:
    p = Presence(10, 0)  # no grace: the first user's leave is immediate
    p.attach(1, "alice", "x", 0, 0)
    assert p.attach(1, "bob", "x", 1, 1) == [
        Change("leave", "alice", "x", CLOSED),
        Change("join", "bob", "x"),
    ]
    assert [u.user for u in p.online()] == ["bob"]
    assert p.user_of(1) == "bob"


def test_user_switch_with_grace_keeps_the_first_until_it_expires() -> None:
    p = Presence(10, 2)
    p.attach(1, "alice", "x", 0, 0)
    assert p.attach(1, "bob", "x", 5, 5) == [Change("join", "bob", "x")]
    assert p.expire(7.0) == [Change("leave", "alice", "x", CLOSED)]


def test_end_all_logs_everyone_out_including_grace() -> None:
    p = Presence(10, 2)
    p.attach(1, "alice", "x", 0, 0)
    p.attach(2, "bob", "y", 0, 0)
    p.detach(2, 1.0, lost=False)  # bob is in his grace period
    changes = p.end_all()
    assert sorted((c.user, c.kind, c.reason) for c in changes) == [
        ("alice", "leave", SHUTDOWN),
        ("bob", "leave", SHUTDOWN),
    ]
    assert p.online() == () and p.user_of(1) is None and p.end_all() == []


def test_resize_keeps_who_is_online() -> None:
    p = Presence(2, 2)
    p.attach(1, "a", "x", 0, 0)
    p.attach(2, "b", "x", 0, 0)
    p.resize(1, 5)
    assert [u.user for u in p.online()] == ["a", "b"] and not p.admits("c")
