"""ControlChannel at its message-level seam: codec messages in, a transport and a sink out.

No SCTP: what the SCTP shell would call after a notification, the handshake
or an opened and decoded message (``association_up``, ``handshake``,
``receive``, ``association_lost``) is called
directly, what the channel sends is recorded by a transport of our own
(``attach``), and what it announces by ``tests.controlevents.RecordingEvents``,
in order. Over kernel SCTP: tests/sctp.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from server.base.loop import Loop
from server.config import ControlConfig, DeviceKey
from server.control import registry as control
from server.control.channel import ControlChannel
from server.link import codec
from server.link.codec import Command, Error, Hello, Result, Telemetry, Welcome
from server.link.entities import Entity
from server.link.seal import Initiator, Session
from tests.controlevents import RecordingEvents
from tests.fakedevice import LAMP, described

BELL = described({"key": "bell", "kind": "button", "label": "Bell"})[0]

SECRET = bytes(range(32))
ADDR = "127.0.0.1"


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


ABORT = "ABORT"


class Wire:
    """A transport that keeps what the channel sent: (association, message or ABORT)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, codec.FromServer | str]] = []
        self.gone: set[int] = set()

    def send(self, assoc: int, msg: codec.FromServer) -> None:
        if assoc in self.gone:
            raise OSError(f"association {assoc} is gone")
        self.sent.append((assoc, msg))

    def abort(self, assoc: int) -> None:
        self.sent.append((assoc, ABORT))
        self.gone.add(assoc)

    def to(self, assoc: int) -> list[codec.FromServer | str]:
        return [m for a, m in self.sent if a == assoc]


def config() -> ControlConfig:
    return ControlConfig(
        enabled=False,
        host="127.0.0.1",
        port=0,
        streams=5,
        heartbeat_ms=400,
        path_max_retrans=4,
        command_timeout=5.0,
        hello_timeout=5.0,
        allow=(ipaddress.ip_network("127.0.0.0/8"),),
        devices=(DeviceKey("lamp-1", SECRET),),
    )


class Setup:
    def __init__(self) -> None:
        self.clock = Clock()
        self.loop = Loop(clock=self.clock)
        self.sink = RecordingEvents()
        self.channel = ControlChannel(self.loop, config(), self.sink)
        self.wire = Wire()
        self.channel.attach(self.wire)
        self.replies: list[tuple[int, dict[str, Any]]] = []

    def pump(self) -> None:
        for _ in range(3):
            self.loop.run_once(0)

    def handshake(self, assoc: int, device: str = "lamp-1", secret: bytes = SECRET) -> bytes | None:
        """An association comes up and sends message 1; vigil's message 2 (None: refused)."""
        self.initiator = Initiator(secret, device)
        self.channel.association_up(assoc, ADDR)
        return self.channel.handshake(assoc, self.initiator.first())

    def prove(
        self,
        assoc: int,
        device: str = "lamp-1",
        declared: tuple[Entity, ...] = LAMP,
        protocol: int | None = 2,
    ) -> None:
        """An association comes up, shakes hands with the right secret and says hello."""
        reply = self.handshake(assoc, device)
        assert reply is not None
        assert isinstance(self.initiator.finish(reply), Session)  # vigil proved the secret
        self.channel.receive(assoc, Hello(device, device, declared, protocol))

    def command(
        self, entity: str = "power", value: object = True, reason: str | None = None
    ) -> None:
        user = "alice" if reason is None else "vigil"
        done = self.replies.append
        self.channel.command("lamp-1", entity, value, user, lambda *r: done(r), reason)

    def sent_command(self, assoc: int = 7) -> Command:
        return [m for m in self.wire.to(assoc) if isinstance(m, Command)][-1]

    def command_events(self) -> list[dict[str, Any]]:
        return [ev for kind, ev in self.sink.events if kind == "command"]

    def kinds(self) -> list[str]:
        out = []
        for name, args in self.sink.calls:
            if name == "command":
                out.append(f"command {args[0].phase}")
            elif name == "device_offline":
                out.append("device_offline replaced" if args[1] else "device_offline")
            else:
                out.append(name)
        return out


@pytest.fixture
def s() -> Iterator[Setup]:
    setup = Setup()
    yield setup
    setup.loop.close()


