"""A device comes back as itself: its agent, with its old secret, connects to a restored vigil.

The device is added the way a person adds one (``python -m server
add-device``); its agent keeps its own copy of the secret, as on another
machine, and stays connected while vigil is backed up. Then the old vigil
stops and its whole directory is deleted; the backup is restored onto a
fresh install's layout (config in etc/vigil, state in var/lib/vigil) that
never heard of the device, and a new vigil starts on the same SCTP port.
The agent, which never stopped, reconnects by itself (its backoff) and
proves its old secret over real kernel SCTP; a command reaches it through
HTTP. The archive and the rest of the round trip: tests/test_backup.py and
tests/test_backup_e2e.py.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT, Vigil, password, server_cmd, write_config


def curl(vigil: Vigil, method: str, path: str, body: object = None) -> tuple[int, object]:
    cmd = ["curl", "-s", "-w", "\n%{http_code}", "-X", method, "-u", f"alice:{password('alice')}"]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    out = subprocess.run([*cmd, vigil.base + path], capture_output=True, text=True, timeout=30)
    text, _, status = out.stdout.rpartition("\n")
    return int(status), json.loads(text) if text.strip() else None


def online(vigil: Vigil, device: str) -> bool:
    status, devices = curl(vigil, "GET", "/api/devices")
    assert status == 200 and isinstance(devices, list), devices
    return any(d["id"] == device and d["online"] for d in devices)


def wait_online(vigil: Vigil, device: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not online(vigil, device):
        assert time.monotonic() < deadline, f"{device} not online within {timeout} s"
        time.sleep(0.1)


def test_a_device_agent_with_its_old_secret_connects_to_the_restored_vigil(tmp_path: Path) -> None:
    control = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": random.randrange(20000, 60000),
        "allow": ["127.0.0.0/8"],
    }
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    config = write_config(old_dir, {"control": control, "audit": {"path": "audit.jsonl"}})
    added = server_cmd("add-device", "lamp-1", "--config", str(config))
    assert added.returncode == 0, added.stderr
    on_device = tmp_path / "lamp-1.secret"  # the agent's own copy, as on the device
    shutil.copy(old_dir / "devices.local/lamp-1.secret", on_device)
    on_device.chmod(0o600)
    old = Vigil(config)
    argv = [sys.executable, "-m", "server.agent", "--name", "lamp-1", "--host", "127.0.0.1"]
    argv += ["--port", str(control["port"]), "--secret-file", str(on_device)]
    agent = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL)
    new: Vigil | None = None
    try:
        wait_online(old, "lamp-1")
        archive = tmp_path / "backup.tar.gz"
        done = server_cmd("backup", str(archive), "--config", str(config))
        assert done.returncode == 0, done.stderr
        old.stop()
        shutil.rmtree(old_dir)

        etc, state = tmp_path / "new/etc/vigil", tmp_path / "new/var/lib/vigil"
        etc.mkdir(parents=True)
        fresh = etc / "config.toml"
        fresh.write_text(f'[http]\nstatic_dir = "{ROOT / "static"}"\n\n[state]\ndir = "{state}"\n')
        done = server_cmd("restore", str(archive), "--config", str(fresh))
        assert done.returncode == 0, done.stderr
        assert (state / "devices.local/lamp-1.secret").read_bytes() == on_device.read_bytes()
        new = Vigil(fresh)
        wait_online(new, "lamp-1")  # the agent was never restarted: it reconnected
        assert agent.poll() is None
        status, body = curl(
            new, "POST", "/api/devices/lamp-1/commands", {"entity": "power", "value": True}
        )
        assert status == 200 and isinstance(body, dict) and body["ok"] is True, body
        assert "device_refused" not in new.log()
    finally:
        agent.kill()
        agent.wait()
        if new is not None:
            new.stop()
        old.stop()
