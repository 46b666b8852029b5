"""What the fleet sees of this vigil over MQTT: topics, payloads, the outbox, commands.

The pure half of the MQTT bridge (``server.fleet.mqtt`` is the shell around a
paho client in the loop). ``Fleet`` turns the typed events of ``feed.events``
into ``Message`` values, keeps what a reconnect must publish again (presence,
each device's state and last telemetry) and reads the commands the broker
delivers; ``Outbox`` holds what waits for the broker. Nothing here touches
a socket or a clock.

Topics, under ``topic_prefix`` (default ``vigil/<site>``; README, "MQTT"):

- ``status``: ``online`` / ``offline`` (plain text, retained; ``offline`` is
  also the last will, so a dead vigil shows as offline);
- ``presence``: ``{"count", "users": [{"user", "since"(, "addr")}]}``, retained;
- ``devices/<id>/state``: the device as ``GET /api/devices`` shows it
  (``online``, ``lease``, …) plus ``telemetry``, its last reading; retained;
- ``devices/<id>/telemetry``: each coalesced reading (at most 5 a second);
- ``activity``: every command, as its ``command`` audit record (who, what,
  status, result or error, latency; refusals too);
- ``devices/<id>/command`` (in, with ``commands = true``) and
  ``devices/<id>/result`` (out): see ``Fleet.command``.

Retained messages (status, presence, state, discovery) carry the whole
current truth, so the outbox keeps only the newest per topic and a
reconnect publishes them all again (``Fleet.snapshot``); the others
(telemetry, activity, results) queue up to ``queue`` messages, and when it
is full the oldest telemetry goes first, then the oldest of the rest;
``Outbox.dropped`` counts what went, by kind, for the log.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from server.base.jsontext import dumps
from server.config import MqttConfig
from server.feed.events import (
    DeviceEvent,
    DeviceView,
    Event,
    Person,
    PresenceChanged,
    Telemetry,
)

ONLINE = b"online"
OFFLINE = b"offline"
MAX_COMMAND = 65536  # bytes in a command message
MAX_ID = 200  # characters in a command's "id"
HA_USER = "homeassistant"  # the "user" of Home Assistant's switch commands
AVAILABLE = "{{ 'online' if value_json.online else 'offline' }}"  # HA: the device's part
COMMAND_FORM = '{"action": "<name>", "args": {…}, "id": "<your id>", "user": "<name>"}'


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    kind: str = "state"  # for the drop counts: state, telemetry, activity, result, discovery


@dataclass(frozen=True, slots=True)
class Command:
    """A valid command from the broker, for ``api.issue_command``."""

    device: str
    action: str
    args: dict[str, Any]
    id: Any  # the sender's, echoed in the result
    user: str  # the sender's name, without "mqtt:"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A command message that changes nothing: the result message that says why."""

    message: Message


def _json(obj: Any) -> bytes:
    return dumps(obj).encode()


