"""The Trio layer over in-memory transports (spec §7-§11 as seen by an application).

Two kinds of peer: a second :class:`FlowConnection` over ``memory_stream_pair()`` (or
``lockstep_stream_pair()``, whose ``send_all`` waits for the reader), and a bare sans-IO
:class:`flowproto.Connection` that the test drives byte by byte (:class:`BarePeer`), so
a test can grant exactly the credit it wants, stop reading, go silent or break the
rules. Tests with timers run under ``autojump_clock``: "slow" and "later" are virtual
time, and a hang shows up as a ``trio.fail_after`` timeout instead of a stuck run.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from trio_helpers import flow_pair

from flowproto import (
    Connection,
    DataFrame,
    ErrorCode,
    Event,
    FrameDecoder,
    GoAwayFrame,
    GoAwayReceived,
    MessagesReceived,
    PeerBlocked,
    PingFrame,
    Role,
    Settings,
    StreamReset,
)
from flowproto.trio import (
    ConnectionLostError,
    FlowConnection,
    FlowStream,
    HandshakeTimeout,
    MessageDecodeError,
    StreamResetError,
    open_flow_connection,
)

#: Virtual seconds any one test may take before it counts as hung.
HANG: float = 600.0
#: Credit as large as the spec allows: the peer never makes us wait for it.
HUGE = Settings(
    stream_bytes=2**62 - 1,
    stream_messages=2**31 - 1,
    connection_bytes=2**62 - 1,
    keepalive_ms=0,
)

# Small windows, so that a few dozen messages exercise every limit (spec §3.2, §9 R3:
# each byte window still holds one largest message).
SMALL = Settings(
    stream_bytes=4096,
    stream_messages=8,
    connection_bytes=8192,
    max_message_bytes=1024,
)


# --- helpers -------------------------------------------------------------------------------


def tasks_living() -> int:
    return trio.lowlevel.current_statistics().tasks_living


class BarePeer:
    """A bare sans-IO ``Connection`` driven by the test over one end of a Trio stream.

    Nothing happens unless the test asks: ``flush()`` sends what the core queued,
    ``read_once()`` feeds one chunk from the transport to the core (then flushes its
    replies), and ``release()`` gives credit back for messages the test "consumed".
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        role: Role = Role.ACCEPTOR,
        settings: Settings | None = None,
    ) -> None:
        self.conn = Connection(role, settings)
        self.transport = transport
        self.events: list[Event] = []
        self.messages: dict[int, list[bytes]] = defaultdict(list)
        self.released: dict[int, int] = defaultdict(int)
        self.eof = False
        self._send_lock = trio.Lock()

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.conn.data_to_send()
            if data:
                await self.transport.send_all(data)

    async def send_raw(self, data: bytes) -> None:
        """Write bytes the core did not produce (to break the rules on purpose)."""
        async with self._send_lock:
            await self.transport.send_all(self.conn.data_to_send() + data)

    async def read_once(self) -> list[Event]:
        data = await self.transport.receive_some()
        if not data:
            self.eof = True
        events = self.conn.receive_data(data, 0.0)
        for event in events:
            if isinstance(event, MessagesReceived):
                self.messages[event.stream_id].extend(event.messages)
        self.events.extend(events)
        await self.flush()
        return events

    async def read_until(self, done: Callable[[], bool]) -> None:
        while not done():
            assert not self.eof, "the transport ended first"
            await self.read_once()

    async def read_forever(self) -> None:
        while not self.eof:
            await self.read_once()

    async def handshake(self) -> None:
        await self.flush()
        await self.read_until(lambda: self.conn.handshake_complete)

    def received(self, stream_id: int) -> int:
        return len(self.messages[stream_id])

    async def release(self, stream_id: int, count: int) -> None:
        """Consume the next ``count`` received messages of the stream (spec §8.5)."""
        start = self.released[stream_id]
        batch = self.messages[stream_id][start : start + count]
        assert len(batch) == count
        self.released[stream_id] += count
        self.conn.release(stream_id, sum(len(m) for m in batch), count, 0.0)
        await self.flush()

    def goaways(self) -> list[GoAwayReceived]:
        return [e for e in self.events if isinstance(e, GoAwayReceived)]


@asynccontextmanager
async def bare_peer(
    *,
    peer_settings: Settings | None = None,
    peer_role: Role = Role.ACCEPTOR,
    lockstep: bool = False,
    **kwargs: Any,
) -> AsyncIterator[tuple[FlowConnection, BarePeer]]:
    """A FlowConnection and a handshaken BarePeer on the other end of its transport."""
    a, b = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    peer = BarePeer(b, peer_role, peer_settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.handshake)  # lockstep: its send_all waits for our reader
        async with open_flow_connection(a, initiator=peer_role is Role.ACCEPTOR, **kwargs) as conn:
            await trio.testing.wait_all_tasks_blocked()
            assert peer.conn.handshake_complete
            yield conn, peer


# --- messages over a memory stream pair -----------------------------------------------------


