"""Backup and restore without a running vigil: the archive, its manifest, what restore refuses.

A vigil's directory is made as vigil and its command line make it (users
file, ``add-device``, its own certificate, an audit log with a torn last
line), backed up with ``server.backup``, and restored through the command
line (``python -m server restore``) onto other directories. Every refusal
must be one line on stderr, a non-zero status, and no file changed
(``tree`` compares names, modes and contents before and after). The same
round trip against a running vigil is tests/test_backup_e2e.py; a device
agent that connects to the restored vigil, tests/sctp/test_backup_restore.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pwd
import subprocess
import tarfile
import threading
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server import __main__ as cli
from server import config as configmod
from server.backup import archive as backup
from server.backup.restore import relayout
from server.base import pidfile
from server.people import users
from server.web import certificate
from tests.support import ROOT, _hash, der_sha256, password, require, server_cmd, write_config

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
AUDIT = b'{"seq":1,"type":"chat"}\n{"seq":2,"type":"chat"}\n{"seq":3,"ty'  # a torn last line


def tree(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and directory under ``directory``: its mode and content."""
    out = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(directory))] = (
            st.st_mode,
            path.read_bytes() if path.is_file() else b"",
        )
    return out


def make_vigil(directory: Path) -> Path:
    """A vigil's directory as running it makes one; its config."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory, {"audit": {"path": "audit.jsonl"}}, {"alice": "operator"})
    users.save(directory, [configmod.Account("carol", _hash(password("carol")), "viewer")])
    assert cli.main(["--config", str(config), "add-device", "lamp-1"]) == 0
    certificate.ensure(directory)
    (directory / "audit.jsonl").write_bytes(AUDIT)
    return config


@pytest.fixture
def source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    config = make_vigil(tmp_path / "old")
    capsys.readouterr()
    return config


@pytest.fixture
def archive(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "vigil.tar.gz"
    backup.write(source, target, audit=True, now=NOW)
    return target


def members(archive: Path) -> dict[str, tuple[int, bytes]]:
    with tarfile.open(archive) as tar:
        out = {}
        for info in tar:
            f = tar.extractfile(info)
            assert f is not None
            out[info.name] = (info.mode, f.read())
        return out


def test_the_archive_holds_every_file_and_its_manifest_their_sha256(
    source: Path, archive: Path
) -> None:
    old = source.parent
    got = members(archive)
    assert list(got)[-1] == backup.MANIFEST
    expected = {
        "config/config.toml": (0o640, source.read_bytes()),
        "state/users.local.toml": (0o600, (old / "users.local.toml").read_bytes()),
        "state/devices.local.toml": (0o600, (old / "devices.local.toml").read_bytes()),
        "state/devices.local/lamp-1.secret": (
            0o600,
            (old / "devices.local/lamp-1.secret").read_bytes(),
        ),
        "state/tls.local.crt": (0o644, (old / "tls.local.crt").read_bytes()),
        "state/tls.local.key": (0o600, (old / "tls.local.key").read_bytes()),
        "state/audit.jsonl": (0o600, AUDIT.rpartition(b"\n")[0] + b"\n"),  # whole lines only
    }
    assert {k: v for k, v in got.items() if k != backup.MANIFEST} == expected
    manifest = json.loads(got[backup.MANIFEST][1])
    assert manifest["format"] == "vigil-backup" and manifest["version"] == 1
    assert manifest["vigil"] == backup.vigil_version() != "unknown"
    assert manifest["created"] == "2026-12-03T12:00:00Z"
    listed = {m["name"]: m for m in manifest["members"]}
    assert set(listed) == set(expected)
    for name, (_mode, data) in expected.items():
        assert listed[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert listed[name]["size"] == len(data)
    assert listed["state/tls.local.key"]["kind"] == "secret"
    assert listed["config/config.toml"]["kind"] == "config"


def test_the_audit_log_only_when_asked(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-audit.tar.gz"
    done = backup.write(source, target, audit=False, now=NOW)
    assert done.audit_files == 0 and done.files == 6
    assert not any("audit" in name for name in members(target))


def test_the_file_is_0600_from_its_creation_and_never_overwritten(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "b.tar.gz"
    seen: list[int] = []
    tarinfo = backup._tarinfo

    def watch(*args: object) -> tarfile.TarInfo:
        seen.append(target.stat().st_mode & 0o777)  # before the first byte is written
        return tarinfo(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(backup, "_tarinfo", watch)
    old = os.umask(0)
    try:
        backup.write(source, target, audit=False, now=NOW)
    finally:
        os.umask(old)
    assert seen and set(seen) == {0o600}
    assert target.stat().st_mode & 0o777 == 0o600
    before = target.read_bytes()
    done = server_cmd("backup", str(target), "--config", str(source))
    assert done.returncode == 1 and target.read_bytes() == before
    assert done.stderr == f"vigil: {target} exists already: give a new file name\n"


def test_a_path_that_leaves_its_directory_is_refused_at_backup(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"tls": {"cert": "../x.crt", "key": "../x.key"}})
    done = server_cmd("backup", str(tmp_path / "b.tar.gz"), "--config", str(config))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "[tls] cert" in done.stderr and "leaves the directory" in done.stderr
    assert not (tmp_path / "b.tar.gz").exists()


# -- damaged and foreign archives: refused, one line, nothing changed


def test_a_flipped_byte_is_refused_unless_nothing_restored_depends_on_it(archive: Path) -> None:
    """Every byte flipped (one bit of it, then all eight): refused, or (the gzip header's
    FTEXT, MTIME, XFL, OS; a bit deflate ignores) what restore would write is unchanged."""
    data = archive.read_bytes()
    good = backup.read_archive(io.BytesIO(data))
    expected = {n: f.read() for n, f in good.content.items()}
    good.close()
    passed = []
    for mask in (0x01, 0xFF):
        for at in range(len(data)):
            bad = bytearray(data)
            bad[at] ^= mask
            try:
                staged = backup.read_archive(io.BytesIO(bytes(bad)))
            except backup.BackupError as e:
                assert str(e).startswith(("damaged", "not a vigil backup")), (at, e)
                continue
            assert {n: f.read() for n, f in staged.content.items()} == expected, at
            staged.close()
            passed.append((at, mask))
    assert {at for at, _mask in passed} >= set(range(4, 10))  # MTIME, XFL, OS
    assert len(passed) < 20, passed  # of 2 x ~2,500 flips


def test_a_truncated_archive_is_refused(archive: Path) -> None:
    data = archive.read_bytes()
    for length in range(len(data)):
        with pytest.raises(backup.BackupError) as e:
            backup.read_archive(io.BytesIO(data[:length]))
        assert str(e.value).startswith("damaged" if length >= 2 else "not a vigil backup")


def tar_gz(files: dict[str, bytes], compress: bool = True) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w") as tar:
        for name, data in files.items():
            tar.addfile(_info(name, data), io.BytesIO(data))
    return out.getvalue()


def _info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def rewritten(archive: Path, change: dict[str, object], extra: dict[str, bytes]) -> bytes:
    """``archive`` with its manifest's fields changed and ``extra`` members added."""
    got = members(archive)
    manifest = json.loads(got.pop(backup.MANIFEST)[1]) | change
    files = {name: data for name, (_mode, data) in got.items()} | extra
    return tar_gz({**files, backup.MANIFEST: json.dumps(manifest).encode()})


