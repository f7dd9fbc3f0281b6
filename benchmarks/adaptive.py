"""Adaptive credit, measured (issue #6, spec §8.9): four scenarios between separate processes.

``python -m benchmarks.adaptive --out DIR`` runs every scenario over TCP on 127.0.0.1, each
with a receiver, a sender and (for the long links) a delaying relay
(:mod:`benchmarks.relay`) as separate processes, bounded in time. It writes
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

    python -m benchmarks.adaptive receiver --port 0 --consumer 2000 ...
    python -m benchmarks.adaptive sender --port PORT --size 1024 --duration 10 ...
    python -m benchmarks.adaptive sink --port 0 / blast --port PORT --duration 3

Invariants checked in every mode: every message sent was received once, in order, and
reported delivered; no tuned window below its floor (spec §8.9 rule 5); a budget's peak
commitment within its capacity (spec §8.9 B1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from flowproto import AutoTune, MemoryBudget, Settings
from flowproto._autotune import FLOOR_MESSAGES, tuned_floor
from flowproto.trio import (
    ConnectionLostError,
    FlowConnection,
    FlowStream,
    StreamResetError,
    open_connection,
    open_flow_connection,
)

KIB = 1024
MIB = 1024 * 1024
HEADER = 16  # 8 bytes send time (time.time_ns), 2 bytes sender connection, 6 bytes sequence
ROOT = Path(__file__).resolve().parent.parent
PY = [sys.executable, "-m", "benchmarks.adaptive"]


# --- the receiver ----------------------------------------------------------------------------


def parse_schedule(text: str) -> list[tuple[float, float | None]]:
    """``"5000,500@6,5000@12"``: rates (msg/s, ``max`` = unlimited) from seconds on."""
    out: list[tuple[float, float | None]] = []
    for part in text.split(","):
        rate, _, at = part.partition("@")
        out.append((float(at or 0), None if rate == "max" else float(rate)))
    return sorted(out)


def rate_at(schedule: list[tuple[float, float | None]], t: float) -> float | None:
    rate = schedule[0][1]
    for start, r in schedule:
        if t >= start:
            rate = r
    return rate


class StreamLog:
    """What one receiving stream saw."""

    def __init__(self, key: str, schedule: list[tuple[float, float | None]]) -> None:
        self.key = key
        self.schedule = schedule
        self.messages = 0
        self.bytes = 0
        self.out_of_order = 0
        self.next_seq = 0
        self.sender_connection: int | None = None  # from the messages
        self.latency_ms = array("d")
        self.latency_at = array("d")  # seconds since the run began, when consumed
        self.ended = False
        self.stream: FlowStream | None = None


class Receiver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = Settings(
            stream_bytes=args.window_bytes,
            stream_messages=args.window_messages,
            connection_bytes=args.connection_bytes or args.window_bytes,
            max_message_bytes=args.max_message,
            keepalive_ms=0,
        )
        self.autotune: AutoTune | bool = (
            AutoTune(latency_target=args.latency_ms / 1000) if args.autotune else False
        )
        self.budget = MemoryBudget(args.budget) if args.budget else None
        self.schedules = [parse_schedule(s) for s in args.consumer.split(";")]
        self.logs: list[StreamLog] = []
        self.connections: list[FlowConnection] = []
        self.samples: list[dict[str, Any]] = []
        self.t0 = time.time()
        self.done = trio.Event()
        self.refused = 0
        self.accepted = 0

    async def on_connection(self, transport: trio.SocketStream) -> None:
        index = self.accepted
        self.accepted += 1
        try:
            async with open_flow_connection(
                transport,
                initiator=False,
                settings=self.settings,
                codec="raw",
                autotune=self.autotune,
                memory_budget=self.budget,
                close_grace=1.0,
            ) as conn:
                self.connections.append(conn)
                async with trio.open_nursery() as nursery:
                    while True:
                        try:
                            stream = await conn.accept_stream()
                        except ConnectionLostError:
                            break
                        schedule = self.schedules[index % len(self.schedules)]
                        log = StreamLog(f"c{index}s{stream.stream_id}", schedule)
                        log.stream = stream
                        self.logs.append(log)
                        nursery.start_soon(self.consume, stream, log)
        except (ConnectionLostError, trio.BrokenResourceError):
            self.refused += 1  # e.g. the memory budget refused it (spec §8.9 B2)
            self.check_done()

    def check_done(self) -> None:
        if len(self.logs) + self.refused >= self.args.streams and all(lg.ended for lg in self.logs):
            self.done.set()

    async def consume(self, stream: FlowStream, log: StreamLog) -> None:
        tokens = 0.0
        last = trio.current_time()
        try:
            while True:
                now = trio.current_time()
                rate = rate_at(log.schedule, time.time() - self.t0)
                if rate is None:
                    limit = 1024
                else:
                    tokens = min(tokens + (now - last) * rate, max(1.0, rate * 0.01))
                    if tokens < 1:
                        last = now
                        await trio.sleep((1 - tokens) / rate)
                        continue
                    limit = int(tokens)
                last = now
                try:
                    batch = await stream.receive_many(limit)
                except trio.EndOfChannel:
                    log.ended = True
                    await stream.aclose()  # the sender waits for this: all was consumed
                    return
                if rate is not None:
                    tokens -= len(batch)
                self.take(log, batch)
        except (StreamResetError, ConnectionLostError):
            log.ended = True
        finally:
            self.check_done()

    def take(self, log: StreamLog, batch: list[bytes]) -> None:
        now_ns = time.time_ns()
        at = time.time() - self.t0
        stamped = self.args.latency
        if log.sender_connection is None and batch:
            log.sender_connection = int.from_bytes(batch[0][8:10], "big")
        for m in batch:
            seq = int.from_bytes(m[10:16], "big")
            if seq != log.next_seq:
                log.out_of_order += 1
            log.next_seq = seq + 1
            if stamped:
                log.latency_ms.append((now_ns - int.from_bytes(m[:8], "big")) / 1e6)
                log.latency_at.append(at)
            log.bytes += len(m)
        log.messages += len(batch)

    async def sample(self) -> None:
        while True:
            entry: dict[str, Any] = {"t": round(time.time() - self.t0, 3), "streams": {}}
            for log in self.logs:
                if log.stream is None or log.ended:
                    continue
                s = log.stream.statistics()
                entry["streams"][log.key] = [
                    log.bytes,
                    log.messages,
                    s.window_bytes,
                    s.window_messages,
                    s.window_reason,
                    s.queue_depth_messages,
                    round(s.consume_rate, 1),
                ]
            conns = [c.statistics() for c in self.connections if c._lost is None]
            entry["rtt_min"] = min(
                (c.rtt_min for c in conns if c.rtt_min is not None), default=None
            )
            entry["connection_windows"] = [c.window_bytes for c in conns]
            if self.budget is not None:
                entry["committed"] = self.budget.committed
            self.samples.append(entry)
            await trio.sleep(self.args.sample)

    def result(self) -> dict[str, Any]:
        streams = {}
        for log in self.logs:
            lat = sorted(log.latency_ms)
            pairs = zip(log.latency_ms, log.latency_at, strict=True)
            warm = sorted(v for v, at in pairs if at >= self.args.warmup)
            streams[f"c{log.sender_connection}"] = {
                "consumer": ",".join(f"{r or 'max'}@{t:g}" for t, r in log.schedule),
                "messages": log.messages,
                "bytes": log.bytes,
                "out_of_order": log.out_of_order,
                "ended": log.ended,
                "latency_ms": percentiles(lat),
                "latency_after_warmup_ms": percentiles(warm),
                "latency_series": latency_series(log),
            }
        out: dict[str, Any] = {
            "role": "receiver",
            "streams": streams,
            "samples": self.samples,
            "floor_bytes": tuned_floor(self.args.max_message),
            "refused_connections": self.refused,
        }
        if self.budget is not None:
            out["budget"] = {"capacity": self.budget.capacity, "peak": self.budget.peak}
        return out


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, math.ceil(q * len(values)) - 1)], 3)

    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(values[-1], 3), "n": len(values)}


def latency_series(log: StreamLog, bucket: float = 0.5) -> list[list[float]]:
    """[time, p50, p99] per bucket of consumption time (for the plots)."""
    buckets: dict[int, list[float]] = {}
    for v, at in zip(log.latency_ms, log.latency_at, strict=True):
        buckets.setdefault(int(at / bucket), []).append(v)
    out = []
    for b in sorted(buckets):
        vals = sorted(buckets[b])
        p = percentiles(vals)
        assert p is not None
        out.append([round((b + 0.5) * bucket, 2), p["p50"], p["p99"]])
    return out


async def receiver_main(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver(args)
    listeners = await trio.open_tcp_listeners(args.port, host="127.0.0.1")
    print(f"listening on 127.0.0.1:{listeners[0].socket.getsockname()[1]}", file=sys.stderr)
    sys.stderr.flush()
    with trio.move_on_after(args.timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, receiver.on_connection, listeners)
            nursery.start_soon(receiver.sample)
            await receiver.done.wait()
            nursery.cancel_scope.cancel()
    return receiver.result()


# --- the sender ------------------------------------------------------------------------------


async def send_stream(stream: FlowStream, args: argparse.Namespace, out: dict[str, Any]) -> None:
    size = args.size
    filler = bytes(size - HEADER)
    tag = out["connection"].to_bytes(2, "big")
    end = trio.current_time() + args.duration
    seq = 0
    while trio.current_time() < end:
        if args.stamped:
            # Stamp a message only when credit lets it go at once: its latency is then the
            # time in flight and queued at the receiver, not the time it waited here.
            st = stream.statistics()
            n = min(st.send_credit_messages, st.send_credit_bytes // size, 64)
            if n <= 0:
                await trio.sleep(0.0005)
                continue
        else:
            n = 32
        stamp = time.time_ns().to_bytes(8, "big")
        await stream.send_many(
            [stamp + tag + (seq + i).to_bytes(6, "big") + filler for i in range(n)]
        )
        seq += n
    await stream.aclose()
    with trio.move_on_after(args.drain_timeout):
        try:
            while True:
                await stream.receive_many()
        except (trio.EndOfChannel, StreamResetError, ConnectionLostError):
            pass
    st = stream.statistics()
    out.update(
        sent=stream.messages_sent,
        delivered=st.delivered,
        blocked_on_peer_seconds=round(st.blocked_on_peer_seconds, 3),
        peer_consume_rate=st.peer_consume_rate,
    )


async def sender_main(args: argparse.Namespace) -> dict[str, Any]:
    streams: list[dict[str, Any]] = []

    async def one_connection(index: int) -> None:
        try:
            async with open_connection(
                "127.0.0.1", args.port, codec="raw", pacing=args.pace, close_grace=1.0
            ) as conn:
                stream = await conn.open_stream()
                out: dict[str, Any] = {"connection": index}
                streams.append(out)
                await send_stream(stream, args, out)
        except (ConnectionLostError, OSError) as exc:
            streams.append({"connection": index, "error": str(exc)})

    async with trio.open_nursery() as nursery:
        for i in range(args.connections):
            nursery.start_soon(one_connection, i)
    return {"role": "sender", "streams": streams}


# --- plain TCP, to measure the relay's capacity ----------------------------------------------


async def sink_main(args: argparse.Namespace) -> dict[str, Any]:
    listeners = await trio.open_tcp_listeners(args.port, host="127.0.0.1")
    print(f"listening on 127.0.0.1:{listeners[0].socket.getsockname()[1]}", file=sys.stderr)
    sys.stderr.flush()
    marks: list[tuple[float, int]] = []
    done = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        total = 0
        while data := await stream.receive_some(256 * KIB):
            total += len(data)
            marks.append((time.time(), total))
        done.set()

    with trio.move_on_after(args.timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, listeners)
            await done.wait()
            nursery.cancel_scope.cancel()
    if len(marks) < 2:
        return {"role": "sink", "bytes_per_s": 0.0}
    start = marks[0][0] + 1.0  # skip the first second (slow start, filling the relay)
    tail = [m for m in marks if m[0] >= start]
    rate = (tail[-1][1] - tail[0][1]) / (tail[-1][0] - tail[0][0]) if len(tail) > 1 else 0.0
    return {"role": "sink", "bytes_per_s": rate}


async def blast_main(args: argparse.Namespace) -> dict[str, Any]:
    stream = await trio.open_tcp_stream("127.0.0.1", args.port)
    chunk = bytes(64 * KIB)
    sent = 0
    with trio.move_on_after(args.duration):
        while True:
            await stream.send_all(chunk)
            sent += len(chunk)
    await stream.aclose()
    return {"role": "blast", "bytes": sent}


# --- orchestration ---------------------------------------------------------------------------


class Proc:
    """A peer process whose stderr is scanned for its port; its last stdout line is JSON."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.name = " ".join(args[2:])
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )

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
        *[sys.executable, "-m", "benchmarks.relay", "--target", f"127.0.0.1:{port}"],
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


