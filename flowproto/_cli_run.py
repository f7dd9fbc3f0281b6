"""The async bodies of the ``flowproto`` commands; ``cli.py`` turns options into these calls.

Each ``run_*`` function takes plain values (no click), runs under ``trio.run``, writes
live statistics to stderr once a second, and returns its summary as a dict whose keys
are the JSON field names. Pacing (``--rate``) follows an absolute schedule, so a slow
consumer or a capped producer does not drift however long it runs. Errors the user can
act on (refused connection, lost peer, reset stream) come out as :class:`CliError` or as
the library's own exceptions; ``cli.py`` prints them as one line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO, Final

import trio

from ._autotune import AutoTune, MemoryBudget
from ._cli_metrics import Watched, json_lines, serve_metrics
from ._errors import ErrorCode, FlowProtoError
from ._frames import Settings
from ._state import StreamState
from .trio import (
    CodecName,
    ConnectionLostError,
    FlowStream,
    MessageDecodeError,
    StreamResetError,
    open_connection,
    open_flow_connection,
    serve,
)

#: Seconds a paced loop may fall behind its schedule before the schedule restarts (so
#: an idle gap is not made up by a burst).
MAX_PACING_LAG: Final = 1.0
#: Generated messages start with the sender's ``time.time_ns()``, 8 bytes big-endian.
TIMESTAMP_BYTES: Final = 8
#: Most messages one unpaced ``send_many`` / ``receive_many`` call handles.
BATCH_MESSAGES: Final = 256
#: Bytes the sender reads from its input per read in ``--lines`` mode.
READ_BLOCK: Final = 1 << 20
#: Seconds a closing connection waits for open streams (only after an error or Ctrl-C:
#: normally every stream has ended by then). Short, so Ctrl-C answers promptly.
CLOSE_GRACE: Final = 0.5

ProgressCallback = Callable[[int, str], None]


class CliError(Exception):
    """An error the user can act on; printed as one line, exit status 1."""


def eprint(line: str) -> None:
    """One line to stderr, flushed (tests read the receiver's stderr line by line)."""
    print(line, file=sys.stderr, flush=True)


# --- small helpers -----------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as in MB/s)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_address(sockname: Any) -> str:
    """A socket address as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6)."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


class Pacer:
    """Lets events through at ``rate`` per second on an absolute schedule, then ``delay``.

    Event n (from 0) passes no earlier than ``start + n / rate``, so the long-run rate is
    exact whatever each sleep overshoots. Shared by several tasks it paces their total.
    """

    def __init__(self, rate: float | None, delay: float = 0.0) -> None:
        self.rate = rate
        self.delay = delay
        self._start: float | None = None
        self._n = 0

    @property
    def active(self) -> bool:
        return bool(self.rate) or self.delay > 0

    async def wait(self) -> None:
        if self.rate:
            now = trio.current_time()
            if self._start is None:
                self._start = now
            due = self._start + self._n / self.rate
            if due < now - MAX_PACING_LAG:
                # Far behind (idle, or blocked on credit): restart the schedule instead of
                # catching up with a burst.
                self._start = now - self._n / self.rate
                due = now
            self._n += 1
            await trio.sleep_until(due)
        if self.delay > 0:
            await trio.sleep(self.delay)


class Latencies:
    """Message latencies in milliseconds, kept compactly for percentiles."""

    def __init__(self) -> None:
        self._values = array("d")
        self._mark = 0

    def add_message(self, message: Any, now_ns: int) -> None:
        if isinstance(message, (bytes, bytearray)) and len(message) >= TIMESTAMP_BYTES:
            sent_ns = int.from_bytes(message[:TIMESTAMP_BYTES], "big")
            self._values.append((now_ns - sent_ns) / 1e6)

    def summary(self, recent: bool = False) -> dict[str, float] | None:
        """p50/p99/max over every message, or over those since the last ``recent`` call."""
        values = self._values[self._mark :] if recent else self._values
        if recent:
            self._mark = len(self._values)
        if not values:
            return None
        ordered = sorted(values)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

        return {"p50": pick(0.50), "p99": pick(0.99), "max": round(ordered[-1], 3)}


def _fmt_latency(lat: dict[str, float] | None) -> str:
    if lat is None:
        return ""
    return f" | latency p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms max {lat['max']:.2f} ms"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"bytes_base64": base64.b64encode(bytes(obj)).decode("ascii")}
    return repr(obj)


def _json_line(message: Any) -> bytes:
    try:
        text = json.dumps(message, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):  # e.g. bytes used as a map key
        text = json.dumps({"repr": repr(message)})
    return text.encode("utf-8") + b"\n"


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


# --- receive -----------------------------------------------------------------------------


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


class _Receiver:
    """The consumer server's state: totals over every connection and stream."""

    def __init__(self, opts: ReceiveOptions) -> None:
        self.opts = opts
        self.pacer = Pacer(opts.rate, opts.delay)
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

    async def on_connection(self, transport: trio.SocketStream) -> None:
        if self.stopping:
            await transport.aclose()
            return
        peer = format_address(transport.socket.getpeername())
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
                ) as conn,
                trio.open_nursery() as nursery,
            ):
                self.watched.connections[conn] = peer
                # stop() cancels only this loop: leaving the block closes the connection
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
        count, pacer, output, lat = self.opts.count, self.pacer, self.opts.output, self.latencies
        paced = pacer.active
        try:
            while True:
                if paced:
                    await pacer.wait()
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
                    output.write(_json_line(m))

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

    async def report(self) -> None:
        last_messages, last_bytes = 0, 0
        tick = trio.current_time()
        while True:
            tick += 1.0
            await trio.sleep_until(tick)
            if self.first is None:
                continue  # no stream yet: nothing to say
            if self.opts.output is not None:
                self.opts.output.flush()
            dm, db = self.messages - last_messages, self.bytes - last_bytes
            last_messages, last_bytes = self.messages, self.bytes
            if not dm and not self.open_streams:
                continue
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
                f" | streams {len(stats)}" + _fmt_latency(lat)
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
            "msgs_per_s": round(_rate(self.messages, seconds), 1),
            "mb_per_s": round(_rate(self.bytes, seconds) / 1e6, 3),
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
    listeners = await trio.open_tcp_listeners(opts.port, host=opts.host)
    addresses = [format_address(lst.socket.getsockname()) for lst in listeners]
    for address in addresses:  # with port 0, IPv4 and IPv6 may get different ports
        eprint(f"listening on {address}")
    try:
        with _sigint_receiver() as signals:
            async with trio.open_nursery() as connections, trio.open_nursery() as nursery:
                receiver.nursery = nursery
                if opts.live:
                    nursery.start_soon(receiver.report)
                if opts.json_lines:
                    nursery.start_soon(json_lines, receiver.snapshot)
                if opts.metrics is not None:
                    await nursery.start(serve_metrics, *opts.metrics, receiver.snapshot)
                if signals is not None:
                    nursery.start_soon(receiver.stop_on_signal, signals)
                nursery.start_soon(
                    partial(
                        trio.serve_listeners,
                        receiver.on_connection,
                        listeners,
                        handler_nursery=connections,
                    )
                )
    finally:
        if opts.output is not None:
            opts.output.flush()
    result = receiver.summary(addresses[0])
    if opts.once and receiver.problems:
        raise CliError(receiver.problems[0])
    return result


