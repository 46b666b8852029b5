"""HTTP Basic authentication (RFC 7617), password hashes, lockout and the allow-list.

Pure: the caller passes the header value, the peer address and ``now``.

- Passwords are stored only as ``scrypt$N$r$p$salt$hash`` (base64, stdlib
  ``hashlib.scrypt``); verification compares in constant time.
- A header that logged in is a session (``people.sessions``): the same
  header again costs one SHA-256 and one lookup, and nothing is parsed.
  A session that ended answers ``ENDED`` with why (never a failure).
- A person with a second factor types their password followed by the
  current 6-digit code (``split_code``): both must be right and the code's
  time step unused (``UsedSteps``); anything else is a failure like a wrong
  password (the lockout, the hash budget), and the answer never says which
  part was wrong. Their logins are never cached: each costs one scrypt.
- For everyone else a verified ``user:password`` is cached under its
  SHA-256, so that a new session of a known password (another browser, a
  re-spelling of the header, a login after a session ended) costs no
  scrypt. The cache holds successes only and is rebuilt with the user
  table (SIGHUP), which also ends the sessions of people whose password or
  second factor changed.
- Step-up (``step_up``): a command that asks to confirm needs a fresh proof,
  the current code (one use, as at login) or without a second factor the
  password; a wrong one counts like a wrong password.
- Unknown user names cost one scrypt too, so timing does not tell which
  names exist.
- Lockout: ``failures`` wrong passwords within ``window`` seconds for one
  (address, user name) pair lock that pair for ``window`` seconds, even
  with the right password (429 + Retry-After); other names from the same
  address are unaffected.
- Failed verifications are rationed (``HashBudget``): scrypt runs on the
  server's only thread, so every verification stalls everyone for its
  duration (~50 ms here, ~0.5 s on a Pi). Failed ones may take at most the
  share ``auth.hash_share_address`` of wall time for one client address and
  ``auth.hash_share_total`` for the whole server, with a burst of
  ``lockout_failures`` for an address (mistyping up to the lockout is
  never "busy") and twice that for the server; past that the answer is
  429 + Retry-After without hashing, and it does not count toward the
  lockout. Shares are of time, so the limit follows the machine's own hash
  cost: logged-in users (cache hits) keep the rest of the CPU whatever
  unauthenticated clients send. Successful verifications are not charged
  (colleagues behind one address log in freely; their next requests hit
  the cache).
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import os
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from server.base.buckets import Bucket, Rate, retry_after
from server.config import Account
from server.people.sessions import (
    Ended,
    Session,
    Sessions,
    UsedSteps,
    User,
    session_key,
    split_code,
    totp_step,
)

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MAX_LOCKOUT_ENTRIES = 10000


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form of ``password``: ``scrypt$N$r$p$salt$hash``."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches the ``stored`` hash string (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except ValueError:  # binascii.Error is a ValueError
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """A hash to verify unknown names against, so they cost what known ones do."""
    return hash_password("", salt=b"vigil-dummy-salt")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """Does ``text`` hold a control character? RFC 7617 §2 forbids them in user names
    and passwords, and scrypt could not tell them apart at the end of a password: it
    keys an HMAC with it, and HMAC pads a short key with zeros ("pw" = "pw\\0")."""
    return _CONTROL.search(text) is not None


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic …`` value, or None if malformed."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:  # a non-ASCII token is a ValueError (binascii.Error is one too)
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user or has_control(decoded):
        return None
    return user, password


class Verdict(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no or malformed credentials: 401
    WRONG = "wrong"  # unknown user, wrong password or code: 401
    ENDED = "ended"  # the header of a session that ended: 401 saying why (not a failure)
    LOCKED = "locked"  # too many failures: 429
    BUSY = "busy"  # the hash budget is spent: 429, try again shortly


@dataclass(frozen=True, slots=True)
class AuthResult:
    verdict: Verdict
    user: User | None = None
    name: str = ""
    retry_after: int = 0
    session: Session | None = None
    why: str = ""  # ENDED: why the session ended


@dataclass(slots=True)
class _Failures:
    times: deque[float]
    locked_until: float = 0.0


class HashBudget:
    """How many slow hashes an address, and the server, may cause per second.

    ``cost`` is the seconds one verification takes on this machine (the
    server measures it at start); ``per_address`` and ``total`` are shares
    of time; the rates in verifications per second follow.
    """

    def __init__(self, cost: float, per_address: float, total: float, burst: int) -> None:
        self.address_rate = per_address / cost
        self.total_rate = total / cost
        self.burst = burst
        self._total = Bucket(2 * burst, 0.0)
        self._addresses = Rate(self.address_rate, burst, _MAX_LOCKOUT_ENTRIES)

    def wait(self, addr: str, now: float) -> float:
        """0.0 if ``addr`` may have a verification now, else the seconds to wait."""
        return max(
            self._addresses.wait(addr, now),
            self._total.wait(self.total_rate, 2 * self.burst, now),
        )

    def charge(self, addr: str, now: float) -> None:
        """A verification from ``addr`` failed: it counts against both budgets."""
        self._addresses.charge(addr, now)
        self._total.tokens -= 1


class Authenticator:
    """Decides on one ``Authorization`` header; keeps the sessions, successes and failures."""

    def __init__(
        self,
        users: Iterable[Account],
        failures: int = 5,
        window: float = 60.0,
        budget: HashBudget | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.budget = budget
        self.sessions = sessions if sessions is not None else Sessions(1800, 43200, 8, 100)
        self.used = UsedSteps()
        self.step_up_window = 300.0
        self.operators_need_totp = False
        self.users: dict[str, Account] = {}
        self._failures: dict[tuple[str, str], _Failures] = {}
        self.update(users, failures, window)

    def update(
        self, users: Iterable[Account], failures: int, window: float, now: float = 0.0
    ) -> None:
        """A new user table and lockout rules (SIGHUP); failures so far are kept. The
        sessions of people removed, or whose password or second factor changed, end
        (``sessions.drain``); the others take any new role."""
        old, self.users = self.users, {u.name: u for u in users}
        self.max_failures = failures
        self.window = window
        self._cache: dict[bytes, User] = {}  # SHA-256 of "user:password" that verified
        changed: list[Session] = []
        for name, account in old.items():
            new = self.users.get(name)
            if new is None or (new.password, new.totp) != (account.password, account.totp):
                changed += self.sessions.of(name)
            else:
                for session in self.sessions.of(name):
                    session.user = user = self.user(new)
                    session.verdict = AuthResult(Verdict.OK, user, name, session=session)
        self.sessions.end(changed, "your account changed (a new password or second factor)", now)

    def user(self, account: Account) -> User:
        """Who ``account`` logs in as: an operator without a second factor is a viewer when
        ``[auth] operators_need_totp`` says so."""
        if self.operators_need_totp and account.role == "operator" and not account.totp:
            return User(account.name, "viewer")
        return User(account.name, account.role)

    def check(
        self, header: str | None, addr: str, now: float, wall: Callable[[], float]
    ) -> AuthResult:
        """The outcome for ``header`` from ``addr`` at ``now`` (``wall``: epoch seconds,
        asked only for a new login)."""
        if not header:
            return AuthResult(Verdict.MISSING)
        key = session_key(header)
        got = self.sessions.get(key, now)  # the common case: one hash, one lookup
        if type(got) is Session:
            if self._failures:
                retry = self._locked_for(addr, got.user.name, now)
                if retry:
                    return AuthResult(Verdict.LOCKED, name=got.user.name, retry_after=retry)
            return cast(AuthResult, got.verdict)  # made once, by _start
        if isinstance(got, Ended):
            if not got.retyped(now):
                got.refused = now
                return AuthResult(Verdict.ENDED, name=got.user, why=got.reason)
            self.sessions.forget(key)
        parsed = parse_basic(header)
        if parsed is None:
            return AuthResult(Verdict.MISSING)
        name, password = parsed
        if self._failures:
            retry = self._locked_for(addr, name, now)
            if retry:
                return AuthResult(Verdict.LOCKED, name=name, retry_after=retry)
        known = self.users.get(name)
        if known is not None and known.totp:
            return self._second_factor(known, password, key, addr, now, wall)
        credential = hashlib.sha256(f"{name}:{password}".encode()).digest()
        cached = self._cache.get(credential)
        if cached is not None:
            return self._start(key, cached, addr, now, wall(), False)
        busy = self._busy(addr, name, now)
        if busy is not None:
            return busy
        if verify_password(password, known.password if known else dummy_hash()) and known:
            user = self._cache[credential] = self.user(known)
            self._failures.pop((addr, name), None)
            return self._start(key, user, addr, now, wall(), False)
        return self._fail(addr, name, now)

    def _second_factor(
        self,
        known: Account,
        field: str,
        key: bytes,
        addr: str,
        now: float,
        wall: Callable[[], float],
    ) -> AuthResult:
        """The password followed by the current code: both right, the code's step unused."""
        busy = self._busy(addr, known.name, now)
        if busy is not None:
            return busy
        parts = split_code(field)
        right = verify_password(parts[0] if parts else field, known.password)
        epoch = wall()
        step = totp_step(known.totp, parts[1], epoch) if right and parts else None
        if step is None or not self.used.use(known.name, step):
            return self._fail(addr, known.name, now)
        self._failures.pop((addr, known.name), None)
        return self._start(key, self.user(known), addr, now, epoch, True)

    def _start(
        self, key: bytes, user: User, addr: str, now: float, wall: float, totp: bool
    ) -> AuthResult:
        session = self.sessions.start(key, user, addr, now, wall, totp)
        result = session.verdict = AuthResult(Verdict.OK, user, user.name, session=session)
        return result

    def _busy(self, addr: str, name: str, now: float) -> AuthResult | None:
        """429 without hashing while failed checks have spent the hash budget."""
        if self.budget is None:
            return None
        wait = self.budget.wait(addr, now)
        return AuthResult(Verdict.BUSY, name=name, retry_after=retry_after(wait)) if wait else None

    def step_up(
        self, session: Session, proof: str | None, addr: str, now: float, wall: float
    ) -> AuthResult:
        """May ``session`` send a command that asks to confirm? OK if ``proof`` (its person's
        current code, or without a second factor their password) is right, or was within
        ``step_up_window`` seconds; WRONG (counted like a wrong password) or MISSING if not."""
        name = session.user.name
        known = self.users.get(name)
        if known is None:
            return AuthResult(Verdict.WRONG, name=name)
        if not proof:
            fresh = session.stepped is not None and now - session.stepped <= self.step_up_window
            return AuthResult(Verdict.OK if fresh else Verdict.MISSING, session.user, name)
        retry = self._locked_for(addr, name, now) if self._failures else 0
        if retry:
            return AuthResult(Verdict.LOCKED, name=name, retry_after=retry)
        if known.totp:
            step = totp_step(known.totp, proof.strip(), wall)
            right = step is not None and self.used.use(name, step)
        else:
            busy = self._busy(addr, name, now)
            if busy is not None:
                return busy
            right = verify_password(proof, known.password)
        if not right:
            return self._fail(addr, name, now)
        session.stepped = now
        return AuthResult(Verdict.OK, session.user, name, session=session)

    def _locked_for(self, addr: str, name: str, now: float) -> int:
        entry = self._failures.get((addr, name))
        if entry is None or entry.locked_until <= now:
            return 0
        return max(1, int(entry.locked_until - now + 0.999))

    def _fail(self, addr: str, name: str, now: float) -> AuthResult:
        if self.budget is not None:
            self.budget.charge(addr, now)
        if len(self._failures) >= _MAX_LOCKOUT_ENTRIES:
            self.prune(now)
        entry = self._failures.setdefault((addr, name), _Failures(deque()))
        times = entry.times
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            entry.locked_until = now + self.window
            times.clear()
            return AuthResult(Verdict.LOCKED, name=name, retry_after=int(self.window))
        return AuthResult(Verdict.WRONG, name=name)

    def prune(self, now: float) -> None:
        """Forget failures older than the window and expired locks."""
        for key, entry in list(self._failures.items()):
            stale = not entry.times or entry.times[-1] <= now - self.window
            if stale and entry.locked_until <= now:
                del self._failures[key]
