"""Who is online: bookkeeping only (the loop and sockopts detect losses).

A user is online while at least one of their authenticated connections is
open. When their last connection closes cleanly (FIN, or the server ended
an idle keep-alive connection) they stay online for ``grace`` seconds,
because browsers close idle connections all the time; when it is lost
(keepalive or user timeout, RST, TCP_INFO no longer ESTABLISHED) they leave
at once. At most ``max_users`` distinct users are online; users in their
grace period still hold a slot.

Pure: callers pass ``now`` (monotonic, for deadlines) and ``wall`` (epoch
seconds, for the ``since`` people read). Every method returns the changes
to announce; nothing here publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.base.dates import iso_utc
from server.feed.events import Person

CLOSED = "closed"
LOST = "lost"
SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # "join" | "leave"
    user: str
    addr: str
    reason: str | None = None  # for leave: CLOSED | LOST | SHUTDOWN


@dataclass(slots=True)
class _Entry:
    since: float
    addr: str
    conns: set[int] = field(default_factory=set)
    leave_at: float | None = None


class Presence:
    def __init__(self, max_users: int, grace: float) -> None:
        self.max_users = max_users
        self.grace = grace
        self._users: dict[str, _Entry] = {}
        self._conn_user: dict[int, str] = {}

    def admits(self, user: str) -> bool:
        """May ``user`` work now (already online, or a slot is free)?"""
        return user in self._users or len(self._users) < self.max_users

    def retry_after(self, now: float) -> int:
        """Seconds until a slot may free: the earliest grace expiry, else the grace."""
        pending = [e.leave_at for e in self._users.values() if e.leave_at is not None]
        wait = min(pending) - now if pending else self.grace
        return max(1, int(wait + 0.999))

    def user_of(self, conn: int) -> str | None:
        return self._conn_user.get(conn)

    def connections(self, user: str) -> frozenset[int]:
        """The connections that count as ``user``'s."""
        entry = self._users.get(user)
        return frozenset(entry.conns) if entry is not None else frozenset()

    def attach(self, conn: int, user: str, addr: str, now: float, wall: float) -> list[Change]:
        """Count connection ``conn`` as ``user``'s: a join if they were offline.

        A connection that was another user's is detached from them first (a
        clean close for that user: a leave at once if it was their last
        connection and there is no grace), so the changes come in order.
        """
        previous = self._conn_user.get(conn)
        if previous == user:
            return []
        changes = []
        if previous is not None:
            left = self.detach(conn, now, lost=False)
            if left is not None:
                changes.append(left)
        self._conn_user[conn] = user
        entry = self._users.get(user)
        if entry is None:
            self._users[user] = _Entry(since=wall, addr=addr, conns={conn})
            changes.append(Change("join", user, addr))
            return changes
        entry.conns.add(conn)
        entry.leave_at = None
        entry.addr = addr
        return changes

    def detach(self, conn: int, now: float, lost: bool) -> Change | None:
        """Connection ``conn`` ended; a leave if it was its user's last and was lost."""
        user = self._conn_user.pop(conn, None)
        if user is None:
            return None
        entry = self._users[user]
        entry.conns.discard(conn)
        if entry.conns:
            return None
        if lost or self.grace <= 0:
            del self._users[user]
            return Change("leave", user, entry.addr, LOST if lost else CLOSED)
        entry.leave_at = now + self.grace
        return None

    def expire(self, now: float) -> list[Change]:
        """Leaves of users whose grace period is over."""
        gone = [
            name
            for name, e in self._users.items()
            if e.leave_at is not None and e.leave_at <= now and not e.conns
        ]
        return [Change("leave", n, self._users.pop(n).addr, CLOSED) for n in gone]

    def end_all(self) -> list[Change]:
        """The server stops: everyone still online (grace included) leaves."""
        changes = [Change("leave", n, e.addr, SHUTDOWN) for n, e in self._users.items()]
        self._users.clear()
        self._conn_user.clear()
        return changes

    def next_expiry(self) -> float | None:
        pending = [e.leave_at for e in self._users.values() if e.leave_at is not None]
        return min(pending) if pending else None

    def online(self) -> tuple[Person, ...]:
        """Everyone online, longest online first."""
        entries = sorted(self._users.items(), key=lambda kv: kv[1].since)
        return tuple(Person(n, iso_utc(e.since), e.addr) for n, e in entries)

    def resize(self, max_users: int, grace: float) -> None:
        """New limits (SIGHUP); users already online stay."""
        self.max_users = max_users
        self.grace = grace
