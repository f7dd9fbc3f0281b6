"""The asyncio layer's own contract: cancellation as asyncio delivers it, and the server.

The cancellation tests drive a :class:`FlowConnection` with a memory transport and a bare
sans-IO ``Connection`` as its peer, so that the moment of a cancellation is chosen
exactly: a task woken by a message and cancelled before it ran again must leave the
message in the inbox. Timeouts use ``asyncio.timeout`` and ``asyncio.TaskGroup`` (Python
3.11+; on 3.10 those tests are skipped, the rest use ``asyncio.wait_for``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from flowproto import (
    AutoTune,
    Connection,
    ErrorCode,
    MessagesReceived,
    PingReceived,
    Role,
    Settings,
    StreamOpened,
    StreamResetError,
)
from flowproto.asyncio import (
    ConnectionLostError,
    EndOfStream,
    FlowConnection,
    FlowServer,
    FlowStream,
    open_connection,
    open_flow_connection,
    serve,
)

needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.timeout and TaskGroup are Python 3.11+"
)


def run(main: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


class MemoryTransport(asyncio.Transport):
    """Keeps what the connection writes until the test takes it (no socket, no loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0  # calls of write()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.lost)

    def abort(self) -> None:
        self.close()

    lost: Callable[[], None] = staticmethod(lambda: None)  # type: ignore[assignment]


class BarePeer:
    """A FlowConnection (initiator) wired to a sans-IO Connection (acceptor) by hand."""

    def __init__(self, settings: Settings | None = None, autotune: AutoTune | None = None) -> None:
        self.core = Connection(Role.ACCEPTOR, settings)
        self.conn = FlowConnection(Role.INITIATOR, autotune=autotune)
        self.transport = MemoryTransport()
        self.transport.lost = lambda: self.conn.connection_lost(None)  # type: ignore[method-assign]
        self.conn.connection_made(self.transport)
        self.now = 0.0

    def to_peer(self) -> list[Any]:
        """What the connection wrote, fed to the peer; its events (none if it wrote none:
        ``b""`` would tell the peer the transport ended)."""
        data = self.transport.take()
        return self.core.receive_data(data, self.now) if data else []

    def to_conn(self) -> None:
        """What the peer queued, fed to the connection (as the event loop would)."""
        data = self.core.data_to_send()
        if data:
            self.conn.data_received(data)


@asynccontextmanager
async def bare_pair(
    settings: Settings | None = None, autotune: AutoTune | None = None
) -> AsyncIterator[tuple[BarePeer, Any]]:
    """A connected BarePeer and one stream the connection opened (the peer saw it)."""
    pair = BarePeer(settings, autotune)
    pair.to_peer()
    pair.to_conn()
    await pair.conn.start(handshake_timeout=1)
    stream = await pair.conn.open_stream(codec="raw")
    await stream.send(b"hello")
    await asyncio.sleep(0)  # the flush at the end of the turn
    events = pair.to_peer()
    assert any(isinstance(e, StreamOpened) for e in events)
    try:
        yield pair, stream
    finally:
        pair.conn.abort()
        await asyncio.sleep(0)


def test_a_lone_send_is_written_at_once_and_a_burst_in_one_turn_in_one_more_write() -> None:
    async def main() -> None:
        async with bare_pair() as (pair, stream):
            before = pair.transport.writes
            await stream.send(b"lone")
            assert pair.transport.writes == before + 1  # before the loop ran again
            for i in range(10):
                await stream.send(b"burst %d" % i)
            assert pair.transport.writes == before + 1  # the rest of the turn waits...
            await asyncio.sleep(0)
            assert pair.transport.writes == before + 2  # ...for its end: one write
            await stream.send(b"next turn")
            assert pair.transport.writes == before + 3  # the loop ran: at once again
            messages = [
                m for e in pair.to_peer() if isinstance(e, MessagesReceived) for m in e.messages
            ]
            assert messages == [b"lone", *(b"burst %d" % i for i in range(10)), b"next turn"]

    run(main)


def test_a_receive_that_waits_after_a_release_arms_the_round_trip_probe() -> None:
    # spec §8.9: consuming starts the tuner's round-trip probes; a release that queued no
    # CREDIT changed the core's deadline, so the receive() that waits next flushes (which
    # re-arms the timer) even though nothing is left to write.
    async def main() -> None:
        async with bare_pair(autotune=AutoTune()) as (pair, stream):
            pair.core.send_message(stream.stream_id, b"reply")
            pair.to_conn()
            assert await stream.receive() == b"reply"  # a small release: no CREDIT
            assert not pair.transport.written
            waiting = asyncio.get_running_loop().create_task(stream.receive())
            for _ in range(5):
                await asyncio.sleep(0)  # the timer, due at once, fires
            assert any(isinstance(e, PingReceived) for e in pair.to_peer())
            waiting.cancel()

    run(main)


def test_a_receive_woken_by_a_message_and_cancelled_before_it_ran_consumed_nothing() -> None:
    async def main() -> None:
        async with bare_pair() as (pair, stream):
            task = asyncio.get_running_loop().create_task(stream.receive())
            await asyncio.sleep(0)  # the task waits for a message
            pair.core.send_message(stream.stream_id, b"first")
            pair.to_conn()  # the message is delivered: the task is woken...
            task.cancel()  # ...and cancelled before it ran again
            with pytest.raises(asyncio.CancelledError):
                await task
            assert stream.statistics().buffered_messages == 1
            assert stream.messages_received == 0
            assert await stream.receive() == b"first"  # nothing was lost

    run(main)


def test_a_send_cancelled_while_waiting_for_credit_queued_nothing() -> None:
    window = Settings(stream_messages=2, stream_bytes=1 << 20)

    async def main() -> None:
        async with bare_pair(window) as (pair, stream):
            await stream.send(b"second")  # the window of 2 is full
            task = asyncio.get_running_loop().create_task(stream.send(b"third"))
            await asyncio.sleep(0)
            assert not task.done()  # spec §8.3: waiting for credit
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert stream.messages_sent == 2
            await asyncio.sleep(0)
            events = pair.to_peer()
            got = [m for e in events if isinstance(e, MessagesReceived) for m in e.messages]
            assert got == [b"second"]  # and not b"third", not a part of it

    run(main)


@needs_311
def test_asyncio_timeout_around_receive_loses_no_message() -> None:
    async def main() -> None:
        async with bare_pair() as (pair, stream):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await stream.receive()
            pair.core.send_message(stream.stream_id, b"late")
            pair.to_conn()
            async with asyncio.timeout(1):
                assert await stream.receive() == b"late"

    run(main)


@needs_311
def test_a_task_group_failure_cancels_a_blocked_send_and_receive_cleanly() -> None:
    window = Settings(stream_messages=2, stream_bytes=1 << 20)

    async def main() -> None:
        async with bare_pair(window) as (pair, stream):
            await stream.send(b"second")  # the window is full

            async def fail() -> None:
                await asyncio.sleep(0)
                raise RuntimeError("a sibling failed")

            with pytest.raises(ExceptionGroup) as info:  # noqa: F821 - 3.11 builtin
                async with asyncio.TaskGroup() as group:
                    group.create_task(stream.send(b"blocked"))
                    group.create_task(stream.receive())
                    group.create_task(fail())
            assert info.group_contains(RuntimeError)  # type: ignore[attr-defined]
            assert stream.messages_sent == 2
            assert stream.messages_received == 0
            # Both directions still work: credit lets the send through, a message arrives.
            pair.to_peer()
            pair.core.send_message(stream.stream_id, b"reply")
            pair.to_conn()
            assert await stream.receive() == b"reply"

    run(main)


# --- over sockets --------------------------------------------------------------------------


async def echo(stream: FlowStream) -> None:
    async for message in stream:
        await stream.send(message)


def test_serve_forever_ends_when_cancelled_and_closes_the_connections() -> None:
    async def main() -> None:
        server = await serve(echo, 0, host="127.0.0.1", close_grace=0.2)
        port = server.sockets[0].getsockname()[1]
        forever = asyncio.get_running_loop().create_task(server.serve_forever())
        async with open_connection("127.0.0.1", port) as conn:
            stream = await conn.open_stream()
            await stream.send("ping")
            assert await stream.receive() == "ping"
            forever.cancel()
            with pytest.raises(asyncio.CancelledError):
                await forever
            assert not server.is_serving()
            # spec §10.4: the server said GOAWAY; the open stream was reset after the grace
            with pytest.raises((StreamResetError, ConnectionLostError)):
                await stream.receive()
            with pytest.raises(ConnectionLostError):
                await conn.open_stream()

    run(main)


def test_a_server_over_max_connections_refuses_with_a_retryable_goaway() -> None:
    async def main() -> None:
        async with await serve(echo, 0, host="127.0.0.1", max_connections=1) as server:
            port = server.sockets[0].getsockname()[1]
            async with open_connection("127.0.0.1", port):
                with pytest.raises(ConnectionLostError) as info:
                    async with open_connection("127.0.0.1", port):
                        pass
                assert info.value.error_code == ErrorCode.OVERLOADED
                assert info.value.retryable
                assert info.value.retry_after == 1.0
            assert server.refused == 1

    run(main)


def test_on_connection_end_sees_every_served_connection_and_why_it_ended() -> None:
    """A served connection, whether a stream was opened on it or its handshake was
    refused, is reported once, after its handlers are done: a normal end with no error,
    a memory-budget refusal (spec §8.9, GOAWAY OVERLOADED) with it."""
    from flowproto import MemoryBudget

    async def main() -> None:
        ended: list[tuple[FlowConnection, BaseException | None]] = []
        handled = asyncio.Event()

        async def handler(stream: FlowStream) -> None:
            async for _ in stream:
                pass
            handled.set()

        async with await serve(
            handler, 0, host="127.0.0.1", on_connection_end=lambda c, e: ended.append((c, e))
        ) as server:
            port = server.sockets[0].getsockname()[1]
            async with open_connection("127.0.0.1", port) as conn:
                stream = await conn.open_stream()
                await stream.send("one")
                await stream.aclose()
                await handled.wait()
            await until(lambda: len(ended) == 1)
            assert ended[0][1] is None and ended[0][0].closed
        tiny = MemoryBudget(1024)  # below any connection's floor: refused at once
        async with await serve(
            handler,
            0,
            host="127.0.0.1",
            memory_budget=tiny,
            on_connection_end=lambda c, e: ended.append((c, e)),
        ) as server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(ConnectionLostError):
                async with open_connection("127.0.0.1", port):
                    pass
            await until(lambda: len(ended) == 2)
        error = ended[1][1]
        assert isinstance(error, ConnectionLostError)
        assert error.error_code == ErrorCode.OVERLOADED

    run(main)


def test_a_failing_handler_resets_its_stream_and_the_server_goes_on() -> None:
    async def handler(stream: FlowStream) -> None:
        if await stream.receive() == "boom":
            raise ValueError("bad input")
        await stream.send("fine")

    async def main() -> None:
        async with await serve(handler, 0, host="127.0.0.1", close_grace=0.2) as server:
            port = server.sockets[0].getsockname()[1]
            async with open_connection("127.0.0.1", port) as conn:
                bad = await conn.open_stream()
                await bad.send("boom")
                with pytest.raises(StreamResetError) as info:
                    await bad.receive()
                assert info.value.error_code == ErrorCode.INTERNAL_ERROR
                good = await conn.open_stream()
                await good.send("ok")
                assert await good.receive() == "fine"
                with pytest.raises(EndOfStream):
                    await good.receive()

    run(main)


def test_a_peer_reset_cancels_the_streams_handler() -> None:
    async def main() -> None:
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def handler(stream: FlowStream) -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # works forever, unless cancelled
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with await serve(handler, 0, host="127.0.0.1", close_grace=0.2) as server:
            port = server.sockets[0].getsockname()[1]
            async with open_connection("127.0.0.1", port) as conn:
                stream = await conn.open_stream()
                await stream.send("start")
                await started.wait()
                await stream.reset()
                await cancelled.wait()  # spec §10.3: its work is wasted

    run(main)


def test_open_flow_connection_runs_over_a_socketpair() -> None:
    async def main() -> None:
        import socket

        a, b = socket.socketpair()

        async def side_b() -> None:
            async with open_flow_connection(b, initiator=False) as conn:
                stream = await conn.accept_stream()
                async for message in stream:
                    await stream.send(message * 2)
                await stream.aclose()

        task = asyncio.get_running_loop().create_task(side_b())
        async with open_flow_connection(a, close_grace=0.2) as conn:
            stream = await conn.open_stream()
            await stream.send(21)
            assert await stream.receive() == 42
            await stream.aclose()
            with pytest.raises(EndOfStream):
                await stream.receive()
        await task

    run(main)


def test_flow_server_is_an_async_context_manager_with_its_sockets() -> None:
    async def main() -> None:
        server = await serve(echo, 0, host="127.0.0.1")
        assert isinstance(server, FlowServer)
        async with server:
            assert server.is_serving()
            assert server.sockets[0].getsockname()[0] == "127.0.0.1"
        assert not server.is_serving()
        await server.wait_closed()

    run(main)


async def until(done: Callable[[], bool]) -> None:
    """Yield to the loop until ``done()`` (bounded by the test's timeout)."""
    while not done():
        await asyncio.sleep(0)


def test_a_server_connection_waits_for_room_in_the_memory_budget() -> None:
    """spec §8.9 B2: the second connection's HELLO waits while the first holds the room,
    and goes out once the first's consumer takes its messages; nothing is refused."""
    from flowproto import MemoryBudget, tuned_floor

    m = 16 * 1024
    floor = tuned_floor(m)
    greedy = Settings(max_message_bytes=m, connection_bytes=4 * floor, stream_bytes=4 * floor)
    budget = MemoryBudget(4 * floor)

    async def main() -> None:
        consume_more = asyncio.Event()
        admitted = asyncio.Event()
        release = asyncio.Event()

        async def handler(stream: FlowStream) -> None:
            await stream.receive()
            await consume_more.wait()
            async for _ in stream:
                pass

        async def second(port: int) -> None:
            async with open_connection("127.0.0.1", port, codec="raw", handshake_timeout=30):
                admitted.set()
                await release.wait()

        options = {"settings": greedy, "memory_budget": budget, "autotune": False}
        async with await serve(
            handler, 0, host="127.0.0.1", codec="raw", close_grace=0.2, **options
        ) as server:
            port = server.sockets[0].getsockname()[1]
            async with open_connection("127.0.0.1", port, codec="raw", close_grace=0.2) as first:
                sender = await first.open_stream()
                await sender.send(b"x" * m)
                await until(lambda: budget.free < floor)  # consumed: the window took the room
                await sender.send_many([b"x" * m] * 4)  # within the credit
                task = asyncio.get_running_loop().create_task(second(port))
                await until(lambda: budget.waiting == floor)
                assert not admitted.is_set()
                consume_more.set()
                await admitted.wait()
                assert budget.refused == 0 and budget.waits == 1 and budget.waiting == 0
                assert budget.members == 2 and budget.peak <= budget.capacity
                release.set()
                await task
                await sender.aclose()

    run(main)
