"""People from the command line: ``python -m server user add|passwd|del|list`` against a real vigil.

The CLI writes users.local.toml in the state dir and sends the running
server SIGHUP (found through its pid file); the test then logs in over
HTTP as the person would.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.base.pidfile import PID_FILE
from server.config import LOCAL_USERS_FILE, load
from server.people import users
from tests.support import ROOT, Vigil, require, server_cmd, write_config
from tests.wire import Remote

BOB_PW = "correct horse battery"


def user(config: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m server user ARGS`` with ``password`` on stdin (a pipe, not a tty)."""
    return subprocess.run(
        [sys.executable, "-m", "server", "--config", str(config), "user", *args],
        cwd=ROOT,
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )


def me(vigil: Vigil, name: str, pw: str) -> int:
    with Remote.of(vigil) as client:
        return client.me(name, pw).status


def changed(vigil: Vigil, config: Path, *args: str, password: str | None = None) -> str:
    """Run a user command that changes something; wait until vigil has reloaded; its stdout."""
    since = len(vigil.log())
    done = user(config, *args, password=password)
    assert done.returncode == 0, done.stderr
    assert f"told vigil (pid {vigil.proc.pid}) to reload (SIGHUP)" in done.stdout
    vigil.wait_for_log("reloaded", since)
    return done.stdout


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Vigil, Path]]:
    config = write_config(tmp_path, users={"alice": "operator"})
    vigil = Vigil(config)
    yield vigil, config
    vigil.stop()


def test_add_passwd_del_against_the_running_server(running: tuple[Vigil, Path]) -> None:
    vigil, config = running
    assert me(vigil, "bob", BOB_PW) == 401

    out = changed(vigil, config, "add", "bob", "--role", "viewer", password=BOB_PW)
    assert "user bob added (viewer)" in out
    assert me(vigil, "bob", BOB_PW) == 200
    with Remote.of(vigil) as client:
        assert client.me("bob", BOB_PW).json() == {"user": "bob", "role": "viewer"}
    users_file = config.parent / LOCAL_USERS_FILE
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert BOB_PW not in users_file.read_text()
    assert not [n for n in os.listdir(config.parent) if n.startswith(f".{LOCAL_USERS_FILE}")]

    listed = user(config, "list")
    assert listed.returncode == 0
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows == [
        ["alice", "operator", "-", "config.toml"],
        ["bob", "viewer", "-", LOCAL_USERS_FILE],
    ]

    new_pw = "a different long one"
    changed(vigil, config, "passwd", "bob", password=new_pw)
    assert me(vigil, "bob", BOB_PW) == 401
    assert me(vigil, "bob", new_pw) == 200
    assert "viewer" in user(config, "list").stdout.splitlines()[1]  # the role is kept

    changed(vigil, config, "del", "bob")
    assert me(vigil, "bob", new_pw) == 401
    assert me(vigil, "alice", "ecila-pw") == 200  # everyone else unaffected
    assert [line.split()[0] for line in user(config, "list").stdout.splitlines()] == ["alice"]


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "password refused: too short: a password has at least 10 characters"),
        ("my name is BOB, ok?", "password refused: a password must not contain the user name"),
        ("", "empty password"),
    ],
)
def test_weak_passwords_are_refused_and_nothing_changes(
    running: tuple[Vigil, Path], password: str, message: str
) -> None:
    vigil, config = running
    done = user(config, "add", "bob", password=password)
    assert done.returncode == 1
    assert done.stderr == f"vigil: {message}\n"
    assert not (config.parent / LOCAL_USERS_FILE).exists()
    assert "reloaded" not in vigil.log()


def test_mistakes_get_one_clear_line(running: tuple[Vigil, Path]) -> None:
    _vigil, config = running
    cases = [
        (("passwd", "alice"), "is declared in"),  # config.toml's people are edited there
        (("del", "nobody"), "no user 'nobody' (user list shows who there is)"),
        (("add", "bo:b"), "a user name has no ':', spaces or control characters"),
    ]
    for args, message in cases:
        done = user(config, *args, password=BOB_PW)
        assert done.returncode == 1, args
        assert done.stderr.startswith("vigil: ") and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1
    assert user(config, "add", "bob", password=BOB_PW).returncode == 0
    again = user(config, "add", "bob", password=BOB_PW)
    assert again.returncode == 1 and "exists already (user passwd bob" in again.stderr


