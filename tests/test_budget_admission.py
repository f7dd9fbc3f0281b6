"""A memory budget shares instead of refusing (issue 12, spec §8.9 B2-B4).

A newcomer is refused only when the floors of all connections cannot fit; when they fit
but the room is lent out to members above their floors, the Trio layer holds the newcomer
(before its preface and HELLO) until members consume, and their raises leave that room to
it. Core verdicts in memory; the Trio layer on memory streams under a virtual clock and
on real loopback sockets.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from trio_helpers import flow_pair

from flowproto import (
    Admission,
    Connection,
    ErrorCode,
    MemoryBudget,
    ReceiveWindow,
    Role,
    Settings,
    tuned_floor,
)
from flowproto.trio import (
    ConnectionLostError,
    FlowConnection,
    FlowStream,
    open_connection,
    open_flow_connection,
    serve,
)

KIB = 1024
LIMIT = 60.0


def window(nbytes: int) -> ReceiveWindow:
    return ReceiveWindow(nbytes, 1, 0)


# --- the core: verdicts and the room kept for waiters -----------------------------------


def test_a_newcomer_waits_when_the_floors_fit_but_the_room_is_lent_out() -> None:
    """spec §8.9 B2: ADMIT if the floor fits in the free room, WAIT if only the floors fit,
    REFUSE if even the floors cannot."""
    budget = MemoryBudget(100)
    big = window(90)
    budget.join(big, 10, 90)  # a member far above its floor
    assert budget.floors == 10 and budget.free == 10
    assert budget.admission(10) is Admission.ADMIT
    assert budget.admission(11) is Admission.WAIT  # 10 + 11 <= 100, but only 10 free
    assert budget.admission(90) is Admission.WAIT  # exactly: 10 + 90 = 100
    assert budget.admission(91) is Admission.REFUSE  # 10 + 91 > 100
    assert budget.initial_window(1 << 20, 11) is None  # the core itself never waits
    assert budget.refused == 1


def test_waiting_floors_are_kept_out_of_raises_and_shares() -> None:
    """spec §8.9 B3/B4: while a newcomer waits, raises leave its floor free and the shares
    are water-filled over what is left."""
    budget = MemoryBudget(100)
    member = window(60)
    budget.join(member, 10, 1000)
    assert budget.share(member) == 100 and budget.clip(40, 0) == 40
    budget.wait(50)
    assert budget.waits == 1
    assert budget.share(member) == 50  # capacity - waiting
    assert budget.clip(40, 0) == 0  # free 40, all of it kept for the waiter
    assert budget.clip(40, 5) == 5  # minimum progress is granted regardless (B5)
    assert budget.admission(50, waiting=True) is Admission.WAIT  # 40 free
    budget.committed -= 10  # the member consumed 10 bytes
    assert budget.admission(50, waiting=True) is Admission.ADMIT
    assert budget.admission(40) is Admission.WAIT  # a second newcomer is behind the first
    assert budget.admission(41) is Admission.REFUSE  # 10 + 50 + 41 floors > 100
    budget.stop_waiting(50)
    assert budget.waiting == 0 and budget.share(member) == 100
    assert budget.initial_window(1 << 20, 50) == 50  # admitted: room 50, at least the floor


def test_leaving_gives_back_the_floor() -> None:
    """spec §8.9 B2: the floors counted are those of the members now."""
    budget = MemoryBudget(100)
    a, b = window(40), window(40)
    budget.join(a, 40, 40)
    budget.join(b, 40, 40)
    assert budget.admission(30) is Admission.REFUSE
    budget.leave(a)
    assert budget.floors == 40 and budget.admission(30) is Admission.ADMIT


def test_the_core_refuses_a_newcomer_it_would_have_to_hold() -> None:
    """spec §8.9 B2: the sans-IO core cannot wait, so WAIT is a refusal there
    (GOAWAY OVERLOADED, retryable); waiting is the I/O layer's."""
    m = 16 * KIB
    floor = tuned_floor(m)
    budget = MemoryBudget(4 * floor)
    budget.join(window(4 * floor), floor, 4 * floor)  # a member granted the whole budget
    assert budget.admission(floor) is Admission.WAIT
    newcomer = Connection(Role.ACCEPTOR, Settings(max_message_bytes=m), budget=budget)
    assert newcomer.budget is None and budget.refused == 1 and budget.members == 1


# --- the Trio layer: waiting, admission, timing out ----------------------------------------

M = 16 * KIB
FLOOR = tuned_floor(M)  # 32 KiB
#: The first connection may grow to the whole budget (static windows: its share, B3).
GREEDY = Settings(max_message_bytes=M, connection_bytes=4 * FLOOR, stream_bytes=4 * FLOOR)


async def _fill_the_budget(
    server: FlowConnection, client: FlowConnection, budget: MemoryBudget
) -> tuple[FlowStream, FlowStream]:
    """One message consumed: the first connection's window grows to its share, the whole
    budget, so a newcomer's floor fits only once it consumes again."""
    sender = await client.open_stream()
    await sender.send(b"x" * M)
    receiver = await server.accept_stream()
    await receiver.receive()
    await trio.testing.wait_all_tasks_blocked()
    assert budget.free < FLOOR and budget.floors == FLOOR
    return sender, receiver


