"""A real Home Assistant with the reference agent over kernel SCTP: commands, kill -9.

tests/test_homeassistant.py checks vigil as Home Assistant sees it with fake
devices in this process; here the device is the reference agent
(``python -m server.agent``), run with vigil in the UML test host
(tests/uml/testhost.py, as in tests/test_mqtt_uml.py), so a command from HA
goes HA → Mosquitto → vigil → SCTP → the agent and back, and ``kill -9``
kills a real process whose kernel ends its association. Mosquitto runs here
on the tap address; Home Assistant 2024.1.6 (tests/ha/harness.py) runs here
too, its MQTT integration set up through its config flow on that broker.
Everything is asserted from HA's side: its REST states (with HA's own
``last_changed``), its registries and its log.

The agent reads every ``INTERVAL`` s; a command is sent just after a reading,
so HA's state within 200 ms of the result can only come from the result. The
result's time is HA's own: when its "Last command" sensor, which reads the
result topic, was updated; our own subscriber sees messages tens of ms late
while the guest keeps this host busy.
Needs root, /dev/net/tun, a UML kernel and Home Assistant (``require``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pytest

from tests.broker import Broker, Subscriber, mqtt_sections
from tests.ha.harness import VERSION, HomeAssistant, HomeAssistantError
from tests.support import free_port, password, require
from tests.uml.testhost import HOST_IP, TestHost, require_test_host, uml_config, uml_test_host
from tests.wire import Remote

T = TypeVar("T")
PREFIX = "vigil/pi-1"
NODE = "vigil_pi-1"  # Home Assistant's object id of this vigil
TELEMETRY = f"{PREFIX}/devices/lamp-1/telemetry"
RESULT = f"{PREFIX}/devices/lamp-1/result"
INTERVAL = 2.0  # seconds between the agent's readings
AGENT = ("--interval", str(INTERVAL))
KEYS = ("power", "brightness", "temperature")


def wait(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    """``check()``'s first true value, asked every 10 ms."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)
    return got


def numeric(state: dict[str, Any]) -> float | None:
    """HA's state as a number; None while it is none (unknown, unavailable)."""
    try:
        return float(state["state"])
    except ValueError:
        return None


def changed_at(state: dict[str, Any]) -> float:
    """When Home Assistant changed ``state`` (its ``last_changed``), as ``time.time()``."""
    return datetime.fromisoformat(state["last_changed"]).timestamp()


