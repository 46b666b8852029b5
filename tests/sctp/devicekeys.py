"""The devices SCTP tests declare: their ids, their secrets, and where vigil reads them.

Every test device has a secret derived from its id (``secret``), so a test,
its vigil and its agents agree without passing files around. ``declare``
writes them the way ``python -m server add-device`` does (devices.local.toml
beside the config, one 0600 secret file each); ``agent_env`` is the
environment that gives a reference agent its secret (``VIGIL_DEVICE_SECRET``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

DEVICES = (
    "lamp-1",
    "lamp-2",
    "d1",
    "still-here",
    "meter",
    "v6",
    "after",
    "darn-1",
    "flood",
    "slow",
)
SECRET_ENV = "VIGIL_DEVICE_SECRET"


def secret(dev_id: str) -> bytes:
    return hashlib.sha256(b"vigil test device " + dev_id.encode()).digest()


def declare(directory: Path, ids: Iterable[str] = DEVICES) -> None:
    """Add ``ids`` to ``directory``/devices.local.toml, each with its secret file."""
    secrets_dir = directory / "devices.local"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    entries = []
    for dev_id in ids:
        path = secrets_dir / f"{dev_id}.secret"
        path.write_text(secret(dev_id).hex() + "\n")
        path.chmod(0o600)
        entries.append(f'[[devices]]\nid = "{dev_id}"\nsecret_file = "{path}"\n')
    with (directory / "devices.local.toml").open("a") as f:
        f.write("\n".join(entries))


def agent_env(dev_id: str, key: bytes | None = None) -> dict[str, str]:
    """This process's environment plus the secret of ``dev_id`` (or ``key``) for its agent."""
    return {**os.environ, SECRET_ENV: (secret(dev_id) if key is None else key).hex()}
