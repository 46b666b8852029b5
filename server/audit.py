"""The audit log: append-only JSON lines, fsync'd before anything acknowledges them.

Who did what: logins and leaves, commands with their outcome and latency,
chat messages. ``append`` writes the line at once (one ``write``, so a
reader or a ``kill -9`` sees whole lines) and ``sync`` makes every line
written so far durable with one ``fsync``. The server calls ``sync`` at the
end of each loop pass, before any connection's output of that pass is
written (``server.loop``, ``Server.end_of_pass``): the HTTP answer or event
that acknowledges an action leaves only after its record is on disk, and
all the records of one pass share one fsync (group commit).

On start the whole file is read once to keep the newest records in memory
(``newest`` for ``GET /api/audit``, ``chat`` for ``GET /api/chat``). A line
that does not parse (the torn last line of a ``kill -9``) is skipped with a
warning; if the file does not end in a newline, one is written first so the
next record starts on a line of its own. Each record carries ``seq``, its
line number, which also serves as the id of a chat message.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.dates import iso_utc
from server.jsontext import dumps

log = logging.getLogger(__name__)

CHAT_HISTORY = 100


def chat_message(record: dict[str, Any]) -> dict[str, Any]:
    """The public form of a chat record: ``{"id", "user", "text", "time"}``."""
    return {
        "id": record["seq"],
        "user": record.get("user"),
        "text": record.get("text"),
        "time": record.get("time"),
    }


class AuditLog:
    def __init__(self, path: Path, keep: int = 1000) -> None:
        self.path = path
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.chat: deque[dict[str, Any]] = deque(maxlen=CHAT_HISTORY)
        self.seq = 0
        self.dirty = False  # lines written since the last fsync
        # called with each record as it is written (the MQTT bridge's activity)
        self.watchers: list[Callable[[dict[str, Any]], None]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        self._load()

    def _load(self) -> None:
        with open(self._fd, "rb", closefd=False) as f:
            data = f.read()
        for lineno, line in enumerate(data.splitlines(), 1):
            self.seq = lineno
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError:
                if line.strip():
                    log.warning("%s:%d: skipping a damaged audit record", self.path, lineno)
                continue
            self._remember(record)
        if data and not data.endswith(b"\n"):
            os.write(self._fd, b"\n")
            os.fsync(self._fd)

    def _remember(self, record: dict[str, Any]) -> None:
        self.recent.append(record)
        if record.get("type") == "chat":
            self.chat.append(chat_message(record))

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record (durable at the next ``sync``) and return it.

        Raises OSError if the line cannot be written whole (disk full).
        """
        record = {"seq": self.seq + 1, "time": iso_utc(time.time()), "type": kind, **fields}
        line = (dumps(record) + "\n").encode()
        if os.write(self._fd, line) != len(line):
            raise OSError(f"{self.path}: short write of an audit record")
        self.seq += 1
        self.dirty = True
        self._remember(record)
        for watch in self.watchers:
            watch(record)
        return record

    def sync(self) -> None:
        """fsync what was written since the last call (nothing to do: no syscall)."""
        if self.dirty:
            self.dirty = False
            os.fsync(self._fd)

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` records, newest first."""
        return [self.recent[-i] for i in range(1, min(limit, len(self.recent)) + 1)]

    def close(self) -> None:
        self.sync()
        os.close(self._fd)