def test_a_proven_device_is_welcomed_commanded_and_reports(s: Setup) -> None:
    s.prove(7)
    assert s.wire.to(7) == [Welcome("lamp-1")]
    (dev,) = s.channel.known()
    assert (dev.id, dev.online, dev.assoc, dev.entities) == ("lamp-1", True, 7, LAMP)
    assert s.sink.calls == [("device_online", (dev,))]
    assert s.channel.state("lamp-1") == {"power": None, "brightness": None, "temperature": None}

    s.command("brightness", 40)
    cmd = s.sent_command()
    assert (cmd.entity, cmd.value, cmd.user) == ("brightness", 40, "alice")
    s.channel.receive(7, Result(cmd.id, True, 38))  # where the dimmer ended up
    assert s.replies == [(200, {"id": cmd.id, "ok": True, "state": 38})]
    assert s.channel.state("lamp-1")["brightness"] == 38  # at once, before any telemetry

    s.channel.receive(7, Telemetry({"temperature": 21.5}))
    s.pump()
    assert s.kinds() == ["device_online", "command issued", "command result", "telemetry"]
    issued, result = (args[0] for name, args in s.sink.calls if name == "command")
    assert (issued.id, issued.phase, issued.status) == (cmd.id, "issued", 0)
    assert (result.phase, result.ok, result.state, result.status) == ("result", True, 38, 200)
    assert s.command_events()[1] == {
        "id": cmd.id,
        "device": "lamp-1",
        "entity": "brightness",
        "value": 40,
        "user": "alice",
        "phase": "result",
        "ok": True,
        "state": 38,
        "status": 200,
        "latency_ms": 0,
    }
    assert s.sink.calls[-1] == ("telemetry", (s.channel.device("lamp-1"), {"temperature": 21.5}))
    assert s.channel.state("lamp-1") == {"power": None, "brightness": 38, "temperature": 21.5}
    history = s.channel.telemetry("lamp-1")
    assert history is not None and list(history["metrics"]) == ["temperature"]  # kept
    assert s.wire.to(7)[-1] == cmd  # no error reply: everything was right


@pytest.mark.parametrize(
    ("entity", "value", "sent", "state"),
    [
        ("power", False, False, False),  # no state in the result: the value sent
        ("brightness", 40, 40, 40),
        ("bell", None, None, None),  # a button has no state
        ("bell", True, None, None),  # pressed: sent as null
    ],
)
def test_a_result_without_state(
    s: Setup, entity: str, value: object, sent: object, state: object
) -> None:
    s.prove(7, declared=(*LAMP, BELL))
    s.command(entity, value)
    cmd = s.sent_command()
    assert (cmd.entity, cmd.value) == (entity, sent)
    s.channel.receive(7, Result(cmd.id, True))
    assert s.replies == [(200, {"id": cmd.id, "ok": True, "state": state})]
    assert s.command_events()[-1]["state"] == state
    assert s.channel.state("lamp-1").get(entity) == state


def test_an_impossible_state_in_a_result_leaves_the_last_one(s: Setup) -> None:
    s.prove(7)
    s.channel.receive(7, Telemetry({"power": False}))
    s.command("power", True)
    cmd = s.sent_command()
    s.channel.receive(7, Result(cmd.id, True, "on"))
    assert s.replies == [(200, {"id": cmd.id, "ok": True, "state": False})]
    assert s.command_events()[-1]["state"] is False
    assert s.channel.state("lamp-1")["power"] is False


def test_a_failed_result_is_answered_with_its_error(s: Setup) -> None:
    s.prove(7)
    s.channel.receive(7, Telemetry({"power": False}))
    s.command("power", True)
    cmd = s.sent_command()
    s.channel.receive(7, Result(cmd.id, False, error="relay stuck"))
    assert s.replies == [(200, {"id": cmd.id, "ok": False, "error": "relay stuck"})]
    event = s.command_events()[-1]
    assert (event["ok"], event["error"], "state" in event) == (False, "relay stuck", False)
    assert s.channel.state("lamp-1")["power"] is False


