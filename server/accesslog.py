"""The access log: one Common Log Format line (plus the user) per response.

``addr - user [time] "METHOD target HTTP/x.y" status bytes``. Lines are
collected in memory and written with one ``write`` per loop pass
(``flush``, called at the end of the pass): the ``logging`` module's cost
per call was a quarter of a whole request here, a string join is not.
Lines of one pass keep their order; they appear at most one pass late.
"""

from __future__ import annotations

import os


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

    def flush(self) -> None:
        if self._lines:
            data = "".join(self._lines).encode("utf-8", "replace")
            self._lines.clear()
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except BlockingIOError:
                pass  # a stderr pipe that is full: drop the rest rather than block the loop
