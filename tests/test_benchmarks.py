"""The socket benchmarks run and account for every message (they time nothing here).

Each test runs a real sender and receiver process pair through the harness, as
``python -m benchmarks --quick`` does, and checks only invariants: every message sent
was consumed, drained or (for the drop strategy) dropped, with the right sequence
numbers; flowproto's receiver never held more than its window. Timings are never
asserted: the machine is shared.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from benchmarks.harness import Run, invariant_problems, run_pair
from benchmarks.workload import Phase, Schedule, expected_sum


def check(record: dict[str, Any]) -> dict[str, Any]:
    assert invariant_problems(record) == []
    assert record["derived"]["lost"] == 0
    assert record["derived"]["checksum_ok"]
    return record


def test_flowproto_moves_a_counted_batch_over_tcp() -> None:
    record = check(run_pair(Run("throughput", "flowproto", 1024, count=3000, duration=10)))
    assert record["sender"]["sent"] == 3000
    assert record["receiver"]["consumed"] == 3000
    assert record["receiver"]["streams"][0]["seq_sum"] == expected_sum(3000)


def test_one_send_and_receive_per_message_with_msgpack() -> None:
    run = Run("throughput", "flowproto-single", 64, "msgpack", count=2000, duration=10)
    record = check(run_pair(run))
    assert record["receiver"]["consumed"] == 2000


def test_small_windows_hold_the_receiver_buffer_within_them_under_a_slow_consumer() -> None:
    """spec §8.3, §8.5: the producer is 10x faster; the receiver holds at most 16 messages."""
    run = Run(
        "consumer", "flowproto-small", 1024, consumer="slow10", producer_rate=2000, duration=1
    )
    record = check(run_pair(run))
    rx = record["receiver"]
    assert rx["window_messages"] == 16
    assert rx["peak_buffered_messages"] <= 16
    assert rx["dropped"] == 0
    assert record["sender"]["blocked_s"] > 0  # backpressure: the sender waited for credit


def test_the_drop_strategy_counts_what_it_drops() -> None:
    run = Run("consumer", "drop", 1024, consumer="slow10", producer_rate=20_000, duration=1)
    record = check(run_pair(run))
    rx = record["receiver"]
    assert rx["dropped"] > 0  # a 4096-message queue overflows in well under a second
    assert rx["dropped"] + rx["consumed"] + rx["drained"] == record["sender"]["sent"]


def test_sixteen_streams_with_a_slow_one_account_for_every_stream() -> None:
    run = Run("streams", "flowproto", 1024, streams=16, slow_stream=True, duration=1)
    record = check(run_pair(run))
    streams = record["receiver"]["streams"]
    assert len(streams) == 16
    sent = record["sender"]["sent_per_stream"]
    assert all(s["accounted"] == n for s, n in zip(streams, sent, strict=True))


@pytest.mark.skipif(importlib.util.find_spec("zmq") is None, reason="pyzmq is not installed")
def test_zmq_push_pull_accounts_for_every_message() -> None:
    check(run_pair(Run("throughput", "zmq", 1024, count=3000, duration=10)))


def test_a_schedule_paces_stalls_and_changes_speed() -> None:
    schedule = Schedule([Phase(0, 100), Phase(1, 0), Phase(2, None)])
    assert schedule.allowed(0.0, 0) == 1
    assert schedule.allowed(0.5, 1) == 50  # 51 due by 0.5 s at 100/s
    assert schedule.allowed(0.5, 51) == 0
    assert schedule.next_time(0.5, 51) == pytest.approx(0.51)
    assert schedule.allowed(1.5, 100) == 0  # stalled
    assert schedule.next_time(1.5, 100) == 2
    assert schedule.allowed(2.5, 100) is None  # unlimited
