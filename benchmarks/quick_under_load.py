"""Run ``python -m benchmarks --quick`` N times in a row under a parallel CPU load.

Issue #9's check that the quick benchmark (what ``.ci/run`` runs) never flakes on a busy
machine: while a background loop runs part of the test suite over and over (the load),
the quick benchmarks run ``--runs`` times, one after another, and the tally is printed::

    python -m benchmarks.quick_under_load --runs 20

Everything is bounded: each quick run and each load run has a timeout, and the load
stops with the last quick run. A failed run's stderr is kept in ``--logs``. Exit status
0 only if every run was green.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOAD = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/test_connection.py", "tests/test_credit.py"]  # fmt: skip


def load_loop(stop: threading.Event, timeout: float, counts: list[int]) -> None:
    """Run the load over and over until ``stop`` is set; each run bounded by ``timeout``."""
    while not stop.is_set():
        proc = subprocess.Popen(
            LOAD, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        counts[0] += 1


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quick_under_load", description=__doc__)
    p.add_argument("--runs", type=int, default=20, help="quick runs in a row")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per quick run")
    p.add_argument("--logs", type=Path, default=None, help="where failed runs' logs go")
    args = p.parse_args(argv)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="quick-under-load-"))
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    load_runs = [0]
    loader = threading.Thread(target=load_loop, args=(stop, args.timeout, load_runs))
    loader.start()
    green = 0
    try:
        for i in range(1, args.runs + 1):
            with tempfile.TemporaryDirectory(prefix="quick-") as out:
                command = [sys.executable, "-m", "benchmarks", "--quick", "--no-plots",
                           "--out", out]  # fmt: skip
                started = time.monotonic()
                try:
                    proc = subprocess.run(
                        command, cwd=ROOT, capture_output=True, text=True,
                        timeout=args.timeout, check=False,
                    )  # fmt: skip
                    ok, err = proc.returncode == 0, proc.stderr
                except subprocess.TimeoutExpired as exc:
                    tail = exc.stderr if isinstance(exc.stderr, str) else ""
                    ok, err = False, f"timed out after {args.timeout} s\n{tail}"
            green += ok
            seconds = time.monotonic() - started
            print(f"run {i}: {'green' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
            if not ok:
                (logs / f"run{i}.err").write_text(str(err))
    finally:
        stop.set()
        loader.join()
    print(f"{green}/{args.runs} green under load ({load_runs[0]} load runs); logs in {logs}")
    return 0 if green == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
