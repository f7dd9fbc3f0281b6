"""What ``send`` does with each stream, written once for both I/O layers.

:class:`Sender` opens a stream, sends its share (a file, its lines, or generated messages
that start with their send time, for ``receive --latency``), half-closes it and waits for
the receiver to end its side, which it does after consuming everything. It keeps the
live line, the record of each failed stream and the summary (a dict whose keys are the
JSON field names). It waits only through its :class:`~flowproto.cli._layer.Layer` and uses
only what ``flowproto.trio`` and ``flowproto.asyncio`` streams both have; each run
(``_run_send`` on Trio, ``_run_asyncio`` on asyncio) connects, runs a producer per
stream and the reporters in its own idiom. A stream that ended normally with fewer
messages confirmed than sent is reported "unconfirmed" (spec §10.5), not as a failure.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

from flowproto import (
    CodecName,
    ConnectionStatistics,
    ErrorCode,
    Reconnect,
    Settings,
    StreamResetError,
    StreamStatistics,
)
from flowproto.iolayer import ConnectionLostBase

from ._access import SenderAccess
from ._constants import BATCH_MESSAGES, READ_BLOCK, TIMESTAMP_BYTES
from ._errors import CliError
from ._layer import Layer
from ._metrics import Watched
from ._pace import Pace
from ._printing import fmt_bytes, per_second, summary_rate
from ._progress import ProgressCallback, eprint

#: A ``FlowConnection`` or ``FlowStream`` of either I/O layer (the same public names).
FlowConnection = Any
FlowStream = Any
T = TypeVar("T")

#: New connections after a receiver lost the session (spec §15.10), at most.
MAX_RESTARTS = 100
#: How often a restarted receiver is tried (its deadline is --reconnect-timeout's).
RESTART_BACKOFF = Reconnect(initial_delay=0.05, max_delay=1.0)


@dataclass
class SendOptions:
    host: str
    port: int
    codec: CodecName
    streams: int = 1
    input: BinaryIO | None = None
    lines: bool = False
    chunk_size: int = 65536
    size: int = 100
    count: int | None = None
    duration: float | None = None
    rate: float | None = None
    live: bool = True
    pacing: bool = False  # spec §8.10
    metrics: tuple[str, int] | None = None  # --metrics-port (spec §14)
    metrics_per_connection: bool = False  # --metrics-per-connection
    json_lines: bool = False
    unix_path: str | None = None  # --connect unix:PATH (then host and port are unused)
    access: SenderAccess = field(default_factory=SenderAccess)  # TLS, retries (issue 12)
    reconnect_timeout: float | None = 60.0  # spec §15: resume a lost connection; None: never


class Sender:
    """The sending side: its streams, their producers and the live statistics.

    ``sessions``: the layer resumes lost connections (spec §15), so the summary reports
    them and ``--input FILE`` may start where a restarted receiver's output ends.
    """

    def __init__(self, opts: SendOptions, layer: Layer, *, sessions: bool) -> None:
        self.opts = opts
        self.layer = layer
        self.sessions = sessions
        self.pace = Pace(opts.rate, layer=layer)
        self.streams: list[FlowStream] = []  # in the order they opened
        self.unopened: list[ConnectionLostBase] = []  # why a stream could not open
        # One entry per stream that failed (at most --streams): the others go on.
        self.failed: list[dict[str, Any]] = []
        self._last = (0, 0, 0)  # messages, bytes, delivered at the last report
        self._last_report = 0.0  # seconds since the start, at the last report
        self.signal: str | None = None  # the name of the signal that stopped the sending
        # spec §15.10: --input FILE, raw, one stream, with sessions: a receiver restarted
        # on the same output resumes after what it holds.
        self.cold = (
            sessions
            and opts.reconnect_timeout is not None
            and opts.codec == "raw"
            and opts.streams == 1
            and opts.input is not None
            and _seekable(opts.input)
        )
        self.restart = False  # the receiver lost the session: go on on a new connection
        self.resumed_at = 0  # where the last connection's stream started (bytes)
        # spec §14, for --json-lines and --metrics-port: resets counted by code
        self.watched = Watched("send", opts.metrics_per_connection, layer.now)

    def totals(self) -> tuple[int, int, float, int, int, int]:
        """messages, bytes, seconds blocked, delivered, credit messages, credit bytes."""
        stats = [s.statistics() for s in self.streams]
        return (
            sum(s.messages_sent for s in stats),
            sum(s.bytes_sent for s in stats),
            sum(s.seconds_blocked for s in stats),
            sum(s.delivered or 0 for s in stats),
            sum(s.send_credit_messages for s in stats),
            sum(s.send_credit_bytes for s in stats),
        )

    def snapshot(self) -> dict[str, Any]:
        """The spec §14 statistics, for --json-lines and --metrics-port."""
        m, b = self.totals()[:2]
        return self.watched.snapshot(role="send", messages=m, bytes=b)

    def report(self, elapsed: float, progress: ProgressCallback | None) -> None:
        """One line of live statistics, or one step of the progress bar."""
        m, b, blocked, delivered, credit_m, credit_b = self.totals()
        last_m, last_b, last_delivered = self._last
        self._last = (m, b, delivered)
        # Per second over the interval really covered: the last one may be short.
        interval, self._last_report = elapsed - self._last_report, elapsed
        rate_m = per_second(m - last_m, interval)
        rate_b = per_second(b - last_b, interval)
        line = (
            f"send {elapsed:5.1f}s: {rate_m:.0f} msg/s {fmt_bytes(rate_b)}/s"
            f" | total {m} msgs {fmt_bytes(b)} | credit {credit_m} msgs {fmt_bytes(credit_b)}"
            f" | blocked {blocked:.1f} s | delivered {delivered}"
        )
        if progress is not None:
            progress(delivered - last_delivered, line)  # done means consumed
        elif self.opts.live:
            eprint(line)

    async def produce(self, conn: FlowConnection, deadline: float, address: str) -> None:
        """Open a stream, send a share of the messages on it, wait until it is consumed.

        The stream opens when the receiver's max_streams allow one more (spec §6.4), so
        more --streams than that run as earlier ones finish; the n-th stream to open gets
        the n-th share. A stream that cannot open before the deadline sends nothing; one
        that cannot open because the receiver sent GOAWAY (spec §10.4) is counted in
        ``unopened`` while the open ones finish. A reset or a lost connection fails this
        stream alone (spec §10.3): it is recorded in ``failed`` and the others go on.
        """
        opened: list[FlowStream] = []
        cold = self.cold and conn.resumable  # spec §15.10: the receiver says where to start

        async def open_one() -> None:
            opened.append(
                await (conn.open_stream(await_start=True) if cold else conn.open_stream())
            )

        try:
            await self.layer.until(deadline, open_one)
        except ConnectionLostBase as exc:
            self.unopened.append(exc)
            return
        if not opened:
            return
        stream = opened[0]
        count = _share(self.opts.count, self.opts.streams, len(self.streams))
        self.streams.append(stream)
        self.watched.add_stream(stream, address)
        try:
            await self.layer.until(deadline, lambda: self._send(stream, count))
            await stream.aclose()
            await self._wait_consumed(stream)
        except (StreamResetError, ConnectionLostBase) as exc:
            if cold and exc.error_code == ErrorCode.SESSION_UNKNOWN:
                # spec §15.6, §15.10: the receiver restarted and lost the session; a new
                # connection goes on from what its output holds.
                self.restart = True
                return
            self.watched.count_failure(exc)
            delivered = exc.delivered or 0
            sent = stream.messages_sent
            if _rejected(exc):
                # spec §10.5 (1.1): the final count of accepted messages; the rest were not
                # delivered, whatever credit said before.
                error = (
                    f"{exc}; the receiver accepted {delivered} of {sent} messages on stream "
                    f"{stream.stream_id}, the rest were not delivered"
                )
            else:
                error = (
                    f"{exc}; the receiver confirmed {delivered} of {sent} messages on stream "
                    f"{stream.stream_id}"
                )
            self.failed.append(
                {"stream": stream.stream_id, "sent": sent, "delivered": delivered, "error": error}
            )

    async def _send(self, stream: FlowStream, count: int | None) -> None:
        if self.opts.input is not None:
            await self._send_input(stream, self.opts.input)
        else:
            await self._send_generated(stream, count)

    async def _send_generated(self, stream: FlowStream, count: int | None) -> None:
        size, pace = self.opts.size, self.pace
        filler = bytes(size - TIMESTAMP_BYTES)
        sent = 0
        while count is None or sent < count:
            if pace.active:
                await pace.wait()
                await stream.send(time.time_ns().to_bytes(TIMESTAMP_BYTES, "big") + filler)
                sent += 1
                continue
            n = min(BATCH_MESSAGES, max(1, 256 * 1024 // size))
            if count is not None:
                n = min(n, count - sent)
            stamp = time.time_ns().to_bytes(TIMESTAMP_BYTES, "big")
            before = stream.messages_sent
            try:
                await stream.send_many([stamp + filler] * n)
            finally:
                sent += stream.messages_sent - before

    async def _send_input(self, stream: FlowStream, source: BinaryIO) -> None:
        if self.cold:
            _, start = await stream.started()  # spec §15.10: (0, 0) unless cold
            size = os.fstat(source.fileno()).st_size
            if start > size:
                await stream.reset(
                    ErrorCode.CANNOT_REPRODUCE,
                    f"the receiver holds {start} bytes, the input only {size}",
                )
                raise CliError(
                    f"the receiver's output holds {start} bytes, more than the {size} of "
                    "--input: not the same file?"
                )
            source.seek(start)
            if start:
                eprint(f"resuming after the {start} bytes the receiver's output holds")
            self.resumed_at = start
        read: Callable[[int], bytes] = getattr(source, "read1", source.read)
        in_thread = self.layer.in_thread
        msgpack_mode = self.opts.codec == "msgpack"
        if not self.opts.lines:
            size = self.opts.chunk_size
            if self.pace.active:  # --rate, --delay: one chunk at a time, on schedule
                while chunk := await in_thread(read, size):
                    await self.pace.wait()
                    await stream.send(chunk)
                return
            # Unpaced: read whole chunks by the block (one thread hop per READ_BLOCK, not
            # per chunk) and send each block's chunks in one batch.
            block_size = max(size, READ_BLOCK // size * size)
            while data := await in_thread(read, block_size):
                await stream.send_many([data[i : i + size] for i in range(0, len(data), size)])
            return
        pending = b""
        while True:
            block = await in_thread(read, READ_BLOCK)
            data = pending + block
            lines = data.splitlines(keepends=True)
            if block and lines and not lines[-1].endswith((b"\n", b"\r")):
                pending = lines.pop()  # the last line is not complete yet
            else:
                pending = b""
            for line in lines:
                await self.pace.wait()
                if msgpack_mode:
                    await stream.send(line.rstrip(b"\r\n").decode("utf-8", "replace"))
                else:
                    await stream.send(line)
            if not block:
                return

    async def _wait_consumed(self, stream: FlowStream) -> None:
        """Wait for the receiver's END_STREAM: it ends its side after consuming ours."""
        while True:
            try:
                await stream.receive_many()  # the receiver sends nothing; ignore it if it does
            except self.layer.end_of_stream:
                return
            except (StreamResetError, ConnectionLostBase) as exc:
                if _rejected(exc) or exc.delivered != stream.messages_sent:
                    raise
                # Everything was consumed, then the stream ended abruptly (a receiver with
                # --count stops right after our last message): delivered, but say so.
                eprint(
                    f"flowproto: warning: after all {exc.delivered} messages were consumed: {exc}"
                )
                return

    def stop(self, signal: str) -> None:
        """Ctrl-C, SIGTERM, SIGHUP: the run stops the producers, then :meth:`finish`."""
        self.signal = signal

    async def finish(self, seconds: float, progress: ProgressCallback | None) -> None:
        """After the producers: a stop signal resets the streams still open (CANCEL, spec
        §10.3), so what the receiver confirmed by then is in their statistics; streams
        that never opened after GOAWAY fail the command; else the bar's last step.

        Raises:
            CliError: some streams never opened (spec §10.4).
        """
        opts = self.opts
        if self.signal is not None:
            for stream in self.streams:
                await stream.reset(ErrorCode.CANCEL, f"the sender was stopped ({self.signal})")
            return
        if self.unopened:  # spec §10.4: after GOAWAY no stream opens; the open ones finished
            what = f"{len(self.unopened)} of {opts.streams} streams never opened"
            if opts.count is not None:
                shares = [
                    _share(opts.count, opts.streams, i) or 0 for i in range(len(self.streams))
                ]
                what += f" ({opts.count - sum(shares)} messages not sent)"
            raise CliError(f"{self.unopened[0]}: {what}")
        if progress is not None:
            self.report(seconds, progress)  # the bar's last step

    def summary(
        self,
        seconds: float,
        final: Sequence[StreamStatistics],
        session: ConnectionStatistics | None = None,
        restarts: int = 0,
    ) -> dict[str, Any]:
        """The summary from every stream's ``final`` statistics (taken at one moment);
        with ``session`` (spec §15.11), the connection's resumptions too."""
        m = sum(st.messages_sent for st in final)
        b = sum(st.bytes_sent for st in final)
        result: dict[str, Any] = {
            "messages": m,
            "bytes": b,
            "seconds": round(seconds, 6),
            "msgs_per_s": summary_rate(m, seconds),
            "mb_per_s": summary_rate(b, seconds, 1e6, 3),
            "seconds_blocked": round(sum(st.seconds_blocked for st in final), 6),
            "delivered": sum(st.delivered or 0 for st in final),
            "streams": self.opts.streams,
            "failed_streams": self.failed,
            "per_stream": [
                {"stream": st.stream_id, "sent": st.messages_sent, "confirmed": st.delivered or 0}
                for st in final
            ],
            "interrupted": self.signal is not None,
            "signal": self.signal,
        }
        if session is not None:  # spec §15.11
            result["restarts"] = restarts
            result["resumed_at_bytes"] = self.resumed_at
            result["reconnects"] = session.reconnects
            result["messages_retransmitted"] = session.messages_retransmitted
            result["bytes_retransmitted"] = session.bytes_retransmitted
            result["retained_bytes_peak"] = session.retained_bytes_peak
        if self.signal is not None:
            return result  # the streams were reset on purpose: neither failed nor unconfirmed
        failed_ids = {f["stream"] for f in self.failed}
        ended = [st for st in final if st.stream_id not in failed_ids]
        ended_sent = sum(st.messages_sent for st in ended)
        ended_delivered = sum(st.delivered or 0 for st in ended)
        if ended_delivered != ended_sent:
            # spec §10.5 (1.1): these streams ended normally (the failed ones are reported on
            # their own), but the receiver did not report all it consumed: unconfirmed, which
            # is no failure.
            result["unconfirmed"] = ended_sent - ended_delivered
            eprint(
                f"flowproto: warning: unconfirmed: {ended_delivered} of {ended_sent} confirmed "
                "(the receiver ended its streams without reporting the rest consumed; spec §10.5)"
            )
        return result


