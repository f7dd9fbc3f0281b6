"""Caps on what peers can make a server spend (issue 12): streams, connections, descriptors,
log lines."""

from __future__ import annotations

import errno
import logging
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from trio_helpers import flow_pair

from flowproto import ErrorCode, RateLimitedLog, Settings
from flowproto.trio import (
    ConnectionLostError,
    FlowStream,
    StreamLimitError,
    StreamResetError,
    open_connection,
    serve,
    serve_listeners,
)


def test_a_rate_limited_log_writes_one_line_per_key_and_interval() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test_serve_limits.rate")
    logger.addHandler(Keep())
    logger.propagate = False
    log = RateLimitedLog(logger, interval=10.0, max_keys=2)
    assert log.warning("a", 0.0, "peer %s misbehaved", "a")
    for t in range(1, 10):
        assert not log.warning("a", float(t), "peer %s misbehaved", "a")
    assert log.warning("b", 5.0, "peer %s misbehaved", "b")  # another key: its own line
    assert log.warning("a", 10.0, "peer %s misbehaved", "a")
    assert records == [
        "peer a misbehaved",
        "peer b misbehaved",
        "peer a misbehaved (9 more like this in the last 10 s)",
    ]
    log.warning("c", 11.0, "c")  # a third key: the oldest is forgotten, memory bounded
    assert len(log._last) == 2


@pytest.mark.trio
async def test_open_stream_can_fail_fast_at_the_peers_stream_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with flow_pair(server={"settings": Settings(max_streams=1)}) as (client, server):
        first = await client.open_stream()
        with pytest.raises(StreamLimitError, match="allows 1 concurrent streams"):
            await client.open_stream(wait=False)
        assert client.statistics().blocked_on_stream_limit_seconds == 0.0

        async def close_later() -> None:
            peer = await server.accept_stream()
            await trio.sleep(3)
            await first.aclose()
            await peer.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_later)
            second = await client.open_stream()  # waits, visibly
        assert second.stream_id != first.stream_id
        assert client.statistics().blocked_on_stream_limit_seconds == pytest.approx(3, abs=0.1)


async def _echo(stream: FlowStream) -> None:
    async for message in stream:
        await stream.send(message)


@pytest.mark.trio
async def test_a_connection_over_max_connections_is_refused_as_overloaded() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(serve, _echo, 0, host="127.0.0.1", max_connections=1)
            )
            port = listeners[0].socket.getsockname()[1]
            async with open_connection("127.0.0.1", port) as first:
                stream = await first.open_stream()
                await stream.send("hi")
                assert await stream.receive() == "hi"
                with pytest.raises(ConnectionLostError) as info:
                    async with open_connection("127.0.0.1", port) as second:
                        await second.ping()
                assert info.value.error_code == ErrorCode.OVERLOADED
                assert info.value.retryable and info.value.retry_after == 1.0
                await stream.send("still served")
                assert await stream.receive() == "still served"
            nursery.cancel_scope.cancel()


class _Exhausted(trio.abc.Listener[trio.abc.Stream]):
    """A listener out of descriptors for its first ``failures`` accepts, then silent."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[float] = []
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        if len(self.attempts) <= self.failures:
            raise OSError(errno.EMFILE, "Too many open files")
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.trio
async def test_out_of_descriptors_backs_off_and_logs_one_line_per_interval(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    listener = _Exhausted(failures=40)
    caplog.set_level(logging.WARNING, logger="flowproto")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_listeners, _echo, [listener]))
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert len(listener.attempts) == 41  # every failure was retried, none crashed the server
    gaps = [b - a for a, b in zip(listener.attempts, listener.attempts[1:], strict=False)]
    assert gaps[0] == pytest.approx(0.01) and max(gaps) == pytest.approx(1.0)  # backoff, capped
    lines = [r.getMessage() for r in caplog.records if "accept failed" in r.getMessage()]
    assert 1 < len(lines) <= 1 + 40 // 10  # one per 10 s, not one per failure
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert listener.closed  # the listeners close on exit


@pytest.mark.trio
async def test_a_failing_handler_logs_once_per_interval_not_per_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(stream: FlowStream) -> None:
        raise RuntimeError("bug")

    caplog.set_level(logging.WARNING, logger="flowproto")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners: list[Any] = await nursery.start(partial(serve, broken, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with open_connection("127.0.0.1", port) as conn:
                for _ in range(20):
                    stream = await conn.open_stream()
                    await stream.send("x")
                    with pytest.raises(StreamResetError):  # the handler failed: INTERNAL_ERROR
                        await stream.receive()
            nursery.cancel_scope.cancel()
    lines = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(lines) == 1
