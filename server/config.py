"""config.toml: a table from section and key to a validated, typed value.

Like boa's config.c, every accepted key is listed once, in ``_SCHEMA``, with
its type, default and check; unknown sections and keys are errors (a typo
must not silently fall back to a default). Every error names the file, the
key and what is wrong, in one line: ``ConfigError`` is the only exception
this module raises for bad input.

Every file is read as UTF-8 (a byte that is not is an error naming the
file and line, never a traceback). Users come from ``[[auth.users]]`` and
from ``users.local.toml`` in the state dir (written on first run by
``server.firstrun``); both use the same schema. That file holds password
hashes, so like a device secret it must be readable by its owner only, and
a symbolic link to nothing is an error, not "no users". Devices likewise
come from ``[[control.devices]]`` and from ``devices.local.toml`` (written
by ``python -m server add-device``); each names a ``secret_file`` whose
secret is read here, so a missing, short or exposed secret is a config
error like any other. Relative paths are resolved against the config
file's directory.

What vigil writes while it runs (``users.local.toml``, ``devices.local.toml``
and ``devices.local/``, its own certificate ``tls.local.*``, the pid file,
a relative ``[audit] path``) lives in ``[state] dir`` (``"."``: beside the
config, as in a git clone; an installed vigil keeps its config in
/etc/vigil, read-only under ``ProtectSystem=strict``, and this in
/var/lib/vigil). Paths in ``devices.local.toml`` are relative to it. The
audit path must be a regular file or not exist yet: the audit log reads it
whole at start, and a device or a FIFO would hang that.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import socket
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.base.addresses import Network
from server.base.private import check_private, read_private
from server.link.codec import DEVICE_ID, DEVICE_ID_RULE, HEARTBEAT_MS, PATH_MAX_RETRANS
from server.link.secret import read_secret_file

LOCAL_USERS_FILE = "users.local.toml"
LOGOUT_FILE = "logout.local.toml"  # `user logout NAME`: name = epoch seconds (SIGHUP applies)
LOCAL_DEVICES_FILE = "devices.local.toml"
LOCAL_SECRETS_DIR = "devices.local"  # add-device writes ID.secret here
ROLES = ("operator", "viewer")


class ConfigError(Exception):
    """A config file is unreadable or invalid; str() is one line for stderr."""


@dataclass(frozen=True, slots=True)
class Account:
    """A person the config lets in (``[[auth.users]]``, ``users.local.toml``)."""

    name: str
    password: str = field(repr=False)  # "scrypt$..." hash string, never a plain password
    role: str
    totp: str = field(default="", repr=False)  # base32 TOTP secret; "" without a second factor


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """A declared device: its id and its secret (never in a repr, so never in a log)."""

    id: str
    secret: bytes = field(repr=False)


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
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides this machine's own


@dataclass(frozen=True, slots=True)
class AuthConfig:
    realm: str
    max_users: int
    allow: tuple[Network, ...]
    users: tuple[Account, ...]
    lockout_failures: int
    lockout_window: float
    hash_share_address: float
    hash_share_total: float
    # sessions (server.people.sessions) and the second factor
    session_idle: float = 1800.0
    session_max_age: float = 43200.0
    sessions_per_user: int = 8
    max_sessions: int = 100
    step_up_window: float = 300.0
    operators_need_totp: bool = False
    logouts: tuple[tuple[str, float], ...] = ()  # sessions begun before these times end


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
    # Applied on SIGHUP (ControlChannel.reload, the leases); the rest needs a restart.
    hello_timeout: float = 5.0
    allow: tuple[Network, ...] = ()
    devices: tuple[DeviceKey, ...] = ()
    lease_idle: float = 120.0  # server.people.leases


@dataclass(frozen=True, slots=True)
class AuditConfig:
    path: Path
    file_bytes: int  # the live file rotates past this (server.audit)
    keep_files: int  # rotated files kept; older ones are deleted
    memory_bytes: int  # the newest records kept in memory, as their JSON lines


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """[limits]: what one person may make vigil spend (docs/design.md, "Budgets")."""

    connections_per_user: int
    chat_per_minute: int
    chat_burst: int
    commands_per_second: float
    command_burst: int


@dataclass(frozen=True, slots=True)
class TlsConfig:
    enabled: bool
    port: int
    cert: Path | None  # None: this device's own, made on first run (server.certificate)
    key: Path | None
    handshake_timeout: float


@dataclass(frozen=True, slots=True)
class StateConfig:
    dir: Path  # where vigil writes at run time (absolute)


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """[mqtt]: the fleet bridge (server.mqtt); ``site`` and ``topic_prefix`` are resolved."""

    enabled: bool
    host: str
    port: int
    tls: bool
    ca_file: Path | None  # None: the system's CAs
    username: str
    password: str = field(repr=False)  # from password_file; never in config.toml
    site: str = ""
    topic_prefix: str = ""
    client_id: str = ""
    keepalive: int = 15
    connect_timeout: float = 5.0
    queue: int = 1000
    commands: bool = False
    command_users: tuple[str, ...] = ()
    homeassistant: bool = False
    discovery_prefix: str = "homeassistant"
    publish_addresses: bool = False
    panel_url: str = ""  # where Home Assistant's "visit" link of the hub goes


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """[metrics]: ``GET /metrics`` for a scraper's bearer token (server.web.metrics)."""

    token_sha256: bytes = field(repr=False)  # of the token in token_file; b"": metrics off
    scrapes_per_second: float = 1.0  # what all scrapers together may ask for
    scrape_burst: int = 10


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    http: HttpConfig
    auth: AuthConfig
    presence: PresenceConfig
    control: ControlConfig
    audit: AuditConfig
    limits: LimitsConfig
    tls: TlsConfig
    state: StateConfig
    mqtt: MqttConfig
    metrics: MetricsConfig


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


