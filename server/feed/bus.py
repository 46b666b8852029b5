"""The in-process event bus and the Server-Sent Events wire format.

Every event gets the next integer id. The first id of a run is chosen by
the caller (the server uses wall-clock milliseconds at start), so ids keep
increasing across restarts and an id from a previous run is recognisably
not one of ours. A ring buffer of the last ``size`` events (and at most
``max_bytes`` of their wire form: a device's 64 KiB readings would
otherwise make 1,000 events 64 MB) lets a client
that reconnects with ``Last-Event-ID`` receive everything it missed, in
order, exactly once (``since``); if the id is older than the buffer or
unknown, ``since`` returns None and the stream starts with a ``reset``.

Events are the typed vocabulary of ``feed.events``. Each is encoded once, from
its one JSON form (``Published.wire``), and the same bytes go to every
stream (WHATWG HTML, "Server-sent events", §9.2.6 for the format); the
fleet bridge reads the typed event itself (``Published.event``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.base.jsontext import dumps
from server.feed.events import Event

RETRY_MS = 1000
HEARTBEAT = b": heartbeat\n\n"


def encode(event_id: int, kind: str, data: Any) -> bytes:
    """One SSE message: ``id``, ``event`` and a one-line JSON ``data`` field."""
    payload = dumps(data)
    return f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n".encode()


def personal(kind: str, data: Any) -> bytes:
    """An SSE message for one stream only, outside the ring: no id, so no resume sees it
    (``signedout``: the server ends the session of that stream, and says why)."""
    return f"event: {kind}\ndata: {dumps(data)}\n\n".encode()


def parse_event_id(text: str) -> int | None:
    """The id in a ``Last-Event-ID`` (or ``last_event_id``) value, None if it is not one.

    Only ASCII digits: ``str.isdigit`` also accepts ``"\xb2"`` (²), which ``int`` refuses.
    """
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def preamble() -> bytes:
    """The first bytes of every stream: reconnect delay (so browsers retry in ~1 s)."""
    return f"retry: {RETRY_MS}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Published:
    """An event as the bus sent it: its id and its SSE form."""

    id: int
    event: Event
    wire: bytes


Subscriber = Callable[[Published], None]


class EventBus:
    def __init__(self, first_id: int, size: int = 1000, max_bytes: int = 2 * 1048576) -> None:
        self.last_id = first_id - 1
        self.max_bytes = max_bytes
        self._ring: deque[Published] = deque(maxlen=size)
        self._bytes = 0  # of the wire forms in the ring
        self._subscribers: dict[int, Subscriber] = {}
        self._keys = itertools.count()

    def publish(self, event: Event) -> Published:
        """Record an event and hand it to every subscriber."""
        self.last_id += 1
        published = Published(
            self.last_id, event, encode(self.last_id, event.type, event.as_json())
        )
        ring = self._ring
        if len(ring) == ring.maxlen:
            self._bytes -= len(ring[0].wire)
        ring.append(published)
        self._bytes += len(published.wire)
        while self._bytes > self.max_bytes and len(ring) > 1:
            self._bytes -= len(ring.popleft().wire)
        for deliver in list(self._subscribers.values()):
            deliver(published)
        return published

    def subscribe(self, deliver: Subscriber) -> Callable[[], None]:
        """Hand every future event to ``deliver``; returns the function that stops it."""
        key = next(self._keys)
        self._subscribers[key] = deliver

        def stop() -> None:
            self._subscribers.pop(key, None)

        return stop

    def since(self, last_id: int) -> list[Published] | None:
        """Events after ``last_id``, oldest first; None if they are no longer all here."""
        if last_id == self.last_id:
            return []
        ring = self._ring
        if not ring or last_id > self.last_id or last_id < ring[0].id - 1:
            return None
        start = last_id - ring[0].id + 1
        return [ring[i] for i in range(start, len(ring))]

    def reset(self, state: Any) -> bytes:
        """A ``reset`` message carrying ``state``, with the current id to resume from."""
        return encode(self.last_id, "reset", state)
