"""End-to-end: signals (HUP reload, TERM shutdown), the command line and the first run."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server.people.auth import verify_password
from tests.support import Vigil, free_port, server_cmd, write_config
from tests.wire import Remote, request

ALICE = {"alice": "operator"}


# -- SIGHUP ------------------------------------------------------------------------


def test_sighup_adds_a_user_without_dropping_connections(start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(users={**ALICE, "bob": "operator"})
    fresh = Remote.of(vigil, keep_alive=False)  # each request on a new connection
    assert fresh.me("vera").status == 401
    with Remote.of(vigil) as keep:
        assert keep.me().status == 200

        write_config(
            vigil.config.parent, {"http": {"port": vigil.port}}, users={**ALICE, "vera": "viewer"}
        )
        mark = len(vigil.log())
        vigil.signal(signal.SIGHUP)
        vigil.wait_for_log(r"reload", mark)

        assert fresh.me("vera").json() == {"user": "vera", "role": "viewer"}
        assert fresh.me("bob").status == 401  # removed from the config
        reply = keep.me()  # the open connection still works
        assert reply.status == 200 and reply.json()["user"] == "alice"
        assert keep.reader.buf == b""  # and nothing came after the answer
    assert vigil.proc.poll() is None


BAD_RELOADS = {
    "invalid-toml": lambda text: text + "\nthis is not toml\n",
    "unknown-key": lambda text: text.replace("[http]\n", "[http]\nprot = 8080\n", 1),
    "plaintext-password": lambda text: re.sub(
        r'password = "scrypt\$[^"]*"', 'password = "hunter2"', text, count=1
    ),
}


@pytest.mark.parametrize("mutate", BAD_RELOADS.values(), ids=BAD_RELOADS.keys())
def test_sighup_with_a_bad_config_keeps_the_old_one(
    start_vigil: Callable[..., Vigil], mutate: Callable[[str], str]
) -> None:
    vigil = start_vigil(users=ALICE)
    fresh = Remote.of(vigil, keep_alive=False)
    with Remote.of(vigil) as keep:
        assert keep.me().status == 200
        good = vigil.config.read_text()
        vigil.config.write_text(mutate(good))
        mark = len(vigil.log())
        vigil.signal(signal.SIGHUP)
        line = vigil.wait_for_log(re.escape(str(vigil.config)), mark)
        assert "keep" in line.lower(), line
        assert "Traceback" not in vigil.log()
        assert fresh.me("alice").json()["user"] == "alice"
        assert keep.me().status == 200 and keep.reader.buf == b""
        # fixed again: the next HUP takes it
        vigil.config.write_text(good)
        mark = len(vigil.log())
        vigil.signal(signal.SIGHUP)
        vigil.wait_for_log(r"reloaded", mark)
        assert fresh.me("alice").status == 200


# -- SIGTERM ------------------------------------------------------------------------


@pytest.mark.parametrize("pipelined", [0, 2], ids=["alone", "after-pipelined"])
def test_sigterm_finishes_a_request_in_flight(
    start_vigil: Callable[..., Vigil], pipelined: int
) -> None:
    vigil = start_vigil(users=ALICE)
    body = b'{"text": "sent while the server stops"}'
    with Remote.of(vigil) as busy, Remote.of(vigil) as idle:
        assert idle.me().status == 200
        # a POST whose body is still arriving, alone or after pipelined requests
        before = [request("GET", "/api/me"), request("GET", "/api/users")][:pipelined]
        head = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        busy.send(b"".join(before) + request("POST", "/api/chat", head, body[:10]))
        time.sleep(0.2)
        vigil.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        time.sleep(0.3)
        busy.send(body[10:])
        answered = [busy.response() for _ in range(pipelined + 1)]
        assert busy.closed()  # answered, then closed
        assert idle.closed()  # the idle keep-alive connection is closed, with nothing sent
    assert [r.status for r in answered] == [200] * (pipelined + 1), answered
    assert answered[-1].json()["text"] == "sent while the server stops"
    assert vigil.proc.wait(timeout=2.5) == 0
    assert time.monotonic() - stopped_at < 2.0
    assert "Traceback" not in vigil.log()


def test_sigterm_exits_promptly_when_idle(start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(users=ALICE)
    assert Remote.of(vigil, keep_alive=False).me("alice").status == 200
    started = time.monotonic()
    vigil.signal(signal.SIGTERM)
    assert vigil.proc.wait(timeout=2.5) == 0
    assert time.monotonic() - started < 2.0


# -- the command line -----------------------------------------------------------------

BAD_CONFIGS = [
    ("unknown-key", lambda t: t.replace("[http]\n", "[http]\nprot = 8080\n", 1), "prot"),
    ("bad-port", lambda t: re.sub(r"\nport = \d+", '\nport = "eighty"', t, count=1), "port"),
    (
        "too-many-connections",
        lambda t: re.sub(r"max_connections = \d+", "max_connections = 5000", t),
        "max_connections",
    ),
    ("invalid-toml", lambda t: t + "\n[http\n", "config.toml"),
    (
        "missing-static-dir",
        lambda t: re.sub(r'static_dir = "[^"]*"', 'static_dir = "/nonexistent/vigil-static"', t),
        "static_dir",
    ),
    (
        "plaintext-password",
        lambda t: re.sub(r'password = "scrypt\$[^"]*"', 'password = "hunter2"', t, count=1),
        "password",
    ),
    ("bad-cidr", lambda t: t.replace('"127.0.0.0/8"', '"127.0.0.0/33"'), "allow"),
    ("bad-role", lambda t: t.replace('role = "operator"', 'role = "admin"', 1), "role"),
    ("unknown-section", lambda t: t + "\n[htp]\nport = 1\n", "htp"),
]


# `run` loads the config as check-config does: a few cases show it fails the same way
RUN_CASES = ("unknown-key", "invalid-toml", "missing-static-dir", "plaintext-password")


def bad_config(tmp_path: Path, mutate: Callable[[str], str]) -> Path:
    path = write_config(tmp_path, users=ALICE)
    path.write_text(mutate(path.read_text()))
    return path


def assert_one_clear_line(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_check_config_accepts_a_good_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, users=ALICE)
    result = server_cmd("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert str(path) in result.stdout and "ok" in result.stdout


@pytest.mark.parametrize(
    ("mutate", "key"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_check_config_rejects_a_bad_config(
    tmp_path: Path, mutate: Callable[[str], str], key: str
) -> None:
    path = bad_config(tmp_path, mutate)
    result = server_cmd("check-config", "--config", str(path))
    assert result.returncode == 1
    assert_one_clear_line(result.stderr, str(path), key)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [c[1:] for c in BAD_CONFIGS if c[0] in RUN_CASES],
    ids=[c[0] for c in BAD_CONFIGS if c[0] in RUN_CASES],
)
def test_run_with_a_bad_config_fails_in_one_line(
    tmp_path: Path, mutate: Callable[[str], str], key: str
) -> None:
    path = bad_config(tmp_path, mutate)
    result = server_cmd("--config", str(path))
    assert result.returncode != 0
    assert_one_clear_line(result.stderr, str(path), key)


def test_run_with_a_missing_config_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    result = server_cmd("--config", str(path))
    assert result.returncode != 0
    assert_one_clear_line(result.stderr, str(path))


def not_utf8(path: Path) -> None:
    """One byte of Latin-1 (é) in a comment on line 2: not UTF-8, so not TOML."""
    path.write_bytes(b"# vigil\n# caf\xe9\n" + path.read_bytes())


@pytest.mark.parametrize("command", [["check-config"], []], ids=["check-config", "run"])
def test_a_config_that_is_not_utf8_fails_in_one_line(tmp_path: Path, command: list[str]) -> None:
    path = write_config(tmp_path, users=ALICE)
    not_utf8(path)
    result = server_cmd(*command, "--config", str(path))
    assert result.returncode == 1
    assert_one_clear_line(result.stderr, f"vigil: {path}: line 2", "UTF-8")


def test_sighup_with_a_config_that_is_not_utf8_keeps_the_old_one(
    start_vigil: Callable[..., Vigil],
) -> None:
    vigil = start_vigil(users=ALICE)
    not_utf8(vigil.config)
    mark = len(vigil.log())
    vigil.signal(signal.SIGHUP)
    line = vigil.wait_for_log(re.escape(str(vigil.config)), mark)
    assert "keeping the running config" in line and "UTF-8" in line, line
    assert "Traceback" not in vigil.log()
    assert vigil.proc.poll() is None
    assert Remote.of(vigil, keep_alive=False).me("alice").status == 200


def test_an_audit_path_that_is_a_fifo_fails_in_one_line(tmp_path: Path) -> None:
    """Not a start that hangs reading it (the audit log reads its whole file at start)."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    path = write_config(tmp_path, {"audit": {"path": str(fifo)}}, users=ALICE)
    result = server_cmd("--config", str(path))
    assert result.returncode == 1
    assert_one_clear_line(result.stderr, f"[audit] path {fifo} is not a regular file")


