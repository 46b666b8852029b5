"""tests/uml/testhost.py: vigil with a real SCTP device in a UML guest, curl from here.

This host is not loopback to the guest's vigil: curl uses HTTPS and trusts
the certificate vigil made in the guest (``--cacert``, its names checked);
plain HTTP is redirected there.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support import password, require, write_config
from tests.uml.kernel import unsupported
from tests.uml.testhost import uml_test_host


def curl(url: str, user: str = "alice", *extra: str) -> tuple[int, str]:
    cmd = ["curl", "-s", "-m", "5", "-w", "\n%{http_code}", "-u", f"{user}:{password(user)}"]
    out = subprocess.run([*cmd, *extra, url], capture_output=True, text=True, check=False)
    text, _, status = out.stdout.rpartition("\n")
    return int(status or 0), text


def plain(url: str) -> tuple[int, str]:
    """Status and Location of alice's plain-HTTP request (the 308 comes before any 401)."""
    cmd = ["curl", "-s", "-m", "5", "-u", f"alice:{password('alice')}", "-o", "/dev/null"]
    cmd += ["-w", "%{http_code} %{redirect_url}", url]
    status, _, location = subprocess.run(cmd, capture_output=True, text=True).stdout.partition(" ")
    return int(status or 0), location


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
        assert host.https_url == f"https://{host.guest_ip}:{host.tls_port}"
        trust = ("--cacert", str(host.cert))
        assert plain(host.base_url + "/api/devices?x=1") == (
            308,
            f"{host.https_url}/api/devices?x=1",
        )
        status, text = curl(host.https_url + "/api/devices", "alice", *trust)
        assert status == 200
        assert [(d["id"], d["online"]) for d in json.loads(text)] == [("lamp-1", True)]
        status, text = curl(
            host.https_url + "/api/devices/lamp-1/commands",
            "alice",
            *trust,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            '{"entity": "power", "value": true}',
        )
        assert status == 200 and json.loads(text)["state"] is True
        host.pull()
        assert curl(host.https_url + "/healthz", "alice", *trust, "-m", "1")[0] == 0  # no answer
        host.plug()
        assert curl(host.https_url + "/healthz", "alice", *trust) == (200, "ok\n")
        assert curl(host.base_url + "/healthz") == (200, "ok\n")  # answered on both
        assert "control channel listening" in host.log()
    assert not Path(f"/sys/class/net/{host.tap.name}").exists()
    assert not host.workdir.exists()
