"""The ``send`` command's run: connect, send, and wait until everything was consumed.

:func:`run_send` takes plain values (:class:`SendOptions`, no click): it sends a file,
its lines, or generated messages (each starting with its send time, for ``receive
--latency``) over one or more streams, half-closes them, and waits for the receiver to
end its side, which it does after consuming everything. It returns the summary as a
dict whose keys are the JSON field names. A stream that ended normally with fewer messages
confirmed than sent is reported "unconfirmed" (spec §10.5), not as a failure.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO

import trio

from flowproto import CodecName, ErrorCode, Reconnect, Settings
from flowproto.trio import (
    ConnectionLostError,
    FlowConnection,
    FlowStream,
    StreamResetError,
)

from ._access import SenderAccess
from ._constants import BATCH_MESSAGES, CLOSE_GRACE, READ_BLOCK, TIMESTAMP_BYTES
from ._errors import CliError
from ._metrics import Watched, json_lines, serve_metrics
from ._pace import Pace
from ._printing import fmt_bytes, format_address, per_second, summary_rate
from ._progress import ProgressCallback, eprint, every_second
from ._signals import first_stop_signal, stop_signal_receiver
from ._transport import Retry, connect, connect_error, overloaded


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


class _Sender:
    """The sending side: its streams, their producers and the live statistics."""

    def __init__(self, opts: SendOptions) -> None:
        self.opts = opts
        self.pace = Pace(opts.rate)
        self.streams: list[FlowStream] = []  # in the order they opened
        self.unopened: list[ConnectionLostError] = []  # why a stream could not open
        # One entry per stream that failed (at most --streams): the others go on.
        self.failed: list[dict[str, Any]] = []
        self._last = (0, 0, 0)  # messages, bytes, delivered at the last report
        self._last_report = 0.0  # seconds since the start, at the last report
        self.signal: str | None = None  # the name of the signal that stopped the sending
        # spec §15.10: --input FILE, raw, one stream, with sessions: a receiver restarted
        # on the same output resumes after what it holds.
        self.cold = (
            opts.reconnect_timeout is not None
            and opts.codec == "raw"
            and opts.streams == 1
            and opts.input is not None
            and _seekable(opts.input)
        )
        self.restart = False  # the receiver lost the session: go on on a new connection
        self.resumed_at = 0  # where the last connection's stream started (bytes)
        self.watched: Watched | None = None  # for --metrics-port: resets counted by code

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

    async def produce(
        self, conn: FlowConnection, deadline: float, opened: Callable[[FlowStream], None]
    ) -> None:
        """Open a stream, send a share of the messages on it, wait until it is consumed.

        The stream opens when the receiver's max_streams allow one more (spec §6.4), so
        more --streams than that run as earlier ones finish; the n-th stream to open gets
        the n-th share. A stream that cannot open before the deadline sends nothing; one
        that cannot open because the receiver sent GOAWAY (spec §10.4) is counted in
        ``unopened`` while the open ones finish. A reset or a lost connection fails this
        stream alone (spec §10.3): it is recorded in ``failed`` and the others go on.
        """
        stream: FlowStream | None = None
        cold = self.cold and conn.resumable  # spec §15.10: the receiver says where to start
        with trio.move_on_at(deadline):
            try:
                stream = await conn.open_stream(await_start=cold)
            except ConnectionLostError as exc:
                self.unopened.append(exc)
                return
        if stream is None:
            return
        count = _share(self.opts.count, self.opts.streams, len(self.streams))
        self.streams.append(stream)
        opened(stream)
        try:
            with trio.move_on_at(deadline):
                if self.opts.input is not None:
                    await self._send_input(stream, self.opts.input)
                else:
                    await self._send_generated(stream, count)
            await stream.aclose()
            await self._wait_consumed(stream)
        except (StreamResetError, ConnectionLostError) as exc:
            if cold and exc.error_code == ErrorCode.SESSION_UNKNOWN:
                # spec §15.6, §15.10: the receiver restarted and lost the session; a new
                # connection goes on from what its output holds.
                self.restart = True
                return
            if self.watched is not None:
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
        _, start = await stream.started()  # spec §15.10: (0, 0) unless cold
        if self.cold:
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
        msgpack_mode = self.opts.codec == "msgpack"
        if not self.opts.lines:
            size = self.opts.chunk_size
            if self.pace.active:  # --rate, --delay: one chunk at a time, on schedule
                while chunk := await trio.to_thread.run_sync(read, size):
                    await self.pace.wait()
                    await stream.send(chunk)
                return
            # Unpaced: read whole chunks by the block (one thread hop per READ_BLOCK, not
            # per chunk) and send each block's chunks in one batch.
            block_size = max(size, READ_BLOCK // size * size)
            while data := await trio.to_thread.run_sync(read, block_size):
                await stream.send_many([data[i : i + size] for i in range(0, len(data), size)])
            return
        pending = b""
        while True:
            block = await trio.to_thread.run_sync(read, READ_BLOCK)
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
            except trio.EndOfChannel:
                return
            except (StreamResetError, ConnectionLostError) as exc:
                if _rejected(exc) or exc.delivered != stream.messages_sent:
                    raise
                # Everything was consumed, then the stream ended abruptly (a receiver with
                # --count stops right after our last message): delivered, but say so.
                eprint(
                    f"flowproto: warning: after all {exc.delivered} messages were consumed: {exc}"
                )
                return


def _seekable(source: BinaryIO) -> bool:
    """A regular file, which a cold resume can start anywhere (spec §15.10)."""
    try:
        return source.seekable() and stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def _rejected(exc: Exception) -> bool:
    """A RESET(REJECTED): the receiving application refused a message (spec §5.7, 1.1)."""
    return isinstance(exc, StreamResetError) and exc.error_code == ErrorCode.REJECTED


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


#: New connections after a receiver lost the session (spec §15.10), at most.
MAX_RESTARTS = 100
#: How often a restarted receiver is tried (its deadline is --reconnect-timeout's).
RESTART_BACKOFF = Reconnect(initial_delay=0.05, max_delay=1.0)


async def _connect_again(
    stack: AsyncExitStack, opts: SendOptions, address: str, deadline: float
) -> FlowConnection:
    """:func:`_connect`; after a restart (a ``deadline`` ahead), again by the reconnect
    policy's backoff (:class:`flowproto.Reconnect`) until the receiver is back or the
    deadline passes."""
    delays = RESTART_BACKOFF.delays()
    while True:
        try:
            return await _connect(stack, opts, address)
        except CliError:
            delay = next(delays)
            if trio.current_time() + delay >= deadline:
                raise
        await trio.sleep(delay)


def _share(total: int | None, parts: int, index: int) -> int | None:
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


def _check_message_size(opts: SendOptions, peer: Settings) -> None:
    """A generated message or an input chunk must fit the receiver's max_message_bytes."""
    largest = opts.chunk_size if opts.input is not None else opts.size
    if (opts.input is None or not opts.lines) and largest > peer.max_message_bytes:
        option = "--chunk-size" if opts.input is not None else "--size"
        raise CliError(
            f"{option} {largest} is over the receiver's max_message_bytes = "
            f"{peer.max_message_bytes}"
        )


