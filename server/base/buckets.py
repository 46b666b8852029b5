"""Token buckets: how often one key (an address, a person, the whole server) may do a thing.

Pure: the caller passes ``now`` (monotonic seconds). A bucket refills at
``rate`` tokens a second up to ``burst``; an action takes one token. Used
for the slow hash (``server.people.auth.HashBudget``), chat messages and commands
per person (``server.web.api``: 429 + Retry-After when empty).

``Rate`` keeps one bucket per key, at most ``max_keys`` of them: a flood of
new keys forgets them all (each then starts full, which is the same
answer a key gets the first time).
"""

from __future__ import annotations

import math


class Bucket:
    """``tokens`` at time ``at``."""

    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def wait(self, rate: float, burst: float, now: float) -> float:
        """Refill to ``now``; seconds until one token is there (0: take it now)."""
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / rate


def retry_after(wait: float) -> int:
    """``wait`` seconds as a Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


class Rate:
    """``rate`` actions a second per key, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, Bucket] = {}

    def _bucket(self, key: str, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()
            bucket = self._buckets[key] = Bucket(self.burst, now)
        return bucket

    def wait(self, key: str, now: float) -> float:
        """0.0 if ``key`` may act now, else the seconds to wait (nothing taken)."""
        return self._bucket(key, now).wait(self.rate, self.burst, now)

    def charge(self, key: str, now: float) -> None:
        """``key`` acted: one token less (below zero if it acted anyway)."""
        self._bucket(key, now).tokens -= 1

    def take(self, key: str, now: float) -> float:
        """0.0 and one token taken if ``key`` may act now, else the seconds to wait."""
        wait = self.wait(key, now)
        if not wait:
            self.charge(key, now)
        return wait
