"""vigil as a real Home Assistant sees it: HA 2024.1.6, its MQTT integration, Mosquitto.

Home Assistant runs from its cached venv (tests/ha/harness.py; the first run
installs it), one for the module, onboarded, with the MQTT integration set up
through its config flow as user ``fleet`` of a real Mosquitto (tests/broker.py).
Everything is checked from HA's side: its REST API (states, services) and its
entity and device registries (websocket API), and its log.

vigil runs in this process (tests/testclient.py) with ``FakeDevice`` lamps:
they meet the real control channel at its message level, so the bridge, the
command path (values, leases, audit) and the broker are all real, while a
device can be lost and vigil restarted on its own directory in an instant, and
no root, tap or UML kernel is needed (HA needs none either). The loop runs on
a clock that follows real time here (paho's keepalive, HA's timing), pumped
while the test waits for HA. The reference agent over kernel SCTP is
tests/test_mqtt_uml.py's. Each test is a site of its own (``vigil_<site>_…``
unique ids), so the tests share HA without seeing each other's entities.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from server.link.codec import Hello
from tests.broker import Broker
from tests.fakedevice import LAMP, FakeDevice, FakeLink, described
from tests.ha.harness import VERSION, HomeAssistant, HomeAssistantError
from tests.support import password, require
from tests.testclient import App

T = TypeVar("T")
SITES = itertools.count(1)


@dataclass
class Site:
    ha: HomeAssistant
    broker: Broker


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("homeassistant")
    with Broker(directory / "broker") as broker:
        try:
            ha = HomeAssistant(directory / "ha")
        except HomeAssistantError as e:
            require(False, f"Home Assistant {VERSION}: {e}")
            raise
        with ha:
            started = time.monotonic()
            entry = ha.setup_mqtt(broker.host, broker.port, "fleet", password("fleet"))
            assert entry["state"] == "loaded", entry
            took = time.monotonic() - started
            print(f"\nvigil-ha: MQTT integration set up through its config flow in {took:.1f} s")
            yield Site(ha, broker)


class LocalVigil:
    """An in-process vigil on the site's broker, Home Assistant discovery and commands on."""

    def __init__(self, make_app: Callable[..., App], site: Site, name: str, directory: Path | None):
        self.site = site
        self.name = name
        self.node = f"vigil_{name}"
        sections = site.broker.mqtt_sections(
            site=name, commands=True, command_users=["homeassistant"], homeassistant=True
        )
        self.app: App = make_app(sections, directory=directory)
        self.closed = False
        self._offset = self.app.clock.now - time.monotonic()
        bridge = self.app.server.mqtt
        assert bridge is not None
        self.wait(lambda: bridge.connected, "the bridge connected")

    def close(self) -> None:
        """Stop vigil (its bridge says offline); waiting then runs no loop."""
        self.app.close()
        self.closed = True

    def pump(self) -> None:
        """A few passes of vigil's loop, its clock moved to now."""
        if self.closed:
            time.sleep(0.01)
            return
        for _ in range(3):
            self.app.clock.now = self._offset + time.monotonic()
            self.app.loop.run_once(0.002)

    def wait(self, check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
        """``check()``'s first true value, vigil's loop running meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if got := check():
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:g} s: {what}")

    def uid(self, device: str, key: str) -> str:
        return f"{self.node}_{device}_{key}"

    def entity_id(self, unique_id: str, timeout: float = 15.0) -> str:
        """The HA entity id of the MQTT entity with ``unique_id``, once HA registered it
        and it has a state (a service call for it before then does nothing)."""

        def find() -> str | None:
            for e in self.site.ha.entities():
                if e["platform"] == "mqtt" and e["unique_id"] == unique_id:
                    entity_id = str(e["entity_id"])
                    return entity_id if self.site.ha.state(entity_id) is not None else None
            return None

        return self.wait(find, f"HA registered {unique_id}", timeout)

    def state_of(
        self, entity_id: str, want: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        """HA's state of ``entity_id`` once ``want`` holds for it."""

        def now() -> dict[str, Any] | None:
            state = self.site.ha.state(entity_id)
            return state if state is not None and want(state) else None

        try:
            return self.wait(now, f"{entity_id}: {what}")
        except AssertionError as e:
            raise AssertionError(f"{e}; HA has {self.site.ha.state(entity_id)}") from None


@pytest.fixture
def start(make_app: Callable[..., App], site: Site) -> Callable[..., LocalVigil]:
    """``start(name=None, directory=None)``: a vigil on a site of its own (or on ``name``
    again, on an earlier one's ``directory``: a restart)."""

    def go(name: str | None = None, directory: Path | None = None) -> LocalVigil:
        return LocalVigil(make_app, site, name or f"ha{next(SITES)}", directory)

    return go


@pytest.fixture
def clean_log(site: Site) -> Iterator[None]:
    """Fails the test if HA logged a warning or an error meanwhile (vigil's payloads)."""
    since = len(site.ha.log())
    yield
    time.sleep(0.3)  # what HA still logs about the last messages
    bad = site.ha.warnings(since)
    assert not bad, "Home Assistant warned:\n" + "\n".join(bad)


def state_is(value: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["state"] == value


def state_in(*values: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["state"] in values


def test_the_lamp_is_a_device_with_a_switch_a_number_and_a_temperature_sensor(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    vigil = start()
    ha = site.ha
    lamp = vigil.app.device("lamp-1")
    lamp.telemetry({"power": False, "brightness": 30, "temperature": 21.5})
    power = vigil.entity_id(vigil.uid("lamp-1", "power"))
    brightness = vigil.entity_id(vigil.uid("lamp-1", "brightness"))
    temperature = vigil.entity_id(vigil.uid("lamp-1", "temperature"))
    assert (power.split(".")[0], brightness.split(".")[0], temperature.split(".")[0]) == (
        "switch",
        "number",
        "sensor",
    )
    # states, units, classes: as HA holds them
    switch = vigil.state_of(power, state_is("off"), "off")
    assert switch["attributes"]["friendly_name"].endswith("Power")
    number = vigil.state_of(brightness, lambda s: float(s["state"]) == 30, "30")
    attrs = number["attributes"]
    assert (attrs["min"], attrs["max"], attrs["step"]) == (0, 100, 1), attrs
    assert attrs["unit_of_measurement"] == "%"
    sensor = vigil.state_of(temperature, lambda s: s["state"] == "21.5", "21.5")
    attrs = sensor["attributes"]
    assert attrs["unit_of_measurement"] == "°C", attrs
    assert (attrs["device_class"], attrs["state_class"]) == ("temperature", "measurement")
    # a numeric sensor: a new reading is a new number (HA would refuse text here)
    lamp.telemetry({"temperature": 22.25})
    vigil.state_of(temperature, state_is("22.25"), "22.25")
    # the registries: one HA device for the lamp, its three entities on it
    entities = {e["unique_id"]: e for e in ha.entities() if e["platform"] == "mqtt"}
    mine = [entities[vigil.uid("lamp-1", k)] for k in ("power", "brightness", "temperature")]
    assert len({e["device_id"] for e in mine}) == 1
    devices = {d["id"]: d for d in ha.devices()}
    device = devices[mine[0]["device_id"]]
    assert ["mqtt", f"{vigil.node}_lamp-1"] in device["identifiers"], device
    assert (device["name"], device["manufacturer"]) == ("lamp-1", "vigil")


def test_the_hub_stands_for_vigil_and_its_devices_sit_under_it(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    """The lead's hub device (issue 20, 9): vigil itself, with status and people online."""
    vigil = start()
    vigil.app.device("lamp-1")
    status = vigil.entity_id(f"{vigil.node}_status")
    people = vigil.entity_id(f"{vigil.node}_people")
    vigil.state_of(status, state_is("on"), "on (vigil is up)")
    vigil.state_of(people, state_is("0"), "nobody online")
    power = vigil.entity_id(vigil.uid("lamp-1", "power"))
    entities = {e["entity_id"]: e for e in site.ha.entities()}
    devices = {d["id"]: d for d in site.ha.devices()}
    hub = devices[entities[status]["device_id"]]
    assert ["mqtt", vigil.node] in hub["identifiers"], hub
    assert hub["manufacturer"] == "vigil" and hub["sw_version"], hub
    assert hub["configuration_url"], hub
    lamp = devices[entities[power]["device_id"]]
    assert lamp["via_device_id"] == hub["id"], lamp
    with_alice = vigil.app.client()
    assert with_alice.me("alice").status == 200
    vigil.state_of(people, state_is("1"), "alice online")


def test_commands_from_home_assistant_reach_the_device_and_its_state_follows(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    vigil = start()
    ha = site.ha
    lamp = vigil.app.device("lamp-1")
    lamp.telemetry({"power": False, "brightness": 100, "temperature": 20.0})
    power = vigil.entity_id(vigil.uid("lamp-1", "power"))
    brightness = vigil.entity_id(vigil.uid("lamp-1", "brightness"))
    vigil.state_of(power, state_is("off"), "off")
    lags = []
    steps: list[tuple[str, str, str, dict[str, Any], tuple[str, object], str]] = [
        ("switch", "turn_on", power, {}, ("power", True), "on"),
        ("number", "set_value", brightness, {"value": 40}, ("brightness", 40), "40"),
        ("switch", "turn_off", power, {}, ("power", False), "off"),
        ("number", "set_value", brightness, {"value": 7}, ("brightness", 7), "7"),
    ]
    for n, (domain, service, target, data, sent, shown) in enumerate(steps):
        ha.call_service(domain, service, entity_id=target, **data)
        vigil.wait(lambda: len(lamp.commands) > n, f"{domain}.{service} reached the lamp")  # noqa: B023
        answered = time.monotonic()  # the fake lamp answers on the next pass
        assert lamp.commands[n] == sent
        vigil.state_of(target, state_in(shown, f"{shown}.0"), shown)
        lags.append(time.monotonic() - answered)
    last = vigil.entity_id(vigil.uid("lamp-1", "last_command"))
    assert site.ha.state(last)["state"] == "ok"  # type: ignore[index]
    print(f"\nHA state after the device's answer: {', '.join(f'{x * 1000:.0f}' for x in lags)} ms")
    assert max(lags) < 0.2, lags  # from the result, not from the next reading
    records = vigil.app.records("command")
    assert [(r["user"], r["entity"], r["value"]) for r in records] == [
        ("mqtt:homeassistant", "power", True),
        ("mqtt:homeassistant", "brightness", 40),
        ("mqtt:homeassistant", "power", False),
        ("mqtt:homeassistant", "brightness", 7),
    ]


def test_a_refusal_is_visible_in_home_assistant(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    """The lead's "Last command" sensor (issue 20, 5): alice holds the lamp, HA's turn_on
    is refused 409 and HA shows it."""
    vigil = start()
    lamp = vigil.app.device("lamp-1")
    lamp.telemetry({"power": False, "brightness": 100, "temperature": 20.0})
    power = vigil.entity_id(vigil.uid("lamp-1", "power"))
    last = vigil.entity_id(vigil.uid("lamp-1", "last_command"))
    vigil.state_of(power, state_is("off"), "off")  # before: HA would find no entity
    alice = vigil.app.client()
    assert alice.post("/api/devices/lamp-1/lease", {}).json()["lease"]["holder"] == "alice"
    site.ha.call_service("switch", "turn_on", entity_id=power)
    shown = vigil.state_of(last, lambda s: s["state"].startswith("409"), "409")
    print(f"\nHA's Last command after a refused turn_on: {shown['state']!r}")
    assert "alice" in shown["state"], shown
    assert lamp.commands == []  # nothing reached the lamp
    assert site.ha.state(power)["state"] == "off"  # type: ignore[index]


def test_a_lost_device_is_unavailable_and_comes_back(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    vigil = start()
    lamp = vigil.app.device("lamp-1")
    lamp.telemetry({"power": True, "brightness": 50, "temperature": 20.0})
    keys = ("power", "brightness", "temperature")
    ids = [vigil.entity_id(vigil.uid("lamp-1", k)) for k in keys]
    vigil.state_of(ids[0], state_is("on"), "on")
    lamp.lose()
    for entity_id in ids:
        vigil.state_of(entity_id, state_is("unavailable"), "unavailable after the device left")
    again = vigil.app.device("lamp-1")
    again.telemetry({"power": False, "brightness": 50, "temperature": 20.5})
    vigil.state_of(ids[0], state_is("off"), "off: back, with its new state")
    vigil.state_of(ids[2], state_is("20.5"), "20.5")


def test_a_device_gone_while_vigil_restarts_is_unavailable_not_frozen(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    """Issue 20, 2: the retained state of before the restart must not keep it available."""
    first = start()
    lamp = first.app.device("lamp-1")
    lamp.telemetry({"power": True, "brightness": 50, "temperature": 20.0})
    power = first.entity_id(first.uid("lamp-1", "power"))
    temperature = first.entity_id(first.uid("lamp-1", "temperature"))
    first.state_of(power, state_is("on"), "on")
    # vigil stops (status offline) and the lamp dies while it is away
    directory = first.app.directory
    first.close()
    first.state_of(power, state_is("unavailable"), "unavailable while vigil is away")
    second = start(first.name, directory)  # the lamp does not come back
    status = second.entity_id(f"{second.node}_status")
    second.state_of(status, state_is("on"), "vigil is back")
    time.sleep(0.5)
    second.pump()
    for entity_id in (power, temperature):
        second.state_of(entity_id, state_is("unavailable"), "unavailable: the lamp is gone")
    # and it is back when the lamp is
    second.app.device("lamp-1").telemetry({"power": False, "temperature": 19.0})
    second.state_of(power, state_is("off"), "off")


def test_discovery_payloads_as_home_assistant_parses_them(
    site: Site, start: Callable[..., LocalVigil]
) -> None:
    """Every config vigil publishes is one HA accepted (an entity for each), and what HA
    logged about this site's topics is no warning."""
    since = len(site.ha.log())
    vigil = start()
    vigil.app.device("lamp-1").telemetry({"power": False, "brightness": 1, "temperature": 3.5})
    vigil.entity_id(vigil.uid("lamp-1", "temperature"))
    configs: dict[str, Any] = {}
    with site.broker.subscribe(f"homeassistant/+/{vigil.node}/+/config") as sub:
        for msg in sub.drain(1.0):
            if msg.payload:
                configs[msg.topic] = json.loads(msg.payload)
    assert configs
    registered = {e["unique_id"] for e in site.ha.entities() if e["platform"] == "mqtt"}
    missing = [t for t, c in configs.items() if c["unique_id"] not in registered]
    assert not missing, missing
    mentions = [w for w in site.ha.warnings(since) if vigil.node in w or "vigil/" in w]
    assert not mentions, "\n".join(mentions)


def test_a_device_without_readings_is_unknown_not_a_value(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    """Issue 20, 3: before its first reading HA shows the lamp's entities unknown (not off,
    not '', no template warnings), and the first reading makes them real values."""
    vigil = start()
    lamp = vigil.app.device("lamp-1")
    keys = ("power", "brightness", "temperature")
    ids = [vigil.entity_id(vigil.uid("lamp-1", k)) for k in keys]
    for entity_id in ids:
        vigil.state_of(entity_id, state_is("unknown"), "unknown before any reading")
    lamp.telemetry({"power": True, "brightness": 12, "temperature": 18.5})
    vigil.state_of(ids[0], state_is("on"), "on")
    vigil.state_of(ids[1], lambda s: float(s["state"]) == 12, "12")
    vigil.state_of(ids[2], state_is("18.5"), "18.5")


def test_a_device_that_comes_back_otherwise_made_leaves_no_stale_entity(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    """Issue 20, 6: its switch became a binary sensor (say, commands turned off for HA):
    HA drops the switch, has the binary sensor, one entity for the unique id."""
    vigil = start()
    vigil.app.device("lamp-1").lose()
    uid = vigil.uid("lamp-1", "power")
    switch = vigil.entity_id(uid)
    assert switch.startswith("switch.")
    read_only = described({"key": "power", "kind": "binary_sensor", "label": "Power"})
    vigil.app.device("lamp-1", read_only + LAMP[1:]).telemetry({"power": True})

    def only_binary_sensor() -> list[str] | None:
        ids = [e["entity_id"] for e in site.ha.entities() if e["unique_id"] == uid]
        return ids if [i.split(".")[0] for i in ids] == ["binary_sensor"] else None

    sensor = vigil.wait(only_binary_sensor, "the switch gone, a binary_sensor there")[0]
    vigil.state_of(sensor, state_is("on"), "on")
    assert site.ha.state(switch) is None


class NamedDevice(FakeDevice):
    """A ``FakeDevice`` whose hello gives it a name of its own (FakeDevice's is its id)."""

    def __init__(self, app: App, device_id: str, name: str) -> None:
        self.app = app
        self.id = device_id
        self.assoc = next(FakeDevice._assocs)
        self.answers = True
        self.received = []
        self.channel = app.server.control
        FakeLink.of(self.channel).devices[self.assoc] = self
        self.channel.admit_proven(self.assoc, Hello(device_id, name, LAMP))
        app.pump()


def test_a_new_name_in_a_hello_renames_the_device_in_home_assistant(
    site: Site, start: Callable[..., LocalVigil], clean_log: None
) -> None:
    """Issue 20, 7: discovery is published again when a device says hello with a new name
    (without vigil reconnecting to the broker)."""
    vigil = start()
    vigil.app.device("lamp-1").lose()
    power = vigil.entity_id(vigil.uid("lamp-1", "power"))

    def device_name() -> str:
        entity = next(e for e in site.ha.entities() if e["entity_id"] == power)
        device = next(d for d in site.ha.devices() if d["id"] == entity["device_id"])
        return str(device["name"])

    assert device_name() == "lamp-1"
    NamedDevice(vigil.app, "lamp-1", "Hall lamp").telemetry({"power": True})
    vigil.wait(lambda: device_name() == "Hall lamp", "HA's device renamed")
    vigil.state_of(power, state_is("on"), "on")
