"""server.fleet.model (topics, payloads, Home Assistant discovery, outbox, commands) and
the [mqtt] config, with values."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.config import ConfigError, MqttConfig, load
from server.feed.events import (
    ChatMessage,
    CommandEvent,
    DeviceOnline,
    DeviceView,
    LeaseChanged,
    LeaseView,
    Person,
    PresenceChanged,
    Telemetry,
)
from server.fleet.model import Command, Fleet, Message, Outbox, Rejection, Topics
from server.link.entities import Kind
from tests.fakedevice import LAMP as LAMP_ENTITIES
from tests.fakedevice import described

CFG = MqttConfig(
    enabled=True,
    host="127.0.0.1",
    port=1883,
    tls=False,
    ca_file=None,
    username="vigil",
    password="pw",
    site="barn",
    topic_prefix="vigil/barn",
    client_id="vigil-barn",
    commands=True,
    command_users=("node-red", "homeassistant"),
    homeassistant=True,
)
LAMP = DeviceView(
    id="lamp-1",
    name="Lamp",
    entities=LAMP_ENTITIES,
    state={"power": None, "brightness": None, "temperature": None},
    online=True,
    since="2026-12-01T10:00:00Z",
    lease=None,
)
# One entity of every kind, with the fields Home Assistant takes.
EVERYTHING = described(
    {"key": "power", "kind": "switch", "label": "Power"},
    {"key": "speed", "kind": "number", "label": "Speed", "min": 0, "max": 3000, "step": 10,
     "unit": "rpm"},
    {"key": "level", "kind": "number", "label": "Level", "min": 0, "max": 1},
    {"key": "mode", "kind": "select", "label": "Mode", "options": ["eco", "fast"]},
    {"key": "flush", "kind": "button", "label": "Flush", "confirm": "Flush the tank?"},
    {"key": "temperature", "kind": "sensor", "label": "Temperature", "unit": "°C",
     "device_class": "temperature", "state_class": "measurement"},
    {"key": "door", "kind": "binary_sensor", "label": "Door", "device_class": "door"},
    {"key": "note", "kind": "text_sensor", "label": "Note"},
)  # fmt: skip
PUMP = DeviceView(
    id="pump.2",
    name="Pump",
    entities=EVERYTHING,
    state={e.key: None for e in EVERYTHING if e.stateful},
    online=True,
    since="2026-12-01T10:00:00Z",
    lease=None,
)
ALICE = Person("alice", "2026-12-01T10:00:00Z", "10.0.0.5")


def topics(msgs: list[Message]) -> list[str]:
    return [m.topic for m in msgs]


def test_topics() -> None:
    t = Topics("vigil/barn")
    assert (t.status, t.presence, t.activity) == (
        "vigil/barn/status",
        "vigil/barn/presence",
        "vigil/barn/activity",
    )
    assert t.commands == "vigil/barn/devices/+/command"
    assert t.device_of("vigil/barn/devices/lamp-1/command", "command") == "lamp-1"
    for other in (
        "vigil/barn/devices/lamp-1/state",
        "vigil/barnyard/devices/lamp-1/command",
        "vigil/barn/devices//command",
        "x/vigil/barn/devices/lamp-1/command",
        "vigil/barn/devices/lamp-1/command/x",
    ):
        assert t.device_of(other, "command") is None, other


def test_snapshot_is_everything_retained() -> None:
    fleet = Fleet(replace(CFG, homeassistant=False), "1.2.3")
    msgs = fleet.snapshot((ALICE,), [LAMP])
    assert topics(msgs) == [
        "vigil/barn/status",
        "vigil/barn/presence",
        "vigil/barn/devices/lamp-1/state",
    ]
    assert all(m.retain and m.qos == 1 for m in msgs)
    assert msgs[0].payload == b"online"
    assert json.loads(msgs[1].payload) == {
        "count": 1,
        "users": [{"user": "alice", "since": "2026-12-01T10:00:00Z"}],  # no address
    }
    state = json.loads(msgs[2].payload)
    assert state == LAMP.as_json()
    assert state["entities"][1] == {
        "key": "brightness",
        "kind": "number",
        "label": "Brightness",
        "unit": "%",
        "min": 0,
        "max": 100,
        "step": 1,
    }
    assert state["entities"][2]["device_class"] == "temperature"
    assert state["state"] == {"power": None, "brightness": None, "temperature": None}


def test_addresses_when_configured() -> None:
    fleet = Fleet(replace(CFG, publish_addresses=True), "1.2.3")
    msg = fleet.on_event(PresenceChanged("join", "alice", "10.0.0.5", None, (ALICE,)))[0]
    assert json.loads(msg.payload)["users"] == [ALICE.as_json()]


def test_events_to_messages() -> None:
    fleet = Fleet(replace(CFG, homeassistant=False), "1.2.3")
    fleet.snapshot((), [LAMP])
    now = replace(LAMP, state={"power": True, "brightness": 40, "temperature": 21.5})
    tele = fleet.on_event(Telemetry(now, {"power": True, "brightness": 40, "temperature": 21.5}))
    assert [(m.topic, m.retain, m.qos, m.kind) for m in tele] == [
        ("vigil/barn/devices/lamp-1/telemetry", False, 0, "telemetry"),
        ("vigil/barn/devices/lamp-1/state", True, 1, "state"),
    ]
    assert json.loads(tele[0].payload)["temperature"] == 21.5
    assert json.loads(tele[1].payload)["state"]["brightness"] == 40
    held = replace(now, lease=LeaseView("bob", "2026-12-01T10:02:03Z"))
    [state] = fleet.on_event(LeaseChanged("start", held, "bob", None))
    body = json.loads(state.payload)
    assert body["lease"]["holder"] == "bob" and body["state"]["power"] is True
    issued = CommandEvent("c1", "lamp-1", "brightness", 60, "bob", "issued")
    assert fleet.on_event(issued) == []  # activity comes from the audit record
    record = {"seq": 7, "type": "command", "user": "bob", "entity": "power", "status": 409}
    [act] = fleet.on_record(record)
    assert (act.topic, act.retain, act.kind) == ("vigil/barn/activity", False, "activity")
    assert json.loads(act.payload) == record
    assert fleet.on_record({"seq": 8, "type": "login", "user": "bob"}) == []
    assert fleet.on_event(ChatMessage(9, "bob", "hi", "2026-12-01T10:02:04Z")) == []


def test_a_commands_result_is_the_devices_state_at_once() -> None:
    fleet = Fleet(CFG, "1.2.3")
    fleet.snapshot((), [LAMP])
    issued = CommandEvent("c1", "lamp-1", "brightness", 60, "bob", "issued")
    answered = replace(issued, phase="result", status=200, ok=True, state=60, latency_ms=3)
    [state] = fleet.on_event(answered)  # no discovery again: the device is the same
    assert state.topic == "vigil/barn/devices/lamp-1/state" and state.retain
    assert json.loads(state.payload)["state"] == {
        "power": None,
        "brightness": 60,
        "temperature": None,
    }
    later = replace(answered, entity="power", value=True, state=True)
    assert json.loads(fleet.on_event(later)[0].payload)["state"]["brightness"] == 60  # kept
    failed = replace(issued, value=70, phase="failed", status=502, error="it failed")
    assert fleet.on_event(failed) == []
    pressed = CommandEvent("c2", "pump.2", "flush", None, "bob", "result", ok=True, status=200)
    assert fleet.on_event(pressed) == []  # a device not seen yet (and a button has no state)


def configs(msgs: list[Message]) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config (None: emptied)."""
    return {
        m.topic: json.loads(m.payload) if m.payload else None for m in msgs if m.kind == "discovery"
    }


