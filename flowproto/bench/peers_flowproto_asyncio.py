"""The flowproto peers on asyncio: :mod:`flowproto.asyncio`, one connection, ``--streams``
streams, the twins of the Trio peers of :mod:`.peers_flowproto`.

The same options, workloads, schedules and JSON lines: ``--api batch`` uses
``send_many``/``receive_many``, ``--api single`` one ``send()``/``receive()`` per
message; ``--window small`` advertises 16 messages; ``--loop uvloop`` runs on uvloop.
On asyncio's own loop the receiver reads the windows it grants off its socket's sends
(:class:`TapSocket`, a :class:`.peers_flowproto.GrantTap`), as the Trio receiver does
off its stream; uvloop writes from C, so there the largest window granted is not
reported and only the other invariants are checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections import deque
from typing import Any

from flowproto.asyncio import EndOfStream, FlowStream, open_connection, open_flow_connection

from .aio import accept_socket
from .peers_common import (
    MAX_BATCH,
    PHASE_SLACK,
    RunClock,
    StreamResult,
    batch_messages,
    mono,
    paced_wait,
    producer_wait,
    receiver_report,
    window_settings,
)
from .peers_flowproto import GrantTap, buffered_now, exact_peaks
from .workload import (
    SAMPLE_INTERVAL,
    ConstantMaker,
    MessageMaker,
    Sampler,
    Schedule,
    cpu_seconds,
    peak_rss_kib,
    schedule_from_json,
)

PEER = "flowproto-asyncio"


class TapSocket(socket.socket):
    """The receiver's socket, feeding what each send took to a :class:`GrantTap`.

    asyncio's selector transports write with ``send`` (and, from Python 3.12, with
    ``sendmsg`` for what they buffered); only the bytes the kernel took are fed, in the
    order they go out.
    """

    def __init__(self, sock: socket.socket, tap: GrantTap) -> None:
        super().__init__(sock.family, sock.type, sock.proto, sock.detach())
        self.tap = tap

    def send(self, data: Any, flags: int = 0) -> int:
        n = super().send(data, flags)
        self.tap.feed(memoryview(data)[:n])
        return n

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        buffers = list(buffers)
        n = super().sendmsg(buffers, *args)
        left = n
        for piece in buffers:
            view = memoryview(piece)
            if left <= 0:
                break
            self.tap.feed(view[:left])
            left -= len(view)
        return n


async def flowproto_asyncio_receiver(args: argparse.Namespace) -> dict[str, Any]:
    settings = window_settings(args.window, args.size, args.streams)
    sock = await accept_socket(args)
    tap: GrantTap | None = None
    if args.loop == "asyncio":  # uvloop's transports write from C: nothing to tap
        tap = GrantTap()
        sock = TapSocket(sock, tap)
    cpu0 = cpu_seconds()
    clock = RunClock()
    results = [StreamResult(i, args.size, args.codec, args.workload) for i in range(args.streams)]
    sampler = Sampler(mono())
    streams: list[FlowStream] = []
    consume = consume_single if args.api == "single" else consume_batch
    async with open_flow_connection(
        sock,
        initiator=False,
        settings=settings,
        codec=args.codec,
        close_grace=1.0,
        # "small" is a fixed 16-message window (spec §8.6); "default" is auto-tuned (§8.9).
        autotune=args.window == "default",
    ) as conn:
        sampling = asyncio.ensure_future(sample(sampler, streams))
        consumers = []
        for _ in range(args.streams):
            stream = await conn.accept_stream()
            index = (stream.stream_id - 1) // 2
            streams.append(stream)
            schedule = schedule_from_json(
                args.slow_schedule if index == 0 and args.slow_schedule else args.schedule
            )
            notes = tap.stream(stream.stream_id).notes if tap is not None else deque()
            consumers.append(
                asyncio.ensure_future(consume(stream, schedule, results[index], clock, args, notes))
            )
        try:
            await asyncio.gather(*consumers)
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
    cpu = cpu_seconds() - cpu0
    sampler.sample(mono(), 0, 0)
    extra = exact_peaks(streams, results, tap, settings)
    return receiver_report(PEER, results, clock, sampler, cpu, extra)


async def sample(sampler: Sampler, streams: list[FlowStream]) -> None:
    """Buffered bytes and messages every 100 ms, for the plots (the checks use peaks)."""
    while True:
        sampler.sample(mono(), *buffered_now(streams))
        await asyncio.sleep(SAMPLE_INTERVAL)


async def consume_batch(
    stream: FlowStream,
    schedule: Schedule,
    result: StreamResult,
    clock: RunClock,
    args: argparse.Namespace,
    notes: deque[tuple[int, int]],
) -> None:
    end = args.duration + PHASE_SLACK
    checker = result.checker
    sleep = asyncio.sleep
    try:
        while True:
            allowed = await paced_wait(schedule, clock, result.consumed, end, sleep)
            if allowed == 0:
                break
            batch = await stream.receive_many(MAX_BATCH if allowed is None else allowed)
            notes.append((stream.messages_received, stream.bytes_received))
            now = mono()
            clock.start(now)
            if result.first is None:
                result.first = now
            checker.take(batch, now)
            result.consumed += len(batch)
            result.last = now
        while True:  # drain: the paced phase is over
            batch = await stream.receive_many(4 * MAX_BATCH)
            notes.append((stream.messages_received, stream.bytes_received))
            checker.take_drained(batch)
            result.drained += len(batch)
    except EndOfStream:
        pass
    await stream.aclose()


async def consume_single(
    stream: FlowStream,
    schedule: Schedule,
    result: StreamResult,
    clock: RunClock,
    args: argparse.Namespace,
    notes: deque[tuple[int, int]],
) -> None:
    end = args.duration + PHASE_SLACK
    checker = result.checker
    paced = not schedule.unlimited
    receive = stream.receive
    take = checker.take
    note = notes.append
    sleep = asyncio.sleep
    try:
        while True:
            if paced or clock.t0 is None or (result.consumed & 255) == 0:
                allowed = await paced_wait(schedule, clock, result.consumed, end, sleep)
                if allowed == 0:
                    break
            message = await receive()
            note((stream.messages_received, stream.bytes_received))
            now = mono()
            if result.first is None:
                clock.start(now)
                result.first = now
            take((message,), now)
            result.consumed += 1
            result.last = now
        while True:
            message = await receive()
            note((stream.messages_received, stream.bytes_received))
            checker.take_drained((message,))
            result.drained += 1
    except EndOfStream:
        pass
    await stream.aclose()


async def flowproto_asyncio_sender(args: argparse.Namespace) -> dict[str, Any]:
    settings = window_settings(args.window, args.size, args.streams)
    sent = [0] * args.streams
    async with open_connection(
        args.host, args.port, settings=settings, codec=args.codec, close_grace=2.0
    ) as conn:
        streams = [await conn.open_stream() for _ in range(args.streams)]
        cpu0 = cpu_seconds()
        start = mono()
        stop_at = start + args.duration
        await asyncio.gather(
            *(produce(stream, i, sent, stop_at, args) for i, stream in enumerate(streams))
        )
        elapsed = mono() - start
        cpu = cpu_seconds() - cpu0
        blocked = sum(s.statistics().seconds_blocked for s in streams)
        delivered = [s.statistics().delivered for s in streams]
    return {
        "role": "sender",
        "peer": PEER,
        "sent": sum(sent),
        "sent_per_stream": sent,
        "delivered": delivered,
        "elapsed_s": round(elapsed, 4),
        "cpu_s": round(cpu, 4),
        "blocked_s": round(blocked, 4),
        "peak_rss_kib": peak_rss_kib(),
    }


async def produce(
    stream: FlowStream, index: int, sent: list[int], stop_at: float, args: argparse.Namespace
) -> None:
    """Send until ``--count`` or ``stop_at``; a send waiting for credit then is cancelled
    (what it queued stays queued, ``send_many``'s contract), and the stream is closed."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(sending(stream, sent, index, stop_at, args), stop_at - mono())
    sent[index] = stream.messages_sent
    await stream.aclose()
    # The receiver half-closes once it has taken everything: wait for that, bounded.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(until_end(stream), args.timeout)


async def until_end(stream: FlowStream) -> None:
    async for _ in stream:
        pass


async def sending(
    stream: FlowStream, sent: list[int], index: int, stop_at: float, args: argparse.Namespace
) -> None:
    per_batch = batch_messages(args.size)
    maker: MessageMaker | ConstantMaker = (
        ConstantMaker(args.size, per_batch)
        if args.workload == "constant"
        else MessageMaker(args.size, args.codec)
    )
    schedule = Schedule([]) if args.rate is None else schedule_from_json([[0, args.rate]])
    sleep = asyncio.sleep
    start = mono()
    seq = 0
    if args.api == "single":
        send = stream.send
        make = maker.obj if args.codec == "msgpack" else maker.raw
        while seq < args.count:
            if args.rate is not None:
                await producer_wait(schedule, start, seq, sleep)
            elif seq & 255 == 0 and mono() >= stop_at:
                break
            await send(make(seq))
            seq += 1
            sent[index] = seq
        return
    while seq < args.count:
        n = min(per_batch, args.count - seq)
        if args.rate is not None:
            n = min(n, await producer_wait(schedule, start, seq, sleep))
        elif mono() >= stop_at:
            break
        try:
            await stream.send_many(maker.batch(seq, n))
        finally:
            # Cancelled at the deadline, a prefix was queued (send_many's contract).
            seq = stream.messages_sent
            sent[index] = seq
