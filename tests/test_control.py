"""server.control.registry: registry, commands, telemetry coalescing, reassembly (no sockets).

The wire (decoding and encoding every message): tests/test_codec.py.
"""

from __future__ import annotations

import json

import pytest

from server.control import registry as control
from server.control.registry import Coalescer, Phase, Reassembler, Refusal, Registry
from server.core.views import device_view
from server.feed.events import CommandEvent
from server.link.codec import Command, Hello, Result, encode

# -- registry --------------------------------------------------------------


def hello(device: str = "lamp-1", commands: tuple[str, ...] = ("on", "off")) -> Hello:
    return Hello(device, f"Lamp {device}", commands)


def test_hello_registers_and_lists() -> None:
    reg = Registry()
    joined = reg.hello(7, hello(), at=100.0)
    dev = joined.device
    assert joined == control.Joined(dev)  # nothing replaced
    assert device_view(dev, None).as_json() == {
        "id": "lamp-1",
        "name": "Lamp lamp-1",
        "commands": ["on", "off"],
        "online": True,
        "since": "1970-01-01T00:01:40Z",
        "lease": None,
    }
    assert reg.device_of(7) == dev and reg.device_of(8) is None


def test_a_proven_hello_replaces_the_live_association_of_its_id() -> None:
    reg = Registry()
    reg.hello(7, hello(), at=100.0)
    other = reg.hello(9, hello("lamp-2"), at=100.0)
    p = reg.issue("lamp-1", "on", {}, "alice", now=1.0, timeout=5)
    q = reg.issue("lamp-2", "on", {}, "alice", now=1.0, timeout=5)
    assert isinstance(p, control.Pending) and isinstance(q, control.Pending)
    joined = reg.hello(8, hello(commands=("on",)), at=101.0)  # the agent restarted
    assert joined.replaced == 7 and joined.lost == (p,)
    assert joined.gone is not None and not joined.gone.online and joined.gone.since == 101.0
    assert joined.device.assoc == 8 and joined.device.since == 101.0
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
    pa = reg.issue("a", "on", {}, "alice", now=1.0, timeout=5)
    pb = reg.issue("b", "on", {}, "alice", now=1.0, timeout=5)
    assert isinstance(pa, control.Pending) and isinstance(pb, control.Pending)
    dev, lost = reg.drop_assoc(7, at=150.0)
    assert dev is not None and not dev.online and dev.since == 150.0 and dev.assoc is None
    assert lost == [pa] and list(reg.pending) == [pb.id]
    assert reg.drop_assoc(7, at=151.0) == (None, [])  # twice: COMM_LOST after SHUTDOWN
    assert reg.drop_assoc(99, at=151.0) == (None, [])  # never said hello


def test_issue_refusals_and_pending() -> None:
    reg = Registry()
    assert reg.issue("x", "on", {}, "al", 0, 5) == Refusal(404, "unknown device 'x'")
    reg.hello(7, hello(commands=("on",)), at=0)
    bad = reg.issue("lamp-1", "off", {}, "al", 0, 5)
    assert isinstance(bad, Refusal) and bad.status == 400 and "(it has: on)" in bad.error
    p = reg.issue("lamp-1", "on", {"level": 3}, "al", now=10.0, timeout=5)
    assert isinstance(p, control.Pending) and p.deadline == 15.0
    assert p.command() == Command(p.id, "on", {"level": 3}, "al")
    assert json.loads(encode(p.command())) == {
        "type": "command",
        "id": p.id,
        "action": "on",
        "args": {"level": 3},
        "user": "al",
    }
    p2 = reg.issue("lamp-1", "on", {}, "al", now=10.0, timeout=5)
    assert isinstance(p2, control.Pending) and p2.id != p.id
    reg.drop_assoc(7, at=1)
    assert reg.issue("lamp-1", "on", {}, "al", 0, 5) == Refusal(503, "device 'lamp-1' is offline")


def test_resolve_only_from_the_commanded_device_and_only_once() -> None:
    reg = Registry()
    reg.hello(7, hello("a"), at=0)
    reg.hello(8, hello("b"), at=0)
    p = reg.issue("a", "on", {}, "al", 0, 5)
    assert isinstance(p, control.Pending)
    assert reg.resolve(8, Result(p.id, True)) is None  # device b cannot answer for a
    assert reg.resolve(7, Result(p.id, True)) == p
    assert reg.resolve(7, Result(p.id, True)) is None  # late duplicate
    p = reg.issue("a", "on", {}, "al", 0, 5)
    assert isinstance(p, control.Pending)
    assert reg.expire(p.id) == p and reg.expire(p.id) is None
    assert reg.resolve(7, Result(p.id, True)) is None  # late after 504


def test_command_events() -> None:
    p = control.Pending("c1", "lamp-1", "on", {}, "alice", started=10.0, deadline=15.0)
    issued = p.event(Phase.ISSUED, 10.0)
    assert issued == CommandEvent("c1", "lamp-1", "on", {}, "alice", "issued")
    assert issued.as_json() == {
        "id": "c1",
        "device": "lamp-1",
        "action": "on",
        "args": {},
        "user": "alice",
        "phase": "issued",
    }
    ev = p.event(Phase.RESULT, 10.0421, 200, ok=True, result={"on": True})
    assert ev.as_json() == {
        **issued.as_json(),
        "phase": "result",
        "ok": True,
        "result": {"on": True},
        "status": 200,
        "latency_ms": 42,
    }
    assert list(ev.as_json())[-4:] == ["ok", "result", "status", "latency_ms"]  # as before
    ev = p.event(Phase.FAILED, 15.0, 504, ok=False, error="slow")
    assert ev.as_json() == {
        **issued.as_json(),
        "phase": "failed",
        "ok": False,
        "error": "slow",
        "status": 504,
        "latency_ms": 5000,
    }


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
