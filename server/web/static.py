"""Static files from ``http.static_dir``: path resolution, a file cache, conditional GET.

Resolution is pure (``resolve``): a request path is percent-decoded once and
refused if it could name anything outside the directory: ``..`` or ``.``
segments, encoded ``/`` or ``\\`` (``%2f``, ``%5c``), backslashes, NUL,
invalid percent-encoding. ``FileCache`` then stats the file; the real path
(symlinks resolved) must still lie inside the directory, so a symlink that
points out is refused too. Files up to ``max_cached`` bytes stay in memory
and are re-read when their inode, size or mtime change; a file served from
memory is looked at again (one ``stat``) at most every ``RECHECK`` seconds,
so an edit shows within a second and a busy panel costs no system call per
request.

Validators (RFC 9110 §8.8, §13.1): a strong ETag from inode, mtime and
size; Last-Modified from mtime; If-None-Match wins over If-Modified-Since.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from server.base.dates import http_date, parse_http_date
from server.web.responses import COMMON_HEADERS

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}


def content_type(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return _TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def resolve(path: str) -> str | None:
    """The file a request path names, relative to the static dir, or None if refused."""
    if not path.startswith("/"):
        return None
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered:
        return None
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\\" in decoded or "\0" in decoded:
        return None
    parts = decoded.split("/")[1:]
    if any(p in (".", "..") for p in parts):
        return None
    rel = "/".join(p for p in parts if p)
    if not rel or decoded.endswith("/"):
        rel = f"{rel}/index.html" if rel else "index.html"
    return rel


@dataclass(frozen=True, slots=True)
class File:
    body: bytes
    etag: str
    last_modified: str
    mtime: int  # whole seconds, for If-Modified-Since
    key: tuple[int, int, int]  # (inode, size, mtime_ns): changes when the file does
    headers: tuple[tuple[str, str], ...]  # of its 200 and 304 responses


def not_modified(file: File, headers: dict[str, str]) -> bool:
    """True if the conditional headers say the client's copy is current (→ 304)."""
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or file.etag in tags
    ims = headers.get("if-modified-since")
    since = parse_http_date(ims) if ims is not None else None
    return since is not None and file.mtime <= since


RECHECK = 1.0  # seconds a cached file is served without a stat


class FileCache:
    """Files below ``root``, kept in memory up to ``max_cached`` bytes each."""

    def __init__(self, root: Path, max_cached: int = 1 << 20) -> None:
        self.root = os.path.realpath(root)
        self.max_cached = max_cached
        self._files: dict[str, File] = {}
        self._checked: dict[str, float] = {}  # when each cached file was last stat'ed

    def get(self, rel: str, now: float | None = None) -> File | None:
        """The current content of ``rel``, or None if missing, not a file or outside.

        ``now`` (monotonic seconds): a file cached and looked at less than
        ``RECHECK`` seconds before is served without looking again.
        """
        if now is not None:
            cached = self._files.get(rel)
            if cached is not None and now - self._checked[rel] < RECHECK:
                return cached
            self._checked[rel] = now
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._files.get(rel)
        if cached is not None and cached.key == key:
            return cached
        if not os.path.realpath(full).startswith(self.root + os.sep):
            return None
        try:
            with open(full, "rb") as f:
                body = f.read()
        except OSError:
            return None
        etag = f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
        last_modified = http_date(st.st_mtime)
        ctype = content_type(rel)
        file = File(
            body=body,
            etag=etag,
            last_modified=last_modified,
            mtime=int(st.st_mtime),
            key=key,
            headers=(
                ("Content-Type", ctype),
                ("ETag", etag),
                ("Last-Modified", last_modified),
                ("Cache-Control", "private, no-cache"),
                *COMMON_HEADERS,
            ),
        )
        if st.st_size <= self.max_cached:
            self._files[rel] = file
        return file