class Restarts:
    """The new connections of a ``send`` whose receiver restarted and lost the session
    (spec §15.10), written once for both runs: each connection's :class:`Sender` says
    whether it must go on (:meth:`again`), and :meth:`connect` then tries the restarted
    receiver until it is back."""

    def __init__(self, opts: SendOptions, layer: Layer) -> None:
        self.opts = opts
        self.layer = layer
        self.count = 0  # the summary's ``restarts``
        self._deadline = -math.inf  # no retrying the first connection (see --retry-for)

    def again(self, sender: Sender) -> bool:
        """After a connection's sending: True if ``sender`` found that the receiver lost
        the session (and was not stopped, nor restarted :data:`MAX_RESTARTS` times): a
        new connection goes on from what the receiver's output holds (spec §15.10)."""
        if not sender.restart or sender.signal is not None or self.count >= MAX_RESTARTS:
            return False
        self.count += 1
        assert self.opts.reconnect_timeout is not None  # sender.restart needs sessions
        self._deadline = self.layer.now() + self.opts.reconnect_timeout
        eprint("flowproto: the receiver lost the session (restarted?); connecting anew")
        return True

    async def connect(self, connect: Callable[[], Awaitable[T]]) -> T:
        """``connect()``; after a restart, again by :data:`RESTART_BACKOFF` (a
        :class:`flowproto.Reconnect` policy) until the receiver is back or
        ``--reconnect-timeout`` passes.

        Raises:
            CliError: ``connect()``'s, once the deadline passed (at once for the first).
        """
        delays = RESTART_BACKOFF.delays()
        while True:
            try:
                return await connect()
            except CliError:
                delay = next(delays)
                if self.layer.now() + delay >= self._deadline:
                    raise
            await self.layer.sleep_until(self.layer.now() + delay)


