"""The plain framing peers: length-prefixed frames (``<u32 length><u16 stream>``) over TCP.

The sender coalesces frames into ~64 KiB writes (``--api batch``) or calls ``send_all``
once per message (``--api single``). The receiver's reader parses every frame of a read
into a per-stream queue, by ``--policy``: ``block`` (kernel buffers are the only
backpressure), ``unbounded`` (the queue grows) or ``drop`` (the newest are dropped).
"""

from __future__ import annotations

import argparse
from collections import deque
from typing import Any

import trio

from .peers_common import (
    FRAME,
    MAX_BATCH,
    PHASE_SLACK,
    READ_SIZE,
    RunClock,
    StreamResult,
    accept_one,
    batch_messages,
    finish_sending,
    mono,
    paced_wait,
    producer_wait,
    receiver_report,
    sender_report,
)
from .workload import (
    SAMPLE_INTERVAL,
    MessageMaker,
    Sampler,
    Schedule,
    cpu_seconds,
    decoder,
    encoder,
    schedule_from_json,
    seq_of,
)

# --- plain length-prefixed framing ----------------------------------------------------------


class Inbox:
    """One stream's queue at a framing receiver."""

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.nbytes = 0
        self.eof = False
        self.readable = trio.lowlevel.ParkingLot()  # the consumer waits here
        self.writable = trio.lowlevel.ParkingLot()  # the reader waits here (block policy)


class FramingReceiver:
    """The reader task and queues of a plain framing receiver."""

    def __init__(self, args: argparse.Namespace, results: list[StreamResult]) -> None:
        self.args = args
        self.policy: str = args.policy
        self.inboxes = [Inbox() for _ in range(args.streams)]
        self.results = results
        self.total_bytes = 0
        self.total_messages = 0
        # The most held at once, kept where the queues grow (exact, not sampled).
        self.peak_bytes = 0
        self.peak_messages = 0
        self.cap_bytes = args.max_buffer_mb * 1024 * 1024
        self.overflowed_at: float | None = None
        self.decode = decoder(args.codec)

    def full(self, inbox: Inbox) -> bool:
        if self.policy == "block":
            return inbox.nbytes >= READ_SIZE or len(inbox.queue) >= MAX_BATCH
        # drop: the same bound as flowproto's default window
        limit_messages: int = self.args.queue_messages
        limit_bytes: int = self.args.queue_bytes
        return len(inbox.queue) >= limit_messages or inbox.nbytes >= limit_bytes

    async def reader(self, sock: trio.SocketStream, clock: RunClock) -> None:
        # A frame cut by the end of a read waits in ``head`` (its header, while shorter
        # than one) or in ``body`` (pieces of its body, joined once it is whole), so
        # every byte is copied once after the read: into its message.
        header = FRAME.size
        unpack = FRAME.unpack_from
        head = b""
        body: list[bytes | memoryview] = []
        body_len = 0
        length = sid = 0
        while True:
            chunk = await sock.receive_some(READ_SIZE)
            if not chunk:
                break
            if clock.t0 is None:
                clock.start(mono())
            groups: dict[int, list[bytes]] = {}
            pos = 0
            if head:
                chunk = head + chunk
                head = b""
            elif body:
                take = length - body_len
                if len(chunk) < take:
                    body.append(chunk)
                    body_len += len(chunk)
                    continue
                body.append(memoryview(chunk)[:take])
                groups[sid] = [b"".join(body)]
                body.clear()
                body_len = 0
                pos = take
            n = len(chunk)
            while n - pos >= header:
                length, sid = unpack(chunk, pos)
                end = pos + header + length
                if end > n:
                    body = [memoryview(chunk)[pos + header :]]
                    body_len = n - pos - header
                    pos = n
                    break
                message = chunk[pos + header : end]
                group = groups.get(sid)
                if group is None:
                    groups[sid] = [message]
                else:
                    group.append(message)
                pos = end
            if pos < n:
                head = chunk[pos:]
            for sid_, messages in groups.items():
                await self.deliver(self.inboxes[sid_], self.results[sid_], messages)
        for inbox in self.inboxes:
            inbox.eof = True
            inbox.readable.unpark_all()

    async def deliver(self, inbox: Inbox, result: StreamResult, messages: list[bytes]) -> None:
        policy = self.policy
        if policy == "block":
            while self.full(inbox):
                await inbox.writable.park()
        elif policy == "drop":
            keep = 0
            nbytes = inbox.nbytes
            room = self.args.queue_messages - len(inbox.queue)
            while keep < len(messages) and keep < room and nbytes < self.args.queue_bytes:
                nbytes += len(messages[keep])
                keep += 1
            if keep < len(messages):
                self.count_dropped(result, messages[keep:])
                messages = messages[:keep]
        elif self.total_bytes > self.cap_bytes:  # unbounded, past the safety cap
            if self.overflowed_at is None:
                self.overflowed_at = mono()
            self.count_dropped(result, messages)
            return
        if messages:
            nbytes = sum(map(len, messages))
            inbox.queue.extend(messages)
            inbox.nbytes += nbytes
            self.total_bytes += nbytes
            self.total_messages += len(messages)
            self.peak_bytes = max(self.peak_bytes, self.total_bytes)
            self.peak_messages = max(self.peak_messages, self.total_messages)
            inbox.readable.unpark_all()

    def count_dropped(self, result: StreamResult, messages: list[bytes]) -> None:
        codec = self.args.codec
        decode = self.decode
        result.checker.drop([seq_of(decode(m), codec) for m in messages])
        result.dropped += len(messages)

    def take(self, inbox: Inbox, limit: int) -> list[bytes]:
        queue = inbox.queue
        count = min(limit, len(queue))
        batch = [queue.popleft() for _ in range(count)]
        nbytes = sum(map(len, batch))
        inbox.nbytes -= nbytes
        self.total_bytes -= nbytes
        self.total_messages -= count
        if self.policy == "block":
            inbox.writable.unpark_all()
        return batch

    async def wait_readable(self, inbox: Inbox) -> bool:
        """Wait for a message; False at the end of the stream."""
        while not inbox.queue:
            if inbox.eof:
                return False
            await inbox.readable.park()
        return True


