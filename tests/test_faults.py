"""Hostile peers and faults against the Trio layer: timeouts, stalls, resets, lost peers.

The Trio-layer half of the reliability rows (``tests/test_robustness.py`` has the core
half; docs/robustness.md maps every row). Peers are a bare sans-IO core driven by the
test (``BarePeer`` of test_trio.py) or a second FlowConnection, over memory streams
under ``autojump_clock``, so "10 s of silence" takes no real time; the lost-peer tests
use real sockets on 127.0.0.1 under ``trio.fail_after``. Each test checks a resource
bound as well as the outcome: ``tasks_living`` back at its baseline, a ``tracemalloc``
peak, or a count of handler tasks.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from test_trio import HANG, HUGE, BarePeer, bare_peer, flow_pair, tasks_living

from flowproto import (
    MIN_FRAME_RATE,
    ErrorCode,
    PingFrame,
    Role,
    Settings,
    StreamEnded,
    StreamReset,
)
from flowproto._frames import HEADER
from flowproto.trio import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    MAX_SEND_BACKLOG,
    WRITE_CHUNK,
    ConnectionLostError,
    FlowStream,
    HandshakeTimeout,
    StreamResetError,
    open_flow_connection,
    serve_connection,
)

QUIET = Settings(keepalive_ms=0)
MIB = 1024 * 1024


# --- A15: slowloris and partial frames (spec §11) ------------------------------------------


async def test_a15b_half_a_header_then_silence_ends_at_the_frame_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A15b: 5 bytes of a header, then nothing, keepalive off: GOAWAY(TIMEOUT) after
    exactly the frame timeout, and no task is left behind."""
    baseline = tasks_living()
    with trio.fail_after(HANG):
        async with bare_peer(settings=QUIET) as (conn, peer):
            await peer.send_raw(HEADER.pack(100, 0, 1, 1)[:5])
            start = trio.current_time()
            with pytest.raises(ConnectionLostError) as info:
                await conn.accept_stream()
            assert trio.current_time() - start == pytest.approx(DEFAULT_FRAME_TIMEOUT)
            assert info.value.error_code == ErrorCode.TIMEOUT
            await peer.read_until(lambda: bool(peer.goaways()))
            assert peer.goaways()[-1].error_code == ErrorCode.TIMEOUT
    assert tasks_living() == baseline


