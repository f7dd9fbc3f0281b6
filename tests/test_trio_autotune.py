"""The Trio layer's auto-tuning, statistics and pacing (spec §8.9, §8.10, §14).

Memory streams and trio's ``autojump_clock``: virtual time, so consumers "take" 10 ms a
message without the test waiting, and nothing here measures real time.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from trio_helpers import flow_pair

from flowproto import MemoryBudget, Settings

HANG = 600.0
KIB = 1024
START = Settings(
    stream_bytes=256 * KIB, stream_messages=1024, connection_bytes=256 * KIB, max_message_bytes=KIB
)


def pair(server: dict[str, Any] | None = None, client: dict[str, Any] | None = None) -> Any:
    """Two FlowConnections over a memory stream: (initiator, acceptor)."""
    return flow_pair(server=server, client=client)


async def flood(stream: Any, count: int, size: int = 100) -> None:
    payload = b"x" * size
    for _ in range(count):
        await stream.send(payload)


async def test_autotune_is_on_by_default_and_sizes_a_slow_consumers_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.9 rule 3: 100 msg/s and a 100 ms target: a window of about 10 messages,
    from a start of 1024; the queue, its drain time and the reason say so (spec §14)."""
    with trio.fail_after(HANG):
        async with pair(server={"settings": START, "codec": "raw"}) as (client, server):
            sender = await client.open_stream(codec="raw")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, sender, 3000)
                receiver = await server.accept_stream()
                for _ in range(1500):  # 15 virtual seconds at 100 msg/s
                    await receiver.receive()
                    await trio.sleep(0.01)
                stats = receiver.statistics()
                assert stats.window_reason in ("latency", "floor")
                assert 2 <= stats.window_messages <= 15, stats
                assert stats.window_changes >= 1
                assert stats.queue_depth_messages <= 1024  # it started with a big window...
                assert stats.drain_seconds is not None and stats.drain_seconds < 0.3  # ...not now
                assert 90 <= stats.consume_rate <= 110
                sent = sender.statistics()
                assert sent.peer_consume_rate is not None and 90 <= sent.peer_consume_rate <= 110
                assert sent.blocked_on_peer_seconds > 5 and sent.blocked_on_peer_events > 10
                assert sent.blocked_on_app_seconds < sent.blocked_on_peer_seconds
                cs = server.statistics()
                assert cs.window_bytes >= 2 * KIB  # the connection floor (spec §8.9 rule 5)
                assert cs.budget_bytes is None
                nursery.cancel_scope.cancel()


async def test_autotune_false_keeps_the_settings_windows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.6: without auto-tuning the window is the HELLO setting, throughout."""
    with trio.fail_after(HANG):
        async with pair(server={"settings": START, "autotune": False}) as (client, server):
            sender = await client.open_stream()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, sender, 3000)
                receiver = await server.accept_stream()
                for _ in range(500):
                    await receiver.receive()
                    await trio.sleep(0.01)
                stats = receiver.statistics()
                assert (stats.window_messages, stats.window_reason, stats.window_changes) == (
                    1024,
                    "static",
                    0,
                )
                assert stats.queue_depth_messages > 400  # half the static window or more
                nursery.cancel_scope.cancel()


async def test_a_consumer_waiting_for_messages_counts_starvation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §14: receive() that waits is a starvation event; its wait is starved_seconds."""
    with trio.fail_after(HANG):
        async with pair() as (client, server):
            sender = await client.open_stream()
            await sender.send("first")
            receiver = await server.accept_stream()
            assert await receiver.receive() == "first"
            before = receiver.statistics()

            async def later() -> None:
                for i in range(3):
                    await trio.sleep(2)
                    await sender.send(i)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(later)
                for i in range(3):
                    assert await receiver.receive() == i
            after = receiver.statistics()
            assert after.starvation_events - before.starvation_events == 3
            assert 5.9 <= after.starved_seconds - before.starved_seconds <= 6.1
            assert server.statistics().starvation_events >= 3


async def test_pacing_follows_the_peers_feedback_instead_of_stop_and_go(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.10: a pacing sender spaces its sends at about 1.05 x the consumer's rate,
    so it spends far less time blocked on credit than one that is not pacing."""
    blocked = {}
    small = Settings(stream_bytes=8 * KIB, stream_messages=32, max_message_bytes=KIB)
    for pacing in (False, True):
        with trio.fail_after(HANG):
            async with pair(server={"settings": small}, client={"pacing": pacing}) as (
                client,
                server,
            ):
                sender = await client.open_stream()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood, sender, 100_000)
                    receiver = await server.accept_stream()
                    for _ in range(1000):  # 20 virtual seconds at 50 msg/s
                        await receiver.receive()
                        await trio.sleep(0.02)
                    stats = sender.statistics()
                    blocked[pacing] = stats.blocked_on_peer_seconds
                    assert 45 <= receiver.statistics().consume_rate <= 55
                    if pacing:
                        assert stats.peer_consume_rate is not None
                        assert stats.messages_sent <= 1000 + 1.05 * 50 * 20 * 0.2  # not ahead
                    nursery.cancel_scope.cancel()
    assert blocked[True] < blocked[False] / 2, blocked


async def test_connections_sharing_a_memory_budget_stay_within_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.9 B1-B5: four connections, slow and fast consumers, one 64 KiB budget:
    committed credit never passes it, and each connection sees its share."""
    budget = MemoryBudget(64 * KIB)
    peak = 0

    async def one(rate: float, results: list[int]) -> None:
        nonlocal peak
        async with pair(server={"settings": START, "memory_budget": budget}) as (client, server):
            sender = await client.open_stream()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, sender, 100_000, 200)
                receiver = await server.accept_stream()
                end = trio.current_time() + 5
                while trio.current_time() < end:
                    await receiver.receive()
                    peak = max(peak, budget.committed)
                    assert budget.committed <= budget.capacity
                    await trio.sleep(1 / rate)
                stats = server.statistics()
                assert stats.budget_bytes == 64 * KIB
                assert stats.budget_share_bytes is not None and stats.budget_share_bytes > 0
                results.append(receiver.statistics().messages_received)
                nursery.cancel_scope.cancel()

    results: list[int] = []
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for rate in (50.0, 100.0, 500.0, 2000.0):
                nursery.start_soon(one, rate, results)
    assert len(results) == 4
    assert budget.peak <= budget.capacity and peak <= budget.capacity
    assert budget.members == 0 and budget.committed == 0  # every connection left it