def test_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        path = write_config(tmp_path, {"http": {"port": port}}, users=ALICE)
        result = server_cmd("--config", str(path))
    assert result.returncode != 0
    assert_one_clear_line(result.stderr, f"127.0.0.1:{port}")
    assert "in use" in result.stderr.lower()


def test_hash_password_reads_stdin_and_prints_one_line() -> None:
    first = server_cmd("hash-password", stdin="correct horse battery\n")
    second = server_cmd("hash-password", stdin="correct horse battery\n")
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scrypt$")
    assert first.stdout != second.stdout  # salted
    assert verify_password("correct horse battery", lines[0])
    assert not verify_password("correct horse batter", lines[0])
    assert "correct horse" not in first.stdout + first.stderr


def test_hash_password_refuses_an_empty_password() -> None:
    result = server_cmd("hash-password", stdin="\n")
    assert result.returncode != 0
    assert not result.stdout.strip()
    assert_one_clear_line(result.stderr, "empty")


def test_first_run_creates_an_operator_with_a_printed_password(
    start_vigil: Callable[..., Vigil],
) -> None:
    vigil = start_vigil(users={})
    output = vigil.log()
    user = re.search(r"user:\s+(\S+)", output)
    pw = re.search(r"password:\s+(\S+)", output)
    assert user and pw, output
    local = vigil.config.parent / "users.local.toml"
    assert local.exists()
    assert stat.S_IMODE(local.stat().st_mode) & 0o077 == 0  # only the owner can read it
    stored = local.read_text()
    assert "scrypt$" in stored and pw.group(1) not in stored
    fresh = Remote.of(vigil, keep_alive=False)
    assert fresh.me(user.group(1), pw.group(1)).json() == {
        "user": user.group(1),
        "role": "operator",
    }
    assert fresh.me(user.group(1), "admin").status == 401

    # a second start keeps that account and prints no password
    assert vigil.stop() == 0
    mark = len(vigil.log())
    again = Vigil(vigil.config)
    try:
        assert local.read_text() == stored
        assert pw.group(1) not in again.log()[mark:]
        assert Remote.of(again, keep_alive=False).me(user.group(1), pw.group(1)).status == 200
    finally:
        again.stop()