def _note_stream_count(opts: SendOptions, peer: Settings) -> None:
    """More ``--streams`` than the receiver's max_streams (spec §6.4) run in turns: say so
    once, before sending, so a wait for a free stream is never silent."""
    if opts.streams > peer.max_streams:
        eprint(
            f"flowproto: warning: --streams {opts.streams} is over the receiver's max_streams "
            f"= {peer.max_streams}: at most {peer.max_streams} are open at once, the rest "
            "open as those finish"
        )


async def _stop_on_signal(
    sender: _Sender, signals: AsyncIterator[int], sending: trio.CancelScope
) -> None:
    # Ctrl-C, SIGTERM, SIGHUP: stop sending, then say what was sent and confirmed.
    sender.signal = await first_stop_signal(signals)
    sending.cancel()


async def _send_all(
    sender: _Sender,
    conn: FlowConnection,
    address: str,
    progress: ProgressCallback | None,
    signals: AsyncIterator[int] | None = None,
) -> float:
    """Run a producer per stream (each opens its own, spec §6.4) and the reporters; the
    seconds it took. A stop signal ends the sending and resets the streams still open
    (CANCEL, spec §10.3): what the receiver confirmed by then is in their statistics."""
    opts = sender.opts
    # spec §14, for --json-lines and --metrics-port
    watched = Watched("send", per_connection=opts.metrics_per_connection)
    watched.add_connection(conn, address)
    sender.watched = watched

    def opened(stream: FlowStream) -> None:
        watched.add_stream(stream, address)

    def snapshot() -> dict[str, Any]:
        m, b = sender.totals()[:2]
        return watched.snapshot(role="send", messages=m, bytes=b)

    start = trio.current_time()
    deadline = start + opts.duration if opts.duration is not None else math.inf
    async with trio.open_nursery() as nursery:
        nursery.start_soon(every_second, lambda tick: sender.report(tick - start, progress), start)
        if opts.json_lines:
            nursery.start_soon(json_lines, snapshot)
        if opts.metrics is not None:
            await nursery.start(
                partial(serve_metrics, per_connection=opts.metrics_per_connection),
                *opts.metrics,
                snapshot,
            )
        with trio.CancelScope() as sending:
            if signals is not None:
                nursery.start_soon(_stop_on_signal, sender, signals, sending)
            async with trio.open_nursery() as producers:
                for _ in range(opts.streams):
                    producers.start_soon(sender.produce, conn, deadline, opened)
        nursery.cancel_scope.cancel()
    if sender.signal is not None:
        for stream in sender.streams:
            await stream.reset(ErrorCode.CANCEL, f"the sender was stopped ({sender.signal})")
        return trio.current_time() - start
    if sender.unopened:  # spec §10.4: after GOAWAY no stream opens; the open ones finished
        what = f"{len(sender.unopened)} of {opts.streams} streams never opened"
        if opts.count is not None:
            shares = [_share(opts.count, opts.streams, i) or 0 for i in range(len(sender.streams))]
            what += f" ({opts.count - sum(shares)} messages not sent)"
        raise CliError(f"{sender.unopened[0]}: {what}")
    seconds = trio.current_time() - start
    if progress is not None:
        sender.report(seconds, progress)  # the bar's last step
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
    retry = Retry(opts.access.retry_for, address)
    restarts = 0
    restart_deadline = -math.inf  # no retrying the first connection (see --retry-for)
    while True:
        sender = _Sender(opts)
        try:
            with stop_signal_receiver() as signals:
                async with AsyncExitStack() as stack:
                    conn = await _connect_again(stack, opts, address, restart_deadline)
                    peer = conn.peer_settings
                    assert peer is not None
                    _check_message_size(opts, peer)
                    _note_stream_count(opts, peer)
                    seconds = await _send_all(sender, conn, address, progress, signals)
                    m, b, blocked, delivered, _, _ = sender.totals()
                    final = [st.statistics() for st in sender.streams]  # the same moment
                    session = conn.statistics()
            if sender.restart and restarts < MAX_RESTARTS:
                # spec §15.10: the receiver restarted and lost the session: a new
                # connection, whose stream starts after what the receiver's output holds.
                restarts += 1
                assert opts.reconnect_timeout is not None
                restart_deadline = trio.current_time() + opts.reconnect_timeout
                eprint("flowproto: the receiver lost the session (restarted?); connecting anew")
                continue
            break
        except Exception as exc:
            # spec §10.1: OVERLOADED means nothing was processed; retry while nothing was sent.
            refusal = overloaded(exc)
            if refusal is None or sender.totals()[0] > 0:
                raise
            await retry.wait(refusal)  # one line; CliError once --retry-for is spent
    result = {
        "messages": m,
        "bytes": b,
        "seconds": round(seconds, 6),
        "msgs_per_s": summary_rate(m, seconds),
        "mb_per_s": summary_rate(b, seconds, 1e6, 3),
        "seconds_blocked": round(blocked, 6),
        "delivered": delivered,
        "streams": opts.streams,
        "failed_streams": sender.failed,
        "per_stream": [
            {"stream": st.stream_id, "sent": st.messages_sent, "confirmed": st.delivered or 0}
            for st in final
        ],
        "interrupted": sender.signal is not None,
        "signal": sender.signal,
    }
    if opts.reconnect_timeout is not None:  # spec §15.11
        result["restarts"] = restarts
        result["resumed_at_bytes"] = sender.resumed_at
        result["reconnects"] = session.reconnects
        result["messages_retransmitted"] = session.messages_retransmitted
        result["bytes_retransmitted"] = session.bytes_retransmitted
        result["retained_bytes_peak"] = session.retained_bytes_peak
    if sender.signal is not None:
        return result  # the streams were reset on purpose: neither failed nor unconfirmed
    failed_ids = {f["stream"] for f in sender.failed}
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
