"""tests/uml/testhost.py: vigil with a real SCTP device in a UML guest, curl from here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support import ROOT, password, require, write_config

sys.path.insert(0, str(ROOT / "tests" / "uml"))

from kernel import unsupported
from testhost import uml_test_host


def curl(url: str, user: str = "alice", *extra: str) -> tuple[int, str]:
    cmd = ["curl", "-s", "-m", "5", "-w", "\n%{http_code}", "-u", f"{user}:{password(user)}"]
    out = subprocess.run([*cmd, *extra, url], capture_output=True, text=True, check=False)
    text, _, status = out.stdout.rpartition("\n")
    return int(status or 0), text


def test_curl_reaches_vigil_and_its_device_in_the_guest(tmp_path: Path) -> None:
    require(os.geteuid() == 0 and os.path.exists("/dev/net/tun"), "a tap device needs root")
    reason = unsupported()
    require(reason is None, reason or "")
    sections = {
        "http": {"host": "0.0.0.0", "port": 8080},
        "auth": {"allow": ["10.213.1.0/24", "127.0.0.0/8"]},
        "control": {"enabled": True, "port": 9900},
    }
    config = write_config(tmp_path, sections).read_text()
    with uml_test_host(config, agents=["lamp-1"]) as host:
        assert host.base_url.startswith("http://10.213.1.") and host.base_url.endswith(":8080")
        status, text = curl(host.base_url + "/api/devices")
        assert status == 200
        assert [(d["id"], d["online"]) for d in json.loads(text)] == [("lamp-1", True)]
        status, text = curl(
            host.base_url + "/api/devices/lamp-1/commands",
            "alice",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            '{"action": "on"}',
        )
        assert status == 200 and json.loads(text)["result"]["on"] is True
        host.pull()
        assert curl(host.base_url + "/healthz", "alice", "-m", "1")[0] == 0  # no answer
        host.plug()
        assert curl(host.base_url + "/healthz") == (200, "ok\n")
        assert "control channel listening" in host.log()
    assert not Path(f"/sys/class/net/{host.tap.name}").exists()
    assert not host.workdir.exists()