FOREIGN = {
    "a text file": (lambda a: b"hello\n", "not a vigil backup (not a gzip-compressed tar"),
    "empty": (lambda a: b"", "not a vigil backup (not a gzip-compressed tar"),
    "plain gzip": (lambda a: gzip.compress(b"x" * 1000), "not a vigil backup (not a tar"),
    "another tar.gz": (lambda a: tar_gz({"notes.txt": b"hi"}), "not a vigil backup (no vigil"),
    "uncompressed": (lambda a: gzip.decompress(a.read_bytes()), "not a vigil backup (not a gzip"),
    "another format": (
        lambda a: rewritten(a, {"format": "ha-backup"}, {}),
        "not a vigil backup (vigil-backup.json says another format)",
    ),
    "format version 2": (
        lambda a: rewritten(a, {"version": 2}, {}),
        "a vigil backup of format version 2; this vigil reads version 1",
    ),
    "a member not in the manifest": (
        lambda a: rewritten(a, {}, {"state/evil.toml": b"x"}),
        "damaged: state/evil.toml is in the archive or its manifest, not both",
    ),
    "a member that climbs out": (
        lambda a: rewritten(
            a, {"members": [{"name": "state/../x", "anchor": "state", "path": "../x"}]}, {}
        ),
        "damaged: vigil-backup.json lists a member it cannot describe",
    ),
}