def entity_configs(msgs: list[Message], device: str) -> dict[str, dict[str, Any]]:
    """The configs of ``device``'s entities (not the hub's, not its "Last command")."""
    return {
        topic: config
        for topic, config in configs(msgs).items()
        if f"/{device}_" in topic and not topic.endswith("_last_command/config")
    }


def ha(key: str, value: str) -> dict[str, Any]:
    """A Home Assistant command as vigil reads it, with ``value`` as HA fills it in."""
    return {"entity": key, "value": value, "id": "homeassistant", "user": "homeassistant"}


def filled(template: str, value: str) -> str:
    """A command template as Home Assistant renders it with ``value`` (JSON text)."""
    for placeholder in ("{{ value | to_json }}", "{{ value }}"):
        template = template.replace(placeholder, value)
    return template


def test_home_assistant_gets_one_entity_per_entity_with_its_type() -> None:
    msgs = Fleet(CFG, "1.2.3").snapshot((), [PUMP])
    got = entity_configs(msgs, "pump_2")
    prefix = "homeassistant/{}/vigil_barn/pump_2_{}/config"
    assert list(got) == [
        prefix.format("switch", "power"),
        prefix.format("number", "speed"),
        prefix.format("number", "level"),
        prefix.format("select", "mode"),
        prefix.format("button", "flush"),
        prefix.format("sensor", "temperature"),
        prefix.format("binary_sensor", "door"),
        prefix.format("sensor", "note"),
    ]
    assert all(m.retain for m in msgs if m.kind == "discovery")
    power, speed, level, mode, flush, temperature, door, note = got.values()
    state = "vigil/barn/devices/pump.2/state"
    command = "vigil/barn/devices/pump.2/command"
    for config in got.values():
        assert config["availability"] == [
            {"topic": "vigil/barn/status"},
            {
                "topic": state,
                "value_template": "{{ 'online' if value_json.online else 'offline' }}",
            },
        ]
        assert config["availability_mode"] == "all"
        assert config["device"] == {
            "identifiers": ["vigil_barn_pump_2"],
            "name": "Pump",
            "manufacturer": "vigil",
            "via_device": "vigil_barn",  # under this vigil's hub
        }
    assert (power["name"], power["unique_id"]) == ("Power", "vigil_barn_pump_2_power")
    assert power["state_topic"] == state and power["command_topic"] == command
    assert power["value_template"] == "{{ value_json['state']['power'] }}"
    assert (power["state_on"], power["state_off"]) == ("True", "False")  # JSON true, rendered
    assert json.loads(power["payload_on"]) == ha("power", True)
    assert json.loads(power["payload_off"]) == ha("power", False)
    assert {k: speed[k] for k in ("min", "max", "step", "unit_of_measurement")} == {
        "min": 0,
        "max": 3000,
        "step": 10,
        "unit_of_measurement": "rpm",
    }
    assert json.loads(filled(speed["command_template"], "2500")) == ha("speed", 2500)
    assert speed["command_topic"] == command
    assert level["step"] == 0.001 and "unit_of_measurement" not in level  # no step: HA's finest
    assert json.loads(filled(level["command_template"], "0.25")) == ha("level", 0.25)
    assert mode["options"] == ["eco", "fast"]
    assert json.loads(filled(mode["command_template"], '"fast"')) == ha("mode", "fast")
    assert json.loads(flush["payload_press"]) == ha("flush", None)
    assert "state_topic" not in flush and "value_template" not in flush  # no state
    assert {k: temperature[k] for k in ("unit_of_measurement", "device_class", "state_class")} == {
        "unit_of_measurement": "°C",
        "device_class": "temperature",
        "state_class": "measurement",
    }
    assert "command_topic" not in temperature
    assert (door["device_class"], door["payload_on"], door["payload_off"]) == (
        "door",
        "True",
        "False",
    )
    assert note["value_template"] == "{{ value_json['state']['note'] }}"
    assert not {"unit_of_measurement", "device_class", "command_topic"} & set(note)


