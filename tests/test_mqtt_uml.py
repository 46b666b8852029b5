"""The MQTT bridge with a real device: vigil and the reference agent in a UML guest.

vigil needs kernel SCTP for its device, which these machines lack, so it
runs in one UML test host (tests/uml/testhost.py) for the module, with
``lamp-1``; Mosquitto runs here, on this host's tap address, and vigil in
the guest reaches it over the tap (``HOST_IP``). The fleet is
``mosquitto_sub``/``mosquitto_pub`` here; people are HTTPS clients here.
Needs root, /dev/net/tun and a UML kernel (``require`` skips, or fails in CI).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.broker import Broker, Subscriber, mqtt_sections
from tests.support import free_port
from tests.uml.testhost import HOST_IP, TestHost, require_test_host, uml_config, uml_test_host
from tests.wire import Remote, SSEParser

PREFIX = "vigil/pi-1"
STATE = f"{PREFIX}/devices/lamp-1/state"
COMMAND = f"{PREFIX}/devices/lamp-1/command"
RESULT = f"{PREFIX}/devices/lamp-1/result"


@dataclass
class Site:
    host: TestHost
    broker: Broker

    def person(self, user: str = "alice") -> Remote:
        ctx = ssl.create_default_context(cafile=str(self.host.cert))
        return Remote(self.host.guest_ip, self.host.tls_port, tls=ctx)

    def post(self, user: str, path: str, body: Any) -> Any:
        with self.person() as c:
            return c.post(path, body, user=user)

    def subscribe(self, *topics: str) -> Subscriber:
        return self.broker.subscribe(*topics)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_test_host()
    directory = tmp_path_factory.mktemp("mqtt-uml")
    port = free_port()
    config = uml_config(
        directory,
        **mqtt_sections(
            directory / "broker",
            HOST_IP,
            port,
            site="pi-1",
            commands=True,
            command_users=["node-red", "homeassistant"],
            homeassistant=True,
            queue=10,  # so that a broker away for seconds loses telemetry
        ),
    )
    with (
        uml_test_host(config, agents={"lamp-1": ["--interval", "0.2"]}) as host,
        Broker(directory / "broker", host=host.host_ip, port=port) as broker,
    ):
        yield Site(host, broker)


def test_state_telemetry_and_home_assistant_discovery(site: Site) -> None:
    with site.subscribe(f"{PREFIX}/#", "homeassistant/#") as sub:
        # vigil retries until the broker is up (retained or live: whichever came first)
        assert sub.expect(f"{PREFIX}/status", timeout=15).payload == "online"
        body = sub.expect(STATE).json()
        assert body["online"] is True and body["lease"] is None and body["id"] == "lamp-1"
        kinds = [(e["key"], e["kind"]) for e in body["entities"]]
        assert kinds == [("power", "switch"), ("brightness", "number"), ("temperature", "sensor")]
        reading = sub.expect(f"{PREFIX}/devices/lamp-1/telemetry").json()
        assert isinstance(reading["temperature"], float) and reading["power"] in (True, False)
        later = sub.expect(STATE, lambda m: m.json()["state"]["temperature"] is not None).json()
        assert set(later["state"]) == {"power", "brightness", "temperature"}
        switch = sub.expect("homeassistant/switch/vigil_pi-1/lamp-1_power/config").json()
        assert switch["command_topic"] == COMMAND and switch["state_topic"] == STATE
        assert json.loads(switch["payload_on"]) == {
            "entity": "power",
            "value": True,
            "id": "homeassistant",
            "user": "homeassistant",
        }
        assert [a["topic"] for a in switch["availability"]] == [f"{PREFIX}/status", STATE]
        number = sub.expect("homeassistant/number/vigil_pi-1/lamp-1_brightness/config").json()
        assert (number["min"], number["max"], number["step"]) == (0, 100, 1)
        assert number["unit_of_measurement"] == "%" and number["command_topic"] == COMMAND
        sensor = sub.expect("homeassistant/sensor/vigil_pi-1/lamp-1_temperature/config").json()
        assert sensor["value_template"] == "{{ value_json['state']['temperature'] }}"
        assert (sensor["unit_of_measurement"], sensor["device_class"]) == ("°C", "temperature")
        assert sensor["state_class"] == "measurement"
    with site.subscribe(STATE, "homeassistant/+/vigil_pi-1/#") as sub:  # subscribed after
        topics = [STATE, ".*switch.*", ".*number.*", ".*sensor.*"]
        assert all(sub.expect(topic).retained for topic in topics)


def test_a_browser_command_is_activity(site: Site) -> None:
    with site.subscribe(f"{PREFIX}/activity") as sub:
        command = {"entity": "power", "value": True}
        answer = site.post("alice", "/api/devices/lamp-1/commands", command)
        assert answer.status == 200
        act = sub.expect(f"{PREFIX}/activity").json()
        assert (act["user"], act["device"], act["entity"], act["value"], act["ok"]) == (
            "alice",
            "lamp-1",
            "power",
            True,
            True,
        )
        assert act["id"] == answer.json()["id"] and act["state"] is True
        assert act["status"] == 200 and act["latency_ms"] >= 0
    with site.person() as alice:  # the command leased it to alice: let go
        assert alice.request("DELETE", "/api/devices/lamp-1/lease").status == 200


def events_until(stream: Remote, parser: SSEParser, match: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in parser.feed(stream.reader.chunk().decode()):
            if event.type != "comment" and match(event):
                return event
    raise AssertionError("no such event")


def test_a_fleet_command_reaches_the_device_and_everyone_sees_it(site: Site) -> None:
    with site.person() as bob, site.subscribe(RESULT, f"{PREFIX}/activity", STATE) as sub:
        assert bob.get("/api/events", user="bob").status == 200
        parser = SSEParser()
        time.sleep(0.2)
        too_bright = {"entity": "brightness", "value": 140, "id": "nr-16", "user": "node-red"}
        site.broker.publish(COMMAND, too_bright)
        refused = sub.expect(RESULT).json()
        assert (refused["id"], refused["status"], refused["ok"]) == ("nr-16", 400, False)
        assert refused["error"] == "lamp-1.brightness: 140 is above max 100"
        dim = {"entity": "brightness", "value": 30, "id": "nr-17", "user": "node-red"}
        site.broker.publish(COMMAND, dim)
        result = sub.expect(RESULT).json()
        assert (result["id"], result["status"], result["ok"]) == ("nr-17", 200, True), result
        assert result["state"] == 30
        sub.expect(f"{PREFIX}/activity", lambda m: m.json()["status"] == 400)
        act = sub.expect(f"{PREFIX}/activity").json()
        assert act["user"] == "mqtt:node-red" and act["id"] == result["command"]
        assert (act["entity"], act["value"], act["state"]) == ("brightness", 30, 30)
        event = events_until(
            bob, parser, lambda e: e.type == "command" and e.data.get("phase") == "result"
        )
        assert (event.data["user"], event.data["state"]) == ("mqtt:node-red", 30)
        state = sub.expect(STATE, lambda m: m.json()["state"]["brightness"] == 30).json()
        assert state["lease"] is None  # a fleet command never takes the device
    with site.person() as alice:
        records = alice.get("/api/audit?limit=50").json()["records"]
    mine = [r for r in records if r.get("type") == "command" and r.get("user") == "mqtt:node-red"]
    assert [(r["status"], r["ok"]) for r in mine[:2]] == [(200, True), (400, False)]  # newest first


def test_a_device_someone_holds_is_refused_back_to_the_fleet(site: Site) -> None:
    assert site.post("alice", "/api/devices/lamp-1/lease", {}).status == 200
    try:
        with site.subscribe(RESULT) as sub:
            time.sleep(0.2)
            on = {"entity": "power", "value": True, "id": 42, "user": "homeassistant"}
            site.broker.publish(COMMAND, on)
            result = sub.expect(RESULT).json()
            assert (result["id"], result["status"], result["ok"]) == (42, 409, False)
            assert result["holder"] == "alice" and "held by alice" in result["error"]
        with site.subscribe(f"{PREFIX}/activity") as sub:  # refusals are activity too
            time.sleep(0.2)
            on = {"entity": "power", "value": True}
            assert site.post("bob", "/api/devices/lamp-1/commands", on).status == 409
            act = sub.expect(f"{PREFIX}/activity").json()
            assert (act["user"], act["status"], act["ok"]) == ("bob", 409, False)
            assert "held by alice" in act["error"]
    finally:
        with site.person() as alice:
            assert alice.request("DELETE", "/api/devices/lamp-1/lease").status == 200


def test_broker_away_telemetry_dropped_oldest_first_state_published_again(site: Site) -> None:
    with site.subscribe(STATE) as sub:
        sub.expect(STATE)  # connected
    since = len(site.host.log())
    site.broker.kill()
    deadline = time.monotonic() + 10
    while "mqtt: broker lost" not in site.host.log()[since:]:
        assert time.monotonic() < deadline, site.host.log()[since:]
        time.sleep(0.1)
    time.sleep(4)  # 5 readings a second: about 20, for a queue of 10
    site.broker.start()  # nothing retained: what comes was published again
    with site.subscribe(f"{PREFIX}/#") as sub:
        assert sub.expect(f"{PREFIX}/status", timeout=10).payload == "online"
        assert sub.expect(STATE).json()["online"] is True
        sub.expect(f"{PREFIX}/devices/lamp-1/telemetry")
    deadline = time.monotonic() + 5
    while not (line := [x for x in site.host.log()[since:].splitlines() if "dropped while" in x]):
        assert time.monotonic() < deadline, site.host.log()[since:]
        time.sleep(0.1)
    dropped = int(line[0].split("dropped while away: ")[1].split()[0])
    assert dropped >= 5, line  # the oldest ones; the newest 10 went out
