"""Backup and restore: one archive of everything this vigil needs to come back as itself.

The archive is a gzip-compressed tar (the stdlib's ``tarfile`` and ``gzip``;
``tar tzvf`` lists it) of: the config file; every file it names that makes
this vigil who it is (``[[control.devices]]`` secret files, ``[tls]`` cert
and key, ``[mqtt]`` password and CA files); what vigil wrote in its state
dir (``users.local.toml`` whole, whatever fields it holds;
``devices.local.toml`` and the secret files it names; its own certificate
``tls.local.crt``/``.key``); and, with ``audit=True``, the audit log and its
rotated files. The last member, ``vigil-backup.json``, is the manifest:
format name and version, vigil's version, when and on which host, and for
every other member where it goes (``anchor``: the config's directory, the
state dir or an absolute path, as the config names it), what it is
(``kind``: config, secret, public, audit), its size and sha256. No
encryption: the archive must be kept like the secrets it holds.

Consistency with a running vigil (it need not stop). Every file is read
whole from one open file descriptor, so a file vigil replaces by rename
meanwhile (the users file, the certificate) is read as one version, old or
new, never a mix. Files that belong together (a certificate and its key,
``devices.local.toml`` and the secrets it names) are read twice in a row,
and again until two whole passes agree (at most ``PASSES``): the archive
holds a set of files that was there, unchanged, for the length of one pass.
The audit log is append-only: each of its files is opened once and read up
to its last whole line at that moment (a record is one line, fsync'd before
it is acknowledged); a rotation during the backup (a name that no longer
has the file it had) makes it start again.

Restore validates everything before it writes anything: the whole gzip
stream (its CRC-32 and length catch a truncated file or a flipped byte in
the data), every tar member a regular file the manifest lists with the
same size and sha256, the manifest's format and version. Every member is
first copied to a temporary file beside its destination and fsync'd; only
when all are written are they renamed into place (each file is replaced
atomically; a full disk leaves the old files as they were). Where files go
on this machine: the config to ``--config``, state files into the state
dir this machine's config names (the restored config keeps this machine's
``[state] dir`` and ``[http] static_dir``: they say where this install
keeps things, not who the device is), files the config names by a relative
path beside the restored config, absolute paths to the same path.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import posixpath
import pwd
import re
import socket
import stat
import tarfile
import tempfile
import tomllib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from server import config as configmod
from server.base import pidfile
from server.web import certificate

FORMAT = "vigil-backup"
VERSION = 1
MANIFEST = "vigil-backup.json"
PASSES = 5  # whole reads of the small files before giving up on a quiet moment
MAX_MEMBER = 1 << 20  # bytes of any member but the audit log (configs, secrets, PEM files)
CHUNK = 1 << 16
SERVICE_USER = "vigil"  # owns what a restore run as root writes (make install's user)

ANCHORS = ("config", "state", "abs")  # the config's directory, the state dir, absolute
KINDS = ("config", "secret", "public", "audit")
MODES = {"config": 0o640, "secret": 0o600, "public": 0o644, "audit": 0o600}
# What vigil writes in its state dir: restore --force removes the ones the archive lacks
STATE_FILES = (
    (configmod.LOCAL_USERS_FILE, "secret"),
    (configmod.LOCAL_DEVICES_FILE, "secret"),
    (certificate.CERT_FILE, "public"),
    (certificate.KEY_FILE, "secret"),
)


class BackupError(Exception):
    """A backup or restore that cannot be done; str() is one line for stderr."""


@dataclass(frozen=True, slots=True, order=True)
class Place:
    """Where a file lives, relative to what: ``anchor`` and ``path`` (posix)."""

    anchor: str
    path: str

    @property
    def name(self) -> str:
        """Its name in the archive: ``state/users.local.toml``, ``abs/etc/ssl/x.key``."""
        return f"{self.anchor}/{self.path.lstrip('/')}"


@dataclass(frozen=True, slots=True)
class Member:
    place: Place
    kind: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    version: int
    vigil: str
    created: str
    host: str
    members: tuple[Member, ...]

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "vigil": self.vigil,
            "created": self.created,
            "host": self.host,
            "members": [
                {
                    "name": m.place.name,
                    "anchor": m.place.anchor,
                    "path": m.place.path,
                    "kind": m.kind,
                    "size": m.size,
                    "sha256": m.sha256,
                }
                for m in self.members
            ],
        }
        return json.dumps(doc, indent=1).encode() + b"\n"


def vigil_version() -> str:
    try:
        return metadata.version("vigil")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- the pure core: where a configured path goes, the manifest, the layout keys


def place(anchor: str, raw: str, what: str) -> Place:
    """The place of ``raw`` as the config gives it (relative to ``anchor``'s directory,
    or absolute); BackupError for a relative path that leaves it (it could not follow)."""
    if posixpath.isabs(raw):
        return Place("abs", posixpath.normpath(raw))
    norm = posixpath.normpath(raw)
    if norm == "." or norm == ".." or norm.startswith("../"):
        raise BackupError(
            f"{what} {raw!r} leaves the directory it is relative to: give it as an"
            " absolute path to back it up"
        )
    return Place(anchor, norm)


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def config_files(raw: dict[str, Any]) -> list[tuple[Place, str]]:
    """The files config.toml (``raw``, parsed) names that make this vigil itself."""
    out: list[tuple[Place, str]] = []
    devices = _table(raw, "control").get("devices", [])
    for entry in devices if isinstance(devices, list) else []:
        path = _text(entry.get("secret_file")) if isinstance(entry, dict) else ""
        if path:
            out.append((place("config", path, "[[control.devices]] secret_file"), "secret"))
    named = (
        ("tls", "cert", "public"),
        ("tls", "key", "secret"),
        ("mqtt", "password_file", "secret"),
        ("mqtt", "ca_file", "public"),
    )
    for section, key, kind in named:
        path = _text(_table(raw, section).get(key))
        if path:
            out.append((place("config", path, f"[{section}] {key}"), kind))
    return out


def device_files(raw: dict[str, Any]) -> list[tuple[Place, str]]:
    """The secret files ``devices.local.toml`` (``raw``, parsed) names (state dir relative)."""
    devices = raw.get("devices", [])
    out = []
    for entry in devices if isinstance(devices, list) else []:
        path = _text(entry.get("secret_file")) if isinstance(entry, dict) else ""
        if path:
            out.append((place("state", path, "devices.local.toml secret_file"), "secret"))
    return out


def audit_place(raw: dict[str, Any]) -> tuple[Place, int]:
    """The audit log's place and how many rotated files it keeps, as config.toml says."""
    audit = _table(raw, "audit")
    path = _text(audit.get("path")) or "var/audit.jsonl"
    keep = audit.get("keep_files", 3)
    return place("state", path, "[audit] path"), keep if isinstance(keep, int) else 3


