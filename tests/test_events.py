"""The event bus: ids, the ring buffer, resume and reset, the wire format."""

from __future__ import annotations

import json

import pytest

from server.feed.bus import EventBus, encode, parse_event_id, preamble
from server.feed.events import ChatMessage


def chat(i: int, text: str = "") -> ChatMessage:
    return ChatMessage(i, "alice", text, "2026-12-03T10:00:00Z")


def test_wire_format() -> None:
    wire = encode(7, "chat", {"text": "a\nb"})
    assert wire == b'id: 7\nevent: chat\ndata: {"text":"a\\nb"}\n\n'
    assert preamble() == b"retry: 1000\n\n"


def test_publish_numbers_and_delivers() -> None:
    bus = EventBus(first_id=100)
    got: list[int] = []
    stop = bus.subscribe(lambda e: got.append(e.id))
    assert bus.publish(chat(1)).id == 100
    bus.publish(chat(2))
    stop()
    bus.publish(chat(3))
    assert got == [100, 101]


def test_since_resumes_exactly_once_in_order() -> None:
    bus = EventBus(first_id=1, size=5)
    assert bus.since(0) == []
    for i in range(1, 8):
        bus.publish(chat(i))
    assert [e.event for e in bus.since(4) or []] == [chat(5), chat(6), chat(7)]
    assert [e.id for e in bus.since(2) or []] == [3, 4, 5, 6, 7]
    assert bus.since(7) == []
    assert bus.since(1) is None  # event 2 fell out of the ring
    assert bus.since(99) is None  # not one of ours (e.g. another run)


def test_each_event_has_one_json_form_on_the_wire() -> None:
    """What a stream sends is the event's ``as_json``, under its ``type``."""
    bus = EventBus(first_id=5)
    wire = bus.publish(chat(9, "hi")).wire.decode().splitlines()
    assert wire[:2] == ["id: 5", "event: chat"]
    assert json.loads(wire[2].removeprefix("data: ")) == chat(9, "hi").as_json()


def test_reset_carries_state_and_current_id() -> None:
    bus = EventBus(first_id=10)
    bus.publish(chat(1))
    lines = bus.reset({"online": []}).decode().splitlines()
    assert lines[:2] == ["id: 10", "event: reset"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"online": []}


def test_the_ring_is_bounded_in_bytes_too() -> None:
    """1,000 readings of 64 KiB were 64 MB of ring; the oldest go first past max_bytes."""
    bus = EventBus(first_id=1, size=1000, max_bytes=10_000)
    for i in range(1, 101):
        bus.publish(chat(i, "x" * 1000))
    kept = bus.since(95) or []
    assert [e.id for e in kept] == [96, 97, 98, 99, 100]
    assert bus.since(80) is None  # pushed out by bytes, not by count
    assert sum(len(e.wire) for e in bus.since(91) or []) <= 10_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42", 42), ("", None), ("\xb2", None), ("\xb9\xb2", None), ("-1", None), ("1" * 20, None)],
)
def test_parse_event_id_takes_ascii_digits_only(text: str, expected: int | None) -> None:
    assert parse_event_id(text) == expected
