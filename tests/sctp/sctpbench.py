"""Helpers for tests with kernel SCTP: the channel in a loop, hand-made peers.

The channel runs in a real ``Loop`` in the test process, without threads:
``Bench.run_until(cond)`` runs the loop until ``cond()`` holds (checked every
10 ms by a timer) or a time limit passes. Device agents run as subprocesses;
hand-made peers (``Peer``) are one-to-one pysctp sockets whose replies are
awaited by running the loop until the peer's socket is readable.

The channel knows the devices of ``devicekeys.DEVICES`` with their test
secrets and lets in loopback peers; its sink (tests/controlevents.py)
keeps the events it published (``Bench.events``) and the audit records of
its refusals (``Bench.audits``). A ``Peer`` runs the sealed channel's handshake
(``server.link.seal``) with the secret of whatever id it says hello as
(``Peer.hello``), in control protocol 2: its hello declares ``SWITCH`` (a switch
``power``) unless told other entities.
"""

from __future__ import annotations

import ipaddress
import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.core.views import device_view
from server.link.codec import PPID
from server.link.seal import Session
from tests.controlevents import RecordingEvents
from tests.sctp.devicekeys import DEVICES, agent_env, secret

ROOT = Path(__file__).resolve().parents[2]
SWITCH = [{"key": "power", "kind": "switch", "label": "Power"}]  # a Peer's entities
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class Bench:
    """A Loop, a ControlChannel on 127.0.0.1 (free port) and what it published."""

    def __init__(self, **cfg: Any) -> None:
        from server.base.loop import Loop
        from server.config import ControlConfig, DeviceKey
        from server.control.channel import ControlChannel
        from server.link.codec import HEARTBEAT_MS, PATH_MAX_RETRANS

        values = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": 0,
            "streams": 5,
            "heartbeat_ms": HEARTBEAT_MS,  # the shipped defaults
            "path_max_retrans": PATH_MAX_RETRANS,
            "command_timeout": 5.0,
            "hello_timeout": 5.0,
            "allow": LOOPBACK,
            "devices": tuple(DeviceKey(d, secret(d)) for d in DEVICES),
        } | cfg
        self.cfg = ControlConfig(**values)
        self.loop = Loop()
        self.sink = RecordingEvents()
        self.events = self.sink.events  # ("device" | "command", its JSON)
        self.audits = self.sink.refused  # device_refused records
        self.channel = ControlChannel(self.loop, self.cfg, self.sink)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Bench:
        self.channel.start()
        assert self.channel.off_reason is None, self.channel.off_reason
        return self

    @property
    def port(self) -> int:
        assert self.channel.address is not None
        return self.channel.address[1]

    def run_until(self, cond: Callable[[], Any], timeout: float = 5.0) -> float:
        """Run the loop until ``cond()`` is true; return the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout

        def check() -> None:
            if cond() or time.monotonic() > deadline:
                self.loop.stop()
            else:
                self.loop.call_later(0.01, check)

        self.loop.call_later(0, check)
        self.loop.run()
        assert cond(), f"condition not met within {timeout} s"
        return time.monotonic() - start

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.run_until(lambda: time.monotonic() >= end, seconds + 1)

    def device(self, device_id: str) -> dict[str, Any] | None:
        """The device as the panel shows it (without a lease), or None if unknown."""
        dev = self.channel.device(device_id)
        if dev is None:
            return None
        return device_view(dev, self.channel.state(device_id), None).as_json()

    def online(self, device_id: str) -> bool:
        d = self.device(device_id)
        return d is not None and d["online"]

    def assoc_of(self, device_id: str) -> int | None:
        """The association device ``device_id`` is on (None: offline); it must be known."""
        dev = self.channel.device(device_id)
        assert dev is not None, device_id
        return dev.assoc

    def device_events(self, kind: str) -> list[dict[str, Any]]:
        return [e for t, e in self.events if t == "device" and e["kind"] == kind]

    def command(self, device: str, entity: str, value: object = None) -> Reply:
        """alice sets ``entity`` of ``device`` to ``value``; the reply comes as the loop runs."""
        reply = Reply()
        self.channel.command(device, entity, value, "alice", reply)
        return reply

    def agent(self, name: str, *extra: str, key: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start ``python -m server.agent`` against this channel (its secret: ``key``)."""
        argv = [sys.executable, "-m", "server.agent", "--name", name, "--port", str(self.port)]
        proc = subprocess.Popen([*argv, *extra], cwd=ROOT, env=agent_env(name, key))
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        self.channel.close()
        self.loop.close()


