"""server.control.registry: registry, commands, telemetry coalescing, reassembly (no sockets).

The wire (decoding and encoding every message): tests/test_codec.py.
"""

from __future__ import annotations

import json

import pytest

from server.control import registry as control
from server.control.registry import Coalescer, Pending, Phase, Reassembler, Refusal, Registry
from server.core.views import device_view
from server.feed.events import CommandEvent
from server.link.codec import Command, Hello, Result, encode
from server.link.entities import Entity
from tests.fakedevice import LAMP, described

# -- registry --------------------------------------------------------------

BELL = described({"key": "bell", "kind": "button", "label": "Bell"})[0]
MODE = described({"key": "mode", "kind": "select", "label": "Mode", "options": ["eco", "boost"]})[0]
STATUS = described({"key": "status", "kind": "text_sensor", "label": "Status"})[0]
KEYS = "power, brightness, temperature"


def hello(device: str = "lamp-1", declared: tuple[Entity, ...] = LAMP) -> Hello:
    return Hello(device, f"Lamp {device}", declared)


def issued(reg: Registry, device: str, entity: str, value: object, now: float = 1.0) -> Pending:
    p = reg.issue(device, entity, value, "alice", now=now, timeout=5)
    assert isinstance(p, Pending), p
    return p


def test_hello_registers_and_lists() -> None:
    reg = Registry()
    joined = reg.hello(7, hello(), at=100.0)
    dev = joined.device
    assert joined == control.Joined(dev)  # nothing replaced
    assert device_view(dev, reg.states["lamp-1"], None).as_json() == {
        "id": "lamp-1",
        "name": "Lamp lamp-1",
        "online": True,
        "since": "1970-01-01T00:01:40Z",
        "lease": None,
        "entities": [e.as_json() for e in LAMP],
        "state": {"power": None, "brightness": None, "temperature": None},  # unknown yet
    }
    assert reg.device_of(7) == dev and reg.device_of(8) is None


def test_a_button_has_no_state() -> None:
    reg = Registry()
    reg.hello(7, hello(declared=(*LAMP, BELL)), at=0)
    assert list(reg.states["lamp-1"]) == ["power", "brightness", "temperature"]


def test_a_proven_hello_replaces_the_live_association_of_its_id() -> None:
    reg = Registry()
    reg.hello(7, hello(), at=100.0)
    other = reg.hello(9, hello("lamp-2"), at=100.0)
    p = issued(reg, "lamp-1", "power", True)
    q = issued(reg, "lamp-2", "power", True)
    joined = reg.hello(8, hello(declared=LAMP[:1]), at=101.0)  # the agent restarted
    assert joined.replaced == 7 and joined.lost == (p,)
    assert joined.gone is not None and not joined.gone.online and joined.gone.since == 101.0
    assert joined.device.assoc == 8 and joined.device.since == 101.0
    assert joined.device.entities == LAMP[:1] and reg.states["lamp-1"] == {"power": None}
    assert reg.device_of(7) is None and reg.device_of(8) == joined.device
    assert list(reg.pending) == [q.id] and reg.device_of(9) == other.device
    assert reg.drop_assoc(7, at=102.0) == (None, [])  # its COMM_LOST comes later: nothing
    assert reg.resolve(7, Result(p.id, True)) is None


def test_hello_of_a_known_offline_device_replaces_nothing() -> None:
    reg = Registry()
    reg.hello(7, hello(), at=100.0)
    reg.drop_assoc(7, at=102.0)
    back = reg.hello(8, hello(), at=103.0)
    assert back == control.Joined(back.device)
    assert back.device.assoc == 8 and back.device.since == 103.0


def test_drop_assoc_marks_offline_and_returns_lost_commands() -> None:
    reg = Registry()
    reg.hello(7, hello("a"), at=100.0)
    reg.hello(8, hello("b"), at=100.0)
    pa = issued(reg, "a", "power", True)
    pb = issued(reg, "b", "power", True)
    reg.readings("a", {"brightness": 40})
    dev, lost = reg.drop_assoc(7, at=150.0)
    assert dev is not None and not dev.online and dev.since == 150.0 and dev.assoc is None
    assert lost == [pa] and list(reg.pending) == [pb.id]
    assert reg.states["a"]["brightness"] == 40  # the panel still shows the last state
    assert reg.drop_assoc(7, at=151.0) == (None, [])  # twice: COMM_LOST after SHUTDOWN
    assert reg.drop_assoc(99, at=151.0) == (None, [])  # never said hello


def test_issue_records_a_checked_command() -> None:
    reg = Registry()
    reg.hello(7, hello(), at=0)
    p = issued(reg, "lamp-1", "brightness", 40, now=10.0)
    assert p.deadline == 15.0 and p.entity == LAMP[1] and (p.value, p.user) == (40, "alice")
    assert p.command() == Command(p.id, "brightness", 40, "alice")
    assert json.loads(encode(p.command())) == {
        "type": "command",
        "id": p.id,
        "entity": "brightness",
        "value": 40,
        "user": "alice",
    }
    p2 = issued(reg, "lamp-1", "power", False, now=10.0)
    assert p2.id != p.id and list(reg.pending) == [p.id, p2.id]


