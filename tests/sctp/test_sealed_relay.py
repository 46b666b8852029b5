"""The sealed channel under attack: a relay between the reference agent and vigil.

``Relay`` is an SCTP man in the middle in the bench's loop: the agent
connects to it, it connects to vigil, and it passes every message through
on the stream (and ordering) it came with, except the one a test tampers
with: a flipped bit, a replay, a drop. Everything it forwarded is kept; a
raw packet socket on the guest's loopback sees what an eavesdropper sees
(the guest has no tcpdump). A rogue vigil, which answers the
handshake without the device's secret, never gets a command run.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import sctp

from server.base.loop import READ
from server.link.codec import PPID
from server.link.seal import Initiator, Responder
from tests.sctp.devicekeys import agent_env
from tests.sctp.sctpbench import ROOT, Bench

UP, DOWN = "agent -> vigil", "vigil -> agent"
# (direction, how many messages that way so far on this association, stream, bytes) ->
# the bytes to pass on, a list of them, or None to drop it
Tamper = Callable[[str, int, int, bytes], bytes | list[bytes] | None]


def flip(data: bytes, bit: int = 8 * 20) -> bytes:
    """``data`` with one bit flipped (by default in the ciphertext, past any counter)."""
    i = min(bit // 8, len(data) - 1)
    return data[:i] + bytes([data[i] ^ (1 << bit % 8)]) + data[i + 1 :]


def with_streams(sock: Any) -> Any:
    """``sock``, telling the stream of each message it receives (accepted ones inherit it)."""
    sock.events.data_io = True
    return sock


class Relay:
    """Listens for the agent; each association it accepts gets one of its own to vigil."""

    def __init__(self, bench: Bench, tamper: Tamper | None = None) -> None:
        self.bench = bench
        self.tamper = tamper
        self.wire: list[
            tuple[str, int, bytes]
        ] = []  # what it forwarded: (direction, stream, bytes)
        self.listener = with_streams(sctp.sctpsocket_tcp(socket.AF_INET))
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        bench.loop.register(self.listener.sock(), READ, self._accept)
        self.pairs: list[tuple[Any, Any]] = []

    def _accept(self, _mask: int) -> None:
        agent, _ = self.listener.accept()
        vigil = with_streams(sctp.sctpsocket_tcp(socket.AF_INET))
        vigil.connect(("127.0.0.1", self.bench.port))
        counts = {UP: 0, DOWN: 0}
        self.pairs.append((agent, vigil))
        self.bench.loop.register(agent.sock(), READ, lambda m: self._pass(agent, vigil, UP, counts))
        self.bench.loop.register(
            vigil.sock(), READ, lambda m: self._pass(vigil, agent, DOWN, counts)
        )

    def _pass(self, src: Any, dst: Any, direction: str, counts: dict[str, int]) -> None:
        try:
            _addr, flags, data, info = src.sctp_recv(1 << 17)
        except OSError:  # aborted
            data, flags = b"", 0
        if flags & sctp.FLAG_NOTIFICATION:
            return
        if not data:  # one side is gone: so is the other (ABORT)
            for sock in (src, dst):
                self.bench.loop.unregister(sock.sock())
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            return
        n = counts[direction]
        counts[direction] = n + 1
        out = data if self.tamper is None else self.tamper(direction, n, info.stream, data)
        for piece in [] if out is None else [out] if isinstance(out, bytes) else out:
            self.wire.append((direction, info.stream, piece))
            unordered = sctp.MSG_UNORDERED if info.stream == 1 else 0
            with contextlib.suppress(OSError):  # the other side may be being torn down
                dst.sctp_send(piece, ppid=PPID, stream=info.stream, flags=unordered)

    def close(self) -> None:
        self.bench.loop.unregister(self.listener.sock())
        self.listener.close()


def agent(bench: Bench, port: int, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "server.agent", "--name", "lamp-1", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, *extra], cwd=ROOT, env=agent_env("lamp-1"), stderr=subprocess.PIPE, text=True
    )
    bench.procs.append(proc)  # type: ignore[arg-type]  # killed at the end
    return proc


def stderr_of(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    return proc.communicate()[1]


def refused(bench: Bench) -> list[dict[str, Any]]:
    return [a for a in bench.audits if a["reason"] == "unsealed"]


def test_a_flipped_bit_in_a_command_is_refused_by_the_agent(bench: Bench) -> None:
    # vigil -> agent: message 2, welcome, then the command
    relay = Relay(bench, lambda d, n, s, data: flip(data) if (d, n) == (DOWN, 2) else data)
    proc = agent(bench, relay.port)
    bench.run_until(lambda: bench.online("lamp-1"), 10)
    r = bench.command("lamp-1", "power", True)
    bench.run_until(lambda: r, 5)
    assert r.status == 503 and "lost" in r.body["error"]  # the agent ended the association
    bench.run_until(lambda: bench.online("lamp-1"), 10)  # and came back with a new one
    err = stderr_of(proc)
    assert "a message from vigil failed to open, not obeyed; aborting" in err
    assert "command " not in err  # never run
    relay.close()


@pytest.mark.parametrize("stream", [0, 1], ids=["result", "telemetry"])
def test_a_flipped_bit_in_a_result_or_telemetry_is_refused_by_vigil(
    bench: Bench, stream: int
) -> None:
    hit = []

    def tamper(d: str, n: int, s: int, data: bytes) -> bytes:
        if d == UP and s == stream and n >= 2 and not hit:  # past message 1 and the hello
            hit.append(n)
            return flip(data)
        return data

    relay = Relay(bench, tamper)
    proc = agent(bench, relay.port)
    bench.run_until(lambda: bench.online("lamp-1"), 10)
    r = bench.command("lamp-1", "power", True)
    bench.run_until(lambda: refused(bench), 5)
    (audit,) = refused(bench)
    assert audit["device"] == "lamp-1" and audit["addr"] == "127.0.0.1"
    assert bench.device_events("offline")
    if stream == 0:
        bench.run_until(lambda: r)
        assert r.status == 503
    stderr_of(proc)
    relay.close()


def test_a_replayed_message_is_refused(bench: Bench) -> None:
    # the hello (agent -> vigil message 1) sent again right after itself
    relay = Relay(bench, lambda d, n, s, data: [data, data] if (d, n) == (UP, 1) else data)
    proc = agent(bench, relay.port)
    bench.run_until(lambda: refused(bench), 10)
    assert refused(bench)[0]["device"] == "lamp-1"
    stderr_of(proc)
    relay.close()


def test_a_replayed_telemetry_reading_is_refused(bench: Bench) -> None:
    relay = Relay(bench, lambda d, n, s, data: [data, data] if (d, s) == (UP, 1) else data)
    proc = agent(bench, relay.port, "--interval", "0.2")
    bench.run_until(lambda: refused(bench), 10)
    assert refused(bench)[0]["device"] == "lamp-1"
    stderr_of(proc)
    relay.close()


def test_a_dropped_control_message_is_detected(bench: Bench) -> None:
    drops = {"left": 1}

    def tamper(d: str, n: int, s: int, data: bytes) -> bytes | None:
        if d == UP and s == 0 and n >= 2 and drops["left"]:  # the first result
            drops["left"] -= 1
            return None
        return data

    relay = Relay(bench, tamper)
    proc = agent(bench, relay.port)
    bench.run_until(lambda: bench.online("lamp-1"), 10)
    first = bench.command("lamp-1", "power", True)
    bench.run_for(0.3)
    second = bench.command("lamp-1", "brightness", 20)
    bench.run_until(lambda: refused(bench), 5)  # the second result: counter 2 where 1 was due
    assert refused(bench)[0]["device"] == "lamp-1"
    bench.run_until(lambda: first and second)
    assert first.status == second.status == 503
    stderr_of(proc)
    relay.close()


def capture_lo() -> socket.socket:
    """A raw packet socket on the guest's loopback (no tcpdump there): every frame."""
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    raw.bind(("lo", 0))
    raw.setblocking(False)
    return raw


