"""The flowproto peers: :mod:`flowproto.trio`, one connection, ``--streams`` streams.

``--api batch`` uses ``send_many``/``receive_many``, ``--api single`` one
``send()``/``receive()`` per message; ``--window small`` advertises 16 messages. The
receiver reads the windows it grants off its own outgoing frames (:class:`WindowTap`)
and reports the core's exact peak buffer against the largest of them.
"""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from flowproto import (
    PREFACE,
    CreditFrame,
    FrameDecoder,
    HelloFrame,
    Settings,
    StreamStatistics,
)
from flowproto.trio import FlowStream, open_connection, open_flow_connection

from .peers_common import (
    MAX_BATCH,
    PHASE_SLACK,
    RunClock,
    StreamResult,
    accept_one,
    batch_messages,
    mono,
    paced_wait,
    producer_wait,
    receiver_report,
    window_settings,
)
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


class GrantTap:
    """The windows a receiver grants, read off the bytes it sends (any event loop).

    Everything the receiver sends is fed to :meth:`feed` (it sends only control frames:
    a few per window of data). Its HELLO gives every stream's first window; each stream
    CREDIT goes to that stream's :class:`GrantedWindows`.
    """

    def __init__(self) -> None:
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

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the receiver sent (or is about to send), in order."""
        skip = min(self._preface, len(data))
        self._preface -= skip
        for frame in self._decoder.feed(bytes(memoryview(data)[skip:])):
            if isinstance(frame, HelloFrame):
                self.first = (frame.settings.stream_bytes, frame.settings.stream_messages)
            elif isinstance(frame, CreditFrame) and frame.stream_id != 0:
                self.stream(frame.stream_id).grant(frame)


class WindowTap(GrantTap, trio.abc.HalfCloseableStream):
    """The receiver's TCP stream, feeding everything it sends to its :class:`GrantTap`."""

    def __init__(self, inner: trio.SocketStream) -> None:
        GrantTap.__init__(self)
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.feed(data)  # before sending: once queued, the peer may rely on it
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
    transport = await accept_one(args)
    cpu0 = cpu_seconds()
    clock = RunClock()
    results = [StreamResult(i, args.size, args.codec, args.workload) for i in range(args.streams)]
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
    return receiver_report(
        "flowproto", results, clock, sampler, cpu, exact_peaks(streams, results, tap, settings)
    )


class HasStatistics(Protocol):
    """A stream of either I/O layer, as the reports read it."""

    @property
    def stream_id(self) -> int: ...

    def statistics(self) -> StreamStatistics: ...


def exact_peaks(
    streams: Sequence[HasStatistics],
    results: list[StreamResult],
    tap: GrantTap | None,
    settings: Settings,
) -> dict[str, Any]:
    """Each stream's exact peak (kept by the core where credit is checked, not sampled)
    and the largest window it granted on the wire; their sums for the receiver's line.
    Without a tap (uvloop writes from C: nothing to read the grants off) the granted
    windows are ``None``."""
    for stream in streams:
        st = stream.statistics()
        result = results[(stream.stream_id - 1) // 2]
        result.extra.update(
            peak_buffered_bytes=st.peak_buffered_bytes,
            peak_buffered_messages=st.peak_buffered_messages,
            **(tap.stream(stream.stream_id).finish() if tap is not None else {}),
        )
    per_stream = [r.extra for r in results if r.extra]
    return {
        # For one stream exact; for several, the sum of each stream's own peak.
        "peak_buffered_bytes": sum(x["peak_buffered_bytes"] for x in per_stream),
        "peak_buffered_messages": sum(x["peak_buffered_messages"] for x in per_stream),
        # The windows advertised at the start, and the largest granted (§8.9).
        "window_bytes": settings.stream_bytes,
        "window_messages": settings.stream_messages,
        "peak_window_bytes": (
            sum(x["largest_window_bytes"] for x in per_stream) if tap is not None else None
        ),
        "peak_window_messages": (
            sum(x["largest_window_messages"] for x in per_stream) if tap is not None else None
        ),
        "error": None,
    }


def buffered_now(streams: Sequence[HasStatistics]) -> tuple[int, int]:
    """What the streams' inboxes hold now, in bytes and messages (for the plots)."""
    nbytes = nmessages = 0
    for s in streams:
        st = s.statistics()
        nbytes += st.buffered_bytes
        nmessages += st.buffered_messages
    return nbytes, nmessages


async def sample_flowproto(sampler: Sampler, streams: list[FlowStream]) -> None:
    """Buffered bytes and messages every 100 ms, for the plots (the checks use peaks)."""
    while True:
        sampler.sample(mono(), *buffered_now(streams))
        await trio.sleep(SAMPLE_INTERVAL)


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
    per_batch = batch_messages(args.size)
    maker: MessageMaker | ConstantMaker = (
        ConstantMaker(args.size, per_batch)
        if args.workload == "constant"
        else MessageMaker(args.size, args.codec)
    )
    schedule = Schedule([]) if args.rate is None else schedule_from_json([[0, args.rate]])
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