@dataclass
class Site:
    ha: HomeAssistant
    host: TestHost
    broker: Broker
    since: int  # HA's log before its MQTT integration was set up

    def entity_id(self, key: str) -> str:
        """The HA entity of the lamp's entity ``key``, once registered and with a state."""
        unique_id = f"{NODE}_lamp-1_{key}"

        def find() -> str | None:
            for e in self.ha.entities():
                if e["platform"] == "mqtt" and e["unique_id"] == unique_id:
                    return str(e["entity_id"]) if self.ha.state(e["entity_id"]) else None
            return None

        return wait(find, f"HA registered {unique_id}")

    def state_of(
        self, entity_id: str, want: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        """HA's state of ``entity_id`` once ``want`` holds for it."""

        def now() -> dict[str, Any] | None:
            state = self.ha.state(entity_id)
            return state if state is not None and want(state) else None

        try:
            return wait(now, f"{entity_id}: {what}")
        except AssertionError as e:
            raise AssertionError(f"{e}; HA has {self.ha.state(entity_id)}") from None

    def vigil_state(self) -> dict[str, Any]:
        """The lamp's state in vigil's ``GET /api/devices``, over HTTPS from here."""
        ctx = ssl.create_default_context(cafile=str(self.host.cert))
        with Remote(self.host.guest_ip, self.host.tls_port, tls=ctx) as alice:
            (lamp,) = alice.get("/api/devices").json()
        assert lamp["id"] == "lamp-1" and lamp["online"] is True, lamp
        state: dict[str, Any] = lamp["state"]
        return state


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_test_host()
    directory = tmp_path_factory.mktemp("ha-uml")
    try:
        ha = HomeAssistant(directory / "ha")
    except HomeAssistantError as e:
        require(False, f"Home Assistant {VERSION}: {e}")
        raise
    port = free_port()
    config = uml_config(
        directory,
        **mqtt_sections(
            directory / "broker",
            HOST_IP,
            port,
            site="pi-1",
            commands=True,
            command_users=["homeassistant"],
            homeassistant=True,
        ),
    )
    with (
        ha,
        uml_test_host(config, agents={"lamp-1": list(AGENT)}) as host,
        Broker(directory / "broker", host=host.host_ip, port=port) as broker,
    ):
        since = len(ha.log())
        entry = ha.setup_mqtt(broker.host, broker.port, "fleet", password("fleet"))
        assert entry["state"] == "loaded", entry
        yield Site(ha, host, broker, since)


def test_the_reference_lamp_is_in_home_assistant_with_units_classes_and_its_readings(
    site: Site,
) -> None:
    ids = {key: site.entity_id(key) for key in KEYS}
    assert [ids[k].split(".")[0] for k in KEYS] == ["switch", "number", "sensor"], ids
    # the agent's own state (a lamp starts off, at 100 %), and its readings as numbers
    site.state_of(ids["power"], lambda s: s["state"] == "off", "off")
    number = site.state_of(ids["brightness"], lambda s: numeric(s) == 100, "100")
    attrs = number["attributes"]
    assert (attrs["min"], attrs["max"], attrs["step"], attrs["unit_of_measurement"]) == (
        0,
        100,
        1,
        "%",
    ), attrs
    with site.broker.subscribe(TELEMETRY) as sub:
        reading = sub.expect(TELEMETRY, timeout=INTERVAL + 5).json()["temperature"]
    assert 20 < reading < 25, reading
    sensor = site.state_of(
        ids["temperature"], lambda s: numeric(s) == reading, f"the agent's {reading}"
    )
    attrs = sensor["attributes"]
    assert attrs["unit_of_measurement"] == "°C", attrs
    assert (attrs["device_class"], attrs["state_class"]) == ("temperature", "measurement")
    # one HA device, the agent's label its name, under vigil's hub
    registry = {e["entity_id"]: e for e in site.ha.entities()}
    devices = {d["id"]: d for d in site.ha.devices()}
    (device_id,) = {registry[ids[k]]["device_id"] for k in KEYS}
    lamp = devices[device_id]
    assert (lamp["name"], lamp["manufacturer"]) == ("Lamp lamp-1", "vigil"), lamp
    assert ["mqtt", NODE] in devices[lamp["via_device_id"]]["identifiers"]


def command(
    site: Site,
    sub: Subscriber,
    call: tuple[str, str, dict[str, Any]],
    entity_id: str,
    shown: Callable[[dict[str, Any]], bool],
) -> float:
    """Call HA's service ``call`` (just after a reading of the agent: the next one is
    INTERVAL s away) and wait for HA's state of ``entity_id`` to be ``shown``: how long
    after HA received vigil's result HA changed it. Both times are HA's own: the result
    by the "Last command" sensor that reads it (its attributes name vigil's command, so
    each result updates it), the state by ``last_changed``."""
    domain, service, data = call
    site.ha.call_service(domain, service, entity_id=entity_id, **data)
    result = sub.expect(RESULT, timeout=5).json()
    assert (result["id"], result["ok"]) == ("homeassistant", True), result
    last = site.state_of(
        site.entity_id("last_command"),
        lambda s: s["attributes"].get("command") == result["command"],
        f"HA received the result of {domain}.{service}",
    )
    state = site.state_of(entity_id, shown, f"after {domain}.{service}")
    return changed_at(state) - datetime.fromisoformat(last["last_updated"]).timestamp()


def test_commands_from_home_assistant_reach_the_agent_and_its_state_follows_the_result(
    site: Site,
) -> None:
    power, brightness = site.entity_id("power"), site.entity_id("brightness")
    site.state_of(power, lambda s: s["state"] == "off", "off")
    with site.broker.subscribe(TELEMETRY, RESULT) as sub:
        sub.expect(TELEMETRY, timeout=INTERVAL + 5)
        on = command(site, sub, ("switch", "turn_on", {}), power, lambda s: s["state"] == "on")
        assert site.vigil_state()["power"] is True
        # the agent's next reading has it (and the next command goes just after it)
        assert sub.expect(TELEMETRY, timeout=INTERVAL + 5).json()["power"] is True
        dim = ("number", "set_value", {"value": 40})
        to_40 = command(site, sub, dim, brightness, lambda s: numeric(s) == 40)
        assert site.vigil_state()["brightness"] == 40
        assert sub.expect(TELEMETRY, timeout=INTERVAL + 5).json()["brightness"] == 40
    lags = [on, to_40]
    print(f"\nHA's state after HA received vigil's result: {[round(x * 1000) for x in lags]} ms")
    assert max(lags) < 0.2, lags  # from the result, not the reading INTERVAL s later


def test_kill_9_of_the_agent_makes_every_entity_of_its_device_unavailable(site: Site) -> None:
    power = site.entity_id("power")
    registry = site.ha.entities()
    (device_id,) = [e["device_id"] for e in registry if e["entity_id"] == power]
    mine = sorted(e["entity_id"] for e in registry if e["device_id"] == device_id)
    assert len(mine) == len(KEYS) + 1, mine  # and its "Last command"
    for entity_id in mine:
        site.state_of(entity_id, lambda s: s["state"] != "unavailable", "available")
    killed = time.time()
    site.host.kill_agent("lamp-1")
    gone = [site.state_of(e, lambda s: s["state"] == "unavailable", "unavailable") for e in mine]
    took = max(changed_at(s) for s in gone) - killed
    print(f"\nkill -9 of the agent to its {len(mine)} HA entities unavailable: {took:.3f} s")
    # its kernel aborts the association at once; a silent peer vigil gives up within 2.7 s
    assert took < 3.0, took
    # a new agent: back in HA without restarting it, with the new lamp's state (off)
    site.host.start_agent("lamp-1", *AGENT)
    site.state_of(power, lambda s: s["state"] == "off", "off: the agent is back")
    site.state_of(site.entity_id("temperature"), lambda s: (numeric(s) or 0) > 20, "a reading")


def test_home_assistant_logged_no_warning_about_vigils_payloads(site: Site) -> None:
    time.sleep(0.3)  # what HA still logs about the last messages
    bad = site.ha.warnings(site.since)
    assert not bad, "Home Assistant warned:\n" + "\n".join(bad)
