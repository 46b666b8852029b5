"""Files only their owner may read: device secrets, the users file, the MQTT password."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def check_private(path: Path, mode: int) -> None:
    """ValueError if a file of ``mode`` at ``path`` is readable by others than its owner."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: other users may read it (chmod 600 {path})")


def read_private(path: Path) -> str:
    """The start of ``path``; ValueError if unreadable or readable by others."""
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read(4096).decode("utf-8", "replace")
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    check_private(path, mode)
    return text