# --- send --------------------------------------------------------------------------------


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
    json_lines: bool = False


class _Sender:
    def __init__(self, opts: SendOptions) -> None:
        self.opts = opts
        self.pacer = Pacer(opts.rate)
        self.streams: list[FlowStream] = []
        self._last = (0, 0, 0)  # messages, bytes, delivered at the last report

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

    async def report(self, start: float, progress: ProgressCallback | None) -> None:
        tick = start
        while True:
            tick += 1.0
            await trio.sleep_until(tick)
            self.report_once(tick - start, progress)

    def report_once(self, elapsed: float, progress: ProgressCallback | None) -> None:
        """One line of live statistics, or one step of the progress bar."""
        m, b, blocked, delivered, credit_m, credit_b = self.totals()
        last_m, last_b, last_delivered = self._last
        self._last = (m, b, delivered)
        line = (
            f"send {elapsed:5.1f}s: {m - last_m} msg/s {fmt_bytes(b - last_b)}/s"
            f" | total {m} msgs {fmt_bytes(b)} | credit {credit_m} msgs {fmt_bytes(credit_b)}"
            f" | blocked {blocked:.1f} s | delivered {delivered}"
        )
        if progress is not None:
            progress(delivered - last_delivered, line)  # done means consumed
        elif self.opts.live:
            eprint(line)

    async def produce(self, stream: FlowStream, count: int | None, deadline: float) -> None:
        try:
            with trio.move_on_at(deadline):
                if self.opts.input is not None:
                    await self._send_input(stream, self.opts.input)
                else:
                    await self._send_generated(stream, count)
            await stream.aclose()
            await self._wait_consumed(stream)
        except (StreamResetError, ConnectionLostError) as exc:
            delivered = exc.delivered
            raise CliError(
                f"{exc}; the receiver confirmed {delivered or 0} of {stream.messages_sent} "
                f"messages on stream {stream.stream_id}"
            ) from None

    async def _send_generated(self, stream: FlowStream, count: int | None) -> None:
        size, pacer = self.opts.size, self.pacer
        filler = bytes(size - TIMESTAMP_BYTES)
        sent = 0
        while count is None or sent < count:
            if pacer.active:
                await pacer.wait()
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
        read: Callable[[int], bytes] = getattr(source, "read1", source.read)
        msgpack_mode = self.opts.codec == "msgpack"
        if not self.opts.lines:
            size = self.opts.chunk_size
            while True:
                chunk = await trio.to_thread.run_sync(read, size)
                if not chunk:
                    return
                await self.pacer.wait()
                await stream.send(chunk)
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
                await self.pacer.wait()
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
                if exc.delivered != stream.messages_sent:
                    raise
                # Everything was consumed, then the stream ended abruptly (a receiver with
                # --count stops right after our last message): delivered, but say so.
                eprint(
                    f"flowproto: warning: after all {exc.delivered} messages were consumed: {exc}"
                )
                return


