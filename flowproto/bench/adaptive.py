"""Adaptive credit, measured (issue #6, spec §8.9): four scenarios between separate processes.

``python -m flowproto.bench.adaptive --out DIR`` runs every scenario over TCP on 127.0.0.1, each
with a receiver, a sender and (for the long links) a delaying relay
(:mod:`flowproto.bench.relay`) as separate processes, bounded in time. It writes
``adaptive.json`` (every number), ``adaptive.md`` (the table) and, with matplotlib, one
PNG per scenario. ``--quick`` runs one short scenario (many receivers under one memory
budget) and exits with status 1 if an invariant broke; it never judges timings.

1. **long link**: a relay at 20 ms and 100 ms round trip and 160 Mbit/s, a greedy sender
   and a fast consumer; auto-tuned credit from a 64 KiB window against a static 64 KiB
   window. The relay's capacity is measured first with plain TCP through it.
2. **slow consumer**: 2000 msg/s of 1 KiB and a 100 ms latency target; auto-tuned from
   64 KiB against a static 4 MiB window. The sender stamps each message when credit lets
   it go, so the latency is queueing (in flight and in the receiver), not the sender's wait.
3. **speed change**: a consumer at 5000 msg/s, then 500, then 5000 again; the window
   over time against ``rate x (rtt + target)``.
4. **memory budget**: 16 connections with fast and slow consumers, one 4 MiB budget:
   committed credit over time, never above the budget.

Peers (run by the orchestrator; each prints one JSON line on stdout when done)::

    python -m flowproto.bench.adaptive receiver --port 0 --consumer 2000 ...
    python -m flowproto.bench.adaptive sender --port PORT --size 1024 --duration 10 ...
    python -m flowproto.bench.adaptive sink --port 0 / blast --port PORT --duration 3

Invariants checked in every mode: every message sent was received once, in order, and
reported delivered; no tuned window below its floor (spec §8.9 rule 5); a budget's peak
commitment within its capacity (spec §8.9 B1).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from flowproto import FLOOR_MESSAGES

from .adaptive_peers import KIB, MIB, blast_main, receiver_main, sender_main, sink_main
from .adaptive_report import markdown, plots, summarize
from .procs import child_env, python_module, scratch_dir

PY = python_module("adaptive")

# --- orchestration ---------------------------------------------------------------------------


class Proc:
    """A peer process whose stderr is scanned for its port; its last stdout line is JSON."""

    def __init__(self, args: list[str]) -> None:
        self.name = " ".join(args[2:])
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=scratch_dir(), env=child_env(),
        )  # fmt: skip

    def port(self) -> int:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
        raise RuntimeError(f"{self.name} exited before listening")

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError(f"{self.name} did not finish in {timeout} s: {err}") from None
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"{self.name} failed ({self.proc.returncode}): {err[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def stop(self, timeout: float) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        return self.result(timeout)


def relay_args(port: int, rtt: float, mbps: float, queue: int) -> list[str]:
    return [
        *python_module("relay"), "--target", f"127.0.0.1:{port}",
        *["--delay-ms", str(rtt * 1000 / 2), "--rate-mbps", str(mbps), "--queue-bytes", str(queue)],
    ]  # fmt: skip


def run(
    receiver: list[str], sender: list[str], relay: tuple[float, float, int] | None, timeout: float
) -> dict[str, Any]:
    """One scenario: receiver, optional relay, sender; their JSON results."""
    rx = Proc([*PY, "receiver", "--port", "0", "--timeout", str(timeout), *receiver])
    relay_proc = None
    try:
        port = rx.port()
        if relay is not None:
            relay_proc = Proc(relay_args(port, *relay))
            assert relay_proc.proc.stderr is not None
            line = relay_proc.proc.stderr.readline()
            port = int(line.rsplit(":", 1)[1])
        tx = Proc([*PY, "sender", "--port", str(port), *sender])
        sent = tx.result(timeout)
        received = rx.result(timeout)
    except BaseException:
        for proc in (rx, relay_proc):
            if proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
        raise
    result = {"receiver": received, "sender": sent}
    if relay_proc is not None:
        result["relay"] = relay_proc.stop(10)
    return result


def relay_capacity(rtt: float, mbps: float, queue: int, seconds: float = 4.0) -> float:
    """Bytes per second plain TCP gets through the relay (its capacity, measured)."""
    sink = Proc([*PY, "sink", "--port", "0", "--timeout", str(seconds + 20)])
    relay = Proc(relay_args(sink.port(), rtt, mbps, queue))
    assert relay.proc.stderr is not None
    port = int(relay.proc.stderr.readline().rsplit(":", 1)[1])
    blast = Proc([*PY, "blast", "--port", str(port), "--duration", str(seconds)])
    blast.result(seconds + 20)
    rate = float(sink.result(seconds + 20)["bytes_per_s"])
    relay.stop(10)
    return rate


# --- scenarios -------------------------------------------------------------------------------

LINK_MBPS = 160.0  # 20 MB/s
LINK_QUEUE = 1 * MIB


def scenario_long_link(quick: bool) -> dict[str, Any]:
    duration = 3.0 if quick else 8.0
    out: dict[str, Any] = {"link_mbps": LINK_MBPS, "runs": []}
    for rtt in (0.02, 0.1):
        capacity = relay_capacity(rtt, LINK_MBPS, LINK_QUEUE)
        for autotune in (True, False):
            rx = ["--consumer", "max", "--window-bytes", str(64 * KIB), "--window-messages"]
            rx += ["4096", "--max-message", str(16 * KIB), "--streams", "1"]
            rx += [] if autotune else ["--no-autotune"]
            tx = ["--size", str(16 * KIB), "--duration", str(duration)]
            r = run(rx, tx, (rtt, LINK_MBPS, LINK_QUEUE), duration + 60)
            r.update(rtt=rtt, autotune=autotune, capacity_bytes_per_s=capacity)
            out["runs"].append(r)
    return out


def scenario_slow_consumer(quick: bool) -> dict[str, Any]:
    duration = 4.0 if quick else 12.0
    out: dict[str, Any] = {"consumer_rate": 2000, "latency_target_ms": 100, "runs": []}
    for autotune in (True, False):
        window = 64 * KIB if autotune else 4 * MIB
        rx = ["--consumer", "2000", "--window-bytes", str(window), "--window-messages", "4096"]
        rx += ["--max-message", str(16 * KIB), "--latency", "--warmup", "2", "--streams", "1"]
        rx += [] if autotune else ["--no-autotune"]
        tx = ["--size", "1024", "--duration", str(duration), "--stamped"]
        r = run(rx, tx, None, duration + 60)
        r.update(autotune=autotune, duration=duration)
        out["runs"].append(r)
    return out


def scenario_speed_change(quick: bool) -> dict[str, Any]:
    phase = 2.0 if quick else 6.0
    schedule = f"5000,500@{phase},5000@{2 * phase}"
    rx = ["--consumer", schedule, "--window-bytes", str(64 * KIB), "--window-messages", "4096"]
    rx += ["--max-message", str(16 * KIB), "--latency", "--streams", "1"]
    tx = ["--size", "1024", "--duration", str(3 * phase), "--stamped"]
    r = run(rx, tx, None, 3 * phase + 60)
    r.update(schedule=schedule, phase=phase, latency_target_ms=100)
    return r


def scenario_budget(quick: bool) -> dict[str, Any]:
    n = 6 if quick else 16
    duration = 2.5 if quick else 10.0
    budget = 4 * MIB
    rates = ["max", "max", "5000", "200", "200", "200", "2000", "200"]
    rx = ["--consumer", ";".join(rates), "--window-bytes", str(256 * KIB), "--window-messages"]
    rx += ["4096", "--connection-bytes", str(MIB), "--max-message", str(16 * KIB)]
    rx += ["--budget", str(budget), "--streams", str(n), "--sample", "0.05"]
    tx = ["--size", str(4 * KIB), "--duration", str(duration), "--connections", str(n)]
    r = run(rx, tx, None, duration + 90)
    r.update(connections=n, budget=budget, rates=rates, duration=duration)
    return r


# --- invariants and the table ----------------------------------------------------------------


def problems(name: str, result: dict[str, Any]) -> list[str]:
    """Broken invariants of one run (never timings)."""
    found = []
    rx, tx = result["receiver"], result["sender"]
    received = {int(k[1:]): v for k, v in rx["streams"].items() if k[1:].isdigit()}
    for s in tx["streams"]:
        if "error" in s:
            found.append(f"{name}: connection {s['connection']}: {s['error']}")
            continue
        got = received.get(s["connection"])
        if got is None:
            found.append(f"{name}: connection {s['connection']} never reached the receiver")
            continue
        if not (s["sent"] == got["messages"] == s["delivered"]) or got["out_of_order"]:
            found.append(
                f"{name}: connection {s['connection']}: sent {s['sent']}, received "
                f"{got['messages']}, delivered {s['delivered']}, {got['out_of_order']} out of order"
            )
    floor = rx["floor_bytes"]
    for sample in rx["samples"]:
        for key, v in sample["streams"].items():
            if v[4] not in ("initial", "static") and (v[2] < floor or v[3] < FLOOR_MESSAGES):
                found.append(f"{name}: {key} window {v[2]} B / {v[3]} msgs below the floor")
    budget = rx.get("budget")
    if budget is not None and budget["peak"] > budget["capacity"]:
        found.append(f"{name}: budget peak {budget['peak']} over {budget['capacity']}")
    return found


SCENARIOS = {
    "long_link": scenario_long_link,
    "slow_consumer": scenario_slow_consumer,
    "speed_change": scenario_speed_change,
    "budget": scenario_budget,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flowproto.bench.adaptive", description=__doc__)
    sub = p.add_subparsers(dest="command")
    rx = sub.add_parser("receiver")
    rx.add_argument("--port", type=int, default=0)
    rx.add_argument("--consumer", default="max", help="rate schedule(s), ';' per connection")
    rx.add_argument("--window-bytes", type=int, default=64 * KIB)
    rx.add_argument("--window-messages", type=int, default=4096)
    rx.add_argument("--connection-bytes", type=int, default=0)
    rx.add_argument("--max-message", type=int, default=16 * KIB)
    rx.add_argument("--no-autotune", dest="autotune", action="store_false")
    rx.add_argument("--latency-ms", type=float, default=100.0)
    rx.add_argument("--budget", type=int, default=0)
    rx.add_argument("--latency", action="store_true", help="record each message's latency")
    rx.add_argument("--warmup", type=float, default=0.0)
    rx.add_argument("--streams", type=int, default=1, help="streams to wait for")
    rx.add_argument("--sample", type=float, default=0.1)
    rx.add_argument("--timeout", type=float, default=120.0)
    tx = sub.add_parser("sender")
    tx.add_argument("--port", type=int, required=True)
    tx.add_argument("--size", type=int, default=KIB)
    tx.add_argument("--duration", type=float, default=5.0)
    tx.add_argument("--connections", type=int, default=1)
    tx.add_argument("--stamped", action="store_true")
    tx.add_argument("--pace", action="store_true")
    tx.add_argument("--drain-timeout", type=float, default=60.0)
    sink = sub.add_parser("sink")
    sink.add_argument("--port", type=int, default=0)
    sink.add_argument("--timeout", type=float, default=60.0)
    blast = sub.add_parser("blast")
    blast.add_argument("--port", type=int, required=True)
    blast.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--quick", action="store_true", help="one short scenario; invariants only")
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    p.add_argument("--out", type=Path, default=Path("bench-results", "adaptive"))
    p.add_argument("--no-plots", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    peers = {
        "receiver": receiver_main,
        "sender": sender_main,
        "sink": sink_main,
        "blast": blast_main,
    }
    if args.command in peers:
        print(json.dumps(trio.run(peers[args.command], args)), flush=True)
        return 0
    names = ["budget"] if args.quick else (args.scenario or list(SCENARIOS))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    found: list[str] = []
    for name in names:
        print(f"adaptive: {name} ...", file=sys.stderr, flush=True)
        started = time.time()
        results[name] = SCENARIOS[name](args.quick)
        runs = results[name].get("runs", [results[name]])
        for i, r in enumerate(runs):
            found += problems(f"{name}[{i}]", r)
        print(f"adaptive: {name} done in {time.time() - started:.0f} s", file=sys.stderr)
    summary = summarize(results)
    (args.out / "adaptive.json").write_text(
        json.dumps({"summary": summary, "problems": found, "results": results})
    )
    (args.out / "adaptive.md").write_text(markdown(summary))
    if not args.no_plots:
        for path in plots(results, args.out):
            print(f"adaptive: wrote {path}", file=sys.stderr)
    print(json.dumps({"summary": summary, "problems": found}, indent=1))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
