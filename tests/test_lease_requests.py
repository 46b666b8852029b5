"""Leases over HTTP in-process: who holds a device, 409 for the others, every way it ends.

The server is real (``tests/testclient.py``); the device meets the real
control channel at its message level. What every browser sees is asserted
on an event stream; what the record says, on the audit log.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from server.control import registry as control
from tests.testclient import App, Client, FakeDevice, online, watch
from tests.wire import Resp

JSON = {"Content-Type": "application/json"}


def lease_events(c: Client) -> list[tuple[str, str, str | None, str | None]]:
    """(change, holder, reason, by) of the lease events the stream got since last asked."""
    return [
        (e.data["change"], e.data["holder"], e.data["reason"], e.data.get("by"))
        for e in c.events()
        if e.type == "device" and e.data["kind"] == "lease"
    ]


def command(c: Client, user: str, lamp: FakeDevice, on: bool = True) -> Resp:
    """POST a command as ``user``: the lamp's power on or off (it answers if it gets it)."""
    return c.post(f"/api/devices/{lamp.id}/commands", {"entity": "power", "value": on}, user)


@pytest.fixture
def lamp(app: App) -> FakeDevice:
    return app.device("lamp-1")


def test_a_command_on_a_free_device_takes_it_and_others_get_409(app: App, lamp: FakeDevice) -> None:
    alice, bob, viewer = online(app, "alice"), online(app, "bob"), watch(app)
    assert command(alice, "alice", lamp).status == 200
    assert lease_events(viewer) == [("start", "alice", None, None)]
    (device,) = alice.get("/api/devices").json()
    assert device["lease"]["holder"] == "alice"
    refused = command(bob, "bob", lamp, on=False)
    assert refused.status == 409
    body = refused.json()
    assert body["holder"] == "alice" and body["since"] == device["lease"]["since"]
    assert body["error"].startswith("lamp-1 is held by alice since ")
    assert lamp.commands == [("power", True)]  # bob's "off" never reached the device
    assert command(alice, "alice", lamp, on=False).status == 200  # her own: renewed, no new event
    assert lease_events(viewer) == []
    statuses = [(r["user"], r["value"], r["status"]) for r in app.records("command")]
    assert statuses == [("alice", True, 200), ("bob", False, 409), ("alice", False, 200)]
    (start,) = app.records("lease")
    assert (start["change"], start["device"], start["user"]) == ("start", "lamp-1", "alice")


def test_take_over_is_explicit_and_the_holder_sees_it(app: App, lamp: FakeDevice) -> None:
    alice, bob = online(app, "alice"), online(app, "bob")
    seen_by_alice = watch(app, "alice")
    assert alice.post("/api/devices/lamp-1/lease", {}).json()["lease"]["holder"] == "alice"
    assert bob.post("/api/devices/lamp-1/lease", {}, user="bob").status == 409
    taken = bob.post("/api/devices/lamp-1/lease", {"take_over": True}, user="bob")
    assert (taken.status, taken.json()["lease"]["holder"]) == (200, "bob")
    assert lease_events(seen_by_alice) == [
        ("start", "alice", None, None),
        ("end", "alice", "taken over", "bob"),
        ("start", "bob", None, None),
    ]
    assert command(alice, "alice", lamp).status == 409
    assert bob.post("/api/devices/lamp-1/lease", {"take_over": "yes"}, user="bob").status == 400
    end = app.records("lease")[1]
    assert (end["change"], end["reason"], end["by"]) == ("end", "taken over", "bob")


def test_release_frees_the_device_for_the_next_operator(app: App, lamp: FakeDevice) -> None:
    alice, bob, viewer = online(app, "alice"), online(app, "bob"), watch(app)
    assert command(alice, "alice", lamp).status == 200
    assert bob.request("DELETE", "/api/devices/lamp-1/lease", user="bob").status == 409
    released = alice.request("DELETE", "/api/devices/lamp-1/lease")
    assert (released.status, released.json()) == (200, {"device": "lamp-1", "lease": None})
    assert alice.request("DELETE", "/api/devices/lamp-1/lease").status == 200  # free: fine
    assert command(bob, "bob", lamp, on=False).status == 200
    assert lease_events(viewer) == [
        ("start", "alice", None, None),
        ("end", "alice", "released", None),
        ("start", "bob", None, None),
    ]