def _share(total: int | None, parts: int, index: int) -> int | None:
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


def _os_reason(exc: OSError) -> str:
    cause = exc.__cause__
    leaf: BaseException = flatten(cause)[0] if cause is not None else exc
    if isinstance(leaf, OSError) and leaf.errno is not None and leaf.errno > 0:
        return os.strerror(leaf.errno)
    if isinstance(leaf, OSError) and leaf.strerror:
        return leaf.strerror
    return str(leaf)


async def run_send(opts: SendOptions, progress: ProgressCallback | None) -> dict[str, Any]:
    """Connect, send, half-close, wait until the receiver consumed everything; summary."""
    sender = _Sender(opts)
    address = format_address((opts.host, opts.port))
    connected = False
    try:
        async with open_connection(
            opts.host, opts.port, codec=opts.codec, close_grace=CLOSE_GRACE, pacing=opts.pacing
        ) as conn:
            connected = True
            peer = conn.peer_settings
            assert peer is not None
            largest = opts.chunk_size if opts.input is not None else opts.size
            if (opts.input is None or not opts.lines) and largest > peer.max_message_bytes:
                option = "--chunk-size" if opts.input is not None else "--size"
                raise CliError(
                    f"{option} {largest} is over the receiver's max_message_bytes = "
                    f"{peer.max_message_bytes}"
                )
            sender.streams = [await conn.open_stream() for _ in range(opts.streams)]
            watched = Watched()  # spec §14, for --json-lines and --metrics-port
            watched.connections[conn] = address
            watched.streams = dict.fromkeys(sender.streams, address)

            def snapshot() -> dict[str, Any]:
                m, b = sender.totals()[:2]
                return watched.snapshot(role="send", messages=m, bytes=b)

            start = trio.current_time()
            deadline = start + opts.duration if opts.duration is not None else math.inf
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.report, start, progress)
                if opts.json_lines:
                    nursery.start_soon(json_lines, snapshot)
                if opts.metrics is not None:
                    await nursery.start(serve_metrics, *opts.metrics, snapshot)
                async with trio.open_nursery() as producers:
                    for i, stream in enumerate(sender.streams):
                        producers.start_soon(
                            sender.produce, stream, _share(opts.count, opts.streams, i), deadline
                        )
                nursery.cancel_scope.cancel()
            seconds = trio.current_time() - start
            if progress is not None:
                sender.report_once(seconds, progress)  # the bar's last step
            m, b, blocked, delivered, _, _ = sender.totals()
    except OSError as exc:
        if connected:
            raise
        raise CliError(f"cannot connect to {address}: {_os_reason(exc)}") from None
    result = {
        "messages": m,
        "bytes": b,
        "seconds": round(seconds, 6),
        "msgs_per_s": round(_rate(m, seconds), 1),
        "mb_per_s": round(_rate(b, seconds) / 1e6, 3),
        "seconds_blocked": round(blocked, 6),
        "delivered": delivered,
        "streams": opts.streams,
    }
    if delivered != m:
        raise CliError(f"the receiver confirmed {delivered} of {m} messages")
    return result