def _slug(text: str) -> str:
    """``text`` as a Home Assistant object id: [A-Za-z0-9_-] only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


class Topics:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.status = f"{prefix}/status"
        self.presence = f"{prefix}/presence"
        self.activity = f"{prefix}/activity"
        self.commands = f"{prefix}/devices/+/command"  # what vigil subscribes to

    def device(self, dev_id: str, leaf: str) -> str:
        return f"{self.prefix}/devices/{dev_id}/{leaf}"

    def device_of_command(self, topic: str) -> str | None:
        """The device id in a ``devices/<id>/command`` topic, else None."""
        head, sep, rest = topic.partition(self.prefix + "/devices/")
        if head or not sep:
            return None
        dev_id, slash, leaf = rest.partition("/")
        return dev_id if slash and leaf == "command" and dev_id else None


class Fleet:
    """The bridge's view: what the broker has been told, and what it asks."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix)
        self.devices: dict[str, DeviceView] = {}  # as the last event showed them
        self.telemetry: dict[str, dict[str, Any]] = {}  # id -> last reading
        self.online: tuple[Person, ...] = ()
        self._sensors: dict[str, set[str]] = {}  # id -> numeric fields announced to HA

    # -- what vigil publishes ------------------------------------------------
    def snapshot(self, online: tuple[Person, ...], devices: Iterable[DeviceView]) -> list[Message]:
        """Everything retained, from the server's current state: for each (re)connect."""
        self.online = online
        self.devices = {d.id: d for d in devices}
        self._sensors = {}
        out = [Message(self.topics.status, ONLINE, retain=True), self._presence()]
        for dev_id in sorted(self.devices):
            out += self._device(dev_id, announce=True)
        return out

    def on_event(self, event: Event) -> list[Message]:
        """The messages one event makes (chat stays among the people on the panel;
        commands are ``activity`` from their audit records: ``on_record``)."""
        if isinstance(event, PresenceChanged):
            self.online = event.online
            return [self._presence()]
        if isinstance(event, DeviceEvent):
            return self._device_event(event)
        return []

    def on_record(self, record: dict[str, Any]) -> list[Message]:
        """``activity`` for each ``command`` audit record (refusals too), as it is written."""
        if record.get("type") != "command":
            return []
        return [Message(self.topics.activity, _json(record), kind="activity")]

    def _device_event(self, event: DeviceEvent) -> list[Message]:
        dev = event.device
        dev_id = dev.id
        new = dev_id not in self.devices
        self.devices[dev_id] = dev
        out = []
        if isinstance(event, Telemetry):
            reading = event.data
            self.telemetry[dev_id] = reading
            topic = self.topics.device(dev_id, "telemetry")
            out.append(Message(topic, _json(reading), qos=0, kind="telemetry"))
        return out + self._device(dev_id, announce=new)

    def _presence(self) -> Message:
        keys = ("user", "since", "addr") if self.cfg.publish_addresses else ("user", "since")
        users = [{k: u.as_json()[k] for k in keys} for u in self.online]
        body = {"count": len(users), "users": users}
        return Message(self.topics.presence, _json(body), retain=True)

    def _device(self, dev_id: str, announce: bool) -> list[Message]:
        """The device's retained state, and Home Assistant entities not yet announced."""
        state = {**self.devices[dev_id].as_json(), "telemetry": self.telemetry.get(dev_id)}
        out = [Message(self.topics.device(dev_id, "state"), _json(state), retain=True)]
        if self.cfg.homeassistant:
            out += self._discovery(dev_id, announce)
        return out

    # -- Home Assistant MQTT discovery ----------------------------------------
    def _discovery(self, dev_id: str, switch: bool) -> list[Message]:
        """Config messages: the switch (if ``switch``) and sensors for new numeric fields."""
        dev = self.devices[dev_id]
        node = _slug(f"vigil_{self.cfg.site}")
        uid = f"{node}_{_slug(dev_id)}"
        state = self.topics.device(dev_id, "state")
        common = {
            "state_topic": state,
            "availability": [
                {"topic": self.topics.status},
                {"topic": state, "value_template": AVAILABLE},
            ],
            "availability_mode": "all",
            "device": {"identifiers": [uid], "name": dev.name, "manufacturer": "vigil"},
        }
        out = []
        if switch and {"on", "off"} <= set(dev.commands):
            on = "{{ 'ON' if (value_json.telemetry or {}).get('on') else 'OFF' }}"
            entity = {**common, "name": "Power", "unique_id": f"{uid}_power", "value_template": on}
            if self.cfg.commands and HA_USER in self.cfg.command_users:
                component = "switch"
                command = self.topics.device(dev_id, "command")
                entity |= {"command_topic": command, "state_on": "ON", "state_off": "OFF"}
                for word in ("on", "off"):
                    cmd: dict[str, Any] = {
                        "action": word,
                        "args": {},
                        "id": HA_USER,
                        "user": HA_USER,
                    }
                    entity[f"payload_{word}"] = dumps(cmd)
            else:  # fleet commands off: the same state, read only
                component = "binary_sensor"
                entity |= {"payload_on": "ON", "payload_off": "OFF"}
            topic = f"{self.cfg.discovery_prefix}/{component}/{node}/{_slug(dev_id)}/config"
            out.append(Message(topic, _json(entity), retain=True, kind="discovery"))
        known = self._sensors.setdefault(dev_id, set())
        reading = self.telemetry.get(dev_id) or {}
        for field in sorted(reading):
            value = reading[field]
            if field in known or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            known.add(field)
            entity = {
                **common,
                "name": field,
                "unique_id": f"{uid}_{_slug(field)}",
                "value_template": "{{ value_json.telemetry[" + json.dumps(field) + "] }}",
            }
            object_id = _slug(f"{dev_id}_{field}")
            topic = f"{self.cfg.discovery_prefix}/sensor/{node}/{object_id}/config"
            out.append(Message(topic, _json(entity), retain=True, kind="discovery"))
        return out

    # -- commands from the broker ---------------------------------------------
    def command(self, topic: str, payload: bytes, retained: bool) -> Command | Rejection | None:
        """A command message read: valid, or the error to publish back (nothing happens);
        None for an empty one (what clears a retained message: no command, no answer).

        ``{"action": str, "args": {…} (optional), "id": str|number, "user": str}``
        on ``devices/<id>/command``; ``user`` must be in ``command_users``.
        A retained command is refused: it would run again at every reconnect.
        """
        if not payload:
            return None
        dev_id = self.topics.device_of_command(topic)
        if dev_id is None:
            return self.rejection(None, None, 400, f"not a command topic: {topic}")
        if len(payload) > MAX_COMMAND:
            return self.rejection(dev_id, None, 413, f"a command has at most {MAX_COMMAND} bytes")
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            why = "the message is not UTF-8 JSON: " + COMMAND_FORM
            return self.rejection(dev_id, None, 400, why)
        if not isinstance(body, dict):
            return self.rejection(dev_id, None, 400, "the message must be " + COMMAND_FORM)
        cid = body.get("id")
        if isinstance(cid, bool) or not isinstance(cid, str | int) or not str(cid):
            return self.rejection(dev_id, None, 400, "a command needs an id (string or number)")
        if len(str(cid)) > MAX_ID:
            return self.rejection(dev_id, None, 400, f"an id has at most {MAX_ID} characters")
        if retained:
            why = "retained commands are refused (publish without -r)"
            return self.rejection(dev_id, cid, 400, why)
        action, args, user = body.get("action"), body.get("args", {}), body.get("user")
        if not isinstance(action, str) or not action or not isinstance(args, dict):
            return self.rejection(dev_id, cid, 400, "the message must be " + COMMAND_FORM)
        if not isinstance(user, str) or not user:
            return self.rejection(dev_id, cid, 400, "a command names its user: " + COMMAND_FORM)
        if user not in self.cfg.command_users:
            why = f"mqtt user {user!r} may not send commands (mqtt.command_users)"
            return self.rejection(dev_id, cid, 403, why)
        return Command(dev_id, action, args, cid, user)

    def result(self, dev_id: str, cid: Any, status: int, body: dict[str, Any]) -> Message:
        """``devices/<id>/result``: the sender's id, the status, and the answer's fields
        (vigil's own command id as ``command``)."""
        answer = {k: v for k, v in body.items() if k != "id"}
        out: dict[str, Any] = {"id": cid, "status": status, "ok": bool(body.get("ok"))}
        if "id" in body:
            out["command"] = body["id"]
        out |= answer
        return Message(self.topics.device(dev_id, "result"), _json(out), kind="result")

    def rejection(self, dev_id: str | None, cid: Any, status: int, error: str) -> Rejection:
        if dev_id is None:
            topic = f"{self.topics.prefix}/error"
            msg = Message(topic, _json({"id": cid, "status": status, "ok": False, "error": error}))
            return Rejection(msg)
        return Rejection(self.result(dev_id, cid, status, {"ok": False, "error": error}))


