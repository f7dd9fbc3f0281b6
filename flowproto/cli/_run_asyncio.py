"""``send`` and ``receive`` on the asyncio layer (``--backend asyncio``).

Thin runs over ``flowproto.asyncio``'s public API, for the options that the commands
check are supported there (:data:`SEND_UNSUPPORTED`, :data:`RECEIVE_UNSUPPORTED` name
the others): generated messages over one or more streams, and a consumer server with
fixed or tuned windows, an optional delay per message, ``--count`` and ``--once``. Each
returns the same summary dict (the same JSON field names) as its Trio run, so the
commands print it the same way. :func:`run_asyncio` is :func:`run_trio`'s twin.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, Final

import click

from flowproto import StreamResetError
from flowproto import asyncio as fa

from ._constants import BATCH_MESSAGES, CLOSE_GRACE, TIMESTAMP_BYTES
from ._errors import EXPECTED_ERRORS, CliError, describe
from ._printing import format_address, summary_rate
from ._progress import eprint
from ._run_receive import ReceiveOptions
from ._run_send import SendOptions

__all__ = [
    "RECEIVE_UNSUPPORTED",
    "SEND_UNSUPPORTED",
    "receive_asyncio",
    "run_asyncio",
    "send_asyncio",
]

#: ``send`` options the asyncio run does not implement (yet).
SEND_UNSUPPORTED: Final = (
    "--input",
    "--duration",
    "--rate",
    "--pace",
    "--metrics-port",
    "--json-lines",
)
#: ``receive`` options the asyncio run does not implement (yet).
RECEIVE_UNSUPPORTED: Final = (
    "--rate",
    "--output",
    "--output-dir",
    "--fsync",
    "--latency",
    "--memory-budget",
    "--metrics-port",
    "--json-lines",
)


def refuse_unsupported(used: dict[str, bool]) -> None:
    """A usage error naming the options given that ``--backend asyncio`` lacks."""
    given = [name for name, on in used.items() if on]
    if given:
        raise click.UsageError(
            f"--backend asyncio does not support {', '.join(given)} (use --backend trio)"
        )


def run_asyncio(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """Run ``fn(*args)`` under ``asyncio.run``; expected failures become one line and
    exit 1, Ctrl-C exits 130."""
    ctx = click.get_current_context()
    try:
        return asyncio.run(fn(*args))
    except KeyboardInterrupt:
        click.echo("flowproto: interrupted", err=True)
        ctx.exit(130)
    except EXPECTED_ERRORS as exc:
        click.echo(f"flowproto: error: {describe(exc)}", err=True)
        ctx.exit(1)


# --- send ----------------------------------------------------------------------------------


def _share(total: int | None, parts: int, index: int) -> int | None:
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


async def send_asyncio(opts: SendOptions) -> dict[str, Any]:
    """Connect, send ``opts.count`` generated messages over ``opts.streams`` streams,
    half-close them, and wait until the receiver ended its side (it consumed all)."""
    access = opts.access
    tls = access.ssl_context
    kwargs: dict[str, Any] = {"codec": opts.codec, "close_grace": CLOSE_GRACE}
    if opts.unix_path is not None:
        address = f"unix:{opts.unix_path}"
        opening = fa.open_unix_connection(
            opts.unix_path, ssl=tls, server_hostname=access.server_hostname, **kwargs
        )
    else:
        address = format_address((opts.host, opts.port))
        opening = fa.open_connection(
            opts.host, opts.port, ssl=tls, server_hostname=access.server_hostname, **kwargs
        )
    streams: list[fa.FlowStream] = []
    failed: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        try:
            conn = await stack.enter_async_context(opening)
        except OSError as exc:
            raise CliError(f"cannot connect to {address}: {exc.strerror or exc}") from None
        peer = conn.peer_settings
        assert peer is not None
        if opts.size > peer.max_message_bytes:
            raise CliError(
                f"--size {opts.size} is over the receiver's max_message_bytes = "
                f"{peer.max_message_bytes}"
            )
        start = loop.time()
        producers = (_produce(conn, opts, i, streams, failed) for i in range(opts.streams))
        await asyncio.gather(*producers)
        seconds = loop.time() - start
        final = [s.statistics() for s in streams]
    m = sum(s.messages_sent for s in final)
    b = sum(s.bytes_sent for s in final)
    delivered = sum(s.delivered or 0 for s in final)
    result: dict[str, Any] = {
        "messages": m,
        "bytes": b,
        "seconds": round(seconds, 6),
        "msgs_per_s": summary_rate(m, seconds),
        "mb_per_s": summary_rate(b, seconds, 1e6, 3),
        "seconds_blocked": round(sum(s.seconds_blocked for s in final), 6),
        "delivered": delivered,
        "streams": opts.streams,
        "failed_streams": failed,
        "per_stream": [
            {"stream": s.stream_id, "sent": s.messages_sent, "confirmed": s.delivered or 0}
            for s in final
        ],
        "interrupted": False,
        "signal": None,
        "backend": "asyncio",
    }
    ok = [s for s in final if s.stream_id not in {f["stream"] for f in failed}]
    unconfirmed = sum(s.messages_sent - (s.delivered or 0) for s in ok)
    if unconfirmed:
        result["unconfirmed"] = unconfirmed  # spec §10.5: ended without reporting it all
    return result


async def _produce(
    conn: fa.FlowConnection,
    opts: SendOptions,
    index: int,
    streams: list[fa.FlowStream],
    failed: list[dict[str, Any]],
) -> None:
    """One stream: its share of the messages, half-close, wait for the receiver's end."""
    stream = await conn.open_stream()  # waits while max_streams are in use (spec §6.4)
    streams.append(stream)
    count = _share(opts.count, opts.streams, index)
    size = opts.size
    filler = bytes(size - TIMESTAMP_BYTES)
    batch = min(BATCH_MESSAGES, max(1, 256 * 1024 // size))
    sent = 0
    try:
        while count is None or sent < count:
            n = batch if count is None else min(batch, count - sent)
            stamp = time.time_ns().to_bytes(TIMESTAMP_BYTES, "big")
            await stream.send_many([stamp + filler] * n)
            sent += n
        await stream.aclose()
        while True:  # the receiver ends its side after consuming ours
            try:
                await stream.receive_many()
            except fa.EndOfStream:
                return
    except (StreamResetError, fa.ConnectionLostError) as exc:
        delivered = exc.delivered or 0
        failed.append(
            {
                "stream": stream.stream_id,
                "sent": stream.messages_sent,
                "delivered": delivered,
                "error": f"{exc}; the receiver confirmed {delivered} of "
                f"{stream.messages_sent} messages on stream {stream.stream_id}",
            }
        )


# --- receive -------------------------------------------------------------------------------


class _Receiver:
    """Counts what every stream consumed; ``done`` is set for --count and --once."""

    def __init__(self, opts: ReceiveOptions) -> None:
        self.opts = opts
        self.messages = 0
        self.bytes = 0
        self.streams = 0
        self.peak = 0
        self.connections: set[fa.FlowConnection] = set()
        self.problems: list[str] = []
        self.first: float | None = None
        self.last = 0.0
        self.done = asyncio.Event()
        self.watchers: set[asyncio.Task[None]] = set()  # --once: the first connection's end

    async def handle(self, stream: fa.FlowStream) -> None:
        opts = self.opts
        loop = asyncio.get_running_loop()
        self.streams += 1
        conn = stream.connection
        if conn not in self.connections:
            self.connections.add(conn)
            if opts.once:
                self.watchers.add(loop.create_task(self._end_with(conn)))
        before = 0
        try:
            while True:
                try:
                    if opts.delay:
                        batch = [await stream.receive()]
                        await asyncio.sleep(opts.delay)
                    else:
                        batch = await stream.receive_many(BATCH_MESSAGES)
                except fa.EndOfStream:
                    return  # the server half-closes: the sender learns all was consumed
                if self.first is None:
                    self.first = loop.time()
                self.last = loop.time()
                stats = stream.statistics()
                self.messages += len(batch)
                self.bytes += stats.bytes_received - before
                before = stats.bytes_received
                self.peak = max(self.peak, stats.peak_buffered_messages)
                if opts.count is not None and self.messages >= opts.count:
                    self.done.set()
        except (StreamResetError, fa.ConnectionLostError) as exc:
            self.problems.append(f"stream {stream.stream_id}: {exc}")
            raise

    async def _end_with(self, conn: fa.FlowConnection) -> None:
        await conn.wait_closed()
        self.done.set()


async def receive_asyncio(opts: ReceiveOptions) -> dict[str, Any]:
    """Serve until --count messages or the end of the first connection (--once); Ctrl-C
    ends it without a summary (exit status 130)."""
    access = opts.access
    receiver = _Receiver(opts)
    kwargs: dict[str, Any] = {
        "ssl": access.ssl_context,
        "max_connections": access.max_connections,
        "settings": opts.settings,
        "codec": opts.codec,
        "autotune": opts.autotune or False,
        "idle_timeout": access.idle_timeout,
        "handshake_timeout": access.handshake_timeout,
        "close_grace": CLOSE_GRACE,
    }
    try:
        if opts.unix_path is not None:
            server = await fa.serve_unix(receiver.handle, opts.unix_path, **kwargs)
            address = f"unix:{opts.unix_path}"
        else:
            server = await fa.serve(receiver.handle, opts.port, host=opts.host, **kwargs)
            address = format_address(server.sockets[0].getsockname())
    except OSError as exc:
        where = opts.unix_path or format_address((opts.host or "", opts.port))
        raise CliError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    eprint(f"listening on {address}")
    async with server:  # Ctrl-C: asyncio.run cancels this and exits 130, no summary
        await receiver.done.wait()
    seconds = (receiver.last - receiver.first) if receiver.first is not None else 0.0
    if receiver.messages == 1 or not math.isfinite(seconds):
        seconds = 0.0
    return {
        "listen": address,
        "messages": receiver.messages,
        "bytes": receiver.bytes,
        "seconds": round(seconds, 6),
        "msgs_per_s": summary_rate(receiver.messages, seconds),
        "mb_per_s": summary_rate(receiver.bytes, seconds, 1e6, 3),
        "connections": len(receiver.connections),
        "streams": receiver.streams,
        "buffered_peak_messages": receiver.peak,
        "problems": receiver.problems,
        "problem_count": len(receiver.problems),
        "interrupted": False,
        "signal": None,
        "backend": "asyncio",
    }
