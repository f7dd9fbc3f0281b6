"""Writes from the calling task (issue 13, latency): StreamLink.flush().

Over a plain socket, a send() when nothing is queued writes its frame from the sending
task, so the bytes are in the kernel when send() returns, without a scheduler round to
the writer task. A loop of sends still makes one write per yield, not one per message; a
write the kernel takes only in part hands the rest to the writer, byte for byte. Real
socket pairs; the peer's kernel buffer is read with MSG_PEEK on a duplicated descriptor,
which no task of the test can race with (nothing yields between send() and the peek).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from hypothesis import assume, given
from hypothesis import strategies as st
from test_trio import HANG

from flowproto.trio import FlowConnection, FlowStream, open_flow_connection
from flowproto.trio._write import unsent

KIB = 1024


def peek(sock: trio.socket.SocketType) -> bytes:
    """What the kernel holds unread on ``sock`` (b"" if nothing), without taking it."""
    dup = socket.socket(fileno=os.dup(sock.fileno()))
    try:
        return dup.recv(16 * 1024 * 1024, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""
    finally:
        dup.close()


@asynccontextmanager
async def socket_pair(
    buffer_size: int | None = None,
) -> AsyncIterator[tuple[FlowConnection, FlowConnection, trio.socket.SocketType]]:
    """(client, server, the server's socket) over a Unix socket pair."""
    a, b = trio.socket.socketpair()
    if buffer_size is not None:
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
    box: list[FlowConnection] = []
    ready = trio.Event()
    done = trio.Event()

    async def run_server() -> None:
        async with open_flow_connection(
            trio.SocketStream(b), initiator=False, codec="raw", close_grace=0
        ) as conn:
            box.append(conn)
            ready.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server)
        async with open_flow_connection(
            trio.SocketStream(a),
            codec="raw",
            close_grace=0,  # streams stay open: no wait
        ) as conn:
            await ready.wait()
            try:
                yield conn, box[0], b
            finally:
                done.set()


async def opened(
    client: FlowConnection, server: FlowConnection, server_sock: trio.socket.SocketType
) -> tuple[FlowStream, FlowStream]:
    """A stream both sides know, with nothing in flight and the server's reader waiting."""
    stream = await client.open_stream()
    await stream.send(b"warm-up")
    peer = await server.accept_stream()
    assert await peer.receive() == b"warm-up"
    await trio.testing.wait_all_tasks_blocked()  # the server's reader waits for bytes
    assert peek(server_sock) == b""
    return stream, peer


async def test_a_send_is_in_the_kernel_when_it_returns() -> None:
    async with socket_pair() as (client, server, server_sock):
        stream, peer = await opened(client, server, server_sock)
        await stream.send(b"ping")
        # No task ran since send() returned: only a write from send() itself put it there.
        assert peek(server_sock).endswith(b"ping")  # spec §7.1: the DATA frame's body
        assert await peer.receive() == b"ping"


async def test_a_loop_of_sends_writes_once_per_yield_not_once_per_message() -> None:
    async with socket_pair() as (client, server, server_sock):
        stream, peer = await opened(client, server, server_sock)
        for i in range(50):
            await stream.send(b"m%02d" % i)
        held = peek(server_sock)
        assert held.endswith(b"m00")  # the first went out at once; the rest wait together
        assert b"m01" not in held
        assert [await peer.receive() for _ in range(50)] == [b"m%02d" % i for i in range(50)]


async def test_a_partial_direct_write_hands_the_rest_to_the_writer_intact() -> None:
    payloads = [bytes([i]) * (200 * KIB + i) for i in range(1, 6)]
    async with socket_pair(buffer_size=8 * KIB) as (client, server, server_sock):
        stream, peer = await opened(client, server, server_sock)
        await stream.send(payloads[0])
        held = len(peek(server_sock))
        assert 0 < held < len(payloads[0])  # the kernel took a part from send() itself
        received: list[bytes] = []

        async def consume() -> None:
            for _ in payloads:
                received.append(await peer.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for payload in payloads[1:]:
                await stream.send(payload)
        assert received == payloads


async def test_ping_pong_over_a_socket_pair_delivers_every_reply_in_order() -> None:
    async with socket_pair() as (client, server, _):
        stream = await client.open_stream()

        async def echo() -> None:
            peer = await server.accept_stream()
            async for message in peer:
                await peer.send(message[::-1])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            for i in range(300):
                await stream.send(b"%d-abc" % i)
                assert await stream.receive() == (b"%d-abc" % i)[::-1]
            await stream.aclose()


# --- vectored writes on a plain socket (the writer's sendmsg path) ----------------------------


@given(
    pieces=st.lists(st.binary(max_size=40), min_size=1, max_size=12),
    data=st.data(),
)
def test_what_is_left_after_a_partial_vectored_write_is_the_rest_of_the_bytes(
    pieces: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(pieces)
    assume(whole)
    sent = data.draw(st.integers(0, len(whole) - 1))
    rest = unsent(list(pieces), sent)
    assert b"".join(bytes(p) for p in rest) == whole[sent:]


async def test_large_and_small_messages_over_a_socket_arrive_intact_through_slow_reads() -> None:
    """The writer's vectored path: 1 MiB messages (views of their payloads, never joined)
    between small ones, over a socket whose buffer is far smaller: most writes are
    partial and go on from the middle of a piece."""
    payloads = [bytes([i % 251]) * (1 << 20) if i % 3 == 0 else b"small %d" % i for i in range(12)]
    a, b = trio.socket.socketpair()
    with a, b, trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def receiver() -> None:
                async with open_flow_connection(
                    trio.SocketStream(b), initiator=False, codec="raw"
                ) as conn:
                    stream = await conn.accept_stream()
                    async for message in stream:
                        got.append(message)
                    await stream.aclose()

            nursery.start_soon(receiver)
            async with open_flow_connection(trio.SocketStream(a), codec="raw") as conn:
                stream = await conn.open_stream()
                await stream.send_many(payloads)
                await stream.aclose()
    assert got == payloads