class Outbox:
    """Messages waiting for the broker, bounded (the module header says how)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seq = itertools.count()
        self._retained: dict[str, tuple[int, Message]] = {}
        self._telemetry: deque[tuple[int, Message]] = deque()
        self._other: deque[tuple[int, Message]] = deque()
        self.dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._retained) + len(self._telemetry) + len(self._other)

    def put(self, msg: Message) -> None:
        entry = (next(self._seq), msg)
        if msg.retain:
            self._retained.pop(msg.topic, None)
            self._retained[msg.topic] = entry
            return
        if len(self._telemetry) + len(self._other) >= self.size:
            victim = self._telemetry or self._other
            self.dropped[victim.popleft()[1].kind] += 1
        (self._telemetry if msg.kind == "telemetry" else self._other).append(entry)

    def take(self) -> list[Message]:
        """Everything, oldest first; the outbox is empty after."""
        entries = [*self._retained.values(), *self._telemetry, *self._other]
        self._retained.clear()
        self._telemetry.clear()
        self._other.clear()
        return [m for _, m in sorted(entries, key=lambda e: e[0])]

    def forget_retained(self) -> None:
        """Drop the retained messages (a snapshot replaces them on reconnect)."""
        self._retained.clear()

    def take_dropped(self) -> Counter[str]:
        dropped, self.dropped = self.dropped, Counter()
        return dropped