def _topic_word(v: Any) -> str:
    """One MQTT topic level (or empty for the default): no '/', '+', '#'."""
    if not isinstance(v, str) or any(c in v for c in "/+#") or not v.isprintable():
        raise ValueError("must be printable text without '/', '+' or '#'")
    return v


def _url(v: Any) -> str:
    if not isinstance(v, str) or (v and not re.fullmatch(r"https?://[^\s\"'<>]+", v)):
        raise ValueError("must be an http:// or https:// URL")
    return v


def _topic_prefix(v: Any) -> str:
    if not isinstance(v, str) or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
        raise ValueError("must be a topic without '+', '#' or a leading or trailing '/'")
    return v


def _host_names(v: Any) -> tuple[str, ...]:
    ok = isinstance(v, list) and all(
        isinstance(n, str) and n and n.isascii() and n.replace("-", "").replace(".", "").isalnum()
        for n in v
    )
    if not ok:
        raise ValueError('must be a list of host names, e.g. ["panel.example.org"]')
    return tuple(n.lower() for n in v)


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(n, str) and n and ":" not in n for n in v):
        raise ValueError('must be a list of names without ":", e.g. ["node-red"]')
    return tuple(v)


# Keys marked RESTART take effect when vigil starts; every other key also on SIGHUP
# (``restart_needed`` names what a reload could not apply).
RESTART = True
_SCHEMA: dict[str, dict[str, tuple[Any, ...]]] = {
    "http": {
        "host": ("0.0.0.0", _str, RESTART),
        "port": (8080, _int(0, 65535), RESTART),
        "static_dir": ("static", _str),
        "max_connections": (768, _int(8, 1000)),
        "backend": ("select", _choice("select", "epoll"), RESTART),
        "header_timeout": (10.0, _num(0.1, 3600)),
        "keepalive_timeout": (60.0, _num(0.1, 86400)),
        "max_target": (4096, _int(64, 65536)),
        "max_header_bytes": (16384, _int(1024, 1048576)),
        "max_body": (65536, _int(0, 16 * 1048576)),
        "max_sse_buffer": (262144, _int(4096, 16 * 1048576)),
        "sse_heartbeat": (15.0, _num(0.1, 3600)),
        "access_log": (True, _bool),
        "allowed_hosts": ([], _host_names),
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
        # seconds a session may go without a request, and may last (server.people.sessions)
        "session_idle": (1800.0, _num(10, 86400 * 7)),
        "session_max_age": (43200.0, _num(60, 86400 * 30)),
        "sessions_per_user": (8, _int(1, 100)),  # a person's oldest session ends past this
        "max_sessions": (100, _int(1, 10000)),  # the least recently used one ends past this
        # seconds a step-up proof (X-Vigil-Step-Up) covers commands that ask to confirm
        "step_up_window": (300.0, _num(0, 3600)),
        "operators_need_totp": (False, _bool),  # without a second factor, an operator is a viewer
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
        "enabled": (True, _bool, RESTART),
        "host": ("0.0.0.0", _str, RESTART),
        "port": (9900, _int(0, 65535), RESTART),
        "streams": (5, _int(2, 65535), RESTART),
        "heartbeat_ms": (HEARTBEAT_MS, _int(10, 600000), RESTART),
        "path_max_retrans": (PATH_MAX_RETRANS, _int(1, 100), RESTART),
        "command_timeout": (5.0, _num(0.1, 3600), RESTART),
        # seconds from an association coming up to its sealed hello (server.control.admission)
        "hello_timeout": (5.0, _num(0.1, 60)),
        # seconds a device's lease lasts without a command from its holder (server.leases)
        "lease_idle": (120.0, _num(1, 86400)),
        "allow": (["127.0.0.0/8", "::1/128"], _networks),
        "devices": ([], lambda v: v),  # checked by _devices
    },
    "tls": {
        "enabled": (True, _bool, RESTART),
        "port": (8443, _int(0, 65535), RESTART),
        "cert": ("", _path_or_empty),  # empty: this device's own certificate
        "key": ("", _path_or_empty),
        "handshake_timeout": (5.0, _num(0.1, 60)),
    },
    "audit": {
        "path": ("var/audit.jsonl", _str, RESTART),  # relative to [state] dir
        "file_bytes": (8 * 1048576, _int(65536, 1 << 30), RESTART),
        "keep_files": (3, _int(1, 100), RESTART),
        "memory_bytes": (1048576, _int(65536, 64 * 1048576), RESTART),
    },
    "limits": {
        "connections_per_user": (24, _int(2, 1000)),
        "chat_per_minute": (30, _int(1, 1000000)),
        "chat_burst": (10, _int(1, 1000000)),
        "commands_per_second": (5.0, _num(0.1, 1000)),
        "command_burst": (20, _int(1, 10000)),
    },
    "state": {
        "dir": (".", _str, RESTART),  # relative to the config file
    },
    "mqtt": {
        "enabled": (False, _bool),
        "host": ("127.0.0.1", _str),
        "port": (1883, _int(1, 65535)),
        "tls": (False, _bool),
        "ca_file": ("", _path_or_empty),  # empty: the system's CAs
        "username": ("", _topic_word),
        "password_file": ("", _path_or_empty),  # the password, mode 0600
        "site": ("", _topic_word),  # empty: this host's name
        "topic_prefix": ("", _topic_prefix),  # empty: vigil/<site>
        "client_id": ("", _topic_word),  # empty: vigil-<site>
        "keepalive": (15, _int(5, 3600)),
        "connect_timeout": (5.0, _num(0.1, 60)),
        "queue": (1000, _int(10, 100000)),  # messages kept while the broker is away
        "commands": (False, _bool),
        "command_users": ([], _names),
        "homeassistant": (False, _bool),
        "discovery_prefix": ("homeassistant", _topic_prefix),
        "publish_addresses": (False, _bool),
        "panel_url": ("", _url),  # empty: https://<this host>.local:<[tls] port>/ (http if off)
    },
    "metrics": {
        "token_file": ("", _path_or_empty),  # the scraper's bearer token, mode 0600; "": off
        "scrapes_per_second": (1.0, _num(0.01, 100)),
        "scrape_burst": (10, _int(1, 1000)),
    },
}