@pytest.mark.parametrize("case", FOREIGN)
def test_a_damaged_or_foreign_archive_is_refused_and_nothing_changes(
    case: str, archive: Path, tmp_path: Path
) -> None:
    make, message = FOREIGN[case]
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(make(archive))
    new = tmp_path / "new"
    new.mkdir()
    config = new / "config.toml"
    config.write_text(f'[http]\nstatic_dir = "{ROOT / "static"}"\n')
    before = tree(new)
    done = server_cmd("restore", str(bad), "--config", str(config))
    assert done.returncode == 1
    assert done.stderr.startswith(f"vigil: {bad}: {message}"), done.stderr
    assert done.stderr.endswith("; nothing was changed\n") and done.stderr.count("\n") == 1
    assert tree(new) == before


# -- restoring


def installed(root: Path) -> Path:
    """A fresh install's layout under ``root``: etc/vigil/config.toml, state in var/lib/vigil."""
    etc = root / "etc/vigil"
    etc.mkdir(parents=True)
    config = etc / "config.toml"
    config.write_text(
        f'[http]\nstatic_dir = "{ROOT / "static"}"  # installed\n\n'
        f'[state]\ndir = "{root / "var/lib/vigil"}"\n'
    )
    return config


def test_restore_onto_a_fresh_install_brings_the_same_people_devices_and_certificate(
    source: Path, archive: Path, tmp_path: Path
) -> None:
    old_cfg = configmod.load(source)
    config = installed(tmp_path / "new")
    done = server_cmd("restore", str(archive), "--config", str(config))
    assert done.returncode == 0, done.stderr
    state = tmp_path / "new/var/lib/vigil"
    assert f"state {state}" in done.stdout and "restored 7 files" in done.stdout
    assert "2 user(s), 1 device(s)" in done.stdout
    cfg = configmod.load(config)
    assert cfg.state.dir == state
    assert [(u.name, u.password, u.role) for u in cfg.auth.users] == [
        (u.name, u.password, u.role) for u in old_cfg.auth.users
    ]
    assert cfg.control.devices == old_cfg.control.devices  # ids and secrets
    fingerprint = der_sha256(source.parent / "tls.local.crt")
    assert der_sha256(state / "tls.local.crt") == fingerprint and fingerprint in done.stdout
    assert (state / "audit.jsonl").read_bytes() == AUDIT.rpartition(b"\n")[0] + b"\n"
    modes = {
        config: 0o640,
        state / "users.local.toml": 0o600,
        state / "devices.local.toml": 0o600,
        state / "devices.local": 0o700,
        state / "devices.local/lamp-1.secret": 0o600,
        state / "tls.local.key": 0o600,
        state / "tls.local.crt": 0o644,
        state: 0o750,
    }
    assert {p: p.stat().st_mode & 0o777 for p in modes} == modes
    # the config is the backed-up one but for this machine's layout
    restored, archived = tomllib.loads(config.read_text()), tomllib.loads(source.read_text())
    assert restored["state"] == {"dir": str(state)}
    assert restored["http"].pop("static_dir") == str(ROOT / "static")
    archived["http"].pop("static_dir")
    assert restored | {"state": {}} == archived | {"state": {}}
    assert not [p for p in state.rglob("*restore*")]  # no temporary file left


