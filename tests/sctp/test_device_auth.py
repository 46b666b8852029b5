"""Device agents must prove their secret (the sealed channel's handshake): over real kernel SCTP.

Every refusal must be: a sealed ``error`` message if the association has
keys (none before the handshake: nothing is said in clear), then an SCTP
ABORT of the association, one log line, one ``device_refused`` audit record
with the peer's address, and nothing registered. A restarted agent that proves its
secret is back at once, while its old association still looks alive; one
that cannot prove it never displaces a live device. The pure rules are
tested with values in tests/test_devices_auth.py.
"""

from __future__ import annotations

import ipaddress
import logging
import shlex
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from server.link.seal import Initiator
from tests.sctp.devicekeys import SECRET_ENV, agent_env, secret
from tests.sctp.panel import ROOT, Panel
from tests.sctp.sctpbench import SWITCH, Bench, Peer

WRONG = bytes(32)


def refused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def assert_refused(bench: Bench, peer: Peer, reason: str, device: str | None) -> None:
    assert peer.aborted(), "the association was not aborted"
    assert bench.audits == [
        {"type": "device_refused", "device": device, "addr": "127.0.0.1", "reason": reason}
    ]
    live = {d.assoc for d in bench.channel.known() if d.online}
    assert set(bench.channel._admission.addrs) == live  # vigil forgot the refused one


def test_every_association_has_fresh_keys(bench: Bench) -> None:
    first, second = Peer(bench), Peer(bench)
    assert first.shake("lamp-1") and second.shake("lamp-2")
    assert first.session is not None and second.session is not None
    assert first.session.handshake_hash != second.session.handshake_hash
    first.send({"type": "hello", "protocol": 2, "device": "lamp-1", "entities": SWITCH})
    assert first.recv() == {"type": "welcome", "device": "lamp-1"}
    assert bench.online("lamp-1") and not bench.online("lamp-2") and not bench.audits


HANDSHAKES = {  # refused at the handshake: no keys, so nothing is said before the ABORT
    "wrong secret": ("lamp-1", WRONG, "wrong secret"),
    "unknown id": ("stranger", WRONG, "unknown device"),
    "another id's secret": ("lamp-1", secret("lamp-2"), "wrong secret"),
}


@pytest.mark.parametrize("case", list(HANDSHAKES))
def test_a_handshake_that_proves_nothing_is_refused(
    bench: Bench, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO, "server.control.channel")
    device, key, reason = HANDSHAKES[case]
    peer = Peer(bench)
    assert not peer.shake(device, key)  # aborted, unanswered
    assert_refused(bench, peer, reason, device)
    assert bench.channel.known() == [] and not bench.device_events("online")
    (line,) = refused_lines(caplog)  # one line
    assert f"device {device} from 127.0.0.1 refused" in line, line


HELLOS = {  # proven at the handshake, refused at the hello, in a sealed error
    # an agent of the first protocol, with its verbs: refused saying what vigil speaks
    "protocol 1": ({"device": "lamp-1", "commands": ["on", "off"]}, "protocol"),
    "protocol 3": ({"device": "lamp-1", "protocol": 3, "entities": SWITCH}, "protocol"),
    "another id": ({"device": "lamp-2", "protocol": 2, "entities": SWITCH}, "other id"),
}


@pytest.mark.parametrize("case", list(HELLOS))
def test_a_sealed_hello_of_the_wrong_kind_is_refused(
    bench: Bench, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO, "server.control.channel")
    hello, reason = HELLOS[case]
    peer = Peer(bench)
    assert peer.shake("lamp-1")
    peer.send({"type": "hello", **hello})
    reply = peer.recv()
    assert reply["type"] == "error"
    assert_refused(bench, peer, reason, hello["device"])
    assert bench.channel.known() == [] and not bench.device_events("online")
    (line,) = refused_lines(caplog)
    assert f"device {hello['device']} from 127.0.0.1 refused" in line, line
    if case.startswith("protocol"):  # what the agent's log says: what vigil wants
        spoken = "no protocol" if case == "protocol 1" else "protocol 3"
        assert reply["error"] == (
            'hello refused: vigil speaks protocol 2 ("protocol": 2 and "entities"; '
            f"README, Devices); this hello says {spoken}"
        )