@pytest.mark.parametrize(
    ("device", "entity", "value", "refused"),
    [
        ("x", "power", True, Refusal(404, "unknown device 'x'")),
        ("gone", "power", True, Refusal(503, "device 'gone' is offline")),
        (
            "lamp-1",
            "foo",
            True,
            Refusal(400, f"lamp-1.foo: no such entity (lamp-1 has: {KEYS})"),
        ),
        ("lamp-1", "brightness", 140, Refusal(400, "lamp-1.brightness: 140 is above max 100")),
        (
            "lamp-1",
            "brightness",
            2.5,
            Refusal(400, "lamp-1.brightness: 2.5 is off the step 1 (from 0)"),
        ),
        ("lamp-1", "power", "on", Refusal(400, 'lamp-1.power: "on" is not true or false')),
        (
            "lamp-1",
            "temperature",
            20,
            Refusal(400, "lamp-1.temperature: a sensor only reports: it takes no commands"),
        ),
    ],
)
def test_check_and_issue_refusals(
    device: str, entity: str, value: object, refused: Refusal
) -> None:
    reg = Registry()
    reg.hello(7, hello(), at=0)
    reg.hello(8, hello("gone"), at=0)
    reg.drop_assoc(8, at=1)
    assert reg.check(device, entity, value) == refused
    assert reg.issue(device, entity, value, "al", 0, 5) == refused
    assert reg.pending == {}  # nothing to send


def test_check_returns_the_entity_and_the_value_to_send() -> None:
    reg = Registry()
    reg.hello(7, hello(declared=(*LAMP, BELL)), at=0)
    assert reg.check("lamp-1", "brightness", 40) == (LAMP[1], 40)
    assert reg.check("lamp-1", "bell", True) == (BELL, None)  # a press carries no value
    assert reg.pending == {}  # a check issues nothing


def test_resolve_only_from_the_commanded_device_and_only_once() -> None:
    reg = Registry()
    reg.hello(7, hello("a"), at=0)
    reg.hello(8, hello("b"), at=0)
    p = issued(reg, "a", "power", True)
    assert reg.resolve(8, Result(p.id, True)) is None  # device b cannot answer for a
    assert reg.resolve(7, Result(p.id, True)) == p
    assert reg.resolve(7, Result(p.id, True)) is None  # late duplicate
    p = issued(reg, "a", "power", True)
    assert reg.expire(p.id) == p and reg.expire(p.id) is None
    assert reg.resolve(7, Result(p.id, True)) is None  # late after 504


@pytest.mark.parametrize(
    ("entity", "value", "state", "kept"),
    [
        ("brightness", 40, 38, 38),  # the device says where it ended up
        ("brightness", 40, None, 40),  # it said nothing: the value sent
        ("power", False, None, False),
        ("mode", "boost", None, "boost"),
    ],
)
def test_answered_keeps_the_state_at_once(
    entity: str, value: object, state: object, kept: object
) -> None:
    reg = Registry()
    reg.hello(7, hello(declared=(*LAMP, MODE)), at=0)
    p = issued(reg, "lamp-1", entity, value)
    assert reg.answered(p, Result(p.id, True, state)) == kept
    assert reg.states["lamp-1"][entity] == kept


def test_answered_a_button_has_no_state() -> None:
    reg = Registry()
    reg.hello(7, hello(declared=(*LAMP, BELL)), at=0)
    p = issued(reg, "lamp-1", "bell", None)
    assert reg.answered(p, Result(p.id, True, True)) is None
    assert "bell" not in reg.states["lamp-1"]


@pytest.mark.parametrize(
    ("entity", "value", "state", "error"),
    [
        ("brightness", 40, "bright", 'lamp-1.brightness: "bright" is not a number'),
        ("brightness", 40, True, "lamp-1.brightness: true is not a number"),
        ("power", True, 1, "lamp-1.power: 1 is not true or false"),
        ("mode", "eco", "turbo", 'lamp-1.mode: "turbo" is not one of eco, boost'),
    ],
)
def test_answered_refuses_an_impossible_state_and_keeps_the_old(
    entity: str, value: object, state: object, error: str
) -> None:
    reg = Registry()
    reg.hello(7, hello(declared=(*LAMP, MODE)), at=0)
    reg.readings("lamp-1", {"brightness": 10, "power": False, "mode": "boost"})
    before = dict(reg.states["lamp-1"])
    p = issued(reg, "lamp-1", entity, value)
    assert reg.answered(p, Result(p.id, True, state)) == error
    assert reg.states["lamp-1"] == before


