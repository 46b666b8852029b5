"""A device's secret: how it is written and read (README, "Devices").

``add-device`` makes 256 random bits and writes them as hex digits to a file
only its owner may read; both vigil (``config``) and the agent read it with
``read_secret_file``. The secret never crosses the wire: it is the pre-shared
key of the sealed channel's handshake (``server.link.seal``).
"""

from __future__ import annotations

from pathlib import Path

from server.base.private import read_private

SECRET_BYTES = 32  # what add-device makes: 256 bits
MIN_SECRET_BYTES = 16  # what a declared secret must have at least: 128 bits


def parse_secret(text: str) -> bytes:
    """The secret written as hex digits (surrounding white space ignored); ValueError if not."""
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError("must hold the secret as hex digits") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the secret has {len(secret) * 8} bits, at least {MIN_SECRET_BYTES * 8} are needed"
        )
    return secret


def read_secret_file(path: Path) -> bytes:
    """The secret in ``path`` (hex); ValueError if unreadable, too short or readable by others."""
    text = read_private(path)
    try:
        return parse_secret(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