_NAME = re.compile(r"(config|state|abs)/[^\x00]+")


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``; BackupError saying why it is not one this vigil reads."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackupError(f"damaged: {MANIFEST} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"not a vigil backup ({MANIFEST} says another format)")
    version = doc.get("version")
    if version != VERSION:
        raise BackupError(
            f"a vigil backup of format version {version!r}; this vigil reads version {VERSION}"
            f" (restore it with the vigil that made it, {doc.get('vigil', 'unknown')}, or newer)"
        )
    members = []
    try:
        for m in doc["members"]:
            p = Place(m["anchor"], m["path"])
            size, digest, kind = m["size"], m["sha256"], m["kind"]
            ok = (
                m["name"] == p.name
                and _NAME.fullmatch(p.name) is not None
                and p.anchor in ANCHORS
                and p.path == posixpath.normpath(p.path)
                and (p.anchor == "abs") == posixpath.isabs(p.path)
                and not p.path.startswith("..")
                and kind in KINDS
                and isinstance(size, int)
                and size >= 0
                and isinstance(digest, str)
                and re.fullmatch(r"[0-9a-f]{64}", digest) is not None
            )
            if not ok:
                raise ValueError(m)
            members.append(Member(p, kind, size, digest))
        header = (str(doc["vigil"]), str(doc["created"]), str(doc["host"]))
    except (KeyError, TypeError, ValueError):
        raise BackupError(f"damaged: {MANIFEST} lists a member it cannot describe") from None
    names = [m.place.name for m in members]
    if len(set(names)) != len(names):
        raise BackupError(f"damaged: {MANIFEST} lists a member twice")
    if [m.kind for m in members].count("config") != 1 or Place("config", "config.toml") not in {
        m.place for m in members if m.kind == "config"
    }:
        raise BackupError(f"damaged: {MANIFEST} lists no config file")
    return Manifest(VERSION, *header, tuple(members))