def test_without_a_running_server_it_says_so_and_a_stale_pid_file_is_not_signalled(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, users={"alice": "operator"})
    done = user(config, "add", "bob", password=BOB_PW)
    assert "vigil is not running" in done.stdout and "reads the users when it starts" in done.stdout
    vigil = Vigil(config)
    pid = vigil.proc.pid
    assert (tmp_path / PID_FILE).read_text() == f"{pid}\n"
    vigil.signal(signal.SIGKILL)  # leaves its pid file behind
    vigil.stop()
    assert (tmp_path / PID_FILE).exists()
    done = user(config, "add", "carol", password="staple over the moon")
    assert done.returncode == 0 and "vigil is not running" in done.stdout
    again = Vigil(config)  # takes over the stale file, and removes it at a clean stop
    assert (tmp_path / PID_FILE).read_text() == f"{again.proc.pid}\n"
    assert again.stop() == 0
    assert not (tmp_path / PID_FILE).exists()


def test_a_full_disk_leaves_the_old_file_intact(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a small tmpfs needs root")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(state)], check=True)
    try:
        config = write_config(tmp_path, {"state": {"dir": "state"}}, users={"alice": "operator"})
        assert user(config, "add", "bob", password=BOB_PW).returncode == 0
        before = (state / LOCAL_USERS_FILE).read_bytes()
        with (state / "filler").open("wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        done = user(config, "add", "carol", password="staple over the moon")
        assert done.returncode == 1
        assert done.stderr == (
            f"vigil: {state / LOCAL_USERS_FILE}: cannot write (No space left on device);"
            " it is unchanged\n"
        )
        assert (state / LOCAL_USERS_FILE).read_bytes() == before
        assert sorted(os.listdir(state)) == ["filler", LOCAL_USERS_FILE]  # no temporary file
        assert [u.name for u in load(config).auth.users] == ["alice", "bob"]
    finally:
        subprocess.run(["umount", str(state)], check=True)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith("vigil: ") and stderr.count("\n") == 1, stderr
    return stderr


def start(config: Path) -> subprocess.CompletedProcess[str]:
    """``python -m server --config CONFIG`` expected to stop at once."""
    return server_cmd("--config", str(config))


def test_a_users_file_others_may_read_is_refused_until_chmod(tmp_path: Path) -> None:
    config = write_config(tmp_path, users={"alice": "operator"})
    assert user(config, "add", "bob", password=BOB_PW).returncode == 0
    local = tmp_path / LOCAL_USERS_FILE
    os.chmod(local, 0o644)
    words = f"vigil: {local}: other users may read it (chmod 600 {local})\n"
    listed = user(config, "list")
    assert listed.returncode == 1 and one_line(listed.stderr) == words
    started = start(config)
    assert started.returncode == 1 and one_line(started.stderr) == words
    os.chmod(local, 0o600)
    assert user(config, "list").returncode == 0


def test_a_dangling_users_file_link_is_an_error_and_nothing_is_replaced(tmp_path: Path) -> None:
    """Not "no users": the first run would make an admin and put a file where the link was."""
    config = write_config(tmp_path, users={})
    local = tmp_path / LOCAL_USERS_FILE
    target = tmp_path / "not-mounted" / "users.toml"
    local.symlink_to(target)
    started = start(config)
    assert started.returncode == 1
    assert one_line(started.stderr).startswith(f"vigil: {local}: ")
    assert str(target) in started.stderr
    assert "first run" not in started.stderr and "password" not in started.stderr
    added = user(config, "add", "bob", password=BOB_PW)
    assert added.returncode == 1 and one_line(added.stderr).startswith(f"vigil: {local}: ")
    assert local.is_symlink() and os.readlink(local) == str(target)  # the link is untouched
    assert not target.exists()
    assert sorted(os.listdir(tmp_path)) == ["config.toml", LOCAL_USERS_FILE]


def test_saving_never_replaces_a_dangling_link(tmp_path: Path) -> None:
    """Even without the config's check first (a race): the link stays, an error names it."""
    local = tmp_path / LOCAL_USERS_FILE
    local.symlink_to(tmp_path / "missing.toml")
    with pytest.raises(FileNotFoundError) as e:
        users.save(tmp_path, [])
    assert e.value.filename == str(local)
    assert local.is_symlink() and os.listdir(tmp_path) == [LOCAL_USERS_FILE]
