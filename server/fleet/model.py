"""What the fleet sees of this vigil over MQTT: topics, payloads, the outbox, commands.

The pure half of the MQTT bridge (``server.fleet.mqtt`` is the shell around a
paho client in the loop). ``Fleet`` turns the typed events of ``feed.events``
into ``Message`` values, keeps each device as it last published it (a
command's result changes an entity's state at once, and comes as a
``CommandEvent``, not a device event) and what Home Assistant has been told
of it, and reads the commands the broker delivers; ``Outbox`` holds what
waits for the broker. Nothing here touches a socket or a clock.

Topics, under ``topic_prefix`` (default ``vigil/<site>``; README, "MQTT"):

- ``status``: ``online`` / ``offline`` (plain text, retained; ``offline`` is
  also the last will, so a dead vigil shows as offline);
- ``presence``: ``{"count", "users": [{"user", "since"(, "addr")}]}``, retained;
- ``devices/<id>/state``: the device as ``GET /api/devices`` shows it: its
  ``entities`` (kind, label, unit, classes, bounds, options) and ``state``
  (each stateful entity's value, null while unknown; current after every
  command result and reading); retained;
- ``devices/<id>/telemetry``: each coalesced reading (at most 5 a second);
- ``activity``: every command, as its ``command`` audit record (who, which
  entity, what value, status, state or error, latency; refusals too);
- ``devices/<id>/command`` (in, with ``commands = true``) and
  ``devices/<id>/result`` (out): see ``Fleet.command``.

Home Assistant discovery (``homeassistant = true``): one HA entity per vigil
entity (``discovery``), published again when a device comes with other
entities or another name, and emptied for an entity that went; HA's
commands are ``devices/<id>/command`` messages of user ``homeassistant``.

Retained messages (status, presence, state, discovery) carry the whole
current truth, so the outbox keeps only the newest per topic and a
reconnect publishes them all again (``Fleet.snapshot``); the others
(telemetry, activity, results) queue up to ``queue`` messages, and when it
is full the oldest telemetry goes first, then the oldest of the rest;
``Outbox.dropped`` counts what went, by kind, for the log.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from server.base.jsontext import dumps, loads
from server.config import MqttConfig
from server.feed.events import (
    CommandEvent,
    DeviceEvent,
    DeviceView,
    Event,
    Person,
    PresenceChanged,
    Telemetry,
)
from server.link.entities import Entity, Kind

ONLINE = b"online"
OFFLINE = b"offline"
MAX_COMMAND = 65536  # bytes in a command message
MAX_ID = 200  # characters in a command's "id"
HA_USER = "homeassistant"  # the "user" (and "id") of Home Assistant's commands
HA_MIN_STEP = 0.001  # the finest step a Home Assistant number takes
AVAILABLE = "{{ 'online' if value_json.online else 'offline' }}"  # HA: the device's part
# HA: a result as a person reads it (a sensor's state has at most 255 characters)
LAST_COMMAND = (
    "{{ ('ok' if value_json.ok else value_json.status ~ ': ' ~ value_json.error)[:255] }}"
)
COMMAND_FORM = '{"entity": "<key>", "value": <value>, "id": "<your id>", "user": "<name>"}'


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    kind: str = "state"  # for the drop counts: state, telemetry, activity, result, discovery


@dataclass(frozen=True, slots=True)
class Command:
    """A command from the broker with its id and a user who may send it, for
    ``issue_command``, which checks the entity and the value as for HTTP."""

    device: str
    entity: object  # as sent: the command path checks both against the device
    value: object
    id: Any  # the sender's, echoed in the result
    user: str  # the sender's name, without "mqtt:"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A command message that changes nothing: the result message that says why."""

    message: Message


@dataclass(frozen=True, slots=True)
class Announced:
    """What Home Assistant was told of one device: from what, and on which topics."""

    name: str
    entities: tuple[Entity, ...]
    topics: frozenset[str]


def _json(obj: Any) -> bytes:
    return dumps(obj).encode()


