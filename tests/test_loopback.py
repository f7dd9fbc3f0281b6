"""flowproto over real sockets: TCP and TLS on 127.0.0.1 (port 0), and a Unix socket.

Each server is started with ``nursery.start(serve, ...)`` and each test runs inside
``trio.fail_after``, so a hang is a failure, not a stuck run. The clock is real here:
the tests wait for nothing but the peer.
"""

from __future__ import annotations

import hashlib
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from flowproto import ErrorCode, FrameDecoder, GoAwayFrame, Settings
from flowproto.trio import (
    ConnectionLostError,
    FlowConnection,
    FlowStream,
    HandshakeTimeout,
    open_connection,
    open_flow_connection,
    open_unix_connection,
    serve,
    serve_unix,
)

#: Real seconds any one test may take.
LIMIT = 20.0

Handler = Callable[[FlowStream], Awaitable[None]]


async def echo(stream: FlowStream) -> None:
    """Send every message back, in order, until the peer half-closes.

    Servers of echo use the raw codec, so they return each message's bytes unchanged
    whatever codec the client's stream uses.
    """
    async for message in stream:
        await stream.send(message)


def port_of(listeners: list[Any]) -> int:
    # serve() with an ssl_context hands back trio.SSLListeners around the TCP listeners.
    listener = getattr(listeners[0], "transport_listener", listeners[0])
    port: int = listener.socket.getsockname()[1]
    return port


@asynccontextmanager
async def tcp_server(handler: Handler = echo, **kwargs: Any) -> AsyncIterator[int]:
    """Serve on 127.0.0.1 at a free port; yields the port; stops the server on exit."""
    kwargs.setdefault("codec", "raw")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve, handler, 0, host="127.0.0.1", **kwargs))
        yield port_of(listeners)
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)  # an IP SAN
    return context


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def check_basics(conn: FlowConnection) -> None:
    """Objects, raw bytes, a half-close and a ping over an echo server."""
    stream = await conn.open_stream()
    objects = [None, 1, "two", b"three", [4, {"five": 5.5}]]
    for obj in objects:
        await stream.send(obj)
    await stream.aclose()
    assert [m async for m in stream] == objects

    raw = await conn.open_stream(codec="raw")
    await raw.send_many([b"", b"\x00" * 100_000, b"end"])  # 100000 > max_frame_bytes
    assert await raw.receive_many(1) == [b""]
    assert await raw.receive() == b"\x00" * 100_000
    assert await raw.receive() == b"end"
    await raw.aclose()
    with pytest.raises(trio.EndOfChannel):
        await raw.receive()

    rtt = await conn.ping()
    assert 0 < rtt < 5
    stats = conn.statistics()
    assert stats.state == "open"
    assert stats.messages_sent == stats.messages_received == len(objects) + 3
    assert stats.bytes_sent == stats.bytes_received > 100_000


# --- TCP, TLS, Unix ---------------------------------------------------------------------


async def test_tcp_basics() -> None:
    with trio.fail_after(LIMIT):
        async with tcp_server() as port, open_connection("127.0.0.1", port) as conn:
            await check_basics(conn)
            closing = trio.current_time()
        # Closing is GOAWAY both ways, not a wait for the close grace (spec §10.4).
        assert trio.current_time() - closing < 1.0


async def test_tls_basics_with_a_trusted_certificate(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            tcp_server(ssl_context=server_ssl) as port,
            open_connection("127.0.0.1", port, ssl_context=client_ssl) as conn,
        ):
            assert isinstance(conn.transport, trio.SSLStream)
            await check_basics(conn)


async def test_tls_client_that_does_not_trust_the_server_cannot_connect(
    server_ssl: ssl.SSLContext,
) -> None:
    untrusting = ssl.create_default_context()
    trustme.CA().configure_trust(untrusting)  # some other CA
    with trio.fail_after(LIMIT):
        async with tcp_server(ssl_context=server_ssl) as port:
            with pytest.raises(ConnectionLostError):
                async with open_connection("127.0.0.1", port, ssl_context=untrusting):
                    pytest.fail("the certificate should not verify")


