"""The socket benchmarks run and account for every message (they time nothing here).

Each socket test runs a real sender and receiver process pair through the harness, as
``flowproto bench --quick`` does, and checks only invariants: every message sent
was consumed, drained or (for the drop strategy) dropped, each stream's sequence ran
exactly 0..n-1 with intact payloads; flowproto's receiver never held more than the
largest window it granted. The other tests feed the checks bad input and see them
fail. Timings are never asserted: the machine is shared.
"""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from flowproto import CreditFrame
from flowproto.bench import command, report
from flowproto.bench.aio import uvloop_available
from flowproto.bench.harness import invariant_problems, run_pair, stream_problems
from flowproto.bench.peers_flowproto import GrantedWindows
from flowproto.bench.peers_raw import RawCounter, raw_frames_block
from flowproto.bench.plan import UVLOOP, Run, quick_plan
from flowproto.bench.report import paired
from flowproto.bench.scenarios import run_scenario, scenario_problems
from flowproto.bench.workload import Checker, MessageMaker, Phase, Schedule, SequenceCheck


def check(record: dict[str, Any]) -> dict[str, Any]:
    assert invariant_problems(record) == []
    assert record["derived"]["lost"] == 0
    assert record["derived"]["checksum_ok"]
    return record


def test_flowproto_moves_a_counted_batch_over_tcp() -> None:
    record = check(run_pair(Run("throughput", "flowproto", 1024, count=3000, duration=10)))
    assert record["sender"]["sent"] == 3000
    assert record["receiver"]["consumed"] == 3000
    assert record["receiver"]["streams"][0]["sequence_end"] == 3000


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
    stream = rx["streams"][0]
    # Both exact: the peak where the core checks credit, the window off the wire.
    assert stream["largest_window_messages"] == 16  # fixed: no auto-tuning
    assert stream["grants"] > 0 and stream["unmatched_grants"] == 0
    assert 0 < stream["peak_buffered_messages"] <= 16
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


@pytest.mark.parametrize("size", [64, 1024 * 1024])
def test_raw_trio_cuts_out_and_counts_every_frame(size: int) -> None:
    record = check(run_pair(Run("throughput", "raw", size, count=2000, duration=10)))
    stream = record["receiver"]["streams"][0]
    assert record["sender"]["sent"] == stream["accounted"] == 2000
    assert stream["body_bytes"] == 2000 * size and not stream["cut_frame_at_end"]
    assert record["derived"]["msgs_per_s"] > 0


@pytest.mark.parametrize("size", [64, 1024 * 1024])
def test_flowproto_with_raws_workload_accounts_for_every_message(size: int) -> None:
    record = check(run_pair(Run("throughput", "flowproto-const", size, count=2000, duration=10)))
    stream = record["receiver"]["streams"][0]
    assert record["sender"]["sent"] == stream["accounted"] == 2000
    assert stream["sequence_end"] is None and stream["bad_payloads"] == 0  # counted only
    assert record["sender"]["delivered"] == [2000]  # and flowproto says all were consumed


# --- the asyncio pair (issue #15) -----------------------------------------------------------


def test_flowproto_asyncio_moves_a_counted_batch_within_the_windows_it_granted() -> None:
    record = check(run_pair(Run("throughput", "flowproto-asyncio", 1024, count=3000, duration=10)))
    tx, rx = record["sender"], record["receiver"]
    assert (tx["peer"], rx["peer"]) == ("flowproto-asyncio", "flowproto-asyncio")
    assert tx["sent"] == rx["consumed"] == 3000 and tx["delivered"] == [3000]
    stream = rx["streams"][0]
    assert stream["sequence_end"] == 3000 and stream["bad_payloads"] == 0
    # The receiver read the windows it granted off its own socket's sends (TapSocket).
    assert stream["unmatched_grants"] == 0
    assert 0 < stream["peak_buffered_messages"] <= stream["largest_window_messages"]
    assert stream["largest_window_messages"] >= rx["window_messages"]


def test_flowproto_asyncio_under_a_slow_consumer_loses_nothing() -> None:
    run = Run(
        "consumer", "flowproto-asyncio", 1024, consumer="slow10", producer_rate=2000, duration=1
    )
    record = check(run_pair(run))
    rx = record["receiver"]
    assert rx["dropped"] == 0 and rx["accounted"] == record["sender"]["sent"] > 0
    assert rx["peak_buffered_bytes"] <= rx["peak_window_bytes"]


