"""tests/smoke.sh (POSIX sh + curl) against a vigil this test starts."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT, Vigil, free_port, password, require

SMOKE = ROOT / "tests" / "smoke.sh"


def smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SMOKE), *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.fixture(autouse=True)
def have_curl() -> None:
    require(shutil.which("curl") is not None, "curl is not installed")


@pytest.mark.parametrize("user", ["alice", "vera"])
def test_smoke_passes_against_a_running_vigil(vigil: Vigil, user: str) -> None:
    result = smoke(vigil.base, user, password(user))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "smoke: ok"
    assert f'"user":"{user}"' in result.stdout
    assert "Traceback" not in vigil.log()
    # the conditional request reached the server (the access log is written once a second)
    vigil.wait_for_log(r'"GET /index.html HTTP/1.1" 304 ')


def test_smoke_stops_at_the_first_failure_with_a_message(vigil: Vigil) -> None:
    result = smoke(vigil.base, "alice", "not-her-password")
    assert result.returncode == 1
    assert "FAIL: login: expected HTTP 200, got 401" in result.stderr
    assert "smoke: ok" not in result.stdout
    assert "/api/me says" not in result.stdout  # nothing after the first failure ran


def test_smoke_fails_clearly_when_nothing_listens() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    result = smoke(base, "alice", password("alice"))
    assert result.returncode == 1
    assert "cannot reach" in result.stderr and base in result.stderr


def test_smoke_explains_its_usage() -> None:
    result = smoke("http://127.0.0.1:1")
    assert result.returncode == 2
    assert "usage:" in result.stderr