async def test_objects_and_raw_bytes_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    objects = [None, 0, -1, 2**40, 1.5, "text", b"\x00bytes", [1, [2, 3]], {"k": {"n": [1]}}]
    with trio.fail_after(HANG):
        # The server's codec is raw: it echoes each message's bytes as they came.
        async with (
            flow_pair(server={"codec": "raw"}) as (client, server),
            trio.open_nursery() as nursery,
        ):

            async def echo() -> None:
                stream = await server.accept_stream()
                async for message in stream:
                    await stream.send(message)
                await stream.aclose()

            nursery.start_soon(echo)
            stream = await client.open_stream()
            for obj in objects:
                await stream.send(obj)
            assert [await stream.receive() for _ in objects] == objects

            raw = await client.open_stream(codec="raw")
            nursery.start_soon(echo)
            payloads = [b"", b"\x00", bytes(range(256)), b"x" * 70000]  # 70000 > max_frame
            for p in payloads:
                await raw.send(p)
            assert [await raw.receive() for _ in payloads] == payloads
            with pytest.raises(TypeError):
                await raw.send("not bytes")
            for s in (stream, raw):
                await s.aclose()
                with pytest.raises(trio.EndOfChannel):
                    await s.receive()


async def test_codec_is_per_connection_and_overridable_per_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Upper:
        """A custom codec: str <-> upper-cased UTF-8."""

        name = "upper"

        def encode(self, message: Any) -> bytes:
            return str(message).upper().encode()

        def decode(self, data: bytes) -> Any:
            return data.decode()

    with trio.fail_after(HANG):
        async with flow_pair(server={"codec": "raw"}) as (client, server):
            default = await client.open_stream()
            raw = await client.open_stream(codec="raw")
            custom = await client.open_stream(codec=Upper())
            await default.send({"k": [1, 2]})
            await raw.send(b"\xff\xfe")
            await custom.send("shout")
            # The server's connection codec is raw: it sees the bytes each codec made.
            received = {}
            for _ in range(3):
                s = await server.accept_stream()
                assert s.codec.name == "raw"
                received[s.stream_id] = await s.receive()
            assert received == {
                default.stream_id: msgpack.packb({"k": [1, 2]}, use_bin_type=True),
                raw.stream_id: b"\xff\xfe",
                custom.stream_id: b"SHOUT",
            }
            assert default.codec.name == "msgpack"


async def test_undecodable_message_is_consumed_and_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(HANG):
        async with flow_pair() as (client, server):
            raw = await client.open_stream(codec="raw")
            await raw.send(b"\xc1")  # 0xc1 is never valid msgpack
            await raw.send(msgpack.packb("fine"))
            stream = await server.accept_stream()  # msgpack, the default
            with pytest.raises(MessageDecodeError) as info:
                await stream.receive()
            assert info.value.data == b"\xc1"
            assert stream.statistics().messages_received == 1  # it was consumed
            assert await stream.receive() == "fine"


