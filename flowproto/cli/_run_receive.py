"""The ``receive`` command's run: a consumer server, optionally a slow one.

:func:`run_receive` takes plain values (:class:`ReceiveOptions`, no click), serves until
``--count`` messages, the end of the first connection (``--once``) or Ctrl-C, writes
live statistics to stderr once a second, and returns its summary as a dict whose keys
are the JSON field names. Pacing (``--rate``) follows an absolute schedule
(:class:`flowproto.Pacer`), so a slow consumer does not drift however long it runs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import trio

from flowproto import (
    AutoTune,
    CodecName,
    ErrorCode,
    MemoryBudget,
    RateLimitedLog,
    SessionStore,
    Settings,
    StreamState,
    get_codec,
)
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
from ._errors import EXPECTED_ERRORS, describe, flatten
from ._latency import Latencies
from ._metrics import Watched, json_lines, serve_metrics
from ._output import OutputRefused, Outputs, Sink
from ._pace import Pace
from ._printing import fmt_bytes, fmt_latency, json_line, per_second, summary_rate
from ._progress import eprint, every_second
from ._signals import first_stop_signal, stop_signal_receiver
from ._transport import describe_access, listener_name, open_listeners, peer_name


def receiver_settings(
    window_bytes: int,
    window_messages: int,
    max_message: int | None,
    max_streams: int | None = None,
) -> Settings:
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
        max_streams=default.max_streams if max_streams is None else max_streams,
    ).validate()


@dataclass
class ReceiveOptions:
    host: str | None
    port: int
    settings: Settings
    codec: CodecName
    rate: float | None = None
    delay: float = 0.0  # seconds
    output: str | None = None  # --output FILE, or "-" for stdout
    output_dir: str | None = None  # --output-dir DIR: a file per stream
    count: int | None = None
    once: bool = False
    latency: bool = False
    live: bool = True
    autotune: AutoTune | None = None  # spec §8.9; None keeps the windows fixed
    memory_budget: int | None = None  # bytes, shared by every connection (spec §8.9)
    metrics: tuple[str, int] | None = None  # --metrics-port (spec §14)
    metrics_per_connection: bool = False  # --metrics-per-connection
    json_lines: bool = False
    fsync: bool = False  # --fsync: the output is on disk before credit returns
    unix_path: str | None = None  # --listen unix:PATH (then host and port are unused)
    access: ReceiverAccess = field(default_factory=ReceiverAccess)  # TLS, caps (issue 12)
    resume_timeout: float | None = 60.0  # spec §15: keep a lost sender's session; None: no


#: The RESET reason of a refused stream: it tells the peer nothing about the stream that has
#: the output.
REFUSED_REASON: Final = "the receiver's --output FILE takes one stream and has it"


#: Problems kept for the summary; the rest are only counted (``problem_count``).
MAX_PROBLEMS: Final = 100


class _WarningLines(logging.Handler):
    """``flowproto: warning: ...`` lines on stderr, for the receiver's RateLimitedLog."""

    def emit(self, record: logging.LogRecord) -> None:
        eprint(f"flowproto: warning: {record.getMessage()}")


def _warnings_logger() -> logging.Logger:
    logger = logging.getLogger("flowproto.cli.receive")
    logger.propagate = False  # these lines are ours to print, once
    logger.setLevel(logging.WARNING)
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines())
    return logger


