"""The peer programs of the adaptive-credit benchmark (:mod:`.adaptive`).

``receiver`` consumes each connection's stream by a rate schedule and samples the
windows the auto-tuner chose; ``sender`` sends on one or more connections; ``sink`` and
``blast`` are plain TCP, to measure a relay's capacity. Each returns its JSON result.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

import trio

from flowproto import AutoTune, MemoryBudget, Pacer, Settings, tuned_floor
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
#: Most messages one receive call takes.
MAX_BATCH = 1024
#: Seconds of lag a consumer's pacer forgives: it takes at most about this much at once.
CONSUMER_BURST = 0.01
#: Longest sleep of a paced consumer before it reads its schedule again (seconds).
RESCHEDULE = 0.05


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
        # The consumer's pace, from its schedule: a flowproto.Pacer that forgives a lag
        # of more than 10 ms, so the consumer never takes more than about 10 ms worth
        # of messages at once (a lagging schedule restarts instead of bursting).
        pacer = Pacer(None, max_lag=CONSUMER_BURST)
        try:
            while True:
                now = trio.current_time()
                pacer.set_rate(rate_at(log.schedule, time.time() - self.t0), now)
                allowed = pacer.allowed(now)
                if allowed == 0:  # re-read the schedule at least every RESCHEDULE s
                    await trio.sleep(min(pacer.next_time(now) - now, RESCHEDULE))
                    continue
                limit = MAX_BATCH if allowed is None else min(allowed, MAX_BATCH)
                try:
                    batch = await stream.receive_many(limit)
                except trio.EndOfChannel:
                    log.ended = True
                    await stream.aclose()  # the sender waits for this: all was consumed
                    return
                pacer.take(len(batch))
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