def test_home_assistant_commands_are_commands_vigil_reads() -> None:
    fleet = Fleet(CFG, "1.2.3")
    got = configs(fleet.snapshot((), [PUMP]))

    def config(component: str, key: str) -> dict[str, Any]:
        return got[f"homeassistant/{component}/vigil_barn/pump_2_{key}/config"]

    sent = [
        config("switch", "power")["payload_on"],
        filled(config("number", "speed")["command_template"], "40"),
        filled(config("select", "mode")["command_template"], '"eco"'),
        config("button", "flush")["payload_press"],
    ]
    command = config("switch", "power")["command_topic"]
    assert [fleet.command(command, text.encode(), False) for text in sent] == [
        Command("pump.2", "power", True, "homeassistant", "homeassistant"),
        Command("pump.2", "speed", 40, "homeassistant", "homeassistant"),
        Command("pump.2", "mode", "eco", "homeassistant", "homeassistant"),
        Command("pump.2", "flush", None, "homeassistant", "homeassistant"),
    ]


def test_home_assistant_without_fleet_commands_is_read_only() -> None:
    for cfg in (replace(CFG, commands=False), replace(CFG, command_users=("node-red",))):
        every = configs(Fleet(cfg, "1.2.3").snapshot((), [PUMP]))
        assert not [t for t in every if t.endswith("_last_command/config")]  # no commands
        got = entity_configs(Fleet(cfg, "1.2.3").snapshot((), [PUMP]), "pump_2")
        prefix = "homeassistant/{}/vigil_barn/pump_2_{}/config"
        assert list(got) == [  # no button: it has nothing to show
            prefix.format("binary_sensor", "power"),
            prefix.format("sensor", "speed"),
            prefix.format("sensor", "level"),
            prefix.format("sensor", "mode"),
            prefix.format("sensor", "temperature"),
            prefix.format("binary_sensor", "door"),
            prefix.format("sensor", "note"),
        ]
        assert not [c for c in got.values() if "command_topic" in c or "command_template" in c]
        power = got[prefix.format("binary_sensor", "power")]
        speed = got[prefix.format("sensor", "speed")]
        assert (power["payload_on"], power["payload_off"]) == ("True", "False")
        assert speed["unit_of_measurement"] == "rpm"
        assert speed["value_template"] == "{{ value_json['state']['speed'] }}"


