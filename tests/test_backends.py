"""The same behaviour from both I/O layers: every test runs under Trio and under asyncio.

Real sockets on 127.0.0.1 (port 0), or a Unix socket in a temporary directory; each run
is bounded by a timeout (``Backend.run``). Nothing sleeps to wait for something: tests
wait on events, on round trips (a PING answered after the data sent before it), or on
the protocol's own timers set short.
"""

from __future__ import annotations

import random
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from backends import BACKENDS, RawPeer

from flowproto import MIN_FRAME_RATE, ErrorCode, Settings, StreamResetError
from flowproto.asyncio import MAX_SEND_BACKLOG, WRITE_CHUNK


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Any:
    return BACKENDS[request.param]


#: Small windows, fixed (no auto-tuning), so that credit runs out quickly.
SMALL = Settings(
    stream_bytes=4096, stream_messages=8, connection_bytes=65536, max_message_bytes=1024
)


async def echo(stream: Any) -> None:
    async for message in stream:
        await stream.send(message)


def test_messages_arrive_in_order_both_ways(backend: Any) -> None:
    async def scenario(b: Any) -> None:
        async with b.server(echo) as port, b.connect(port) as conn:
            stream = await conn.open_stream()
            for i in range(100):
                await stream.send({"n": i})
            await stream.send_many([{"n": i} for i in range(100, 300)])
            got: list[Any] = []
            while len(got) < 300:
                got += await stream.receive_many()
            assert [m["n"] for m in got] == list(range(300))
            await stream.aclose()
            with pytest.raises(b.EndOfStream):
                await stream.receive()
            stats = stream.statistics()
            assert stats.messages_sent == stats.messages_received == 300
            assert conn.statistics().messages_sent == 300

    backend.run(scenario)


def test_async_for_ends_when_the_peer_ends_the_stream(backend: Any) -> None:
    async def producer(stream: Any) -> None:
        await stream.send_many(list(range(50)))  # the handler returning ends the stream

    async def scenario(b: Any) -> None:
        async with b.server(producer) as port, b.connect(port) as conn:
            stream = await conn.open_stream()
            await stream.send("go")
            assert [m async for m in stream] == list(range(50))

    backend.run(scenario)


def test_a_slow_consumer_never_holds_more_than_the_window(backend: Any) -> None:
    # spec §8.4: the receiver's buffer is bounded by the credit it advertised.
    peaks: list[int] = []

    async def slow(stream: Any) -> None:
        n = 0
        async for _ in stream:
            n += 1
            stats = stream.statistics()
            peaks.append(stats.buffered_messages)
            assert stats.buffered_messages <= SMALL.stream_messages
            assert stats.buffered_bytes <= SMALL.stream_bytes
            for _ in range(20):  # a slow consumer: the loop runs the sender meanwhile
                await backend.checkpoint()
        await stream.send(str(n).encode())

    async def scenario(b: Any) -> None:
        async with (
            b.server(slow, settings=SMALL, autotune=False, codec="raw") as port,
            b.connect(port) as conn,
        ):
            stream = await conn.open_stream(codec="raw")
            for _ in range(200):
                await stream.send(b"x" * 100)
            await stream.aclose()
            assert await stream.receive() == b"200"
            stats = stream.statistics()
            assert stats.blocked_on_peer_events > 0  # the consumer set the pace

    backend.run(scenario)
    assert max(peaks) <= SMALL.stream_messages
    assert max(peaks) > 0


def test_send_blocks_when_credit_runs_out_and_resumes_on_credit(backend: Any) -> None:
    async def scenario(b: Any) -> None:
        got_first = b.Event()
        consume = b.Event()

        async def handler(stream: Any) -> None:
            await stream.receive()
            got_first.set()
            await consume.wait()
            async for _ in stream:
                pass

        async with (
            b.server(handler, settings=SMALL, autotune=False) as port,
            b.connect(port) as conn,
        ):
            stream = await conn.open_stream()
            for i in range(SMALL.stream_messages):
                await stream.send(i)  # exactly the window
            await got_first.wait()  # one consumed: its credit may come back
            await conn.ping()  # a round trip: any CREDIT sent by now has arrived
            sent = stream.messages_sent
            # spec §8.3: with the window full, the next send waits (cancelled here).
            assert not await b.within(0.05, stream.send, "blocked")
            assert stream.messages_sent == sent  # cancelled: nothing of it queued
            assert stream.statistics().blocked_on_peer_events >= 1
            consume.set()
            for i in range(50):
                await stream.send(i)  # resumes as credit returns
            assert stream.messages_sent == sent + 50

    backend.run(scenario)