# --- demo --------------------------------------------------------------------------------


@dataclass
class DemoResult:
    sent: int
    received: int
    delivered: int
    window: int
    peak_buffered: int
    seconds_blocked: float

    @property
    def ok(self) -> bool:
        return self.sent == self.received == self.delivered and self.peak_buffered <= self.window


async def run_demo(duration: float, rate: float, window: int, size: int = 100) -> DemoResult:
    """A fast sender and a slow receiver on one loopback connection, in this process."""
    pacer = Pacer(rate)
    received = 0
    peak = 0
    receiver_stream: FlowStream | None = None
    sender_done = trio.Event()
    settings = Settings(
        stream_messages=window,
        stream_bytes=max(window * size, 65536),
        max_message_bytes=65536,
    )

    async def slow_consumer(stream: FlowStream) -> None:
        nonlocal received, peak, receiver_stream
        receiver_stream = stream
        while True:
            await pacer.wait()
            try:
                batch = await stream.receive_many(1)
            except trio.EndOfChannel:
                return  # serve() half-closes our side: the sender learns all was consumed
            peak = max(peak, stream.statistics().buffered_messages + len(batch))
            received += len(batch)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve,
                slow_consumer,
                0,
                host="127.0.0.1",
                settings=settings,
                codec="raw",
                close_grace=CLOSE_GRACE,
                autotune=False,  # the demo shows a fixed window (spec §8.6), not §8.9
            )
        )
        host, port = listeners[0].socket.getsockname()[:2]
        print(
            f"flowproto demo: a fast sender and a slow receiver, one connection ({host}:{port})\n"
            f"  receiver: consumes {rate:g} messages/s; its credit (window) lets the sender\n"
            f"            have at most {window} messages it has not consumed yet\n"
            f"  sender:   sends {size}-byte messages as fast as its credit allows, "
            f"for {duration:g} s\n\n"
            f"  {'time':>5}  {'sent':>6}  {'received':>8}  {'receiver buffer':>15}"
            f"  {'sender blocked on credit':>24}",
            flush=True,
        )
        async with open_connection(host, port, codec="raw", close_grace=CLOSE_GRACE) as conn:
            stream = await conn.open_stream()
            start = trio.current_time()

            async def report() -> None:
                tick = start
                while not sender_done.is_set():
                    tick += 1.0
                    await trio.sleep_until(tick)
                    buffered = (
                        receiver_stream.statistics().buffered_messages
                        if receiver_stream is not None
                        else 0
                    )
                    print(
                        f"  {tick - start:3.0f} s  {stream.messages_sent:6}  {received:8}"
                        f"  {f'{buffered} of {window}':>15}"
                        f"  {f'{stream.seconds_blocked:.2f} s':>24}",
                        flush=True,
                    )

            nursery.start_soon(report)
            payload = bytes(size)
            with trio.move_on_at(start + duration):
                while True:
                    await stream.send_many([payload] * window)
            sender_done.set()
            await stream.aclose()
            with trio.move_on_after(10), contextlib.suppress(trio.EndOfChannel):
                await stream.receive()  # the receiver ends its side once it consumed ours
            st = stream.statistics()
        nursery.cancel_scope.cancel()
    return DemoResult(
        sent=st.messages_sent,
        received=received,
        delivered=st.delivered or 0,
        window=window,
        peak_buffered=peak,
        seconds_blocked=st.seconds_blocked,
    )


# --- errors ------------------------------------------------------------------------------

#: What ends a command with one line on stderr and exit status 1 (never a traceback).
EXPECTED_ERRORS: Final = (
    CliError,
    OSError,
    trio.BrokenResourceError,  # includes ConnectionLostError
    FlowProtoError,  # includes StreamResetError, HandshakeTimeout, MessageDecodeError
)


def flatten(exc: BaseException) -> list[BaseException]:
    """The leaf exceptions of an exception group (nurseries wrap what they raise)."""
    subs = getattr(exc, "exceptions", None)
    if isinstance(subs, tuple) and subs and all(isinstance(e, BaseException) for e in subs):
        return [leaf for e in subs for leaf in flatten(e)]
    return [exc]


def describe(exc: BaseException) -> str:
    """One line for the user."""
    if isinstance(exc, OSError) and exc.__cause__ is not None:
        return f"{exc}: {_os_reason(exc)}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
