"""The Trio side of the commands' helpers: :data:`TRIO` (see ``_layer``) and the
``--metrics-port`` responder on Trio's listeners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import trio

from ._metrics import (
    REQUEST_LIMIT,
    REQUEST_SECONDS,
    announce_metrics,
    metrics_reply,
    prometheus_text,
)

T = TypeVar("T")


class TrioLayer:
    """:class:`flowproto.cli._layer.Layer` on Trio and ``flowproto.trio``."""

    name = "trio"
    end_of_stream: type[Exception] = trio.EndOfChannel

    def now(self) -> float:
        return trio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args)

    async def until(self, deadline: float, work: Callable[[], Awaitable[None]]) -> bool:
        with trio.move_on_at(deadline) as scope:
            await work()
        return not scope.cancelled_caught


TRIO: Final = TrioLayer()


async def serve_metrics(
    host: str,
    port: int,
    snapshot: Callable[[], dict[str, Any]],
    *,
    per_connection: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve :func:`flowproto.cli._metrics.metrics_reply` on ``host:port``; reports the port."""
    prometheus_text({"connections": []})  # fail early if prometheus_client is broken

    async def answer(stream: trio.SocketStream) -> None:
        request = b""
        with trio.move_on_after(REQUEST_SECONDS):
            while b"\r\n\r\n" not in request and len(request) < REQUEST_LIMIT:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                request += chunk
        try:
            with trio.move_on_after(REQUEST_SECONDS):
                await stream.send_all(metrics_reply(request, snapshot, per_connection))
        except trio.BrokenResourceError:
            pass
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    announce_metrics(host, bound)
    task_status.started(bound)
    await trio.serve_listeners(answer, listeners)
