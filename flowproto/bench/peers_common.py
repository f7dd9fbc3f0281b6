"""What every benchmark peer shares: bounds, the run's clock, per-stream results, pacing.

The peers themselves are :mod:`.peers_flowproto`, :mod:`.peers_framing`,
:mod:`.peers_raw`, :mod:`.peers_zmq` and, on asyncio, :mod:`.peers_flowproto_asyncio`
and :mod:`.peers_raw_asyncio`; :mod:`.peers` is the program that runs one of them. The
pacing waits take the event loop's ``sleep`` (Trio's by default).
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from flowproto import Settings

from .workload import (
    Checker,
    CountOnly,
    Sampler,
    Schedule,
    cdf_points,
    peak_rss_kib,
    percentiles,
)

#: The plain framing header: body length and stream index.
FRAME: Final = struct.Struct("<IH")
#: Bytes the plain framing reader asks for per read (as flowproto's reader does).
READ_SIZE: Final = 256 * 1024
#: Bytes a coalescing sender puts in one ``send_all``.
WRITE_SIZE: Final = 64 * 1024
#: Most messages one consumer call takes.
MAX_BATCH: Final = 1024
#: Seconds the receiver's paced phase outlasts the sender's ``--duration``.
PHASE_SLACK: Final = 0.25

mono = time.monotonic

#: How a peer sleeps: ``trio.sleep`` or ``asyncio.sleep``.
Sleep = Callable[[float], Awaitable[Any]]


class TimedCpu:
    """The CPU seconds of a latency peer's timed round trips, not its start or warm-up.

    Call :meth:`tick` after each round trip (the client) or echo (the server): the clock
    starts when the ``warmup``-th is done (at once if there is no warm-up), and
    :attr:`seconds` is what this process spent from then until :meth:`stop`. The
    latency table shows both peers' CPU per round trip beside p50 and p99: the work a
    round trip costs, with what each wake-up costs in CPU but not the time waited for
    it (on one machine raw-asyncio took 105 µs of CPU per round trip idle, 51 beside a
    busy loop, so it moves with the machine too; ``benchmarks/round_trip_cpu.py`` is
    the figure without wake-ups).
    """

    __slots__ = ("_done", "_start", "seconds", "warmup")

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self._done = 0
        self._start: float | None = time.process_time() if warmup == 0 else None
        self.seconds = 0.0

    def tick(self) -> None:
        """One round trip (or echo) is done."""
        self._done += 1
        if self._done == self.warmup:
            self._start = time.process_time()

    def stop(self) -> float:
        """The timed part is over: its CPU seconds."""
        if self._start is not None:
            self.seconds = time.process_time() - self._start
        return self.seconds


def window_settings(kind: str, size: int, streams: int) -> Settings:
    """The receiver's flowproto settings: ``default``, or ``small`` (16 messages a stream)."""
    max_streams = max(Settings().max_streams, streams)  # streams-scaling opens 256
    if kind == "default":
        return Settings(max_streams=max_streams)
    max_message = size + 256  # room for the msgpack codec's few bytes
    stream_bytes = 16 * max_message
    return Settings(
        stream_messages=16,
        stream_bytes=stream_bytes,
        max_message_bytes=max_message,
        connection_bytes=max(Settings().connection_bytes, stream_bytes * streams),
        max_streams=max_streams,
    )


