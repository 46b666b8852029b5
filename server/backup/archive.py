"""The backup archive: what goes in, read consistently from a running vigil; reading one back.

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
state dir, or an absolute path: as the config names it, so that the
restored config finds it), what it is (``kind``: config, secret, public,
audit), its size and sha256. No encryption: the archive must be kept like
the secrets it holds. The file is created 0600 with ``O_EXCL`` (never
readable by others, never over an existing file) and removed if the backup
fails.

Consistency with a running vigil (it need not stop). Every file is read
whole from one open file descriptor, so a file vigil replaces by rename
meanwhile (the users file, the certificate) is read as one version, old or
new, never a mix. Files that belong together (a certificate and its key,
``devices.local.toml`` and the secrets it names) are read in whole passes,
again until two passes in a row read the same bytes (at most ``PASSES``):
the archive holds a set of files that was there, unchanged, for the length
of one pass. The audit log is append-only: each of its files is opened
once and taken up to its last whole line at that moment (a record is one
line, fsync'd before it is acknowledged); a rotation while they are opened
(a name that no longer has the file it had) makes it open them again.

Reading an archive checks everything before a caller writes anything: the
whole gzip stream first (its CRC-32 and length catch a truncated file or a
flipped byte in the data), then every tar member a regular file that the
manifest lists with the same size and sha256, the manifest's format and
version, and every member's place (no path that climbs out of its anchor).
Members are spooled (in memory up to ``MAX_MEMBER``, then a temporary file).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import socket
import stat
import tarfile
import tempfile
import tomllib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from server import config as configmod
from server.web import certificate

FORMAT = "vigil-backup"
VERSION = 1
MANIFEST = "vigil-backup.json"
PASSES = 5  # whole reads of the small files before giving up on a quiet moment
MAX_MEMBER = 1 << 20  # bytes of any member but the audit log (configs, secrets, PEM files)
CHUNK = 1 << 16

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


CONFIG = Place("config", "config.toml")  # the config file itself, whatever its name


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


# -- the pure core: where a configured path goes, what the config names, the manifest


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


def toml_table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    return value if isinstance(value, dict) else {}


def toml_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def state_of(raw: dict[str, Any]) -> str:
    """``[state] dir`` as config.toml (``raw``, parsed) gives it."""
    return toml_str(toml_table(raw, "state").get("dir")) or "."


def config_files(raw: dict[str, Any]) -> list[tuple[Place, str]]:
    """The files config.toml (``raw``, parsed) names that make this vigil itself."""
    out: list[tuple[Place, str]] = []
    devices = toml_table(raw, "control").get("devices", [])
    for entry in devices if isinstance(devices, list) else []:
        path = toml_str(entry.get("secret_file")) if isinstance(entry, dict) else ""
        if path:
            out.append((place("config", path, "[[control.devices]] secret_file"), "secret"))
    named = (
        ("tls", "cert", "public"),
        ("tls", "key", "secret"),
        ("mqtt", "password_file", "secret"),
        ("mqtt", "ca_file", "public"),
    )
    for section, key, kind in named:
        path = toml_str(toml_table(raw, section).get(key))
        if path:
            out.append((place("config", path, f"[{section}] {key}"), kind))
    return out


def device_files(raw: dict[str, Any]) -> list[tuple[Place, str]]:
    """The secret files ``devices.local.toml`` (``raw``, parsed) names (state dir relative)."""
    devices = raw.get("devices", [])
    out = []
    for entry in devices if isinstance(devices, list) else []:
        path = toml_str(entry.get("secret_file")) if isinstance(entry, dict) else ""
        if path:
            out.append((place("state", path, "devices.local.toml secret_file"), "secret"))
    return out


def audit_place(raw: dict[str, Any]) -> tuple[Place, int]:
    """The audit log's place and how many rotated files it keeps, as config.toml says."""
    audit = toml_table(raw, "audit")
    path = toml_str(audit.get("path")) or "var/audit.jsonl"
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
    if type(version) is not int or version != VERSION:
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
    if [m.place for m in members if m.kind == "config"] != [CONFIG]:
        raise BackupError(f"damaged: {MANIFEST} lists no config file")
    return Manifest(VERSION, *header, tuple(members))


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


def _one_pass(config_path: Path) -> tuple[Layout, Files]:
    """Every small file, read once: the config first, then what it names."""
    config = _read(config_path, "config")
    raw = _toml(config, str(config_path))
    state_dir = (config_path.parent / state_of(raw)).resolve()
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
                spool = tempfile.SpooledTemporaryFile(MAX_MEMBER)  # noqa: SIM115 (Staged.close closes it)
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