def test_a_lease_ends_after_lease_idle_without_a_command(
    make_app: Callable[..., App],
) -> None:
    app = make_app({"control": {"enabled": False, "lease_idle": 5}})
    lamp = app.device("lamp-1")
    alice, viewer = online(app, "alice"), watch(app)
    assert command(alice, "alice", lamp).status == 200
    app.advance(3)
    assert command(alice, "alice", lamp).status == 200  # renews
    app.advance(4)
    assert lease_events(viewer) == [("start", "alice", None, None)]
    app.advance(2)
    assert lease_events(viewer) == [("end", "alice", "idle", None)]


@pytest.mark.parametrize(
    ("goes", "reason", "after"),
    [(Client.close, "left", 2.5), (Client.reset, "lost", 0.0)],
    ids=["clean-close-after-grace", "lost-at-once"],
)
def test_the_holder_leaving_ends_the_lease(
    app: App, lamp: FakeDevice, goes: Callable[[Client], None], reason: str, after: float
) -> None:
    alice, viewer = online(app, "alice"), watch(app)
    assert command(alice, "alice", lamp).status == 200
    assert lease_events(viewer) == [("start", "alice", None, None)]
    goes(alice)
    if after:
        assert lease_events(viewer) == []  # the grace period: she may come back
        app.advance(after)
    assert lease_events(viewer) == [("end", "alice", reason, None)]
    assert app.client().get("/api/devices", "bob").json()[0]["lease"] is None


def test_the_device_going_offline_ends_its_lease(app: App, lamp: FakeDevice) -> None:
    alice, viewer = online(app, "alice"), watch(app)
    assert command(alice, "alice", lamp).status == 200
    viewer.events()
    lamp.lose()
    got = [
        (e.data["kind"], e.data["device"]["lease"]) for e in viewer.events() if e.type == "device"
    ]
    assert got[0][0] == "offline" and got[1] == ("lease", None)
    assert app.records("lease")[-1]["reason"] == "device offline"
    assert alice.post("/api/devices/lamp-1/lease", {}).status == 503  # offline: nothing to hold


def test_viewers_see_the_holder_but_never_hold(app: App, lamp: FakeDevice) -> None:
    alice, vera = online(app, "alice"), online(app, "vera")
    assert alice.post("/api/devices/lamp-1/lease", {}).status == 200
    refused = vera.post("/api/devices/lamp-1/lease", {}, user="vera")
    assert refused.status == 403 and "viewer" in refused.json()["error"]
    assert command(vera, "vera", lamp).status == 403
    assert vera.get("/api/devices", "vera").json()[0]["lease"]["holder"] == "alice"
    assert alice.post("/api/devices/lamp-9/lease", {}).status == 404


def test_a_lease_needs_the_control_channel(app: App) -> None:
    refused = online(app, "alice").post("/api/devices/lamp-1/lease", {})
    assert refused.status == 503 and refused.json()["error"].startswith("control channel off")


def test_telemetry_history_is_served_for_a_panel_opened_later(app: App, lamp: FakeDevice) -> None:
    lamp.telemetry({"temperature": 21.5, "power": True})
    history = online(app, "vera").get("/api/devices/lamp-1/telemetry", "vera").json()
    assert history["device"] == "lamp-1" and history["window_s"] == control.HISTORY_SECONDS
    ((at, value),) = history["metrics"]["temperature"]
    assert value == 21.5 and isinstance(at, int)
    assert set(history["metrics"]) == {"temperature"}  # numbers only
    assert app.client().get("/api/devices/lamp-9/telemetry").status == 404


def test_history_is_bounded_one_point_a_second_for_the_last_minutes() -> None:
    history = control.History()
    start = 1_764_583_323.0
    for i in range(5 * 600):  # ten minutes at 5 readings a second
        reading = {f"m{k}": i for k in range(40)}
        history.add("lamp-1", reading, start + i / 5)
    now = start + 600
    series = history.of("lamp-1", now)
    assert len(series) == control.HISTORY_METRICS
    points = series["m0"]
    assert len(points) <= control.HISTORY_SECONDS + 1
    assert points[0][0] >= (now - control.HISTORY_SECONDS) * 1000
    assert all(a[0] // 1000 < b[0] // 1000 for a, b in itertools.pairwise(points))  # 1/s
    assert points[-1] == [round((start + 2999 / 5) * 1000), 2999]  # the newest reading
