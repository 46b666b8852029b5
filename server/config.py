"""config.toml: a table from section and key to a validated, typed value.

Like boa's config.c, every accepted key is listed once, in ``_SCHEMA``, with
its type, default and check; unknown sections and keys are errors (a typo
must not silently fall back to a default). Every error names the file, the
key and what is wrong, in one line: ``ConfigError`` is the only exception
this module raises for bad input.

Users come from ``[[auth.users]]`` and from ``users.local.toml`` next to the
config file (written on first run by ``server.firstrun``); both use the same
schema. Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_USERS_FILE = "users.local.toml"
ROLES = ("operator", "viewer")


class ConfigError(Exception):
    """A config file is unreadable or invalid; str() is one line for stderr."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str  # "scrypt$..." hash string, never a plain password
    role: str


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str
    port: int
    static_dir: Path
    max_connections: int
    backend: str
    header_timeout: float
    keepalive_timeout: float
    max_target: int
    max_header_bytes: int
    max_body: int
    max_sse_buffer: int
    sse_heartbeat: float
    access_log: bool


@dataclass(frozen=True, slots=True)
class AuthConfig:
    realm: str
    max_users: int
    allow: tuple[Network, ...]
    users: tuple[User, ...]
    lockout_failures: int
    lockout_window: float
    hash_share_address: float
    hash_share_total: float


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    keepidle: int
    keepintvl: int
    keepcnt: int
    grace: float
    user_timeout_ms: int


@dataclass(frozen=True, slots=True)
class ControlConfig:
    enabled: bool
    host: str
    port: int
    streams: int
    heartbeat_ms: int
    path_max_retrans: int
    command_timeout: float


@dataclass(frozen=True, slots=True)
class AuditConfig:
    path: Path


@dataclass(frozen=True, slots=True)
class TlsConfig:
    enabled: bool
    port: int
    cert: Path | None  # None: this device's own, made on first run (server.certificate)
    key: Path | None
    handshake_timeout: float


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    http: HttpConfig
    auth: AuthConfig
    presence: PresenceConfig
    control: ControlConfig
    audit: AuditConfig
    tls: TlsConfig


# -- checks: each takes the raw TOML value and returns the typed one -------


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}")
        return v

    return check


