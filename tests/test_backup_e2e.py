"""Back up a running vigil while people use it; restore it onto a fresh install; start it.

The old vigil serves HTTPS, a person chats through it all along (each
message an audit record), another person and a device are added with the
command line while it runs; ``python -m server backup --audit`` runs
meanwhile and nobody notices. Then the old vigil stops and its directory
is deleted, so nothing can come from it; ``restore`` puts the archive onto
a fresh install's layout (config in etc/vigil, state in var/lib/vigil) and
a new vigil starts from it: the same people log in over HTTPS with the
same passwords, ``tls-info`` shows the same fingerprint, the device is
declared (``check-config``), the chat is in the audit log. The device agent connecting with
its old secret over SCTP is tests/sctp/test_backup_restore.py.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support import (
    CHATTY,
    Chatter,
    Vigil,
    basic,
    https_client,
    password,
    restore_fresh,
    server_cmd,
    url_host,
)

SECTIONS = {"audit": {"path": "audit.jsonl"}, **CHATTY}  # the audit log in the state dir


def fingerprint(config: Path) -> str:
    info = server_cmd("tls-info", "--config", str(config))
    assert info.returncode == 0, info.stderr
    return next(line for line in info.stdout.splitlines() if line.startswith("SHA-256:"))


def curl_status(url: str, user: str, cacert: Path) -> str:
    """``curl`` as ``user`` against ``url``, trusting only ``cacert``: the HTTP status."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(cacert)]
    out = subprocess.run(
        [*argv, "-u", f"{user}:{password(user)}", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout


def test_backup_a_running_vigil_and_restore_it_onto_a_fresh_install(
    start_vigil: Callable[..., Vigil], tmp_path: Path
) -> None:
    old = start_vigil(SECTIONS, {"alice": "operator", "vera": "viewer"})
    config = old.config
    assert server_cmd("add-device", "lamp-1", "--config", str(config)).returncode == 0
    added = server_cmd(
        "user", "add", "caroline", "--config", str(config), stdin=password("caroline")
    )
    assert added.returncode == 0, added.stderr
    old.wait_for_log("reloaded")
    before = fingerprint(config)
    chatter = Chatter(https_client(old, "alice"), interval=0.05)
    try:
        deadline = time.monotonic() + 10
        while not chatter.posted:  # something acknowledged (in the audit log) to back up
            assert time.monotonic() < deadline and not chatter.errors, chatter.errors
            time.sleep(0.05)
        archive = tmp_path / "vigil-backup.tar.gz"
        done = server_cmd("backup", str(archive), "--audit", "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert "backed up 6 files, 1 of the audit log" in done.stderr
        with https_client(old, "caroline") as caroline:  # still serving
            assert caroline.get("/api/me").status_code == 200
    finally:
        chatter.stop()
    assert chatter.errors == []
    assert archive.stat().st_mode & 0o777 == 0o600
    with https_client(old, "alice") as alice:
        said = [m["text"] for m in alice.get("/api/chat").json()["messages"]]
    assert len(said) >= 2
    old.stop()
    shutil.rmtree(config.parent)  # nothing of the old vigil is left to read

    fresh, state, printed = restore_fresh(archive, tmp_path / "new")
    assert "3 user(s), 1 device(s)" in printed
    check = server_cmd("check-config", "--config", str(fresh))
    assert check.returncode == 0 and "(3 user(s), 1 device(s))" in check.stdout

    again = Vigil(fresh)
    try:
        log = again.log()
        assert "first run" not in log and "made a TLS certificate" not in log
        assert fingerprint(fresh) == before
        url = f"https://{url_host(again.host)}:{again.tls_port}/api/me"
        cert = state / "tls.local.crt"
        assert {u: curl_status(url, u, cert) for u in ("alice", "vera", "caroline")} == {
            "alice": "200",
            "vera": "200",
            "caroline": "200",
        }
        assert curl_status(url, "mallory", cert) == "401"
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(
            base_url=again.https, headers={"Authorization": basic("alice")}, verify=trust
        ) as alice:
            chat = [m["text"] for m in alice.get("/api/chat").json()["messages"]]
            # the chat said up to the backup came back; what was said after it did not
            assert chat and chat == said[: len(chat)]
    finally:
        again.stop()
