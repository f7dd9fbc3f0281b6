"""The ``receive`` command's run: a consumer server, optionally a slow one.

:func:`run_receive` takes plain values (:class:`ReceiveOptions`, no click), serves until
``--count`` messages, the end of the first connection (``--once``) or Ctrl-C, writes
live statistics to stderr once a second, and returns its summary as a dict whose keys
are the JSON field names. Pacing (``--rate``) follows an absolute schedule
(:class:`flowproto.Pacer`), so a slow consumer does not drift however long it runs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO

import trio

from flowproto import AutoTune, CodecName, ErrorCode, MemoryBudget, Settings, StreamState
from flowproto.trio import (
    ConnectionLostError,
    FlowConnection,
    FlowStream,
    MessageDecodeError,
    StreamResetError,
    open_flow_connection,
    serve_transports,
)

from ._access import ReceiverAccess
from ._constants import BATCH_MESSAGES, CLOSE_GRACE
from ._errors import EXPECTED_ERRORS, CliError, describe, flatten
from ._latency import Latencies
from ._metrics import Watched, json_lines, serve_metrics
from ._pace import Pace
from ._printing import fmt_bytes, fmt_latency, json_line, per_second
from ._progress import eprint, every_second
from ._transport import describe_access, listener_name, open_listeners, peer_name


def receiver_settings(window_bytes: int, window_messages: int, max_message: int | None) -> Settings:
    """The receiver's Settings from its options (spec §3.2).

    The per-stream windows are the options; ``max_message_bytes`` defaults to the smaller
    of 1 MiB and the byte window; the connection window is the larger of the default
    (16 MiB) and the stream byte window.

    Raises:
        ValueError: the combination breaks spec §3.2 (the message names every problem).
    """
    default = Settings()
    if max_message is None:
        max_message = min(default.max_message_bytes, window_bytes)
    return Settings(
        stream_bytes=window_bytes,
        stream_messages=window_messages,
        connection_bytes=max(default.connection_bytes, window_bytes),
        max_message_bytes=max_message,
    ).validate()


@dataclass
class ReceiveOptions:
    host: str | None
    port: int
    settings: Settings
    codec: CodecName
    rate: float | None = None
    delay: float = 0.0  # seconds
    output: BinaryIO | None = None
    count: int | None = None
    once: bool = False
    latency: bool = False
    live: bool = True
    autotune: AutoTune | None = None  # spec §8.9; None keeps the windows fixed
    memory_budget: int | None = None  # bytes, shared by every connection (spec §8.9)
    metrics: tuple[str, int] | None = None  # --metrics-port (spec §14)
    json_lines: bool = False
    unix_path: str | None = None  # --listen unix:PATH (then host and port are unused)
    access: ReceiverAccess = field(default_factory=ReceiverAccess)  # TLS, caps (issue 12)


class _Receiver:
    """The consumer server's state: totals over every connection and stream."""

    def __init__(self, opts: ReceiveOptions) -> None:
        self.opts = opts
        self.pace = Pace(opts.rate, opts.delay)
        self.latencies = Latencies() if opts.latency else None
        self.messages = 0
        self.bytes = 0
        self.connections = 0
        self.streams_seen = 0
        self.open_streams: set[FlowStream] = set()
        self.peak_buffered = 0
        self.interrupted = False
        self.first: float | None = None
        self.last: float | None = None
        self.problems: list[str] = []
        self.stopping = False
        self.nursery: trio.Nursery | None = None  # the listeners and the reporter
        self.accepting: set[trio.CancelScope] = set()  # each connection's accept loop
        self.watched = Watched()  # for --json-lines and --metrics-port (spec §14)
        self.budget = MemoryBudget(opts.memory_budget) if opts.memory_budget else None
        self._reported = (0, 0)  # messages, bytes at the last live line

    async def on_connection(self, transport: trio.abc.Stream) -> None:
        if self.stopping:
            await transport.aclose()
            return
        peer = peer_name(transport)
        self.connections += 1
        try:
            async with (
                open_flow_connection(
                    transport,
                    initiator=False,
                    settings=self.opts.settings,
                    codec=self.opts.codec,
                    close_grace=CLOSE_GRACE,
                    autotune=self.opts.autotune or False,
                    memory_budget=self.budget,
                    handshake_timeout=self.opts.access.handshake_timeout,
                    idle_timeout=self.opts.access.idle_timeout,
                ) as conn,
                trio.open_nursery() as nursery,
            ):
                self.watched.connections[conn] = peer
                await self._accept_streams(conn, peer, nursery)
        except Exception as exc:
            leaves = flatten(exc)
            if not all(isinstance(e, EXPECTED_ERRORS) for e in leaves):
                raise
            self.problem(f"connection from {peer}: {describe(leaves[0])}")
        finally:
            for conn_done in [c for c, p in self.watched.connections.items() if p == peer]:
                if conn_done.closed:
                    del self.watched.connections[conn_done]
        if self.opts.once:
            self.stop()

    async def _accept_streams(self, conn: FlowConnection, peer: str, nursery: trio.Nursery) -> None:
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
                nursery.start_soon(self.consume, stream, peer)
        self.accepting.discard(accepting)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        if not (self.opts.once and len(self.problems) == 1):  # that one ends --once as an error
            eprint(f"flowproto: warning: {text}")

    async def consume(self, stream: FlowStream, peer: str) -> None:
        self.open_streams.add(stream)
        self.watched.streams[stream] = peer
        self.streams_seen += 1
        if self.first is None:
            self.first = trio.current_time()
        count, pace, output, lat = self.opts.count, self.pace, self.opts.output, self.latencies
        paced = pace.active
        try:
            while True:
                if paced:
                    await pace.wait()
                if self.stopping:
                    await self._end(stream)
                    return
                limit = 1 if paced else BATCH_MESSAGES
                if count is not None:
                    # Exact on one stream. Several streams may each be waiting with this
                    # limit; what they take is consumed, so it is processed and counted too.
                    limit = max(1, min(limit, count - self.messages))
                bytes_before = stream.bytes_received
                try:
                    batch = await stream.receive_many(limit)
                except trio.EndOfChannel:
                    await stream.aclose()  # the peer waits for this: all was consumed
                    return
                self.last = trio.current_time()
                self.peak_buffered = max(
                    self.peak_buffered, stream.statistics().buffered_messages + len(batch)
                )
                self.bytes += stream.bytes_received - bytes_before
                self._take(batch, output, lat)
                if count is not None and self.messages >= count:
                    self.stop()
                    await self._end(stream)
                    return
        except MessageDecodeError as exc:
            self.problem(f"stream {stream.stream_id} from {peer}: {exc} (is the sender --raw?)")
            await stream.reset(ErrorCode.CANCEL, "message is not valid msgpack")
        except (StreamResetError, ConnectionLostError) as exc:
            if not self.stopping:
                self.problem(f"stream {stream.stream_id} from {peer}: {exc}")
        finally:
            self.open_streams.discard(stream)
            self.watched.streams.pop(stream, None)

    def _take(self, batch: Sequence[Any], output: BinaryIO | None, lat: Latencies | None) -> None:
        self.messages += len(batch)
        raw = self.opts.codec == "raw"
        if lat is not None:
            now_ns = time.time_ns()
            for m in batch:
                lat.add_message(m, now_ns)
        if output is not None:
            if raw:
                for m in batch:
                    output.write(m)
            else:
                for m in batch:
                    output.write(json_line(m))

    def stop(self) -> None:
        """Stop serving: streams that are done end cleanly, the others are reset, and the
        connections close with GOAWAY."""
        if self.stopping or self.nursery is None:
            return
        self.stopping = True
        self.nursery.start_soon(self._shutdown)

    async def _end(self, stream: FlowStream) -> None:
        """End a stream we stop consuming; ending one twice does nothing."""
        st = stream.statistics()
        if st.state == StreamState.CLOSED.value:
            return
        if st.state == StreamState.HALF_CLOSED_REMOTE.value and st.buffered_messages == 0:
            await stream.aclose()  # the sender is done and all was consumed: a clean end
        else:
            await stream.reset(
                ErrorCode.CANCEL, f"the receiver stopped after {self.messages} messages"
            )

    async def _shutdown(self) -> None:
        for stream in list(self.open_streams):
            await self._end(stream)
        for scope in self.accepting:
            scope.cancel()
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    def report(self, tick: float) -> None:
        """One line of live statistics (nothing before the first stream, or when idle)."""
        if self.first is None:
            return  # no stream yet: nothing to say
        if self.opts.output is not None:
            self.opts.output.flush()
        dm, db = self.messages - self._reported[0], self.bytes - self._reported[1]
        self._reported = (self.messages, self.bytes)
        if not dm and not self.open_streams:
            return
        stats = [s.statistics() for s in self.open_streams]
        buffered_m = sum(s.buffered_messages for s in stats)
        buffered_b = sum(s.buffered_bytes for s in stats)
        credit_m = sum(s.receive_credit_messages for s in stats)
        credit_b = sum(s.receive_credit_bytes for s in stats)
        lat = self.latencies.summary(recent=True) if self.latencies else None
        eprint(
            f"recv {max(0.0, tick - self.first):5.1f}s: {dm} msg/s {fmt_bytes(db)}/s"
            f" | total {self.messages} msgs {fmt_bytes(self.bytes)}"
            f" | buffered {buffered_m} msgs {fmt_bytes(buffered_b)}"
            f" | credit {credit_m} msgs {fmt_bytes(credit_b)}"
            f" | streams {len(stats)}" + fmt_latency(lat)
        )

    async def stop_on_signal(self, signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            # Ctrl-C is how a server is stopped: stop cleanly, so the summary is printed.
            self.interrupted = True
            self.stop()
            return

    def summary(self, address: str) -> dict[str, Any]:
        seconds = (self.last - self.first) if self.first is not None and self.last else 0.0
        result: dict[str, Any] = {
            "listen": address,
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": round(seconds, 6),
            "msgs_per_s": round(per_second(self.messages, seconds), 1),
            "mb_per_s": round(per_second(self.bytes, seconds) / 1e6, 3),
            "connections": self.connections,
            "streams": self.streams_seen,
            "buffered_peak_messages": self.peak_buffered,
            "problems": self.problems,
            "interrupted": self.interrupted,
        }
        if self.latencies is not None:
            result["latency_ms"] = self.latencies.summary()
        if self.budget is not None:
            result["memory_budget"] = {  # spec §8.9: committed never passed the capacity
                "bytes": self.budget.capacity,
                "peak_committed_bytes": self.budget.peak,
                "refused_connections": self.budget.refused,
            }
        return result

    def snapshot(self) -> dict[str, Any]:
        """The spec §14 statistics of every connection, for --json-lines and metrics."""
        return self.watched.snapshot(role="receive", messages=self.messages, bytes=self.bytes)


def _sigint_receiver() -> AbstractContextManager[AsyncIterator[int] | None]:
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()  # signals only reach the main thread
    return trio.open_signal_receiver(signal.SIGINT)


async def run_receive(opts: ReceiveOptions) -> dict[str, Any]:
    """Serve until ``--count`` messages, the end of the first connection (``--once``), or
    forever; returns the summary. Prints ``listening on HOST:PORT`` to stderr first."""
    receiver = _Receiver(opts)
    access = opts.access
    listeners = await open_listeners(opts.host, opts.port, opts.unix_path)
    addresses = [listener_name(lst) for lst in listeners]
    if access.ssl_context is not None:
        eprint(describe_access(access))
    for address in addresses:  # with port 0, IPv4 and IPv6 may get different ports
        eprint(f"listening on {address}")
    try:
        with _sigint_receiver() as signals:
            async with trio.open_nursery() as connections, trio.open_nursery() as nursery:
                receiver.nursery = nursery
                if opts.live:
                    nursery.start_soon(every_second, receiver.report)
                if opts.json_lines:
                    nursery.start_soon(json_lines, receiver.snapshot)
                if opts.metrics is not None:
                    await nursery.start(serve_metrics, *opts.metrics, receiver.snapshot)
                if signals is not None:
                    nursery.start_soon(receiver.stop_on_signal, signals)
                nursery.start_soon(
                    partial(
                        serve_transports,
                        receiver.on_connection,
                        listeners,
                        handler_nursery=connections,
                        ssl_context=access.ssl_context,
                        max_connections=access.max_connections,
                    )
                )
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()  # a Unix socket's file goes with it
        if opts.output is not None:
            opts.output.flush()
    result = receiver.summary(addresses[0])
    if opts.once and receiver.problems:
        raise CliError(receiver.problems[0])
    return result
