"""The ``send`` command's run on Trio: connect, send, and wait until everything was consumed.

:func:`run_send` takes plain values (:class:`SendOptions`, no click), connects (retrying
while the receiver is OVERLOADED, and anew after a receiver lost the session, spec
§15.10), runs a :class:`~flowproto.cli._sender.Sender` producer per stream in a nursery
with the live reporters, and returns the summary as a dict whose keys are the JSON field
names. What happens on each stream is ``_sender``'s, shared with the asyncio run.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import trio

from flowproto import Reconnect
from flowproto.iolayer import ConnectionLostBase
from flowproto.trio import FlowConnection

from ._constants import CLOSE_GRACE
from ._layer_trio import TRIO, serve_metrics
from ._metrics import json_lines
from ._printing import format_address
from ._progress import ProgressCallback, every_second
from ._sender import Restarts, Sender, SendOptions, check_peer
from ._signals import first_stop_signal, stop_signal_receiver
from ._transport import Retry, connect, connect_error, overloaded

__all__ = ["SendOptions", "run_send"]


async def _connect(stack: AsyncExitStack, opts: SendOptions, address: str) -> FlowConnection:
    """The connection, entered on ``stack``; a failure to connect is one clear line
    (a CliError), except an OVERLOADED refusal, which the caller retries."""
    connection = connect(
        opts.host,
        opts.port,
        opts.unix_path,
        opts.access,
        codec=opts.codec,
        close_grace=CLOSE_GRACE,
        pacing=opts.pacing,
        reconnect=(
            None if opts.reconnect_timeout is None else Reconnect(deadline=opts.reconnect_timeout)
        ),
    )
    try:
        return await stack.enter_async_context(connection)
    except Exception as exc:
        if overloaded(exc) is not None:
            raise
        error = connect_error(exc, address, tls=opts.access.ssl_context is not None)
        if error is None:
            raise
        raise error from None


async def _watch_stops(
    signals: AsyncIterator[int],
    watch: trio.CancelScope,
    sender: Sender,
    connected: Callable[[], bool],
    attempt: trio.CancelScope,
    sending: trio.CancelScope,
) -> None:
    # Ctrl-C, SIGTERM, SIGHUP: while connecting (the handshake, a restart's backoff) the
    # attempt ends at once; once connected, the sending stops, then the summary says what
    # was sent and confirmed (see Sender.finish).
    with watch:
        sender.stop(await first_stop_signal(signals))
        (sending if connected() else attempt).cancel()


async def _retry_unless_stopped(
    retry: Retry, refusal: ConnectionLostBase, signals: AsyncIterator[int] | None
) -> str | None:
    """``retry.wait(refusal)`` (a line, a backoff; CliError once --retry-for is spent),
    unless a stop signal comes first: then at once, its name."""
    stopped: str | None = None
    async with trio.open_nursery() as nursery:

        async def watch(signals: AsyncIterator[int]) -> None:
            nonlocal stopped
            stopped = await first_stop_signal(signals)
            nursery.cancel_scope.cancel()

        if signals is not None:
            nursery.start_soon(watch, signals)
        await retry.wait(refusal)
        nursery.cancel_scope.cancel()
    return stopped


async def _send_all(
    sender: Sender,
    conn: FlowConnection,
    address: str,
    progress: ProgressCallback | None,
    sending: trio.CancelScope,
) -> float:
    """Run a producer per stream (each opens its own, spec §6.4) and the reporters; the
    seconds it took. Cancelling ``sending`` (a stop signal) ends the sending (see
    :meth:`Sender.finish`)."""
    opts = sender.opts
    sender.watched.add_connection(conn, address)
    start = trio.current_time()
    deadline = start + opts.duration if opts.duration is not None else math.inf
    async with trio.open_nursery() as nursery:
        report = partial(sender.report, progress=progress)
        nursery.start_soon(every_second, TRIO, lambda tick: report(tick - start), start)
        if opts.json_lines:
            nursery.start_soon(json_lines, TRIO, sender.snapshot)
        if opts.metrics is not None:
            await nursery.start(
                partial(serve_metrics, per_connection=opts.metrics_per_connection),
                *opts.metrics,
                sender.snapshot,
            )
        with sending:
            async with trio.open_nursery() as producers:
                for _ in range(opts.streams):
                    producers.start_soon(sender.produce, conn, deadline, address)
        nursery.cancel_scope.cancel()
    seconds = trio.current_time() - start
    await sender.finish(seconds, progress)
    return seconds


async def run_send(opts: SendOptions, progress: ProgressCallback | None) -> dict[str, Any]:
    """Connect, send, half-close, wait until the receiver consumed everything; summary.

    A stream that was reset, or lost with the connection, before everything was
    confirmed fails alone: the summary's ``failed_streams`` names it (stream id, messages
    sent and confirmed, the error) and the other streams go on.

    Raises:
        CliError: the connection was refused, or a message is over the receiver's limit.
    """
    address = f"unix:{opts.unix_path}" if opts.unix_path else format_address((opts.host, opts.port))
    retry = Retry(opts.access.retry_for, address, TRIO)
    restarts = Restarts(opts, TRIO)
    # One signal receiver for every attempt and the waits between them: a stop signal is
    # never left to Python's default handling (SIGTERM used to end a retry's backoff
    # with no summary).
    with stop_signal_receiver() as signals:
        while True:
            sender = Sender(opts, TRIO, sessions=True)
            try:
                # One watcher per attempt: a stop signal while connecting (the handshake,
                # a restart's backoff) cancels the whole attempt, whose scope holds the
                # connection (its nursery must nest inside); once connected, the sending.
                connected = trio.Event()
                with trio.CancelScope() as attempt:
                    async with trio.open_nursery() as guard, AsyncExitStack() as stack:
                        watch, sending = trio.CancelScope(), trio.CancelScope()
                        if signals is not None:
                            guard.start_soon(
                                _watch_stops, signals, watch, sender, connected.is_set,
                                attempt, sending,
                            )  # fmt: skip
                        conn = await restarts.connect(partial(_connect, stack, opts, address))
                        connected.set()
                        check_peer(opts, conn.peer_settings)
                        seconds = await _send_all(sender, conn, address, progress, sending)
                        final = [st.statistics() for st in sender.streams]  # the same moment
                        session = conn.statistics()
                        watch.cancel()
                if attempt.cancelled_caught:  # stopped while connecting: nothing was sent
                    return sender.summary(0.0, [])
                if restarts.again(sender):
                    # spec §15.10: the receiver restarted and lost the session: a new
                    # connection, whose stream starts after what the receiver's output holds.
                    continue
                break
            except Exception as exc:
                # spec §10.1: OVERLOADED means nothing was processed; retry while nothing
                # was sent.
                refusal = overloaded(exc)
                if refusal is None or sender.totals()[0] > 0:
                    raise
                stopped = await _retry_unless_stopped(retry, refusal, signals)
                if stopped is not None:  # nothing was sent
                    sender.stop(stopped)
                    return sender.summary(0.0, [])
    return sender.summary(
        seconds, final, session if opts.reconnect_timeout is not None else None, restarts.count
    )