def test_a_replayed_handshake_is_answered_but_displaces_nobody() -> None:
    b = Bench(hello_timeout=0.5).start()
    try:
        genuine = Peer(b)
        initiator = Initiator(secret("lamp-1"), "lamp-1")
        captured = initiator.first()  # what an eavesdropper saw
        genuine.send_raw(captured)
        reply, _ = genuine.recv_raw()
        genuine.session = initiator.finish(reply)
        genuine.send({"type": "hello", "protocol": 2, "device": "lamp-1", "entities": SWITCH})
        assert genuine.recv()["type"] == "welcome"
        assoc = b.assoc_of("lamp-1")

        replay = Peer(b)  # a later association, the captured message 1 verbatim
        replay.send_raw(captured)
        answer, _ = replay.recv_raw()
        assert len(answer) == 48 and answer != reply  # answered, with fresh keys it cannot know
        replay.send_raw(b"\x00" * 60)  # whatever it sends fails to open
        assert_refused(b, replay, "unsealed", "lamp-1")
        assert b.assoc_of("lamp-1") == assoc  # still the genuine one
        assert len(b.device_events("online")) == 1 and not b.device_events("offline")
        r = b.command("lamp-1", "power", True)  # commands still reach it
        cmd = genuine.recv()
        genuine.send({"type": "result", "id": cmd["id"], "ok": True})
        b.run_until(lambda: r)
        assert r.status == 200 and r.body["state"] is True  # no state said: the commanded one

        b.audits.clear()
        silent = Peer(b)  # a replay that says nothing more is refused at the deadline
        silent.send_raw(captured)
        assert len(silent.recv_raw()[0]) == 48
        assert_refused(b, silent, "no hello", "lamp-1")
        assert b.assoc_of("lamp-1") == assoc
    finally:
        b.close()


def test_a_wrong_secret_does_not_displace_a_live_device(bench: Bench) -> None:
    genuine = Peer(bench)
    genuine.hello("lamp-1")
    impostor = Peer(bench)
    assert not impostor.shake("lamp-1", key=WRONG)
    assert impostor.aborted() and bench.online("lamp-1")
    r = bench.command("lamp-1", "power", False)
    assert genuine.recv()["value"] is False
    assert not r  # still waiting for the genuine device's answer


def test_a_peer_outside_control_allow_is_refused_as_it_comes_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "server.control.channel")
    b = Bench(allow=(ipaddress.ip_network("10.0.0.0/8"),)).start()
    try:
        peer = Peer(b)  # aborted before any handshake: nothing said
        assert peer.aborted()
        assert b.audits == [
            {"type": "device_refused", "device": None, "addr": "127.0.0.1", "reason": "not allowed"}
        ]
        (line,) = refused_lines(caplog)
        assert "127.0.0.1 is not in control.allow" in line
        assert b.channel.known() == []
    finally:
        b.close()


def test_no_handshake_or_no_hello_in_time_is_refused_at_the_deadline() -> None:
    b = Bench(hello_timeout=0.5).start()
    try:
        slow = Peer(b)
        took = b.run_until(lambda: b.audits, 3)
        assert 0.3 < took < 1.5, took
        assert slow.aborted()  # no keys: no error message
        assert b.audits[0]["reason"] == "no hello" and b.audits[0]["addr"] == "127.0.0.1"
        shaken = Peer(b)
        assert shaken.shake("lamp-2")
        assert shaken.recv() == {"type": "error", "error": "no hello in time"}  # sealed
        assert shaken.aborted() and b.audits[1]["device"] == "lamp-2"
        quick = Peer(b)  # a hello in time is welcome, and its deadline then does nothing
        assert quick.hello("lamp-1")["type"] == "welcome"
        b.run_for(0.8)
        assert b.online("lamp-1") and len(b.audits) == 2
    finally:
        b.close()