def restart_needed(old: Config, new: Config) -> list[str]:
    """The RESTART keys whose value differs between ``old`` and ``new``, as ``[section] key``."""
    return [
        f"[{name}] {key}"
        for name, schema in _SCHEMA.items()
        for key, entry in schema.items()
        if entry[2:] == (RESTART,)
        and getattr(getattr(old, name), key) != getattr(getattr(new, name), key)
    ]


def _section(where: str, name: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    schema = _SCHEMA[name]
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"{where}: [{name}] unknown key {unknown[0]!r}")
    out = {}
    for key, (default, check, *_restart) in schema.items():
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


# The name vigil's own commands go out under (a safe state): no account may take it.
RESERVED_USER = "vigil"


def _users(where: str, raw: Any) -> list[Account]:
    users = []
    for at, entry in _entries(where, "auth.users", raw, {"name", "password", "role", "totp"}):
        name, password, role = entry.get("name"), entry.get("password"), entry.get("role")
        totp = entry.get("totp", "")
        if not isinstance(name, str) or not name or ":" in name:
            raise ConfigError(f"{at}: name must be a non-empty string without ':'")
        if name == RESERVED_USER:
            raise ConfigError(f"{at}: {name!r} is vigil's own name (its safe-state commands)")
        if not isinstance(password, str) or not password.startswith("scrypt$"):
            raise ConfigError(
                f"{at} ({name}): password must be a hash from 'python -m server hash-password'"
            )
        if role not in ROLES:
            raise ConfigError(f"{at} ({name}): role must be operator or viewer")
        if not isinstance(totp, str) or (totp and not _totp_secret(totp)):
            raise ConfigError(
                f"{at} ({name}): totp must be a base32 secret of at least 128 bits"
                f" (python -m server user totp {name} makes one)"
            )
        users.append(Account(name, password, role, totp))
    return users