async def test_async_for_ends_at_end_of_stream(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(HANG):
        async with flow_pair() as (client, server):
            stream = await client.open_stream()
            for i in range(20):
                await stream.send(i)
            await stream.aclose()
            peer = await server.accept_stream()
            assert [m async for m in peer] == list(range(20))


@pytest.mark.parametrize("lockstep", [False, True], ids=["memory", "lockstep"])
async def test_send_many_and_receive_many_keep_order(
    lockstep: bool, autojump_clock: trio.testing.MockClock
) -> None:
    # Windows of 8 messages: send_many has to wait for credit several times.
    with trio.fail_after(HANG):
        async with flow_pair(server={"settings": SMALL}, lockstep=lockstep) as (client, server):
            stream = await client.open_stream()
            got: list[Any] = []

            async def consume() -> None:
                peer = await server.accept_stream()
                while True:
                    try:
                        batch = await peer.receive_many(5)
                    except trio.EndOfChannel:
                        return
                    assert 1 <= len(batch) <= 5
                    got.extend(batch)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await stream.send_many(range(100))
                await stream.send_many([])
                await stream.aclose()
            assert got == list(range(100))
            assert stream.statistics().messages_sent == 100


async def test_half_close_lets_the_peer_answer(autojump_clock: trio.testing.MockClock) -> None:
    """After our END_STREAM the peer sees EndOfChannel and can still send (spec §7.2)."""
    with trio.fail_after(HANG):
        async with flow_pair() as (client, server):
            stream = await client.open_stream()
            await stream.send_many(["a", "b"])
            await stream.aclose()
            await stream.aclose()  # twice does nothing
            with pytest.raises(trio.ClosedResourceError):
                await stream.send("late")

            peer = await server.accept_stream()
            assert [await peer.receive(), await peer.receive()] == ["a", "b"]
            with pytest.raises(trio.EndOfChannel):
                await peer.receive()
            with pytest.raises(trio.EndOfChannel):
                await peer.receive()  # and again
            assert peer.statistics().state == "half-closed (remote)"
            await peer.send_many(["answer", 1, 2])
            await peer.aclose()

            assert [m async for m in stream] == ["answer", 1, 2]
            assert stream.statistics().state == "closed"


async def test_server_accepts_streams_in_the_order_they_were_opened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(HANG):
        async with flow_pair() as (client, server):
            opened = [await client.open_stream() for _ in range(5)]
            for s in reversed(opened):  # first message sent on the last stream
                await s.send(s.stream_id)
            ids = [s.stream_id for s in opened]
            assert ids == [1, 3, 5, 7, 9]  # spec §6.1: the initiator's ids are odd
            accepted = [await server.accept_stream() for _ in opened]
            assert [s.stream_id for s in accepted] == ids
            for s in accepted:
                assert await s.receive() == s.stream_id
            # The acceptor opens even ids, and the initiator accepts them.
            back = await server.open_stream()
            assert back.stream_id == 2
            await back.send("from the server")
            accepted_back = await client.accept_stream()
            assert accepted_back.stream_id == 2
            assert await accepted_back.receive() == "from the server"


async def test_many_streams_concurrently_each_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    streams, messages = 30, 40
    with trio.fail_after(HANG):
        async with (
            flow_pair(client={"settings": SMALL}, server={"settings": SMALL}) as (client, server),
            trio.open_nursery() as nursery,
        ):

            async def echo_all() -> None:
                async with trio.open_nursery() as inner:
                    for _ in range(streams):
                        inner.start_soon(echo, await server.accept_stream())

            async def echo(stream: FlowStream) -> None:
                async for message in stream:
                    await stream.send(message)
                await stream.aclose()

            results: dict[int, list[Any]] = {}

            async def one(n: int) -> None:
                stream = await client.open_stream()
                sent = [[n, i, "x" * (i * 7 % 300)] for i in range(messages)]
                async with trio.open_nursery() as inner:

                    async def send() -> None:
                        for m in sent:
                            await stream.send(m)
                            if i := m[1] % 7:
                                await trio.sleep(i / 1000)
                        await stream.aclose()

                    inner.start_soon(send)
                    results[n] = [m async for m in stream]
                assert results[n] == sent

            nursery.start_soon(echo_all)
            async with trio.open_nursery() as clients:
                for n in range(streams):
                    clients.start_soon(one, n)
            assert sorted(results) == list(range(streams))
            assert client.statistics().messages_received == streams * messages
            assert server.statistics().messages_received == streams * messages


# --- credit, against a bare sans-IO peer ----------------------------------------------------


async def test_send_blocks_at_zero_credit_and_resumes_exactly_when_the_peer_releases(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.3 S1: never past the limit; §8.5: credit comes back only on release."""
    window = 2  # message threshold max(1, 2 // 2) = 1: every release is a CREDIT (spec §8.6)
    with trio.fail_after(HANG):
        async with (
            bare_peer(peer_settings=Settings(stream_messages=window)) as (conn, peer),
            trio.open_nursery() as nursery,
        ):
            stream = await conn.open_stream()
            sid = stream.stream_id
            nursery.start_soon(peer.read_forever)
            done = trio.Event()

            async def produce() -> None:
                for i in range(6):
                    await stream.send(i)
                done.set()

            nursery.start_soon(produce)
            await trio.testing.wait_all_tasks_blocked()
            assert peer.received(sid) == window
            stats = stream.statistics()
            assert stats.messages_sent == window
            assert stats.send_credit_messages == 0
            assert not done.is_set()
            # spec §8.7: the sender said where it is stuck.
            blocked = [e for e in peer.events if isinstance(e, PeerBlocked)]
            assert [(e.stream_id, e.messages_limit) for e in blocked] == [(sid, window)]
            for released in range(1, 5):
                blocked_before = stream.statistics().seconds_blocked
                await trio.sleep(3)  # the sender stays blocked however long we wait
                assert peer.received(sid) == window + released - 1
                assert stream.statistics().messages_sent == window + released - 1
                await peer.release(sid, 1)
                await trio.testing.wait_all_tasks_blocked()
                assert peer.received(sid) == window + released
                assert stream.statistics().messages_sent == window + released
                assert stream.statistics().seconds_blocked - blocked_before >= 3
            assert done.is_set()
            assert [msgpack.unpackb(m) for m in peer.messages[sid]] == list(range(6))
            assert stream.statistics().seconds_blocked >= 4 * 3
            nursery.cancel_scope.cancel()


async def test_peer_that_sends_past_credit_gets_flow_control_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.4: DATA past the advertised limit is a connection error FLOW_CONTROL_ERROR."""
    window = 3
    with trio.fail_after(HANG):
        async with bare_peer(
            peer_role=Role.INITIATOR, settings=Settings(stream_messages=window)
        ) as (conn, peer):
            sid = peer.conn.open_stream()
            for i in range(window):
                assert peer.conn.send_message(sid, msgpack.packb(i))
            await peer.flush()
            stream = await conn.accept_stream()
            await trio.testing.wait_all_tasks_blocked()
            assert stream.statistics().buffered_messages == window
            assert stream.statistics().receive_credit_messages == 0
            # One more message, which the core would refuse to send: raw bytes.
            assert not peer.conn.send_message(sid, b"\x01")
            await peer.send_raw(DataFrame(sid, msgpack.packb(window)).encode())
            await peer.read_until(lambda: peer.eof)

            [goaway] = peer.goaways()  # spec §10.2: GOAWAY with the code, then close
            assert goaway.error_code == ErrorCode.FLOW_CONTROL_ERROR
            assert goaway.last_stream_id == sid  # the highest peer stream it accepted
            # Messages that arrived before the error are still readable (as after EOF,
            # spec §10.6).
            assert [await stream.receive() for _ in range(window)] == list(range(window))
            with pytest.raises(ConnectionLostError) as info:
                await stream.receive()
            assert info.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
            with pytest.raises(ConnectionLostError) as info:
                await stream.send("x")
            assert info.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
            with pytest.raises(ConnectionLostError):
                await conn.open_stream()
            assert conn.statistics().state == "closed"


# --- a fast producer against a slow consumer ------------------------------------------------


async def test_slow_consumer_bounds_what_the_receiver_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The producer would send 1000 msg/s; the consumer takes 1 s per message.

    At every step the receiver holds no more than its window in messages and bytes,
    and what it holds plus the credit still open never exceeds the window: credit
    comes back only as messages are consumed (spec §8.4, §8.5).
    """
    count = 60
    rng = random.Random(1)
    payloads = [bytes([i]) * rng.randint(1, SMALL.max_message_bytes) for i in range(count)]
    # The static windows of spec §8.6: auto-tuning (spec §8.9) would shrink them.
    server_kwargs = {"settings": SMALL, "codec": "raw", "autotune": False}
    with trio.fail_after(HANG):
        async with flow_pair(server=server_kwargs) as (client, server):
            sender = await client.open_stream(codec="raw")
            await sender.send(payloads[0])
            receiver = await server.accept_stream()
            checks = 0
            fullest = 0  # most messages held at once

            def check() -> None:
                nonlocal checks, fullest
                checks += 1
                rs = receiver.statistics()
                fullest = max(fullest, rs.buffered_messages)
                assert rs.buffered_messages <= SMALL.stream_messages
                assert rs.buffered_bytes <= SMALL.stream_bytes
                assert rs.buffered_messages + rs.receive_credit_messages <= SMALL.stream_messages
                assert rs.buffered_bytes + rs.receive_credit_bytes <= SMALL.stream_bytes
                cs = server.statistics()
                assert cs.buffered_bytes <= cs.receive_window_bytes == SMALL.connection_bytes
                ss = sender.statistics()
                assert ss.send_credit_messages <= SMALL.stream_messages
                assert ss.bytes_sent - rs.bytes_received <= SMALL.stream_bytes

            async def produce() -> None:
                for p in payloads[1:]:
                    await sender.send(p)
                    check()
                    await trio.sleep(0.001)
                await sender.aclose()

            got = []
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                while True:
                    check()
                    try:
                        got.append(await receiver.receive())
                    except trio.EndOfChannel:
                        break
                    check()
                    await trio.sleep(1)
            assert got == payloads
            assert checks >= 3 * count
            assert fullest == SMALL.stream_messages  # the window did fill up
            # The core's exact peak agrees with the samples: the window and no more.
            rs = receiver.statistics()
            assert rs.peak_buffered_messages == SMALL.stream_messages
            assert rs.peak_buffered_bytes <= SMALL.stream_bytes
            # The consumer set the pace, and the producer spent most of it blocked.
            assert trio.current_time() - start >= count
            assert sender.statistics().seconds_blocked > count / 2
            assert client.statistics().seconds_blocked == sender.statistics().seconds_blocked


# --- cancellation -------------------------------------------------------------------------

DEADLINES = [0.0, 0.0, 0.0005, 0.001, 0.003, 0.01, 0.05, 0.2, 1.0, 5.0]


@pytest.mark.parametrize("seed", range(8))
async def test_cancelled_send_and_receive_lose_and_duplicate_nothing(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    """Sends and receives under random virtual deadlines, with a small window.

    A cancelled send() queued the message whole or not at all (``messages_sent``
    tells which), a cancelled send_many() queued a prefix, and a cancelled receive()
    consumed nothing: the receiver gets exactly what the sender believes it queued.
    """
    rng = random.Random(seed)
    settings = Settings(
        stream_bytes=2048, stream_messages=4, connection_bytes=4096, max_message_bytes=512
    )
    with trio.fail_after(HANG):
        async with flow_pair(server={"settings": settings}) as (client, server):
            sender = await client.open_stream()
            await sender.send("first")
            receiver = await server.accept_stream()
            queued: list[Any] = ["first"]
            got: list[Any] = []
            cancelled = {"send": 0, "receive": 0}

            async def produce() -> None:
                n = 0
                while n < 300:
                    before = sender.statistics().messages_sent
                    size = rng.choice([0, 10, 100, 500])
                    with trio.move_on_after(rng.choice(DEADLINES)) as scope:
                        if rng.random() < 0.3:
                            batch = [[n + k, "y" * size] for k in range(rng.randint(1, 6))]
                            await sender.send_many(batch)
                        else:
                            batch = [[n, "x" * size]]
                            await sender.send(batch[0])
                    done = sender.statistics().messages_sent - before
                    if scope.cancelled_caught:
                        cancelled["send"] += 1
                        assert 0 <= done <= len(batch)
                    else:
                        assert done == len(batch)
                    queued.extend(batch[:done])
                    n += len(batch)
                await sender.aclose()

            async def consume() -> None:
                while True:
                    before = receiver.statistics()
                    with trio.move_on_after(rng.choice(DEADLINES)) as scope:
                        try:
                            if rng.random() < 0.3:
                                got.extend(await receiver.receive_many(rng.randint(1, 3)))
                            else:
                                got.append(await receiver.receive())
                        except trio.EndOfChannel:
                            return
                    if scope.cancelled_caught:
                        cancelled["receive"] += 1
                        after = receiver.statistics()
                        assert after.messages_received == before.messages_received
                        assert after.buffered_messages >= before.buffered_messages
                    if rng.random() < 0.2:
                        await trio.sleep(rng.choice(DEADLINES))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(consume)
            assert got == queued
            assert cancelled["send"] > 10
            assert cancelled["receive"] > 10
            assert len(queued) > 50
            assert receiver.statistics().messages_received == len(queued)


@pytest.mark.parametrize("seed", range(4))
async def test_cancel_scopes_cancelled_from_the_other_task_lose_nothing(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    """The consumer cancels the blocked producer (and vice versa) at random message counts."""
    rng = random.Random(seed)
    with trio.fail_after(HANG):
        # A small static window (spec §8.6) keeps both sides blocking now and then.
        async with flow_pair(server={"settings": SMALL, "autotune": False}) as (client, server):
            sender = await client.open_stream()
            await sender.send(-1)
            receiver = await server.accept_stream()
            queued: list[int] = [-1]
            got: list[int] = []
            scopes: dict[str, trio.CancelScope] = {}
            cuts = {"send": 0, "receive": 0}

            async def produce() -> None:
                for i in range(400):
                    before = sender.messages_sent
                    with trio.CancelScope() as scope:
                        scopes["send"] = scope
                        await sender.send(i)
                    if scope.cancelled_caught:
                        cuts["send"] += 1
                    if sender.messages_sent > before:
                        queued.append(i)
                    if rng.random() < 0.05:
                        scopes["receive"].cancel()
                await sender.aclose()

            async def consume() -> None:
                while True:
                    before = receiver.messages_received
                    with trio.CancelScope() as scope:
                        scopes["receive"] = scope
                        try:
                            got.append(await receiver.receive())
                        except trio.EndOfChannel:
                            return
                    if scope.cancelled_caught:
                        cuts["receive"] += 1
                        assert receiver.messages_received == before
                    if rng.random() < 0.1:
                        scopes["send"].cancel()
                    if rng.random() < 0.3:
                        await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(produce)
            assert got == queued
            assert cuts["send"] > 0
            assert cuts["receive"] > 0


# --- the peer goes away -------------------------------------------------------------------


async def test_peer_killed_mid_transfer_fails_pending_send_and_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §10.6: EOF without GOAWAY loses the connection; what arrived is read first."""
    baseline = tasks_living()
    errors: dict[str, ConnectionLostError] = {}
    with trio.fail_after(HANG):
        async with bare_peer(peer_settings=Settings(stream_messages=2)) as (conn, peer):
            out = await conn.open_stream()
            await out.send("one")
            await out.send("two")
            # The peer opens a stream of its own and sends three messages on it.
            await peer.read_until(lambda: peer.received(out.stream_id) == 2)
            sid = peer.conn.open_stream()
            for m in ("a", "b", "c"):
                assert peer.conn.send_message(sid, msgpack.packb(m))
            await peer.flush()
            incoming = await conn.accept_stream()
            await trio.testing.wait_all_tasks_blocked()
            assert incoming.statistics().buffered_messages == 3

            async def blocked_send() -> None:
                with pytest.raises(ConnectionLostError) as info:
                    await out.send("three")  # no credit: waits
                errors["send"] = info.value

            async def blocked_receive(stream: FlowStream) -> None:
                with pytest.raises(ConnectionLostError) as info:
                    await stream.receive()
                errors["receive"] = info.value

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked_send)
                nursery.start_soon(blocked_receive, out)
                await trio.testing.wait_all_tasks_blocked()
                assert not errors
                await trio.aclose_forcefully(peer.transport)  # the peer dies
            assert errors["send"].error_code is None
            assert errors["send"].delivered is None  # the peer never reported consumption
            assert [await incoming.receive() for _ in range(3)] == ["a", "b", "c"]
            with pytest.raises(ConnectionLostError):
                await incoming.receive()
            with pytest.raises(ConnectionLostError):
                await conn.ping()
            with pytest.raises(ConnectionLostError):
                await conn.accept_stream()
    assert tasks_living() == baseline


async def test_flow_connection_killed_mid_transfer_both_sides_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    baseline = tasks_living()
    outcome: dict[str, Any] = {}
    with trio.fail_after(HANG):
        async with flow_pair(server={"settings": SMALL, "codec": "raw"}) as (client, server):
            sender = await client.open_stream(codec="raw")
            await sender.send(b"0")
            receiver = await server.accept_stream()

            async def produce() -> None:
                try:
                    for i in range(1, 10_000):
                        await sender.send(str(i).encode())
                except ConnectionLostError as exc:
                    outcome["send"] = exc

            async def consume() -> None:
                got: list[bytes] = []
                try:
                    while True:
                        got.append(await receiver.receive())
                        await trio.sleep(0.01)
                except ConnectionLostError as exc:
                    outcome["receive"] = exc
                outcome["got"] = got

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(consume)
                await trio.sleep(1)
                await trio.aclose_forcefully(server.transport)
            got = outcome["got"]
            assert got == [str(i).encode() for i in range(len(got))]
            assert 50 < len(got) <= sender.statistics().messages_sent
            assert isinstance(outcome["send"], ConnectionLostError)
            assert isinstance(outcome["receive"], ConnectionLostError)
            # What the sender knows was delivered is a prefix of what was (spec §10.5).
            delivered = outcome["send"].delivered
            assert delivered is not None
            assert delivered <= len(got)
    assert tasks_living() == baseline


async def test_peer_that_stops_reading_leaves_the_sender_blocked_on_credit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """R2/§8.3: a sender waits for credit; nothing is buffered past it, however long."""
    peer_settings = Settings(
        stream_bytes=8192, stream_messages=1000, connection_bytes=8192, max_message_bytes=1024
    )
    with trio.fail_after(HANG):
        async with (
            # No keepalive: a peer that reads nothing never answers a PING (spec §11), and
            # no write timeout: here the peer reading nothing is the point (spec §10.7.2).
            bare_peer(
                peer_settings=peer_settings,
                lockstep=True,
                settings=Settings(keepalive_ms=0),
                write_timeout=HANG,
            ) as (conn, peer),
            trio.open_nursery() as nursery,
        ):
            # The peer read our preface and HELLO to finish its handshake; now it reads
            # nothing more, and with a lockstep transport nothing moves until it does.
            stream = await conn.open_stream(codec="raw")
            progress = []

            async def produce() -> None:
                for i in range(1000):
                    await stream.send(bytes(100))
                    progress.append(i)

            nursery.start_soon(produce)
            for _ in range(5):
                await trio.sleep(10)
                stats = stream.statistics()
                assert stats.bytes_sent <= peer_settings.stream_bytes
                assert stats.bytes_sent == 100 * len(progress)
                assert stats.send_credit_bytes < 100
                assert conn.statistics().send_credit_bytes == stats.send_credit_bytes
            assert len(progress) == 81  # 8192 // 100
            # Now read it all: exactly what credit allowed, no more.
            nursery.start_soon(peer.read_forever)
            await trio.testing.wait_all_tasks_blocked()
            assert peer.received(stream.stream_id) == 81
            nursery.cancel_scope.cancel()
        assert len(progress) == 81
        assert stream.statistics().seconds_blocked >= 50


async def test_blackholed_peer_is_ended_by_the_keepalive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11: no frame for keepalive_ms, a PING, no answer in ping_timeout: TIMEOUT."""
    keepalive, ping_timeout = 3.0, 2.0
    errors: list[ConnectionLostError] = []
    with trio.fail_after(HANG):
        async with bare_peer(
            settings=Settings(keepalive_ms=int(keepalive * 1000)),
            ping_timeout=ping_timeout,
            autotune=False,  # no RTT probes (spec §8.9): only the keepalive PING is expected
        ) as (conn, peer):
            stream = await conn.open_stream()
            await stream.send("hello")
            await peer.read_until(lambda: peer.received(stream.stream_id) == 1)
            silent_since = trio.current_time()  # the peer neither reads nor writes again
            with pytest.raises(ConnectionLostError) as info:
                await stream.receive()
            errors.append(info.value)
            elapsed = trio.current_time() - silent_since
            assert info.value.error_code == ErrorCode.TIMEOUT
            assert keepalive + ping_timeout - 0.01 <= elapsed <= keepalive + ping_timeout + 0.01
            with pytest.raises(ConnectionLostError) as info:
                await stream.send("anyone?")
            assert info.value.error_code == ErrorCode.TIMEOUT
            # What went into the void: one keepalive PING, then GOAWAY(TIMEOUT), then the
            # transport was closed (spec §10.2), without waiting for the block to end.
            data = b""
            while chunk := await peer.transport.receive_some():
                data += chunk
            assert trio.current_time() - silent_since == elapsed
            frames = FrameDecoder().feed(data)
            assert [type(f) for f in frames] == [PingFrame, GoAwayFrame]
            assert frames[1].code == ErrorCode.TIMEOUT


async def test_keepalive_does_not_fire_while_the_peer_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11: a slow consumer is not a dead peer; PING/PONG flow without credit."""
    settings = Settings(keepalive_ms=500)
    with trio.fail_after(HANG):
        async with flow_pair(
            client={"settings": settings, "ping_timeout": 1.0},
            server={"settings": settings, "ping_timeout": 1.0},
        ) as (client, server):
            stream = await client.open_stream()
            await stream.send("x")
            peer = await server.accept_stream()
            await trio.sleep(60)  # nothing to do: many keepalive rounds
            assert await peer.receive() == "x"
            assert client.statistics().state == server.statistics().state == "open"


# --- ping, statistics, shutdown, handshake ---------------------------------------------------


async def test_ping_returns_the_round_trip_time() -> None:
    """spec §5.5: PING is answered with PONG; on the real clock, for a real RTT."""
    with trio.fail_after(10):
        async with flow_pair() as (client, server):
            assert client.statistics().rtt is None
            rtt = await client.ping()
            assert 0 <= rtt < 5
            assert client.statistics().rtt == rtt
            assert 0 <= await server.ping() < 5


async def test_statistics_add_up(autojump_clock: trio.testing.MockClock) -> None:
    """Credit, buffers and totals, before and after a batch is sent and consumed."""
    with trio.fail_after(HANG):
        async with flow_pair(server={"settings": SMALL, "codec": "raw"}) as (client, server):
            cs = client.statistics()
            assert cs.state == "open"
            assert cs.streams == 0
            assert cs.messages_sent == cs.bytes_sent == 0
            assert cs.messages_received == cs.bytes_received == 0
            assert cs.seconds_blocked == 0.0
            assert cs.send_credit_bytes == SMALL.connection_bytes
            assert cs.receive_window_bytes == Settings().connection_bytes

            stream = await client.open_stream(codec="raw")
            ss = stream.statistics()
            assert ss.stream_id == stream.stream_id
            assert ss.state == "open"
            assert (ss.send_credit_bytes, ss.send_credit_messages) == (4096, 8)
            assert ss.receive_credit_messages == Settings().stream_messages
            assert ss.delivered is None

            await stream.send_many([b"x" * 100] * 5)
            peer = await server.accept_stream()
            await trio.testing.wait_all_tasks_blocked()
            ss = stream.statistics()
            assert (ss.messages_sent, ss.bytes_sent) == (5, 500)
            assert (ss.send_credit_bytes, ss.send_credit_messages) == (4096 - 500, 3)
            ps = peer.statistics()
            assert (ps.buffered_messages, ps.buffered_bytes) == (5, 500)
            assert (ps.receive_credit_bytes, ps.receive_credit_messages) == (4096 - 500, 3)
            assert server.statistics().buffered_bytes == 500

            await peer.receive_many()
            await trio.testing.wait_all_tasks_blocked()
            ps = peer.statistics()
            assert (ps.messages_received, ps.bytes_received) == (5, 500)
            assert (ps.buffered_messages, ps.buffered_bytes) == (0, 0)
            ss = stream.statistics()
            assert ss.delivered == 5  # the CREDIT carried "consumed" (spec §10.5)
            assert (ss.send_credit_bytes, ss.send_credit_messages) == (4096, 8)
            assert client.statistics().streams == 1
            assert server.statistics().messages_received == 5
            assert server.statistics().bytes_received == 500

            await stream.aclose()
            await peer.aclose()
            await trio.testing.wait_all_tasks_blocked()
            cs = client.statistics()
            assert cs.streams == 0
            # Totals survive the stream they were counted on.
            assert (cs.messages_sent, cs.bytes_sent) == (5, 500)


async def test_goaway_lets_open_streams_finish_and_refuses_new_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §10.4: after GOAWAY neither side opens streams; open ones run to their end."""
    with trio.fail_after(HANG):
        async with flow_pair() as (client, server), trio.open_nursery() as nursery:
            stream = await client.open_stream()
            await stream.send("request")
            peer = await server.accept_stream()
            closed = trio.Event()
            start = trio.current_time()

            async def close_client() -> None:
                await client.aclose()
                closed.set()

            nursery.start_soon(close_client)
            await trio.testing.wait_all_tasks_blocked()
            assert not closed.is_set()  # the stream is still open
            with pytest.raises(ConnectionLostError) as info:
                await client.open_stream()
            assert info.value.error_code == ErrorCode.NO_ERROR
            with pytest.raises(ConnectionLostError) as info:
                await server.open_stream()  # the server got the GOAWAY
            assert info.value.error_code == ErrorCode.NO_ERROR
            assert info.value.last_stream_id == 0
            with pytest.raises(ConnectionLostError):
                await server.accept_stream()  # the client will open no more

            # Both directions of the open stream still work.
            assert await peer.receive() == "request"
            await peer.send_many(["reply", 1, 2])
            await stream.send("more")
            assert await peer.receive() == "more"
            await stream.aclose()
            await peer.aclose()
            assert [m async for m in stream] == ["reply", 1, 2]
            with pytest.raises(trio.EndOfChannel):
                await peer.receive()
            await closed.wait()
            # The server closed as soon as its last stream did (spec §10.4), so the
            # client waited neither for its close grace nor for its linger.
            assert trio.current_time() == start
    # Leaving flow_pair closed the server too, and nothing hung.


async def test_goaway_grace_resets_streams_that_do_not_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §10.4: when the grace period ends, the remaining streams are reset with CANCEL."""
    with trio.fail_after(HANG):
        async with flow_pair() as (client, server):
            stream = await client.open_stream()
            await stream.send("x")
            peer = await server.accept_stream()
            start = trio.current_time()
            await client.aclose(grace=2.0)
            assert 2.0 <= trio.current_time() - start < 3
            with pytest.raises(StreamResetError) as info:
                await stream.send("y")
            assert info.value.error_code == ErrorCode.CANCEL
            assert not info.value.remote
            # The RESET discarded what the server had not read (spec §10.3).
            with pytest.raises(StreamResetError) as info:
                await peer.receive()
            assert info.value.error_code == ErrorCode.CANCEL
            assert info.value.remote


async def test_a_cancelled_block_closes_at_once_and_resets_its_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Trio's convention for a cancelled close: no close_grace for open streams; they are
    reset with CANCEL (spec §10.4) and the block exits without waiting for them."""
    a, b = trio.testing.memory_stream_pair()
    peer_saw: list[StreamResetError] = []
    received = trio.Event()

    async def server() -> None:
        async with open_flow_connection(b, initiator=False) as conn:
            peer = await conn.accept_stream()
            assert await peer.receive() == "x"
            received.set()
            with pytest.raises(StreamResetError) as info:
                await peer.receive()  # the stream never finishes by itself
            peer_saw.append(info.value)

    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            with trio.CancelScope() as scope:
                async with open_flow_connection(a, close_grace=30.0) as conn:
                    stream = await conn.open_stream()
                    await stream.send("x")
                    await received.wait()
                    start = trio.current_time()
                    scope.cancel()
                    await trio.sleep_forever()
            assert trio.current_time() - start < 2.0  # not the 30 s grace
    assert scope.cancelled_caught
    assert [(e.error_code, e.remote) for e in peer_saw] == [(ErrorCode.CANCEL, True)]
    with pytest.raises(StreamResetError):  # and this side knows it reset the stream
        await stream.send("y")


async def test_handshake_timeout_when_the_peer_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11: no preface and HELLO within the handshake timeout: TIMEOUT."""
    baseline = tasks_living()
    a, b = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with trio.fail_after(HANG), pytest.raises(HandshakeTimeout):
        async with open_flow_connection(a, handshake_timeout=3.0):
            pytest.fail("the handshake cannot succeed")
    assert trio.current_time() - start == pytest.approx(3.0)  # no close grace after it
    frames = FrameDecoder().feed((await b.receive_some())[10:])  # after the preface
    assert type(frames[-1]) is GoAwayFrame
    assert frames[-1].code == ErrorCode.TIMEOUT
    assert tasks_living() == baseline


async def test_handshake_with_a_peer_that_is_not_flowproto_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §3.1: a wrong magic is PROTOCOL_ERROR at once, raised bare from ``async with``."""
    a, b = trio.testing.memory_stream_pair()
    await b.send_all(b"GET / HTTP/1.1\r\n\r\n")
    with trio.fail_after(HANG), pytest.raises(ConnectionLostError) as info:
        async with open_flow_connection(a):
            pytest.fail("not flowproto")
    assert info.value.error_code == ErrorCode.PROTOCOL_ERROR


async def test_stream_opened_after_the_peers_goaway_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §10.4: the sender of GOAWAY opens no new streams; one that does is refused."""
    with trio.fail_after(HANG):
        async with bare_peer(peer_role=Role.INITIATOR) as (conn, peer):
            # The bare core opens stream 1 first (it would refuse after GOAWAY), but the
            # bytes go out in the other order: GOAWAY, then the stream's CREDIT and DATA.
            sid = peer.conn.open_stream()
            assert peer.conn.send_message(sid, msgpack.packb("late"))
            opening = peer.conn.data_to_send()
            peer.conn.close(ErrorCode.NO_ERROR)
            await peer.send_raw(opening)  # send_raw puts the queued GOAWAY first
            await peer.read_until(lambda: peer.eof)
            resets = [e for e in peer.events if isinstance(e, StreamReset)]
            assert [(r.stream_id, r.error_code) for r in resets] == [(1, ErrorCode.REFUSED_STREAM)]
            with pytest.raises(ConnectionLostError) as info:
                await conn.accept_stream()
            assert info.value.error_code == ErrorCode.NO_ERROR


async def test_a_failing_handler_resets_only_its_own_stream() -> None:
    """A handler that raises resets its stream with INTERNAL_ERROR; the server goes on."""
    import functools

    from flowproto.trio import StreamResetError, open_connection, serve

    async def handler(stream: Any) -> None:
        message = await stream.receive()
        if message == "boom":
            raise ValueError("handler bug")
        await stream.send(message)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(serve, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with open_connection("127.0.0.1", port) as conn:
                bad = await conn.open_stream()
                await bad.send("boom")
                with pytest.raises(StreamResetError) as info:
                    await bad.receive()
                assert info.value.error_code == ErrorCode.INTERNAL_ERROR
                good = await conn.open_stream()
                await good.send("hello")
                assert await good.receive() == "hello"
                await good.aclose()
            nursery.cancel_scope.cancel()


async def test_idle_timeout_closes_a_connection_without_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11: no stream for idle_timeout seconds: GOAWAY(TIMEOUT) and the connection ends."""
    with trio.fail_after(HANG):
        async with flow_pair(server={"idle_timeout": 30.0}) as (client, _server):
            start = trio.current_time()
            with pytest.raises(ConnectionLostError) as info:
                await client.accept_stream()
            assert trio.current_time() - start == pytest.approx(30.0, abs=0.01)
            assert info.value.error_code == ErrorCode.TIMEOUT
            with pytest.raises(ConnectionLostError):
                await client.open_stream()


async def test_idle_timeout_waits_while_a_stream_is_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11: the idle timer runs only while there is no stream."""
    with trio.fail_after(HANG):
        async with flow_pair(server={"idle_timeout": 5.0}) as (client, server):
            stream = await client.open_stream()
            await stream.send("first")
            peer = await server.accept_stream()
            assert await peer.receive() == "first"
            await trio.sleep(60)  # far past the idle timeout, with the stream open
            await stream.send("still here")
            assert await peer.receive() == "still here"
            assert server.statistics().state == "open"
            await stream.aclose()
            await peer.aclose()


async def test_a_woken_sender_whose_stream_was_reset_passes_the_wake_up_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §10.7.2: senders waiting on a full send backlog are woken one at a time and
    each passes the wake-up on. The first one woken finds its stream reset and queues
    nothing, so no write follows that would wake the next: it must pass the wake-up on
    itself, or the sender behind it waits forever."""
    from flowproto.trio import MAX_SEND_BACKLOG

    chunk = bytes(64 * 1024)
    with trio.fail_after(HANG):
        async with (
            bare_peer(
                peer_settings=HUGE,
                lockstep=True,
                settings=Settings(keepalive_ms=0),
                write_timeout=3600.0,  # the peer reads nothing for a while on purpose
            ) as (conn, peer),
            trio.open_nursery() as nursery,
        ):
            first, doomed, last = [await conn.open_stream(codec="raw") for _ in range(3)]
            await trio.testing.wait_all_tasks_blocked()  # the writer waits for the peer
            await first.send_many([chunk] * (MAX_SEND_BACKLOG // len(chunk)))  # a full backlog
            outcome: dict[str, BaseException | None] = {}

            async def send(name: str, stream: FlowStream) -> None:
                try:
                    await stream.send(chunk)
                    outcome[name] = None
                except StreamResetError as exc:
                    outcome[name] = exc

            nursery.start_soon(send, "doomed", doomed)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, "last", last)  # parked behind it
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == {}
            await doomed.reset()  # it stays parked until a write wakes it
            nursery.start_soon(peer.read_forever)  # the writer goes on: one wake-up
            with trio.fail_after(60):
                while len(outcome) < 2:
                    await trio.sleep(0.01)
            assert isinstance(outcome["doomed"], StreamResetError)
            assert outcome["last"] is None
            nursery.cancel_scope.cancel()


async def test_a_graceful_close_sends_one_goaway() -> None:
    """spec §10.4, §10.7.1: aclose() says GOAWAY once; a repeat would cost the peer's
    glitch budget (it charges a repeated GOAWAY) and says nothing new."""
    async with bare_peer() as (conn, peer):
        stream = await conn.open_stream()
        await stream.send("last")
        with trio.move_on_after(1):  # the peer never ends its side: the grace runs out
            await conn.aclose(grace=0.2)
        data = b""
        while chunk := await peer.transport.receive_some():
            data += chunk
    frames = FrameDecoder().feed(data)
    assert [f.code for f in frames if isinstance(f, GoAwayFrame)] == [ErrorCode.NO_ERROR]
