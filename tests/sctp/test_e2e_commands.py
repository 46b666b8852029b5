"""curl -> vigil (the real process) -> SCTP -> the reference agent, and back."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.sctp.panel import Panel
from tests.support import Vigil, password

POWER_ON = {"entity": "power", "value": True}


def test_command_round_trip_through_http(panel: Panel) -> None:
    panel.agent("lamp-1")
    panel.wait(lambda: panel.online("lamp-1"))
    status, body = panel.curl("POST", "/api/devices/lamp-1/commands", body=POWER_ON)
    assert status == 200 and body == {"id": body["id"], "ok": True, "state": True}, body
    dim = {"entity": "brightness", "value": 25}
    status, body = panel.curl("POST", "/api/devices/lamp-1/commands", body=dim)
    assert status == 200 and body["state"] == 25
    _, (device,) = panel.curl("GET", "/api/devices")
    assert (device["state"]["power"], device["state"]["brightness"]) == (True, 25)
    _, records = panel.curl("GET", "/api/audit?limit=50")
    sent = [
        (r["entity"], r["value"])
        for r in reversed(records["records"])  # newest first
        if r["type"] == "command" and r.get("status") == 200
    ]
    assert sent == [("power", True), ("brightness", 25)], records


def test_http_errors_from_the_control_side(panel: Panel) -> None:
    panel.agent("lamp-1")
    panel.wait(lambda: panel.online("lamp-1"))
    cases = [
        ("alice", "/api/devices/nope/commands", POWER_ON, 404),
        ("alice", "/api/devices/lamp-1/commands", {"entity": "explode", "value": 1}, 400),
        ("alice", "/api/devices/lamp-1/commands", {"entity": "brightness", "value": -5}, 400),
        ("vera", "/api/devices/lamp-1/commands", POWER_ON, 403),
    ]
    for user, path, body, expected in cases:
        status, reply = panel.curl("POST", path, user, body)
        assert status == expected and "error" in reply, (path, status, reply)


def test_timeout_is_504(tmp_path: Path) -> None:
    panel = Panel(tmp_path, command_timeout=1)
    try:
        panel.agent("slow", "--reply-delay", "3")
        panel.wait(lambda: panel.online("slow"))
        start = time.monotonic()
        status, body = panel.curl("POST", "/api/devices/slow/commands", body=POWER_ON)
        assert status == 504 and "did not answer within 1 s" in body["error"]
        assert 0.9 < time.monotonic() - start < 2.5
    finally:
        panel.close()


def test_agent_killed_mid_command_is_503_at_once(panel: Panel) -> None:
    agent = panel.agent("lamp-1", "--reply-delay", "30")
    panel.wait(lambda: panel.online("lamp-1"))
    cmd = ["curl", "-s", "-w", "\n%{http_code}", "-u", f"alice:{password('alice')}", "-X", "POST"]
    cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(POWER_ON)]
    cmd += [panel.vigil.base + "/api/devices/lamp-1/commands"]
    since = len(panel.vigil.log())
    pending = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    # alice's command takes the lease in the pass that sends it: then it is in flight
    # (a fixed sleep raced curl's start in a slow guest: the kill came first, "offline")
    panel.vigil.wait_for_log(r"lease of lamp-1 by alice", since, timeout=10)
    agent.send_signal(signal.SIGKILL)
    start = time.monotonic()
    out, _ = pending.communicate(timeout=10)
    took = time.monotonic() - start
    text, _, status = out.decode().rpartition("\n")
    assert status == "503" and "lost" in json.loads(text)["error"]
    assert took < 2.0, took
    assert not panel.online("lamp-1")
    print(f"HTTP 503 {took:.3f} s after kill -9 of the agent")


def test_agent_comes_back_after_vigil_restart(tmp_path: Path) -> None:
    panel = Panel(tmp_path)
    try:
        panel.agent("lamp-1")
        panel.wait(lambda: panel.online("lamp-1"))
        panel.vigil.stop()
        panel.vigil = Vigil(panel.vigil.config)
        took = panel.wait(lambda: panel.online("lamp-1"))
        print(f"agent back {took:.2f} s after vigil restarted")
        off = {"entity": "power", "value": False}
        status, body = panel.curl("POST", "/api/devices/lamp-1/commands", body=off)
        assert status == 200 and body["state"] is False
    finally:
        panel.close()


def test_a_lease_over_real_sctp_ends_when_the_agent_dies(panel: Panel) -> None:
    agent = panel.agent("lamp-1")
    panel.wait(lambda: panel.online("lamp-1"))
    # alice's stream keeps her online: curl's connections close, and after the
    # grace period her leaving would end the lease (tests/test_lease_requests.py)
    with panel.events("alice"), panel.events("vera") as events:
        status, body = panel.curl("POST", "/api/devices/lamp-1/commands", body=POWER_ON)
        assert status == 200 and body["ok"] is True
        start = events.wait_for(events.device("lease", "lamp-1"))
        assert (start.data["change"], start.data["holder"]) == ("start", "alice")
        off = {"entity": "power", "value": False}
        status, body = panel.curl("POST", "/api/devices/lamp-1/commands", "bob", off)
        assert status == 409 and body["holder"] == "alice", body
        _, (device,) = panel.curl("GET", "/api/devices", "bob")
        assert device["lease"]["holder"] == "alice"
        agent.send_signal(signal.SIGKILL)  # its kernel aborts the association
        end = events.wait_for(lambda e: events.device("lease", "lamp-1")(e) and e is not start)
        assert (end.data["change"], end.data["reason"]) == ("end", "device offline")
        assert end.data["device"]["online"] is False and end.data["device"]["lease"] is None
    panel.agent("lamp-1")  # back: free for anyone
    panel.wait(lambda: panel.online("lamp-1"))
    status, body = panel.curl("POST", "/api/devices/lamp-1/commands", "bob", off)
    assert status == 200, body