def test_a_cancelled_send_queued_all_of_its_message_or_none(backend: Any) -> None:
    # Senders cancelled at random moments: what arrives is exactly what messages_sent
    # says was queued, in order, each message whole.
    rng = random.Random(15)
    received: list[Any] = []

    async def collect(stream: Any) -> None:
        async for message in stream:
            received.append(message)

    async def scenario(b: Any) -> None:
        queued: list[int] = []
        async with (
            b.server(collect, settings=SMALL, autotune=False) as port,
            b.connect(port) as conn,
        ):
            stream = await conn.open_stream()
            for i in range(300):
                before = stream.messages_sent
                await b.within(rng.choice([0, 0.0005, 0.002]), stream.send, [i, "x" * 500])
                if stream.messages_sent > before:
                    queued.append(i)
            await stream.aclose()
            await conn.ping()
        assert [m[0] for m in received] == queued
        assert all(m[1] == "x" * 500 for m in received)
        assert 0 < len(queued) < 300

    backend.run(scenario, timeout=30)


def test_a_cancelled_receive_consumed_nothing(backend: Any) -> None:
    rng = random.Random(15)

    async def trickle(stream: Any) -> None:
        await stream.receive()
        for i in range(300):
            await stream.send(i)
            if i % 7 == 0:
                for _ in range(rng.randrange(5)):
                    await backend.checkpoint()

    async def scenario(b: Any) -> None:
        got: list[int] = []
        async with b.server(trickle) as port, b.connect(port) as conn:
            stream = await conn.open_stream()
            await stream.send("go")
            cancelled = 0

            async def take() -> None:
                got.append(await stream.receive())

            while len(got) < 300:
                if not await b.within(rng.choice([0, 0.0001, 0.001]), take):
                    cancelled += 1
            assert cancelled > 0
            assert got == list(range(300))
            assert stream.statistics().messages_received == 300

    backend.run(scenario, timeout=30)


def test_a_killed_peer_fails_pending_operations_with_connection_lost(backend: Any) -> None:
    async def scenario(b: Any) -> None:
        with RawPeer("killed") as peer:
            async with b.connect(peer.port) as conn:
                stream = await conn.open_stream()
                peer.go.set()
                with pytest.raises(b.ConnectionLostError) as info:
                    await stream.receive()
                assert info.value.error_code is None  # no GOAWAY: the transport just ended
                assert conn.closed
                if b.name == "asyncio":  # the Trio layer's core is left "open" (not fed EOF)
                    assert conn.statistics().state == "closed"  # the core knows it too
                with pytest.raises(b.ConnectionLostError):
                    await stream.send("late")

    backend.run(scenario)


def test_a_peer_that_stops_reading_is_lost_after_the_write_timeout() -> None:
    """spec §10.7.2, §11: the output stays bounded, and the peer is given up on.

    asyncio only: the Trio layer writes its backlog in one call, whose allowance is 16 s
    (write_timeout + 256 KiB / MIN_FRAME_RATE) on a real clock; test_faults.py's A7 tests
    check it under a mock clock. The asyncio layer watches what its transport holds.
    """
    backend = BACKENDS["asyncio"]
    huge = Settings(
        stream_bytes=1 << 40,
        stream_messages=(1 << 31) - 1,
        connection_bytes=1 << 40,
        max_message_bytes=1 << 20,
    )

    async def scenario(b: Any) -> None:
        with RawPeer("stops-reading", huge) as peer:
            async with b.connect(peer.port, write_timeout=0.3) as conn:
                stream = await conn.open_stream(codec="raw")
                started = b.now()
                with pytest.raises(b.ConnectionLostError) as info:
                    while True:
                        await stream.send(b"y" * 1024)
                assert info.value.error_code == ErrorCode.TIMEOUT
                assert "write timeout" in str(info.value)
                # spec §11 (1.1): within the allowance of one WRITE_CHUNK after the stall
                assert b.now() - started <= 0.3 + WRITE_CHUNK / MIN_FRAME_RATE + 5
                # what was queued is bounded by the transport's buffer, not the credit
                assert stream.statistics().bytes_sent < 4 * MAX_SEND_BACKLOG + (8 << 20)

    backend.run(scenario, timeout=40)