def _key_lines(text: str, table: str, key: str) -> list[int]:
    """Indexes of the lines that set ``key`` directly in ``[table]``."""
    current = ""
    found = []
    for i, line in enumerate(text.splitlines()):
        header = re.match(r"\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$", line)
        if header:
            current = header.group(1)
        elif current == table and re.match(rf"\s*{key}\s*=", line):
            found.append(i)
    return found


def relayout(text: str, layout: dict[tuple[str, str], str]) -> str:
    """``text`` (a config) with each ``(table, key)`` of ``layout`` set to its value.

    Line by line, so the config's comments and order stay; checked by parsing
    the result: a config that sets these keys another way (dotted keys, an
    inline table) is a BackupError, never a silently wrong layout.
    """
    lines = text.splitlines()
    for (table, key), value in layout.items():
        line = f"{key} = {json.dumps(value)}"
        at = _key_lines("\n".join(lines), table, key)
        if at:
            for i in at:
                lines[i] = line
        else:
            header = next(
                (i for i, s in enumerate(lines) if re.match(rf"\s*\[\s*{table}\s*\]", s)), None
            )
            if header is None:
                lines += ["", f"[{table}]", line]
            else:
                lines.insert(header + 1, line)
    out = "\n".join(lines) + "\n"
    keys = ", ".join(f"[{table}] {key}" for table, key in layout)
    try:
        parsed = tomllib.loads(out)
        why = "it sets them in a way restore does not rewrite"
    except tomllib.TOMLDecodeError as e:
        parsed, why = {}, str(e)
    if any(_table(parsed, table).get(key) != value for (table, key), value in layout.items()):
        raise BackupError(
            f"cannot keep this machine's {keys} in the backed-up config ({why}): restore"
            " with --config of a new file, then set them in it"
        )
    return out


# -- reading what to back up, consistently


def _read(path: Path, what: str, limit: int = MAX_MEMBER) -> bytes:
    try:
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BackupError(f"{what} {path}: not a regular file")
            data = f.read(limit + 1)
    except OSError as e:
        raise BackupError(f"{what} {path}: cannot read: {e.strerror}") from None
    if len(data) > limit:
        raise BackupError(f"{what} {path}: larger than {limit} bytes, not a file vigil made")
    return data


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the anchors are on one machine."""

    config: Path  # the config file
    state: Path  # the state dir

    def path(self, where: Place) -> Path:
        if where.anchor == "abs":
            return Path(where.path)
        if where.anchor == "state":
            return self.state / where.path
        return self.config.parent / where.path


def _toml(data: bytes, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BackupError(f"{what}: not readable TOML (changed while read?): {e}") from None


Files = dict[Place, tuple[str, bytes]]  # where -> (kind, content)
CONFIG = Place("config", "config.toml")  # the config file itself, whatever its name


def _one_pass(config_path: Path) -> tuple[Layout, Files]:
    """Every small file, read once: the config first, then what it names."""
    config = _read(config_path, "config")
    raw = _toml(config, str(config_path))
    state_dir = (config_path.parent / (_text(_table(raw, "state").get("dir")) or ".")).resolve()
    layout = Layout(config_path, state_dir)
    files: Files = {CONFIG: ("config", config)}
    for where, kind in config_files(raw):
        files.setdefault(where, (kind, _read(layout.path(where), "file")))
    for name, kind in STATE_FILES:
        if (state_dir / name).exists():
            files.setdefault(Place("state", name), (kind, _read(state_dir / name, "state file")))
    devices = files.get(Place("state", configmod.LOCAL_DEVICES_FILE))
    if devices is not None:
        for where, kind in device_files(_toml(devices[1], configmod.LOCAL_DEVICES_FILE)):
            files.setdefault(where, (kind, _read(layout.path(where), "device secret")))
    return layout, files


def snapshot(config_path: Path) -> tuple[Layout, Files]:
    """The small files as two consecutive whole passes read them alike; BackupError."""
    last = _one_pass(config_path)
    for _ in range(PASSES):
        again = _one_pass(config_path)
        if again == last:
            return again
        last = again
    raise BackupError(f"the files kept changing while read ({PASSES} passes): try again")


@dataclass
class AuditFile:
    """One file of the audit log, open, and how much of it the archive takes."""

    where: Place
    fd: int
    size: int


def _whole_lines(fd: int, size: int) -> int:
    """The length of the file's content up to its last newline within ``size`` bytes."""
    end = size
    while end > 0:
        start = max(0, end - CHUNK)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


