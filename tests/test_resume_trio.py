"""Sessions over real sockets (spec §15): a Trio client and server through a proxy that
cuts the TCP connection over and over. Nothing is lost, nothing arrives twice, the
streams go on, and what the sender keeps stays within the window (spec §15.5)."""

from __future__ import annotations

import random
import secrets
from typing import Any

import pytest
import trio

from flowproto import (
    PREFACE,
    ErrorCode,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    Reconnect,
    Settings,
)
from flowproto._session_store import MAX_FAILED_RESUMES
from flowproto.bench.cutproxy import CutProxy
from flowproto.trio import (
    ConnectionLostError,
    FlowStream,
    open_connection,
    open_flow_connection,
    serve,
)

#: Small windows: retention is bounded by them, and a cut loses at most about that much.
WINDOW = Settings(
    stream_bytes=256 * 1024,
    stream_messages=256,
    connection_bytes=1 << 20,
    max_message_bytes=64 * 1024,
)
FAST = Reconnect(deadline=10.0, initial_delay=0.01, max_delay=0.2)


def numbered(i: int, size: int) -> bytes:
    return (b"%08d:" % i + bytes([i % 251]) * size)[: max(size, 9)]


async def echo(stream: FlowStream) -> None:
    async for message in stream:
        await stream.send(message)


async def start_server(nursery: trio.Nursery, handler: Any, **kwargs: Any) -> int:
    listeners = await nursery.start(
        lambda task_status: serve(
            handler,
            0,
            host="127.0.0.1",
            codec="raw",
            settings=WINDOW,
            autotune=False,
            task_status=task_status,
            **kwargs,
        )
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


@pytest.mark.parametrize("half_open", [False, True], ids=["both-sides-cut", "server-half-open"])
async def test_an_echo_through_a_proxy_cutting_every_100_kib_loses_and_repeats_nothing(
    half_open: bool,
) -> None:
    """spec §15.8 on real sockets: about 3 MB each way through a proxy that cuts every
    100 KiB, alternately with FIN and RST (and, half-open, leaving the server's side
    open): every message comes back exactly once, in order."""
    rng = random.Random(1)
    sizes = [rng.choice([1, 100, 1000, 20_000, rng.randint(0, 60_000)]) for _ in range(300)]
    sent = [numbered(i, size) for i, size in enumerate(sizes)]
    echoed: list[bytes] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, echo, resume_timeout=10.0)
            proxy = CutProxy(("127.0.0.1", port), 100 * 1024, half_open=half_open)
            proxy_port = await nursery.start(proxy.serve)
            async with open_connection(
                "127.0.0.1",
                proxy_port,
                reconnect=FAST,
                codec="raw",
                settings=WINDOW,
                autotune=False,
            ) as conn:
                stream = await conn.open_stream()

                async def read_back() -> None:
                    async for message in stream:
                        echoed.append(message)

                async with trio.open_nursery() as inner:
                    inner.start_soon(read_back)
                    for message in sent:
                        await stream.send(message)
                    await stream.aclose()
                stats = conn.statistics()
            nursery.cancel_scope.cancel()
    assert echoed == sent
    assert proxy.cuts >= 20
    assert stats.reconnects >= 20 and stats.resumed_sessions == stats.reconnects
    # spec §15.5: one stream, so what is kept is at most its window
    assert 0 < stats.retained_bytes_peak <= WINDOW.stream_bytes


async def test_a_stale_or_guessed_token_gets_session_unknown_and_disturbs_nothing() -> None:
    """spec §15.6, §15.9: a resumption with a token the server does not keep is refused
    with GOAWAY(SESSION_UNKNOWN); a session of another client goes on undisturbed."""
    got: list[bytes] = []

    async def collect(stream: FlowStream) -> None:
        async for message in stream:
            got.append(message)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, collect, resume_timeout=10.0)
            async with open_connection(
                "127.0.0.1", port, reconnect=FAST, codec="raw", settings=WINDOW
            ) as conn:
                stream = await conn.open_stream()
                await stream.send(b"before")
                # spec §15.9: ten guesses from one address are refused one by one; past
                # them the address is answered ENHANCE_YOUR_CALM without a lookup.
                codes = [await guess(port) for _ in range(MAX_FAILED_RESUMES + 1)]
                assert codes == [ErrorCode.SESSION_UNKNOWN] * MAX_FAILED_RESUMES + [
                    ErrorCode.ENHANCE_YOUR_CALM
                ]
                await stream.send(b"after")
                await stream.aclose()
                await trio.testing.wait_all_tasks_blocked()
                assert conn.statistics().reconnects == 0
            nursery.cancel_scope.cancel()
    assert got == [b"before", b"after"]


async def guess(port: int) -> int:
    """Resume a session with a random token; the code of the GOAWAY that answers."""
    thief = await trio.open_tcp_stream("127.0.0.1", port)
    hello = HelloFrame(Settings(), resume_token=secrets.token_bytes(16))
    await thief.send_all(PREFACE + hello.encode())
    wire = b""
    while True:
        data = await thief.receive_some(65536)
        if not data:
            break
        wire += data
    await thief.aclose()
    frames = FrameDecoder(session=True).feed(wire[len(PREFACE) :])
    (goaway,) = [f for f in frames if isinstance(f, GoAwayFrame)]
    return goaway.code


