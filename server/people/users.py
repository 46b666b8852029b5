"""People in ``users.local.toml``: the rules for passwords, and writing the file safely.

The file lives in the state dir (``[state] dir``) and is the one the
command line (``python -m server user add|passwd|del|list|totp``) and the first
run write; people in config.toml's ``[[auth.users]]`` are the config
author's and are only listed here. Only scrypt hashes are stored, and a
person's TOTP secret (``totp``, base32), which is why the file is 0600.

Writing is atomic: the whole new file goes to a temporary file in the same
directory (mode 0600), is fsync'd, then renamed over the old one, and the
directory is fsync'd. A write that fails (a full disk, say) removes the
temporary file and leaves the old file as it was: there is never a
half-written users file for the server to read. A symbolic link to nothing
(a file system not mounted) is an error, never replaced by a file. Run as
root (``sudo``), the new file gets the owner of the state dir, so the
server's own user can still read it.

A password is refused (``weakness``) when it is shorter than
``MIN_LENGTH`` characters or contains the user name (in any case).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from server.config import LOCAL_USERS_FILE, LOGOUT_FILE, RESERVED_USER, Account
from server.people.auth import has_control

MIN_LENGTH = 10
MAX_NAME = 64

HEADER = """\
# People who may log in to vigil (besides any [[auth.users]] in config.toml).
# Written by vigil: python -m server user add|passwd|del|list. Passwords are
# scrypt hashes; totp is a second factor's secret.
# A running vigil re-reads this file on SIGHUP.
"""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None."""
    if not name or len(name) > MAX_NAME:
        return f"a user name has 1 to {MAX_NAME} characters"
    if ":" in name or not name.isprintable() or any(c.isspace() for c in name):
        return "a user name has no ':', spaces or control characters"
    if name == RESERVED_USER:
        return f"{name!r} is vigil's own name (the safe-state commands it sends)"
    return None


def weakness(name: str, password: str) -> str | None:
    """Why ``password`` is too weak for ``name``, or None."""
    if len(password) < MIN_LENGTH:
        return f"too short: a password has at least {MIN_LENGTH} characters"
    if name.casefold() in password.casefold():
        return "a password must not contain the user name"
    if has_control(password):
        return "a password has no control characters (HTTP Basic cannot carry them)"
    return None


def render(users: Sequence[Account]) -> str:
    """The text of a users file with ``users``."""
    parts = [HEADER]
    for u in users:
        parts.append(
            f"\n[[users]]\nname = {json.dumps(u.name, ensure_ascii=False)}\n"
            f'password = "{u.password}"\nrole = "{u.role}"\n'
            + (f'totp = "{u.totp}"\n' if u.totp else "")
        )
    return "".join(parts)


def save(state_dir: Path, users: Sequence[Account]) -> Path:
    """Replace ``state_dir/users.local.toml`` atomically with ``users``; OSError if it fails."""
    return replace(state_dir, LOCAL_USERS_FILE, render(users))


LOGOUT_HEADER = """\
# People whose sessions begun before a time must end (epoch seconds), written by
# python -m server user logout NAME; a running vigil applies it on SIGHUP.
[logout]
"""


def save_logouts(state_dir: Path, entries: dict[str, float]) -> Path:
    """Replace ``state_dir/logout.local.toml`` atomically with ``entries``."""
    lines = "".join(f"{json.dumps(n, ensure_ascii=False)} = {t:.3f}\n" for n, t in entries.items())
    return replace(state_dir, LOGOUT_FILE, LOGOUT_HEADER + lines)


def replace(state_dir: Path, name: str, text: str) -> Path:
    """Replace ``state_dir/name`` atomically with ``text`` (mode 0600); OSError if it fails."""
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    target = state_dir / name
    if target.is_symlink() and not target.exists():  # config.local_users refuses it too
        raise FileNotFoundError(
            errno.ENOENT,
            f"a symbolic link to {os.readlink(target)}, which does not exist",
            str(target),
        )
    data = text.encode()
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if os.geteuid() == 0:
                owner = os.stat(state_dir)
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
