"""Every date format the server writes, in one place; pure (callers pass the time).

- ``http_date``: IMF-fixdate (RFC 9110 §5.6.7) for Date and Last-Modified;
  ``parse_http_date`` reads it back (If-Modified-Since).
- ``iso_utc``: ISO 8601 UTC to the second, for what people read (``since``,
  audit ``time``).
- ``clf_date``: the Common Log Format's ``[10/Oct/2026:13:55:36 +0000]``.
- ``PerSecond``: the Date header and CLF time of the current second,
  formatted once a second instead of once a request.
"""

from __future__ import annotations

from datetime import UTC, datetime

_HTTP_DATE = "%a, %d %b %Y %H:%M:%S GMT"


def http_date(epoch: float) -> str:
    """``epoch`` as an IMF-fixdate: ``Sat, 21 Nov 2026 06:00:00 GMT``."""
    return datetime.fromtimestamp(epoch, UTC).strftime(_HTTP_DATE)


def parse_http_date(text: str) -> float | None:
    """Epoch seconds of an IMF-fixdate, or None if ``text`` is not one."""
    try:
        return datetime.strptime(text.strip(), _HTTP_DATE).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def iso_utc(epoch: float) -> str:
    """``epoch`` as ISO 8601 UTC, to the second: ``2026-11-21T06:12:03Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clf_date(epoch: float) -> str:
    """``epoch`` as a Common Log Format time: ``21/Nov/2026:06:12:03 +0000``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


class PerSecond:
    """The Date header and the CLF time for ``wall`` seconds, cached for that second."""

    __slots__ = ("_second", "clf", "date")

    def __init__(self) -> None:
        self._second = -1
        self.date = b""
        self.clf = ""

    def update(self, wall: float) -> None:
        second = int(wall)
        if second != self._second:
            self._second = second
            self.date = http_date(second).encode("ascii")
            self.clf = clf_date(second)
