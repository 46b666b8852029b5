"""The access log: one Common Log Format line (plus the user) per response.

``addr - user [time] "METHOD target HTTP/x.y" status bytes``. Lines are
collected in memory and written with one ``write`` once a second (the
server's sweep calls ``flush``), when ``MAX_LINES`` are waiting, and at
stop: the ``logging`` module's cost per call was a quarter of a whole
request here, a string join is not. Lines keep their order; they appear
at most a second late, and a ``kill -9`` loses at most that second (the
audit log, not this, is the durable record of who did what).
"""

from __future__ import annotations

import os

MAX_LINES = 256


class AccessLog:
    """Collects lines; ``flush`` writes them to file descriptor ``fd`` (stderr)."""

    __slots__ = ("_fd", "_lines")

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._lines: list[str] = []

    def record(
        self, addr: str, user: str, clf_time: str, line: str, status: int, size: int
    ) -> None:
        self._lines.append(f'{addr} - {user} [{clf_time}] "{line}" {status} {size}\n')
        if len(self._lines) >= MAX_LINES:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            data = "".join(self._lines).encode("utf-8", "replace")
            self._lines.clear()
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except BlockingIOError:
                pass  # a stderr pipe that is full: drop the rest rather than block the loop
