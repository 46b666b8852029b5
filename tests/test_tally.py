"""The hot paths' counts (server.base.tally) and the outcome of a command, as values."""

from __future__ import annotations

import pytest

from server.base.tally import Histogram, Tally
from server.core.commands import OUTCOMES, outcome


def test_a_bucket_counts_what_is_at_or_below_its_bound() -> None:
    h = Histogram((0.1, 1.0, 0.5))  # any order
    for value in (0.05, 0.1, 0.2, 0.5, 0.7, 1.0, 3.0):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (0.5, 4), (1.0, 6), (float("inf"), 7)]
    assert h.count == 7
    assert h.sum == pytest.approx(5.55)


def test_a_tally_counts_by_label_and_observes_only_values() -> None:
    t = Tally(("ok", "refused"), (1.0,))
    t.add("ok", 0.5)
    t.add("refused", None)
    t.add("ok", 2.0)
    assert t.counts == {"ok": 2, "refused": 1}
    assert t.histogram.cumulative() == [(1.0, 1), (float("inf"), 2)]
    with pytest.raises(KeyError):
        t.add("other", None)  # the label set is fixed: a metric's series never grow


@pytest.mark.parametrize(
    ("status", "ok", "expected"),
    [
        (200, True, "ok"),
        (200, False, "failed"),
        (504, False, "timeout"),
        (503, False, "unavailable"),
        (400, False, "refused"),
        (403, False, "refused"),
        (404, False, "refused"),
        (409, False, "refused"),
    ],
)
def test_the_outcome_of_a_command(status: int, ok: bool, expected: str) -> None:
    assert outcome(status, ok) == expected
    assert expected in OUTCOMES
