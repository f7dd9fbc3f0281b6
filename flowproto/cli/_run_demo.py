"""The demo's run: a fast sender and a slow receiver on one loopback connection.

:func:`run_demo` only orchestrates: it serves a slow consumer on 127.0.0.1, connects a
sender that sends as fast as its credit allows, reports through ``on_start`` (the
address) and ``on_sample`` (once a second), and returns a :class:`DemoResult`. The
``demo`` command prints them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from flowproto import Settings
from flowproto.trio import FlowStream, open_connection, serve

from ._constants import CLOSE_GRACE
from ._layer_trio import TRIO
from ._pace import Pace


@dataclass(frozen=True)
class DemoSample:
    """One second of the demo: totals so far, the receiver's buffer, time blocked."""

    elapsed: float
    sent: int
    received: int
    buffered: int
    seconds_blocked: float


@dataclass(frozen=True)
class DemoResult:
    """How the demo ended; ``ok`` if nothing was lost and the buffer kept to the window."""

    sent: int
    received: int
    delivered: int
    window: int
    peak_buffered: int
    seconds_blocked: float

    @property
    def ok(self) -> bool:
        return self.sent == self.received == self.delivered and self.peak_buffered <= self.window


class _SlowConsumer:
    """The receiving side: one message at a time, at ``rate`` per second."""

    def __init__(self, rate: float) -> None:
        self.pace = Pace(rate, layer=TRIO)
        self.received = 0
        self.peak = 0
        self.stream: FlowStream | None = None

    @property
    def buffered(self) -> int:
        return self.stream.statistics().buffered_messages if self.stream is not None else 0

    async def __call__(self, stream: FlowStream) -> None:
        self.stream = stream
        while True:
            await self.pace.wait()
            try:
                batch = await stream.receive_many(1)
            except trio.EndOfChannel:
                return  # serve() half-closes our side: the sender learns all was consumed
            self.peak = max(self.peak, stream.statistics().buffered_messages + len(batch))
            self.received += len(batch)


def _demo_settings(window: int, size: int) -> Settings:
    """A fixed window of ``window`` messages (the byte window never the tighter one)."""
    return Settings(
        stream_messages=window,
        stream_bytes=max(window * size, 65536),
        max_message_bytes=65536,
    )


async def _sample_every_second(
    stream: FlowStream,
    consumer: _SlowConsumer,
    start: float,
    done: trio.Event,
    on_sample: Callable[[DemoSample], None] | None,
) -> None:
    """Report the totals at ``start + 1``, ``start + 2``, ... until ``done``."""
    tick = start
    while not done.is_set():
        tick += 1.0
        await trio.sleep_until(tick)
        if on_sample is not None:
            sample = DemoSample(
                tick - start,
                stream.messages_sent,
                consumer.received,
                consumer.buffered,
                stream.seconds_blocked,
            )
            on_sample(sample)


async def run_demo(
    duration: float,
    rate: float,
    window: int,
    *,
    size: int = 100,
    on_start: Callable[[str], None] | None = None,
    on_sample: Callable[[DemoSample], None] | None = None,
) -> DemoResult:
    """A fast sender and a slow receiver on one loopback connection, in this process.

    Args:
        duration: seconds the sender sends for.
        rate: messages per second the receiver consumes.
        window: the receiver's per-stream credit in messages (fixed, spec §8.6).
        size: bytes per message.
        on_start: called with ``HOST:PORT`` once the receiver listens.
        on_sample: called once a second while the sender sends.
    """
    consumer = _SlowConsumer(rate)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve,
                consumer,
                0,
                host="127.0.0.1",
                settings=_demo_settings(window, size),
                codec="raw",
                close_grace=CLOSE_GRACE,
                autotune=False,  # the demo shows a fixed window (spec §8.6), not §8.9
            )
        )
        host, port = listeners[0].socket.getsockname()[:2]
        if on_start is not None:
            on_start(f"{host}:{port}")
        async with open_connection(host, port, codec="raw", close_grace=CLOSE_GRACE) as conn:
            stream = await conn.open_stream()
            sender_done = trio.Event()
            start = trio.current_time()
            nursery.start_soon(
                _sample_every_second, stream, consumer, start, sender_done, on_sample
            )
            payload = bytes(size)
            with trio.move_on_at(start + duration):
                while True:
                    await stream.send_many([payload] * window)
            sender_done.set()
            await stream.aclose()
            with trio.move_on_after(10), contextlib.suppress(trio.EndOfChannel):
                await stream.receive()  # the receiver ends its side once it consumed ours
            st = stream.statistics()
        nursery.cancel_scope.cancel()
    return DemoResult(
        sent=st.messages_sent,
        received=consumer.received,
        delivered=st.delivered or 0,
        window=window,
        peak_buffered=consumer.peak,
        seconds_blocked=st.seconds_blocked,
    )
