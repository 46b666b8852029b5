"""The event bus: ids, the ring buffer, resume and reset, the wire format."""

from __future__ import annotations

import json

from server.events import EventBus, encode, preamble


def test_wire_format() -> None:
    wire = encode(7, "chat", {"text": "a\nb"})
    assert wire == b'id: 7\nevent: chat\ndata: {"text":"a\\nb"}\n\n'
    assert preamble() == b"retry: 1000\n\n"


def test_publish_numbers_and_delivers() -> None:
    bus = EventBus(first_id=100)
    got: list[int] = []
    stop = bus.subscribe(lambda e: got.append(e.id))
    assert bus.publish("chat", {}).id == 100
    bus.publish("chat", {})
    stop()
    bus.publish("chat", {})
    assert got == [100, 101]


def test_since_resumes_exactly_once_in_order() -> None:
    bus = EventBus(first_id=1, size=5)
    assert bus.since(0) == []
    for i in range(1, 8):
        bus.publish("n", i)
    assert [e.data for e in bus.since(4) or []] == [5, 6, 7]
    assert [e.data for e in bus.since(2) or []] == [3, 4, 5, 6, 7]
    assert bus.since(7) == []
    assert bus.since(1) is None  # event 2 fell out of the ring
    assert bus.since(99) is None  # not one of ours (e.g. another run)


def test_reset_carries_state_and_current_id() -> None:
    bus = EventBus(first_id=10)
    bus.publish("x", 1)
    lines = bus.reset({"online": []}).decode().splitlines()
    assert lines[:2] == ["id: 10", "event: reset"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"online": []}
