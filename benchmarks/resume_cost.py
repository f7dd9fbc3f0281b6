"""What resumption costs (issue #14): a CLI transfer through a proxy, cut every second or
never, in pairs within one run; and what the sender retains over time.

    python -m benchmarks.resume_cost --pairs 5 --count 30000 --out /tmp/resume-cost

Each pair runs ``flowproto receive`` and ``flowproto send --size 65536 --count N`` through
``flowproto.bench.cutproxy`` twice, alternately: without cuts, and with a cut every
``--cut-interval`` seconds (``--cut-interval``); the proxy is in both, so only the cuts
differ. The sender's ``--json-lines`` (spec §14, §15.11) gives its retained bytes once a
second. Writes ``results.json`` and ``results.md`` (the paired ratio, and the retention
timeline of the last cut run as a bar per second) to ``--out``. Everything runs on
127.0.0.1, each process bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FLOWPROTO = [sys.executable, "-m", "flowproto"]
MSG = 65536


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> re.Match[str]:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        match = re.search(pattern, line)
        if match:
            return match
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"no line matching {pattern!r}")


def one_run(count: int, cut_interval: float | None, timeout: float) -> dict[str, Any]:
    """One transfer through the proxy; the sender's summary and retention timeline."""
    port = _free_port()
    receiver = subprocess.Popen(
        [*FLOWPROTO, "receive", "--listen", f"127.0.0.1:{port}", "--raw", "--once", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proxy_args = ["--target", f"127.0.0.1:{port}", "--cut-every", str(10**15)]
    if cut_interval is not None:
        proxy_args += ["--cut-interval", str(cut_interval)]
    proxy = subprocess.Popen(
        [sys.executable, "-m", "flowproto.bench.cutproxy", *proxy_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_line(receiver, r"listening on", timeout)
        proxy_port = int(_wait_line(proxy, r"listening on .*:(\d+)", timeout).group(1))
        sender = subprocess.run(
            [
                *FLOWPROTO,
                *("send", "--connect", f"127.0.0.1:{proxy_port}", "--raw"),
                *("--size", str(MSG), "--count", str(count), "-q", "--json-lines"),
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        receiver.wait(timeout=timeout)
    finally:
        proxy.terminate()
        for p in (proxy, receiver):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    if sender.returncode != 0:
        raise RuntimeError(sender.stderr.decode())
    lines = [json.loads(x) for x in sender.stdout.decode().splitlines() if x.startswith("{")]
    timeline = [
        sum(c.get("retained_bytes", 0) for c in line.get("connections", [])) for line in lines
    ]
    summary = sender.stderr.decode().strip().splitlines()[-1]
    seconds = float(re.search(r"in ([\d.]+) s", summary).group(1))  # type: ignore[union-attr]
    reconnects = re.search(r"resumed (\d+) times", summary)
    return {
        "cut_interval": cut_interval,
        "seconds": seconds,
        "mb_per_s": count * MSG / seconds / 1e6,
        "reconnects": int(reconnects.group(1)) if reconnects else 0,
        "retained_bytes_per_second": timeline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume_cost")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--count", type=int, default=30_000, help="64 KiB messages per run")
    parser.add_argument("--cut-interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(args.pairs):
        plain = one_run(args.count, None, args.timeout)
        cut = one_run(args.count, args.cut_interval, args.timeout)
        pairs.append({"none": plain, "cut": cut, "ratio": cut["mb_per_s"] / plain["mb_per_s"]})
        print(
            f"pair {i + 1}: no cuts {plain['mb_per_s']:.0f} MB/s, a cut every "
            f"{args.cut_interval:g} s {cut['mb_per_s']:.0f} MB/s ({cut['reconnects']} "
            f"resumptions): {pairs[-1]['ratio']:.2f}x",
            flush=True,
        )
    ratios = [p["ratio"] for p in pairs]
    median = statistics.median(ratios)
    last = pairs[-1]["cut"]["retained_bytes_per_second"]
    peak = max(last, default=0) or 1
    bars = "\n".join(
        f"| {t + 1} s | {b / 2**20:,.1f} MiB | {'#' * round(40 * b / peak)} |"
        for t, b in enumerate(last)
    )
    command = (
        f"python -m benchmarks.resume_cost --pairs {args.pairs} --count {args.count} "
        f"--cut-interval {args.cut_interval:g} --out {args.out}"
    )
    md = (
        f"# What resumption costs\n\n`{command}`\n\n"
        f"{args.count:,} messages of 64 KiB per run, CLI send and receive through "
        "flowproto.bench.cutproxy, paired in one run.\n\n"
        "| pair | no cuts MB/s | cut MB/s | resumptions | ratio |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {i + 1} | {p['none']['mb_per_s']:.0f} | {p['cut']['mb_per_s']:.0f} | "
            f"{p['cut']['reconnects']} | {p['ratio']:.2f} |"
            for i, p in enumerate(pairs)
        )
        + f"\n\nPaired median ratio (cut / no cuts): **{median:.2f}x**.\n\n"
        "The sender's retained bytes (spec §15.5), once a second, in the last cut run:\n\n"
        "| time | retained | |\n|---|---|---|\n" + bars + "\n"
    )
    (args.out / "results.json").write_text(json.dumps({"pairs": pairs, "median": median}))
    (args.out / "results.md").write_text(md)
    print(f"paired median ratio: {median:.2f}x; {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
