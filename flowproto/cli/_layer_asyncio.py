"""The asyncio side of the commands' helpers: :data:`ASYNCIO` (see ``_layer``), the
``--metrics-port`` responder on ``asyncio.start_server``, and the stop signals."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Final, TypeVar

from flowproto.asyncio import EndOfStream

from ._metrics import (
    REQUEST_LIMIT,
    REQUEST_SECONDS,
    announce_metrics,
    metrics_reply,
    prometheus_text,
)
from ._signals import STOP_SIGNALS

T = TypeVar("T")


class AsyncioLayer:
    """:class:`flowproto.cli._layer.Layer` on asyncio and ``flowproto.asyncio``."""

    name = "asyncio"
    end_of_stream: type[Exception] = EndOfStream

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self.now()))

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def until(self, deadline: float, work: Callable[[], Awaitable[None]]) -> bool:
        if deadline == float("inf"):
            await work()
            return True
        try:
            await asyncio.wait_for(work(), max(0.0, deadline - self.now()))
        except asyncio.TimeoutError:
            return False
        return True


ASYNCIO: Final = AsyncioLayer()


async def serve_metrics(
    host: str,
    port: int,
    snapshot: Callable[[], dict[str, Any]],
    *,
    per_connection: bool = False,
) -> asyncio.Server:
    """Serve :func:`flowproto.cli._metrics.metrics_reply` on ``host:port``, listening when
    this returns; close the server to stop."""
    prometheus_text({"connections": []})  # fail early if prometheus_client is broken

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = bytearray()

        async def read() -> None:
            while b"\r\n\r\n" not in request and len(request) < REQUEST_LIMIT:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                request.extend(chunk)

        try:
            with suppress(asyncio.TimeoutError):  # answered as far as it came, as on Trio
                await asyncio.wait_for(read(), REQUEST_SECONDS)
            writer.write(metrics_reply(bytes(request), snapshot, per_connection))
            await asyncio.wait_for(writer.drain(), REQUEST_SECONDS)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host, port)
    announce_metrics(host, server.sockets[0].getsockname()[1])
    return server


@contextmanager
def stop_signals(stop: Callable[[str], None]) -> Iterator[None]:
    """Call ``stop(name)`` on the first of :data:`STOP_SIGNALS` (Ctrl-C, SIGTERM,
    SIGHUP), instead of raising KeyboardInterrupt; nothing off the main thread, where
    signals never arrive (tests run commands there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signal.Signals(signum).name)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