@pytest.mark.parametrize(
    ("entity", "value", "error"),
    [
        ("brightness", 140, "lamp-1.brightness: 140 is above max 100"),
        ("foo", 1, "lamp-1.foo: no such entity (lamp-1 has: power, brightness, temperature)"),
        ("temperature", 20, "lamp-1.temperature: a sensor only reports: it takes no commands"),
    ],
)
def test_a_refused_command_sends_nothing(s: Setup, entity: str, value: object, error: str) -> None:
    s.prove(7)
    assert s.channel.check("lamp-1", entity, value) == control.Refusal(400, error)
    s.command(entity, value)
    assert s.replies == [(400, {"error": error})]
    assert s.wire.to(7) == [Welcome("lamp-1")] and s.kinds() == ["device_online"]


def test_check_says_why_a_command_would_be_refused(s: Setup) -> None:
    assert s.channel.check("lamp-1", "power", True) == control.Refusal(
        404, "unknown device 'lamp-1'"
    )
    s.prove(7)
    assert s.channel.check("lamp-1", "power", True) is None
    s.channel.association_lost(7, "lost")
    assert s.channel.check("lamp-1", "power", True) == control.Refusal(
        503, "device 'lamp-1' is offline"
    )
    off = ControlChannel(s.loop, config(), RecordingEvents())  # never started
    assert off.check("lamp-1", "power", True) == control.Refusal(
        503, "control channel off: not started"
    )


def test_a_safe_state_command_is_vigils_with_its_reason(s: Setup) -> None:
    s.prove(7)
    s.command("power", False, reason="safe state: alice lost")
    cmd = s.sent_command()
    assert (cmd.entity, cmd.value, cmd.user) == ("power", False, "vigil")
    s.channel.receive(7, Result(cmd.id, True))
    issued, result = s.command_events()
    assert (issued["user"], issued["reason"]) == ("vigil", "safe state: alice lost")
    assert (result["reason"], result["state"]) == ("safe state: alice lost", False)


def test_telemetry_drops_what_is_wrong_with_one_error_and_keeps_the_rest(s: Setup) -> None:
    s.prove(7)
    s.channel.receive(7, Telemetry({"t": 21.5, "temperature": 21.5, "power": "on"}))
    s.pump()
    assert s.wire.to(7)[-1] == Error(
        "telemetry: dropped lamp-1.t: no such entity (lamp-1 has: power, brightness, "
        'temperature); lamp-1.power: "on" is not true or false'
    )
    assert s.kinds() == ["device_online", "telemetry"]
    assert s.sink.calls[-1][1][1] == {"temperature": 21.5}
    assert s.channel.state("lamp-1") == {"power": None, "brightness": None, "temperature": 21.5}
    assert s.channel.device("lamp-1").online  # an error reply, not a refusal


def test_telemetry_with_nothing_right_announces_nothing(s: Setup) -> None:
    s.prove(7)
    s.channel.receive(7, Telemetry({"t": 21.5}))
    s.pump()
    assert s.wire.to(7)[-1] == Error(
        "telemetry: dropped lamp-1.t: no such entity (lamp-1 has: power, brightness, temperature)"
    )
    assert s.kinds() == ["device_online"] and s.channel.telemetry("lamp-1") == {
        "device": "lamp-1",
        "window_s": 300,
        "metrics": {},
    }


@pytest.mark.parametrize(
    ("device", "secret", "reason"),
    [("lamp-1", bytes(32), "wrong secret"), ("lamp-9", SECRET, "unknown device")],
)
def test_a_handshake_without_the_secret_is_aborted_unanswered(
    s: Setup, device: str, secret: bytes, reason: str
) -> None:
    assert s.handshake(7, device, secret) is None
    # (over SCTP the error is not sent: there are no keys to seal it; tests/sctp)
    assert s.wire.sent == [(7, Error("refused: authentication failed")), (7, ABORT)]
    assert s.sink.calls == [("device_refused", (device, ADDR, reason))]
    assert s.channel.known() == []


def test_a_replayed_handshake_is_answered_but_never_believed(s: Setup) -> None:
    """A recorded message 1 gets an answer; without the device's ephemeral key no hello can
    be sealed, so the replay displaces nobody and is refused at the deadline."""
    s.prove(7)
    recorded = Initiator(SECRET, "lamp-1").first()
    s.channel.association_up(8, ADDR)
    assert s.channel.handshake(8, recorded) is not None
    assert s.channel.device("lamp-1").assoc == 7 and s.kinds() == ["device_online"]
    s.clock.now += 5.1
    s.pump()
    assert s.sink.calls[-1] == ("device_refused", ("lamp-1", ADDR, "no hello"))
    assert s.channel.device("lamp-1").online and s.channel.device("lamp-1").assoc == 7


