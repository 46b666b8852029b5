"""Sessions inside HTTP Basic, the second factor (TOTP) and its one-use rule.

Pure: the caller passes ``now`` (monotonic, for deadlines) and ``wall``
(epoch seconds: a TOTP code's time step, the ``since`` people read).

**A session** is what one login is worth: the exact ``Authorization`` header
value a browser (or curl) sends again with every request, known here only as
its SHA-256 (``session_key``). It ends when it has seen no request for
``idle`` seconds, when it is ``max_age`` seconds old, when its person logs
out, when an operator ends it, when the person's account changes (a new
password or second factor) or when it is pushed out by the budget: at most
``per_user`` sessions a person (their least recently used goes first) and
``total`` in all (the least recently used anywhere). After that the same
header gets 401, so the browser asks again.

Every end is kept in ``news`` until the server takes it (``drain``) to
audit it and close the connections that session had.

**An ended session's header** is remembered (``Ended``, at most ``total`` of
them, each for ``max_age``) so that its 401 says why ("you logged out",
"idle for 30 min"). For a person with a second factor that header can never
work again (its code is used). For a person without one it is the password
itself, which must work again once the person has typed it at the
browser's prompt; but the browser's automatic resend of its cached copy is
the same bytes. So such a header is refused until it has been refused once
and then not seen for ``RETYPE`` seconds: requests already in flight, and
every automatic retry, come within milliseconds of a refusal and are
refused again; a person typing a password at a prompt takes longer.

**TOTP** (RFC 6238, SHA-1, 6 digits, 30 s steps, pyotp): ``totp_step``
finds the step at which a code is the secret's code, within one step either
side of ``wall`` (clocks drift; a code typed at the end of its step). The
one-use rule (``UsedSteps``, RFC 6238 §5.2): a person's code is accepted
only for a step later than the last step accepted for them, so a code seen
once (by a shoulder, a proxy log) is worth nothing after, and neither is an
older one. The steps live in memory: a restart forgets them, and a code
used in the 90 s before could be used once more after it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import pyotp

STEP = 30  # seconds of a TOTP time step
DIGITS = 6
RETYPE = 2.0  # seconds an ended password-only header must go unseen before it may log in again


@dataclass(frozen=True, slots=True)
class User:
    """Who a request is from: a person who logged in, or a fleet user of the MQTT bridge."""

    name: str
    role: str  # "operator" or "viewer" (config.ROLES)


def session_key(header: str) -> bytes:
    """What a session is known by: the SHA-256 of the exact header value."""
    return hashlib.sha256(header.encode()).digest()


def split_code(password: str) -> tuple[str, str] | None:
    """A TOTP person's password field: (password, the 6-digit code at its end), or None."""
    code = password[-DIGITS:]
    if len(password) <= DIGITS or not (code.isascii() and code.isdigit()):
        return None
    return password[:-DIGITS], code