async def _peer(
    transport: trio.abc.Stream, outcome: list[BaseException | None], done: trio.Event
) -> None:
    """The newcomer's client: records whether its handshake completed or was refused."""
    try:
        async with open_flow_connection(transport, codec="raw", handshake_timeout=600.0):
            outcome.append(None)
            done.set()
            await trio.sleep_forever()
    except ConnectionLostError as exc:
        outcome.append(exc)
        done.set()


async def test_a_waiting_connection_is_admitted_once_a_member_consumes() -> None:
    """spec §8.9 B2: the second connection's HELLO waits while the first holds the room,
    and goes out once the first's consumer takes its messages; nothing is refused."""
    budget = MemoryBudget(4 * FLOOR)
    admitted, done = trio.Event(), trio.Event()
    outcome: list[BaseException | None] = []
    b_server, b_client = trio.testing.memory_stream_pair()

    async def second() -> None:
        async with open_flow_connection(
            b_server, initiator=False, settings=GREEDY, memory_budget=budget, autotune=False
        ):
            admitted.set()
            await trio.sleep_forever()

    first = {"settings": GREEDY, "memory_budget": budget, "autotune": False, "codec": "raw"}
    with trio.fail_after(LIMIT):
        async with (
            trio.open_nursery() as nursery,
            flow_pair(client={"codec": "raw"}, server=first) as (client, server),
        ):
            sender, receiver = await _fill_the_budget(server, client, budget)
            await sender.send_many([b"x" * M] * 4)  # 64 KiB more, within the credit
            nursery.start_soon(second)
            nursery.start_soon(_peer, b_client, outcome, done)
            await trio.testing.wait_all_tasks_blocked()
            assert budget.waiting == FLOOR and not admitted.is_set() and outcome == []
            for _ in range(4):
                await receiver.receive()
            await admitted.wait()
            await done.wait()
            assert budget.refused == 0 and budget.waits == 1 and budget.waiting == 0
            assert budget.members == 2 and budget.peak <= budget.capacity
            nursery.cancel_scope.cancel()
    assert outcome == [None]


async def test_a_waiter_is_refused_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.9 B2, §10.1: a member that never consumes keeps the room; the newcomer waits
    its handshake timeout, then is refused with a retryable OVERLOADED."""
    budget = MemoryBudget(4 * FLOOR)
    outcome: list[BaseException | None] = []
    done = trio.Event()
    b_server, b_client = trio.testing.memory_stream_pair()
    first = {"settings": GREEDY, "memory_budget": budget, "autotune": False, "codec": "raw"}
    async with (
        trio.open_nursery() as nursery,
        flow_pair(client={"codec": "raw"}, server=first) as (client, server),
    ):
        await _fill_the_budget(server, client, budget)
        nursery.start_soon(_peer, b_client, outcome, done)
        start = trio.current_time()
        with pytest.raises(ConnectionLostError) as info:
            async with open_flow_connection(
                b_server,
                initiator=False,
                settings=GREEDY,
                memory_budget=budget,
                handshake_timeout=7.0,
            ):
                pass
        assert 7.0 <= trio.current_time() - start < 7.5
        assert info.value.error_code == ErrorCode.OVERLOADED
        assert budget.waits == 1 and budget.refused == 1 and budget.waiting == 0
        await done.wait()  # the peer read the GOAWAY
        nursery.cancel_scope.cancel()
    lost = outcome[0]
    assert isinstance(lost, ConnectionLostError) and lost.retryable


async def test_fifty_senders_under_4_mib_all_complete() -> None:
    """issue 12: 50 concurrent senders against a receiver whose memory budget (4 MiB) holds
    their 50 floors (64 KiB each) but not their initial windows: none is refused, every
    message is delivered, and the budget was never exceeded."""
    budget = MemoryBudget(4 << 20)
    received: list[int] = []

    async def handler(stream: FlowStream) -> None:
        count = 0
        async for _ in stream:
            count += 1
        received.append(count)

    async def sender(port: int) -> None:
        async with open_connection("127.0.0.1", port, codec="raw", handshake_timeout=LIMIT) as c:
            stream = await c.open_stream()
            for _ in range(20):
                await stream.send_many([b"m" * 1000] * 10)
            await stream.aclose()
            async for _ in stream:
                pass
            assert stream.statistics().delivered == 200

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            listeners: list[Any] = await nursery.start(
                partial(
                    serve,
                    handler,
                    0,
                    host="127.0.0.1",
                    memory_budget=budget,
                    settings=Settings(max_message_bytes=32 * KIB),
                    codec="raw",
                    handshake_timeout=LIMIT,
                )
            )
            port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as senders:
                for _ in range(50):
                    senders.start_soon(sender, port)
            nursery.cancel_scope.cancel()
    assert received == [200] * 50
    assert budget.refused == 0
    assert budget.peak <= budget.capacity
