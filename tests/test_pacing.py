"""The one pacer (flowproto._pacing): an absolute schedule, the caller's clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowproto import Pacer


def test_no_rate_lets_everything_through_at_once() -> None:
    pacer = Pacer()
    assert not pacer.limited
    assert pacer.reserve(1000, 5.0) == 5.0
    assert pacer.allowed(5.0) is None
    assert pacer.next_time(5.0) == 5.0


def test_rate_zero_lets_nothing_through() -> None:
    pacer = Pacer(0)
    assert pacer.reserve(1, 0.0) == math.inf
    assert pacer.allowed(100.0) == 0
    assert pacer.next_time(3.0) == math.inf


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        Pacer(-1)
    with pytest.raises(ValueError, match="at least 0"):
        Pacer(1).set_rate(-0.5, 0.0)


def test_item_n_is_due_at_start_plus_n_over_rate() -> None:
    pacer = Pacer(10)
    assert [pacer.reserve(1, 0.0) for _ in range(4)] == [0.0, 0.1, 0.2, pytest.approx(0.3)]
    # a batch is due when its first item is; the next call waits for the whole batch
    assert pacer.reserve(5, 0.0) == pytest.approx(0.4)
    assert pacer.reserve(1, 0.0) == pytest.approx(0.9)


def test_allowed_counts_what_the_schedule_lets_go_by_now() -> None:
    pacer = Pacer(100)
    assert pacer.allowed(0.0) == 1  # the first at once
    pacer.take(1)
    assert pacer.allowed(0.0) == 0
    assert pacer.allowed(0.05) == 5  # items 1..5 are due by 0.05
    pacer.take(5)
    assert pacer.allowed(0.05) == 0
    assert pacer.next_time(0.05) == pytest.approx(0.06)


def test_a_schedule_far_behind_restarts_instead_of_bursting() -> None:
    pacer = Pacer(10, max_lag=1.0)
    assert pacer.reserve(1, 0.0) == 0.0
    # idle for 60 s: the next item goes now, and the one after 0.1 s later, no burst
    assert pacer.reserve(1, 60.0) == 60.0
    assert pacer.reserve(1, 60.0) == pytest.approx(60.1)
    assert pacer.allowed(60.0) == 0


def test_within_the_lag_the_schedule_catches_up() -> None:
    pacer = Pacer(10, max_lag=1.0)
    pacer.reserve(1, 0.0)
    assert pacer.reserve(1, 0.5) == 0.5  # due at 0.1, late by 0.4: goes now
    assert pacer.reserve(1, 0.5) == 0.5  # due at 0.2: still behind, goes now
    assert pacer.allowed(0.5) == 3  # items 3, 4, 5 are due by 0.5


def test_set_rate_starts_a_new_schedule_and_keeps_the_debt() -> None:
    pacer = Pacer(1)
    pacer.reserve(3, 0.0)  # items at 0, 1 and 2 s: the next one is due at 3 s
    pacer.set_rate(100, 1.0)  # a new rate does not forgive what was booked
    assert pacer.reserve(1, 1.0) == 3.0
    assert pacer.reserve(1, 1.0) == pytest.approx(3.01)
    pacer.set_rate(None, 4.0)
    assert pacer.reserve(10, 4.0) == 4.0
    pacer.set_rate(10, 5.0)  # from no limit: it starts now
    assert pacer.reserve(1, 5.0) == 5.0
    pacer.set_rate(20, 9.0)  # behind by far: it starts now, with no burst to catch up
    assert pacer.reserve(2, 9.0) == 9.0
    assert pacer.reserve(1, 9.0) == pytest.approx(9.1)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=1e5),
    batches=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=60),
    overshoot=st.lists(st.floats(min_value=0.0, max_value=0.05), min_size=60, max_size=60),
)
def test_the_long_run_rate_is_exact_whatever_each_sleep_overshoots(
    rate: float, batches: list[int], overshoot: list[float]
) -> None:
    """A caller that sleeps until each reserve() and wakes late still gets ``rate``.

    Each wake is late by up to 50 ms (under max_lag), yet the n-th item never goes
    before ``n / rate``, and all of them are through by ``total / rate`` plus one
    late wake: the absolute schedule absorbs the overshoot.
    """
    pacer = Pacer(rate, max_lag=math.inf)
    now = 0.0
    booked = 0
    for batch, late in zip(batches, overshoot, strict=False):
        due = pacer.reserve(batch, now)
        assert due >= now
        assert due >= booked / rate - 1e-9  # never ahead of the schedule
        now = due + late
        booked += batch
    assert pacer.next_time(now) <= max(now, booked / rate + 1e-9)
