"""The running server's pid, for the command line: ``vigil.pid`` in the state dir.

The server writes its pid into the file and keeps it open with an
exclusive ``flock`` for as long as it runs; ``running`` answers with the
pid only while that lock is held. So a file left behind by a ``kill -9``
or a crash never makes the command line signal some other process that
got the same pid: the kernel drops the lock with the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

PID_FILE = "vigil.pid"


class AlreadyRunning(Exception):
    """Another vigil holds the pid file of this state dir; str() is one line."""


def hold(state_dir: Path) -> int:
    """Lock and write ``state_dir/vigil.pid``; the fd to keep open. AlreadyRunning, OSError."""
    path = state_dir / PID_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"{path}: another vigil runs on this state dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def release(state_dir: Path, fd: int) -> None:
    """Remove the pid file (still ours: we hold its lock) and close it."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / PID_FILE).unlink()
    os.close(fd)


def running(state_dir: Path) -> int | None:
    """The pid of the vigil running on ``state_dir``, or None (none, or the file is stale)."""
    try:
        fd = os.open(state_dir / PID_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: the server is alive
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        return None  # nobody holds it: a stale file
    finally:
        os.close(fd)
