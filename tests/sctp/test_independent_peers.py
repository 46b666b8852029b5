"""lksctp-tools' sctp_darn and sctp_test: C peers that share no code with us."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import pytest

from server.link.secret import proof
from tests.sctp.devicekeys import secret
from tests.sctp.sctpbench import Bench, Peer


def _rx_queue(remote_port: int) -> int:
    """RX_QUEUE of the (one) association whose peer port is ``remote_port``."""
    lines = Path("/proc/net/sctp/assocs").read_text().splitlines()
    header = lines[0].split()
    rx, rport = header.index("RX_QUEUE"), header.index("RPORT")
    (row,) = [f for f in (line.split() for line in lines[1:]) if int(f[rport]) == remote_port]
    return int(row[rx])


def _queued(bench: Bench) -> int:
    """sctp_darn's RX_QUEUE once settled: the least seen over 0.3 s, the loop running.

    The count also holds, for a moment, chunks the kernel has not yet
    consumed (a HEARTBEAT every 400 ms), which a message's growth may not
    exceed; the minimum is what waits unread.
    """
    seen: list[int] = []
    end = time.monotonic() + 0.3

    def sampled() -> bool:
        seen.append(_rx_queue(bench.port))
        return time.monotonic() >= end

    bench.run_until(sampled)
    return min(seen)


def _grows(bench: Bench, before: int, timeout: float = 5.0) -> int:
    """Wait until sctp_darn's settled RX_QUEUE is above ``before``; return it."""
    deadline = time.monotonic() + timeout
    while (now := _queued(bench)) <= before:
        assert time.monotonic() < deadline, f"nothing more queued for sctp_darn: {now} bytes"
    return now


def test_sctp_darn_exchanges_messages(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "server.control.channel")
    darn = subprocess.Popen(
        ["sctp_darn", "-H", "127.0.0.1", "-P", "0", "-h", "127.0.0.1", "-p", str(bench.port), "-s"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    bench.procs.append(darn)  # killed if the test fails: a live one would hold the guest
    assert darn.stdin is not None

    def line(text: bytes) -> None:  # sctp_darn sends it with "\n" and a C string's NUL
        assert darn.stdin is not None
        darn.stdin.write(text + b"\n")
        darn.stdin.flush()

    # sctp_darn sets its association up with its first message, and -s never
    # reads: vigil's challenge (and its "say hello first") wait in its receive
    # queue, so we read the nonce off the channel and type the hello it sends
    line(b'{"type": "telemetry", "data": {}}')
    bench.run_until(lambda: bench.channel._admission.open)
    (challenge,) = bench.channel._admission.open.values()
    bench.run_until(lambda: "say hello first" in caplog.text)
    challenged = _grows(bench, 0)
    volts = {"key": "volts", "kind": "sensor", "label": "Battery", "unit": "V"}
    hello = {"type": "hello", "protocol": 2, "device": "darn-1", "name": "C peer"}
    hello["entities"] = [volts]
    hello["hmac"] = proof(secret("darn-1"), challenge.nonce, "darn-1")
    line(json.dumps(hello).encode())
    bench.run_until(lambda: bench.online("darn-1"))
    welcomed = _grows(bench, challenged)  # and the welcome
    line(b'{"type": "telemetry", "data": {"volts": 11.9}}')
    bench.run_until(lambda: bench.device_events("telemetry"))
    (ev,) = bench.device_events("telemetry")
    assert ev["data"] == {"volts": 11.9} and ev["device"]["name"] == "C peer"
    assert ev["device"]["entities"] == [volts]
    device = bench.device("darn-1")
    assert device is not None and device["state"] == {"volts": 11.9}
    line(b"volts=11.9")  # not JSON: an error reply joins the welcome
    _grows(bench, welcomed)
    assert bench.online("darn-1")
    darn.stdin.close()  # sctp_darn exits and its association goes away
    bench.run_until(lambda: not bench.online("darn-1"))
    darn.wait(5)  # its status is 12 when it leaves unread messages behind


def test_sctp_test_garbage_does_not_hurt(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "server.control.channel")
    # 1, 1453 and 32768-byte messages of pattern bytes with random PPIDs
    cmd = ["sctp_test", "-H", "127.0.0.1", "-P", "0", "-h", "127.0.0.1", "-p", str(bench.port)]
    tester = subprocess.Popen([*cmd, "-s", "-c", "3", "-x", "2"], stdout=subprocess.DEVNULL)
    bench.run_until(lambda: tester.poll() is not None, 10)
    bench.run_for(0.5)
    assert "is not JSON" in caplog.text
    assert bench.channel.known() == []
    assert Peer(bench).hello("after") == {"type": "welcome", "device": "after"}
