"""curl -> vigil (the real process) -> SCTP -> the reference agent, and back."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sctpbench import ROOT
from support import Vigil, password, write_config


class Panel:
    """A vigil with the control channel on, and device agents talking to it."""

    def __init__(self, tmp: Path, command_timeout: float = 5) -> None:
        self.sctp_port = random.randrange(20000, 60000)
        control = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": self.sctp_port,
            "heartbeat_ms": 1000,
            "path_max_retrans": 2,
            "command_timeout": command_timeout,
        }
        self.vigil = Vigil(write_config(tmp, {"control": control}))
        self.agents: list[subprocess.Popen[bytes]] = []

    def curl(
        self, method: str, path: str, user: str = "alice", body: Any = None
    ) -> tuple[int, Any]:
        cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method]
        cmd += ["-u", f"{user}:{password(user)}", self.vigil.base + path]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=30).stdout.decode()
        text, _, status = out.rpartition("\n")
        return int(status), json.loads(text) if text.strip() else None

    def agent(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "server.agent", "--name", name, "--port", str(self.sctp_port)]
        proc = subprocess.Popen([*argv, *extra], cwd=ROOT)
        self.agents.append(proc)
        return proc

    def wait(self, cond: Callable[[], bool], timeout: float = 10) -> float:
        start = time.monotonic()
        while not cond():
            assert time.monotonic() - start < timeout, f"not within {timeout} s"
            time.sleep(0.05)
        return time.monotonic() - start

    def online(self, device: str) -> bool:
        _, devices = self.curl("GET", "/api/devices")
        return any(d["id"] == device and d["online"] for d in devices)

    def close(self) -> None:
        for proc in self.agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.vigil.stop()


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[Panel]:
    p = Panel(tmp_path)
    yield p
    p.close()


def test_command_round_trip_through_http(panel: Panel) -> None:
    panel.agent("lamp-1")
    panel.wait(lambda: panel.online("lamp-1"))
    status, body = panel.curl("POST", "/api/devices/lamp-1/commands", body={"action": "on"})
    assert status == 200 and body["ok"] is True and body["result"]["on"] is True, body
    status, body = panel.curl("POST", "/api/devices/lamp-1/commands", body={"action": "status"})
    assert status == 200 and body["result"]["on"] is True
    _, records = panel.curl("GET", "/api/audit?limit=50")
    ons = [r for r in records["records"] if r.get("action") == "on" and r.get("status") == 200]
    assert ons, records


def test_http_errors_from_the_control_side(panel: Panel) -> None:
    panel.agent("lamp-1")
    panel.wait(lambda: panel.online("lamp-1"))
    cases = [
        ("alice", "/api/devices/nope/commands", {"action": "on"}, 404),
        ("alice", "/api/devices/lamp-1/commands", {"action": "explode"}, 400),
        ("vera", "/api/devices/lamp-1/commands", {"action": "on"}, 403),
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
        status, body = panel.curl("POST", "/api/devices/slow/commands", body={"action": "on"})
        assert status == 504 and "did not answer within 1 s" in body["error"]
        assert 0.9 < time.monotonic() - start < 2.5
    finally:
        panel.close()


def test_agent_killed_mid_command_is_503_at_once(panel: Panel) -> None:
    agent = panel.agent("lamp-1", "--reply-delay", "30")
    panel.wait(lambda: panel.online("lamp-1"))
    cmd = ["curl", "-s", "-w", "\n%{http_code}", "-u", f"alice:{password('alice')}", "-X", "POST"]
    cmd += ["-H", "Content-Type: application/json", "--data-binary", '{"action": "toggle"}']
    cmd += [panel.vigil.base + "/api/devices/lamp-1/commands"]
    pending = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    time.sleep(0.5)
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
        status, _ = panel.curl("POST", "/api/devices/lamp-1/commands", body={"action": "off"})
        assert status == 200
    finally:
        panel.close()
