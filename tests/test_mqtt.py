"""The MQTT fleet bridge against Debian's Mosquitto (tests/broker.py).

vigil as a process, for what needs no device: status and its last will,
presence, two sites on one broker, TLS, refused commands, and HTTP while
the broker is dead or unreachable. vigil in this process (tests/testclient.py)
with a ``FakeDevice``, for commands from the fleet and Home Assistant: a
value the entity cannot take is refused with its rule and never reaches
the device, a valid one does and its state is published at once. The
reference agent over real SCTP is in tests/test_mqtt_uml.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.broker import Broker, Subscriber
from tests.fakedevice import LAMP, described
from tests.support import Vigil, make_certificate, require
from tests.testclient import App
from tests.wire import Remote


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


def online(msg: object) -> bool:
    return getattr(msg, "payload", None) == "online"


def test_status_is_retained_online_and_offline_after_a_clean_stop(
    broker: Broker, start_vigil: Callable[..., Vigil]
) -> None:
    vigil = start_vigil(broker.mqtt_sections())
    vigil.wait_for_log(r"mqtt: connected to 127\.0\.0\.1")
    with broker.subscribe("vigil/site-a/#") as sub:  # subscribed after: retained only
        msg = sub.expect("vigil/site-a/status")
        assert (msg.payload, msg.retained) == ("online", True)
        presence = sub.expect("vigil/site-a/presence")
        assert presence.retained and presence.json() == {"count": 0, "users": []}
        with Remote.of(vigil) as alice:
            assert alice.me().status == 200
            joined = sub.expect("vigil/site-a/presence", lambda m: m.json()["count"] == 1)
            [entry] = joined.json()["users"]
            assert entry["user"] == "alice" and "addr" not in entry  # no addresses unless asked
        vigil.stop()
        msg = sub.expect("vigil/site-a/status")
        assert msg.payload == "offline"
        left = sub.drain(0.3) + sub.seen
        assert any(m.topic.endswith("presence") and m.json()["count"] == 0 for m in left)
    with broker.subscribe("vigil/site-a/status") as sub:
        assert sub.expect("vigil/site-a/status").payload == "offline"  # retained


def test_kill_9_leaves_the_last_will(broker: Broker, start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(broker.mqtt_sections(keepalive=5))
    vigil.wait_for_log("mqtt: connected")
    with broker.subscribe("vigil/+/status") as sub:
        assert online(sub.expect("vigil/site-a/status"))
        vigil.proc.send_signal(signal.SIGKILL)
        vigil.proc.wait()
        started = time.monotonic()
        msg = sub.expect("vigil/site-a/status", timeout=5)
        assert msg.payload == "offline"
        assert time.monotonic() - started < 2  # the kernel closed the socket: the will at once


def test_addresses_only_when_configured(broker: Broker, start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(broker.mqtt_sections(publish_addresses=True))
    vigil.wait_for_log("mqtt: connected")
    with broker.subscribe("vigil/site-a/presence") as sub, Remote.of(vigil) as alice:
        alice.me()
        msg = sub.expect("vigil/site-a/presence", lambda m: m.json()["count"] == 1)
        assert msg.json()["users"][0]["addr"] == "127.0.0.1"


def test_two_sites_on_one_broker(broker: Broker, start_vigil: Callable[..., Vigil]) -> None:
    first = start_vigil(broker.mqtt_sections(site="barn"))
    second = start_vigil(broker.mqtt_sections(site="lab"))
    for vigil in (first, second):
        vigil.wait_for_log("mqtt: connected")
    with broker.subscribe("vigil/+/status") as sub:
        got = {sub.expect("vigil/[^/]+/status").topic for _ in range(2)}
        assert got == {"vigil/barn/status", "vigil/lab/status"}
        second.stop()
        assert sub.expect("vigil/lab/status").payload == "offline"


def test_tls_to_the_broker(tmp_path: Path, start_vigil: Callable[..., Vigil]) -> None:
    cert, key = make_certificate(tmp_path, ["IP:127.0.0.1", "DNS:localhost"], "broker")
    with Broker(tmp_path / "broker", tls=(cert, key)) as broker:
        vigil = start_vigil(broker.mqtt_sections())
        vigil.wait_for_log(r"mqtt: connected to 127\.0\.0\.1:\d+")
        with broker.subscribe("vigil/site-a/status") as sub:
            assert online(sub.expect("vigil/site-a/status"))
        # a host name too: resolved by getent, checked against the certificate
        named = start_vigil(broker.mqtt_sections(site="named", host="localhost"))
        named.wait_for_log("mqtt: connected to localhost")
        # a CA that did not sign the broker's certificate: refused, and said so
        other, _ = make_certificate(tmp_path, ["IP:127.0.0.1"], "other")
        wrong = start_vigil(broker.mqtt_sections(site="wrong", ca_file=str(other)))
        wrong.wait_for_log(r"mqtt: broker unreachable: TLS with 127\.0\.0\.1: CERTIFICATE_VERIFY")
        with Remote.of(wrong) as alice:
            assert alice.me().status == 200


def test_wrong_password_is_said_once_and_retried(
    broker: Broker, start_vigil: Callable[..., Vigil]
) -> None:
    sections = broker.mqtt_sections()
    Path(sections["mqtt"]["password_file"]).write_text("not-the-password\n")
    vigil = start_vigil(sections)
    vigil.wait_for_log("mqtt: broker unreachable: the broker refused the connection: Not autho")
    time.sleep(1.5)  # several attempts (backoff from 0.25 s) ...
    assert broker.log().count("disconnected, not authorised") >= 2
    assert vigil.log().count("refused the connection") == 1  # ... one log line
    with Remote.of(vigil) as alice:
        assert alice.me().status == 200


def test_malformed_and_unauthorised_commands_are_answered_and_change_nothing(
    broker: Broker, start_vigil: Callable[..., Vigil]
) -> None:
    topic = "vigil/site-a/devices/lamp-1/command"
    # retained: the broker would hand it to vigil again at every reconnect
    command = {"id": "r1", "entity": "power", "value": True, "user": "node-red"}
    broker.publish(topic, command, "-r")
    with broker.subscribe("vigil/site-a/devices/+/result") as sub:
        vigil = start_vigil(broker.mqtt_sections(commands=True, command_users=["node-red"]))
        body = sub.expect("vigil/site-a/devices/lamp-1/result").json()
        assert (body["id"], body["status"]) == ("r1", 400) and "retained" in body["error"]
    broker.publish(topic, "", "-r")  # clear it
    cases = [
        ("not json", None, 400, "not UTF-8 JSON"),
        ('{"entity": "power", "value": true, "user": "node-red"}', None, 400, "needs an id"),
        ('{"id": "a2", "entity": "power", "value": true}', "a2", 400, "names its user"),
        ('{"id": "a3", "entity": "power", "user": "mallory"}', "a3", 403, "'mallory' may not"),
        # the command path's own checks, as for HTTP: the form, then the device
        ('{"id": "a1", "action": "on", "user": "node-red"}', "a1", 400, '{"entity": "<key>"'),
        ('{"id": 7, "entity": "power", "value": [], "user": "node-red"}', 7, 400, "must be"),
        ('{"id": 4, "entity": "power", "value": true, "user": "node-red"}', 4, 503, "control"),
    ]
    with broker.subscribe("vigil/site-a/devices/+/result") as sub:
        time.sleep(0.2)
        for payload, cid, status, words in cases:
            broker.publish(topic, payload)
            msg = sub.expect("vigil/site-a/devices/lamp-1/result")
            body = msg.json()
            assert (body["id"], body["status"], body["ok"]) == (cid, status, False), body
            assert words in body["error"], body
    records = (vigil.config.parent / "audit.jsonl").read_text()
    assert records.count('"user":"mqtt:node-red"') == 1  # only a4 was a command (refused)
    assert "mallory" not in records


def test_commands_off_by_default(broker: Broker, start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(broker.mqtt_sections(command_users=["node-red"]))
    vigil.wait_for_log("mqtt: connected")
    with broker.subscribe("vigil/site-a/#") as sub:
        sub.expect("vigil/site-a/status")
        broker.publish(
            "vigil/site-a/devices/lamp-1/command",
            {"id": "x", "entity": "power", "value": True, "user": "node-red"},
        )
        assert not [m for m in sub.drain(1.0) if m.topic.endswith("/result")]


def latencies(vigil: Vigil, seconds: float) -> list[float]:
    """Seconds each authenticated request took, one after another for ``seconds``."""
    out = []
    end = time.monotonic() + seconds
    with Remote.of(vigil) as alice:
        while time.monotonic() < end:
            started = time.monotonic()
            assert alice.me().status == 200
            out.append(time.monotonic() - started)
            time.sleep(0.01)
    return out


def test_http_answers_while_the_broker_is_dead_and_vigil_comes_back(
    broker: Broker, start_vigil: Callable[..., Vigil]
) -> None:
    vigil = start_vigil(broker.mqtt_sections())
    vigil.wait_for_log("mqtt: connected")
    broker.kill()
    vigil.wait_for_log("mqtt: broker lost")
    slow = latencies(vigil, 3.0)  # connection refused, again and again, with backoff
    assert len(slow) > 50 and max(slow) < 1.0, max(slow)
    since = len(vigil.log())
    broker.start()  # nothing retained: what the subscriber sees was published again
    with broker.subscribe("vigil/site-a/#") as sub:
        assert online(sub.expect("vigil/site-a/status", timeout=8))
        sub.expect("vigil/site-a/presence")
    vigil.wait_for_log("mqtt: connected", since=since)


def test_http_answers_while_the_broker_is_unreachable(
    broker: Broker, start_vigil: Callable[..., Vigil]
) -> None:
    """SYNs dropped (nftables on loopback): every connect waits out connect_timeout."""
    require(os.geteuid() == 0 and shutil.which("nft") is not None, "nftables needs root")
    table = f"vigil_mqtt_{broker.port}"
    rules = (
        f"table inet {table} {{\n chain input {{\n  type filter hook input priority 0;\n"
        f"  tcp dport {broker.port} tcp flags & (syn | ack) == syn drop\n }}\n}}\n"
    )
    vigil = start_vigil(broker.mqtt_sections(connect_timeout=1))
    vigil.wait_for_log("mqtt: connected")
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
    try:
        broker.kill()
        broker.start()  # listening, but nothing reaches it
        vigil.wait_for_log(r"mqtt: broker unreachable: no answer from .* within 1 s", timeout=8)
        slow = latencies(vigil, 3.0)
        assert len(slow) > 50 and max(slow) < 1.0, max(slow)
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)
    with broker.subscribe("vigil/site-a/status") as sub:
        assert online(sub.expect("vigil/site-a/status", timeout=8))


def test_sighup_with_a_new_site_reconnects(
    broker: Broker, start_vigil: Callable[..., Vigil]
) -> None:
    vigil = start_vigil(broker.mqtt_sections(site="old"))
    vigil.wait_for_log("mqtt: connected")
    with broker.subscribe("vigil/+/status") as sub:
        assert online(sub.expect("vigil/old/status"))
        text = vigil.config.read_text().replace('site = "old"', 'site = "new"')
        vigil.config.write_text(text)
        vigil.signal(signal.SIGHUP)
        assert sub.expect("vigil/old/status").payload == "offline"
        assert online(sub.expect("vigil/new/status"))


def test_mqtt_turned_on_by_sighup(broker: Broker, start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(broker.mqtt_sections(enabled=False))
    with broker.subscribe("vigil/+/status") as sub:
        assert sub.drain(0.5) == []  # off: nothing published
        text = vigil.config.read_text()
        assert "[mqtt]\nenabled = false" in text
        text = text.replace("[mqtt]\nenabled = false", "[mqtt]\nenabled = true")
        vigil.config.write_text(text)
        vigil.signal(signal.SIGHUP)
        assert online(sub.expect("vigil/site-a/status"))


# -- vigil in this process, a device that meets its control channel ---------------------

STATUS = "vigil/site-a/status"
STATE = "vigil/site-a/devices/lamp-1/state"
COMMAND = "vigil/site-a/devices/lamp-1/command"
RESULT = "vigil/site-a/devices/lamp-1/result"
ACTIVITY = "vigil/site-a/activity"
MODE = described({"key": "mode", "kind": "select", "label": "Mode", "options": ["eco", "boost"]})


@pytest.fixture
def fleet_app(broker: Broker, make_app: Callable[..., App]) -> App:
    """vigil in this process, connected to the broker, fleet commands and HA on."""
    sections = broker.mqtt_sections(
        commands=True, command_users=["node-red", "homeassistant"], homeassistant=True
    )
    app: App = make_app(sections)
    bridge = app.server.mqtt
    assert bridge is not None
    deadline = time.monotonic() + 10
    while not bridge.connected:
        assert time.monotonic() < deadline, "the bridge did not connect"
        app.loop.run_once(0.01)
    return app


def listening(broker: Broker, app: App, *topics: str) -> Subscriber:
    """A subscriber to ``topics`` and the status, once the broker has subscribed it (the
    retained status came: what is published after it reaches the subscriber)."""
    sub = broker.subscribe(STATUS, *topics)
    try:
        sub.expect(STATUS, pump=app.pump)
    except AssertionError:
        sub.close()
        raise
    return sub


def test_a_value_the_entity_cannot_take_is_refused_back_to_the_fleet_and_never_sent(
    broker: Broker, fleet_app: App
) -> None:
    lamp = fleet_app.device("lamp-1")
    pump = fleet_app.pump
    cases = [
        ("brightness", 140, "lamp-1.brightness: 140 is above max 100"),
        ("brightness", 40.5, "lamp-1.brightness: 40.5 is off the step 1 (from 0)"),
        ("brightness", "40", 'lamp-1.brightness: "40" is not a number'),
        ("power", "on", 'lamp-1.power: "on" is not true or false'),
        ("temperature", 20, "lamp-1.temperature: a sensor only reports: it takes no commands"),
        ("colour", "red", "lamp-1.colour: no such entity (lamp-1 has: power, brightness, "),
    ]
    with listening(broker, fleet_app, RESULT, ACTIVITY) as sub:
        for n, (entity, value, error) in enumerate(cases):
            command = {"entity": entity, "value": value, "id": f"nr-{n}", "user": "node-red"}
            broker.publish(COMMAND, command)
            result = sub.expect(RESULT, pump=pump).json()
            assert (result["id"], result["status"], result["ok"]) == (f"nr-{n}", 400, False)
            assert result["error"].startswith(error), result
            act = sub.expect(ACTIVITY, pump=pump).json()  # the refusal is audited and shown
            assert (act["user"], act["entity"], act["status"]) == ("mqtt:node-red", entity, 400)
        pump()
    assert lamp.commands == []  # nothing went to the device


def test_fleet_commands_move_a_number_and_a_select_and_their_state_is_published_at_once(
    broker: Broker, fleet_app: App
) -> None:
    app = fleet_app
    lamp = app.device("lamp-1", LAMP + MODE)
    pump = app.pump
    discovery = "homeassistant/number/vigil_site-a/lamp-1_brightness/config"
    with listening(broker, app, RESULT, STATE, discovery) as sub:
        # Home Assistant's slider: the number's command as HA's template makes it
        config = sub.expect(discovery, pump=pump).json()
        assert (config["min"], config["max"], config["step"]) == (0, 100, 1)
        assert config["unit_of_measurement"] == "%"
        broker.publish(
            config["command_topic"], config["command_template"].replace("{{ value }}", "40")
        )
        result = sub.expect(RESULT, pump=pump).json()
        assert (result["id"], result["status"], result["ok"], result["state"]) == (
            "homeassistant",
            200,
            True,
            40,
        )
        assert lamp.commands == [("brightness", 40)]
        state = sub.expect(STATE, lambda m: m.json()["state"]["brightness"] == 40, pump=pump)
        assert state.json()["lease"] is None  # a fleet command never takes the device
        # Node-RED picks a mode
        command = {"entity": "mode", "value": "boost", "id": "nr-9", "user": "node-red"}
        broker.publish(COMMAND, command)
        result = sub.expect(RESULT, pump=pump).json()
        assert (result["id"], result["status"], result["state"]) == ("nr-9", 200, "boost")
        assert lamp.commands[-1] == ("mode", "boost")
        body = sub.expect(STATE, lambda m: m.json()["state"]["mode"] == "boost", pump=pump).json()
        assert body["state"]["brightness"] == 40
    records = app.records("command")
    assert [(r["user"], r["entity"], r["value"], r["state"]) for r in records] == [
        ("mqtt:homeassistant", "brightness", 40, 40),
        ("mqtt:node-red", "mode", "boost", "boost"),
    ]
    with broker.subscribe(STATE) as sub:  # subscribed after: the retained state is current
        retained = sub.expect(STATE, pump=pump)
        assert retained.retained and retained.json()["state"]["mode"] == "boost"


def test_a_device_an_earlier_run_saw_is_unavailable_after_a_restart_not_frozen(
    broker: Broker, fleet_app: App, make_app: Callable[..., App]
) -> None:
    """Home Assistant once kept a device that died while vigil was down "online" with a
    frozen value: the earlier run's retained state said so. The new run says otherwise."""
    fleet_app.device("lamp-1")
    with listening(broker, fleet_app, STATE) as sub:
        assert sub.expect(STATE, lambda m: m.json()["online"], pump=fleet_app.pump).retained
    fleet_app.close()  # vigil stops; lamp-1 dies meanwhile and never comes back
    with broker.subscribe(STATE) as sub:
        assert sub.expect(STATE).json()["online"] is True  # what the broker keeps for it
    sections = broker.mqtt_sections(
        commands=True, command_users=["homeassistant"], homeassistant=True
    )
    again = make_app(sections)  # the next run, which does not see lamp-1
    hub = "homeassistant/sensor/vigil_site-a/vigil_site-a_people/config"
    with listening(broker, again, STATE, hub) as sub:
        body = sub.expect(STATE, lambda m: not m.json()["online"], pump=again.pump).json()
        assert body["id"] == "lamp-1" and body["entities"]  # HA: unavailable, still known
        people = sub.expect(hub, pump=again.pump).json()
        assert people["device"]["identifiers"] == ["vigil_site-a"]