@pytest.mark.parametrize("name", ["raw-asyncio", "flowproto-asyncio-const"])
@pytest.mark.parametrize("size", [64, 1024 * 1024])
def test_the_asyncio_pair_with_raws_workload_counts_every_frame(name: str, size: int) -> None:
    record = check(run_pair(Run("throughput", name, size, count=2000, duration=10)))
    stream = record["receiver"]["streams"][0]
    assert record["sender"]["sent"] == stream["accounted"] == 2000
    assert stream["sequence_end"] is None and stream["bad_payloads"] == 0  # counted only
    if name == "raw-asyncio":
        assert stream["body_bytes"] == 2000 * size and not stream["cut_frame_at_end"]
    else:
        assert record["sender"]["delivered"] == [2000]


@pytest.mark.parametrize("name", ["flowproto-asyncio", "raw-asyncio"])
def test_the_asyncio_ping_pong_echoes_every_round_trip(name: str) -> None:
    record = run_scenario(Run("latency", name, 64, count=50, warmup=5))
    assert scenario_problems(record) == []
    assert record["receiver"]["echoed"] == 55
    assert record["sender"]["round_trips"] == 50


@pytest.mark.skipif(not uvloop_available(), reason="uvloop is not installed")
@pytest.mark.parametrize("name", ["flowproto-asyncio-uvloop", "raw-asyncio-uvloop"])
def test_the_asyncio_pair_runs_on_uvloop(name: str) -> None:
    record = check(run_pair(Run("throughput", name, 1024, count=2000, duration=10)))
    assert record["receiver"]["accounted"] == record["sender"]["sent"] == 2000


def test_the_smoke_test_covers_the_asyncio_pair_but_needs_no_uvloop() -> None:
    names = {r.strategy for r in quick_plan().runs}
    assert {"flowproto-asyncio", "raw-asyncio"} <= names
    assert not names & set(UVLOOP)


def test_raw_counter_finds_frames_cut_anywhere_by_the_reads() -> None:
    block, per_write = raw_frames_block(100)
    data = block * 3
    for step in (1, 3, 4, 5, 104, 1000, 70_000):
        counter = RawCounter()
        for i in range(0, len(data), step):
            counter.feed(data[i : i + step])
        assert (counter.frames, counter.body_bytes) == (3 * per_write, 300 * per_write)
        assert counter.last == bytes(100)  # each message is cut out whole
        assert not counter.pending
    counter = RawCounter()
    counter.feed(data[:-1])
    assert counter.pending  # a frame cut by the end: the receiver reports it


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


def test_a_schedule_behind_by_seconds_catches_up_to_its_nominal_rate() -> None:
    """Its phases are flowproto.Pacer schedules that never restart (max_lag infinite):
    a consumer 5 s behind at 100/s may take the 500 it owes, so the long-run rate holds."""
    schedule = Schedule([Phase(0, 100), Phase(10, 100)])
    assert schedule.allowed(0.0, 0) == 1
    assert schedule.allowed(5.0, 1) == 500  # 501 due by 5 s
    assert schedule.next_time(5.0, 501) == pytest.approx(5.01)
    assert schedule.allowed(10.0, 600) == 1  # a new phase starts its own schedule at 10 s
    assert schedule.allowed(10.5, 601) == 50


# --- the checks fail when they should ------------------------------------------------------


@pytest.mark.parametrize(
    "seqs",
    [
        [0, 2, 1, 3],  # reordered: the same sum as 0..3
        [0, 1, 1, 3],  # 2 lost, 1 repeated
        [0, 0, 3, 3],  # two lost, two repeated: the same count and sum as 0..3
        [1, 2, 3],  # the first lost
        [0, 1, 3],  # a gap nobody dropped
    ],
    ids=["reordered", "repeated", "loss-plus-duplicate", "first-lost", "gap"],
)
def test_a_sequence_that_is_not_0_to_n_minus_1_in_order_is_a_problem(seqs: list[int]) -> None:
    check = SequenceCheck()
    check.take(seqs)
    check.finish()
    assert check.problems
    assert stream_problems([_stream(check, len(seqs))], [4])


def test_a_sequence_in_order_across_batches_is_clean() -> None:
    check = SequenceCheck()
    for first in range(0, 3000, 1000):
        check.take(list(range(first, first + 1000)))
    assert check.finish() == 3000
    assert check.problems == [] and check.problem_count == 0


def test_gaps_must_be_exactly_the_runs_the_receiver_dropped() -> None:
    check = SequenceCheck()
    check.take([0, 1])
    check.drop([2, 3])  # the reader dropped these on arrival...
    check.take([4])  # ...so the consumer's gap 2..3 is accounted for
    check.drop([6, 7])
    check.take([5])
    assert check.finish() == 8  # the trailing drops close the sequence
    assert check.problems == []
    bad = SequenceCheck()
    bad.drop([2])
    bad.take([0, 1, 3, 4])  # fine so far: 2 was dropped
    bad.take([2])  # but then 2 is delivered as well
    assert bad.problems
    gap = SequenceCheck()
    gap.drop([3])
    gap.take([0, 4])  # 1..2 missing: only 3 was dropped
    assert gap.problems


