"""server.fleet.model (topics, payloads, outbox, commands) and the [mqtt] config, with values."""

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
    DeviceView,
    LeaseChanged,
    LeaseView,
    Person,
    PresenceChanged,
    Telemetry,
)
from server.fleet.model import Command, Fleet, Message, Outbox, Rejection, Topics

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
LAMP = DeviceView("lamp-1", "Lamp", ("on", "off"), True, "2026-12-01T10:00:00Z", None)
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
    assert t.device_of_command("vigil/barn/devices/lamp-1/command") == "lamp-1"
    for other in (
        "vigil/barn/devices/lamp-1/state",
        "vigil/barnyard/devices/lamp-1/command",
        "vigil/barn/devices//command",
        "x/vigil/barn/devices/lamp-1/command",
        "vigil/barn/devices/lamp-1/command/x",
    ):
        assert t.device_of_command(other) is None, other


def test_snapshot_is_everything_retained() -> None:
    fleet = Fleet(replace(CFG, homeassistant=False))
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
    assert json.loads(msgs[2].payload) == {**LAMP.as_json(), "telemetry": None}


def test_addresses_when_configured() -> None:
    fleet = Fleet(replace(CFG, publish_addresses=True))
    msg = fleet.on_event(PresenceChanged("join", "alice", "10.0.0.5", None, (ALICE,)))[0]
    assert json.loads(msg.payload)["users"] == [ALICE.as_json()]


def test_events_to_messages() -> None:
    fleet = Fleet(replace(CFG, homeassistant=False))
    fleet.snapshot((), [LAMP])
    tele = fleet.on_event(Telemetry(LAMP, {"temperature": 21.5}))
    assert [(m.topic, m.retain, m.qos, m.kind) for m in tele] == [
        ("vigil/barn/devices/lamp-1/telemetry", False, 0, "telemetry"),
        ("vigil/barn/devices/lamp-1/state", True, 1, "state"),
    ]
    assert json.loads(tele[1].payload)["telemetry"] == {"temperature": 21.5}
    held = replace(LAMP, lease=LeaseView("bob", "2026-12-01T10:02:03Z"))
    [state] = fleet.on_event(LeaseChanged("start", held, "bob", None))
    body = json.loads(state.payload)
    assert body["lease"]["holder"] == "bob" and body["telemetry"] == {"temperature": 21.5}
    command = CommandEvent("c1", "lamp-1", "on", {}, "bob", "issued")
    assert fleet.on_event(command) == []  # activity comes from the audit record
    record = {"seq": 7, "type": "command", "user": "bob", "status": 409, "latency_ms": 0.1}
    [act] = fleet.on_record(record)
    assert (act.topic, act.retain, act.kind) == ("vigil/barn/activity", False, "activity")
    assert json.loads(act.payload) == record
    assert fleet.on_record({"seq": 8, "type": "login", "user": "bob"}) == []
    assert fleet.on_event(ChatMessage(9, "bob", "hi", "2026-12-01T10:02:04Z")) == []


def test_home_assistant_switch_and_sensors() -> None:
    fleet = Fleet(CFG)
    first = fleet.snapshot((), [LAMP])
    [switch] = [m for m in first if m.kind == "discovery"]
    assert switch.topic == "homeassistant/switch/vigil_barn/lamp-1/config" and switch.retain
    entity = json.loads(switch.payload)
    assert entity["command_topic"] == "vigil/barn/devices/lamp-1/command"
    assert json.loads(entity["payload_on"]) == {
        "action": "on",
        "args": {},
        "id": "homeassistant",
        "user": "homeassistant",
    }
    assert entity["availability_mode"] == "all"
    assert entity["availability"][0] == {"topic": "vigil/barn/status"}
    assert entity["device"]["identifiers"] == ["vigil_barn_lamp-1"]
    reading = {"temperature": 21.5, "on": True, "count": 3, "mode": "eco"}
    msgs = fleet.on_event(Telemetry(LAMP, reading))
    sensors = [m.topic for m in msgs if m.kind == "discovery"]
    assert sensors == [  # numbers only (not bool, not text), each announced once
        "homeassistant/sensor/vigil_barn/lamp-1_count/config",
        "homeassistant/sensor/vigil_barn/lamp-1_temperature/config",
    ]
    again = fleet.on_event(Telemetry(LAMP, reading))
    assert not [m for m in again if m.kind == "discovery"]
    assert len([m for m in fleet.snapshot((), [LAMP]) if m.kind == "discovery"]) == 3