async def framing_receiver(args: argparse.Namespace) -> dict[str, Any]:
    sock = await accept_one(args)
    cpu0 = cpu_seconds()
    clock = RunClock()
    results = [StreamResult(i, args.size, args.codec) for i in range(args.streams)]
    rx = FramingReceiver(args, results)
    sampler = Sampler(mono())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_framing, sampler, rx)
        async with trio.open_nursery() as consumers:
            consumers.start_soon(rx.reader, sock, clock)
            for i in range(args.streams):
                schedule = schedule_from_json(
                    args.slow_schedule if i == 0 and args.slow_schedule else args.schedule
                )
                consumers.start_soon(consume_framing, rx, i, schedule, clock, args)
        nursery.cancel_scope.cancel()
    await sock.aclose()  # the sender waits for this: everything was taken
    cpu = cpu_seconds() - cpu0
    sampler.sample(mono(), 0, 0)
    return receiver_report(
        f"framing-{args.policy}",
        results,
        clock,
        sampler,
        cpu,
        {
            "peak_buffered_bytes": rx.peak_bytes,
            "peak_buffered_messages": rx.peak_messages,
            "overflowed_at_s": None
            if rx.overflowed_at is None or clock.t0 is None
            else round(rx.overflowed_at - clock.t0, 3),
            "error": None,
        },
    )


async def sample_framing(sampler: Sampler, rx: FramingReceiver) -> None:
    while True:
        sampler.sample(mono(), rx.total_bytes, rx.total_messages)
        await trio.sleep(SAMPLE_INTERVAL)


async def consume_framing(
    rx: FramingReceiver,
    index: int,
    schedule: Schedule,
    clock: RunClock,
    args: argparse.Namespace,
) -> None:
    inbox = rx.inboxes[index]
    result = rx.results[index]
    checker = result.checker
    decode = rx.decode
    raw = args.codec == "raw"
    end = args.duration + PHASE_SLACK
    paced = not schedule.unlimited
    single = args.api == "single"
    while True:
        if paced or clock.t0 is None or not single or (result.consumed & 255) == 0:
            allowed = await paced_wait(schedule, clock, result.consumed, end)
            if allowed == 0:
                break
        else:
            allowed = None
        if single:
            allowed = 1
            await trio.lowlevel.checkpoint()  # one awaited receive per message
        if not await rx.wait_readable(inbox):
            return
        batch = rx.take(inbox, MAX_BATCH if allowed is None else allowed)
        now = mono()
        if result.first is None:
            result.first = now
        checker.take(batch if raw else [decode(m) for m in batch], now)
        result.consumed += len(batch)
        result.last = now
    while await rx.wait_readable(inbox):
        batch = rx.take(inbox, 1 << 30)
        checker.take_drained(batch if raw else [decode(m) for m in batch])
        result.drained += len(batch)


async def framing_sender(args: argparse.Namespace) -> dict[str, Any]:
    sock = await trio.open_tcp_stream(args.host, args.port)
    cpu0 = cpu_seconds()
    start = mono()
    stop_at = start + args.duration
    sent = [0] * args.streams
    waited = [0.0]
    lock = trio.Lock() if args.streams > 1 else None
    async with trio.open_nursery() as nursery:
        for i in range(args.streams):
            nursery.start_soon(produce_framing, sock, lock, i, sent, waited, stop_at, args)
    elapsed = mono() - start
    cpu = cpu_seconds() - cpu0
    await finish_sending(sock, args.timeout)
    return sender_report("framing", sent, elapsed, cpu, waited[0])


async def produce_framing(
    sock: trio.SocketStream,
    lock: trio.Lock | None,
    index: int,
    sent: list[int],
    waited: list[float],
    stop_at: float,
    args: argparse.Namespace,
) -> None:
    maker = MessageMaker(args.size, args.codec)
    encode = encoder(args.codec)
    pack = FRAME.pack
    schedule = Schedule([]) if args.rate is None else schedule_from_json([[0, args.rate]])
    per_batch = batch_messages(args.size)
    start = mono()
    seq = 0
    single = args.api == "single"
    while seq < args.count:
        n = min(per_batch, args.count - seq)
        if args.rate is not None:
            n = min(n, await producer_wait(schedule, start, seq))
        if mono() >= stop_at:
            break
        payloads = [encode(m) for m in maker.batch(seq, n)]
        if single:
            t = mono()
            for p in payloads:
                await send_locked(sock, lock, pack(len(p), index) + p)
            waited[0] += mono() - t
        else:
            parts = []
            for p in payloads:
                parts.append(pack(len(p), index))
                parts.append(p)
            t = mono()
            await send_locked(sock, lock, b"".join(parts))
            waited[0] += mono() - t
        seq += n
        sent[index] = seq


async def send_locked(sock: trio.SocketStream, lock: trio.Lock | None, data: bytes) -> None:
    if lock is None:
        await sock.send_all(data)
    else:
        async with lock:
            await sock.send_all(data)