def test_a_restarted_agent_is_back_at_once(bench: Bench) -> None:
    old = bench.agent("lamp-1", "--reply-delay", "30")
    bench.run_until(lambda: bench.online("lamp-1"), 10)
    old_assoc = bench.assoc_of("lamp-1")
    # Stopped, the old agent's kernel still answers heartbeats: to vigil its
    # association is alive, with a command waiting on it.
    old.send_signal(signal.SIGSTOP)
    pending = bench.command("lamp-1", "power", True)
    bench.run_for(0.3)
    assert not pending
    try:
        new = bench.agent("lamp-1")
        took = bench.run_until(lambda: bench.assoc_of("lamp-1") != old_assoc)
        print(f"restarted agent back {took:.2f} s after it started")
        assert took < 3, took
        assert bench.online("lamp-1")
        assert pending.status == 503 and "lost" in pending.body["error"]  # at once
        (gone,) = bench.device_events("offline")
        assert gone["reason"] == "replaced" and gone["device"]["online"] is False
        assert len(bench.device_events("online")) == 2 and not bench.audits
        r = bench.command("lamp-1", "brightness", 20)  # commands go to the new agent
        bench.run_until(lambda: r)
        assert r.status == 200 and r.body["state"] == 20 and new.poll() is None
    finally:
        old.kill()
        old.wait()


def test_the_reference_agent_retries_with_backoff_when_refused(
    bench: Bench, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "server.agent", "--name", "lamp-1", "--port", str(bench.port)]
    wrong = subprocess.Popen(
        argv, cwd=ROOT, env=agent_env("lamp-1", WRONG), stderr=subprocess.PIPE, text=True
    )
    try:
        bench.run_until(lambda: len(bench.audits) >= 3, 10)  # 0.2 + 0.4 s between tries
        assert wrong.poll() is None and not bench.online("lamp-1")
        assert {a["reason"] for a in bench.audits} == {"wrong secret"}
    finally:
        wrong.kill()
        _, err = wrong.communicate()
    assert "refused our handshake (is this device's secret the one" in err
    assert "reconnecting in 0.4 s" in err
    # the right secret from a file, with none in the environment
    path = tmp_path / "lamp-1.secret"
    path.write_text(secret("lamp-1").hex())
    path.chmod(0o600)
    env = {k: v for k, v in agent_env("lamp-1").items() if k != SECRET_ENV}
    bench.procs.append(subprocess.Popen([*argv, "--secret-file", str(path)], cwd=ROOT, env=env))
    bench.run_until(lambda: bench.online("lamp-1"), 10)


def test_reload_disconnects_devices_that_lost_their_right(bench: Bench) -> None:
    a, b = Peer(bench), Peer(bench)
    a.hello("lamp-1")
    b.hello("lamp-2")
    keys = tuple(k for k in bench.cfg.devices if k.id != "lamp-1")
    bench.channel.reload(replace(bench.cfg, devices=keys))
    assert a.recv()["type"] == "error" and a.aborted()
    assert not bench.online("lamp-1") and bench.online("lamp-2")
    assert not Peer(bench).shake("lamp-1")  # no longer declared
    bench.channel.reload(replace(bench.cfg, allow=(ipaddress.ip_network("10.0.0.0/8"),)))
    assert b.recv()["type"] == "error" and b.aborted() and not bench.online("lamp-2")


def test_add_device_then_the_printed_agent_command_over_sighup(panel: Panel) -> None:
    """README's two commands against the real server: add-device, then the agent it prints."""
    config = panel.vigil.config
    add = [sys.executable, "-m", "server", "add-device", "porch", "--config", str(config)]
    done = subprocess.run(add, cwd=ROOT, capture_output=True, text=True, check=True, timeout=30)
    argv = shlex.split(done.stdout)
    assert argv[argv.index("--port") + 1] == str(panel.sctp_port)
    env = {k: v for k, v in agent_env("porch").items() if k != SECRET_ENV}
    since = len(panel.vigil.log())
    panel.agents.append(subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.DEVNULL))
    panel.vigil.wait_for_log(r"device porch from 127\.0\.0\.1 refused", since, 10)  # no HUP yet
    panel.vigil.signal(signal.SIGHUP)
    panel.wait(lambda: panel.online("porch"))  # the agent's next try, after the reload


def test_refusals_reach_the_audit_log_of_the_real_server(panel: Panel) -> None:
    panel.agent("lamp-1", key=WRONG)
    panel.wait(lambda: "refused" in panel.vigil.log())
    _, body = panel.curl("GET", "/api/audit?limit=20")
    refused = [r for r in body["records"] if r["type"] == "device_refused"]
    assert refused and refused[-1]["device"] == "lamp-1" and refused[-1]["addr"] == "127.0.0.1"
    assert refused[-1]["reason"] == "wrong secret"
    _, devices = panel.curl("GET", "/api/devices")
    assert devices == []