def test_damaged_payloads_are_counted_raw_msgpack_and_drained() -> None:
    raw = Checker(64, "raw")
    good = MessageMaker(64, "raw").batch(0, 3)
    raw.take(good, 1.0)
    raw.take_drained([good[0][:16] + b"x" * 48])  # seq 0 again, and not zero filler
    raw.take_drained([struct.pack("<Qd", 4, 0.0) + bytes(40)])  # short; 3 missing
    found = raw.finish()
    assert found["bad_payloads"] == 2
    assert found["sequence_problem_count"] == 2
    objects = Checker(64, "msgpack")
    maker = MessageMaker(64, "msgpack")
    batch = [msgpack.unpackb(msgpack.packb(m)) for m in maker.batch(0, 3)]
    objects.take(batch[:2], 1.0)
    wrong = dict(batch[2], data=b"\x01" * len(batch[2]["data"]))
    objects.take_drained([wrong])  # drained after the paced phase: checked all the same
    objects.take_drained([{"seq": 3}])
    found = objects.finish()
    assert found["bad_payloads"] == 2
    assert found["sequence_end"] == 4 and found["sequence_problem_count"] == 0


def test_holding_more_than_the_largest_granted_window_is_a_problem() -> None:
    check = SequenceCheck()
    check.take([0, 1, 2])
    stream = _stream(check, 3)
    stream.update(
        peak_buffered_messages=17,
        peak_buffered_bytes=100,
        largest_window_messages=16,
        largest_window_bytes=100,
        unmatched_grants=0,
    )
    assert stream_problems([stream], [3]) == [
        "stream 0: held 17 messages > largest window granted 16"
    ]
    stream.update(peak_buffered_messages=16, unmatched_grants=1)
    assert "matched no receive call" in stream_problems([stream], [3])[0]


def test_the_largest_granted_window_is_limit_minus_consumed_of_each_credit() -> None:
    granted = GrantedWindows(1000, 10)  # the HELLO's window
    granted.notes.append((4, 400))  # the consumer took 4 messages, 400 bytes
    granted.grant(CreditFrame(1, bytes_limit=1900, messages_limit=20, consumed=4))
    granted.grant(CreditFrame(1, bytes_limit=1900, messages_limit=20, consumed=9))
    granted.notes.append((9, 950))  # the CREDIT went out before the consumer's note
    granted.notes.append((12, 1200))
    granted.grant(CreditFrame(1, bytes_limit=2000, messages_limit=21, consumed=12))
    found = granted.finish()
    assert (found["largest_window_messages"], found["largest_window_bytes"]) == (16, 1500)
    assert found["unmatched_grants"] == 0 and found["grants"] == 3
    orphan = GrantedWindows(1000, 10)
    orphan.notes.append((5, 500))
    orphan.grant(CreditFrame(1, bytes_limit=2000, messages_limit=20, consumed=3))
    assert orphan.finish()["unmatched_grants"] == 1  # 3 was never a receive call's end


def test_targets_take_the_median_of_ratios_paired_by_repeat() -> None:
    def rec(repeat: int, value: float) -> dict[str, Any]:
        return {"run": {"repeat": repeat}, "derived": {"msgs_per_s": value}}

    # Repeat 1 ran while another tenant took the machine: both sides slowed down.
    a = [rec(0, 10), rec(1, 100), rec(2, 12)]
    b = [rec(0, 5), rec(1, 100), rec(2, 6)]
    p = paired(a, b, "msgs_per_s")
    assert p.ratios == [2.0, 1.0, 2.0]
    assert p.ratio == 2.0  # the median of the per-pair ratios
    assert p.best_ratio == 1.0  # best-of against best-of says something else
    assert p.a_median == 12 and p.b_median == 6


def test_quick_mode_prints_and_writes_no_timing_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        run_pair(Run("throughput", name, 64, count=2000, duration=10))
        for name in ("flowproto-const", "raw")
    ]
    assert report.targets(records)[0]["ratio"] is not None  # there is a ratio to judge
    monkeypatch.setattr(command, "run_plan", lambda *a, **k: records)
    monkeypatch.setattr(command, "adaptive_main", lambda argv: 0)
    assert command.main(["--quick", "--no-plots", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "invariants hold" in err
    verdicts = [ln for ln in err.splitlines() if re.match(r"\s+(met|MISSED)\s", ln)]
    assert verdicts == []
    assert "Targets" not in (tmp_path / "results.md").read_text()


def _stream(check: SequenceCheck, accounted: int) -> dict[str, Any]:
    return {
        "sequence_problems": check.problems,
        "sequence_problem_count": check.problem_count,
        "sequence_end": check.next,
        "accounted": accounted,
        "bad_payloads": 0,
    }