def test_keepalive_gives_up_on_a_blackholed_peer(backend: Any) -> None:
    # spec §11: a PING unanswered within ping_timeout ends the connection with TIMEOUT.
    async def scenario(b: Any) -> None:
        with RawPeer("blackholed") as peer:
            async with b.connect(
                peer.port, settings=Settings(keepalive_ms=100), ping_timeout=0.2
            ) as conn:
                stream = await conn.open_stream()
                started = b.now()
                with pytest.raises(b.ConnectionLostError) as info:
                    await stream.receive()
                assert info.value.error_code == ErrorCode.TIMEOUT
                assert 0.2 <= b.now() - started < 5

    backend.run(scenario)


def test_keepalive_keeps_an_idle_healthy_connection(backend: Any) -> None:
    async def scenario(b: Any) -> None:
        fast = {"settings": Settings(keepalive_ms=20), "ping_timeout": 0.5}
        async with b.server(echo, **fast) as port, b.connect(port, **fast) as conn:
            stream = await conn.open_stream()
            # idle for many keepalive intervals: within() lets the time pass
            assert not await b.within(0.3, stream.receive)
            await stream.send("still here")
            assert await stream.receive() == "still here"
            assert conn.statistics().rtt is not None  # keepalive PONGs measured it

    backend.run(scenario)


def test_goaway_lets_open_streams_finish_and_refuses_new_ones(backend: Any) -> None:
    # spec §10.4: graceful close.
    async def scenario(b: Any) -> None:
        opened = b.Event()

        async def handler(stream: Any) -> None:
            opened.set()
            total = 0
            async for n in stream:
                total += n
            await stream.send(total)

        async with b.server(handler) as port:
            async with b.connect(port) as conn:
                stream = await conn.open_stream()
                await stream.send(1)
                await opened.wait()
                async with b.connect(port) as other:
                    pass  # a second connection, closed gracefully at once
                await stream.send_many([2, 3, 4])
                await stream.aclose()
                assert await stream.receive() == 10
            # leaving the block sent GOAWAY; the connection is closed
            assert conn.closed
            with pytest.raises(b.ConnectionLostError):
                await conn.open_stream()
            assert other.closed

    backend.run(scenario)


def test_closing_the_client_with_a_stream_open_resets_it_after_the_grace(backend: Any) -> None:
    # spec §10.4: streams still open after the grace are reset with CANCEL; the server
    # cancels the handler of a stream its peer reset (spec §10.3).
    async def scenario(b: Any) -> None:
        ended = b.Event()

        async def handler(stream: Any) -> None:
            try:
                await stream.receive()
                await stream.receive()  # never comes: the client closes instead
            finally:
                ended.set()

        async with b.server(handler) as port:
            async with b.connect(port, close_grace=0.05) as conn:
                stream = await conn.open_stream()
                await stream.send("one")
                await conn.ping()
            await ended.wait()
            with pytest.raises(StreamResetError) as info:
                await stream.send("late")
            assert info.value.error_code == ErrorCode.CANCEL
            assert not info.value.remote

    backend.run(scenario)


