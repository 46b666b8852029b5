"""Every date format the server writes: HTTP dates, ISO 8601, CLF, the per-second cache."""

from __future__ import annotations

from server.base.dates import PerSecond, clf_date, http_date, iso_utc, parse_http_date

T = 1795242723.9  # 2026-11-21 06:32:03.9 UTC


def test_formats() -> None:
    assert http_date(T) == "Sat, 21 Nov 2026 06:32:03 GMT"
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert iso_utc(T) == "2026-11-21T06:32:03Z"
    assert clf_date(T) == "21/Nov/2026:06:32:03 +0000"


def test_http_date_round_trip_and_garbage() -> None:
    assert parse_http_date(http_date(T)) == int(T)
    assert parse_http_date("yesterday") is None


def test_per_second_formats_once_a_second() -> None:
    clock = PerSecond()
    clock.update(T)
    assert clock.date == b"Sat, 21 Nov 2026 06:32:03 GMT"
    assert clock.clf == "21/Nov/2026:06:32:03 +0000"
    clock.update(T + 0.05)
    assert clock.clf == "21/Nov/2026:06:32:03 +0000"
    clock.update(T + 1)
    assert clock.date == b"Sat, 21 Nov 2026 06:32:04 GMT"
