"""The second factor and logout from the command line, against a running vigil:
``python -m server user totp NAME [--off]`` and ``user logout NAME``.

The test answers the enrolment's prompt as a person would: it reads the
otpauth:// URI the command prints, computes the current code with pyotp
(as an authenticator app does from the QR code) and types it.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from server.config import LOCAL_USERS_FILE
from tests.support import ROOT, Vigil, write_config
from tests.test_users_cli import BOB_PW, changed, me, user
from tests.wire import Remote


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Vigil, Path]]:
    config = write_config(tmp_path, users={"alice": "operator"})
    vigil = Vigil(config)
    changed(vigil, config, "add", "bob", password=BOB_PW)
    yield vigil, config
    vigil.stop()


def enrol(
    config: Path, name: str, wrong: bool = False
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``user totp NAME``, answered with the current code (or a wrong one); and the secret."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--config", str(config), "user", "totp", name],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    lines = []
    while not (line := proc.stdout.readline()).startswith("otpauth://"):
        assert line, f"no otpauth:// URI in {lines}"
        lines.append(line)
    totp = pyotp.parse_uri(line.strip())
    assert isinstance(totp, pyotp.TOTP) and totp.name == name and totp.issuer == "vigil"
    code = totp.now() if not wrong else f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    out, err = proc.communicate(code + "\n", timeout=30)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, line + out, err)
    return done, totp.secret


def test_enrol_log_in_with_a_code_then_turn_it_off(running: tuple[Vigil, Path]) -> None:
    vigil, config = running
    with Remote.of(vigil) as before:
        assert before.me("bob", BOB_PW).status == 200  # a session with the password alone
        since = len(vigil.log())
        done, secret = enrol(config, "bob")
        assert done.returncode == 0, done.stderr
        assert "█" in done.stdout or "▀" in done.stdout  # the QR code, on the terminal
        assert "user bob: second factor on" in done.stdout
        vigil.wait_for_log("reloaded", since)
        ended = before.me("bob", BOB_PW)  # the account changed: that session ended
        assert ended.status == 401 and "your account changed" in ended.json()["error"]
    users_file = config.parent / LOCAL_USERS_FILE
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert f'totp = "{secret}"' in users_file.read_text()
    assert secret not in vigil.log()
    time.sleep(2.1)  # the ended header yields to a prompt only after 2 s: a new one now
    assert me(vigil, "bob", BOB_PW) == 401  # the password alone is not enough now
    code = pyotp.TOTP(secret).now()
    assert me(vigil, "bob", BOB_PW + code) == 200
    assert me(vigil, "bob", BOB_PW + code) == 200  # the same header: the same session
    assert "TOTP" in user(config, "list").stdout.splitlines()[1]

    changed(vigil, config, "totp", "bob", "--off")
    assert 'totp = "' not in users_file.read_text()
    assert me(vigil, "bob", BOB_PW) == 200
    off_again = user(config, "totp", "bob", "--off")
    assert off_again.returncode == 1 and "'bob' has no second factor" in off_again.stderr


def test_a_wrong_code_changes_nothing(running: tuple[Vigil, Path]) -> None:
    vigil, config = running
    users_file = config.parent / LOCAL_USERS_FILE
    before = users_file.read_text()
    done, _ = enrol(config, "bob", wrong=True)
    assert done.returncode == 1
    assert (
        done.stderr.strip() == "vigil: that is not the current code: nothing changed (run it again)"
    )
    assert users_file.read_text() == before
    assert me(vigil, "bob", BOB_PW) == 200
    in_config = user(config, "totp", "alice")
    assert in_config.returncode == 1 and "config.toml" in in_config.stderr


def test_logout_ends_a_persons_sessions_in_the_running_vigil(running: tuple[Vigil, Path]) -> None:
    vigil, config = running
    with Remote.of(vigil) as alice, Remote.of(vigil) as bob:
        assert alice.me("alice", "ecila-pw").status == 200
        assert bob.me("bob", BOB_PW).status == 200
        out = changed(vigil, config, "logout", "alice")
        assert "alice's sessions begun before now end at the reload" in out
        time.sleep(0.3)
    ended = Remote.of(vigil).me("alice", "ecila-pw")
    assert ended.status == 401
    assert ended.json()["error"] == (
        "signed out: ended by an operator (vigil user logout); log in again"
    )
    assert me(vigil, "bob", BOB_PW) == 200  # nobody else
    time.sleep(2.1)
    assert me(vigil, "alice", "ecila-pw") == 200  # she logs in again
    changed(vigil, config, "logout", "bob")  # a second entry; alice's new session stays
    assert me(vigil, "alice", "ecila-pw") == 200
    assert "session_end" in (config.parent / "audit.jsonl").read_text()
    unknown = user(config, "logout", "nobody")
    assert unknown.returncode == 1 and "no user 'nobody'" in unknown.stderr
