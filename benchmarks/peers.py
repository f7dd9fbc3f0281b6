"""The sender and receiver programs of the socket benchmarks, one pair per strategy.

Run as two processes; the receiver first, it prints ``listening HOST:PORT`` on stderr::

    python -m benchmarks.peers receiver --peer flowproto --port 0 --size 1024 ...
    python -m benchmarks.peers sender --peer flowproto --port PORT --size 1024 ...

Each prints ONE JSON line of its own measurements on stdout when it exits. Peers:

- ``flowproto``: :mod:`flowproto.trio`, one connection, ``--streams`` streams;
  ``--api batch`` uses ``send_many``/``receive_many``, ``--api single`` one
  ``send()``/``receive()`` per message; ``--window small`` advertises 16 messages.
- ``framing``: plain length-prefixed frames (``<u32 length><u16 stream>``) over one Trio
  TCP stream. The sender coalesces frames into ~64 KiB writes (``--api batch``) or calls
  ``send_all`` once per message (``--api single``). The receiver's reader parses every
  frame of a read into a per-stream queue, by ``--policy``: ``block`` (the reader stops
  reading while a queue holds a read's worth: kernel buffers are the only
  backpressure), ``unbounded`` (it never stops: the queue grows), or ``drop`` (a bounded
  queue; the newest messages are dropped and counted).
- ``zmq``: pyzmq PUSH/PULL with high-water marks (``--hwm``), one message per call.

Every run is bounded: the sender stops after ``--count`` messages or ``--duration``
seconds; the receiver consumes by its schedule for ``--duration`` seconds from its first
message, then takes whatever is left without pacing ("drained", not counted as consumed)
until the sender's end of stream; both give up after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from flowproto import PREFACE, CreditFrame, FrameDecoder, HelloFrame, Settings
from flowproto.trio import FlowStream, open_connection, open_flow_connection

from .workload import (
    SAMPLE_INTERVAL,
    Checker,
    MessageMaker,
    Sampler,
    Schedule,
    cdf_points,
    cpu_seconds,
    decoder,
    encoder,
    peak_rss_kib,
    percentiles,
    schedule_from_json,
    seq_of,
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


def window_settings(kind: str, size: int, streams: int) -> Settings:
    """The receiver's flowproto settings: ``default``, or ``small`` (16 messages a stream)."""
    if kind == "default":
        return Settings()
    max_message = size + 256  # room for the msgpack codec's few bytes
    stream_bytes = 16 * max_message
    return Settings(
        stream_messages=16,
        stream_bytes=stream_bytes,
        max_message_bytes=max_message,
        connection_bytes=max(Settings().connection_bytes, stream_bytes * streams),
    )


