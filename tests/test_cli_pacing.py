"""``--rate`` and ``--delay`` of the CLI on the one pacer (flowproto.Pacer), on a virtual
clock: exact spacing, a schedule that restarts instead of bursting after falling behind."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from flowproto import Pacer
from flowproto.cli._layer_trio import TRIO
from flowproto.cli._pace import Pace as LayerPace


def Pace(rate: float | None, delay: float = 0.0) -> LayerPace:
    """A :class:`flowproto.cli._pace.Pace` on Trio's clock."""
    return LayerPace(rate, delay, layer=TRIO)


async def passing_times(pace: LayerPace, count: int, t0: float) -> list[float]:
    """When each of ``count`` waits returned, relative to ``t0``."""
    times = []
    for _ in range(count):
        await pace.wait()
        times.append(trio.current_time() - t0)
    return times


def test_the_cli_paces_with_the_library_pacer() -> None:
    assert isinstance(Pace(5.0).pacer, Pacer)
    assert Pace(5.0).active
    assert not Pace(None).active
    assert Pace(None, delay=0.01).active


async def test_events_pass_exactly_one_over_rate_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    times = await passing_times(Pace(10.0), 5, t0)
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_a_loop_far_behind_restarts_its_schedule_instead_of_bursting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pace = Pace(10.0)
    t0 = trio.current_time()
    assert await passing_times(pace, 3, t0) == pytest.approx([0.0, 0.1, 0.2])
    await trio.sleep(5.0)  # idle, or blocked on credit: 4.8 s behind, more than 1 s
    # The first event goes at once, the rest at the rate again: no burst of 48 events.
    assert await passing_times(pace, 3, t0) == pytest.approx([5.2, 5.3, 5.4])


async def test_a_loop_a_little_behind_catches_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pace = Pace(10.0)
    t0 = trio.current_time()
    await passing_times(pace, 3, t0)  # due at 0.0, 0.1, 0.2
    await trio.sleep(0.5)  # now 0.7: 0.5 s behind, within the 1 s the schedule allows
    # Events 3..7 were due by 0.7 and go at once; event 8 is due at 0.8.
    times = await passing_times(pace, 6, t0)
    assert times == pytest.approx([0.7, 0.7, 0.7, 0.7, 0.7, 0.8])


async def test_delay_is_spent_on_each_event_after_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    assert await passing_times(Pace(None, delay=0.25), 3, t0) == pytest.approx([0.25, 0.5, 0.75])
    t1 = trio.current_time()
    # With a rate too: event n's slot is n / rate after the first, then the delay.
    assert await passing_times(Pace(10.0, delay=0.05), 3, t1) == pytest.approx([0.05, 0.15, 0.25])


async def test_no_rate_and_no_delay_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    assert await passing_times(Pace(None), 1000, t0) == [0.0] * 1000