def test_home_assistant_hears_again_when_a_device_describes_itself_anew() -> None:
    fleet = Fleet(CFG, "1.2.3")
    assert len(entity_configs(fleet.snapshot((), [LAMP]), "lamp-1")) == 3
    warm = replace(LAMP, state={"power": True, "brightness": 40, "temperature": 21.5})
    assert configs(fleet.on_event(Telemetry(warm, {"temperature": 21.5}))) == {}  # same
    assert len(entity_configs(fleet.snapshot((), [LAMP]), "lamp-1")) == 3  # reconnect: again
    power, brightness, temperature = LAMP_ENTITIES
    # the device says hello again: brightness renamed, the switch now read-only
    reading = replace(power, kind=Kind.BINARY_SENSOR)
    again = replace(
        LAMP,
        entities=(reading, replace(brightness, label="Dimmer"), temperature),
    )
    got = configs(fleet.on_event(DeviceOnline(again)))
    assert got["homeassistant/number/vigil_barn/lamp-1_brightness/config"]["name"] == "Dimmer"
    assert "homeassistant/binary_sensor/vigil_barn/lamp-1_power/config" in got
    assert got["homeassistant/switch/vigil_barn/lamp-1_power/config"] is None  # HA forgets it
    renamed = configs(fleet.on_event(DeviceOnline(replace(again, name="Porch lamp"))))
    assert {c["device"]["name"] for c in renamed.values()} == {"Porch lamp"}
    assert configs(fleet.on_event(DeviceOnline(replace(again, name="Porch lamp")))) == {}
    new = entity_configs(fleet.on_event(DeviceOnline(replace(LAMP, id="lamp-2"))), "lamp-2")
    assert len(new) == 3