def _num(lo: float, hi: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ValueError(f"must be a number from {lo} to {hi}")
        return float(v)

    return check


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty string")
    return v


def _path_or_empty(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError('must be a path (a string; "" for none)')
    return v


def _realm(v: Any) -> str:
    text = _str(v)
    if not text.isprintable() or '"' in text or "\\" in text:
        raise ValueError("must be printable text without quotes or backslashes")
    return text


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return str(v)

    return check


def _networks(v: Any) -> tuple[Network, ...]:
    if not isinstance(v, list):
        raise ValueError('must be a list of CIDR ranges, e.g. ["127.0.0.0/8"]')
    try:
        return tuple(ipaddress.ip_network(s, strict=False) for s in v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad CIDR range: {e}") from None


_SCHEMA: dict[str, dict[str, tuple[Any, Callable[[Any], Any]]]] = {
    "http": {
        "host": ("0.0.0.0", _str),
        "port": (8080, _int(0, 65535)),
        "static_dir": ("static", _str),
        "max_connections": (768, _int(8, 1000)),
        "backend": ("select", _choice("select", "epoll")),
        "header_timeout": (10.0, _num(0.1, 3600)),
        "keepalive_timeout": (60.0, _num(0.1, 86400)),
        "max_target": (4096, _int(64, 65536)),
        "max_header_bytes": (16384, _int(1024, 1048576)),
        "max_body": (65536, _int(0, 16 * 1048576)),
        "max_sse_buffer": (262144, _int(4096, 16 * 1048576)),
        "sse_heartbeat": (15.0, _num(0.1, 3600)),
        "access_log": (True, _bool),
    },
    "auth": {
        "realm": ("vigil", _realm),
        "max_users": (10, _int(1, 1000)),
        "allow": (["127.0.0.0/8", "::1/128"], _networks),
        "users": ([], lambda v: v),  # checked by _users
        "lockout_failures": (5, _int(1, 1000)),
        "lockout_window": (60.0, _num(1, 86400)),
        # shares of time failed password checks may take (server.auth, HashBudget)
        "hash_share_address": (0.1, _num(0.01, 1)),
        "hash_share_total": (0.3, _num(0.01, 1)),
    },
    "presence": {
        "keepidle": (1, _int(1, 7200)),
        "keepintvl": (1, _int(1, 600)),
        "keepcnt": (2, _int(1, 50)),
        "grace": (2.0, _num(0, 3600)),
        # 0 = derived: keepintvl * keepcnt seconds (see server.sockopts)
        "user_timeout_ms": (0, _int(0, 3600000)),
    },
    "control": {
        "enabled": (True, _bool),
        "host": ("0.0.0.0", _str),
        "port": (9900, _int(0, 65535)),
        "streams": (5, _int(2, 65535)),
        "heartbeat_ms": (1000, _int(10, 600000)),
        "path_max_retrans": (2, _int(1, 100)),
        "command_timeout": (5.0, _num(0.1, 3600)),
    },
    "tls": {
        "enabled": (True, _bool),
        "port": (8443, _int(0, 65535)),
        "cert": ("", _path_or_empty),  # empty: this device's own certificate
        "key": ("", _path_or_empty),
        "handshake_timeout": (5.0, _num(0.1, 60)),
    },
    "audit": {
        "path": ("var/audit.jsonl", _str),
    },
}


def _section(where: str, name: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    schema = _SCHEMA[name]
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"{where}: [{name}] unknown key {unknown[0]!r}")
    out = {}
    for key, (default, check) in schema.items():
        try:
            out[key] = check(raw.get(key, default))
        except ValueError as e:
            raise ConfigError(f"{where}: [{name}] {key}: {e}") from None
    return out


def _users(where: str, raw: Any) -> list[User]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: auth.users must be an array of tables ([[auth.users]])")
    users = []
    for i, entry in enumerate(raw):
        at = f"{where}: [[auth.users]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be a table")
        unknown = sorted(set(entry) - {"name", "password", "role"})
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}")
        name, password, role = entry.get("name"), entry.get("password"), entry.get("role")
        if not isinstance(name, str) or not name or ":" in name:
            raise ConfigError(f"{at}: name must be a non-empty string without ':'")
        if not isinstance(password, str) or not password.startswith("scrypt$"):
            raise ConfigError(
                f"{at} ({name}): password must be a hash from 'python -m server hash-password'"
            )
        if role not in ROLES:
            raise ConfigError(f"{at} ({name}): role must be operator or viewer")
        users.append(User(name, password, role))
    return users


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def load(path: str | Path) -> Config:
    """Read and validate ``path`` (and users.local.toml beside it); raise ConfigError."""
    path = Path(path).absolute()
    raw = _read_toml(path)
    where = str(path)
    unknown = sorted(set(raw) - set(_SCHEMA))
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}]")
    sec = {name: _section(where, name, raw.get(name, {})) for name in _SCHEMA}
    users = _users(where, sec["auth"]["users"])
    local = path.parent / LOCAL_USERS_FILE
    if local.exists():
        users += _users(str(local), _read_toml(local).get("users", []))
    names = [u.name for u in users]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: user {dupes[0]!r} is defined twice")
    base = path.parent
    sec["http"]["static_dir"] = (base / sec["http"]["static_dir"]).resolve()
    if not sec["http"]["static_dir"].is_dir():
        raise ConfigError(
            f"{where}: [http] static_dir: {sec['http']['static_dir']} is not a directory"
        )
    sec["auth"]["users"] = tuple(users)
    sec["audit"]["path"] = base / sec["audit"]["path"]
    tls = sec["tls"]
    if bool(tls["cert"]) != bool(tls["key"]):
        raise ConfigError(f"{where}: [tls] cert and key go together: give both or neither")
    for name in ("cert", "key"):
        tls[name] = base / tls[name] if tls[name] else None
    return Config(
        path=path,
        http=HttpConfig(**sec["http"]),
        auth=AuthConfig(**sec["auth"]),
        presence=PresenceConfig(**sec["presence"]),
        control=ControlConfig(**sec["control"]),
        audit=AuditConfig(**sec["audit"]),
        tls=TlsConfig(**sec["tls"]),
    )
