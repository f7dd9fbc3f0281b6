"""The core benchmark runs and checks what it moved (it times nothing here)."""

from __future__ import annotations

from benchmarks.core import run
from flowproto import Settings


def test_core_benchmark_moves_every_message_with_small_windows() -> None:
    # spec §8.3, §8.5: with a window of 8 messages the run needs many credit round trips.
    result = run(5000, 64, 100, Settings(stream_messages=8, stream_bytes=1 << 20))
    assert result["messages"] == 5000
    assert result["rounds"] >= 5000 // 8