def _totp_secret(text: str) -> bool:
    """Base32 (RFC 4648, no padding needed) of at least 16 bytes."""
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8), casefold=True)
    except ValueError:  # binascii.Error
        return False
    return len(raw) >= 16


def local_users(state_dir: Path) -> list[Account]:
    """The users of ``users.local.toml`` in ``state_dir`` (none if there is no such file).

    It holds password hashes: like a device secret, a file that other users
    may read is an error. So is a symbolic link to nothing (a file system not
    mounted, say): "no users" would make the first run create an operator and
    put a file where the link was.
    """
    local = state_dir / LOCAL_USERS_FILE
    if local.is_symlink() and not local.exists():
        raise ConfigError(f"{local}: a symbolic link to {os.readlink(local)}, which does not exist")
    if not local.exists():
        return []
    return _users(str(local), _read_toml(local, private=True).get("users", []))


def logouts(state_dir: Path) -> tuple[tuple[str, float], ...]:
    """``logout.local.toml`` of ``state_dir``: (name, epoch seconds) for each person whose
    sessions begun before then must end (``python -m server user logout NAME``)."""
    path = state_dir / LOGOUT_FILE
    if not path.exists():
        return ()
    table = _read_toml(path).get("logout", {})
    ok = isinstance(table, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in table.values()
    )
    if not ok:
        raise ConfigError(f"{path}: [logout] must map names to epoch seconds")
    return tuple((name, float(when)) for name, when in table.items())


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


def _panel_url(sec: dict[str, Any]) -> str:
    """Where people open the panel, as this host's mDNS name knows it (the certificate
    vigil makes names it, ``server.web.certificate``)."""
    host = socket.gethostname().partition(".")[0]
    if sec["tls"]["enabled"]:
        return f"https://{host}.local:{sec['tls']['port']}/"
    return f"http://{host}.local:{sec['http']['port']}/"


def _mqtt(where: str, sec: dict[str, Any], base: Path, panel_url: str) -> MqttConfig:
    """[mqtt] with its defaults resolved and the password read from its file."""
    pw_file = sec.pop("password_file")
    password = ""
    if pw_file:
        try:
            password = read_private(base / pw_file).partition("\n")[0].strip()
        except ValueError as e:
            raise ConfigError(f"{where}: [mqtt] password_file {e}") from None
        if not password:
            raise ConfigError(f"{where}: [mqtt] password_file {base / pw_file} is empty")
    if pw_file and not sec["username"]:
        raise ConfigError(f"{where}: [mqtt] password_file needs a username")
    site = sec["site"] or socket.gethostname().partition(".")[0]
    if sec["homeassistant"] and not sec["discovery_prefix"]:
        raise ConfigError(f"{where}: [mqtt] discovery_prefix must not be empty")
    ca = sec.pop("ca_file")
    return MqttConfig(
        **sec
        | {
            "ca_file": base / ca if ca else None,
            "password": password,
            "site": site,
            "topic_prefix": sec["topic_prefix"] or f"vigil/{site}",
            "client_id": sec["client_id"] or f"vigil-{site}",
            "panel_url": sec["panel_url"] or panel_url,
        }
    )