async def test_a15c_a_frame_dribbled_a_byte_a_second_is_cut_off_from_its_first_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A15c: a max-size DATA frame at 1 byte/s: each byte is progress of a sort, but the
    deadline runs from the frame's first byte (spec §11): TIMEOUT at 10 s + 65 536 / 16 384 s
    (1.1: the timeout scales with the frame's length at 16 KiB/s), not 65 536 s."""
    with trio.fail_after(HANG):
        async with bare_peer(settings=QUIET) as (conn, peer), trio.open_nursery() as nursery:
            start = trio.current_time()

            async def dribble() -> None:
                await peer.send_raw(HEADER.pack(65536, 0, 1, 2))  # a new peer stream
                for _ in range(65536):
                    await trio.sleep(1)
                    await peer.transport.send_all(b"x")

            nursery.start_soon(dribble)
            with pytest.raises(ConnectionLostError) as info:
                await conn.accept_stream()
            assert info.value.error_code == ErrorCode.TIMEOUT
            assert trio.current_time() - start == pytest.approx(
                DEFAULT_FRAME_TIMEOUT + 65536 / MIN_FRAME_RATE
            )
            nursery.cancel_scope.cancel()


async def test_a15_frames_split_across_every_read_never_time_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11: the frame deadline restarts whenever a frame completes, so a busy peer
    whose every read ends inside the next frame is never cut off (60 s of it here)."""
    ping = PingFrame(1).encode()
    with trio.fail_after(HANG):
        async with bare_peer(settings=QUIET) as (conn, peer):
            await peer.send_raw(ping[:7])
            for _ in range(60):
                await trio.sleep(1)
                await peer.send_raw(ping[7:] + ping[:7])  # finish one PING, start the next
            await peer.send_raw(ping[7:])
            assert conn.statistics().state == "open"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.read_forever)
                # Answered at once: no virtual time passes, so no timer had to fire.
                assert await conn.ping() == 0.0
                assert conn.statistics().state == "open"
                nursery.cancel_scope.cancel()


async def test_a15d_a_stalled_tls_handshake_ends_at_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A15d, A20: a TLS peer that never answers the ClientHello: HandshakeTimeout, and
    the application never got a connection to queue messages on."""
    baseline = tasks_living()
    a, _b = trio.testing.memory_stream_pair()
    tls = trio.SSLStream(a, ssl.create_default_context(), server_hostname="flowproto.invalid")
    start = trio.current_time()
    with trio.fail_after(HANG), pytest.raises(HandshakeTimeout):
        async with open_flow_connection(tls, handshake_timeout=3.0):
            pytest.fail("the handshake cannot succeed")
    # The GOAWAY cannot get past the stuck TLS handshake: the flush gets 5 s, then close.
    assert 3.0 <= trio.current_time() - start <= 3.0 + 5.0
    assert tasks_living() == baseline


# --- A7: a peer that grants credit and never reads (spec §10.7.2) ---------------------------


async def test_a7_credit_without_reading_is_bounded_and_ends_at_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A7: the peer grants 2^62 bytes of credit and reads nothing from the transport;
    10 streams each try to send 1 GiB in 64 KiB messages. Memory stays within the send
    backlog (1 MiB) and one write, not the credit; after the write timeout every pending
    send fails with TIMEOUT, and no task is left behind."""
    baseline = tasks_living()
    errors: list[ConnectionLostError] = []
    with trio.fail_after(HANG):
        async with bare_peer(peer_settings=HUGE, lockstep=True, settings=QUIET) as (conn, peer):
            streams = [await conn.open_stream(codec="raw") for _ in range(10)]

            async def produce(stream: FlowStream) -> None:
                try:
                    for _ in range(16 * 1024):
                        await stream.send(bytes(64 * 1024))  # a new buffer each time
                except ConnectionLostError as exc:
                    errors.append(exc)

            start = trio.current_time()
            tracemalloc.start()
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(produce, stream)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            # spec §11 (1.1): the stalled write of n <= WRITE_CHUNK bytes had 10 s + n / 16 KiB
            elapsed = trio.current_time() - start
            assert (
                DEFAULT_WRITE_TIMEOUT
                < elapsed
                <= DEFAULT_WRITE_TIMEOUT + WRITE_CHUNK / MIN_FRAME_RATE
            )
            assert len(errors) == 10
            assert {e.error_code for e in errors} == {ErrorCode.TIMEOUT}
            sent = sum(s.statistics().bytes_sent for s in streams)
            assert sent <= 4 * MAX_SEND_BACKLOG
            assert peak <= 6 * MIB
            with pytest.raises(ConnectionLostError) as info:
                await streams[0].receive()
            assert info.value.error_code == ErrorCode.TIMEOUT
            assert peer.conn.handshake_complete
    assert tasks_living() == baseline


async def test_a7_over_a_real_socket_each_chunk_gets_its_own_allowance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A7 on a plain socket, where the writer sends what the kernel takes per call: the
    peer reads 600 KiB (past two WRITE_CHUNKs of a large write) and then stops. spec §11
    (1.1): the write fails once the chunk in progress has had write_timeout + its size /
    MIN_FRAME_RATE, not the allowance of the whole write (10 s + 4 MiB / 16 KiB/s)."""
    a, b = trio.socket.socketpair()
    with a, b:
        peer = BarePeer(trio.SocketStream(b), Role.ACCEPTOR, HUGE)
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.handshake)
                async with open_flow_connection(trio.SocketStream(a), settings=QUIET) as conn:
                    stream = await conn.open_stream(codec="raw")

                    async def produce() -> None:
                        with contextlib.suppress(ConnectionLostError):
                            await stream.send_many([bytes(MIB)] * 8)  # large writes

                    nursery.start_soon(produce)
                    taken = 0
                    while taken < 600 * 1024:
                        taken += len(await peer.transport.receive_some(64 * 1024))
                    stopped = trio.current_time()  # the peer reads nothing more
                    with pytest.raises(ConnectionLostError) as info:
                        await stream.receive()
                    elapsed = trio.current_time() - stopped
                    assert info.value.error_code == ErrorCode.TIMEOUT
                    assert elapsed <= DEFAULT_WRITE_TIMEOUT + WRITE_CHUNK / MIN_FRAME_RATE
                nursery.cancel_scope.cancel()


