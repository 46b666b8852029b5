"""The audit log: append-only JSON lines, fsync'd before anything acknowledges them.

Who did what: logins and leaves, commands with their outcome and latency,
chat messages. ``append`` writes the line at once (one ``write``, so a
reader or a ``kill -9`` sees whole lines) and ``sync`` makes every line
written so far durable with one ``fsync``. The server calls ``sync`` at the
end of each loop pass, before any connection's output of that pass is
written (``server.base.loop``, ``Server.end_of_pass``): the HTTP answer or event
that acknowledges an action leaves only after its record is on disk, and
all the records of one pass share one fsync (group commit).

Budgets (``[audit]``; what an attacker who may chat or command can make it cost):

- **One record** is at most ``MAX_RECORD`` (16 KiB) of JSON. A bigger one is
  cut, never refused: its largest field first (ties: the first in the
  record), a string to a prefix ending in ``…``, any other value to
  ``{"truncated": N}`` (N: the bytes of JSON it had), until the line fits
  (a string cut before a later field went gets the room back); if it
  still does not (thousands of fields), everything but ``seq``,
  ``time`` and ``type`` goes and ``"truncated": N`` says how big it was. A
  value nested deeper than ``jsontext.MAX_DEPTH`` (which ``loads`` would
  refuse at the next start) is replaced the same way. NaN and ±Infinity
  (a device's reading) become ``null`` and a lone surrogate ``?``: an
  append never raises for what is in the record, only for the disk.
  ``append`` returns the record as written; watchers get that too.
- **Memory**: the newest records are kept as their encoded lines (bytes, not
  parsed objects) in a deque of at most ``memory_bytes`` (1 MiB), each line
  counted with ``RECORD_OVERHEAD`` for its object and deque slot; the oldest
  are dropped. ``newest_json`` builds ``GET /api/audit``'s body by joining
  them: no parsing, so the answer costs at most ``memory_bytes`` however
  the records were made. Chat keeps its last ``CHAT_HISTORY`` (100)
  messages as dicts besides, for ``GET /api/chat`` (under 100 KB with the
  API's 500-character messages; at most 100 x ``MAX_RECORD``).
- **Disk**: the live file rotates before the write that would take it past
  ``file_bytes`` (8 MiB): ``audit.jsonl`` → ``audit.jsonl.1`` → … →
  ``.{keep_files}`` (3), the oldest deleted. Every file is at most
  ``file_bytes`` (a record is far smaller than the smallest allowed
  ``file_bytes``, 64 KiB), so the log takes at most (1 + ``keep_files``) x
  ``file_bytes`` (32 MiB by default). Older records are deleted: copy the
  rotated files elsewhere to keep them longer. If a rotation fails (one
  warning), the live file grows on and the rotation is tried again at the
  next pass that writes.

Rotation runs in ``append``, before the write that would pass
``file_bytes``, not after the pass's fsync in ``sync``: one pass may write
many records, and the file would overshoot by all of them. Its own fsync
makes it as safe. The steps, and why no acknowledged record is lost or
doubled: (1) fsync the live file (every line in it durable, so a rotated
file is always whole);
(2) delete ``.k`` beyond ``keep_files``, then move ``.k`` → ``.k+1`` from
the first missing k downwards (a gap a crash left is filled, nothing
older is pushed out twice); (3) rename live → ``.1``; (4) open a new live
file; (5) fsync the directory. Renames move whole files and never copy, so
a crash between any two steps leaves each record in exactly one file
(tests/test_audit.py crashes at each step). A crash after (3) leaves no
live file: the next start makes one and reads on from ``.1``. Records
written to the new file are acknowledged only by a ``sync`` that comes
after the directory fsync, so its name is durable before they are.

Start-up costs O(``memory_bytes``), not O(log): a torn last line (a write
a crash cut short: no newline at the end) is removed with ``ftruncate``
and one warning: it was never acknowledged, since each record is one
``write`` and acknowledged only after the fsync. Then only the newest
``memory_bytes`` of the log are read, from the end of the live file and,
if that is shorter, of ``.1``, ``.2``, … (the partial first line dropped),
each line with the strict ``jsontext.loads``; a damaged line is skipped
with a warning. ``seq`` continues from the highest ``seq`` read (chat ids
are ``seq``; if what was read holds no sound record, the files are read
backwards until one does), and chat history is the chat records among
what was read.
Measured (x86-64 VM, default budgets, 141-byte command records): start-up
on a 100 MB log reads 1 MiB in 70 to 95 ms, peak 2.4 MB (tracemalloc);
memory then holds 5,461 records in 0.97 MiB; ``append`` 15 µs with its
``write``; ``newest_json(1000)`` 32 µs for 141 KB.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from server.base.dates import iso_utc
from server.base.jsontext import MAX_DEPTH, depth, dumps, loads
from server.base.tally import SECONDS, Histogram

log = logging.getLogger(__name__)

CHAT_HISTORY = 100
MAX_RECORD = 16 * 1024  # bytes of one record's JSON, its newline not counted
RECORD_OVERHEAD = 48  # what a kept line costs beyond its length: bytes header, slot, rounding
_CORE = ("seq", "time", "type")  # never cut
_SCAN = 65536  # bytes read at a time going backwards (a torn line, the last seq)


def chat_message(record: dict[str, Any]) -> dict[str, Any]:
    """The public form of a chat record: ``{"id", "user", "text", "time"}``."""
    return {
        "id": record["seq"],
        "user": record.get("user"),
        "text": record.get("text"),
        "time": record.get("time"),
    }


def rotated(path: Path, k: int) -> Path:
    """The k-th rotated file of ``path``: ``audit.jsonl.1`` is the newest."""
    return path.with_name(f"{path.name}.{k}")


# -- one record: clean, encode, cut to MAX_RECORD (pure) -----------------------


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats as None and lone surrogates as ``?``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _encode(value: Any) -> bytes:
    return dumps(value).encode("utf-8")


def _too_deep(body: bytes) -> bool:
    """Whether ``loads`` would refuse ``body`` (our own JSON) for its nesting."""
    return depth(body.decode("utf-8")) > MAX_DEPTH


def _cut(text: str, budget: int) -> str:
    """The longest prefix of ``text`` plus ``…`` whose JSON takes at most ``budget`` bytes."""
    lo, hi = 0, min(len(text), max(budget, 0))  # each character is at least one byte
    while lo < hi:  # the longest fitting prefix length is in [lo, hi]
        mid = (lo + hi + 1) // 2
        if len(_encode(text[:mid] + "…")) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def encode_record(record: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The record as it will be written and its JSON line (no newline), at most MAX_RECORD.

    Raises only for a value JSON has no form for (a set, bytes): a bug of the caller.
    """
    try:
        body = _encode(record)
    except ValueError:  # NaN/Infinity, or a lone surrogate (UnicodeEncodeError)
        record = _clean(record)
        body = _encode(record)
    if len(body) <= MAX_RECORD and not _too_deep(body):
        return record, body
    whole = len(body)
    out = dict(record)
    sizes = {k: len(_encode(v)) for k, v in out.items() if k not in _CORE}
    cut: list[str] = []  # strings cut so far, in that order
    length = whole  # compact JSON: replacing a value changes the length by its own change
    for key in sorted(sizes, key=lambda k: -sizes[k]):  # the largest first; ties: record order
        value, over = out[key], length - MAX_RECORD
        if isinstance(value, str):
            if over <= 0:
                continue  # too deep, not too long: a string is never the reason
            out[key] = _cut(value, sizes[key] - over)
            cut.append(key)
        else:
            out[key] = {"truncated": sizes[key]}
        length += len(_encode(out[key])) - sizes[key]
        if length > MAX_RECORD:
            continue
        for done in cut:  # a string cut before a later field went: give it the room back
            now = len(_encode(out[done]))
            out[done] = _cut(record[done], now + MAX_RECORD - length)
            length += len(_encode(out[done])) - now
        body = _encode(out)
        if not _too_deep(body):
            return out, body
    out = {k: record[k] for k in _CORE if k in record}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"][:64]
    out["truncated"] = whole
    return out, _encode(out)