class Reply:
    """An ``on_done`` callback that remembers its (single) call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, Any]]] = []

    def __call__(self, status: int, body: dict[str, Any]) -> None:
        self.calls.append((status, body))

    def __bool__(self) -> bool:
        return bool(self.calls)

    @property
    def status(self) -> int:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][0]

    @property
    def body(self) -> dict[str, Any]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][1]


class Peer:
    """A hand-driven device: a one-to-one SCTP socket speaking the sealed channel by hand.

    ``shake`` runs the handshake as a device id with a secret; then ``send`` and
    ``recv`` seal and open JSON messages with the session (``send_raw``: bytes as
    they are, for what vigil must refuse).
    """

    def __init__(self, bench: Bench, host: str = "127.0.0.1") -> None:
        import sctp

        self.bench = bench
        self.sock = sctp.sctpsocket_tcp(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.events.data_io = True  # each message's stream
        self.sock.connect((host, bench.port))
        self.session: Session | None = None
        self.reset = False  # an ABORT was already seen

    def send_raw(self, data: bytes, stream: int = 0, ppid: int = PPID) -> None:
        self.sock.sctp_send(data, ppid=ppid, stream=stream)

    def send(self, msg: dict[str, Any] | bytes, stream: int = 0, ppid: int = PPID) -> None:
        """``msg`` (JSON, or bytes as they are) sealed on ``stream``."""
        assert self.session is not None, "no handshake yet"
        data = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
        self.send_raw(self.session.seal(stream, data), stream, ppid)

    def readable(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def recv_raw(self, timeout: float = 5.0) -> tuple[bytes, int]:
        """Run the loop until a message for us arrives; its bytes and stream."""
        import sctp

        self.bench.run_until(self.readable, timeout)
        _addr, flags, data, info = self.sock.sctp_recv(1 << 20)
        assert not flags & sctp.FLAG_NOTIFICATION
        return data, info.stream

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message from vigil, opened and decoded."""
        assert self.session is not None, "no handshake yet"
        data, stream = self.recv_raw(timeout)
        return dict(json.loads(self.session.open(stream, data)))

    def shake(self, device: str, key: bytes | None = None) -> bool:
        """The handshake as ``device`` with ``key`` (default: its test secret): whether vigil
        answered and proved the same secret."""
        from server.link.seal import Initiator, Unsealed

        initiator = Initiator(secret(device) if key is None else key, device)
        self.send_raw(initiator.first())
        try:
            reply, _stream = self.recv_raw()
        except ConnectionResetError:  # aborted: refused
            self.reset = True
            return False
        if not reply:
            return False
        try:
            self.session = initiator.finish(reply)
        except Unsealed:
            return False
        return True

    def hello(
        self,
        device: str,
        entities: list[dict[str, Any]] | None = None,
        key: bytes | None = None,
    ) -> dict[str, Any]:
        """The handshake, then a protocol 2 hello; vigil's answer."""
        assert self.shake(device, key), "vigil refused the handshake"
        self.send(
            {
                "type": "hello",
                "protocol": 2,
                "device": device,
                "entities": SWITCH if entities is None else entities,
            }
        )
        return self.recv()

    def aborted(self, timeout: float = 5.0) -> bool:
        """Run the loop until vigil ends the association; True if it was an ABORT."""
        import sctp

        if self.reset:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.bench.run_until(self.readable, deadline - time.monotonic())
            try:
                _addr, flags, data, _info = self.sock.sctp_recv(1 << 20)
            except ConnectionResetError:
                return True
            if not flags & sctp.FLAG_NOTIFICATION and not data:
                return False  # a graceful SHUTDOWN, not an ABORT
        return False

    def close(self) -> None:
        self.sock.close()