# --- A9, A12: handlers under Rapid Reset and past max_streams ----------------------------------


async def serve_bare(handler: Any, settings: Settings, nursery: trio.Nursery) -> BarePeer:
    """A serve() connection (its accept loop and handlers) with a handshaken BarePeer."""
    a, b = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_connection, b, handler, {"settings": settings})
    peer = BarePeer(a, Role.INITIATOR, QUIET)
    await peer.handshake()
    return peer


async def test_a9_a_reset_stream_cancels_its_handler_and_handlers_stay_within_max_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A9 Rapid Reset at the Trio layer: 50 rounds of 10 streams opened, their handlers
    started (each would sleep forever) and the streams reset: every handler is cancelled,
    live tasks never exceed the connection's own plus max_streams (10); then 2000
    OPEN+RESET pairs in one burst end the connection with ENHANCE_YOUR_CALM."""
    started = finished = 0

    async def handler(stream: FlowStream) -> None:
        nonlocal started, finished
        started += 1
        try:
            await trio.sleep_forever()
        finally:
            finished += 1

    baseline = tasks_living()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            peer = await serve_bare(handler, Settings(max_streams=10, keepalive_ms=0), nursery)
            await trio.testing.wait_all_tasks_blocked()
            idle = tasks_living()
            most = idle
            for _ in range(50):
                ids = [peer.conn.open_stream() for _ in range(10)]
                await peer.flush()
                await trio.testing.wait_all_tasks_blocked()
                most = max(most, tasks_living())
                assert started - finished == 10
                for sid in ids:
                    peer.conn.reset_stream(sid)
                await peer.flush()
                await trio.testing.wait_all_tasks_blocked()
                assert started == finished  # cancelled, not left sleeping
            assert most == idle + 10
            flood = []
            for _ in range(2000):
                sid = peer.conn.open_stream()
                peer.conn.reset_stream(sid)
                flood.append(peer.conn.data_to_send())
            await peer.send_raw(b"".join(flood))
            await peer.read_until(lambda: peer.eof)
            assert peer.goaways()[-1].error_code == ErrorCode.ENHANCE_YOUR_CALM
            assert started == finished
    assert tasks_living() == baseline


async def test_a12_streams_past_max_streams_handlers_are_refused_until_one_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A12, spec §6.4: handlers that outlive their (closed) streams still count: with
    max_streams 3 handlers running, a 4th stream is refused with REFUSED_STREAM (safe to
    retry); once a handler returns, the next stream is served."""
    release = trio.Event()
    served: list[int] = []

    async def handler(stream: FlowStream) -> None:
        served.append(stream.stream_id)
        assert await stream.receive() == "hi"
        await stream.aclose()  # the stream is now closed both ways ...
        await release.wait()  # ... and the handler goes on working

    def outcome(sid: int) -> str | None:
        for e in peer.events:
            if isinstance(e, StreamEnded) and e.stream_id == sid:
                return "served"
            if isinstance(e, StreamReset) and e.stream_id == sid:
                return ErrorCode.describe(e.error_code)
        return None

    async def request() -> str | None:
        sid = peer.conn.open_stream()
        assert peer.conn.send_message(sid, msgpack.packb("hi"), end_stream=True)
        await peer.flush()
        await peer.read_until(lambda: outcome(sid) is not None)
        return outcome(sid)

    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            peer = await serve_bare(handler, Settings(max_streams=3, keepalive_ms=0), nursery)
            for _ in range(3):
                assert await request() == "served"
            await trio.testing.wait_all_tasks_blocked()
            assert len(served) == 3  # three handlers still running, no stream open
            assert await request() == "REFUSED_STREAM"
            assert len(served) == 3
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert await request() == "served"
            assert len(served) == 4
            nursery.cancel_scope.cancel()