def batch_messages(size: int) -> int:
    """Messages per producer batch: about one coalesced write."""
    return max(1, min(MAX_BATCH, WRITE_SIZE // (size + FRAME.size)))


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

    def __init__(self, index: int, size: int, codec: str) -> None:
        self.index = index
        self.checker = Checker(size, codec)
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


# --- flowproto ---------------------------------------------------------------------------


class GrantedWindows:
    """The largest window one receiving stream was granted, from the frames on the wire.

    A stream starts with the window of the receiver's HELLO (spec §5.2, §8.6); each
    CREDIT raises its absolute limits and says how many messages were consumed when it
    was queued (spec §5.3, §10.5), so ``limit - consumed`` is the window it granted.
    What a receiver holds never exceeds ``limit - consumed`` of its latest grant, and
    limits never go down: the largest granted window bounds everything it ever held,
    even while auto-tuning moves the window (spec §8.9). The frame carries consumed
    messages, not bytes: the consumer notes ``(messages, bytes)`` consumed after every
    receive call, and each grant is matched with the note of its message count.
    """

    def __init__(self, first_bytes: int, first_messages: int) -> None:
        self.limit_bytes = first_bytes
        self.limit_messages = first_messages
        self.largest_bytes = first_bytes
        self.largest_messages = first_messages
        self.grants = 0
        self.unmatched = 0  # grants whose consumed count no note had: the bound is unknown
        #: (messages, bytes) consumed after each receive call, appended by the consumer.
        self.notes: deque[tuple[int, int]] = deque([(0, 0)])
        self._waiting: deque[tuple[int, int]] = deque()  # (consumed, byte limit) to match

    def grant(self, frame: CreditFrame) -> None:
        """A CREDIT the receiver is sending for this stream."""
        self.grants += 1
        if frame.bytes_limit is not None:
            self.limit_bytes = max(self.limit_bytes, frame.bytes_limit)
        if frame.messages_limit is not None:
            self.limit_messages = max(self.limit_messages, frame.messages_limit)
        consumed = frame.consumed
        if consumed is None:  # the reference implementation always says (spec §5.3)
            self.unmatched += 1
            return
        self.largest_messages = max(self.largest_messages, self.limit_messages - consumed)
        self._waiting.append((consumed, self.limit_bytes))
        self.match()

    def match(self) -> None:
        """Match waiting grants with the consumer's notes (both come in consumed order)."""
        notes, waiting = self.notes, self._waiting
        while waiting and notes:
            consumed, limit = waiting[0]
            messages, nbytes = notes[0]
            if messages < consumed and len(notes) > 1:
                notes.popleft()  # no later grant can name it
            elif messages == consumed:
                self.largest_bytes = max(self.largest_bytes, limit - nbytes)
                waiting.popleft()  # the note stays: the next grant may name it too
            elif messages > consumed:
                self.unmatched += 1  # consumed at no receive call's end: cannot happen
                waiting.popleft()
            else:
                break  # the consumer has not noted this receive call yet

    def finish(self) -> dict[str, Any]:
        """The stream ended: every grant matched, the largest windows for the report."""
        self.match()
        return {
            "largest_window_bytes": self.largest_bytes,
            "largest_window_messages": self.largest_messages,
            "grants": self.grants,
            "unmatched_grants": self.unmatched + len(self._waiting),
        }


class WindowTap(trio.abc.HalfCloseableStream):
    """The receiver's TCP stream, reading the windows it grants off its outgoing frames.

    Everything the receiver sends passes through :meth:`send_all` and is parsed (it
    sends only control frames: a few per window of data). Its HELLO gives every stream's
    first window; each stream CREDIT goes to that stream's :class:`GrantedWindows`.
    """

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.first: tuple[int, int] | None = None  # the HELLO's stream window
        self.streams: dict[int, GrantedWindows] = {}
        self._preface = len(PREFACE)  # bytes of it still to skip
        self._decoder = FrameDecoder(max_frame_bytes=1 << 24)

    def stream(self, stream_id: int) -> GrantedWindows:
        """The grants of one stream (created with the HELLO's window)."""
        granted = self.streams.get(stream_id)
        if granted is None:
            assert self.first is not None, "a stream before our HELLO went out"
            granted = self.streams[stream_id] = GrantedWindows(*self.first)
        return granted

    def _tap(self, data: bytes | bytearray | memoryview) -> None:
        skip = min(self._preface, len(data))
        self._preface -= skip
        for frame in self._decoder.feed(bytes(memoryview(data)[skip:])):
            if isinstance(frame, HelloFrame):
                self.first = (frame.settings.stream_bytes, frame.settings.stream_messages)
            elif isinstance(frame, CreditFrame) and frame.stream_id != 0:
                self.stream(frame.stream_id).grant(frame)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._tap(data)  # before sending: once queued, the peer may rely on it
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def flowproto_receiver(args: argparse.Namespace) -> dict[str, Any]:
    settings = window_settings(args.window, args.size, args.streams)
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    port = listeners[0].socket.getsockname()[1]
    print(f"listening {args.host}:{port}", file=sys.stderr, flush=True)
    transport = await listeners[0].accept()
    for lst in listeners:
        await lst.aclose()
    cpu0 = cpu_seconds()
    clock = RunClock()
    results = [StreamResult(i, args.size, args.codec) for i in range(args.streams)]
    sampler = Sampler(mono())
    streams: list[FlowStream] = []
    tap = WindowTap(transport)
    consume = consume_flowproto_single if args.api == "single" else consume_flowproto
    async with (
        open_flow_connection(
            tap,
            initiator=False,
            settings=settings,
            codec=args.codec,
            close_grace=1.0,
            # "small" is a fixed 16-message window (spec §8.6); "default" is auto-tuned (§8.9).
            autotune=args.window == "default",
        ) as conn,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(sample_flowproto, sampler, streams)
        async with trio.open_nursery() as consumers:
            for _ in range(args.streams):
                stream = await conn.accept_stream()
                index = (stream.stream_id - 1) // 2
                streams.append(stream)
                schedule = schedule_from_json(
                    args.slow_schedule if index == 0 and args.slow_schedule else args.schedule
                )
                consumers.start_soon(consume, stream, schedule, results[index], clock, args, tap)
        nursery.cancel_scope.cancel()
    cpu = cpu_seconds() - cpu0
    sampler.sample(mono(), 0, 0)
    for stream in streams:
        # Exact peaks, kept by the core where credit is checked (not sampled), against
        # the largest windows granted on the wire.
        st = stream.statistics()
        result = results[(stream.stream_id - 1) // 2]
        result.extra.update(
            peak_buffered_bytes=st.peak_buffered_bytes,
            peak_buffered_messages=st.peak_buffered_messages,
            **tap.stream(stream.stream_id).finish(),
        )
    per_stream = [r.extra for r in results if r.extra]
    return receiver_report(
        "flowproto",
        results,
        clock,
        sampler,
        cpu,
        {
            # For one stream exact; for several, the sum of each stream's own peak.
            "peak_buffered_bytes": sum(x["peak_buffered_bytes"] for x in per_stream),
            "peak_buffered_messages": sum(x["peak_buffered_messages"] for x in per_stream),
            # The windows advertised at the start, and the largest granted (§8.9).
            "window_bytes": settings.stream_bytes,
            "window_messages": settings.stream_messages,
            "peak_window_bytes": sum(x["largest_window_bytes"] for x in per_stream),
            "peak_window_messages": sum(x["largest_window_messages"] for x in per_stream),
            "error": None,
        },
    )


async def sample_flowproto(sampler: Sampler, streams: list[FlowStream]) -> None:
    """Buffered bytes and messages every 100 ms, for the plots (the checks use peaks)."""
    while True:
        nbytes = nmessages = 0
        for s in streams:
            st = s.statistics()
            nbytes += st.buffered_bytes
            nmessages += st.buffered_messages
        sampler.sample(mono(), nbytes, nmessages)
        await trio.sleep(SAMPLE_INTERVAL)


async def paced_wait(schedule: Schedule, clock: RunClock, taken: int, end: float) -> int | None:
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
        await trio.sleep(max(0.0, wake - elapsed))


async def consume_flowproto(
    stream: FlowStream,
    schedule: Schedule,
    result: StreamResult,
    clock: RunClock,
    args: argparse.Namespace,
    tap: WindowTap,
) -> None:
    end = args.duration + PHASE_SLACK
    checker = result.checker
    notes = tap.stream(stream.stream_id).notes
    try:
        while True:
            allowed = await paced_wait(schedule, clock, result.consumed, end)
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
    except trio.EndOfChannel:
        pass
    await stream.aclose()


async def consume_flowproto_single(
    stream: FlowStream,
    schedule: Schedule,
    result: StreamResult,
    clock: RunClock,
    args: argparse.Namespace,
    tap: WindowTap,
) -> None:
    end = args.duration + PHASE_SLACK
    checker = result.checker
    paced = not schedule.unlimited
    receive = stream.receive
    take = checker.take
    notes = tap.stream(stream.stream_id).notes
    note = notes.append
    try:
        while True:
            if paced or clock.t0 is None or (result.consumed & 255) == 0:
                allowed = await paced_wait(schedule, clock, result.consumed, end)
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
    except trio.EndOfChannel:
        pass
    await stream.aclose()


async def flowproto_sender(args: argparse.Namespace) -> dict[str, Any]:
    settings = window_settings(args.window, args.size, args.streams)
    sent = [0] * args.streams
    async with open_connection(
        args.host, args.port, settings=settings, codec=args.codec, close_grace=2.0
    ) as conn:
        streams = [await conn.open_stream() for _ in range(args.streams)]
        cpu0 = cpu_seconds()
        start = mono()
        stop_at = start + args.duration
        async with trio.open_nursery() as nursery:
            for i, stream in enumerate(streams):
                nursery.start_soon(produce_flowproto, stream, i, sent, stop_at, args)
        elapsed = mono() - start
        cpu = cpu_seconds() - cpu0
        blocked = sum(s.statistics().seconds_blocked for s in streams)
        delivered = [s.statistics().delivered for s in streams]
    return {
        "role": "sender",
        "peer": "flowproto",
        "sent": sum(sent),
        "sent_per_stream": sent,
        "delivered": delivered,
        "elapsed_s": round(elapsed, 4),
        "cpu_s": round(cpu, 4),
        "blocked_s": round(blocked, 4),
        "peak_rss_kib": peak_rss_kib(),
    }


async def produce_flowproto(
    stream: FlowStream, index: int, sent: list[int], stop_at: float, args: argparse.Namespace
) -> None:
    maker = MessageMaker(args.size, args.codec)
    schedule = Schedule([]) if args.rate is None else schedule_from_json([[0, args.rate]])
    per_batch = batch_messages(args.size)
    start = mono()
    seq = 0
    with trio.move_on_at(trio.current_time() + (stop_at - mono())):
        if args.api == "single":
            send = stream.send
            make = maker.obj if args.codec == "msgpack" else maker.raw
            while seq < args.count:
                if args.rate is not None:
                    allowed = await producer_wait(schedule, start, seq)
                elif seq & 255 == 0 and mono() >= stop_at:
                    break
                await send(make(seq))
                seq += 1
                sent[index] = seq
        else:
            while seq < args.count:
                n = min(per_batch, args.count - seq)
                if args.rate is not None:
                    allowed = await producer_wait(schedule, start, seq)
                    n = min(n, allowed)
                elif mono() >= stop_at:
                    break
                batch = maker.batch(seq, n)
                try:
                    await stream.send_many(batch)
                finally:
                    # Cancelled at the deadline, a prefix was queued (send_many's contract).
                    seq = stream.messages_sent
                    sent[index] = seq
    sent[index] = stream.messages_sent
    await stream.aclose()
    # The receiver half-closes once it has taken everything: wait for that, bounded.
    with trio.move_on_after(args.timeout):
        try:
            while True:
                await stream.receive()
        except trio.EndOfChannel:
            pass


async def producer_wait(schedule: Schedule, start: float, sent: int) -> int:
    while True:
        elapsed = mono() - start
        allowed = schedule.allowed(elapsed, sent)
        if allowed is None:
            return MAX_BATCH
        if allowed:
            return allowed
        await trio.sleep(max(0.0, schedule.next_time(elapsed, sent) - elapsed))


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
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    port = listeners[0].socket.getsockname()[1]
    print(f"listening {args.host}:{port}", file=sys.stderr, flush=True)
    sock = await listeners[0].accept()
    for lst in listeners:
        await lst.aclose()
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
    await sock.send_eof()
    with trio.move_on_after(args.timeout):  # until the receiver has taken everything
        while await sock.receive_some(65536):
            pass
    await sock.aclose()
    return {
        "role": "sender",
        "peer": "framing",
        "sent": sum(sent),
        "sent_per_stream": sent,
        "elapsed_s": round(elapsed, 4),
        "cpu_s": round(cpu, 4),
        "blocked_s": round(waited[0], 4),  # time inside send_all
        "peak_rss_kib": peak_rss_kib(),
    }


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


# --- zmq -------------------------------------------------------------------------------------


def zmq_receiver(args: argparse.Namespace) -> dict[str, Any]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, args.hwm)
    sock.setsockopt(zmq.RCVTIMEO, 200)
    sock.setsockopt(zmq.LINGER, 0)
    host = args.host
    if args.port:
        sock.bind(f"tcp://{host}:{args.port}")
        port = args.port
    else:
        port = sock.bind_to_random_port(f"tcp://{host}")
    print(f"listening {host}:{port}", file=sys.stderr, flush=True)
    result = StreamResult(0, args.size, args.codec)
    checker = result.checker
    schedule = schedule_from_json(args.schedule)
    decode = decoder(args.codec)
    raw = args.codec == "raw"
    sampler = Sampler(mono())
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(SAMPLE_INTERVAL):
            sampler.sample(mono(), None, None)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    clock = RunClock()
    end = args.duration + PHASE_SLACK
    hard_stop = mono() + args.timeout
    cpu0: float | None = None
    recv = sock.recv
    finished = False
    error = None
    while mono() < hard_stop:  # the paced phase
        if clock.t0 is not None:
            elapsed = mono() - clock.t0
            if elapsed >= end:
                break
            allowed = schedule.allowed(elapsed, result.consumed)
            if allowed == 0:
                wake = min(schedule.next_time(elapsed, result.consumed), end)
                time.sleep(max(0.0, wake - elapsed))
                continue
        try:
            message = recv()
        except zmq.Again:
            continue
        now = mono()
        if not message:
            finished = True
            break
        if clock.t0 is None:
            cpu0 = cpu_seconds()
            clock.start(now)
            result.first = now
        checker.take((message if raw else decode(message),), now)
        result.consumed += 1
        result.last = now
    while not finished and mono() < hard_stop:  # drain
        try:
            message = recv()
        except zmq.Again:
            continue
        if not message:
            finished = True
            break
        checker.take_drained((message if raw else decode(message),))
        result.drained += 1
    if not finished:
        error = "timed out before the sender's end marker"
    cpu = cpu_seconds() - (cpu0 if cpu0 is not None else cpu_seconds())
    stop_sampling.set()
    thread.join()
    sampler.sample(mono(), None, None)
    sock.close()
    ctx.term()
    return receiver_report("zmq", [result], clock, sampler, cpu, {"hwm": args.hwm, "error": error})


def zmq_sender(args: argparse.Namespace) -> dict[str, Any]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, args.hwm)
    sock.setsockopt(zmq.LINGER, int(args.timeout * 1000))
    sock.connect(f"tcp://{args.host}:{args.port}")
    maker = MessageMaker(args.size, args.codec)
    encode = encoder(args.codec)
    schedule = Schedule([]) if args.rate is None else schedule_from_json([[0, args.rate]])
    per_batch = batch_messages(args.size)
    send = sock.send
    noblock = zmq.NOBLOCK
    again = zmq.Again
    copy = args.size < 65536
    cpu0 = cpu_seconds()
    start = mono()
    stop_at = start + args.duration
    blocked = 0.0
    seq = 0
    while seq < args.count:
        now = mono()
        if now >= stop_at:
            break
        n = min(per_batch, args.count - seq)
        if args.rate is not None:
            allowed = schedule.allowed(now - start, seq)
            if allowed == 0:
                time.sleep(max(0.0, schedule.next_time(now - start, seq) - (now - start)))
                continue
            n = min(n, allowed or n)
        for m in maker.batch(seq, n):
            data = encode(m)
            try:
                send(data, noblock, copy=copy)
            except again:
                t = mono()
                send(data, copy=copy)  # blocks at the high-water mark
                blocked += mono() - t
        seq += n
    elapsed = mono() - start
    cpu = cpu_seconds() - cpu0
    send(b"")  # the end marker
    sock.close()  # lingers until queued messages are out (bounded by --timeout)
    ctx.term()
    return {
        "role": "sender",
        "peer": "zmq",
        "sent": seq,
        "sent_per_stream": [seq],
        "elapsed_s": round(elapsed, 4),
        "cpu_s": round(cpu, 4),
        "blocked_s": round(blocked, 4),
        "peak_rss_kib": peak_rss_kib(),
    }


# --- entry point -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["sender", "receiver"])
    p.add_argument("--peer", choices=["flowproto", "framing", "zmq"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--size", type=int, default=1024, help="message size in bytes (>= 16)")
    p.add_argument("--codec", choices=["raw", "msgpack"], default="raw")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--api", choices=["batch", "single"], default="batch")
    p.add_argument("--count", type=int, default=1_000_000, help="sender: most messages a stream")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of sending / pacing")
    p.add_argument("--timeout", type=float, default=60.0, help="hard limit in seconds")
    p.add_argument("--rate", type=float, default=None, help="sender: messages/s a stream")
    p.add_argument(
        "--schedule",
        type=json.loads,
        default=[[0, None]],
        help="receiver: consumption phases as JSON [[start_s, rate|null], ...]",
    )
    p.add_argument(
        "--slow-schedule", type=json.loads, default=None, help="receiver: stream 0's phases"
    )
    p.add_argument("--window", choices=["default", "small"], default="default")
    p.add_argument("--policy", choices=["block", "unbounded", "drop"], default="block")
    p.add_argument("--queue-messages", type=int, default=Settings().stream_messages)
    p.add_argument("--queue-bytes", type=int, default=Settings().stream_bytes)
    p.add_argument("--max-buffer-mb", type=int, default=1024, help="unbounded: safety cap")
    p.add_argument("--hwm", type=int, default=1000, help="zmq high-water mark")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    runners: dict[tuple[str, str], Callable[[argparse.Namespace], Any]] = {
        ("flowproto", "sender"): flowproto_sender,
        ("flowproto", "receiver"): flowproto_receiver,
        ("framing", "sender"): framing_sender,
        ("framing", "receiver"): framing_receiver,
    }
    if args.peer == "zmq":
        report = zmq_sender(args) if args.role == "sender" else zmq_receiver(args)
    else:
        fn = runners[(args.peer, args.role)]

        async def bounded() -> dict[str, Any]:
            with trio.fail_after(args.timeout):
                result: dict[str, Any] = await fn(args)
                return result

        report = trio.run(bounded)
    print(json.dumps(report, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