def test_home_assistant_sees_this_vigil_as_a_hub_with_its_status_and_people() -> None:
    fleet = Fleet(replace(CFG, panel_url="https://barn.local:8443/"), "1.2.3")
    got = configs(fleet.snapshot((), []))  # no device yet: HA still shows vigil itself
    status = got["homeassistant/binary_sensor/vigil_barn/vigil_barn_status/config"]
    people = got["homeassistant/sensor/vigil_barn/vigil_barn_people/config"]
    hub = {
        "identifiers": ["vigil_barn"],
        "name": "vigil barn",
        "manufacturer": "vigil",
        "model": "control panel",
        "sw_version": "1.2.3",
        "configuration_url": "https://barn.local:8443/",
    }
    assert status["device"] == hub == people["device"]
    assert (status["state_topic"], status["payload_on"], status["payload_off"]) == (
        "vigil/barn/status",
        "online",
        "offline",
    )
    assert status["device_class"] == "connectivity" and "availability_topic" not in status
    assert people["state_topic"] == "vigil/barn/presence"
    assert people["value_template"] == "{{ value_json.count }}"
    assert people["availability_topic"] == "vigil/barn/status"


def test_a_refused_command_shows_in_home_assistant_as_the_devices_last_command() -> None:
    fleet = Fleet(CFG, "1.2.3")
    got = configs(fleet.snapshot((), [LAMP]))
    last = got["homeassistant/sensor/vigil_barn/lamp-1_last_command/config"]
    assert last["state_topic"] == "vigil/barn/devices/lamp-1/result"
    assert last["json_attributes_topic"] == last["state_topic"]
    assert last["device"]["identifiers"] == ["vigil_barn_lamp-1"]
    refused = fleet.result("lamp-1", "homeassistant", 409, {"error": "lamp-1 is held by alice"})
    assert json.loads(refused.payload) == {
        "id": "homeassistant",
        "status": 409,
        "ok": False,
        "error": "lamp-1 is held by alice",
    }
    assert last["value_template"] == (
        "{{ ('ok' if value_json.ok else value_json.status ~ ': ' ~ value_json.error)[:255] }}"
    )


def test_an_earlier_runs_devices_not_seen_now_are_made_offline() -> None:
    fleet = Fleet(CFG, "1.2.3")
    fleet.snapshot((), [LAMP])
    gone = dict(LAMP.as_json(), id="lamp-9", online=True)
    topic = "vigil/barn/devices/lamp-9/state"
    (offline,) = fleet.retained(topic, json.dumps(gone).encode())
    assert offline.retain and offline.topic == topic
    assert json.loads(offline.payload) == gone | {"online": False}  # unavailable in HA
    assert fleet.retained(topic, json.dumps(gone | {"online": False}).encode()) == []
    seen = json.dumps(dict(LAMP.as_json(), online=True)).encode()
    assert fleet.retained("vigil/barn/devices/lamp-1/state", seen) == []  # it is online now
    assert fleet.retained(topic, b"") == [] and fleet.retained(topic, b"{oops") == []


def test_configs_an_earlier_run_left_for_entities_that_are_gone_are_emptied() -> None:
    fleet = Fleet(CFG, "1.2.3")
    fleet.snapshot((), [LAMP])
    old_switch = "homeassistant/switch/vigil_barn/lamp-1/config"  # the first protocol's
    body = json.dumps({"device": {"identifiers": ["vigil_barn_lamp-1"]}}).encode()
    assert fleet.retained(old_switch, body) == [
        Message(old_switch, b"", retain=True, kind="discovery")
    ]
    current = "homeassistant/switch/vigil_barn/lamp-1_power/config"
    assert fleet.retained(current, body) == []  # announced now: kept
    hub = "homeassistant/sensor/vigil_barn/vigil_barn_people/config"
    assert fleet.retained(hub, body) == []
    # a device not seen yet keeps its configs (unavailable) until it comes back ...
    later = "homeassistant/switch/vigil_barn/lamp-2_fan/config"
    other = json.dumps({"device": {"identifiers": ["vigil_barn_lamp-2"]}}).encode()
    assert fleet.retained(later, other) == []
    # ... and then loses the ones it no longer has
    lamp2 = replace(LAMP, id="lamp-2")
    got = configs(fleet.on_event(DeviceOnline(lamp2)))
    assert got[later] is None and got["homeassistant/switch/vigil_barn/lamp-2_power/config"]