def test_home_assistant_without_fleet_commands_is_read_only() -> None:
    for cfg in (replace(CFG, commands=False), replace(CFG, command_users=("node-red",))):
        msgs = Fleet(cfg).snapshot((), [LAMP])
        [entity] = [m for m in msgs if m.kind == "discovery"]
        assert entity.topic == "homeassistant/binary_sensor/vigil_barn/lamp-1/config"
        assert "command_topic" not in json.loads(entity.payload)
    plain = Fleet(CFG).snapshot((), [replace(LAMP, commands=("status",))])
    assert not [m for m in plain if m.kind == "discovery"]  # no on/off: no switch


TOPIC = "vigil/barn/devices/lamp-1/command"


def read(payload: Any, retained: bool = False, topic: str = TOPIC) -> Any:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Fleet(CFG).command(topic, data, retained)


def refused(payload: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    out = read(payload, **kw)
    assert isinstance(out, Rejection)
    return out.message.topic, json.loads(out.message.payload)


def test_a_valid_command() -> None:
    assert read({"action": "on", "id": "x1", "user": "node-red"}) == Command(
        "lamp-1", "on", {}, "x1", "node-red"
    )
    assert read({"action": "dim", "args": {"to": 3}, "id": 9, "user": "node-red"}) == Command(
        "lamp-1", "dim", {"to": 3}, 9, "node-red"
    )
    assert read(b"") is None  # clearing a retained message


@pytest.mark.parametrize(
    ("payload", "cid", "status", "words"),
    [
        (b"\xff", None, 400, "not UTF-8 JSON"),
        (b"[1]", None, 400, "must be"),
        ({"action": "on", "user": "node-red"}, None, 400, "needs an id"),
        ({"action": "on", "id": True, "user": "node-red"}, None, 400, "needs an id"),
        ({"action": "on", "id": "x" * 201, "user": "node-red"}, None, 400, "at most 200"),
        ({"action": "", "id": "a", "user": "node-red"}, "a", 400, "must be"),
        ({"action": "on", "args": 3, "id": "a", "user": "node-red"}, "a", 400, "must be"),
        ({"action": "on", "id": "a"}, "a", 400, "names its user"),
        ({"action": "on", "id": "a", "user": "eve"}, "a", 403, "'eve' may not send"),
        (b"x" * 65537, None, 413, "at most 65536 bytes"),
    ],
)
def test_refused_commands(payload: Any, cid: Any, status: int, words: str) -> None:
    topic, body = refused(payload)
    assert topic == "vigil/barn/devices/lamp-1/result"
    assert (body["id"], body["status"], body["ok"]) == (cid, status, False)
    assert words in body["error"]


def test_retained_and_misplaced_commands() -> None:
    _, body = refused({"action": "on", "id": "r", "user": "node-red"}, retained=True)
    assert body["id"] == "r" and "retained" in body["error"]
    topic, body = refused({"action": "on"}, topic="vigil/barn/devices/x/command/extra")
    assert topic == "vigil/barn/error" and body["status"] == 400


def test_result_keeps_the_senders_id() -> None:
    fleet = Fleet(CFG)
    ok = fleet.result("lamp-1", "x1", 200, {"id": "ab-1", "ok": True, "result": {"on": True}})
    assert json.loads(ok.payload) == {
        "id": "x1",
        "status": 200,
        "ok": True,
        "command": "ab-1",
        "result": {"on": True},
    }
    held = {"error": "lamp-1 is held by bob since 10:02:03 UTC", "holder": "bob", "since": "t"}
    body = json.loads(fleet.result("lamp-1", 4, 409, held).payload)
    assert body == {"id": 4, "status": 409, "ok": False, **held}


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
