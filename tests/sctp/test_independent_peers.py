"""lksctp-tools' sctp_darn and sctp_test: C peers that share no code with us.

Neither speaks the sealed channel: what they send is refused and does no
harm. (Before the seal, sctp_darn was also a C device that said a proven
hello and reported telemetry; no C tool here speaks Noise.)
"""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from tests.sctp.sctpbench import Bench, Peer


def test_a_plain_text_peer_is_refused(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    """sctp_darn types a hello as the first protocol did, in clear: refused, aborted."""
    caplog.set_level(logging.INFO, "server.control.channel")
    darn = subprocess.Popen(
        ["sctp_darn", "-H", "127.0.0.1", "-P", "0", "-h", "127.0.0.1", "-p", str(bench.port), "-s"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bench.procs.append(darn)  # killed if the test fails: a live one would hold the guest
    assert darn.stdin is not None
    volts = {"key": "volts", "kind": "sensor", "label": "Battery", "unit": "V"}
    hello = {"type": "hello", "protocol": 2, "device": "darn-1", "entities": [volts]}
    darn.stdin.write(json.dumps(hello).encode() + b"\n")  # sent with "\n" and a NUL
    darn.stdin.flush()
    bench.run_until(lambda: bench.audits)
    assert bench.audits == [
        {"type": "device_refused", "device": None, "addr": "127.0.0.1", "reason": "unsealed"}
    ]
    assert "not a vigil sealed-channel hello" in caplog.text
    assert bench.channel.known() == []
    darn.stdin.close()
    darn.wait(5)


def test_sctp_test_garbage_does_not_hurt(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "server.control.channel")
    # 1, 1453 and 32768-byte messages of pattern bytes with random PPIDs
    cmd = ["sctp_test", "-H", "127.0.0.1", "-P", "0", "-h", "127.0.0.1", "-p", str(bench.port)]
    tester = subprocess.Popen([*cmd, "-s", "-c", "3", "-x", "2"], stdout=subprocess.DEVNULL)
    bench.run_until(lambda: tester.poll() is not None, 10)
    bench.run_for(0.5)
    assert "refused" in caplog.text
    assert {a["reason"] for a in bench.audits} <= {"unsealed", "no hello"}, bench.audits
    assert bench.channel.known() == []
    assert Peer(bench).hello("after") == {"type": "welcome", "device": "after"}