def _slug(text: str) -> str:
    """``text`` as a Home Assistant object id: [A-Za-z0-9_-] only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _given(**fields: object) -> dict[str, Any]:
    """The fields that have a value (HA takes one left out as its default)."""
    return {name: value for name, value in fields.items() if value is not None}


def _ha_command(key: str, value: str) -> str:
    """The command Home Assistant publishes for entity ``key``: ``value`` is JSON text,
    or the template HA fills in (``{{ value }}``)."""
    return f'{{"entity": "{key}", "value": {value}, "id": "{HA_USER}", "user": "{HA_USER}"}}'


def _ha_entity(entity: Entity, command_topic: str | None) -> tuple[str, dict[str, Any]] | None:
    """The Home Assistant component and config of one entity, without what every entity of
    the device shares; a control is read-only without ``command_topic`` (fleet commands
    off), and a button then has nothing to show (None)."""
    key, kind = entity.key, entity.kind  # a key is a-z0-9_: nothing to escape
    reads = {"value_template": "{{ value_json['state']['" + key + "'] }}"}
    if command_topic is not None and entity.control:
        command = {"command_topic": command_topic}
        if kind is Kind.BUTTON:
            return "button", command | {"payload_press": _ha_command(key, "null")}
        if kind is Kind.SWITCH:
            return "switch", command | reads | {
                "payload_on": _ha_command(key, "true"),
                "payload_off": _ha_command(key, "false"),
                "state_on": "True",  # how the template renders JSON true
                "state_off": "False",
            }
        if kind is Kind.NUMBER:
            return "number", command | reads | {
                "command_template": _ha_command(key, "{{ value }}"),
                "min": entity.min,
                "max": entity.max,
                "step": max(entity.step or 0, HA_MIN_STEP),
            } | _given(unit_of_measurement=entity.unit)
        return "select", command | reads | {
            "command_template": _ha_command(key, "{{ value | to_json }}"),
            "options": list(entity.options),
        }
    if kind is Kind.BUTTON:
        return None
    if kind in (Kind.SWITCH, Kind.BINARY_SENSOR):
        on_off = {"payload_on": "True", "payload_off": "False"}
        return "binary_sensor", reads | on_off | _given(device_class=entity.device_class)
    # a sensor, a text sensor, or a number or select read only
    classes = _given(device_class=entity.device_class, state_class=entity.state_class)
    return "sensor", reads | _given(unit_of_measurement=entity.unit) | classes


class Topics:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.status = f"{prefix}/status"
        self.presence = f"{prefix}/presence"
        self.activity = f"{prefix}/activity"
        self.commands = f"{prefix}/devices/+/command"  # what vigil subscribes to

    def device(self, dev_id: str, leaf: str) -> str:
        return f"{self.prefix}/devices/{dev_id}/{leaf}"

    def device_of(self, topic: str, leaf: str) -> str | None:
        """The device id in a ``devices/<id>/<leaf>`` topic, else None."""
        head, sep, rest = topic.partition(self.prefix + "/devices/")
        if head or not sep:
            return None
        dev_id, slash, tail = rest.partition("/")
        return dev_id if slash and tail == leaf and dev_id else None


class Fleet:
    """The bridge's view: what the broker has been told, and what it asks."""

    def __init__(self, cfg: MqttConfig, version: str) -> None:
        self.cfg = cfg
        self.version = version  # vigil's, for the hub device HA shows
        self.topics = Topics(cfg.topic_prefix)
        self.node = _slug(f"vigil_{cfg.site}")  # HA's object id of this vigil, and its hub's
        self.online: tuple[Person, ...] = ()
        self.devices: dict[str, DeviceView] = {}  # as last published
        self._announced: dict[str, Announced] = {}  # device id -> what HA was told
        # configs HA still had from before (retained) for devices not seen yet: HA device
        # identifier -> topics; emptied when the device comes with other entities
        self._left_over: dict[str, set[str]] = {}

    # -- what vigil publishes ------------------------------------------------
    def snapshot(self, online: tuple[Person, ...], devices: Iterable[DeviceView]) -> list[Message]:
        """Everything retained, from the server's current state: for each (re)connect."""
        self.online = online
        self.devices = {}
        self._announced = {}
        self._left_over = {}
        out = [Message(self.topics.status, ONLINE, retain=True), self._presence()]
        if self.cfg.homeassistant:
            out += self._hub()
        for dev in sorted(devices, key=lambda d: d.id):
            out += self._device(dev)
        return out

    def subscriptions(self) -> list[str]:
        """What to hear of earlier runs (their retained messages, at once): the devices'
        states and, with Home Assistant, this vigil's discovery configs (``retained``)."""
        out = [self.topics.device("+", "state")]
        if self.cfg.homeassistant:
            out.append(f"{self.cfg.discovery_prefix}/+/{self.node}/+/config")
        return out

    def retained(self, topic: str, payload: bytes) -> list[Message]:
        """A retained message of an earlier run, heard at (re)connect. A device this vigil
        does not see now is made offline (HA then shows it unavailable, not frozen at its
        last value); a config of an entity a device seen now no longer has is emptied
        (HA forgets it); one of a device not seen yet is kept until it comes."""
        if not payload:
            return []
        try:
            body = loads(payload)
        except ValueError:
            return []
        if not isinstance(body, dict):
            return []
        dev_id = self.topics.device_of(topic, "state")
        if dev_id is not None:
            if dev_id in self.devices or body.get("online") is not True:
                return []
            return [Message(topic, _json(body | {"online": False}), retain=True)]
        announced = {t for a in self._announced.values() for t in a.topics}
        if topic in announced or topic in self._hub_configs():
            return []
        device = body.get("device")
        ids = device.get("identifiers") if isinstance(device, dict) else None
        uid = ids[0] if isinstance(ids, list) and ids and isinstance(ids[0], str) else None
        if uid is not None and uid in {self._uid(d) for d in self._announced}:
            return [Message(topic, b"", retain=True, kind="discovery")]
        self._left_over.setdefault(uid or "", set()).add(topic)
        return []

    def on_event(self, event: Event) -> list[Message]:
        """The messages one event makes (chat stays among the people on the panel;
        commands are ``activity`` from their audit records: ``on_record``; an answered
        one is the device's new state)."""
        if isinstance(event, CommandEvent):
            return self._answered(event)
        if isinstance(event, PresenceChanged):
            self.online = event.online
            return [self._presence()]
        if isinstance(event, DeviceEvent):
            out = []
            if isinstance(event, Telemetry):
                topic = self.topics.device(event.device.id, "telemetry")
                out.append(Message(topic, _json(event.data), qos=0, kind="telemetry"))
            return out + self._device(event.device)
        return []

    def on_record(self, record: dict[str, Any]) -> list[Message]:
        """``activity`` for each ``command`` audit record (refusals too), as it is written."""
        if record.get("type") != "command":
            return []
        return [Message(self.topics.activity, _json(record), kind="activity")]

    def _presence(self) -> Message:
        keys = ("user", "since", "addr") if self.cfg.publish_addresses else ("user", "since")
        users = [{k: u.as_json()[k] for k in keys} for u in self.online]
        body = {"count": len(users), "users": users}
        return Message(self.topics.presence, _json(body), retain=True)

    def _answered(self, event: CommandEvent) -> list[Message]:
        """A command's result: its entity's new state in the device's state at once."""
        dev = self.devices.get(event.device)
        if event.phase != "result" or not event.ok or dev is None or event.entity not in dev.state:
            return []  # issued, failed, a button (no state), or a device not seen yet
        return self._device(replace(dev, state=dev.state | {event.entity: event.state}))

    def _device(self, dev: DeviceView) -> list[Message]:
        """The device's retained state, and Home Assistant's configs if they changed."""
        self.devices[dev.id] = dev
        state = Message(self.topics.device(dev.id, "state"), _json(dev.as_json()), retain=True)
        return [state, *self._discovery(dev)] if self.cfg.homeassistant else [state]

    # -- Home Assistant MQTT discovery ----------------------------------------
    def _discovery(self, dev: DeviceView) -> list[Message]:
        """A config per entity when the device is new to HA or describes itself anew; an
        empty one (HA forgets the entity) for each config of before that is no more."""
        before = self._announced.get(dev.id)
        if before is not None and (before.name, before.entities) == (dev.name, dev.entities):
            return []
        configs = self._configs(dev)
        out = [Message(t, _json(c), retain=True, kind="discovery") for t, c in configs.items()]
        earlier = before.topics if before is not None else frozenset()
        earlier |= self._left_over.pop(self._uid(dev.id), set())
        gone = sorted(earlier - configs.keys())
        out += [Message(topic, b"", retain=True, kind="discovery") for topic in gone]
        self._announced[dev.id] = Announced(dev.name, dev.entities, frozenset(configs))
        return out

    def _uid(self, dev_id: str) -> str:
        """The HA device identifier of vigil device ``dev_id``."""
        return f"{self.node}_{_slug(dev_id)}"

    def _config_topic(self, component: str, object_id: str) -> str:
        return f"{self.cfg.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def _hub_configs(self) -> dict[str, dict[str, Any]]:
        """This vigil as an HA device (the one its devices are ``via_device``): whether
        it is up, and how many people are online."""
        hub = {
            "identifiers": [self.node],
            "name": f"vigil {self.cfg.site}",
            "manufacturer": "vigil",
            "model": "control panel",
            "sw_version": self.version,
            "configuration_url": self.cfg.panel_url,
        }
        status = {
            "name": "Status",
            "unique_id": f"{self.node}_status",
            "state_topic": self.topics.status,
            "payload_on": ONLINE.decode(),
            "payload_off": OFFLINE.decode(),
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": hub,
        }
        people = {
            "name": "People online",
            "unique_id": f"{self.node}_people",
            "state_topic": self.topics.presence,
            "value_template": "{{ value_json.count }}",
            "json_attributes_topic": self.topics.presence,
            "unit_of_measurement": "people",
            "state_class": "measurement",
            "icon": "mdi:account-group",
            "availability_topic": self.topics.status,
            "device": hub,
        }
        return {
            self._config_topic("binary_sensor", f"{self.node}_status"): status,
            self._config_topic("sensor", f"{self.node}_people"): people,
        }

    def _hub(self) -> list[Message]:
        configs = self._hub_configs().items()
        return [Message(t, _json(c), retain=True, kind="discovery") for t, c in configs]

    def _configs(self, dev: DeviceView) -> dict[str, dict[str, Any]]:
        """Discovery topic -> config, one per entity HA can show, and (when HA may send
        commands) the device's "Last command": the answer to its newest fleet command,
        so that a refusal (held by someone, a value out of range, ...) shows in HA."""
        uid = self._uid(dev.id)
        state = self.topics.device(dev.id, "state")
        common = {
            "availability": [
                {"topic": self.topics.status},
                {"topic": state, "value_template": AVAILABLE},
            ],
            "availability_mode": "all",
            "device": {
                "identifiers": [uid],
                "name": dev.name,
                "manufacturer": "vigil",
                "via_device": self.node,
            },
        }
        commands = self.cfg.commands and HA_USER in self.cfg.command_users
        command_topic = self.topics.device(dev.id, "command") if commands else None
        out = {}
        if command_topic is not None:
            result = self.topics.device(dev.id, "result")
            last = {
                "name": "Last command",
                "unique_id": f"{uid}_last_command",
                "state_topic": result,
                "value_template": LAST_COMMAND,
                "json_attributes_topic": result,
                "icon": "mdi:console-line",
            }
            out[self._config_topic("sensor", f"{_slug(dev.id)}_last_command")] = last | common
        for entity in dev.entities:
            made = _ha_entity(entity, command_topic)
            if made is None:
                continue
            component, config = made
            head = {"name": entity.label, "unique_id": f"{uid}_{entity.key}"}
            if entity.stateful:
                head["state_topic"] = state
            topic = self._config_topic(component, f"{_slug(dev.id)}_{entity.key}")
            out[topic] = head | config | common
        return out

    # -- commands from the broker ---------------------------------------------
    def command(self, topic: str, payload: bytes, retained: bool) -> Command | Rejection | None:
        """A command message read: well-formed, or the error to publish back (nothing
        happens); None for an empty one (what clears a retained message: no command, no
        answer). The entity and the value are checked by the command path, as for HTTP:
        its refusals (400 naming the rule, 404, 409, …) are results like any other.

        ``{"entity": str, "value": … (a button: null or left out), "id": str|number,
        "user": str}`` on ``devices/<id>/command``; ``user`` must be in ``command_users``.
        A retained command is refused: it would run again at every reconnect.
        """
        if not payload:
            return None
        dev_id = self.topics.device_of(topic, "command")
        if dev_id is None:
            return self.rejection(None, None, 400, f"not a command topic: {topic}")
        if len(payload) > MAX_COMMAND:
            return self.rejection(dev_id, None, 413, f"a command has at most {MAX_COMMAND} bytes")
        try:
            body = loads(payload)
        except ValueError as e:
            why = f"the message is not UTF-8 JSON ({e}): " + COMMAND_FORM
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
        user = body.get("user")
        if not isinstance(user, str) or not user:
            return self.rejection(dev_id, cid, 400, "a command names its user: " + COMMAND_FORM)
        if user not in self.cfg.command_users:
            why = f"mqtt user {user!r} may not send commands (mqtt.command_users)"
            return self.rejection(dev_id, cid, 403, why)
        return Command(dev_id, body.get("entity"), body.get("value"), cid, user)

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
