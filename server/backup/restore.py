"""Restore: a validated archive (``server.backup.archive``) put in place on this machine.

Where files go. The config goes to ``--config``; state files into the state
dir of this machine's config; files the config names by a relative path
beside the restored config; absolute paths to the same path. The config
written is the archive's, but for ``[state] dir`` and ``[http]
static_dir``, which keep this machine's values (they say where this install
keeps things, a git clone or /etc/vigil + /var/lib/vigil, not who the
device is); with no config here yet, the archive's as it is.

When it refuses, nothing is written: a vigil running on the target state
dir (its pid file is locked), or state of this machine's own that the
archive would change (a users file, devices, a certificate, secrets, an
audit log that differ from the archive's) unless ``force``. The config
does not count: a fresh install has one. With ``force``, the files vigil
writes in its state dir that the archive lacks are removed (the same
people, no one more; other files in the state dir stay).

How. Every member is first written to a temporary file beside its
destination, with its final mode (secrets 0600, certificates 0644, the
config 0640) and owner, and fsync'd; only when all are written are they
renamed into place, then the directories fsync'd. Each file is replaced
atomically, and a failure while writing (a full disk) removes the
temporary files and leaves everything as it was. Run as root, files
belong to the service's user ``vigil`` (else the state dir's owner), the
config to root with the service's group, as ``make install`` leaves them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from server.backup.archive import (
    CHUNK,
    CONFIG,
    MODES,
    STATE_FILES,
    BackupError,
    Layout,
    Member,
    Staged,
    audit_place,
    state_of,
    toml_str,
    toml_table,
)
from server.base import pidfile

SERVICE_USER = "vigil"  # owns what a restore run as root writes (make install's user)


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
    if any(toml_table(parsed, table).get(key) != value for (table, key), value in layout.items()):
        raise BackupError(
            f"cannot keep this machine's {keys} in the backed-up config ({why}): restore"
            " with --config of a new file, then set them in it"
        )
    return out


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
        return Owner(st.st_uid, st.st_gid, 0)
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
        state = state_of(here)
        static = toml_str(toml_table(here, "http").get("static_dir")) or "static"
        text = relayout(archived, {("state", "dir"): state, ("http", "static_dir"): static})
    else:
        text, state = archived, state_of(tomllib.loads(archived))
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
            uid = own.config_uid if d == layout.config.parent else own.uid
            os.chown(d, uid if uid is not None else -1, own.gid)


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
