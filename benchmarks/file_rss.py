"""Send a file through `flowproto send` into a slow `flowproto receive`; report receiver RSS.

Two separate processes on 127.0.0.1. The receiver consumes ``--rate`` messages per
second and writes them to a file; the sender reads the input in 64 KiB chunks. The
receiver's peak RSS (VmHWM, polled from /proc) is compared with a baseline run that
sends a single chunk, so the difference is what the transfer itself held. With credit
it stays near the receiver's window (plus one read buffer), whatever the file size.

Usage::

    python -m benchmarks.file_rss --size-mb 50 --rate 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _peak_rss_kib(pid: int, proc: subprocess.Popen[str], out: list[int]) -> None:
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[0] = max(out[0], int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)


def transfer(infile: Path, outfile: Path, rate: int, window: list[str]) -> dict[str, object]:
    """One receiver and one sender process; returns timings, RSS and the check."""
    py = sys.executable
    rx = subprocess.Popen(
        [py, "-m", "flowproto", "receive", "--listen", "127.0.0.1:0", "--rate", str(rate),
         "--output", str(outfile), "--once", "--raw", "-q", *window],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak = [0]
    threading.Thread(target=_peak_rss_kib, args=(rx.pid, rx, peak), daemon=True).start()
    assert rx.stderr is not None
    match = re.search(r":(\d+)\s*$", rx.stderr.readline())
    if match is None:
        rx.kill()
        raise SystemExit("the receiver did not report its port")
    start = time.perf_counter()
    tx = subprocess.run(
        [py, "-m", "flowproto", "send", "--connect", f"127.0.0.1:{match.group(1)}",
         "--input", str(infile), "--raw", "--chunk-size", "65536", "--json", "-q"],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    rx.wait(timeout=60)
    seconds = time.perf_counter() - start
    same = (
        hashlib.sha256(infile.read_bytes()).digest()
        == hashlib.sha256(outfile.read_bytes()).digest()
    )
    return {
        "bytes": infile.stat().st_size,
        "seconds": round(seconds, 2),
        "identical": same,
        "receiver_peak_rss_kib": peak[0],
        "sender": json.loads(tx.stdout) if tx.returncode == 0 else tx.stderr.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rate", type=int, default=200, help="receiver messages per second")
    parser.add_argument("--window-bytes", type=int, default=4 * 1024 * 1024)
    args = parser.parse_args()
    window = ["--window-bytes", str(args.window_bytes)]
    with tempfile.TemporaryDirectory() as tmp:
        small, big, out = Path(tmp, "small"), Path(tmp, "big"), Path(tmp, "out")
        small.write_bytes(os.urandom(65536))
        with big.open("wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1024 * 1024))
        baseline = transfer(small, out, args.rate, window)
        result = transfer(big, out, args.rate, window)
    extra = int(result["receiver_peak_rss_kib"]) - int(baseline["receiver_peak_rss_kib"])  # type: ignore[call-overload]
    print(
        json.dumps(
            {
                "window_bytes": args.window_bytes,
                "baseline": baseline,
                "transfer": result,
                "rss_above_baseline_kib": extra,
            }
        )
    )
    if not result["identical"]:
        raise SystemExit("the file did not arrive identical")


if __name__ == "__main__":
    main()