def test_a_reset_reaches_the_peer_with_what_was_delivered(backend: Any) -> None:
    async def scenario(b: Any) -> None:
        async def handler(stream: Any) -> None:
            for _ in range(3):
                await stream.receive()
            await stream.reset(ErrorCode.REJECTED, "enough")

        async with b.server(handler) as port, b.connect(port) as conn:
            stream = await conn.open_stream()
            await stream.send_many([1, 2, 3])
            with pytest.raises(StreamResetError) as info:
                await stream.receive()
            assert info.value.error_code == ErrorCode.REJECTED
            assert info.value.remote
            assert info.value.delivered == 3

    backend.run(scenario)


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_tls_carries_flowproto(backend: Any, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls

    async def scenario(b: Any) -> None:
        async with (
            b.server(echo, ssl=server_ctx) as port,
            b.connect(port, ssl=client_ctx, server_hostname="localhost") as conn,
        ):
            stream = await conn.open_stream()
            await stream.send_many(list(range(100)))
            got: list[int] = []
            while len(got) < 100:
                got += await stream.receive_many()
            assert got == list(range(100))

    backend.run(scenario)


def test_tls_with_an_untrusted_certificate_fails_with_the_reason(
    backend: Any, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, _ = tls

    async def scenario(b: Any) -> None:
        async with b.server(echo, ssl=server_ctx, handshake_timeout=2) as port:
            with pytest.raises(b.ConnectionLostError) as info:
                async with b.connect(
                    port, ssl=ssl.create_default_context(), server_hostname="localhost"
                ):
                    pass
            assert "certificate verify failed" in str(info.value)
            assert isinstance(info.value.__cause__, ssl.SSLError)

    backend.run(scenario)


def test_unix_sockets_carry_flowproto(backend: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "flow.sock")

    async def scenario(b: Any) -> None:
        async with b.unix_server(echo, path), b.unix_connect(path) as conn:
            stream = await conn.open_stream()
            await stream.send({"over": "unix"})
            assert await stream.receive() == {"over": "unix"}

    backend.run(scenario)


def test_a_unix_socket_file_is_private_kept_and_removed(backend: Any, tmp_path: Path) -> None:
    import os
    import stat

    path = tmp_path / "flow.sock"
    regular = tmp_path / "file"
    regular.write_text("not a socket")

    async def scenario(b: Any) -> None:
        async with b.unix_server(echo, str(path)):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # only this user connects
            with pytest.raises(OSError):  # a live server's socket is never replaced
                async with b.unix_server(echo, str(path)):
                    pass
            async with b.unix_connect(str(path)) as conn:  # still serving
                stream = await conn.open_stream()
                await stream.send(1)
                assert await stream.receive() == 1
        assert not path.exists()  # removed on close
        with pytest.raises(FileExistsError):
            async with b.unix_server(echo, str(regular)):
                pass
        assert regular.read_text() == "not a socket"

    backend.run(scenario)


def test_statistics_count_both_ways(backend: Any) -> None:
    async def scenario(b: Any) -> None:
        async with b.server(echo, codec="raw") as port, b.connect(port, codec="raw") as conn:
            stream = await conn.open_stream()
            await stream.send_many([b"a" * 10] * 20)
            got = []
            while len(got) < 20:
                got += await stream.receive_many()
            await conn.ping()  # the peer's report of what it consumed has arrived
            s = stream.statistics()
            assert (s.messages_sent, s.bytes_sent) == (20, 200)
            assert (s.messages_received, s.bytes_received) == (20, 200)
            # spec §10.5: what the peer reported consumed so far (it reports with CREDIT)
            assert s.messages_in_flight == 20 - (s.delivered or 0)
            assert s.buffered_messages == 0
            assert s.state == "open"
            c = conn.statistics()
            assert (c.messages_sent, c.bytes_sent, c.messages_received) == (20, 200, 20)
            assert c.streams == 1
            assert c.rtt is not None

    backend.run(scenario)


def test_open_stream_without_waiting_fails_at_the_stream_limit(backend: Any) -> None:
    from flowproto import StreamLimitError

    async def scenario(b: Any) -> None:
        async with (
            b.server(echo, settings=Settings(max_streams=1)) as port,
            b.connect(port) as conn,
        ):
            first = await conn.open_stream()
            await first.send("x")
            assert await first.receive() == "x"
            with pytest.raises(StreamLimitError):
                await conn.open_stream(wait=False)

    backend.run(scenario)


def test_a_silent_server_is_given_up_on_after_the_handshake_timeout(backend: Any) -> None:
    from flowproto import HandshakeTimeout

    async def scenario(b: Any) -> None:
        with RawPeer("silent") as peer, pytest.raises(HandshakeTimeout):
            async with b.connect(peer.port, handshake_timeout=0.2):
                pass

    backend.run(scenario)


def test_an_idle_connection_closes_after_the_idle_timeout(backend: Any) -> None:
    # spec §11: no stream for idle_timeout seconds: GOAWAY(TIMEOUT).
    async def scenario(b: Any) -> None:
        async with b.server(echo) as port, b.connect(port, idle_timeout=0.1) as conn:
            with pytest.raises(b.ConnectionLostError) as info:
                await conn.accept_stream()
            assert info.value.error_code == ErrorCode.TIMEOUT
            assert "idle timeout" in str(info.value)

    backend.run(scenario)


def test_a_peer_that_breaks_the_protocol_gets_a_goaway_with_the_error(backend: Any) -> None:
    # spec §10.2: a connection error is answered with GOAWAY carrying its code.
    from flowproto import GoAwayReceived

    async def scenario(b: Any) -> None:
        with RawPeer("garbage") as peer:
            async with b.connect(peer.port) as conn:
                stream = await conn.open_stream()
                peer.go.set()
                with pytest.raises(b.ConnectionLostError) as info:
                    await stream.receive()
                assert info.value.error_code not in (None, ErrorCode.NO_ERROR)
        # What the peer read after its garbage: a GOAWAY with that code.
        assert peer.core is not None
        events = peer.core.receive_data(peer.received, 0.0)
        goaways = [e for e in events if isinstance(e, GoAwayReceived)]
        assert [g.error_code for g in goaways] == [info.value.error_code]

    backend.run(scenario)


def test_a_server_survives_a_client_that_is_not_flowproto(backend: Any) -> None:
    import socket

    async def scenario(b: Any) -> None:
        async with b.server(echo, handshake_timeout=2) as port:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                async with b.connect(port) as conn:  # the server still serves
                    stream = await conn.open_stream()
                    await stream.send("still")
                    assert await stream.receive() == "still"

    backend.run(scenario)


def test_held_messages_are_reported_consumed_only_once_released(backend: Any) -> None:
    # spec §8.5, §10.5: receive_many(release=False) keeps the credit until release().
    async def scenario(b: Any) -> None:
        taken = b.Event()
        release_now = b.Event()

        async def holder(stream: Any) -> None:
            got = await stream.receive_many(3, release=False)
            assert got == [0, 1, 2]
            taken.set()
            await release_now.wait()
            stream.release(2)
            with pytest.raises(ValueError):
                stream.release(5)
            stream.release()
            async for _ in stream:
                pass

        async with (
            b.server(holder, settings=SMALL, autotune=False) as port,
            b.connect(port) as conn,
        ):
            stream = await conn.open_stream()
            await stream.send_many([0, 1, 2])
            await taken.wait()
            await conn.ping()
            assert (stream.statistics().delivered or 0) == 0  # held: not consumed yet
            release_now.set()
            await stream.aclose()
            with pytest.raises(b.EndOfStream):
                await stream.receive()
            assert stream.statistics().delivered == 3

    backend.run(scenario)


def test_a_rejected_message_tells_the_sender_what_was_accepted(backend: Any) -> None:
    # spec §5.7 (1.1): RESET(REJECTED) with the count of accepted messages.
    async def scenario(b: Any) -> None:
        async def picky(stream: Any) -> None:
            async for message in stream:
                if message == "bad":
                    await stream.reject("no thanks")
                    return

        async with b.server(picky) as port, b.connect(port) as conn:
            stream = await conn.open_stream()
            await stream.send_many(["ok", "ok", "bad", "later"])
            with pytest.raises(StreamResetError) as info:
                await stream.receive()
            assert info.value.error_code == ErrorCode.REJECTED
            assert info.value.delivered == 2
            assert not info.value.retryable

    backend.run(scenario)