# A bearer token (RFC 6750 §2.1, b64token) long enough not to be guessed: 32 characters
# of `openssl rand -hex 32` are 128 bits.
TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{32,}=*")
TOKEN_RULE = "at least 32 of A-Z a-z 0-9 - . _ ~ + / (e.g. openssl rand -hex 32)"


def _metrics(where: str, sec: dict[str, Any], base: Path) -> MetricsConfig:
    """[metrics] with the token read from its file (kept only as its SHA-256)."""
    token_file = sec.pop("token_file")
    digest = b""
    if token_file:
        try:
            token = read_private(base / token_file).partition("\n")[0].strip()
        except ValueError as e:
            raise ConfigError(f"{where}: [metrics] token_file {e}") from None
        if not TOKEN.fullmatch(token):
            raise ConfigError(
                f"{where}: [metrics] token_file {base / token_file}: the token must be {TOKEN_RULE}"
            )
        digest = hashlib.sha256(token.encode()).digest()
    return MetricsConfig(token_sha256=digest, **sec)


def _repeated(names: Iterable[str]) -> str | None:
    """The first name (in sort order) that occurs more than once, if any."""
    seen: set[str] = set()
    again: set[str] = set()
    for n in names:
        (again if n in seen else seen).add(n)
    return min(again, default=None)


def _read_toml(path: Path, private: bool = False) -> dict[str, Any]:
    """The TOML document at ``path`` (``private``: readable by its owner only); ConfigError."""
    try:
        with path.open("rb") as f:
            if private:
                check_private(path, os.fstat(f.fileno()).st_mode)
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        text = data.decode()  # TOML is UTF-8 (tomllib's UnicodeDecodeError is no TOMLDecodeError)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 (byte 0x{data[e.start]:02x}); save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _regular_or_none(where: str, key: str, path: Path) -> None:
    """ConfigError unless ``path`` is a regular file (after links) or does not exist yet.

    A device or a FIFO would hang whatever reads it whole (the audit log, at start).
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # cannot tell: opening it says why, with the file's name
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{where}: {key} {path} is not a regular file")


def load(path: str | Path) -> Config:
    """Read and validate ``path`` (and the *.local.toml beside it); raise ConfigError."""
    path = Path(path).absolute()
    raw = _read_toml(path)
    where = str(path)
    unknown = sorted(set(raw) - set(_SCHEMA))
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}]")
    sec = {name: _section(where, name, raw.get(name, {})) for name in _SCHEMA}
    base = path.parent
    state = sec["state"]["dir"] = (base / sec["state"]["dir"]).resolve()
    users = _users(where, sec["auth"]["users"]) + local_users(state)
    twice = _repeated(u.name for u in users)
    if twice:
        raise ConfigError(f"{where}: user {twice!r} is defined twice")
    sec["http"]["static_dir"] = (base / sec["http"]["static_dir"]).resolve()
    if not sec["http"]["static_dir"].is_dir():
        raise ConfigError(
            f"{where}: [http] static_dir: {sec['http']['static_dir']} is not a directory"
        )
    sec["auth"]["users"] = tuple(users)
    sec["auth"]["logouts"] = logouts(state)
    sec["audit"]["path"] = state / sec["audit"]["path"]
    _regular_or_none(where, "[audit] path", sec["audit"]["path"])
    devices = _devices(where, "control.devices", sec["control"]["devices"], base)
    local = state / LOCAL_DEVICES_FILE
    if local.exists():
        devices += _devices(str(local), "devices", _read_toml(local).get("devices", []), state)
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
        limits=LimitsConfig(**sec["limits"]),
        tls=TlsConfig(**sec["tls"]),
        state=StateConfig(**sec["state"]),
        mqtt=_mqtt(where, sec["mqtt"], base, _panel_url(sec)),
        metrics=_metrics(where, sec["metrics"], base),
    )