def totp_step(secret: str, code: str, wall: float) -> int | None:
    """The time step within one of ``wall``'s at which ``code`` is ``secret``'s code, or None."""
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    now = int(wall // STEP)
    for step in (now, now - 1, now + 1):
        if step >= 0 and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


class UsedSteps:
    """The last time step accepted for each person (one int a person with TOTP)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def use(self, user: str, step: int) -> bool:
        """True, and remembered, if ``step`` is later than any accepted for ``user``."""
        if step <= self._last.get(user, -1):
            return False
        self._last[user] = step
        return True


@dataclass(slots=True)
class Session:
    key: bytes  # SHA-256 of the Authorization header
    user: User
    addr: str  # where it logged in from
    since: float  # epoch seconds, for people
    started: float  # monotonic
    seen: float  # monotonic: its last request
    totp: bool  # logged in with a second factor
    stepped: float | None = None  # monotonic: its last step-up proof
    verdict: object = None  # what the authenticator answers for it (made once, with its user)

    def expiry(self, idle: float, max_age: float) -> float:
        """When it ends if nothing else happens."""
        return min(self.seen + idle, self.started + max_age)

    def expired_because(self, idle: float, max_age: float) -> str:
        """Why it ends at ``expiry``: "idle for 30 min", "12 h since you logged in"."""
        if self.seen + idle < self.started + max_age:
            return f"idle for {_minutes(idle)}"
        return f"{_minutes(max_age)} since you logged in"


@dataclass(slots=True)
class Ended:
    """A session that ended: who, why, and (password only) when its header was last refused."""

    user: str
    reason: str
    totp: bool
    at: float  # monotonic
    refused: float | None = None

    def retyped(self, now: float) -> bool:
        """May this header log in again? Only without a second factor, and only once it was
        refused and then unseen for ``RETYPE`` s (the person typed it at a prompt)."""
        return not self.totp and self.refused is not None and now - self.refused >= RETYPE


def _minutes(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds:g} s"


class Sessions:
    """Every live session (``_live``) and the recently ended ones (``_ended``), by key."""

    def __init__(self, idle: float, max_age: float, per_user: int, total: int) -> None:
        self._live: dict[bytes, Session] = {}
        self._ended: dict[bytes, Ended] = {}
        self.news: list[tuple[Session, Ended]] = []  # every end, until ``drain``
        self.configure(idle, max_age, per_user, total)

    def configure(self, idle: float, max_age: float, per_user: int, total: int) -> None:
        """New limits (SIGHUP); sessions already past them end at their next look."""
        self.idle, self.max_age, self.per_user, self.total = idle, max_age, per_user, total

    def __len__(self) -> int:
        return len(self._live)

    def get(self, key: bytes, now: float) -> Session | Ended | None:
        """The live session of ``key`` (touched: ``now`` is its last request), the ended one
        (an expired session ends here), or None."""
        session = self._live.get(key)
        if session is None:
            return self._ended.get(key)
        if now >= session.expiry(self.idle, self.max_age):
            return self._end(session, session.expired_because(self.idle, self.max_age), now)
        session.seen = now
        return session

    def start(
        self, key: bytes, user: User, addr: str, now: float, wall: float, totp: bool
    ) -> Session:
        """A new session; the budget ends the least recently used ones to make room."""
        self._ended.pop(key, None)
        theirs = sorted(self.of(user.name), key=lambda s: s.seen)
        for old in theirs[: max(0, len(theirs) - self.per_user + 1)]:
            self._end(old, f"more than {self.per_user} sessions of {user.name}", now)
        if len(self._live) >= self.total:
            old = min(self._live.values(), key=lambda s: s.seen)
            self._end(old, f"more than {self.total} sessions in all", now)
        session = Session(key, user, addr, wall, now, now, totp)
        self._live[key] = session
        return session

    def end(self, sessions: Iterable[Session], reason: str, now: float) -> int:
        """End ``sessions`` (those still live) for ``reason``; how many ended."""
        live = [s for s in sessions if s.key in self._live]
        for session in live:
            self._end(session, reason, now)
        return len(live)

    def _end(self, session: Session, reason: str, now: float) -> Ended:
        del self._live[session.key]
        while len(self._ended) >= self.total:
            del self._ended[next(iter(self._ended))]  # the oldest end
        ended = Ended(session.user.name, reason, session.totp, now)
        self._ended[session.key] = ended
        self.news.append((session, ended))
        return ended

    def drain(self) -> list[tuple[Session, Ended]]:
        """The sessions that ended since the last call, for the server to announce."""
        news, self.news = self.news, []
        return news

    def forget(self, key: bytes) -> None:
        """An ended header that may log in again (``Ended.retyped``)."""
        self._ended.pop(key, None)

    def of(self, user: str) -> list[Session]:
        return [s for s in self._live.values() if s.user.name == user]

    def expire(self, now: float) -> None:
        """End every session past its idle timeout or maximum age; forget old ends."""
        for session in list(self._live.values()):
            if now >= session.expiry(self.idle, self.max_age):
                self._end(session, session.expired_because(self.idle, self.max_age), now)
        for key, ended in list(self._ended.items()):
            if now - ended.at > self.max_age:
                del self._ended[key]
