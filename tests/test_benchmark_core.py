"""The core benchmark runs and checks what it moved (it times nothing here)."""

from __future__ import annotations

import pytest

from benchmarks.core import SEQ, Verifier, run
from flowproto import Settings


def test_core_benchmark_moves_every_message_with_small_windows() -> None:
    # spec §8.3, §8.5: with a window of 8 messages the run needs many credit round trips.
    result = run(5000, 64, 100, Settings(stream_messages=8, stream_bytes=1 << 20))
    assert result["messages"] == 5000
    assert result["rounds"] >= 5000 // 8


def test_core_benchmark_numbers_run_on_across_batches() -> None:
    # 2500 messages in batches of 1000: each batch's numbers go on from the last one's.
    assert run(2500, 64, 1000, Settings())["messages"] == 2500


def message(seq: int, size: int = 64) -> bytes:
    return SEQ.pack(seq) + bytes(size - SEQ.size)


@pytest.mark.parametrize(
    "batches",
    [
        [[0, 1], [0, 1]],  # a batch again: numbering that restarts per batch is caught
        [[0, 2, 1, 3]],  # reordered
        [[0, 1, 1, 3]],  # one lost, one repeated
    ],
    ids=["restarted", "reordered", "loss-plus-duplicate"],
)
def test_the_core_benchmark_rejects_a_wrong_sequence(batches: list[list[int]]) -> None:
    verifier = Verifier(64)
    with pytest.raises(SystemExit, match="arrived where"):
        for batch in batches:
            verifier.take([message(seq) for seq in batch])


def test_the_core_benchmark_rejects_a_damaged_message() -> None:
    verifier = Verifier(64)
    verifier.take([message(0), message(1)])
    with pytest.raises(SystemExit, match="damaged"):
        verifier.take([message(2)[:-1] + b"x"])


def test_round_trip_cpu_runs_every_row_and_compares_each_to_its_loops_raw_framing() -> None:
    # benchmarks/round_trip_cpu.py: each row makes its round trips (a row that lost its
    # echo times out) and reports positive CPU.
    from benchmarks.round_trip_cpu import ROWS, measure

    result = measure(50, 1)
    assert set(result["rows"]) == set(ROWS)
    for name, row in result["rows"].items():
        assert row["cpu_us_per_rt"] > 0, name
        assert row["ratio"] is not None and row["ratio"] > 0, name
    assert result["rows"]["raw-trio"]["ratio"] == result["rows"]["raw-asyncio"]["ratio"] == 1.0