def series(result: dict[str, Any], key: str | None = None) -> list[list[Any]]:
    """[t, bytes, messages, window_bytes, window_messages, reason, depth, rate] per sample."""
    rows = []
    for s in result["receiver"]["samples"]:
        streams = s["streams"]
        k = key or next(iter(streams), None)
        if k in streams:
            rows.append([s["t"], *streams[k]])
    return rows


def effective_window(row: list[Any], size: int = KIB) -> int:
    """The messages a window lets in: the least of its message and byte limits."""
    return int(min(row[4], row[3] // size))


def throughput_series(rows: list[list[Any]], step: float = 0.5) -> list[tuple[float, float]]:
    out = []
    last = None
    for row in rows:
        if last is None or row[0] - last[0] >= step:
            if last is not None:
                out.append((row[0], (row[1] - last[1]) / (row[0] - last[0])))
            last = row
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the README quotes, per scenario."""
    s: dict[str, Any] = {}
    if "long_link" in results:
        for r in results["long_link"]["runs"]:
            rows = series(r)
            tp = throughput_series(rows, 0.25)
            cap = r["capacity_bytes_per_s"]
            first = next((row[0] for row in rows if row[1] > 0), 0.0)  # the first consumption
            reach = next((t - first for t, v in tp if v >= 0.9 * cap), None)
            steady = [v for t, v in tp if t >= tp[-1][0] - 3] if tp else []
            name = f"long_link_{int(r['rtt'] * 1000)}ms_{'tuned' if r['autotune'] else 'static'}"
            s[name] = {
                "capacity_mb_s": round(cap / 1e6, 2),
                "steady_mb_s": round(sum(steady) / len(steady) / 1e6, 2) if steady else None,
                "steady_share_of_capacity": round(sum(steady) / len(steady) / cap, 3)
                if steady
                else None,
                "seconds_to_90_percent": round(reach, 2) if reach is not None else None,
                "window_over_rtt_mb_s": round(64 * KIB / r["rtt"] / 1e6, 2),
                "final_window_bytes": series(r)[-1][3] if series(r) else None,
            }
    if "slow_consumer" in results:
        for r in results["slow_consumer"]["runs"]:
            st = next(iter(r["receiver"]["streams"].values()))
            name = f"slow_consumer_{'tuned' if r['autotune'] else 'static'}"
            rows = series(r)
            first = next((row[0] for row in rows if row[2] > 0), 0.0)
            # Consumed per second while the sender was sending (after a 1 s start), not
            # counting the drain after it stopped.
            span = [row for row in rows if first + 1 <= row[0] <= first + r["duration"] - 0.5]
            rate = (span[-1][2] - span[0][2]) / (span[-1][0] - span[0][0]) if span else None
            s[name] = {
                "latency_ms": st["latency_ms"],
                "latency_after_warmup_ms": st["latency_after_warmup_ms"],
                "consumed_msgs_per_s": round(rate, 1) if rate else None,
                "final_window_messages": effective_window(rows[-1]) if rows else None,
            }
    if "speed_change" in results:
        r = results["speed_change"]
        rows = series(r)
        phase = r["phase"]
        rtt = min((x["rtt_min"] for x in r["receiver"]["samples"] if x["rtt_min"]), default=0)
        follow = []
        for i, rate in enumerate((500, 5000)):
            start = phase * (i + 1)
            target = rate * (rtt + 0.1)
            hit = next(
                (row[0] - start for row in rows
                 if row[0] >= start and abs(effective_window(row) - target) <= 0.25 * target),
                None,
            )  # fmt: skip
            follow.append({"to_rate": rate, "target_messages": round(target), "seconds": hit})
        s["speed_change"] = {"follow": follow}
    if "budget" in results:
        r = results["budget"]
        b = r["receiver"]["budget"]
        groups: dict[str, list[int]] = {}
        for v in r["receiver"]["streams"].values():
            groups.setdefault(v["consumer"], []).append(v["messages"])
        s["budget"] = {
            "capacity": b["capacity"],
            "peak_committed": b["peak"],
            "connections": r["connections"],
            "messages": sum(v["messages"] for v in r["receiver"]["streams"].values()),
            "mean_msgs_per_s_by_consumer": {
                k: round(sum(v) / len(v) / r["duration"]) for k, v in sorted(groups.items())
            },
        }
    return s


def markdown(summary: dict[str, Any]) -> str:
    lines = ["# Adaptive credit (python -m benchmarks.adaptive)", ""]
    for name, values in summary.items():
        lines.append(f"- **{name}**: " + json.dumps(values))
    return "\n".join(lines) + "\n"


# --- plots (matplotlib, optional) ------------------------------------------------------------


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return []
    written = []
    if "long_link" in results:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in results["long_link"]["runs"]:
            tp = throughput_series(series(r), 0.25)
            style = "-" if r["autotune"] else "--"
            kind = "auto-tuned" if r["autotune"] else "static 64 KiB"
            label = f"{int(r['rtt'] * 1000)} ms RTT, {kind}"
            ax.plot([t for t, _ in tp], [v / 1e6 for _, v in tp], style, label=label)
        caps = {r["rtt"]: r["capacity_bytes_per_s"] for r in results["long_link"]["runs"]}
        for rtt, cap in caps.items():
            ax.axhline(cap / 1e6, color="grey", lw=0.8, ls=":")
            ax.axhline(0.9 * cap / 1e6, color="grey", lw=0.5, ls=":")
            del rtt
        ax.set_xlabel("seconds")
        ax.set_ylabel("MB/s consumed")
        ax.set_title("Long link through a delaying relay (capacity dotted, 90% below it)")
        ax.legend()
        written.append(save(fig, out / "adaptive_long_link.png"))
    if "slow_consumer" in results:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in results["slow_consumer"]["runs"]:
            st = next(iter(r["receiver"]["streams"].values()))
            rows = st["latency_series"]
            label = "auto-tuned (100 ms target)" if r["autotune"] else "static 4 MiB window"
            ax.plot([x[0] for x in rows], [x[2] for x in rows], label=f"{label}, p99")
        ax.axhline(100, color="grey", ls=":", lw=0.8)
        ax.axhline(150, color="red", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("seconds")
        ax.set_ylabel("queueing latency, ms (p99 per 0.5 s)")
        ax.set_title("Slow consumer (2000 msg/s): latency target 100 ms, bound 150 ms")
        ax.legend()
        written.append(save(fig, out / "adaptive_slow_consumer.png"))
    if "speed_change" in results:
        r = results["speed_change"]
        rows = series(r)
        rtt = min((x["rtt_min"] for x in r["receiver"]["samples"] if x["rtt_min"]), default=0)
        sched = parse_schedule(r["schedule"])
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot(
            [x[0] for x in rows],
            [effective_window(x) for x in rows],
            label="window: least of its messages and bytes / 1 KiB",
        )
        ts = [x[0] for x in rows]
        ax.plot(
            ts,
            [(rate_at(sched, t) or 0) * (rtt + 0.1) for t in ts],
            ":",
            label="consumer rate x (rtt + 100 ms)",
        )
        ax.plot([x[0] for x in rows], [x[6] for x in rows], lw=0.6, label="queued (messages)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("messages")
        ax.set_title("Consumer speed 5000 -> 500 -> 5000 msg/s: the window follows")
        ax.legend()
        written.append(save(fig, out / "adaptive_speed_change.png"))
    if "budget" in results:
        r = results["budget"]
        samples = r["receiver"]["samples"]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot([s["t"] for s in samples], [s.get("committed", 0) / MIB for s in samples],
                label="committed credit, all connections")  # fmt: skip
        ax.plot([s["t"] for s in samples], [sum(s["connection_windows"]) / MIB for s in samples],
                lw=0.8, label="sum of connection windows (each capped at its share)")  # fmt: skip
        ax.axhline(r["budget"] / MIB, color="red", ls=":", label="memory budget")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MiB")
        ax.set_title(f"{r['connections']} connections under one {r['budget'] // MIB} MiB budget")
        ax.legend()
        written.append(save(fig, out / "adaptive_budget.png"))
    return written


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# --- command line ----------------------------------------------------------------------------

SCENARIOS = {
    "long_link": scenario_long_link,
    "slow_consumer": scenario_slow_consumer,
    "speed_change": scenario_speed_change,
    "budget": scenario_budget,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.adaptive", description=__doc__)
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
    p.add_argument("--out", type=Path, default=ROOT / "bench-results" / "adaptive")
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
