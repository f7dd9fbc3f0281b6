"""What ``receive`` does with each stream, written once for both I/O layers.

:class:`Consumer` keeps the receiver's totals and problems, decides which stream may write
where (``_output``), consumes a stream batch by batch with ``receive_many(release=False)``
and releases each batch only once it is written and flushed (fsynced with ``--fsync``):
"delivered" means written (spec §8.5, §10.5). Pacing (``--rate``, ``--delay``) follows
an absolute schedule (:class:`flowproto.Pacer`), so a slow consumer does not drift. It
also makes the live line, the ``--json-lines``/``--metrics-port`` snapshot and the summary
(a dict whose keys are the JSON field names). It waits only through its
:class:`~flowproto.cli._layer.Layer`; each run (``_run_receive`` on Trio,
``_run_asyncio`` on asyncio) serves connections and runs :meth:`Consumer.consume` per
stream in its own idiom, and says how a stream's consumption is stopped
(:meth:`Consumer.stoppable`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from flowproto import (
    AutoTune,
    CodecName,
    ErrorCode,
    MemoryBudget,
    MessageDecodeError,
    RateLimitedLog,
    Settings,
    StreamResetError,
    StreamState,
    get_codec,
)
from flowproto.iolayer import ConnectionLostBase

from ._access import ReceiverAccess
from ._constants import BATCH_MESSAGES
from ._latency import Latencies
from ._layer import Layer
from ._metrics import Watched
from ._output import OutputRefused, Outputs, Sink
from ._pace import Pace
from ._printing import fmt_bytes, fmt_latency, json_line, per_second, summary_rate
from ._progress import eprint

#: A ``FlowStream`` of either I/O layer (the same public names).
FlowStream = Any


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


class Consumer:
    """The consumer server's state: totals over every connection and stream.

    ``sessions``: the layer keeps sessions (spec §15), so a stream may resume
    ``--output FILE.partial`` where it ends (spec §15.10). A run subclasses it for its
    loop: :meth:`stop` ends the serving, :meth:`stop_handle` and :meth:`stoppable` let
    :meth:`stop` end one stream's consumption (a Trio cancel scope, an asyncio task);
    ``open_streams`` maps each stream being consumed to its handle.
    """

    def __init__(self, opts: ReceiveOptions, layer: Layer, *, sessions: bool) -> None:
        self.opts = opts
        self.layer = layer
        self.sessions = sessions  # the layer keeps sessions (spec §15): cold resumes
        self.pace = Pace(opts.rate, opts.delay, layer=layer)
        self.latencies = Latencies() if opts.latency else None
        self.messages = 0
        self.bytes = 0
        self.connections = 0
        self.streams_seen = 0
        # Each stream being consumed, and what stop() uses to end it.
        self.open_streams: dict[FlowStream, Any] = {}
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
        # for --json-lines and --metrics-port (spec §14)
        self.watched = Watched("receive", opts.metrics_per_connection, layer.now)
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
        # Streams carry raw bytes; --msgpack decodes here, so a bad message is found
        # before anything of its batch is released.
        self._decode = None if opts.codec == "raw" else get_codec(opts.codec).decode
        self._reported = (0, 0)  # messages, bytes at the last live line
        self._reported_at = 0.0  # the loop's time of the last live line

    # --- the run's part ----------------------------------------------------------------

    def stop(self) -> None:
        """Stop serving: streams that are done end cleanly, the others are reset, and the
        connections close with GOAWAY."""
        raise NotImplementedError

    def stop_handle(self) -> Any:
        """What :meth:`stop` uses to end the consumption of the stream starting now."""
        raise NotImplementedError

    async def stoppable(self, handle: Any, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work()`` until it returns or :meth:`stop` ends it through ``handle``."""
        raise NotImplementedError

    # --- every stream --------------------------------------------------------------------

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
        if not self.warnings.warning((host, kind), self.layer.now(), "%s", text):
            self.warnings_suppressed += 1

    async def consume(self, stream: FlowStream, peer: str, connection: int) -> None:
        """Consume one stream into its output until it ends, or until :meth:`stop`."""
        handle = self.stop_handle()
        self.open_streams[stream] = handle
        self.watched.add_stream(stream, peer)
        self.streams_seen += 1
        if self.first is None:
            self.first = self.layer.now()
        sink: Sink | None = None
        complete = False
        # spec §15.10: a stream of a cold resume starts where the output ends (sessions)
        resume = self.sessions and stream.awaits_start
        try:
            if self.stopping:
                await stream.reset(ErrorCode.CANCEL, "the receiver is stopping")
                return
            try:
                sink = self.outputs.claim(peer, connection, stream.stream_id, resume=resume)
            except OutputRefused as exc:
                # spec §6.4: nothing of this stream was processed, so REFUSED_STREAM.
                self.refused_streams += 1
                self.watched.count_reset(ErrorCode.REFUSED_STREAM)
                self.problem(
                    f"stream {stream.stream_id} from {peer}: refused: {exc}", peer, "refused"
                )
                await stream.reset(ErrorCode.REFUSED_STREAM, REFUSED_REASON)
                return
            if resume:
                held = sink.held if sink is not None else 0
                stream.start_at(0, held)
                if held:
                    eprint(f"resuming stream {stream.stream_id} after its {held} bytes held")
            await self.stoppable(handle, lambda: self._consume(stream, sink))
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
        except (StreamResetError, ConnectionLostBase) as exc:
            # Before OSError: asyncio's ConnectionLostError is a ConnectionError too, and a
            # lost sender is not an output that cannot be written.
            self.watched.count_failure(exc)
            if not self.stopping:
                self.problem(f"stream {stream.stream_id} from {peer}: {exc}", peer, "stream")
        except OSError as exc:
            self.problem(
                f"stream {stream.stream_id} from {peer}: cannot write the output: {exc}",
                peer,
                "write",
            )
            await stream.reset(ErrorCode.CANCEL, f"the receiver cannot write its output: {exc}")
            self.watched.count_reset(ErrorCode.CANCEL)
        finally:
            if not complete:
                self.outputs.finish(sink, complete=False)
            self.open_streams.pop(stream, None)
            self.watched.forget_stream(stream)

    async def _consume(self, stream: FlowStream, sink: Sink | None) -> None:
        """Take the stream's messages until the sender ends it, ``--count`` is reached, or
        :meth:`stop` ends this."""
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
                # Stopped here, it took nothing.
                batch = await stream.receive_many(limit, release=False)
            except self.layer.end_of_stream:
                return  # the sender is done and everything was consumed
            self.last = self.layer.now()
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
            if sink.syncs:
                await self.layer.in_thread(sink.fsync)
        self.messages += len(batch)
        self.bytes += sum(map(len, batch))
        stream.release(len(batch))
        if rejected is not None:
            raise rejected

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

    def stop_on_signal(self, name: str) -> None:
        """Ctrl-C, SIGTERM (a service manager) and SIGHUP (a closed terminal) are how a
        server is stopped: stop cleanly, so the output is flushed and the summary printed."""
        self.signal = name
        self.interrupted = True
        self.stop()

    # --- what it says ----------------------------------------------------------------------

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
