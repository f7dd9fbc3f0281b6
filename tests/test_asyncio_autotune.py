"""The asyncio layer's auto-tuning, statistics, pacing and memory budget (spec §8.9,
§8.10, §14): test_trio_autotune.py's cases, on asyncio.

Under a virtual clock: :class:`AutojumpLoop` is an event loop whose ``time()`` jumps to
the next timer whenever no socket is ready and nothing else can run (what trio's
``autojump_clock`` does), and the two connections talk over a ``socket.socketpair()``,
whose bytes are readable as soon as they are written. So consumers "take" 10 ms a
message without the test waiting, and nothing here measures real time.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from flowproto import MemoryBudget, Settings
from flowproto.asyncio import FlowConnection, open_flow_connection

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.Runner(loop_factory=...) is Python 3.11+"
)

KIB = 1024
START = Settings(
    stream_bytes=256 * KIB, stream_messages=1024, connection_bytes=256 * KIB, max_message_bytes=KIB
)


class AutojumpLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock that jumps to the next timer when idle."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual = 0.0
        selector = self._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            ready: list[tuple[selectors.SelectorKey, int]] = real_select(0)
            if ready or timeout == 0:
                return ready
            if timeout is None:  # no timer at all: wait for a socket for real
                return real_select(None)  # type: ignore[no-any-return]
            self.virtual += timeout  # idle: jump to the next timer
            return []

        selector.select = select

    def time(self) -> float:
        return self.virtual


def run_virtual(main: Callable[[], Awaitable[None]], timeout: float = 600.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)  # virtual seconds

    with asyncio.Runner(loop_factory=AutojumpLoop) as runner:  # type: ignore[attr-defined]
        runner.run(bounded())


@asynccontextmanager
async def pair(
    server: dict[str, Any] | None = None, client: dict[str, Any] | None = None
) -> AsyncIterator[tuple[FlowConnection, FlowConnection]]:
    """Two connections over a socketpair: (initiator, acceptor)."""
    a, b = socket.socketpair()
    ready: asyncio.Future[FlowConnection] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def run_server() -> None:
        async with open_flow_connection(b, initiator=False, **(server or {})) as conn:
            ready.set_result(conn)
            await done.wait()

    task = asyncio.get_running_loop().create_task(run_server())
    async with open_flow_connection(a, **(client or {})) as conn:
        try:
            yield conn, await ready
        finally:
            done.set()
    await task


async def flood(stream: Any, count: int, size: int = 100) -> None:
    payload = b"x" * size
    for _ in range(count):
        await stream.send(payload)


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_autotune_is_on_by_default_and_sizes_a_slow_consumers_window() -> None:
    """spec §8.9 rule 3: 100 msg/s and a 100 ms target: a window of about 10 messages,
    from a start of 1024; the queue, its drain time and the reason say so (spec §14)."""

    async def main() -> None:
        async with pair(server={"settings": START, "codec": "raw"}) as (client, server):
            sender = await client.open_stream(codec="raw")
            task = asyncio.get_running_loop().create_task(flood(sender, 3000))
            receiver = await server.accept_stream()
            for _ in range(1500):  # 15 virtual seconds at 100 msg/s
                await receiver.receive()
                await asyncio.sleep(0.01)
            stats = receiver.statistics()
            assert stats.window_reason in ("latency", "floor")
            assert 2 <= stats.window_messages <= 15, stats
            assert stats.window_changes >= 1
            assert stats.queue_depth_messages <= 1024
            assert stats.drain_seconds is not None and stats.drain_seconds < 0.3
            assert 90 <= stats.consume_rate <= 110
            sent = sender.statistics()
            assert sent.peer_consume_rate is not None and 90 <= sent.peer_consume_rate <= 110
            assert sent.blocked_on_peer_seconds > 5 and sent.blocked_on_peer_events > 10
            assert sent.blocked_on_app_seconds < sent.blocked_on_peer_seconds
            assert server.statistics().window_bytes >= 2 * KIB  # spec §8.9 rule 5
            await cancelled(task)

    run_virtual(main)


def test_autotune_false_keeps_the_settings_windows() -> None:
    """spec §8.6: without auto-tuning the window is the HELLO setting, throughout."""

    async def main() -> None:
        async with pair(server={"settings": START, "autotune": False}) as (client, server):
            sender = await client.open_stream()
            task = asyncio.get_running_loop().create_task(flood(sender, 3000))
            receiver = await server.accept_stream()
            for _ in range(500):
                await receiver.receive()
                await asyncio.sleep(0.01)
            stats = receiver.statistics()
            assert (stats.window_messages, stats.window_reason, stats.window_changes) == (
                1024,
                "static",
                0,
            )
            assert stats.queue_depth_messages > 400
            await cancelled(task)

    run_virtual(main)


def test_a_consumer_waiting_for_messages_counts_starvation() -> None:
    """spec §14: receive() that waits is a starvation event; its wait is starved_seconds."""

    async def main() -> None:
        async with pair() as (client, server):
            sender = await client.open_stream()
            await sender.send("first")
            receiver = await server.accept_stream()
            assert await receiver.receive() == "first"
            before = receiver.statistics()

            async def later() -> None:
                for i in range(3):
                    await asyncio.sleep(2)
                    await sender.send(i)

            task = asyncio.get_running_loop().create_task(later())
            for i in range(3):
                assert await receiver.receive() == i
            await task
            after = receiver.statistics()
            assert after.starvation_events - before.starvation_events == 3
            assert 5.9 <= after.starved_seconds - before.starved_seconds <= 6.1
            assert server.statistics().starvation_events >= 3

    run_virtual(main)


def test_pacing_follows_the_peers_feedback_instead_of_stop_and_go() -> None:
    """spec §8.10: a pacing sender spaces its sends at about 1.05 x the consumer's rate,
    so it spends far less time blocked on credit than one that is not pacing."""
    blocked = {}
    small = Settings(stream_bytes=8 * KIB, stream_messages=32, max_message_bytes=KIB)

    async def main(pacing: bool) -> None:
        async with pair(server={"settings": small}, client={"pacing": pacing}) as (
            client,
            server,
        ):
            sender = await client.open_stream()
            task = asyncio.get_running_loop().create_task(flood(sender, 100_000))
            receiver = await server.accept_stream()
            for _ in range(1000):  # 20 virtual seconds at 50 msg/s
                await receiver.receive()
                await asyncio.sleep(0.02)
            stats = sender.statistics()
            blocked[pacing] = stats.blocked_on_peer_seconds
            assert 45 <= receiver.statistics().consume_rate <= 55
            if pacing:
                assert stats.peer_consume_rate is not None
                assert stats.messages_sent <= 1000 + 1.05 * 50 * 20 * 0.2  # not ahead
            await cancelled(task)

    for pacing in (False, True):
        run_virtual(lambda: main(pacing))  # noqa: B023 - run before the next iteration
    assert blocked[True] < blocked[False] / 2, blocked


def test_connections_sharing_a_memory_budget_stay_within_it() -> None:
    """spec §8.9 B1-B5: four connections, slow and fast consumers, one 64 KiB budget:
    committed credit never passes it, and each connection sees its share."""
    budget = MemoryBudget(64 * KIB)
    peak = 0
    results: list[int] = []

    async def one(rate: float) -> None:
        nonlocal peak
        async with pair(server={"settings": START, "memory_budget": budget}) as (client, server):
            sender = await client.open_stream()
            task = asyncio.get_running_loop().create_task(flood(sender, 100_000, 200))
            receiver = await server.accept_stream()
            loop = asyncio.get_running_loop()
            end = loop.time() + 5
            while loop.time() < end:
                await receiver.receive()
                peak = max(peak, budget.committed)
                assert budget.committed <= budget.capacity
                await asyncio.sleep(1 / rate)
            stats = server.statistics()
            assert stats.budget_bytes == 64 * KIB
            assert stats.budget_share_bytes is not None and stats.budget_share_bytes > 0
            results.append(receiver.statistics().messages_received)
            await cancelled(task)

    async def main() -> None:
        await asyncio.gather(*(one(rate) for rate in (50.0, 100.0, 500.0, 2000.0)))

    run_virtual(main)
    assert len(results) == 4
    assert budget.peak <= budget.capacity and peak <= budget.capacity
    assert budget.members == 0 and budget.committed == 0  # every connection left it


# --- faults, under the virtual clock -------------------------------------------------------


def test_a_peer_that_stops_reading_is_lost_at_the_write_timeout() -> None:
    """A7 (spec §10.7.2, §11): the peer grants 2^40 bytes of credit and stops reading its
    socket; the sender's output stays within the transport's buffer, and the connection is
    lost with TIMEOUT once a WRITE_CHUNK has had write_timeout + its size / MIN_FRAME_RATE
    without progress (the default 10 s: virtual seconds here)."""
    from flowproto import MIN_FRAME_RATE, ErrorCode
    from flowproto.asyncio import (
        DEFAULT_WRITE_TIMEOUT,
        MAX_SEND_BACKLOG,
        WRITE_CHUNK,
        ConnectionLostError,
    )

    huge = Settings(stream_bytes=1 << 40, stream_messages=(1 << 31) - 1, connection_bytes=1 << 40)
    allowance = DEFAULT_WRITE_TIMEOUT + WRITE_CHUNK / MIN_FRAME_RATE

    async def main() -> None:
        async with pair(server={"settings": huge, "autotune": False}) as (client, server):
            assert server.transport is not None
            server.transport.pause_reading()  # the peer's application hangs; so does reading
            stream = await client.open_stream(codec="raw")
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(ConnectionLostError) as info:
                while True:
                    await stream.send(bytes(64 * KIB))
            assert info.value.error_code == ErrorCode.TIMEOUT
            assert DEFAULT_WRITE_TIMEOUT < loop.time() - start <= 2 * allowance
            assert stream.statistics().bytes_sent <= 2 * MAX_SEND_BACKLOG + (8 << 20)

    run_virtual(main)


def test_keepalive_gives_up_on_a_blackholed_peer_at_its_default_timers() -> None:
    """spec §11: 30 s without a frame, then a PING unanswered for 15 s: TIMEOUT."""
    from flowproto import Connection, ErrorCode, Role
    from flowproto.asyncio import ConnectionLostError

    async def main() -> None:
        a, b = socket.socketpair()
        with b:
            b.sendall(Connection(Role.ACCEPTOR).data_to_send())  # preface and HELLO, then nothing
            async with open_flow_connection(a, close_grace=0) as conn:
                loop = asyncio.get_running_loop()
                start = loop.time()
                with pytest.raises(ConnectionLostError) as info:
                    await conn.accept_stream()
                assert info.value.error_code == ErrorCode.TIMEOUT
                assert 45 <= loop.time() - start <= 46

    run_virtual(main)