def test_restore_refuses_a_machine_with_state_of_its_own_unless_forced(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = installed(tmp_path / "new")
    state = tmp_path / "new/var/lib/vigil"
    users.save(state, [configmod.Account("admin", _hash(password("admin")), "operator")])
    certificate.ensure(state)
    (state / "devices.local.toml").write_text("")  # no devices here; the backup has one
    before = tree(tmp_path / "new")
    done = server_cmd("restore", str(archive), "--config", str(config))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "this machine has state of its own" in done.stderr and "--force" in done.stderr
    assert tree(tmp_path / "new") == before
    done = server_cmd("restore", str(archive), "--force", "--config", str(config))
    assert done.returncode == 0, done.stderr
    cfg = configmod.load(config)
    assert sorted(u.name for u in cfg.auth.users) == ["alice", "carol"]  # admin is gone
    assert [d.id for d in cfg.control.devices] == ["lamp-1"]
    # the same archive again: nothing of its own any more
    again = server_cmd("restore", str(archive), "--config", str(config))
    assert again.returncode == 0, again.stderr


def test_forced_restore_removes_the_state_files_the_backup_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    config = write_config(old, {"audit": {"path": "audit.jsonl"}}, {"alice": "operator"})
    archive = tmp_path / "b.tar.gz"
    backup.write(config, archive, audit=False, now=NOW)  # no users file, no certificate
    new = installed(tmp_path / "new")
    state = tmp_path / "new/var/lib/vigil"
    users.save(state, [configmod.Account("admin", _hash(password("admin")), "operator")])
    certificate.ensure(state)
    assert cli.main(["restore", str(archive), "--force", "--config", str(new)]) == 0
    out = capsys.readouterr().out
    for name in ("users.local.toml", "tls.local.crt", "tls.local.key"):
        assert not (state / name).exists() and f"removed {state / name}" in out
    assert [u.name for u in configmod.load(new).auth.users] == ["alice"]


def test_restore_refuses_while_vigil_runs_there(archive: Path, tmp_path: Path) -> None:
    config = installed(tmp_path / "new")
    state = tmp_path / "new/var/lib/vigil"
    state.mkdir(parents=True)
    fd = pidfile.hold(state)
    try:
        before = tree(tmp_path / "new")
        done = server_cmd("restore", str(archive), "--config", str(config))
        assert tree(tmp_path / "new") == before
    finally:
        pidfile.release(state, fd)
    assert done.returncode == 1
    assert f"vigil (pid {os.getpid()}) runs on {state}: stop it first" in done.stderr


def test_restored_as_root_the_files_are_the_services(archive: Path, tmp_path: Path) -> None:
    """The service's user ``vigil`` owns them if it exists, else the state dir's owner;
    the config stays root's, in the service's group (as ``make install`` leaves it)."""
    require(os.geteuid() == 0, "restore as root needs root")
    config = installed(tmp_path / "new")
    state = tmp_path / "new/var/lib/vigil"
    state.mkdir(parents=True)
    os.chown(state, 4242, 4243)
    try:
        service = pwd.getpwnam("vigil")
        uid, gid = service.pw_uid, service.pw_gid
    except KeyError:
        uid, gid = 4242, 4243
    done = server_cmd("restore", str(archive), "--config", str(config))
    assert done.returncode == 0, done.stderr
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in state.rglob("*")}
    files = ("users.local.toml", "devices.local.toml", "devices.local", "lamp-1.secret")
    files += ("tls.local.crt", "tls.local.key", "audit.jsonl")
    assert owners == dict.fromkeys(files, (uid, gid))
    assert (config.stat().st_uid, config.stat().st_gid) == (0, gid)