TOPIC = "vigil/barn/devices/lamp-1/command"


def read(payload: Any, retained: bool = False, topic: str = TOPIC) -> Any:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Fleet(CFG, "1.2.3").command(topic, data, retained)


def refused(payload: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    out = read(payload, **kw)
    assert isinstance(out, Rejection)
    return out.message.topic, json.loads(out.message.payload)


def test_a_command_names_an_entity_and_a_value() -> None:
    assert read({"entity": "brightness", "value": 40, "id": "x1", "user": "node-red"}) == Command(
        "lamp-1", "brightness", 40, "x1", "node-red"
    )
    assert read({"entity": "mode", "value": "eco", "id": 9, "user": "node-red"}) == Command(
        "lamp-1", "mode", "eco", 9, "node-red"
    )
    # a button's value may be left out; the entity and value are the command path's to check
    assert read({"entity": "flush", "id": "b", "user": "node-red"}) == Command(
        "lamp-1", "flush", None, "b", "node-red"
    )
    assert read({"action": "on", "id": "old", "user": "node-red"}) == Command(
        "lamp-1", None, None, "old", "node-red"
    )
    assert read(b"") is None  # clearing a retained message


@pytest.mark.parametrize(
    ("payload", "cid", "status", "words"),
    [
        (b"\xff", None, 400, "not UTF-8 JSON"),
        (b'{"entity": "power", "value": NaN, "id": "n", "user": "node-red"}', None, 400, "NaN"),
        (b"[1]", None, 400, "must be"),
        ({"entity": "power", "value": True, "user": "node-red"}, None, 400, "needs an id"),
        ({"entity": "power", "id": True, "user": "node-red"}, None, 400, "needs an id"),
        ({"entity": "power", "id": "x" * 201, "user": "node-red"}, None, 400, "at most 200"),
        ({"entity": "power", "value": True, "id": "a"}, "a", 400, "names its user"),
        ({"entity": "power", "id": "a", "user": "eve"}, "a", 403, "'eve' may not send"),
        (b"x" * 65537, None, 413, "at most 65536 bytes"),
    ],
)
def test_refused_commands(payload: Any, cid: Any, status: int, words: str) -> None:
    topic, body = refused(payload)
    assert topic == "vigil/barn/devices/lamp-1/result"
    assert (body["id"], body["status"], body["ok"]) == (cid, status, False)
    assert words in body["error"]


def test_retained_and_misplaced_commands() -> None:
    command = {"entity": "power", "value": True, "id": "r", "user": "node-red"}
    _, body = refused(command, retained=True)
    assert body["id"] == "r" and "retained" in body["error"]
    topic, body = refused({"entity": "power"}, topic="vigil/barn/devices/x/command/extra")
    assert topic == "vigil/barn/error" and body["status"] == 400


def test_result_keeps_the_senders_id() -> None:
    fleet = Fleet(CFG, "1.2.3")
    ok = fleet.result("lamp-1", "x1", 200, {"id": "ab-1", "ok": True, "state": 40})
    assert json.loads(ok.payload) == {
        "id": "x1",
        "status": 200,
        "ok": True,
        "command": "ab-1",
        "state": 40,
    }
    held = {"error": "lamp-1 is held by bob since 10:02:03 UTC", "holder": "bob", "since": "t"}
    body = json.loads(fleet.result("lamp-1", 4, 409, held).payload)
    assert body == {"id": 4, "status": 409, "ok": False, **held}
    rule = {"error": "lamp-1.brightness: 140 is above max 100"}
    body = json.loads(fleet.result("lamp-1", "x2", 400, rule).payload)
    assert body == {"id": "x2", "status": 400, "ok": False, **rule}


def msg(topic: str, kind: str = "activity", retain: bool = False) -> Message:
    return Message(topic, topic.encode(), retain=retain, kind=kind)


def test_outbox_keeps_the_newest_retained_and_drops_telemetry_first() -> None:
    box = Outbox(3)
    box.put(msg("s", "state", retain=True))
    box.put(msg("t1", "telemetry"))
    box.put(msg("a1"))
    box.put(msg("t2", "telemetry"))
    box.put(msg("s", "state", retain=True))  # replaces the first state
    box.put(msg("a2"))  # full: t1 goes
    box.put(msg("a3"))  # full: t2 goes
    box.put(msg("a4"))  # no telemetry left: a1 goes
    assert len(box) == 4
    assert box.take_dropped() == {"telemetry": 2, "activity": 1}
    assert topics(box.take()) == ["s", "a2", "a3", "a4"]
    assert len(box) == 0 and box.take_dropped() == {}
    box.put(msg("s", "state", retain=True))
    box.put(msg("a5"))
    box.forget_retained()
    assert topics(box.take()) == ["a5"]


def write(tmp_path: Path, mqtt: str) -> Path:
    (tmp_path / "static").mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text("[mqtt]\n" + mqtt)
    return path


def test_mqtt_config_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "")).mqtt
    site = socket.gethostname().partition(".")[0]
    assert not cfg.enabled and (cfg.host, cfg.port, cfg.tls) == ("127.0.0.1", 1883, False)
    assert (cfg.site, cfg.topic_prefix, cfg.client_id) == (site, f"vigil/{site}", f"vigil-{site}")
    assert not cfg.commands and cfg.command_users == () and not cfg.homeassistant
    assert cfg.password == ""
    assert cfg.panel_url == f"https://{site}.local:8443/"  # the panel, over HTTPS
    tls_off = write(tmp_path, "")
    tls_off.write_text(tls_off.read_text() + "[tls]\nenabled = false\n[http]\nport = 8080\n")
    assert load(tls_off).mqtt.panel_url == f"http://{site}.local:8080/"
    given = load(write(tmp_path, 'panel_url = "https://panel.example/"\n')).mqtt
    assert given.panel_url == "https://panel.example/"