# -- the log (shell) -------------------------------------------------------------


class AuditLog:
    """The audit log at ``path`` and its rotated files; the module header has the budgets."""

    def __init__(
        self,
        path: Path,
        file_bytes: int = 8 * 1048576,
        keep_files: int = 3,
        memory_bytes: int = 1048576,
    ) -> None:
        self.path = path
        self.file_bytes, self.keep_files, self.memory_bytes = file_bytes, keep_files, memory_bytes
        self.chat: deque[dict[str, Any]] = deque(maxlen=CHAT_HISTORY)
        self.seq = 0
        self.dirty = False  # lines written since the last fsync
        self.fsync_seconds = Histogram(SECONDS)  # each pass's group commit (``/metrics``)
        # called with each record as it is written (the MQTT bridge's activity)
        self.watchers: list[Callable[[dict[str, Any]], None]] = []
        self._lines: deque[bytes] = deque()  # the newest records' JSON, oldest first
        self._held = 0  # what _lines costs: lengths plus RECORD_OVERHEAD each
        self._named = True  # our file is at ``path`` (not yet renamed to .1 by a rotation)
        self._dir_unsynced = False  # a rotation's renames not yet made durable
        self._may_rotate = True  # False after a failed rotation, until the next sync
        self._rotate_error: str | None = None  # the last failure, logged once
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open_live()
        self._size = self._remove_torn_tail()
        self._load()

    # -- start-up ---------------------------------------------------------------
    def _open_live(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)

    def _remove_torn_tail(self) -> int:
        """Cut the live file after its last newline; its new size."""
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return size
        end = size
        keep = 0
        while end > 0:  # a torn write is one record, or one pass of them
            start = max(0, end - _SCAN)
            newline = os.pread(self._fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        log.warning(
            "%s: removed a torn last line (%d bytes after byte %d): "
            "a write cut short by a crash, never acknowledged",
            self.path,
            size - keep,
            keep,
        )
        return keep

    def _files(self) -> Iterator[tuple[Path, int, int]]:
        """(path, fd, size) of the live file and of each rotated one there is, newest first."""
        yield self.path, self._fd, self._size
        for k in range(1, self.keep_files + 1):
            path = rotated(self.path, k)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # a gap a crash in a rotation left, or fewer files yet
            try:
                yield path, fd, os.fstat(fd).st_size
            finally:
                os.close(fd)

    def _tails(self) -> Iterator[tuple[Path, int, bytes]]:
        """(file, offset, whole lines) of the newest ``memory_bytes``, the newest file first."""
        budget = self.memory_bytes
        for path, fd, size in self._files():
            if budget <= 0:
                return
            take = min(size, budget)
            budget -= take
            start = size - take
            if start == 0:
                yield path, 0, _pread(fd, take, 0)
            else:  # from the byte before: a newline there means the first line is whole
                data = _pread(fd, take + 1, start - 1)
                first = data.find(b"\n") + 1  # 0: no newline, nothing whole
                yield path, start - 1 + first, data[first:] if first else b""

    def _load(self) -> None:
        damaged: list[tuple[Path, int]] = []
        for path, offset, data in reversed(list(self._tails())):
            for line in data.split(b"\n"):
                at, offset = offset, offset + len(line) + 1
                record = _parse(line)
                if record is None:
                    if line.strip():
                        damaged.append((path, at))
                    continue
                self.seq = max(self.seq, record["seq"])
                self._remember(line, record)
        if damaged:
            path, at = damaged[0]
            log.warning(
                "%s: byte %d: skipping a damaged audit record (%d in what was read)",
                path,
                at,
                len(damaged),
            )
        if not self._lines:  # nothing whole and sound in the window: seq must not restart
            self.seq = self._last_seq()

    def _last_seq(self) -> int:
        """The seq of the newest sound record in all the files, read backwards (0: none)."""
        for _path, fd, size in self._files():
            end, rest = size, b""
            while end > 0:
                start = max(0, end - _SCAN)
                lines = (_pread(fd, end - start, start) + rest).split(b"\n")
                rest = lines.pop(0) if start > 0 else b""
                for line in reversed(lines):
                    record = _parse(line)
                    if record is not None:
                        return int(record["seq"])
                end = start
        return 0

    def _remember(self, line: bytes, record: dict[str, Any]) -> None:
        self._lines.append(line)
        self._held += len(line) + RECORD_OVERHEAD
        while self._held > self.memory_bytes:
            self._held -= len(self._lines.popleft()) + RECORD_OVERHEAD
        if (
            record.get("type") == "chat"
            and isinstance(record.get("user"), str)
            and isinstance(record.get("text"), str)
        ):
            self.chat.append(chat_message(record))

    # -- writing ------------------------------------------------------------------
    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record (durable at the next ``sync``) and return it as written.

        Raises OSError if the line cannot be written whole (disk full); then
        nothing of it stays in the file.
        """
        record, body = encode_record(
            {"seq": self.seq + 1, "time": iso_utc(time.time()), "type": kind, **fields}
        )
        line = body + b"\n"
        if self._size + len(line) > self.file_bytes and self._size and self._may_rotate:
            self._try_rotate()
        try:
            written = os.write(self._fd, line)
        except OSError:
            self._drop_partial()
            raise
        if written != len(line):
            self._drop_partial()
            raise OSError(f"{self.path}: short write of an audit record")
        self._size += len(line)
        self.seq += 1
        self.dirty = True
        self._remember(body, record)
        for watch in self.watchers:
            watch(record)
        return record

    def _drop_partial(self) -> None:
        """After a failed write: cut what part of the line went in, so the next starts whole."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            log.warning("%s: could not cut a partly written record", self.path, exc_info=True)

    def sync(self) -> None:
        """fsync what was written since the last call (nothing to do: no syscall)."""
        self._may_rotate = True
        if self.dirty:
            self.dirty = False
            started = time.perf_counter()
            os.fsync(self._fd)
            self.fsync_seconds.observe(time.perf_counter() - started)
        if self._dir_unsynced:
            self._sync_dir()

    # -- rotation -----------------------------------------------------------------
    def _try_rotate(self) -> None:
        try:
            self._rotate()
        except OSError as e:
            self._may_rotate = False  # again at the next pass
            if str(e) != self._rotate_error:
                log.warning("%s: cannot rotate the audit log (it grows on): %s", self.path, e)
            self._rotate_error = str(e)
            return
        if self._rotate_error is not None:
            log.warning("%s: the audit log rotates again", self.path)
            self._rotate_error = None

    def _rotate(self) -> None:
        """Steps (1) .. (5) of the module header; any may raise OSError, and may be retried."""
        os.fsync(self._fd)  # (1)
        self.dirty = False
        if self._named:
            self._make_room()  # (2)
            os.rename(self.path, rotated(self.path, 1))  # (3)
            self._named = False
            self._dir_unsynced = True
        fd = self._open_live()  # (4); if it fails we write on in .1, synced as ever
        os.close(self._fd)
        self._fd, self._size, self._named = fd, os.fstat(fd).st_size, True
        self._dir_unsynced = True
        self._sync_dir()  # (5)

    def _make_room(self) -> None:
        """Free ``.1``: delete what is beyond ``keep_files``, shift the rest up to the first gap."""
        k = self.keep_files + 1
        while rotated(self.path, k).exists():  # keep_files was lowered
            os.unlink(rotated(self.path, k))
            k += 1
        gap = next(
            (k for k in range(1, self.keep_files + 1) if not rotated(self.path, k).exists()),
            None,
        )
        if gap is None:
            gap = self.keep_files
            os.unlink(rotated(self.path, gap))  # the oldest
        for k in range(gap - 1, 0, -1):
            os.rename(rotated(self.path, k), rotated(self.path, k + 1))

    def _sync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._dir_unsynced = False

    # -- reading ------------------------------------------------------------------
    def newest_json(self, limit: int) -> bytes:
        """``{"records":[…]}``: up to ``limit`` records, newest first, joined as kept (no parse)."""
        return b'{"records":[' + b",".join(islice(reversed(self._lines), limit)) + b"]}"

    def close(self) -> None:
        self.sync()
        os.close(self._fd)


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record on ``line``, or None if it is blank or not a strict JSON object with a seq."""
    if not line.strip():
        return None
    try:
        record = loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or type(record.get("seq")) is not int:
        return None
    return record


def _pread(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    parts = []
    while size > 0:
        part = os.pread(fd, size, offset)
        if not part:
            break
        parts.append(part)
        size -= len(part)
        offset += len(part)
    return b"".join(parts)
