"""The lease table: one holder a device, and every way a lease ends (server.leases)."""

from __future__ import annotations

from server.people.leases import Change, End, Held, Lease, Leases

AT = 1_764_583_323.0  # 2025-12-01T10:02:03Z


def test_a_free_device_is_taken_and_renewed_by_its_holder() -> None:
    leases = Leases(idle=120)
    (start,) = leases.take("lamp-1", "alice", 10.0, AT)
    assert start == Change(Lease("lamp-1", "alice", AT, 10.0))
    assert start.kind == "start"
    assert leases.take("lamp-1", "alice", 100.0, AT + 90) == []  # renewed, no new start
    assert leases.of("lamp-1") == Lease("lamp-1", "alice", AT, 100.0)  # since stays
    assert leases.expire(219.0) == []  # idle from the renewal, not from the take
    (end,) = leases.expire(220.0)
    assert (end.kind, end.reason, end.lease.holder) == ("end", End.IDLE, "alice")
    assert leases.of("lamp-1") is None


def test_another_operator_is_refused_with_who_and_since_until_they_take_over() -> None:
    leases = Leases(idle=120)
    leases.take("lamp-1", "alice", 10.0, AT)
    held = leases.take("lamp-1", "bob", 11.0, AT + 1)
    assert isinstance(held, Held)
    assert held.body() == {
        "error": "lamp-1 is held by alice since 10:02:03 UTC",
        "holder": "alice",
        "since": "2025-12-01T10:02:03Z",
    }
    assert leases.check("lamp-1", "bob") == held
    assert leases.check("lamp-1", "alice") is None
    assert isinstance(leases.release("lamp-1", "bob"), Held)  # bob cannot let go of hers
    ended, started = leases.take("lamp-1", "bob", 12.0, AT + 2, take_over=True)
    assert (ended.reason, ended.by, ended.lease.holder) == (End.TAKEN_OVER, "bob", "alice")
    assert (started.kind, started.lease.holder) == ("start", "bob")
    lease = leases.of("lamp-1")
    assert lease is not None
    assert lease.as_json() == {"holder": "bob", "since": "2025-12-01T10:02:05Z"}


def test_release_leave_and_offline_end_only_what_they_concern() -> None:
    leases = Leases(idle=120)
    for device in ("lamp-1", "lamp-2", "fan"):
        leases.take(device, "alice" if device != "fan" else "bob", 1.0, AT)
    assert leases.release("lamp-9", "alice") == []  # free: nothing to end
    (released,) = leases.release("lamp-2", "alice")
    assert released.reason is End.RELEASED
    (lost,) = leases.end_holder("alice", End.LOST)
    assert (lost.lease.device, lost.reason) == ("lamp-1", End.LOST)
    assert leases.end_device("lamp-1", End.OFFLINE) == []
    (offline,) = leases.end_device("fan", End.OFFLINE)
    assert (offline.lease.holder, offline.reason) == ("bob", End.OFFLINE)
    assert leases.of("fan") is None