def test_mqtt_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("s3cret pass\nignored\n")
    secret.chmod(0o600)
    text = 'username = "vigil"\npassword_file = "mqtt.password"\nsite = "barn"\n'
    cfg = load(write(tmp_path, text + 'ca_file = "ca.pem"\n')).mqtt
    assert cfg.password == "s3cret pass" and "s3cret" not in repr(cfg)
    assert cfg.ca_file == tmp_path / "ca.pem" and cfg.topic_prefix == "vigil/barn"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"\[mqtt\] password_file .*chmod 600"):
        load(write(tmp_path, text))
    secret.chmod(0o600)
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('password_file = "x"\n', "password_file .*cannot read"),
        ('site = "a/b"\n', r"\[mqtt\] site: must be printable text without '/'"),
        ('topic_prefix = "fleet/#"\n', r"\[mqtt\] topic_prefix: must be a topic"),
        ('topic_prefix = "/fleet"\n', r"\[mqtt\] topic_prefix"),
        ("command_users = [1]\n", r"\[mqtt\] command_users: must be a list of names"),
        ('command_users = ["mqtt:x"]\n', r"\[mqtt\] command_users"),
        ("port = 0\n", r"\[mqtt\] port: must be an integer from 1"),
        ("password = 'x'\n", r"\[mqtt\] unknown key 'password'"),
        ('panel_url = "javascript:alert(1)"\n', r"\[mqtt\] panel_url: must be an http"),
    ],
)
def test_mqtt_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))


def test_password_file_needs_a_username(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match="password_file needs a username"):
        load(write(tmp_path, 'password_file = "pw"\n'))
