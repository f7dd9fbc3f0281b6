"""The adaptive-credit benchmark's quick mode runs and its invariants hold (it times nothing).

``python -m flowproto.bench.adaptive --quick`` runs six connections with fast and slow
consumers under one memory budget, as separate processes on 127.0.0.1. Checked: every
message sent was received once, in order, and reported delivered; no tuned window fell
below its floor (spec §8.9 rule 5); the budget was never exceeded (spec §8.9 B1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flowproto.bench.adaptive import problems


def test_quick_adaptive_run_keeps_every_invariant(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowproto.bench.adaptive",
            "--quick",
            "--no-plots",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # any directory: the peers are found by module name
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    saved = json.loads((tmp_path / "adaptive.json").read_text())
    assert saved["problems"] == []
    run = saved["results"]["budget"]
    assert problems("budget", run) == []  # re-checked here, from the raw results
    budget = run["receiver"]["budget"]
    assert 0 < budget["peak"] <= budget["capacity"]
    sent = sum(s["sent"] for s in run["sender"]["streams"])
    assert sent > 0
    assert sent == sum(s["messages"] for s in run["receiver"]["streams"].values())
    reasons = {v[4] for sample in run["receiver"]["samples"] for v in sample["streams"].values()}
    assert reasons - {"initial", "static"}, "the windows were tuned"
