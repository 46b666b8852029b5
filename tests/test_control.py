"""server.control.registry: codec, registry, telemetry coalescing, reassembly (no sockets)."""

from __future__ import annotations

import json

import pytest

from server.control import registry as control
from server.control.registry import (
    MAX_MESSAGE,
    Coalescer,
    Hello,
    Phase,
    Reassembler,
    Refusal,
    Registry,
    Result,
    Telemetry,
    decode,
    encode,
)


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            raw({"type": "hello", "device": "lamp-1", "name": "Lamp", "commands": ["on", "off"]}),
            Hello("lamp-1", "Lamp", ("on", "off")),
        ),
        (raw({"type": "hello", "device": "s.1_x-2"}), Hello("s.1_x-2", "s.1_x-2", ())),
        (raw({"type": "hello", "device": "d", "commands": []}) + b"\n\0", Hello("d", "d", ())),
        (
            raw({"type": "result", "id": "c1", "ok": True, "result": {"on": 1}}),
            Result("c1", True, {"on": 1}),
        ),
        (raw({"type": "result", "id": "c1", "ok": True}), Result("c1", True, None)),
        (
            raw({"type": "result", "id": "c1", "ok": False, "error": "hot"}),
            Result("c1", False, error="hot"),
        ),
        (raw({"type": "telemetry", "data": {"t": 21.5}}), Telemetry({"t": 21.5})),
        ('{"type":"hello","device":"d","name":"Lampe ü"}'.encode(), Hello("d", "Lampe ü", ())),
        (raw({"type": "hello", "device": "d", "hmac": "ab12"}), Hello("d", "d", (), "ab12")),
    ],
)
def test_decode_valid(data: bytes, expected: control.Message) -> None:
    assert decode(data) == expected


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xc3(", "not UTF-8 (bad byte at offset 0)"),
        (b"{", "not JSON: Expecting property name"),
        (b"[" * 30000, "nested too deeply"),
        (b"42", "must be a JSON object, not int"),
        (b'"hello"', "must be a JSON object, not str"),
        (raw({"device": "x"}), "unknown message type None"),
        (raw({"type": 5}), "unknown message type 5"),
        (raw({"type": "welcome"}), "unknown message type 'welcome'"),
        (raw({"type": "hello"}), "hello: device must be"),
        (raw({"type": "hello", "device": "-x"}), "hello: device must be"),
        (raw({"type": "hello", "device": "x" * 65}), "hello: device must be"),
        (raw({"type": "hello", "device": "a/b"}), "hello: device must be"),
        (raw({"type": "hello", "device": "x", "name": ""}), "hello: name must be"),
        (raw({"type": "hello", "device": "x", "name": "n" * 101}), "hello: name must be"),
        (raw({"type": "hello", "device": "x", "commands": "on"}), "hello: commands must be"),
        (raw({"type": "hello", "device": "x", "commands": [""]}), "hello: commands must be"),
        (raw({"type": "hello", "device": "x", "commands": [1]}), "hello: commands must be"),
        (raw({"type": "hello", "device": "x", "commands": ["a"] * 65}), "hello: commands must be"),
        (raw({"type": "hello", "device": "x", "commands": ["a", "a"]}), "must not repeat"),
        (raw({"type": "hello", "device": "x", "hmac": 12}), "hello: hmac must be a string"),
        (raw({"type": "result", "ok": True}), "result: id must be"),
        (raw({"type": "result", "id": "", "ok": True}), "result: id must be"),
        (raw({"type": "result", "id": "c", "ok": 1}), "result: ok must be"),
        (raw({"type": "result", "id": "c", "ok": False}), 'needs "error"'),
        (raw({"type": "telemetry", "data": [1]}), "telemetry: data must be an object"),
        (b" " * (MAX_MESSAGE + 1), f"too large: {MAX_MESSAGE + 1} bytes"),
    ],
)
def test_decode_errors(data: bytes, error: str) -> None:
    result = decode(data)
    assert isinstance(result, str) and error in result, result


def test_encode_is_compact_ascii_json() -> None:
    data = encode(control.welcome("lamp-ü"))
    assert data == b'{"type":"welcome","device":"lamp-\\u00fc"}'
    assert json.loads(data) == {"type": "welcome", "device": "lamp-ü"}
    assert json.loads(encode(control.error("bad"))) == {"type": "error", "error": "bad"}


# -- registry --------------------------------------------------------------


def hello(device: str = "lamp-1", commands: tuple[str, ...] = ("on", "off")) -> Hello:
    return Hello(device, f"Lamp {device}", commands)


def test_hello_registers_and_lists() -> None:
    reg = Registry()
    joined = reg.hello(7, hello(), at=100.0)
    dev = joined.device
    assert joined == control.Joined(dev)  # nothing replaced
    assert dev.as_json() == {
        "id": "lamp-1",
        "name": "Lamp lamp-1",
        "commands": ["on", "off"],
        "online": True,
        "since": "1970-01-01T00:01:40Z",
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
    assert p.message() == {
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
    assert p.event(Phase.ISSUED, 10.0) == {
        "id": "c1",
        "device": "lamp-1",
        "action": "on",
        "args": {},
        "user": "alice",
        "phase": "issued",
    }
    ev = p.event(Phase.RESULT, 10.0421, 200, ok=True, result={"on": True})
    assert ev["phase"] == "result" and ev["ok"] is True and ev["result"] == {"on": True}
    assert ev["status"] == 200 and ev["latency_ms"] == 42
    ev = p.event(Phase.FAILED, 15.0, 504, ok=False, error="slow")
    assert (ev["phase"], ev["status"], ev["error"], ev["latency_ms"]) == (
        "failed",
        504,
        "slow",
        5000,
    )


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
