"""ControlChannel at its message-level seam: codec messages in, a transport and a sink out.

No SCTP: what the SCTP shell would call after a notification or a decoded
message (``association_up``, ``receive``, ``association_lost``) is called
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
from server.control.channel import ControlChannel
from server.link import codec
from server.link.codec import Challenge, Command, Error, Hello, Result, Telemetry, Welcome
from server.link.secret import proof
from tests.controlevents import RecordingEvents

SECRET = bytes(range(32))
ADDR = "127.0.0.1"


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """A transport that keeps what the channel sent: (association, message, aborted?)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, codec.FromServer, bool]] = []
        self.gone: set[int] = set()

    def send(self, assoc: int, msg: codec.FromServer) -> None:
        if assoc in self.gone:
            raise OSError(f"association {assoc} is gone")
        self.sent.append((assoc, msg, False))

    def abort(self, assoc: int, msg: codec.Error) -> None:
        self.sent.append((assoc, msg, True))
        self.gone.add(assoc)

    def to(self, assoc: int) -> list[codec.FromServer]:
        return [m for a, m, _ in self.sent if a == assoc]


class Setup:
    def __init__(self) -> None:
        self.clock = Clock()
        self.loop = Loop(clock=self.clock)
        cfg = ControlConfig(
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
        self.sink = RecordingEvents()
        self.channel = ControlChannel(self.loop, cfg, self.sink)
        self.wire = Wire()
        self.channel.attach(self.wire)
        self.replies: list[tuple[int, dict[str, Any]]] = []

    def pump(self) -> None:
        for _ in range(3):
            self.loop.run_once(0)

    def prove(
        self, assoc: int, device: str = "lamp-1", commands: tuple[str, ...] = ("on",)
    ) -> None:
        """An association comes up and says a proven hello."""
        self.channel.association_up(assoc, ADDR)
        (challenge,) = self.wire.to(assoc)
        assert isinstance(challenge, Challenge) and len(challenge.nonce) == 32
        self.channel.receive(
            assoc, Hello(device, device, commands, proof(SECRET, challenge.nonce, device))
        )

    def command(self, action: str = "on") -> None:
        self.channel.command("lamp-1", action, {}, "alice", lambda *r: self.replies.append(r))

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
    assert s.wire.to(7)[1:] == [Welcome("lamp-1")]
    (dev,) = s.channel.known()
    assert (dev.id, dev.online, dev.assoc, dev.commands) == ("lamp-1", True, 7, ("on",))
    assert s.sink.calls == [("device_online", (dev,))]

    s.command()
    (cmd,) = [m for m in s.wire.to(7) if isinstance(m, Command)]
    assert (cmd.action, cmd.args, cmd.user) == ("on", {}, "alice")
    s.channel.receive(7, Result(cmd.id, True, {"on": True}))
    assert s.replies == [(200, {"id": cmd.id, "ok": True, "result": {"on": True}})]

    s.channel.receive(7, Telemetry({"t": 21.5}))
    s.pump()
    assert s.kinds() == ["device_online", "command issued", "command result", "telemetry"]
    issued, result = (args[0] for name, args in s.sink.calls if name == "command")
    assert (issued.id, issued.phase, issued.status) == (cmd.id, "issued", 0)
    assert (result.phase, result.ok, result.result, result.status) == (
        "result",
        True,
        {"on": True},
        200,
    )
    assert s.sink.calls[-1] == ("telemetry", (s.channel.device("lamp-1"), {"t": 21.5}))
    assert s.channel.telemetry("lamp-1") is not None  # History.add ran before it was announced


def test_a_wrong_hmac_is_refused_and_nothing_registered(s: Setup) -> None:
    s.channel.association_up(7, ADDR)
    s.channel.receive(7, Hello("lamp-1", "lamp-1", ("on",), "00" * 32))
    reply = "hello refused: authentication failed"
    assert s.wire.sent[1:] == [(7, Error(reply), False), (7, Error(reply), True)]
    assert s.sink.calls == [("device_refused", ("lamp-1", ADDR, "wrong hmac"))]
    assert s.channel.known() == []


def test_an_address_outside_allow_is_refused_at_once(s: Setup) -> None:
    s.channel.association_up(7, "10.0.0.1")
    assert [m for _, m, _ in s.wire.sent] == [
        Error("this address may not connect (control.allow)")
    ] * 2
    assert s.sink.calls == [("device_refused", (None, "10.0.0.1", "not allowed"))]


def test_no_hello_by_the_deadline_is_refused(s: Setup) -> None:
    s.channel.association_up(7, ADDR)
    s.clock.now += 5.1
    s.pump()
    assert s.sink.calls == [("device_refused", (None, ADDR, "no hello"))]


def test_say_hello_first(s: Setup) -> None:
    s.channel.association_up(7, ADDR)
    s.channel.receive(7, Telemetry({}))
    assert s.wire.to(7)[1:] == [Error("say hello first")] and s.sink.calls == []


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
        (7, Error("replaced by a newer association of this device"), False),
        (7, Error("replaced by a newer association of this device"), True),
        (8, Welcome("lamp-1"), False),
    ]
    assert s.channel.device("lamp-1") == s.sink.calls[-1][1][0]


def test_admit_proven_is_a_device_without_the_exchange(s: Setup) -> None:
    dev = s.channel.admit_proven(3, Hello("fake", "Fake", ("go",)))
    assert s.wire.to(3) == [Welcome("fake")] and s.sink.calls == [("device_online", (dev,))]
    assert s.channel.unavailable("fake", "go") is None
