"""systemd's notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET``.

sd_notify(3) without libsystemd: each state change is one ``AF_UNIX``
``SOCK_DGRAM`` datagram of newline-separated ``KEY=VALUE`` lines, sent to
the path in ``$NOTIFY_SOCKET`` (a leading ``@`` names a socket in the
abstract namespace: ``\\0`` on the wire). vigil sends

- ``READY=1`` once it listens (``Type=notify``: systemd starts what depends
  on vigil only then, and ``systemctl start`` returns only then);
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC now, which
  systemd ≥ 253 wants for ``Type=notify-reload``), then ``READY=1``, around
  a SIGHUP reload;
- ``STOPPING=1`` when a stop begins;
- ``WATCHDOG=1`` from a loop timer at half of ``$WATCHDOG_USEC`` when that is
  set and ``$WATCHDOG_PID`` is unset or this process: a loop that hangs
  stops pinging, and ``WatchdogSec=`` restarts it.

A send never blocks (the socket is non-blocking) and never fails the
server: without ``$NOTIFY_SOCKET`` nothing is sent, and a send that fails
(systemd gone, queue full) is logged once and dropped. The environment is
read once (``from_environ``) and passed in, so tests give their own.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def address(value: str) -> str | bytes:
    """The ``sendto`` address of ``$NOTIFY_SOCKET``: a path, or an abstract name (bytes)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``$WATCHDOG_USEC``), or None: no watchdog."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None  # the watchdog is someone else's (our parent's, say)
    return int(usec) / 2e6


class Notifier:
    """Sends state changes to systemd; does nothing when ``socket_path`` is None."""

    def __init__(self, socket_path: str | None = None, watchdog: float | None = None) -> None:
        self.watchdog_interval = watchdog
        self._address = address(socket_path) if socket_path else None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        path = environ.get("NOTIFY_SOCKET") or None
        return cls(path, watchdog_interval(environ, os.getpid()) if path else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """One datagram of ``fields`` (``"KEY=VALUE"``); dropped with one log line if it fails."""
        if self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as e:
            if not self._failed:
                log.warning("systemd notify (%s) failed: %s", fields[0], e.strerror or e)
            self._failed = True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
