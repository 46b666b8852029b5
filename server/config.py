"""config.toml: a table from section and key to a validated, typed value.

Like boa's config.c, every accepted key is listed once, in ``_SCHEMA``, with
its type, default and check; unknown sections and keys are errors (a typo
must not silently fall back to a default). Every error names the file, the
key and what is wrong, in one line: ``ConfigError`` is the only exception
this module raises for bad input.

Users come from ``[[auth.users]]`` and from ``users.local.toml`` next to the
config file (written on first run by ``server.firstrun``); both use the same
schema. Devices likewise come from ``[[control.devices]]`` and from
``devices.local.toml`` (written by ``python -m server add-device``); each
names a ``secret_file`` whose secret is read here, so a missing, short or
exposed secret is a config error like any other. Relative paths are
resolved against the config file's directory.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.control import DEVICE_ID, DEVICE_ID_RULE
from server.devices import DeviceKey, parse_secret

LOCAL_USERS_FILE = "users.local.toml"
LOCAL_DEVICES_FILE = "devices.local.toml"
LOCAL_SECRETS_DIR = "devices.local"  # add-device writes ID.secret here
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
    # Re-read on SIGHUP (ControlChannel.reload), so left out of ==: configs
    # that differ only in these need no restart.
    hello_timeout: float = field(default=5.0, compare=False)
    allow: tuple[Network, ...] = field(default=(), compare=False)
    devices: tuple[DeviceKey, ...] = field(default=(), compare=False)
    lease_idle: float = field(default=120.0, compare=False)  # server.leases


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
        # seconds from vigil's challenge to the device's hello (server.devices)
        "hello_timeout": (5.0, _num(0.1, 60)),
        # seconds a device's lease lasts without a command from its holder (server.leases)
        "lease_idle": (120.0, _num(1, 86400)),
        "allow": (["127.0.0.0/8", "::1/128"], _networks),
        "devices": ([], lambda v: v),  # checked by _devices
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


def _entries(
    where: str, table: str, raw: Any, keys: set[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each table of the array ``table`` and the words that name it in an error."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: {table} must be an array of tables ([[{table}]])")
    for i, entry in enumerate(raw):
        at = f"{where}: [[{table}]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be a table")
        unknown = sorted(set(entry) - keys)
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}")
        yield at, entry


def _users(where: str, raw: Any) -> list[User]:
    users = []
    for at, entry in _entries(where, "auth.users", raw, {"name", "password", "role"}):
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


def read_secret_file(path: Path) -> bytes:
    """The secret in ``path`` (hex); ValueError if unreadable, too short or readable by others."""
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read(4096).decode("ascii", "replace")
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: other users may read it (chmod 600 {path})")
    try:
        return parse_secret(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _devices(where: str, table: str, raw: Any, base: Path) -> list[DeviceKey]:
    devices = []
    for at, entry in _entries(where, table, raw, {"id", "secret_file"}):
        dev_id, secret_file = entry.get("id"), entry.get("secret_file")
        if not isinstance(dev_id, str) or not DEVICE_ID.fullmatch(dev_id):
            raise ConfigError(f"{at}: id must be {DEVICE_ID_RULE}")
        if not isinstance(secret_file, str) or not secret_file:
            raise ConfigError(
                f"{at} ({dev_id}): secret_file must name the file that holds its secret"
                f" (python -m server add-device {dev_id} makes one)"
            )
        try:
            secret = read_secret_file(base / secret_file)
        except ValueError as e:
            raise ConfigError(f"{at} ({dev_id}): secret_file {e}") from None
        devices.append(DeviceKey(dev_id, secret))
    return devices


def _repeated(names: Iterable[str]) -> str | None:
    """The first name (in sort order) that occurs more than once, if any."""
    seen: set[str] = set()
    again: set[str] = set()
    for n in names:
        (again if n in seen else seen).add(n)
    return min(again, default=None)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def load(path: str | Path) -> Config:
    """Read and validate ``path`` (and the *.local.toml beside it); raise ConfigError."""
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
    twice = _repeated(u.name for u in users)
    if twice:
        raise ConfigError(f"{where}: user {twice!r} is defined twice")
    base = path.parent
    sec["http"]["static_dir"] = (base / sec["http"]["static_dir"]).resolve()
    if not sec["http"]["static_dir"].is_dir():
        raise ConfigError(
            f"{where}: [http] static_dir: {sec['http']['static_dir']} is not a directory"
        )
    sec["auth"]["users"] = tuple(users)
    sec["audit"]["path"] = base / sec["audit"]["path"]
    devices = _devices(where, "control.devices", sec["control"]["devices"], base)
    local = base / LOCAL_DEVICES_FILE
    if local.exists():
        devices += _devices(str(local), "devices", _read_toml(local).get("devices", []), base)
    twice = _repeated(d.id for d in devices)
    if twice:
        raise ConfigError(f"{where}: device {twice!r} is declared twice")
    sec["control"]["devices"] = tuple(devices)
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
