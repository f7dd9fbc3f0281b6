"""The ping-pong latency benchmark runs end to end and reports what it says (issue #13)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pingpong_reports_both_sides_and_their_ratios() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pingpong", "--round-trips", "30", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["round_trips"] == 30 and summary["repeats"] == 1
    for side in ("flowproto", "raw"):
        assert 0 < summary[f"{side}_p50_us"] <= summary[f"{side}_p99_us"]
    ratio = summary["flowproto_p50_us"] / summary["raw_p50_us"]
    assert abs(summary["ratio_p50"] - ratio) < 1e-9  # one pair: the median is that pair
    assert "repeat 1: flowproto p50" in done.stderr
