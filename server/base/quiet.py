"""Log lines a client can cause, at most one a minute each: a flood must not fill the disk.

A hostile client can make the same line happen thousands of times a second
(refused connections, accept failures when file descriptors run out: 40,000
lines a second once, 587 MB of log in a minute). ``Throttled.log`` writes
the first line of a kind, then counts the rest and writes one summary line
with the count when ``interval`` has passed since the last line written.
Pure bookkeeping around a ``logging.Logger``; the caller passes ``now``.
"""

from __future__ import annotations

import logging


class Throttled:
    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}  # kind -> when its last line was written
        self._held: dict[str, int] = {}  # kind -> lines not written since

    def log(self, level: int, kind: str, now: float, msg: str, *args: object) -> None:
        """``msg % args`` at ``level``, unless a line of ``kind`` was written recently."""
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        if held:
            msg += f" (and {held} more like it in the last {now - last:.0f} s)"  # type: ignore[operator]
        self.logger.log(level, msg, *args)
