"""First run: no users → one operator with a random password; no certificate → one.

There is no well-known default password. The password is printed once, on
the terminal that ran ``make run``; only its scrypt hash is written, to
``users.local.toml`` next to the config (git-ignored, mode 0600), which the
config loader reads alongside ``[[auth.users]]``.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from server import certificate
from server.auth import hash_password
from server.config import LOCAL_USERS_FILE, Config

FIRST_USER = "admin"


def create_operator(config_path: Path) -> None:
    """Write users.local.toml beside ``config_path`` and tell the person at the terminal."""
    password = secrets.token_urlsafe(12)
    target = config_path.parent / LOCAL_USERS_FILE
    text = (
        "# Created by vigil on first run. Passwords are scrypt hashes from\n"
        "# `python -m server hash-password`; send SIGHUP or restart after editing.\n"
        f'[[users]]\nname = "{FIRST_USER}"\npassword = "{hash_password(password)}"\n'
        'role = "operator"\n'
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(
        f"""
vigil: first run: created an operator account (shown only this once)
    user:      {FIRST_USER}
    password:  {password}
  Only its hash is stored, in {target}.
  To change it:  printf %s 'NEW PASSWORD' | python -m server hash-password
  and put the printed line as `password` in that file (or add [[auth.users]]
  to config.toml), then restart vigil or send it SIGHUP.
""",
        file=sys.stderr,
        flush=True,
    )


def ensure_certificate(cfg: Config) -> None:
    """Make this device's own TLS certificate if it has none; show its fingerprint."""
    if not cfg.tls.enabled or cfg.tls.cert is not None:
        return
    if not certificate.ensure(cfg.path.parent):
        return
    cert, _key = certificate.location(None, None, cfg.path.parent)
    desc = certificate.describe(cert)
    print(
        f"""
vigil: made a TLS certificate for this device, {cert}
  SHA-256 fingerprint (compare it with what the browser shows):
    {desc.fingerprint}
  for: {", ".join(desc.names)}
  valid until {desc.not_after:%Y-%m-%d}; `python -m server tls-info` shows this again.
""",
        file=sys.stderr,
        flush=True,
    )