def test_readings_keeps_valid_states_and_names_the_wrong_ones() -> None:
    reg = Registry()
    reg.hello(7, hello(declared=(*LAMP, BELL, STATUS)), at=0)
    reg.readings("lamp-1", {"power": True, "brightness": 10})
    good, wrong = reg.readings(
        "lamp-1",
        {
            "brightness": 40,
            "temperature": 21.5,
            "power": "on",
            "t": 20,
            "bell": None,  # even "unknown": a button has no state at all
            "status": "s" * 256,
        },
    )
    assert good == {"brightness": 40, "temperature": 21.5}
    assert wrong == [
        'lamp-1.power: "on" is not true or false',
        "lamp-1.t: no such entity (lamp-1 has: power, brightness, temperature, bell, status)",
        "lamp-1.bell: a button has no state",
        'lamp-1.status: "' + "s" * 38 + "… is not a text of at most 255 characters",
    ]
    assert reg.states["lamp-1"] == {
        "power": True,  # the wrong reading left the last good one
        "brightness": 40,
        "temperature": 21.5,
        "status": None,
    }


def test_a_null_reading_makes_a_state_unknown_again() -> None:
    reg = Registry()
    reg.hello(7, hello(), at=0)
    reg.readings("lamp-1", {"temperature": 21.5})
    assert reg.readings("lamp-1", {"temperature": None}) == ({"temperature": None}, [])
    assert reg.states["lamp-1"]["temperature"] is None


def test_command_events() -> None:
    brightness = LAMP[1]
    p = Pending("c1", "lamp-1", brightness, 40, "alice", None, started=10.0, deadline=15.0)
    issued_ev = p.event(Phase.ISSUED, 10.0)
    assert issued_ev == CommandEvent("c1", "lamp-1", "brightness", 40, "alice", "issued")
    assert issued_ev.as_json() == {
        "id": "c1",
        "device": "lamp-1",
        "entity": "brightness",
        "value": 40,
        "user": "alice",
        "phase": "issued",
    }
    ev = p.event(Phase.RESULT, 10.0421, 200, ok=True, state=38)
    assert ev.as_json() == {
        **issued_ev.as_json(),
        "phase": "result",
        "ok": True,
        "state": 38,
        "status": 200,
        "latency_ms": 42,
    }
    assert list(ev.as_json())[-4:] == ["ok", "state", "status", "latency_ms"]
    ev = p.event(Phase.FAILED, 15.0, 504, ok=False, error="slow")
    assert ev.as_json() == {
        **issued_ev.as_json(),
        "phase": "failed",
        "ok": False,
        "error": "slow",
        "status": 504,
        "latency_ms": 5000,
    }


def test_a_safe_state_command_says_why_vigil_sent_it() -> None:
    reg = Registry()
    reg.hello(7, hello(), at=0)
    reason = "safe state: alice lost"
    p = reg.issue("lamp-1", "power", False, "vigil", now=10.0, timeout=5, reason=reason)
    assert isinstance(p, Pending)
    assert p.event(Phase.ISSUED, 10.0).as_json() == {
        "id": p.id,
        "device": "lamp-1",
        "entity": "power",
        "value": False,
        "user": "vigil",
        "phase": "issued",
        "reason": reason,
    }
    answered = p.event(Phase.RESULT, 10.5, 200, ok=True, state=False).as_json()
    assert (answered["reason"], answered["state"]) == (reason, False)


# -- telemetry ---------------------------------------------------------------


def test_coalescer_first_reading_goes_at_once_then_at_most_every_interval() -> None:
    c = Coalescer(interval=0.2)
    assert c.offer("d", {"n": 1}, now=10.0) == 10.0
    assert c.release("d", now=10.0) == {"n": 1}
    assert c.offer("d", {"n": 2}, now=10.05) == pytest.approx(10.2)
    assert c.offer("d", {"n": 3}, now=10.1) is None  # release already due
    assert c.offer("e", {"n": 9}, now=10.1) == 10.1  # other devices are independent
    assert c.release("d", now=10.2) == {"n": 3}  # the newest only
    assert c.release("d", now=10.3) is None
    assert c.offer("d", {"n": 4}, now=11.0) == 11.0  # quiet for long: at once


def test_coalescer_forget() -> None:
    c = Coalescer()
    c.offer("d", {"n": 1}, now=0)
    c.forget("d")
    assert c.release("d", now=0) is None
    c.forget("never-seen")


# -- reassembly ----------------------------------------------------------------


def test_reassembler_joins_pieces_per_association() -> None:
    r = Reassembler()
    assert r.feed(1, b'{"a":', eor=False) is None
    assert r.feed(2, b"{}", eor=True) == b"{}"
    assert r.feed(1, b"1}", eor=True) == b'{"a":1}'
    assert r.feed(1, b"x", eor=True) == b"x"


def test_reassembler_caps_size_and_recovers() -> None:
    r = Reassembler()
    for _ in range(3):
        assert r.feed(1, b"x" * 40000, eor=False) is None
    err = r.feed(1, b"x" * 10, eor=True)
    assert isinstance(err, str) and "120010 bytes" in err
    assert r.feed(1, b"{}", eor=True) == b"{}"
    assert r.feed(1, b"x" * 70000, eor=False) is None
    r.forget(1)
    assert r.feed(1, b"{}", eor=True) == b"{}"