# --- A17: both sides write and neither waits for the other -----------------------------------


async def test_a17_both_sides_echo_over_an_unbuffered_transport_without_deadlock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A17: over lockstep_stream_pair (no buffering at all), the client sends 4 MiB on 8
    streams while the server echoes every message back, with small windows; it all
    arrives, and a PING sent in the middle of the saturation is answered."""
    small = Settings(
        stream_bytes=64 * 1024,
        stream_messages=16,
        connection_bytes=256 * 1024,
        max_message_bytes=16 * 1024,
        keepalive_ms=0,
    )
    count, size = 64, 8 * 1024
    with trio.fail_after(HANG):
        async with (
            flow_pair(
                client={"settings": small, "codec": "raw"},
                server={"settings": small, "codec": "raw"},
                lockstep=True,
            ) as (client, server),
            trio.open_nursery() as nursery,
        ):

            async def echo_all() -> None:
                async with trio.open_nursery() as inner:
                    for _ in range(8):
                        stream = await server.accept_stream()
                        inner.start_soon(echo, stream)

            async def echo(stream: FlowStream) -> None:
                async for message in stream:
                    await stream.send(message)
                await stream.aclose()

            async def talk(index: int, results: dict[int, list[bytes]]) -> None:
                stream = await client.open_stream()
                got: list[bytes] = []

                async def read() -> None:
                    async for message in stream:
                        got.append(message)

                async with trio.open_nursery() as inner:
                    inner.start_soon(read)
                    for i in range(count):
                        await stream.send(bytes([index, i % 256]) * (size // 2))
                    await stream.aclose()
                results[index] = got

            nursery.start_soon(echo_all)
            results: dict[int, list[bytes]] = {}
            async with trio.open_nursery() as talkers:
                for index in range(8):
                    talkers.start_soon(talk, index, results)
                await trio.sleep(0)
                await client.ping()
                # spec §5.5, §9: PING is not flow controlled and both sides always read,
                # so the PONG came back while the streams were still saturated, long
                # before the 4 MiB were through.
                assert len(results) < 8
            assert len(results) == 8
            for index in range(8):
                assert results[index] == [
                    bytes([index, i % 256]) * (size // 2) for i in range(count)
                ]
            nursery.cancel_scope.cancel()


# --- A21: the peer dies mid-transfer, or resets the TCP connection ------------------------------


async def test_a21_a_peer_that_resets_tcp_mid_transfer_fails_every_pending_operation() -> None:
    """A21 over real TCP: 10 streams sending to a slow consumer; the server's socket is
    closed with RST (SO_LINGER 0). Every pending send and receive raises
    ConnectionLostError; each stream knows what it sent and what the peer reported
    consumed (``delivered``), which never exceeds what the peer's application really
    consumed: a message cut off on the wire is never reported delivered (spec §10.5)."""
    small = Settings(
        stream_messages=8, stream_bytes=64 * 1024, max_message_bytes=16 * 1024, keepalive_ms=0
    )
    consumed: dict[int, list[bytes]] = {}
    ready = trio.Event()
    server_transport: list[trio.SocketStream] = []

    async def run_server(listener: trio.SocketListener) -> None:
        transport = await listener.accept()
        server_transport.append(transport)
        try:
            async with (
                open_flow_connection(
                    transport, initiator=False, settings=small, codec="raw"
                ) as conn,
                trio.open_nursery() as nursery,
            ):
                for _ in range(10):
                    stream = await conn.accept_stream()
                    consumed[stream.stream_id] = []
                    nursery.start_soon(consume, stream)
        except (ConnectionLostError, trio.BrokenResourceError):
            pass

    async def consume(stream: FlowStream) -> None:
        with pytest.raises(trio.BrokenResourceError):
            while True:
                message = await stream.receive()
                assert message == bytes([stream.stream_id % 256]) * len(message)
                consumed[stream.stream_id].append(message)
                if all(len(v) >= 20 for v in consumed.values()) and len(consumed) == 10:
                    ready.set()
                await trio.sleep(0.001)

    errors: dict[str, list[ConnectionLostError]] = {"send": [], "receive": []}
    with trio.fail_after(20):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with listeners[0], trio.open_nursery() as nursery:
            nursery.start_soon(run_server, listeners[0])
            transport = await trio.open_tcp_stream("127.0.0.1", port)
            async with open_flow_connection(transport, codec="raw", settings=QUIET) as client:
                streams = [await client.open_stream() for _ in range(10)]

                async def produce(stream: FlowStream) -> None:
                    try:
                        for i in range(100_000):
                            await stream.send(bytes([stream.stream_id % 256]) * (1000 + i % 7))
                    except ConnectionLostError as exc:
                        errors["send"].append(exc)

                async def wait_reply(stream: FlowStream) -> None:
                    try:
                        await stream.receive()
                    except ConnectionLostError as exc:
                        errors["receive"].append(exc)

                async with trio.open_nursery() as inner:
                    for stream in streams:
                        inner.start_soon(produce, stream)
                        inner.start_soon(wait_reply, stream)
                    await ready.wait()
                    sock = server_transport[0].socket
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()  # RST, not FIN
                assert len(errors["send"]) == len(errors["receive"]) == 10
                # Each error names what its stream knows was delivered (spec §10.5).
                assert all(exc.delivered is not None for exc in errors["send"])
                for stream in streams:
                    stats = stream.statistics()
                    assert stats.delivered is not None
                    assert stats.delivered <= len(consumed[stream.stream_id]) <= stats.messages_sent
                    assert len(consumed[stream.stream_id]) >= 20
            nursery.cancel_scope.cancel()


# --- A22: graceful shutdown with a grace period ----------------------------------------------


async def test_a22_goaway_lets_open_streams_finish_and_a_stream_it_missed_is_retryable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A22, spec §10.4: the peer's GOAWAY names the last stream it processed; a stream we
    opened after it (in flight when the GOAWAY was sent) fails with a retryable error,
    while the stream it processed runs to its end; new opens are refused at once."""
    with trio.fail_after(HANG):
        async with bare_peer() as (conn, peer):
            first = await conn.open_stream()
            await first.send("request")
            await peer.read_until(lambda: peer.received(first.stream_id) == 1)
            late = await conn.open_stream()
            await late.send("too late")  # on the wire, not yet read by the peer
            peer.conn.close()  # GOAWAY(last_stream=first)
            await peer.flush()
            with pytest.raises(StreamResetError) as info:
                await late.receive()
            assert info.value.retryable
            assert info.value.error_code == ErrorCode.REFUSED_STREAM
            with pytest.raises(ConnectionLostError):
                await conn.open_stream()
            # The processed stream still works both ways, to its end.
            assert peer.conn.send_message(first.stream_id, msgpack.packb("reply"), end_stream=True)
            await peer.flush()
            assert await first.receive() == "reply"
            await first.aclose()
            await peer.read_until(lambda: peer.eof)
            assert not [e for e in peer.events if isinstance(e, StreamReset)]


async def test_serve_passes_limits_and_timeouts_to_every_connection() -> None:
    """serve() takes open_flow_connection's keywords: here a glitch budget of 5 glitches,
    spent by streams the client opens and at once resets ("Rapid Reset", spec §10.7.1)."""
    from flowproto import Limits
    from flowproto.trio import open_connection, serve

    async def handler(stream: FlowStream) -> None:
        await stream.send(await stream.receive())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(
                    serve,
                    handler,
                    0,
                    host="127.0.0.1",
                    limits=Limits(glitch_burst=5),
                    frame_timeout=1.0,
                    write_timeout=1.0,
                )
            )
            port = listeners[0].socket.getsockname()[1]
            async with open_connection("127.0.0.1", port) as conn:
                stream = await conn.open_stream()
                await stream.send("x")
                assert await stream.receive() == "x"
                with pytest.raises(ConnectionLostError) as info:
                    for _ in range(20):  # the budget refills 100/s: a few ms of slack
                        doomed = await conn.open_stream()
                        await doomed.send("y")
                        await doomed.reset()
                        await conn.ping()  # a round trip: the server has seen the RESET
                assert info.value.error_code == ErrorCode.ENHANCE_YOUR_CALM
            nursery.cancel_scope.cancel()