def _seekable(source: BinaryIO) -> bool:
    """A regular file, which a cold resume can start anywhere (spec §15.10)."""
    try:
        return source.seekable() and stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def _rejected(exc: Exception) -> bool:
    """A RESET(REJECTED): the receiving application refused a message (spec §5.7, 1.1)."""
    return isinstance(exc, StreamResetError) and exc.error_code == ErrorCode.REJECTED


def _share(total: int | None, parts: int, index: int) -> int | None:
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


def check_peer(opts: SendOptions, peer: Settings | None) -> None:
    """Before sending, against the receiver's settings (its HELLO): a generated message or
    an input chunk must fit its max_message_bytes; more ``--streams`` than its max_streams
    (spec §6.4) run in turns, which is said once, so a wait for a free stream is never
    silent.

    Raises:
        CliError: a message is over the receiver's max_message_bytes.
    """
    assert peer is not None  # the handshake is done
    largest = opts.chunk_size if opts.input is not None else opts.size
    if (opts.input is None or not opts.lines) and largest > peer.max_message_bytes:
        option = "--chunk-size" if opts.input is not None else "--size"
        raise CliError(
            f"{option} {largest} is over the receiver's max_message_bytes = "
            f"{peer.max_message_bytes}"
        )
    if opts.streams > peer.max_streams:
        eprint(
            f"flowproto: warning: --streams {opts.streams} is over the receiver's max_streams "
            f"= {peer.max_streams}: at most {peer.max_streams} are open at once, the rest "
            "open as those finish"
        )
