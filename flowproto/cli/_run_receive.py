"""The ``receive`` command's run on Trio: a consumer server, optionally a slow one.

:func:`run_receive` takes plain values (:class:`ReceiveOptions`, no click), serves until
``--count`` messages, the end of the first connection (``--once``) or a stop signal,
writes live statistics to stderr once a second, and returns its summary as a dict whose
keys are the JSON field names. What happens on each stream is
:class:`~flowproto.cli._consumer.Consumer`'s, shared with the asyncio run; this module
serves the connections (with sessions, spec §15) in Trio's idiom, and stops them.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import trio

from flowproto import ErrorCode, SessionStore
from flowproto.trio import (
    ConnectionLostError,
    FlowConnection,
    open_flow_connection,
    serve_transports,
)

from ._constants import CLOSE_GRACE
from ._consumer import Consumer, ReceiveOptions, receiver_settings
from ._errors import EXPECTED_ERRORS, describe, flatten
from ._layer_trio import TRIO, serve_metrics
from ._metrics import json_lines
from ._progress import eprint, every_second
from ._signals import first_stop_signal, stop_signal_receiver
from ._transport import describe_access, listener_name, open_listeners, peer_name

__all__ = ["ReceiveOptions", "receiver_settings", "run_receive"]


def _graceful(exc: BaseException) -> bool:
    """The peer closed with GOAWAY(NO_ERROR) (spec §10.4), maybe right after its HELLO (a
    sender that gave up before opening a stream): the normal end of a connection, not a
    problem. Streams it left open report their own."""
    return isinstance(exc, ConnectionLostError) and exc.error_code == ErrorCode.NO_ERROR


class _Receiver(Consumer):
    """The consumer on Trio: a nursery per connection, a cancel scope per stream."""

    def __init__(self, opts: ReceiveOptions) -> None:
        super().__init__(opts, TRIO, sessions=True)
        self.nursery: trio.Nursery | None = None  # the listeners and the reporter
        self.accepting: set[trio.CancelScope] = set()  # each connection's accept loop
        self.sessions_kept: SessionStore[FlowConnection] | None = (
            SessionStore() if opts.resume_timeout is not None else None
        )

    def stop_handle(self) -> trio.CancelScope:
        return trio.CancelScope()  # cancelled before it is entered, it cancels at once

    async def stoppable(self, handle: Any, work: Callable[[], Awaitable[None]]) -> None:
        with handle:
            await work()

    async def on_connection(self, transport: trio.abc.Stream) -> None:
        if self.stopping:
            await transport.aclose()
            return
        peer = peer_name(transport)
        self.connections += 1
        number = self.connections  # names --output-dir files
        try:
            async with (
                open_flow_connection(
                    transport,
                    initiator=False,
                    settings=self.opts.settings,
                    codec="raw",  # decoded by the consumer, message by message
                    close_grace=CLOSE_GRACE,
                    autotune=self.opts.autotune or False,
                    memory_budget=self.budget,
                    handshake_timeout=self.opts.access.handshake_timeout,
                    idle_timeout=self.opts.access.idle_timeout,
                    resume_timeout=self.opts.resume_timeout,
                    sessions=self.sessions_kept,
                ) as conn,
                trio.open_nursery() as nursery,
            ):
                self.watched.add_connection(conn, peer)
                await self._accept_streams(conn, peer, number, nursery)
        except Exception as exc:
            leaves = flatten(exc)
            if not all(isinstance(e, EXPECTED_ERRORS) for e in leaves):
                raise
            if getattr(leaves[0], "handed_over", False):
                # spec §15.6: a resumption; its session's connection goes on with it.
                self.connections -= 1
                self.resumed += 1
                return
            if getattr(leaves[0], "error_code", None) == ErrorCode.SESSION_UNKNOWN:
                # spec §15.6: a sender resuming a session this receiver does not have (it
                # restarted, or the session expired): refused, and it may connect anew.
                self.connections -= 1
                eprint(f"a sender ({peer}) resumed a session this receiver does not have")
                return
            self.watched.count_failure(leaves[0])
            if not _graceful(leaves[0]):
                self.problem(f"connection from {peer}: {describe(leaves[0])}", peer, "connection")
        finally:
            for conn_done in [c for c, p in self.watched.connections.items() if p == peer]:
                if conn_done.closed:
                    self.watched.forget_connection(conn_done)
        if self.opts.once:
            self.stop()

    async def _accept_streams(
        self, conn: FlowConnection, peer: str, number: int, nursery: trio.Nursery
    ) -> None:
        """Consume every stream the peer opens, until it closes or :meth:`stop`."""
        # stop() cancels only this loop: leaving the connection's block closes it
        # gracefully (GOAWAY), which cancelling the block itself would not.
        with trio.CancelScope() as accepting:
            self.accepting.add(accepting)
            if self.stopping:
                accepting.cancel()
            while True:
                try:
                    stream = await conn.accept_stream()
                except ConnectionLostError:
                    break  # the peer closed the connection (or lost it)
                nursery.start_soon(self.consume, stream, peer, number)
        self.accepting.discard(accepting)

    def stop(self) -> None:
        if self.stopping or self.nursery is None:
            return
        self.stopping = True
        self.nursery.start_soon(self._shutdown)

    async def _shutdown(self) -> None:
        await trio.lowlevel.checkpoint()
        for consuming in self.open_streams.values():
            consuming.cancel()  # each stream's task ends it: cleanly if it can, else reset
        for scope in self.accepting:
            scope.cancel()
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    async def stop_on_signals(self, signals: AsyncIterator[int]) -> None:
        self.stop_on_signal(await first_stop_signal(signals))


async def run_receive(opts: ReceiveOptions) -> dict[str, Any]:
    """Serve until ``--count`` messages, the end of the first connection (``--once``), or
    forever; returns the summary (with ``--once``, ``problems`` non-empty is a failure).
    Prints ``listening on HOST:PORT`` to stderr first."""
    receiver = _Receiver(opts)
    access = opts.access
    listeners = await open_listeners(opts.host, opts.port, opts.unix_path)
    addresses = [listener_name(lst) for lst in listeners]
    try:
        # The signals are caught before "listening on" tells anyone to connect: one that
        # comes at once still ends with the summary (it waits in the receiver's queue).
        with stop_signal_receiver() as signals:
            if access.ssl_context is not None:
                eprint(describe_access(access))
            for address in addresses:  # with port 0, IPv4 and IPv6 may get different ports
                eprint(f"listening on {address}")
            async with trio.open_nursery() as connections, trio.open_nursery() as nursery:
                receiver.nursery = nursery
                if opts.live:
                    nursery.start_soon(every_second, TRIO, receiver.report)
                if opts.json_lines:
                    nursery.start_soon(json_lines, TRIO, receiver.snapshot)
                if opts.metrics is not None:
                    await nursery.start(
                        partial(serve_metrics, per_connection=opts.metrics_per_connection),
                        *opts.metrics,
                        receiver.snapshot,
                    )
                if signals is not None:
                    nursery.start_soon(receiver.stop_on_signals, signals)
                nursery.start_soon(
                    partial(
                        serve_transports,
                        receiver.on_connection,
                        listeners,
                        handler_nursery=connections,
                        ssl_context=access.ssl_context,
                        max_connections=access.max_connections,
                        on_refused=receiver.watched.count_refused,
                    )
                )
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()  # a Unix socket's file goes with it
        if opts.output == "-":
            sys.stdout.buffer.flush()
    return receiver.summary(addresses[0])