async def test_past_the_reconnect_deadline_send_fails_with_what_was_delivered() -> None:
    """spec §15.4, §15.6: when no new transport comes within the deadline, the stream
    fails with the count its peer reported consumed."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, echo, resume_timeout=10.0)
            proxy = CutProxy(("127.0.0.1", port), 1 << 40)
            proxy_port = await nursery.start(proxy.serve)
            async with open_connection(
                "127.0.0.1",
                proxy_port,
                reconnect=Reconnect(deadline=0.5, initial_delay=0.05, max_delay=0.1),
                codec="raw",
            ) as conn:
                stream = await conn.open_stream()
                await stream.send(b"one")
                assert await stream.receive() == b"one"
                proxy.accepting = False  # the peer is unreachable from now on
                proxy.cut_now()
                with pytest.raises(ConnectionLostError) as info:
                    for _ in range(1000):
                        await stream.send(b"x" * 1000)
                assert "not resumed within 0.5 s" in str(info.value)
                # only what the server reported consumed: no report came yet, or "one"
                assert info.value.delivered in (None, 0, 1)
            nursery.cancel_scope.cancel()


async def test_a_connect_attempt_that_hangs_is_given_up_for_the_next() -> None:
    """A SYN sent while the path was down can hang in TCP's own backoff long after the
    path is back: Reconnect.attempt_timeout gives each attempt up for a fresh one, within
    the deadline."""
    attempts: list[str] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, echo, resume_timeout=10.0)
            proxy = CutProxy(("127.0.0.1", port), 1 << 40)
            proxy_port = await nursery.start(proxy.serve)

            async def connect() -> trio.abc.Stream:
                if len(attempts) == 1:  # the first reconnect attempt: it never completes
                    attempts.append("hung")
                    await trio.sleep_forever()
                attempts.append("connected")
                return await trio.open_tcp_stream("127.0.0.1", proxy_port)

            policy = Reconnect(deadline=10.0, initial_delay=0.05, attempt_timeout=0.3)
            async with open_flow_connection(
                await connect(), initiator=True, connect=connect, reconnect=policy, codec="raw"
            ) as conn:
                stream = await conn.open_stream()
                await stream.send(b"one")
                assert await stream.receive() == b"one"
                proxy.cut_now()
                await stream.send(b"two")
                assert await stream.receive() == b"two"
                assert attempts == ["connected", "hung", "connected"]
                assert conn.statistics().reconnects == 1
            nursery.cancel_scope.cancel()


async def test_aclose_between_transports_ends_the_session_at_once() -> None:
    """Closing while the transport is lost (spec §15.4): nobody to say GOAWAY to, so the
    connection ends at once (not at the reconnect deadline), says this side closed it, is
    no longer resumable, and makes no further attempt."""
    attempts = 0
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, echo, resume_timeout=10.0)
            proxy = CutProxy(("127.0.0.1", port), 1 << 40)
            proxy_port = await nursery.start(proxy.serve)
            reconnecting = trio.Event()

            async def connect() -> trio.abc.Stream:
                nonlocal attempts
                attempts += 1
                if attempts > 1:  # every reconnect attempt hangs: the path is down
                    reconnecting.set()
                    await trio.sleep_forever()
                return await trio.open_tcp_stream("127.0.0.1", proxy_port)

            policy = Reconnect(deadline=10.0, initial_delay=0.05, attempt_timeout=0.2)
            async with open_flow_connection(
                await connect(), initiator=True, connect=connect, reconnect=policy, codec="raw"
            ) as conn:
                stream = await conn.open_stream()
                await stream.send(b"one")
                assert await stream.receive() == b"one"
                proxy.cut_now()
                await reconnecting.wait()
                started = trio.current_time()
                await conn.aclose()
                assert trio.current_time() - started < 3.0  # not the 10 s deadline
                assert conn.closed and not conn.resumable
                assert "closed by this side" in str(conn.close_reason)
                made = attempts
                await trio.sleep(0.5)  # several attempt timeouts of the policy
                assert attempts == made  # it tried no more
            nursery.cancel_scope.cancel()


def test_a_reconnect_attempt_ends_at_its_timeout_or_the_deadline() -> None:
    policy = Reconnect(deadline=60.0, attempt_timeout=10.0)
    assert policy.attempt_deadline(100.0, 160.0) == 110.0
    assert policy.attempt_deadline(155.0, 160.0) == 160.0
    with pytest.raises(ValueError, match="attempt_timeout"):
        Reconnect(attempt_timeout=0)


async def test_a_server_forgets_a_session_after_its_resume_timeout() -> None:
    """spec §15.4: the acceptor keeps a session without transport for resume_timeout,
    then its streams fail."""
    failures: list[BaseException] = []
    arrived = trio.Event()
    failed = trio.Event()

    async def hold(stream: FlowStream) -> None:
        try:
            await stream.receive()
            arrived.set()
            await stream.receive()
        except ConnectionLostError as exc:
            failures.append(exc)
            failed.set()
            raise

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, hold, resume_timeout=0.3)
            proxy = CutProxy(("127.0.0.1", port), 1 << 40)
            proxy_port = await nursery.start(proxy.serve)
            async with trio.open_nursery() as client:

                async def run_client() -> None:
                    with pytest.raises(ConnectionLostError):
                        async with open_connection(
                            "127.0.0.1",
                            proxy_port,
                            reconnect=Reconnect(deadline=2.0, initial_delay=0.05),
                            codec="raw",
                        ) as conn:
                            stream = await conn.open_stream()
                            await stream.send(b"one")
                            await arrived.wait()
                            proxy.accepting = False
                            proxy.cut_now()
                            await conn.ping()

                client.start_soon(run_client)
            await failed.wait()
            nursery.cancel_scope.cancel()
    assert "did not resume the session within 0.3 s" in str(failures[0])