def _graceful(exc: BaseException) -> bool:
    """The peer closed with GOAWAY(NO_ERROR) (spec §10.4), maybe right after its HELLO (a
    sender that gave up before opening a stream): the normal end of a connection, not a
    problem. Streams it left open report their own."""
    return isinstance(exc, ConnectionLostError) and exc.error_code == ErrorCode.NO_ERROR


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
        # Each stream being consumed, and the scope stop() cancels to end it.
        self.open_streams: dict[FlowStream, trio.CancelScope] = {}
        self.peak_buffered = 0
        self.interrupted = False
        self.signal: str | None = None  # the name of the signal that stopped us
        self.first: float | None = None
        self.last: float | None = None
        self.problems: list[str] = []  # the first MAX_PROBLEMS
        self.problem_count = 0
        self.warnings = RateLimitedLog(_warnings_logger())  # per (peer host, kind)
        self.warnings_suppressed = 0
        self.stopping = False
        self.nursery: trio.Nursery | None = None  # the listeners and the reporter
        self.accepting: set[trio.CancelScope] = set()  # each connection's accept loop
        # for --json-lines and --metrics-port (spec §14)
        self.watched = Watched("receive", per_connection=opts.metrics_per_connection)
        self.budget = MemoryBudget(opts.memory_budget) if opts.memory_budget else None
        self.watched.budget = self.budget
        self.outputs = Outputs(
            file=opts.output if opts.output != "-" else None,
            directory=opts.output_dir,
            stdout=sys.stdout.buffer if opts.output == "-" else None,
            fsync=opts.fsync,
        )
        self.refused_streams = 0  # refused because the output has its stream
        self.resumed = 0  # connections that resumed a session (spec §15.6)
        self.sessions: SessionStore[FlowConnection] | None = (
            SessionStore() if opts.resume_timeout is not None else None
        )
        # Streams carry raw bytes; --msgpack decodes here, so a bad message is found
        # before anything of its batch is released.
        self._decode = None if opts.codec == "raw" else get_codec(opts.codec).decode
        self._reported = (0, 0)  # messages, bytes at the last live line
        self._reported_at = 0.0  # trio time of the last live line

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
                    codec="raw",  # decoded here, message by message (see _deliver)
                    close_grace=CLOSE_GRACE,
                    autotune=self.opts.autotune or False,
                    memory_budget=self.budget,
                    handshake_timeout=self.opts.access.handshake_timeout,
                    idle_timeout=self.opts.access.idle_timeout,
                    resume_timeout=self.opts.resume_timeout,
                    sessions=self.sessions,
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

    def problem(self, text: str, peer: str, kind: str) -> None:
        """Note something that went wrong with a peer, and warn about it: one line per
        peer host and kind of problem per LOG_INTERVAL, so a flood from one client (or
        one connection after another) cannot flood stderr (issue 12)."""
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        if self.opts.once and self.problem_count == 1:
            return  # that one ends --once as an error
        host = peer.rpartition(":")[0] or peer
        if not self.warnings.warning((host, kind), trio.current_time(), "%s", text):
            self.warnings_suppressed += 1

    async def consume(self, stream: FlowStream, peer: str, connection: int) -> None:
        """Consume one stream into its output until it ends, or until :meth:`stop`."""
        scope = trio.CancelScope()
        self.open_streams[stream] = scope
        self.watched.add_stream(stream, peer)
        self.streams_seen += 1
        if self.first is None:
            self.first = trio.current_time()
        sink: Sink | None = None
        complete = False
        try:
            if self.stopping:
                await stream.reset(ErrorCode.CANCEL, "the receiver is stopping")
                return
            try:
                sink = self.outputs.claim(
                    peer, connection, stream.stream_id, resume=stream.awaits_start
                )
            except OutputRefused as exc:
                # spec §6.4: nothing of this stream was processed, so REFUSED_STREAM.
                self.refused_streams += 1
                self.watched.count_reset(ErrorCode.REFUSED_STREAM)
                self.problem(
                    f"stream {stream.stream_id} from {peer}: refused: {exc}", peer, "refused"
                )
                await stream.reset(ErrorCode.REFUSED_STREAM, REFUSED_REASON)
                return
            if stream.awaits_start:
                # spec §15.10: the sender goes on after what the output already holds
                held = sink.held if sink is not None else 0
                stream.start_at(0, held)
                if held:
                    eprint(f"resuming stream {stream.stream_id} after its {held} bytes held")
            with scope:
                await self._consume(stream, sink)
            complete = await self._end(stream, sink)
        except MessageDecodeError as exc:
            # spec §5.7 (1.1): RESET(REJECTED) whose consumed is what was accepted, i.e.
            # written: the sender reports only those delivered, never the rejected one.
            accepted = stream.messages_received
            self.problem(
                f"stream {stream.stream_id} from {peer}: message {accepted + 1} rejected: "
                f"{exc} (is the sender --raw?)",
                peer,
                "rejected",
            )
            await stream.reject("message is not valid msgpack", accepted=accepted)
            self.watched.count_reset(ErrorCode.REJECTED)
        except OSError as exc:
            self.problem(
                f"stream {stream.stream_id} from {peer}: cannot write the output: {exc}",
                peer,
                "write",
            )
            await stream.reset(ErrorCode.CANCEL, f"the receiver cannot write its output: {exc}")
            self.watched.count_reset(ErrorCode.CANCEL)
        except (StreamResetError, ConnectionLostError) as exc:
            self.watched.count_failure(exc)
            if not self.stopping:
                self.problem(f"stream {stream.stream_id} from {peer}: {exc}", peer, "stream")
        finally:
            if not complete:
                self.outputs.finish(sink, complete=False)
            self.open_streams.pop(stream, None)
            self.watched.forget_stream(stream)

    async def _consume(self, stream: FlowStream, sink: Sink | None) -> None:
        """Take the stream's messages until the sender ends it, ``--count`` is reached, or
        :meth:`stop` cancels this."""
        count, pace = self.opts.count, self.pace
        paced = pace.active
        while True:
            if paced:
                await pace.wait()
            limit = 1 if paced else BATCH_MESSAGES
            if count is not None:
                # Exact on one stream. Several streams may each be waiting with this
                # limit; what they take is consumed, so it is processed and counted too.
                limit = max(1, min(limit, count - self.messages))
            try:
                # Held, not consumed: the credit goes back once the batch is written.
                # Cancelled here, it took nothing.
                batch = await stream.receive_many(limit, release=False)
            except trio.EndOfChannel:
                return  # the sender is done and everything was consumed
            self.last = trio.current_time()
            self.peak_buffered = max(
                self.peak_buffered, stream.statistics().buffered_messages + len(batch)
            )
            await self._deliver(stream, batch, sink)
            if count is not None and self.messages >= count:
                self.stop()
                return

    async def _deliver(self, stream: FlowStream, batch: Sequence[bytes], sink: Sink | None) -> None:
        """Write the batch to the output, flushed (and fsynced with --fsync), and only then
        release it: the sender is told it was consumed once it is where the user asked
        (spec §8.5, §10.5). What was written is counted even if the release comes too late
        (a lost connection): the summary matches the file."""
        decode = self._decode
        rejected: MessageDecodeError | None = None
        messages: Sequence[Any] = batch
        if decode is not None:
            messages = []
            for m in batch:
                try:
                    messages.append(decode(m))
                except MessageDecodeError as exc:
                    rejected = exc  # deliver the messages before it, then reject (below)
                    break
            batch = batch[: len(messages)]
        lat = self.latencies
        if lat is not None:
            now_ns = time.time_ns()
            for m in messages:
                lat.add_message(m, now_ns)
        if sink is not None:
            sink.write(batch if decode is None else [json_line(m) for m in messages])
            await sink.sync()
        self.messages += len(batch)
        self.bytes += sum(map(len, batch))
        stream.release(len(batch))
        if rejected is not None:
            raise rejected

    def stop(self) -> None:
        """Stop serving: streams that are done end cleanly, the others are reset, and the
        connections close with GOAWAY."""
        if self.stopping or self.nursery is None:
            return
        self.stopping = True
        self.nursery.start_soon(self._shutdown)

    async def _end(self, stream: FlowStream, sink: Sink | None) -> bool:
        """End a stream we stop consuming; True if that is a clean end.

        Clean means the sender was done and everything it sent was written: then its
        output is complete (finished first), and only then does our END_STREAM tell the
        sender so. Otherwise the stream is reset (CANCEL) and the output stays incomplete.
        """
        st = stream.statistics()
        if st.state == StreamState.CLOSED.value:
            return False
        if st.state == StreamState.HALF_CLOSED_REMOTE.value and st.buffered_messages == 0:
            self.outputs.finish(sink, complete=True)
            await stream.aclose()  # the peer waits for this: all was consumed
            return True
        await stream.reset(ErrorCode.CANCEL, f"the receiver stopped after {self.messages} messages")
        return False

    async def _shutdown(self) -> None:
        await trio.lowlevel.checkpoint()
        for consuming in self.open_streams.values():
            consuming.cancel()  # each stream's task ends it: cleanly if it can, else reset
        for scope in self.accepting:
            scope.cancel()
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    def report(self, tick: float) -> None:
        """One line of live statistics (nothing before the first stream, or when idle)."""
        if self.first is None:
            return  # no stream yet: nothing to say
        dm, db = self.messages - self._reported[0], self.bytes - self._reported[1]
        self._reported = (self.messages, self.bytes)
        # Per second over the interval really covered: the first one starts with the
        # first stream, not with the previous tick.
        since = max(self._reported_at, self.first)
        self._reported_at = tick
        if not dm and not self.open_streams:
            return
        rate_m, rate_b = per_second(dm, tick - since), per_second(db, tick - since)
        stats = [s.statistics() for s in self.open_streams]
        buffered_m = sum(s.buffered_messages for s in stats)
        buffered_b = sum(s.buffered_bytes for s in stats)
        credit_m = sum(s.receive_credit_messages for s in stats)
        credit_b = sum(s.receive_credit_bytes for s in stats)
        lat = self.latencies.summary(recent=True) if self.latencies else None
        eprint(
            f"recv {max(0.0, tick - self.first):5.1f}s: {rate_m:.0f} msg/s {fmt_bytes(rate_b)}/s"
            f" | total {self.messages} msgs {fmt_bytes(self.bytes)}"
            f" | buffered {buffered_m} msgs {fmt_bytes(buffered_b)}"
            f" | credit {credit_m} msgs {fmt_bytes(credit_b)}"
            f" | streams {len(stats)}" + fmt_latency(lat)
        )

    async def stop_on_signal(self, signals: AsyncIterator[int]) -> None:
        # Ctrl-C, SIGTERM (a service manager) and SIGHUP (a closed terminal) are how a
        # server is stopped: stop cleanly, so the output is flushed and the summary printed.
        self.signal = await first_stop_signal(signals)
        self.interrupted = True
        self.stop()

    def summary(self, address: str) -> dict[str, Any]:
        seconds = (self.last - self.first) if self.first is not None and self.last else 0.0
        result: dict[str, Any] = {
            "listen": address,
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": round(seconds, 6),
            "msgs_per_s": summary_rate(self.messages, seconds),
            "mb_per_s": summary_rate(self.bytes, seconds, 1e6, 3),
            "connections": self.connections,
            "resumed": self.resumed,
            "streams": self.streams_seen,
            "buffered_peak_messages": self.peak_buffered,
            "problems": self.problems,
            "problem_count": self.problem_count,
            "warnings_suppressed": self.warnings_suppressed,
            "refused_streams": self.refused_streams,
            "interrupted": self.interrupted,
            "signal": self.signal,
        }
        files = self.outputs.summary()
        if files is not None:
            result["output_files"] = files
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


async def run_receive(opts: ReceiveOptions) -> dict[str, Any]:
    """Serve until ``--count`` messages, the end of the first connection (``--once``), or
    forever; returns the summary (with ``--once``, ``problems`` non-empty is a failure).
    Prints ``listening on HOST:PORT`` to stderr first."""
    receiver = _Receiver(opts)
    access = opts.access
    listeners = await open_listeners(opts.host, opts.port, opts.unix_path)
    addresses = [listener_name(lst) for lst in listeners]
    if access.ssl_context is not None:
        eprint(describe_access(access))
    for address in addresses:  # with port 0, IPv4 and IPv6 may get different ports
        eprint(f"listening on {address}")
    try:
        with stop_signal_receiver() as signals:
            async with trio.open_nursery() as connections, trio.open_nursery() as nursery:
                receiver.nursery = nursery
                if opts.live:
                    nursery.start_soon(every_second, receiver.report)
                if opts.json_lines:
                    nursery.start_soon(json_lines, receiver.snapshot)
                if opts.metrics is not None:
                    await nursery.start(
                        partial(serve_metrics, per_connection=opts.metrics_per_connection),
                        *opts.metrics,
                        receiver.snapshot,
                    )
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