def batch_messages(size: int) -> int:
    """Messages per producer batch: about one coalesced write."""
    return max(1, min(MAX_BATCH, WRITE_SIZE // (size + FRAME.size)))


async def accept_one(args: argparse.Namespace) -> trio.SocketStream:
    """Listen on ``--host``/``--port``, say ``listening HOST:PORT`` on stderr (the harness
    reads the port there), and accept one connection."""
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    port = listeners[0].socket.getsockname()[1]
    print(f"listening {args.host}:{port}", file=sys.stderr, flush=True)
    transport = await listeners[0].accept()
    for lst in listeners:
        await lst.aclose()
    return transport


class RunClock:
    """The receiver's time zero: when the first message of any stream arrived."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def start(self, now: float) -> float:
        if self.t0 is None:
            self.t0 = now
        return self.t0


class StreamResult:
    """What one receiving stream's consumer saw."""

    def __init__(self, index: int, size: int, codec: str, workload: str = "checked") -> None:
        self.index = index
        self.checker: Checker | CountOnly = (
            CountOnly(size) if workload == "constant" else Checker(size, codec)
        )
        self.consumed = 0  # taken by the schedule, within the paced phase
        self.drained = 0  # taken after the phase, without pacing
        self.dropped = 0  # dropped by the receiver (drop policy, or over the memory cap)
        self.first: float | None = None
        self.last: float | None = None  # the last message consumed within the phase
        self.extra: dict[str, Any] = {}  # the peer's own figures for this stream

    def to_json(self, t0: float | None) -> dict[str, Any]:
        base = t0 if t0 is not None else 0.0
        return {
            "index": self.index,
            "consumed": self.consumed,
            "drained": self.drained,
            "dropped": self.dropped,
            **self.checker.finish(),
            "first_s": None if self.first is None else round(self.first - base, 4),
            "last_s": None if self.last is None else round(self.last - base, 4),
            **self.extra,
        }


async def finish_sending(sock: trio.SocketStream, timeout: float) -> None:
    """Half-close, then wait (up to ``timeout``) for the receiver to close: its close says
    it has taken everything."""
    await sock.send_eof()
    with trio.move_on_after(timeout):
        while await sock.receive_some(65536):
            pass
    await sock.aclose()


def sender_report(
    peer: str, sent: Sequence[int], elapsed: float, cpu: float, blocked: float
) -> dict[str, Any]:
    """A sender's JSON line: what it sent (per stream), its time, CPU and peak memory."""
    return {
        "role": "sender",
        "peer": peer,
        "sent": sum(sent),
        "sent_per_stream": list(sent),
        "elapsed_s": round(elapsed, 4),
        "cpu_s": round(cpu, 4),
        "blocked_s": round(blocked, 4),  # time inside send_all
        "peak_rss_kib": peak_rss_kib(),
    }


def receiver_report(
    peer: str,
    results: Sequence[StreamResult],
    clock: RunClock,
    sampler: Sampler,
    cpu: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The receiver's JSON line; ``extra`` holds the peer's peaks and its own figures."""
    samples: list[float] = []
    for r in results:
        samples.extend(r.checker.latencies)
    report: dict[str, Any] = {
        "role": "receiver",
        "peer": peer,
        "streams": [r.to_json(clock.t0) for r in results],
        "consumed": sum(r.consumed for r in results),
        "drained": sum(r.drained for r in results),
        "dropped": sum(r.dropped for r in results),
        "accounted": sum(r.checker.count for r in results),
        "latency": percentiles(samples),
        "latency_samples": len(samples),
        "latency_cdf_ms": cdf_points(samples),
        "peak_rss_kib": peak_rss_kib(),
        "peak_buffered_bytes": None,
        "peak_buffered_messages": None,
        "memory_series": sampler.series,
        "cpu_s": round(cpu, 4),
    }
    report.update(extra)
    return report


async def paced_wait(
    schedule: Schedule, clock: RunClock, taken: int, end: float, sleep: Sleep = trio.sleep
) -> int | None:
    """Wait until the schedule lets the consumer take a message; how many it may take.

    Returns ``None`` for any number, or 0 once the paced phase is over.
    """
    while True:
        t0 = clock.t0
        if t0 is None:
            return 1 if not schedule.unlimited else None
        now = mono()
        elapsed = now - t0
        if elapsed >= end:
            return 0
        allowed = schedule.allowed(elapsed, taken)
        if allowed != 0:
            return allowed
        wake = min(schedule.next_time(elapsed, taken), end)
        await sleep(max(0.0, wake - elapsed))


async def producer_wait(
    schedule: Schedule, start: float, sent: int, sleep: Sleep = trio.sleep
) -> int:
    while True:
        elapsed = mono() - start
        allowed = schedule.allowed(elapsed, sent)
        if allowed is None:
            return MAX_BATCH
        if allowed:
            return allowed
        await sleep(max(0.0, schedule.next_time(elapsed, sent) - elapsed))