def test_a_hello_naming_another_device_is_refused(s: Setup) -> None:
    reply = s.handshake(7, "lamp-1")
    assert reply is not None
    s.channel.receive(7, Hello("lamp-2", "lamp-2", LAMP))
    assert s.wire.to(7) == [Error("refused: authentication failed"), ABORT]
    assert s.sink.calls == [("device_refused", ("lamp-2", ADDR, "other id"))]


@pytest.mark.parametrize(
    ("protocol", "says"), [(None, "no protocol"), (1, "protocol 1"), (3, "protocol 3")]
)
def test_a_proven_hello_of_another_protocol_is_refused(
    s: Setup, protocol: int | None, says: str
) -> None:
    s.prove(7, declared=(), protocol=protocol)
    reply = (
        'hello refused: vigil speaks protocol 2 ("protocol": 2 and "entities"; README, Devices); '
        f"this hello says {says}"
    )
    assert s.wire.sent == [(7, Error(reply)), (7, ABORT)]
    assert s.sink.calls == [("device_refused", ("lamp-1", ADDR, "protocol"))]
    assert s.sink.refused == [
        {"type": "device_refused", "device": "lamp-1", "addr": ADDR, "reason": "protocol"}
    ]
    assert s.channel.known() == []


def test_a_hello_before_the_handshake_learns_nothing(s: Setup) -> None:
    """Only a device that proved its secret learns which protocol vigil speaks."""
    s.channel.association_up(7, ADDR)
    s.channel.receive(7, Hello("lamp-1", "lamp-1", (), 1))
    assert s.wire.to(7) == [Error("refused: authentication failed"), ABORT]
    assert s.sink.calls == [("device_refused", ("lamp-1", ADDR, "unsealed"))]


def test_an_address_outside_allow_is_refused_at_once(s: Setup) -> None:
    s.channel.association_up(7, "10.0.0.1")
    assert s.wire.sent == [(7, Error("this address may not connect (control.allow)")), (7, ABORT)]
    assert s.sink.calls == [("device_refused", (None, "10.0.0.1", "not allowed"))]


def test_no_handshake_or_no_hello_by_the_deadline_is_refused(s: Setup) -> None:
    s.channel.association_up(7, ADDR)
    assert s.handshake(8) is not None
    s.clock.now += 5.1
    s.pump()
    assert s.sink.calls == [
        ("device_refused", (None, ADDR, "no hello")),
        ("device_refused", ("lamp-1", ADDR, "no hello")),
    ]
    assert s.wire.sent == [(a, m) for a in (7, 8) for m in (Error("no hello in time"), ABORT)]


def test_say_hello_first(s: Setup) -> None:
    assert s.handshake(7) is not None
    s.channel.receive(7, Telemetry({}))
    assert s.wire.to(7) == [Error("say hello first")] and s.sink.calls == []


def test_a_lost_association_is_offline_before_its_commands_fail(s: Setup) -> None:
    s.prove(7)
    s.command()
    s.channel.association_lost(7, "lost")
    assert s.kinds() == ["device_online", "command issued", "device_offline", "command failed"]
    assert s.replies == [(503, {"error": "device 'lamp-1' was lost before it answered"})]
    dev = s.channel.device("lamp-1")
    assert dev is not None and not dev.online and dev.assoc is None


def test_a_newer_association_replaces_the_old_in_order(s: Setup) -> None:
    s.prove(7)
    s.command()
    s.prove(8)
    assert s.kinds() == [
        "device_online",
        "command issued",
        "device_offline replaced",
        "command failed",
        "device_online",
    ]
    assert s.wire.sent[-3:] == [
        (7, Error("replaced by a newer association of this device")),
        (7, ABORT),
        (8, Welcome("lamp-1")),
    ]
    assert s.channel.device("lamp-1") == s.sink.calls[-1][1][0]


def test_admit_proven_is_a_device_without_the_exchange(s: Setup) -> None:
    dev = s.channel.admit_proven(3, Hello("fake", "Fake", (BELL,)))
    assert s.wire.to(3) == [Welcome("fake")] and s.sink.calls == [("device_online", (dev,))]
    assert s.channel.unavailable("fake") is None and s.channel.check("fake", "bell", None) is None