@contextlib.contextmanager
def open_audit(layout: Layout, raw: dict[str, Any]) -> Iterator[list[AuditFile]]:
    """The audit log's files, oldest first, open and measured; BackupError if a rotation
    keeps moving them (every name checked against its file after all are open)."""
    live, keep = audit_place(raw)
    wheres = [Place(live.anchor, f"{live.path}.{i}") for i in range(keep, 0, -1)] + [live]
    for _ in range(PASSES):
        files: list[AuditFile] = []
        try:
            for where in wheres:
                try:
                    fd = os.open(layout.path(where), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                files.append(AuditFile(where, fd, 0))
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise BackupError(f"audit log {layout.path(where)}: not a regular file")
                files[-1].size = _whole_lines(fd, st.st_size)
            moved = False
            for f in files:
                try:
                    moved |= os.stat(layout.path(f.where)).st_ino != os.fstat(f.fd).st_ino
                except FileNotFoundError:
                    moved = True
            if not moved:
                yield files
                return
        except OSError as e:
            raise BackupError(f"audit log: cannot read: {e.strerror}") from None
        finally:
            for f in files:
                os.close(f.fd)
    raise BackupError(f"the audit log kept rotating while read ({PASSES} tries): try again")


class _Hashing(io.RawIOBase):
    """``size`` bytes of ``fd`` from its start, hashed as tarfile reads them."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.left, self.offset = fd, size, 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.pread(self.fd, n, self.offset)
        self.offset += len(data)
        self.left -= len(data)
        self.hash.update(data)
        return data


# -- writing the archive


@dataclass(frozen=True, slots=True)
class Written:
    """What a backup holds, for the one line a person reads."""

    files: int
    audit_files: int
    bytes: int


def _tarinfo(name: str, size: int, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uname = info.gname = ""
    return info


def write(config_path: Path, target: Path, audit: bool, now: datetime) -> Written:
    """Back up the vigil of ``config_path`` into the new file ``target`` (0600 from its
    creation; an existing file is refused); on any failure ``target`` is removed."""
    layout, files = snapshot(config_path.absolute())
    raw = _toml(files[CONFIG][1], str(config_path))
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise BackupError(f"{target} exists already: give a new file name") from None
    except OSError as e:
        raise BackupError(f"{target}: cannot create: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(os.fdopen(fd, "wb", closefd=False))
            mtime = int(now.timestamp())
            gz = stack.enter_context(gzip.GzipFile("", "wb", 6, out, mtime))
            tar = stack.enter_context(tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT))
            members = []
            for where, (kind, data) in sorted(files.items()):
                tar.addfile(_tarinfo(where.name, len(data), MODES[kind], mtime), io.BytesIO(data))
                digest = hashlib.sha256(data).hexdigest()
                members.append(Member(where, kind, len(data), digest))
            audit_files = 0
            if audit:
                for f in stack.enter_context(open_audit(layout, raw)):
                    reader = _Hashing(f.fd, f.size)
                    tar.addfile(_tarinfo(f.where.name, f.size, 0o600, mtime), reader)
                    members.append(Member(f.where, "audit", f.size, reader.hash.hexdigest()))
                    audit_files += 1
            manifest = Manifest(
                VERSION,
                vigil_version(),
                now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                socket.gethostname(),
                tuple(members),
            ).to_json()
            tar.addfile(_tarinfo(MANIFEST, len(manifest), 0o600, mtime), io.BytesIO(manifest))
        os.fsync(fd)
        size = os.fstat(fd).st_size
    except BaseException as e:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(target)
        if isinstance(e, OSError):
            raise BackupError(f"{target}: cannot write: {e.strerror or e}") from None
        raise
    os.close(fd)
    return Written(len(files), audit_files, size)


# -- reading an archive: everything checked before anything is written


@dataclass
class Staged:
    """A validated archive: its manifest and every member's content (spooled)."""

    manifest: Manifest
    content: dict[str, IO[bytes]] = field(default_factory=dict)

    def close(self) -> None:
        for f in self.content.values():
            f.close()


def _check_gzip(f: IO[bytes]) -> None:
    """Read the whole gzip stream: its CRC-32 and length catch damage; BackupError."""
    if f.read(2) != b"\x1f\x8b":
        raise BackupError("not a vigil backup (not a gzip-compressed tar archive)")
    f.seek(0)
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            while gz.read(CHUNK):
                pass
    except EOFError:
        raise BackupError("damaged: it ends early (truncated?)") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise BackupError(f"damaged: {e}") from None


def read_archive(archive: IO[bytes]) -> Staged:
    """The validated content of a backup; BackupError (one line) if damaged or foreign."""
    _check_gzip(archive)
    archive.seek(0)
    content: dict[str, IO[bytes]] = {}
    digests: dict[str, tuple[int, str]] = {}
    staged = Staged(Manifest(VERSION, "", "", "", ()), content)
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            for info in tar:
                if not info.isreg() or info.name in content:
                    raise BackupError(f"not a vigil backup (its member {info.name!r} is not one)")
                if info.name == MANIFEST and info.size > MAX_MEMBER:
                    raise BackupError(f"damaged: {info.name} is {info.size} bytes")
                src = tar.extractfile(info)
                assert src is not None  # a regular file
                spool = tempfile.SpooledTemporaryFile(MAX_MEMBER)  # noqa: SIM115 (kept)
                content[info.name] = spool
                h = hashlib.sha256()
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    spool.write(chunk)
                digests[info.name] = (spool.tell(), h.hexdigest())
                spool.seek(0)
        manifest_file = content.pop(MANIFEST, None)
        if manifest_file is None:
            raise BackupError(f"not a vigil backup (no {MANIFEST} in it)")
        staged.manifest = parse_manifest(manifest_file.read())
        manifest_file.close()
        listed = {m.place.name: m for m in staged.manifest.members}
        if set(listed) != set(content):
            odd = sorted(set(listed) ^ set(content))[0]
            raise BackupError(f"damaged: {odd} is in the archive or its manifest, not both")
        for name, m in listed.items():
            if digests[name] != (m.size, m.sha256):
                raise BackupError(f"damaged: {name} is not what the manifest says (sha256)")
    except BaseException as e:
        staged.close()
        if isinstance(e, tarfile.TarError):  # the gzip stream is whole: not our tar
            raise BackupError(f"not a vigil backup (not a tar archive inside: {e})") from None
        if isinstance(e, EOFError | OSError | zlib.error):
            raise BackupError(f"damaged: {e}") from None
        raise
    return staged


# -- restoring: where each file goes on this machine, who owns it, then write it all


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a restored file belongs to (None: whoever runs restore)."""

    uid: int | None
    gid: int | None
    config_uid: int | None  # the config: root's, readable by the service's group


def owner(state_dir: Path) -> Owner:
    """Run as root: the service's user ``vigil`` if it exists, else the state dir's owner."""
    if os.geteuid() != 0:
        return Owner(None, None, None)
    try:
        pw = pwd.getpwnam(SERVICE_USER)
        return Owner(pw.pw_uid, pw.pw_gid, 0)
    except KeyError:
        pass
    try:
        st = state_dir.stat()
        return Owner(st.st_uid, st.st_gid, st.st_uid)
    except OSError:
        return Owner(0, 0, 0)


def target_layout(config_path: Path, archived_config: bytes) -> tuple[Layout, bytes]:
    """This machine's layout and the config to write: the archive's, with this machine's
    ``[state] dir`` and ``[http] static_dir`` if it has a config (else as archived)."""
    archived = archived_config.decode()
    if config_path.exists():
        try:
            here = tomllib.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise BackupError(f"{config_path}: cannot read this machine's config: {e}") from None
        state = _text(_table(here, "state").get("dir")) or "."
        static = _text(_table(here, "http").get("static_dir")) or "static"
        text = relayout(archived, {("state", "dir"): state, ("http", "static_dir"): static})
    else:
        text, state = archived, _text(_table(tomllib.loads(archived), "state").get("dir")) or "."
    return Layout(config_path, (config_path.parent / state).resolve()), text.encode()


def _same(path: Path, spool: IO[bytes], size: int) -> bool:
    """Whether the file at ``path`` holds the ``size`` bytes ``spool`` does."""
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size != size:
                return False
            spool.seek(0)
            while chunk := f.read(CHUNK):
                if spool.read(len(chunk)) != chunk:
                    return False
            return True
    except OSError:
        return False
    finally:
        spool.seek(0)


def staged_config(staged: Staged) -> bytes:
    spool = staged.content[CONFIG.name]
    spool.seek(0)
    data = spool.read()
    spool.seek(0)
    return data


def plan(
    staged: Staged, layout: Layout
) -> tuple[list[tuple[Member, Path]], list[Path], list[Path]]:
    """Where every member goes; the files there now that restore would change (the config
    aside: a fresh install has one); the files vigil writes in the state dir that the
    archive lacks (restore --force removes them: the same people, no one more)."""
    dests = [
        (m, layout.config if m.kind == "config" else layout.path(m.place))
        for m in staged.manifest.members
    ]
    changed = [
        dest
        for m, dest in dests
        if m.kind != "config"
        and (dest.exists() or dest.is_symlink())
        and not _same(dest, staged.content[m.place.name], m.size)
    ]
    others = [layout.state / name for name, _kind in STATE_FILES]
    if any(m.kind == "audit" for m in staged.manifest.members):
        live, keep = audit_place(tomllib.loads(staged_config(staged).decode()))
        path = layout.path(live)
        others += [path] + [path.with_name(f"{path.name}.{i}") for i in range(1, keep + 1)]
    have = {dest for _m, dest in dests}
    stale = [p for p in others if p not in have and (p.exists() or p.is_symlink())]
    return dests, changed, stale


def _mkdirs(directory: Path, layout: Layout, own: Owner, created: list[Path]) -> None:
    """``directory`` and its missing parents: the state dir and the config's 0750, others
    (``devices.local``, the secrets) 0700; the service's when root."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(mode=0o750 if d in (layout.state, layout.config.parent) else 0o700)
        created.append(d)
        if own.uid is not None and own.gid is not None:
            os.chown(d, own.uid, own.gid)


def _write_temp(dest: Path, source: IO[bytes], kind: str, own: Owner) -> Path:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.restore.")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            source.seek(0)
            while chunk := source.read(CHUNK):
                f.write(chunk)
            f.flush()
            if own.uid is not None and own.gid is not None:
                uid = own.config_uid if kind == "config" else own.uid
                os.fchown(f.fileno(), uid if uid is not None else -1, own.gid)
            os.fchmod(f.fileno(), MODES[kind])
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


@dataclass(frozen=True, slots=True)
class Restored:
    layout: Layout
    files: int
    removed: int


def restore(staged: Staged, config_path: Path, force: bool, say: Callable[[str], None]) -> Restored:
    """Put a validated archive in place for the vigil of ``config_path``; BackupError if
    a vigil runs there or (without ``force``) it holds other state; nothing written then."""
    layout, config_text = target_layout(config_path.absolute(), staged_config(staged))
    pid = pidfile.running(layout.state)
    if pid is not None:
        raise BackupError(
            f"vigil (pid {pid}) runs on {layout.state}: stop it first"
            " (sudo systemctl stop vigil), restore, then start it"
        )
    dests, changed, stale = plan(staged, layout)
    there = changed + stale
    if there and not force:
        more = f" and {len(there) - 3} more" if len(there) > 3 else ""
        raise BackupError(
            f"this machine has state of its own ({', '.join(map(str, there[:3]))}{more}):"
            " restore --force replaces it with the backup's"
        )
    own = owner(layout.state)
    created: list[Path] = []
    temps: list[tuple[Path, Path]] = []
    try:
        for m, dest in dests:
            _mkdirs(dest.parent, layout, own, created)
            source = io.BytesIO(config_text) if m.kind == "config" else staged.content[m.place.name]
            temps.append((_write_temp(dest, source, m.kind, own), dest))
    except OSError as e:
        for tmp, _dest in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        where = e.filename or config_path
        raise BackupError(f"{where}: cannot write: {e.strerror}; nothing was changed") from None
    for tmp, dest in temps:
        os.replace(tmp, dest)
    for path in stale:
        path.unlink()
        say(f"removed {path} (not in the backup)")
    for directory in sorted({dest.parent for _tmp, dest in temps} | {p.parent for p in stale}):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return Restored(layout, len(temps), len(stale))
