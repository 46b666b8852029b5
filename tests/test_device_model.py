"""Devices that describe themselves, over HTTP in-process: commands checked against the
entities, results that change the state everyone sees at once, and the safe state.

The server is real (``tests/testclient.py``); the device meets the real control channel at
its message level (``FakeDevice``). What every browser sees is asserted on an event
stream, what the device got on its received messages, what happened on the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from server.link.codec import Telemetry
from server.link.entities import Entity
from tests.fakedevice import described
from tests.support import password
from tests.testclient import App, Client, FakeDevice, online, watch
from tests.wire import request

JSON = {"Content-Type": "application/json"}

# A heater whose switch and fan must go back to safe values, and a stop button pressed
PUMP = described(
    {"key": "heater", "kind": "switch", "label": "Heater", "safe": False},
    {"key": "speed", "kind": "number", "label": "Speed", "min": 0, "max": 100, "step": 5,
     "unit": "%", "safe": 0, "confirm": "Change the pump's speed?"},
    {"key": "mode", "kind": "select", "label": "Mode", "options": ["eco", "boost"]},
    {"key": "stop", "kind": "button", "label": "Stop", "safe": True},
    {"key": "door", "kind": "binary_sensor", "label": "Door", "device_class": "door"},
)  # fmt: skip


def send(c: Client, user: str, device: str, entity: str, value: Any) -> tuple[int, Any]:
    """``user``'s command, with their password as its step-up proof (``speed`` asks to
    confirm: tests/test_sessions_requests.py has step-up)."""
    body = {"entity": entity, "value": value}
    step_up = {"X-Vigil-Step-Up": password(user)}
    resp = c.post(f"/api/devices/{device}/commands", body, user, headers=step_up)
    return resp.status, resp.json()


def later(app: App, entity: str, value: Any) -> Client:
    """alice's command to the pump (with her step-up proof), sent; its answer waits for
    the device."""
    c = app.client()
    body = json.dumps({"entity": entity, "value": value}).encode()
    headers = {**JSON, "X-Vigil-Step-Up": password("alice")}
    c.send(request("POST", "/api/devices/pump/commands", headers, body))
    app.pump()
    return c


def command_events(c: Client) -> list[dict[str, Any]]:
    return [e.data for e in c.events() if e.type == "command"]


@pytest.mark.parametrize(
    ("entity", "value", "error"),
    [
        ("speed", 140, "pump.speed: 140 is above max 100"),
        ("speed", -5, "pump.speed: -5 is below min 0"),
        ("speed", 12, "pump.speed: 12 is off the step 5 (from 0)"),
        ("speed", "fast", 'pump.speed: "fast" is not a number'),
        ("speed", True, "pump.speed: true is not a number"),
        ("heater", 1, "pump.heater: 1 is not true or false"),
        ("mode", "turbo", 'pump.mode: "turbo" is not one of eco, boost'),
        ("stop", 1, "pump.stop: 1: a button takes no value (send null or leave it out)"),
        ("door", True, "pump.door: a binary_sensor only reports: it takes no commands"),
        ("valve", True, "pump.valve: no such entity (pump has: heater, speed, mode, stop, door)"),
    ],
)
def test_a_command_the_entity_cannot_take_is_400_sent_nowhere_and_audited(
    app: App, entity: str, value: Any, error: str
) -> None:
    pump = app.device("pump", PUMP)
    alice, viewer = online(app, "alice"), watch(app)
    assert send(alice, "alice", "pump", entity, value) == (400, {"error": error})
    assert pump.commands == []  # nothing went to the device ...
    assert command_events(viewer) == []  # ... nobody saw a command ...
    (record,) = app.records("command")  # ... and the refusal is on record
    assert (record["user"], record["entity"], record["status"], record["error"]) == (
        "alice",
        entity,
        400,
        error,
    )
    assert app.client().get("/api/devices", "bob").json()[0]["lease"] is None  # not taken


def test_a_valid_command_reaches_the_device_as_sent(app: App) -> None:
    pump = app.device("pump", PUMP)
    alice = online(app, "alice")
    assert send(alice, "alice", "pump", "speed", 35)[0] == 200
    assert send(alice, "alice", "pump", "mode", "boost")[0] == 200
    assert send(alice, "alice", "pump", "stop", None)[0] == 200
    assert pump.commands == [("speed", 35), ("mode", "boost"), ("stop", None)]


def test_the_result_changes_the_state_everyone_sees_at_once(app: App) -> None:
    pump = app.device("pump", PUMP, answers=False)
    alice, viewer = online(app, "alice"), watch(app)
    before = alice.get("/api/devices").json()[0]["state"]
    assert before == {"heater": None, "speed": None, "mode": None, "door": None}
    pending = later(app, "speed", 40)
    assert [e["phase"] for e in command_events(viewer)] == ["issued"]
    pump.answer(state=35)  # the device could only do 35: that is its state, not the 40 sent
    assert pending.response().json() == {"id": pump.received[-1]["id"], "ok": True, "state": 35}
    (result,) = command_events(viewer)
    assert (result["phase"], result["entity"], result["value"], result["state"]) == (
        "result",
        "speed",
        40,
        35,
    )
    assert alice.get("/api/devices").json()[0]["state"]["speed"] == 35  # no reading needed
    assert app.records("command")[-1]["state"] == 35


def test_a_result_without_a_state_means_the_value_sent(app: App) -> None:
    pump = app.device("pump", PUMP, answers=False)
    alice = online(app, "alice")
    pending = later(app, "heater", True)
    pump.answer()
    assert pending.response().json()["state"] is True
    assert alice.get("/api/devices").json()[0]["state"]["heater"] is True


def test_telemetry_keeps_what_fits_and_tells_the_device_what_it_dropped(app: App) -> None:
    pump = app.device("pump", PUMP)
    viewer = watch(app)
    pump.telemetry({"door": True, "speed": "fast", "valve": 1, "mode": "eco"})
    (error,) = [m for m in pump.received if m["type"] == "error"]
    assert error["error"] == (
        'telemetry: dropped pump.speed: "fast" is not a number; '
        "pump.valve: no such entity (pump has: heater, speed, mode, stop, door)"
    )
    (reading,) = [e.data for e in viewer.events() if e.type == "device"]
    assert reading["kind"] == "telemetry" and reading["data"] == {"door": True, "mode": "eco"}
    assert reading["device"]["state"] == {
        "heater": None,
        "speed": None,
        "mode": "eco",
        "door": True,
    }


# -- the safe state ---------------------------------------------------------------


def hold(app: App, pump: FakeDevice, user: str = "alice") -> Client:
    """``user`` online, holding the pump (a command takes the lease)."""
    c = online(app, user)
    assert send(c, user, "pump", "heater", True)[0] == 200
    pump.received.clear()
    return c


def safe_commands(pump: FakeDevice) -> list[tuple[str, Any, str]]:
    return [(m["entity"], m["value"], m["user"]) for m in pump.received if m["type"] == "command"]


@pytest.mark.parametrize(
    ("goes", "reason", "after"),
    [
        (Client.reset, "lost", 0.0),
        (Client.close, "left", 2.5),
    ],
    ids=["lost", "left"],
)
def test_the_holder_vanishing_sends_the_safe_values(
    app: App, goes: Callable[[Client], None], reason: str, after: float
) -> None:
    pump = app.device("pump", PUMP)
    alice, viewer = hold(app, pump), watch(app)
    goes(alice)
    app.advance(after)
    assert safe_commands(pump) == [
        ("heater", False, "vigil"),
        ("speed", 0, "vigil"),
        ("stop", None, "vigil"),
    ]
    answered = [e for e in command_events(viewer) if e["phase"] == "result"]
    assert {(e["entity"], e["user"], e["reason"]) for e in answered} == {
        (key, "vigil", f"safe state: alice {reason}") for key in ("heater", "speed", "stop")
    }
    records = [r for r in app.records("command") if r["user"] == "vigil"]
    assert [(r["entity"], r["value"], r["status"], r["reason"]) for r in records] == [
        ("heater", False, 200, f"safe state: alice {reason}"),
        ("speed", 0, 200, f"safe state: alice {reason}"),
        ("stop", None, 200, f"safe state: alice {reason}"),
    ]
    state = app.client().get("/api/devices", "bob").json()[0]
    assert state["state"]["heater"] is False and state["state"]["speed"] == 0
    assert state["lease"] is None  # vigil does not keep the device


def test_an_idle_lease_sends_the_safe_values(make_app: Callable[..., App]) -> None:
    app = make_app({"control": {"enabled": False, "lease_idle": 5}})
    pump = app.device("pump", PUMP)
    hold(app, pump)
    app.advance(4)
    assert safe_commands(pump) == []
    app.advance(2)
    assert [c[0] for c in safe_commands(pump)] == ["heater", "speed", "stop"]


def test_release_and_take_over_leave_the_device_as_it_is(app: App) -> None:
    pump = app.device("pump", PUMP)
    alice = hold(app, pump)
    assert alice.request("DELETE", "/api/devices/pump/lease").status == 200
    bob = hold(app, pump, "bob")
    taken = alice.post("/api/devices/pump/lease", {"take_over": True})
    assert taken.status == 200
    bob.reset()  # bob lost his connection, but he no longer held it
    app.advance(3)
    assert safe_commands(pump) == []


def test_a_device_without_safe_values_is_left_alone(app: App) -> None:
    lamp = app.device("lamp-1", described({"key": "power", "kind": "switch", "label": "Power"}))
    alice = online(app, "alice")
    assert send(alice, "alice", "lamp-1", "power", True)[0] == 200
    alice.reset()
    app.pump()
    assert lamp.commands == [("power", True)]


def test_the_holder_of_an_offline_device_vanishing_sends_nothing(app: App) -> None:
    pump = app.device("pump", PUMP)
    alice = hold(app, pump)
    pump.lose()
    alice.reset()
    app.pump()
    assert safe_commands(pump) == []


def test_entities_is_what_the_hello_declared(app: App) -> None:
    app.device("pump", PUMP)
    (device,) = app.client().get("/api/devices", "vera").json()
    assert device["entities"] == [e.as_json() for e in PUMP]
    assert device["entities"][1] == {
        "key": "speed",
        "kind": "number",
        "label": "Speed",
        "unit": "%",
        "min": 0,
        "max": 100,
        "step": 5,
        "confirm": "Change the pump's speed?",
        "safe": 0,
    }
    assert isinstance(PUMP[0], Entity)


def test_a_number_too_large_for_a_float_is_400_not_500(app: App, no_tracebacks: None) -> None:
    pump = app.device("pump", PUMP)
    alice = online(app, "alice")
    big = 10**400  # JSON has no bound on integers; math.isfinite() overflows on this one
    status, body = send(alice, "alice", "pump", "speed", big)
    assert status == 400 and body["error"].startswith("pump.speed: 1000000")
    assert body["error"].endswith("… is too large a number")
    pump.telemetry({"speed": big, "door": False})
    (error,) = [m for m in pump.received if m["type"] == "error"]
    assert error["error"].endswith("… is too large a number")
    assert alice.get("/api/devices").json()[0]["state"]["door"] is False


def test_the_telemetry_error_names_five_problems_and_counts_the_rest(app: App) -> None:
    pump = app.device("pump", PUMP)
    pump.telemetry({f"k{i}": 1 for i in range(30)} | {"x" * 60000: 1})
    (error,) = [m for m in pump.received if m["type"] == "error"]
    assert error["error"].count("no such entity") == 5
    assert error["error"].endswith("; and 26 more") and len(error["error"]) < 1000


def test_partial_readings_within_one_interval_are_merged_not_lost(app: App) -> None:
    pump = app.device("pump", PUMP)
    viewer = watch(app)
    for reading in ({"door": True}, {"mode": "eco"}, {"door": False}):
        pump.channel.receive(pump.assoc, Telemetry(reading))  # all within 0.2 s
    app.advance(0.5)
    data = [e.data["data"] for e in viewer.events() if e.type == "device"]
    assert data == [{"door": True}, {"mode": "eco", "door": False}]
