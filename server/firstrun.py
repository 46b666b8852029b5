"""First run: no users → one operator with a random password; no certificate → one.

There is no well-known default password. The password is printed once, on
the terminal that ran ``make run``; only its scrypt hash is written, to
``users.local.toml`` in the state dir (``[state] dir``: next to the config
in a git clone, git-ignored; mode 0600), which the config loader reads
alongside ``[[auth.users]]``.
"""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

from server.config import Account, Config
from server.people import users
from server.people.auth import hash_password
from server.web import certificate

FIRST_USER = "admin"


def create_operator(state_dir: Path) -> None:
    """Write users.local.toml in ``state_dir`` and tell the person at the terminal."""
    password = secrets.token_urlsafe(12)
    target = users.save(state_dir, [Account(FIRST_USER, hash_password(password), "operator")])
    print(
        f"""
vigil: first run: created an operator account (shown only this once)
    user:      {FIRST_USER}
    password:  {password}
  Only its hash is stored, in {target}.
  To change it:  python -m server user passwd {FIRST_USER}
  (more people: python -m server user add NAME [--role viewer]).
""",
        file=sys.stderr,
        flush=True,
    )


def ensure_certificate(cfg: Config) -> None:
    """Make this device's own TLS certificate if it has none; show its fingerprint.

    Made while the clock is not set (a Pi before time sync), it is made
    again once the clock is (``certificate.remake_reason``), and this says so.
    """
    if not cfg.tls.enabled or cfg.tls.cert is not None:
        return
    if not certificate.ensure(cfg.state.dir):
        return
    cert, _key = certificate.location(None, None, cfg.state.dir)
    desc = certificate.describe(cert)
    now = datetime.now(UTC)
    clock = ""
    if not certificate.clock_is_set(now):
        clock = (
            f"  The clock says {now:%Y-%m-%d %H:%M} UTC, which cannot be right (not set yet?):"
            "\n  vigil makes this certificate again once it is, with a new fingerprint.\n"
        )
    print(
        f"""
vigil: made a TLS certificate for this device, {cert}
  SHA-256 fingerprint (compare it with what the browser shows):
    {desc.fingerprint}
  for: {", ".join(desc.names)}
  valid until {desc.not_after:%Y-%m-%d}; `python -m server tls-info` shows this again.
{clock}""",
        file=sys.stderr,
        flush=True,
    )