async def test_unix_socket_basics(tmp_path: Path) -> None:
    path = str(tmp_path / "fp.sock")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_unix, echo, path, codec="raw"))
            async with open_unix_connection(path) as conn:
                await check_basics(conn)
            nursery.cancel_scope.cancel()


# --- a large transfer --------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
async def test_five_megabytes_of_raw_chunks_arrive_byte_identical(
    transport: str,
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    """5 MB echoed in chunks of random sizes, sent and received at once.

    Windows smaller than the transfer in both directions make credit go round many
    times (spec §8.5, §8.6); the echo is byte-identical and in the same chunks.
    """
    rng = random.Random(5)
    total = 5 * 1024 * 1024
    chunks: list[bytes] = []
    size = 0
    while size < total:
        n = min(rng.choice([1, 100, 4096, 65536, 200_000]), total - size)
        chunks.append(rng.randbytes(n))
        size += n
    settings = Settings(
        stream_bytes=512 * 1024,
        stream_messages=64,
        connection_bytes=1024 * 1024,
        max_message_bytes=256 * 1024,
    )
    kwargs: dict[str, Any] = {"settings": settings, "codec": "raw"}
    path = str(tmp_path / "big.sock")

    async with trio.open_nursery() as nursery:
        if transport == "unix":
            await nursery.start(partial(serve_unix, echo, path, **kwargs))
            connect = open_unix_connection(path, **kwargs)
        else:
            ssl_kwargs = {"ssl_context": server_ssl} if transport == "tls" else {}
            listeners = await nursery.start(
                partial(serve, echo, 0, host="127.0.0.1", **ssl_kwargs, **kwargs)
            )
            client_kwargs = {"ssl_context": client_ssl} if transport == "tls" else {}
            connect = open_connection("127.0.0.1", port_of(listeners), **client_kwargs, **kwargs)
        with trio.fail_after(LIMIT):
            async with connect as conn:
                stream = await conn.open_stream()

                async def send_all() -> None:
                    for chunk in chunks:
                        await stream.send(chunk)
                    await stream.aclose()

                received: list[bytes] = []
                # Auto-tuning (on by default, spec §8.9) moves the receive window, and only
                # in this stream's releases: all of them in this loop, so reading it after
                # each finds the largest window granted so far, which bounds what is held.
                largest = (settings.stream_bytes, settings.stream_messages)
                async with trio.open_nursery() as inner:
                    inner.start_soon(send_all)
                    async for chunk in stream:
                        received.append(chunk)
                        stats = stream.statistics()
                        largest = (
                            max(largest[0], stats.window_bytes),
                            max(largest[1], stats.window_messages),
                        )
                        assert stats.buffered_bytes <= largest[0]
                        assert stats.buffered_messages <= largest[1]
                stats = stream.statistics()  # the core's exact peak, not a sample (spec §8.4)
                assert stats.peak_buffered_bytes <= largest[0]
                assert stats.peak_buffered_messages <= largest[1]
                assert len(received) == len(chunks)
                assert received == chunks
                joined = b"".join(received)
                assert len(joined) == total
                assert hashlib.sha256(joined).digest() == hashlib.sha256(b"".join(chunks)).digest()
                assert stream.statistics().bytes_sent == total
        nursery.cancel_scope.cancel()


# --- failures -----------------------------------------------------------------------------


async def test_server_survives_a_client_that_is_not_flowproto() -> None:
    """spec §3.1: a bad preface is PROTOCOL_ERROR for that connection, not the server."""
    with trio.fail_after(LIMIT):
        async with tcp_server() as port:
            sock = await trio.open_tcp_stream("127.0.0.1", port)
            await sock.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := await sock.receive_some():
                data += chunk
            await sock.aclose()
            frames = FrameDecoder().feed(data[10:])  # after the server's preface
            goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
            assert [g.code for g in goaways] == [ErrorCode.PROTOCOL_ERROR]
            async with open_connection("127.0.0.1", port) as conn:
                await check_basics(conn)


async def test_server_ends_a_silent_connection_after_the_handshake_timeout() -> None:
    """spec §11: no preface and HELLO in time is a connection error TIMEOUT."""
    with trio.fail_after(LIMIT):
        async with tcp_server(handshake_timeout=0.2) as port:
            sock = await trio.open_tcp_stream("127.0.0.1", port)
            start = trio.current_time()
            data = b""
            while chunk := await sock.receive_some():  # ends when the server closes
                data += chunk
            assert trio.current_time() - start < 2.0
            await sock.aclose()
            frames = FrameDecoder().feed(data[10:])
            assert [type(f).__name__ for f in frames] == ["HelloFrame", "GoAwayFrame"]
            assert frames[-1].code == ErrorCode.TIMEOUT
            async with open_connection("127.0.0.1", port) as conn:
                await check_basics(conn)


async def test_client_handshake_timeout_against_a_silent_server() -> None:
    with trio.fail_after(LIMIT):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listeners[0]:
            start = trio.current_time()
            with pytest.raises(HandshakeTimeout):
                async with open_connection("127.0.0.1", port_of(listeners), handshake_timeout=0.2):
                    pytest.fail("no handshake")
            assert trio.current_time() - start < 2.0


async def test_client_killed_mid_transfer_leaves_the_server_serving() -> None:
    seen: list[BaseException] = []
    started = trio.Event()

    async def echo_and_note(stream: FlowStream) -> None:
        started.set()
        try:
            await echo(stream)
        except ConnectionLostError as exc:
            seen.append(exc)
            raise

    with trio.fail_after(LIMIT):
        async with tcp_server(echo_and_note) as port:
            async with open_connection("127.0.0.1", port, codec="raw") as conn:
                stream = await conn.open_stream()
                await stream.send(b"y" * 1000)
                await started.wait()
                for _ in range(200):
                    await stream.send(b"y" * 1000)
                await trio.aclose_forcefully(conn.transport)  # the client dies
                with pytest.raises(ConnectionLostError):
                    while True:
                        await stream.receive()
            while not seen:  # the handler sees the loss, and serve() carries on
                await trio.sleep(0.01)
            assert isinstance(seen[0], ConnectionLostError)
            async with open_connection("127.0.0.1", port) as conn:
                await check_basics(conn)


async def test_server_killed_mid_transfer_fails_the_client_promptly() -> None:
    """spec §10.6: EOF without GOAWAY; messages that arrived are read, then the loss."""
    with trio.fail_after(LIMIT):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = port_of(listeners)

        async def server() -> None:
            transport = await listeners[0].accept()
            async with open_flow_connection(transport, initiator=False, codec="raw") as conn:
                stream = await conn.accept_stream()
                assert await stream.receive() == b"hello"
                await stream.send_many([b"%d" % i for i in range(10)])
                # Frames arrive in order: once the client has this, it has the ten.
                marker = await conn.open_stream()
                await marker.send(b"marker")
                assert await stream.receive() == b"done"
                await trio.aclose_forcefully(transport)  # the server dies

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            async with open_connection("127.0.0.1", port, codec="raw") as conn:
                stream = await conn.open_stream()
                await stream.send(b"hello")
                marker = await conn.accept_stream()
                assert await marker.receive() == b"marker"
                assert stream.statistics().buffered_messages == 10

                async def blocked_send() -> None:
                    with pytest.raises(ConnectionLostError):
                        await stream.send(b"done")
                        for _ in range(10_000):  # past any credit: it has to wait
                            await stream.send(b"z" * 1000)

                async with trio.open_nursery() as inner:
                    inner.start_soon(blocked_send)
                    with pytest.raises(ConnectionLostError) as info:
                        await marker.receive()  # waits until the loss
                assert info.value.error_code is None
                # What arrived before the loss is still readable, then the loss again.
                assert await stream.receive_many() == [b"%d" % i for i in range(10)]
                with pytest.raises(ConnectionLostError):
                    await stream.receive()
        await listeners[0].aclose()
