"""config.toml validation: every error names the file and key, in one line."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace
from pathlib import Path

import pytest

from server.config import (
    LOCAL_DEVICES_FILE,
    LOCAL_USERS_FILE,
    ConfigError,
    DeviceKey,
    load,
    restart_needed,
)

ROOT = Path(__file__).resolve().parent.parent
USER = '[[auth.users]]\nname = "alice"\npassword = "scrypt$1$1$1$a$b"\nrole = "operator"\n'


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "static").mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid() -> None:
    cfg = load(ROOT / "config.toml")
    assert cfg.http.port == 8080 and cfg.auth.max_users == 10
    assert cfg.http.static_dir == (ROOT / "static").resolve()
    assert cfg.presence.keepidle == 1 and cfg.control.port == 9900


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, USER))
    assert cfg.http.max_connections == 768 and cfg.http.backend == "select"
    assert cfg.audit.path == tmp_path / "var/audit.jsonl"
    assert [u.name for u in cfg.auth.users] == ["alice"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[http]\nport = 70000\n", "[http] port: must be an integer from 0 to 65535"),
        ("[http]\nport = true\n", "[http] port"),
        ("[http]\nprot = 1\n", "[http] unknown key 'prot'"),
        ("[htp]\n", "unknown section [htp]"),
        ('[http]\nbackend = "poll"\n', "[http] backend: must be one of select, epoll"),
        ('[http]\nstatic_dir = "nope"\n', "[http] static_dir"),
        ('[auth]\nallow = ["10.0.0.0/33"]\n', "[auth] allow: bad CIDR range"),
        ("[auth]\nmax_users = 0\n", "[auth] max_users"),
        ('[auth]\nrealm = "a\\nb"\n', "[auth] realm: must be printable"),
        ('[[auth.users]]\nname = "a"\npassword = "plain"\nrole = "operator"\n', "hash-password"),
        ('[[auth.users]]\nname = "a"\npassword = "scrypt$x"\nrole = "admin"\n', "role"),
        (USER + USER, "user 'alice' is defined twice"),
        ("this is = = not toml", "invalid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "none.toml")


LOCAL_USER = USER.replace("auth.users", "users").replace("alice", "admin")


def local_users_file(tmp_path: Path, data: bytes = LOCAL_USER.encode(), mode: int = 0o600) -> Path:
    """users.local.toml in ``tmp_path`` with ``data``, mode ``mode`` (vigil writes 0600)."""
    local = tmp_path / LOCAL_USERS_FILE
    local.write_bytes(data)
    os.chmod(local, mode)
    return local


def test_local_users_file_adds_users(tmp_path: Path) -> None:
    path = write(tmp_path, USER)
    local_users_file(tmp_path)
    assert [u.name for u in load(path).auth.users] == ["alice", "admin"]
    os.chmod(tmp_path / LOCAL_USERS_FILE, 0o400)  # read-only for its owner: fine too
    assert [u.name for u in load(path).auth.users] == ["alice", "admin"]


@pytest.mark.parametrize("which", ["config", "users"])
def test_a_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path, which: str) -> None:
    """One byte of Latin-1 in a comment (tomllib raises UnicodeDecodeError, not its own error)."""
    latin1 = "# caf\xe9\n".encode("latin-1")
    path = write(tmp_path, USER)
    bad = path
    if which == "config":
        path.write_bytes(b"# vigil\n" + latin1 + USER.encode())
    else:
        bad = local_users_file(tmp_path, latin1 + LOCAL_USER.encode())
    with pytest.raises(ConfigError) as e:
        load(path)
    message = str(e.value)
    assert message.startswith(f"{bad}: ") and "UTF-8" in message, message
    assert "line 2" in message if which == "config" else "line 1" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644], ids=oct)
def test_a_users_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, USER)
    local = local_users_file(tmp_path, mode=mode)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value) == f"{local}: other users may read it (chmod 600 {local})"


def test_a_dangling_users_file_link_is_an_error(tmp_path: Path) -> None:
    """Not "no users" (the first run would make an admin and replace the link)."""
    path = write(tmp_path, USER)
    local = tmp_path / LOCAL_USERS_FILE
    local.symlink_to(tmp_path / "elsewhere" / "users.toml")
    with pytest.raises(ConfigError) as e:
        load(path)
    message = str(e.value)
    assert message.startswith(f"{local}: ") and str(tmp_path / "elsewhere") in message, message
    assert "\n" not in message
    assert local.is_symlink()  # nothing replaced


def test_a_users_file_link_to_a_private_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, USER)
    (tmp_path / "elsewhere").mkdir()
    target = local_users_file(tmp_path / "elsewhere")
    (tmp_path / LOCAL_USERS_FILE).symlink_to(target)
    assert [u.name for u in load(path).auth.users] == ["alice", "admin"]


def audit_target(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "audit.fifo")
        return tmp_path / "audit.fifo"
    if kind == "directory":
        (tmp_path / "audit.d").mkdir()
        return tmp_path / "audit.d"
    return Path(kind)


@pytest.mark.parametrize("kind", ["/dev/full", "/dev/zero", "/dev/null", "fifo", "directory"])
def test_an_audit_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """The audit log reads its whole file at start: a device or a FIFO would hang it."""
    target = audit_target(tmp_path, kind)
    path = write(tmp_path, f'[audit]\npath = "{target}"\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value) == f"{path}: [audit] path {target} is not a regular file"


def test_an_audit_path_may_be_missing_or_a_link_to_a_file(tmp_path: Path) -> None:
    assert load(write(tmp_path, '[audit]\npath = "var/new.jsonl"\n')).audit.path.name == "new.jsonl"
    (tmp_path / "real.jsonl").write_text("")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    assert load(write(tmp_path, '[audit]\npath = "link.jsonl"\n')).audit.path.name == "link.jsonl"


SECRET = "ab" * 32


def secret_file(tmp_path: Path, name: str, text: str = SECRET, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return name


def device(dev_id: str, secret: str, table: str = "control.devices") -> str:
    return f'[[{table}]]\nid = "{dev_id}"\nsecret_file = "{secret}"\n'


def test_devices_from_config_and_local_file(tmp_path: Path) -> None:
    path = write(tmp_path, device("lamp-1", secret_file(tmp_path, "one.secret")))
    secret_file(tmp_path, "two.secret", "cd" * 16)  # 128 bits: the least allowed
    (tmp_path / LOCAL_DEVICES_FILE).write_text(device("lamp-2", "two.secret", "devices"))
    cfg = load(path).control
    assert cfg.devices == (
        DeviceKey("lamp-1", bytes.fromhex(SECRET)),
        DeviceKey("lamp-2", bytes.fromhex("cd" * 16)),
    )
    assert SECRET not in repr(cfg)  # a secret never reaches a log line by repr
    assert cfg.allow == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert cfg.hello_timeout == 5.0


def test_a_reload_names_the_keys_only_a_restart_applies(tmp_path: Path) -> None:
    """Restart-only keys are declared once, in the schema; everything else reloads."""
    old = load(write(tmp_path, ""))
    key = DeviceKey("x", b"k" * 16)
    control = replace(old.control, devices=(key,), allow=(), hello_timeout=1.0, lease_idle=9.0)
    assert restart_needed(old, replace(old, control=control)) == []
    http = replace(old.http, port=1, max_body=1)
    tls = replace(old.tls, port=2)
    changed = replace(old, http=http, tls=tls, control=replace(control, streams=9))
    assert restart_needed(old, changed) == ["[http] port", "[control] streams", "[tls] port"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (device("bad id", "s"), "[[control.devices]] #1: id must be 1-64 characters"),
        ('[[control.devices]]\nid = "d"\n', "(d): secret_file must name the file"),
        ('[[control.devices]]\nid = "d"\nsecret = "ab"\n', "unknown key 'secret'"),
        (device("d", "missing.secret"), "(d): secret_file"),
        (device("d", "short.secret"), "the secret has 64 bits, at least 128"),
        (device("d", "nothex.secret"), "must hold the secret as hex digits"),
        (device("d", "open.secret"), "other users may read it (chmod 600"),
        (device("d", "ok.secret") + device("d", "ok.secret"), "device 'd' is declared twice"),
        ('[control]\nallow = ["1.2.3.4/40"]\n', "[control] allow: bad CIDR range"),
        ("[control]\nhello_timeout = 0\n", "[control] hello_timeout"),
    ],
)
def test_device_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    secret_file(tmp_path, "short.secret", "ab" * 8)
    secret_file(tmp_path, "nothex.secret", "not a secret")
    secret_file(tmp_path, "open.secret", mode=0o644)
    secret_file(tmp_path, "ok.secret")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_local_devices_file_errors_name_that_file(tmp_path: Path) -> None:
    path = write(tmp_path, device("d", secret_file(tmp_path, "a.secret")))
    local = tmp_path / LOCAL_DEVICES_FILE
    local.write_text(device("d", "a.secret", "devices"))
    with pytest.raises(ConfigError, match="device 'd' is declared twice"):
        load(path)
    local.write_text('[[devices]]\nid = "e"\n')
    with pytest.raises(ConfigError, match=f"{local}: \\[\\[devices\\]\\] #1 \\(e\\)"):
        load(path)