def test_restore_with_no_config_here_takes_the_backed_up_one(
    source: Path, archive: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bare/config.toml"
    done = server_cmd("restore", str(archive), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert config.read_bytes() == source.read_bytes()
    assert (tmp_path / "bare/users.local.toml").exists()  # [state] dir "." beside it


def test_the_installed_command_stays_root_for_backup_and_restore(tmp_path: Path) -> None:
    """dist/vigil.in: run by root, ``vigil`` becomes the service's user (setpriv) for every
    command but these two, which write the person's archive and /etc/vigil's config."""
    require(os.geteuid() == 0, "the command's root branch needs root")
    lib, bin_dir = tmp_path / "lib", tmp_path / "bin"
    (lib / "venv/bin").mkdir(parents=True)
    bin_dir.mkdir()
    fake = '#!/bin/sh\necho {} "$@"\n'
    (lib / "venv/bin/python").write_text(fake.format("python uid=$(id -u)"))
    (bin_dir / "setpriv").write_text(fake.format("setpriv"))
    command = tmp_path / "vigil"
    text = (ROOT / "dist/vigil.in").read_text().replace("@LIBDIR@", str(lib))
    command.write_text(text.replace("@SYSCONFDIR@", "/etc/vigil"))
    for f in (lib / "venv/bin/python", bin_dir / "setpriv", command):
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def run(*args: str) -> str:
        return subprocess.run([command, *args], env=env, capture_output=True, text=True).stdout

    config = "-P -m server --config /etc/vigil/config.toml"
    assert run("backup", "/root/b.tar.gz") == f"python uid=0 {config} backup /root/b.tar.gz\n"
    assert (
        run("restore", "b.tar.gz", "--force") == f"python uid=0 {config} restore b.tar.gz --force\n"
    )
    assert run("user", "list").startswith("setpriv --reuid=vigil --regid=vigil")
    assert run().startswith("setpriv --reuid=vigil")


# -- the layout keys


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ('[state]\ndir = "."  # here\n[http]\nport = 1\n', {"state": {"dir": "/s"}}),
        ("[http]\nport = 1\n", {"state": {"dir": "/s"}}),
        ("[http]\n[state]\n[[auth.users]]\ndir = 1\n", {"state": {"dir": "/s"}}),
    ],
)
def test_relayout_sets_the_key_where_it_is_or_adds_it(text: str, expect: dict[str, object]) -> None:
    out = tomllib.loads(relayout(text, {("state", "dir"): "/s"}))
    assert out["state"] == expect["state"]


def test_relayout_refuses_a_key_it_cannot_rewrite() -> None:
    with pytest.raises(backup.BackupError, match=r"\[state\] dir"):
        relayout('state.dir = "."\n', {("state", "dir"): "/s"})


# -- a running vigil's files, changing while they are read


@pytest.fixture
def churn() -> Iterator[threading.Event]:
    stop = threading.Event()
    yield stop
    stop.set()


def test_a_file_replaced_by_rename_is_read_whole(
    source: Path, tmp_path: Path, churn: threading.Event
) -> None:
    state = source.parent
    versions = [
        [configmod.Account("carol", _hash(password("carol")), "viewer")],
        [configmod.Account(f"u{i}", _hash(password("carol")), "operator") for i in range(30)],
    ]
    texts = {users.render(v).encode() for v in versions}

    def flip() -> None:
        n = 0
        while not churn.is_set():
            users.save(state, versions[n % 2])
            n += 1

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    tries = 0
    for i in range(20):
        try:
            backup.write(source, tmp_path / f"{i}.tar.gz", audit=False, now=NOW)
        except backup.BackupError as e:  # never a quiet moment: said, not a torn file
            assert "kept changing" in str(e)
            tries += 1
            continue
        assert members(tmp_path / f"{i}.tar.gz")["state/users.local.toml"][1] in texts
    churn.set()
    thread.join()
    assert tries < 20


def test_the_audit_log_is_read_up_to_its_last_whole_line_while_appended(
    source: Path, tmp_path: Path, churn: threading.Event
) -> None:
    log = source.parent / "audit.jsonl"
    log.write_bytes(b"")

    def append() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        n = 0
        while not churn.is_set():
            line = json.dumps({"seq": n, "text": "x" * (n % 200)}).encode() + b"\n"
            os.write(fd, line[:7])  # a record in two writes: a reader may see half of it
            os.write(fd, line[7:])
            n += 1
        os.close(fd)

    thread = threading.Thread(target=append, daemon=True)
    thread.start()
    for i in range(10):
        backup.write(source, tmp_path / f"{i}.tar.gz", audit=True, now=NOW)
        got = members(tmp_path / f"{i}.tar.gz")["state/audit.jsonl"][1]
        assert got == b"" or got.endswith(b"\n")
        assert log.read_bytes().startswith(got)
        assert all(json.loads(line) for line in got.splitlines())
    churn.set()
    thread.join()