def frames(raw: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(raw.recv(1 << 17))
    return out


def test_nothing_in_clear_after_the_handshake(bench: Bench) -> None:
    """What an eavesdropper on the wire sees of commands and telemetry: no plaintext but the
    id in the handshake's first message."""
    raw = capture_lo()
    relay = Relay(bench)
    proc = agent(bench, relay.port, "--interval", "0.1")
    bench.run_until(lambda: bench.online("lamp-1"), 10)
    r = bench.command("lamp-1", "brightness", 42)
    bench.run_until(lambda: r and len(bench.device_events("telemetry")) >= 3, 5)
    assert r.status == 200
    stderr_of(proc)
    relay.close()
    (first, *after) = [data for _, _, data in relay.wire]
    assert first.startswith(b"\x01\x06lamp-1")  # message 1: the id, in clear
    assert len(after) > 5
    captured = frames(raw)
    raw.close()
    assert any(first in f for f in captured)  # the capture saw the handshake
    for seen in (b"".join(after), b"".join(f for f in captured if first not in f)):
        for word in (b"command", b"brightness", b"temperature", b"power", b"alice", b"lamp-1"):
            assert word not in seen, word


def test_an_agent_never_obeys_a_vigil_without_its_secret(bench: Bench) -> None:
    """A rogue vigil answers the handshake with a secret of its own, then sends a command."""
    rogue = sctp.sctpsocket_tcp(socket.AF_INET)
    rogue.bind(("127.0.0.1", 0))
    rogue.listen(1)
    proc = agent(bench, rogue.getsockname()[1])
    conn, _ = rogue.accept()

    def recv() -> bytes:
        assert select.select([conn], [], [], 10)[0], "the agent said nothing"
        return bytes(conn.sctp_recv(4096)[2])

    first = recv()
    assert first.startswith(b"\x01\x06lamp-1")
    wrong = os.urandom(32)
    # the best it can do: a well-formed message 2 under the secret it has
    session, reply = Responder(lambda _id: wrong).answer(Initiator(wrong, "lamp-1").first())
    conn.sctp_send(reply, ppid=PPID)
    command = b'{"type":"command","id":"x","entity":"power","value":true,"user":"rogue"}'
    try:  # the agent may have aborted before the command could go
        conn.sctp_send(session.seal(0, command), ppid=PPID)
        while recv():
            pass
        aborted = False
    except (ConnectionResetError, BrokenPipeError):
        aborted = True
    err = stderr_of(proc)
    conn.close()
    rogue.close()
    assert aborted
    assert "the server did not prove the secret: not obeying it" in err
    assert "command x" not in err
