"""config.toml validation: every error names the file and key, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import LOCAL_USERS_FILE, ConfigError, load

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


def test_local_users_file_adds_users(tmp_path: Path) -> None:
    path = write(tmp_path, USER)
    (tmp_path / LOCAL_USERS_FILE).write_text(
        USER.replace("auth.users", "users").replace("alice", "admin")
    )
    assert [u.name for u in load(path).auth.users] == ["alice", "admin"]
