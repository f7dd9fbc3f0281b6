"""The Trio layer: flowproto over any ``trio.abc.Stream``; the only module that imports trio.

One :class:`FlowConnection` wraps one transport (TCP, TLS, a Unix socket, or a memory
stream in tests) and one sans-IO :class:`flowproto.Connection`. Three tasks run it:

- the **reader** feeds every chunk from the transport to the core and hands the events
  out: messages go to their stream's inbox, credit wakes blocked senders. It never
  waits on the application, so CREDIT and PING are processed while nothing is being
  consumed (spec §9 R2);
- the **writer** is the only task that writes to the transport: it sends everything the
  core has queued in one ``send_all``, so no partial frame is ever written and frames
  queued by many senders go out together;
- the **timer** runs the core's keepalive and BLOCKED repeats (spec §8.7, §11).

A :class:`FlowStream` behaves like a Trio channel of messages. ``send()`` waits only
for credit, then queues the whole message in the core without another await, so a
cancelled ``send()`` queued all of the message or none of it. ``receive()`` takes the
next message from the inbox and releases it, which is what returns credit to the
sender (spec §8.5). The inbox holds at most what we advertised, because the core
rejects anything past it (spec §8.4).

Messages are Python objects encoded with msgpack (``codec="msgpack"``, the default) or
raw ``bytes`` (``codec="raw"``), chosen per connection and overridable per stream.
"""

from __future__ import annotations

import logging
import math
import os
import socket as _stdlib_socket
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import msgpack
import trio

if sys.version_info < (3, 11):  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

from ._autotune import AutoTune, MemoryBudget, RateEstimator
from ._connection import Connection, Role
from ._errors import ErrorCode, FlowProtoError, KeepaliveTimeout, RemoteProtocolError
from ._events import (
    ConnectionClosed,
    CreditGranted,
    GoAwayReceived,
    HandshakeCompleted,
    MessagesReceived,
    PeerBlocked,
    PongReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from ._frames import Settings
from ._limits import Limits
from ._state import ConnectionState, StreamState

__all__ = [
    "Codec",
    "ConnectionLostError",
    "ConnectionStatistics",
    "FlowConnection",
    "FlowStream",
    "HandshakeTimeout",
    "MessageDecodeError",
    "StreamResetError",
    "StreamStatistics",
    "open_connection",
    "open_flow_connection",
    "open_unix_connection",
    "serve",
    "serve_listeners",
    "serve_unix",
]

#: Bytes read from the transport per ``receive_some`` call.
READ_SIZE: Final = 256 * 1024
#: Queued output after which ``send()`` yields so the writer can drain it.
YIELD_AFTER_BYTES: Final = 256 * 1024
#: Seconds a new connection may take to complete the preface and HELLO exchange.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds ``aclose()`` lets open streams finish after GOAWAY before resetting them.
DEFAULT_CLOSE_GRACE: Final = 5.0
#: Seconds a closing side waits for the peer's EOF after flushing its GOAWAY (spec §10.2).
CLOSE_LINGER: Final = 1.0
#: With pacing on, a stream sends at most this many times the peer's ``rate`` (spec §8.10).
PACING_HEADROOM: Final = 1.05
#: Seconds a frame may take to arrive once its first byte has (spec §11).
DEFAULT_FRAME_TIMEOUT: Final = 10.0
#: Seconds one write of at most WRITE_CHUNK bytes may take before the peer counts as gone.
DEFAULT_WRITE_TIMEOUT: Final = 10.0
#: Bytes per ``send_all`` call, so the write timeout measures progress (spec §11).
WRITE_CHUNK: Final = 256 * 1024
#: Queued output past which ``send()`` waits for the writer to take it (spec §10.7.2).
MAX_SEND_BACKLOG: Final = 1024 * 1024

CodecName = Literal["msgpack", "raw"]

_log = logging.getLogger("flowproto")


# --- codecs ------------------------------------------------------------------------------


class Codec(Protocol):
    """How application objects become message bytes and back."""

    name: str

    def encode(self, message: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class _RawCodec:
    name = "raw"

    def encode(self, message: Any) -> bytes:
        if not isinstance(message, (bytes, bytearray, memoryview)):
            raise TypeError(f"raw streams carry bytes, not {type(message).__name__}")
        return bytes(message)

    def decode(self, data: bytes) -> Any:
        return data


class _MsgpackCodec:
    name = "msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, message: Any) -> bytes:
        data: bytes = self._packer.pack(message)
        return data

    def decode(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:
            raise MessageDecodeError(f"message is not valid msgpack: {exc}", data) from None


_CODECS: Final[dict[str, Callable[[], Codec]]] = {"raw": _RawCodec, "msgpack": _MsgpackCodec}


def _codec(codec: CodecName | Codec) -> Codec:
    if isinstance(codec, str):
        try:
            return _CODECS[codec]()
        except KeyError:
            raise ValueError(f"unknown codec {codec!r}; use 'msgpack' or 'raw'") from None
    return codec


# --- exceptions -------------------------------------------------------------------------


class ConnectionLostError(trio.BrokenResourceError):
    """The connection ended before this operation could complete.

    Attributes:
        error_code: the GOAWAY code that ended it (ours or the peer's), or ``None`` if the
            transport just ended.
        reason: what happened, in words.
        last_stream_id: the peer's GOAWAY last_stream, if it sent one: our streams above
            it were never processed and are safe to retry (spec §10.4).
        delivered: for a stream operation, the messages the peer reported consumed on
            that stream (spec §10.5); later messages may or may not have been.
    """

    def __init__(
        self,
        reason: str,
        *,
        error_code: int | None = None,
        last_stream_id: int | None = None,
        delivered: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.delivered = delivered

    def for_stream(self, delivered: int | None) -> ConnectionLostError:
        """A copy naming what one stream knows was delivered."""
        return ConnectionLostError(
            self.reason,
            error_code=self.error_code,
            last_stream_id=self.last_stream_id,
            delivered=delivered,
        )


class StreamResetError(FlowProtoError):
    """The stream was reset (spec §10.3); no more messages either way.

    Attributes:
        error_code: the RESET's code.
        reason: its reason text.
        remote: True if the peer reset it.
        delivered: messages the peer reported consumed on this stream (spec §10.5).
        retryable: True if the peer never processed the stream (REFUSED_STREAM).
    """

    def __init__(
        self, stream_id: int, error_code: int, reason: str, remote: bool, delivered: int | None
    ) -> None:
        who = "the peer" if remote else "this side"
        super().__init__(
            f"stream {stream_id} was reset by {who}: {ErrorCode.describe(error_code)}"
            + (f" ({reason})" if reason else "")
        )
        self.stream_id = stream_id
        self.error_code = error_code
        self.reason = reason
        self.remote = remote
        self.delivered = delivered
        self.retryable = error_code == ErrorCode.REFUSED_STREAM


class HandshakeTimeout(FlowProtoError, TimeoutError):
    """The peer did not complete the preface and HELLO exchange in time (spec §3.4)."""


class MessageDecodeError(FlowProtoError, ValueError):
    """A received message could not be decoded by the stream's codec.

    The message was consumed (its credit went back); ``data`` holds its raw bytes.
    """

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


# --- statistics -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """A snapshot of one stream (field names are what the CLI and benchmarks print).

    Attributes:
        stream_id: the stream.
        state: its state (spec §6.3).
        send_credit_bytes: bytes we may send now (least of stream and connection credit).
        send_credit_messages: messages we may send now.
        receive_credit_bytes: bytes the peer may still send us before it needs CREDIT.
        receive_credit_messages: messages the peer may still send us.
        buffered_messages: messages received and not yet consumed (the inbox depth).
        buffered_bytes: their bytes.
        messages_sent: messages queued for the peer.
        bytes_sent: their bytes.
        messages_received: messages consumed by the application.
        bytes_received: their bytes.
        delivered: messages the peer reported consumed (spec §10.5).
        messages_in_flight: messages sent and not yet reported consumed: on the wire, or
            buffered at the peer, or consumed since its last report.
        seconds_blocked: total seconds ``send()`` waited for credit.
        consume_rate: messages consumed per second, smoothed (EMA over about a second).

    The fields below are the statistics names of spec §14.

    Attributes:
        blocked_on_peer_seconds: ``seconds_blocked``: the peer's consumer set the pace.
        blocked_on_peer_events: how many times a send had to wait for credit.
        blocked_on_app_seconds: seconds the stream was open for sending and not waiting
            for credit: this side's application (or machine) set the pace.
        peer_consume_rate / peer_queue_depth: the peer's latest feedback (spec §8.10).
        queue_depth_messages / queue_depth_bytes: received and not yet consumed.
        consume_rate_bytes: bytes consumed per second, smoothed.
        drain_seconds: ``queue_depth_messages / consume_rate``; ``None`` if the rate is 0.
        starvation_events: ``receive()`` calls that had to wait for a message.
        starved_seconds: the time they waited.
        window_bytes / window_messages: the receive window now (spec §8.9).
        window_reason: why it last changed (``static`` without auto-tuning).
        window_changes: how often the tuner changed it.
        peak_buffered_messages / peak_buffered_bytes: the most held at once for the
            application (received, not yet consumed, including a message still arriving
            in fragments). Kept by the core where credit is checked, not sampled, so it
            is exact: it never exceeds the largest window advertised (spec §8.4).
    """

    stream_id: int
    state: str
    send_credit_bytes: int
    send_credit_messages: int
    receive_credit_bytes: int
    receive_credit_messages: int
    buffered_messages: int
    buffered_bytes: int
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    delivered: int | None
    messages_in_flight: int
    seconds_blocked: float
    consume_rate: float
    blocked_on_peer_seconds: float = 0.0
    blocked_on_peer_events: int = 0
    blocked_on_app_seconds: float = 0.0
    peer_consume_rate: int | None = None
    peer_queue_depth: int | None = None
    queue_depth_messages: int = 0
    queue_depth_bytes: int = 0
    consume_rate_bytes: float = 0.0
    drain_seconds: float | None = 0.0
    starvation_events: int = 0
    starved_seconds: float = 0.0
    window_bytes: int = 0
    window_messages: int = 0
    window_reason: str = "static"
    window_changes: int = 0
    peak_buffered_messages: int = 0
    peak_buffered_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of a connection: totals over its streams, and the link.

    Attributes:
        state: the connection's state.
        streams: streams open now.
        send_credit_bytes: connection bytes we may send now.
        buffered_bytes: bytes received and not yet consumed, over all streams.
        receive_window_bytes: the connection window we advertise (the most we buffer).
        messages_sent / bytes_sent / messages_received / bytes_received: totals.
        seconds_blocked: total seconds senders waited for credit.
        rtt: the last round-trip time measured by PING, in seconds, or ``None``.
        glitches: frames the peer sent that cost work without progress (spec §10.7.1).
        blocked_on_peer_seconds: ``seconds_blocked`` (spec §14).
        starvation_events: ``receive()`` calls that had to wait, over all streams.
        rtt_min: the least round-trip time measured (the tuner's, spec §8.9), or ``None``.
        window_bytes: the connection window now; ``window_reason``: why (spec §8.9).
        budget_bytes / budget_committed_bytes / budget_share_bytes: the memory budget's
            capacity, what all its connections committed, and this connection's fair
            share; ``None`` without a budget.
    """

    state: str
    streams: int
    send_credit_bytes: int
    buffered_bytes: int
    receive_window_bytes: int
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    seconds_blocked: float
    rtt: float | None
    glitches: int = 0
    blocked_on_peer_seconds: float = 0.0
    starvation_events: int = 0
    rtt_min: float | None = None
    window_bytes: int = 0
    window_reason: str = "static"
    budget_bytes: int | None = None
    budget_committed_bytes: int | None = None
    budget_share_bytes: int | None = None


# --- streams -----------------------------------------------------------------------------


class FlowStream:
    """One flowproto stream: a channel of messages in each direction.

    Create with :meth:`FlowConnection.open_stream` or receive from
    :meth:`FlowConnection.accept_stream` (or a :func:`serve` handler).
    """

    def __init__(self, conn: FlowConnection, stream_id: int, codec: Codec) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.codec = codec
        # The core forgets a stream once it is closed, maybe in the same read as the
        # peer's last CREDIT; its record keeps what the peer reported consumed (spec §10.5).
        self._record = conn._core.stream_record(stream_id)
        # The one consumption-rate estimator (spec §8.9 rule 2), fed by release().
        self._rate = self._record.rate if self._record is not None else RateEstimator(1.0)
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._ended = False  # the peer sent END_STREAM
        self._send_closed = False  # we sent END_STREAM
        self._reset: StreamResetError | None = None
        self._lost: ConnectionLostError | None = None
        self._handler_scope: trio.CancelScope | None = None  # set by serve() for its handler
        self._receive_lot = trio.lowlevel.ParkingLot()
        self._send_lot = trio.lowlevel.ParkingLot()
        self._send_lock = trio.Lock()  # messages of concurrent send() calls do not interleave
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.bytes_received = 0
        self.seconds_blocked = 0.0
        self._blocked_since: float | None = None  # when the send() waiting now began
        # spec §14: why this stream waits, each way.
        self._opened_at = trio.current_time()
        self._send_done_at: float | None = None  # when it stopped being able to send
        self.blocked_on_peer_events = 0
        self.starvation_events = 0
        self.starved_seconds = 0.0
        self._pace_next = 0.0  # spec §8.10: when pacing lets the next message go

    def __repr__(self) -> str:
        return (
            f"<FlowStream {self.stream_id} {self._conn._core.stream_state(self.stream_id).value}>"
        )

    @property
    def connection(self) -> FlowConnection:
        """The connection this stream belongs to."""
        return self._conn

    # sending -----------------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._reset is not None:
            raise self._reset
        if self._lost is not None:
            raise self._lost
        if self._send_closed:
            raise trio.ClosedResourceError(f"stream {self.stream_id} was closed for sending")

    async def send(self, message: Any) -> None:
        """Send one message, waiting while there is no credit for all of it (spec §8.3).

        It also waits while more than ``MAX_SEND_BACKLOG`` bytes of output are queued
        and the transport is not taking them (spec §10.7.2).

        Cancellation: if cancelled, the message was queued whole or not at all, and
        ``messages_sent`` says which.

        Raises:
            StreamResetError: the stream was reset.
            ConnectionLostError: the connection ended.
            trio.ClosedResourceError: this side already closed the stream for sending.
            flowproto.LocalProtocolError: the message is over the peer's max_message_bytes.
        """
        payload = self.codec.encode(message)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._conn._pacing:
            await self._pace(1)
        await self._locked_send([payload])

    async def send_many(self, messages: Iterable[Any]) -> None:
        """Send several messages in order; the batch path for small messages.

        Cancellation: a prefix of the messages was queued, each whole; ``messages_sent``
        tells how many in all.
        """
        codec = self.codec
        if type(codec) is _RawCodec:
            # bytes go as they are (what encode() returns for them), checked in one pass
            payloads = list(messages)
            if not set(map(type, payloads)) <= {bytes}:
                payloads = [codec.encode(m) for m in payloads]
        else:
            payloads = [codec.encode(m) for m in messages]
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._conn._pacing:
            await self._pace(len(payloads))
        await self._locked_send(payloads)

    async def _pace(self, count: int) -> None:
        # spec §8.10: while the peer reports a standing queue, send at most a little
        # faster than its consumer; with no queue (or no feedback), do not pace at all.
        feedback = self._conn._core.peer_feedback(self.stream_id)
        if feedback is None or not feedback[0] or not feedback[1]:
            return
        now = trio.current_time()
        due = max(now, self._pace_next)
        self._pace_next = due + count / (PACING_HEADROOM * feedback[0])
        if due > now:
            await trio.sleep_until(due)

    async def _locked_send(self, payloads: list[bytes]) -> None:
        # Taking a free lock without a schedule point: with credit available, send()
        # queues the message without a scheduler round-trip (the writer runs when
        # _send_payloads yields, every YIELD_AFTER_BYTES).
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            await self._send_payloads(payloads)
        finally:
            lock.release()

    async def _send_payloads(self, payloads: list[bytes]) -> None:
        conn = self._conn
        core = conn._core
        sent = 0
        total = 0  # bytes queued
        while True:
            self._check_send()
            while conn._backlog >= MAX_SEND_BACKLOG:
                # spec §10.7.2: the transport is not taking what is queued; wait for it
                # before queuing more, whatever credit the peer grants.
                await conn._backlog_lot.park()
                self._check_send()
            n = core.send_messages(self.stream_id, payloads[sent:] if sent else payloads)
            if n:
                self.messages_sent += n
                done = payloads if n == len(payloads) else payloads[sent : sent + n]
                nbytes = sum(map(len, done))
                total += nbytes
                self.bytes_sent += nbytes
                conn._messages_sent += n
                conn._bytes_sent += nbytes
                conn._backlog += nbytes + 10 * n
                sent += n
                conn._wake_writer()
            if sent == len(payloads):
                break
            # Not enough credit for the next message: wait for CREDIT (spec §8.3, §8.7).
            conn._wake_writer()
            conn._wake_timer()
            self.blocked_on_peer_events += 1  # spec §14: credit starvation
            start = self._blocked_since = trio.current_time()
            try:
                await self._send_lot.park()
            finally:
                self._blocked_since = None
                waited = trio.current_time() - start
                self.seconds_blocked += waited
                conn._seconds_blocked += waited
        conn._unyielded_bytes += total + 16 * len(payloads)
        if conn._unyielded_bytes >= YIELD_AFTER_BYTES:
            # Let the writer drain what is queued: this keeps the output small and the
            # latency low. Shielded, because the message is already queued.
            conn._unyielded_bytes = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        """Half-close: the peer sees the end of our messages (END_STREAM, spec §7.2).

        Receiving goes on until the peer ends its side. Closing twice does nothing.
        """
        await trio.lowlevel.checkpoint()
        if self._send_closed or self._reset is not None or self._lost is not None:
            return
        async with self._send_lock:
            self._send_closed = True
            self._send_done_at = trio.current_time()
            core = self._conn._core
            if core.stream_state(self.stream_id) in (
                StreamState.OPEN,
                StreamState.HALF_CLOSED_REMOTE,
            ):
                core.end_stream(self.stream_id)
                self._conn._wake_writer()
            self._conn._after_stream_change(self)

    async def reset(self, error_code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abandon the stream both ways with RESET (spec §10.3); buffered messages are dropped."""
        await trio.lowlevel.checkpoint()
        if self._reset is not None or self._lost is not None:
            return
        core = self._conn._core
        core.reset_stream(self.stream_id, error_code, reason)
        self._on_reset(
            StreamResetError(
                self.stream_id, error_code, reason, False, core.peer_consumed(self.stream_id)
            )
        )
        self._conn._wake_writer()

    # receiving ---------------------------------------------------------------------------

    async def receive(self) -> Any:
        """Wait for the next message; consuming it returns its credit (spec §8.5).

        Raises:
            trio.EndOfChannel: the peer ended the stream and every message was received.
            StreamResetError: the stream was reset (buffered messages are dropped).
            ConnectionLostError: the connection ended; messages that arrived before it
                are received first.
            MessageDecodeError: the message could not be decoded (it was consumed).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._inbox:
            await self._starve()
        # No await from here on: cancelling receive() never loses a message.
        data = self._inbox.popleft()
        if self._consumed(len(data), 1):
            # A CREDIT is queued: let the writer send it now (spec §8.5). Shielded, because
            # the message is already consumed.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return self.codec.decode(data)

    async def receive_many(self, max_messages: int = 1024) -> list[Any]:
        """Wait for at least one message and return up to ``max_messages`` of them."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._inbox:
            await self._starve()
        inbox = self._inbox
        count = min(max_messages, len(inbox))
        if count == len(inbox):
            batch = list(inbox)
            inbox.clear()
        else:
            batch = [inbox.popleft() for _ in range(count)]
        if self._consumed(sum(map(len, batch)), count):
            # A CREDIT is queued: let the writer send it while the caller works on this
            # batch (spec §8.5). Shielded, because the batch is already consumed.
            await trio.lowlevel.cancel_shielded_checkpoint()
        if type(self.codec) is _RawCodec:
            return batch
        decode = self.codec.decode
        return [decode(d) for d in batch]

    def __aiter__(self) -> FlowStream:
        return self

    async def __anext__(self) -> Any:
        # Not an async generator: one left suspended when the loop body raises would be
        # finalized by the garbage collector, with a ResourceWarning (as trio's channels).
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def _starve(self) -> None:
        """Wait for a message (raising as ``_check_receive`` does); spec §14 counts it."""
        self._check_receive()
        start = trio.current_time()
        self.starvation_events += 1
        self._conn._starvation_events += 1
        try:
            while not self._inbox:
                self._check_receive()
                await self._receive_lot.park()
        finally:
            self.starved_seconds += trio.current_time() - start

    def _check_receive(self) -> None:
        if self._reset is not None:
            raise self._reset
        if self._ended:
            raise trio.EndOfChannel
        if self._lost is not None:
            raise self._lost

    def _consumed(self, nbytes: int, count: int) -> bool:
        """Count consumed messages and release their credit; True if a CREDIT was queued."""
        self._inbox_bytes -= nbytes
        self.messages_received += count
        self.bytes_received += nbytes
        conn = self._conn
        conn._messages_received += count
        conn._bytes_received += nbytes
        now = trio.current_time()
        credit = conn._core.release(self.stream_id, nbytes, count, now)  # spec §8.5; §8.9 tunes
        conn._wake_writer()
        if self._ended and not self._inbox:
            conn._after_stream_change(self)
        return credit

    # events from the reader ----------------------------------------------------------------

    def _on_messages(self, messages: list[bytes], nbytes: int) -> None:
        self._inbox.extend(messages)
        self._inbox_bytes += nbytes
        if self._receive_lot:  # unpark_all() costs ~0.6 µs even with nobody parked
            self._receive_lot.unpark_all()

    def _on_end(self) -> None:
        self._ended = True
        self._receive_lot.unpark_all()

    def _on_reset(self, exc: StreamResetError) -> None:
        if self._reset is None:
            self._reset = exc
        if self._send_done_at is None:
            self._send_done_at = trio.current_time()
        if exc.remote and self._handler_scope is not None:
            # spec §10.3: the peer abandoned the stream, so its handler's work is wasted;
            # cancelling it keeps reset streams from piling up work ("Rapid Reset").
            self._handler_scope.cancel()
        self._inbox.clear()
        self._inbox_bytes = 0
        self._receive_lot.unpark_all()
        self._send_lot.unpark_all()
        self._conn._after_stream_change(self)

    def _on_lost(self, exc: ConnectionLostError) -> None:
        if self._lost is None:
            self._lost = exc.for_stream(self._delivered())
        if self._send_done_at is None:
            self._send_done_at = trio.current_time()
        self._receive_lot.unpark_all()
        self._send_lot.unpark_all()

    def _delivered(self) -> int | None:
        if self._record is not None:
            return self._record.peer_consumed
        return self._conn._core.peer_consumed(self.stream_id)

    def _seconds_blocked_now(self) -> float:
        since = self._blocked_since
        return self.seconds_blocked + (0.0 if since is None else trio.current_time() - since)

    def statistics(self) -> StreamStatistics:
        """A snapshot of this stream's credit, buffers and traffic."""
        core = self._conn._core
        send_bytes, send_messages = core.send_capacity(self.stream_id)
        recv_bytes, recv_messages = core.receive_capacity(self.stream_id)
        now = trio.current_time()
        blocked = self._seconds_blocked_now()
        sending = (self._send_done_at or now) - self._opened_at
        rate = self._rate.messages_per_second  # both rates from the same samples
        depth = len(self._inbox)
        info = core.window_info(self.stream_id)
        record = self._record
        feedback = record.feedback if record is not None else core.peer_feedback(self.stream_id)
        peak = record.recv.held_peak() if record is not None else core.received_peak(self.stream_id)
        rate_bytes = self._rate.bytes_per_second
        return StreamStatistics(
            stream_id=self.stream_id,
            state=core.stream_state(self.stream_id).value,
            send_credit_bytes=send_bytes,
            send_credit_messages=send_messages,
            receive_credit_bytes=recv_bytes,
            receive_credit_messages=recv_messages,
            buffered_messages=len(self._inbox),
            buffered_bytes=self._inbox_bytes,
            messages_sent=self.messages_sent,
            bytes_sent=self.bytes_sent,
            messages_received=self.messages_received,
            bytes_received=self.bytes_received,
            delivered=self._delivered(),
            messages_in_flight=self.messages_sent - (self._delivered() or 0),
            seconds_blocked=blocked,
            consume_rate=rate,
            blocked_on_peer_seconds=blocked,  # spec §14 from here on
            blocked_on_peer_events=self.blocked_on_peer_events,
            blocked_on_app_seconds=max(0.0, sending - blocked),
            peer_consume_rate=feedback[0] if feedback is not None else None,
            peer_queue_depth=feedback[1] if feedback is not None else None,
            queue_depth_messages=depth,
            queue_depth_bytes=self._inbox_bytes,
            consume_rate_bytes=rate_bytes,
            drain_seconds=depth / rate if rate > 0 else (None if depth else 0.0),
            starvation_events=self.starvation_events,
            starved_seconds=self.starved_seconds,
            window_bytes=info.window_bytes if info is not None else 0,
            window_messages=info.window_messages if info is not None else 0,
            window_reason=info.reason.value if info is not None else "static",
            window_changes=info.changes if info is not None else 0,
            peak_buffered_messages=peak[1],
            peak_buffered_bytes=peak[0],
        )


# --- connections -----------------------------------------------------------------------


class FlowConnection:
    """One flowproto connection over a Trio stream. Create it with an ``open_*`` function."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        role: Role,
        settings: Settings | None,
        codec: CodecName | Codec,
        ping_timeout: float,
        *,
        limits: Limits | None = None,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        autotune: AutoTune | None = None,
        memory_budget: MemoryBudget | None = None,
        pacing: bool = False,
    ) -> None:
        self.transport = transport
        self._core = Connection(
            role,
            settings,
            ping_timeout=ping_timeout,
            limits=limits,
            autotune=autotune,
            budget=memory_budget,
        )
        self._pacing = pacing  # spec §8.10
        self._starvation_events = 0
        self._frame_timeout = frame_timeout
        self._write_timeout = write_timeout
        self._backlog = 0  # bytes send() queued since the writer last took the output
        self._backlog_lot = trio.lowlevel.ParkingLot()  # send() waiting for the writer
        self._codec_spec = codec
        self._streams: dict[int, FlowStream] = {}
        self._accept_send, self._accept_receive = trio.open_memory_channel[FlowStream](math.inf)
        # The accept queue is bounded by max_streams: the core refuses streams past it.
        self._handshake = trio.Event()
        self._closed = trio.Event()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._timer_lot = trio.lowlevel.ParkingLot()
        self._stream_change = trio.lowlevel.ParkingLot()
        self._lost: ConnectionLostError | None = None
        self._goaway: GoAwayReceived | None = None
        self._pings: dict[int, tuple[float, trio.Event]] = {}
        self._rtt: float | None = None
        self._messages_sent = 0
        self._bytes_sent = 0
        self._messages_received = 0
        self._bytes_received = 0
        self._seconds_blocked = 0.0
        self._writer_done = False
        self._reader_scope = trio.CancelScope()  # cancelled to stop reading and close
        self._unyielded_bytes = 0  # queued by send() since it last let the writer run

    @property
    def peer_settings(self) -> Settings | None:
        """What the peer accepts (from its HELLO), once the handshake is done."""
        return self._core.peer_settings

    @property
    def local_settings(self) -> Settings:
        """What this side accepts (sent in our HELLO)."""
        return self._core.local_settings

    @property
    def closed(self) -> bool:
        """True once the connection has ended (closed by either side, or lost)."""
        return self._lost is not None

    @property
    def close_reason(self) -> ConnectionLostError | None:
        """Why the connection ended (the error its streams raise), or None while it runs."""
        return self._lost

    def _wake_writer(self) -> None:
        if self._writer_lot:  # unpark_all() costs ~0.6 µs even with nobody parked
            self._writer_lot.unpark_all()

    def _wake_timer(self) -> None:
        self._timer_lot.unpark_all()

    def _after_stream_change(self, stream: FlowStream) -> None:
        if self._core.stream_state(stream.stream_id) is StreamState.CLOSED and not stream._inbox:
            self._streams.pop(stream.stream_id, None)
        self._stream_change.unpark_all()
        self._end_if_finished()

    def _end_if_finished(self) -> None:
        # spec §10.4: after the peer's GOAWAY, once no stream is open, flush and close.
        if self._goaway is not None and self._core.finished:
            if self._lost is None:
                self._fail(self._closed_error())
            self._reader_scope.cancel()

    # tasks --------------------------------------------------------------------------------

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._timer)
                task_status.started()
                with self._reader_scope:
                    await self._reader()
                # The reader ended: let the writer flush what is queued (GOAWAY), then stop.
                self._writer_done = True
                self._wake_writer()
                nursery.cancel_scope.deadline = trio.current_time() + 5.0
                await self._flushed()
                if self._linger:
                    await self._discard_input()
                nursery.cancel_scope.cancel()
        finally:
            self._core.leave_budget()  # spec §8.9 B1: nothing more arrives
            self._closed.set()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.transport)

    async def _flushed(self) -> None:
        while not self._writer_exited:
            await self._stream_change.park()

    async def _discard_input(self) -> None:
        # spec §10.2 step 3: after our error GOAWAY, end our side and read and discard the
        # peer's input for a while, so that closing with unread input (a TCP reset) does
        # not destroy the GOAWAY before the peer reads it.
        with trio.move_on_after(CLOSE_LINGER):
            try:
                if isinstance(self.transport, trio.abc.HalfCloseableStream):
                    await self.transport.send_eof()
                while await self.transport.receive_some(READ_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    _linger = False  # the peer broke the protocol: more of its input may be on the way

    _writer_exited = False

    async def _reader(self) -> None:
        core = self._core
        frame_deadline: float | None = None  # spec §11: when the frame begun must be whole
        try:
            while True:
                try:
                    # The timer enforces frame_deadline: a cancel scope around each read
                    # would cost about as much as parsing a read of 64 KiB frames.
                    data = await self.transport.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._fail(
                        ConnectionLostError(f"transport failed: {exc or type(exc).__name__}")
                    )
                    # Nothing can be written either (a writer may be stuck in a failed TLS
                    # handshake): stop now rather than wait to flush.
                    self._nursery.cancel_scope.cancel()
                    return
                partial = core.partial_input
                try:
                    events = core.receive_data(bytes(data))
                except RemoteProtocolError as exc:
                    self._fail(
                        ConnectionLostError(
                            f"peer broke the protocol: {exc}", error_code=exc.error_code
                        )
                    )
                    self._linger = True
                    return
                self._dispatch(events)
                if data:
                    # spec §11: keepalive counts from the last receipt, not the last timer tick.
                    now = trio.current_time()
                    core.handle_timeout(now)
                    if core.partial_input < partial + len(data):  # a frame was completed
                        frame_deadline = now + self._frame_timeout if core.partial_input else None
                    elif frame_deadline is None:  # the first bytes of a frame
                        frame_deadline = now + self._frame_timeout
                    if frame_deadline is not None and self._frame_deadline is None:
                        self._wake_timer()  # it may sleep past the new deadline; later ones
                    self._frame_deadline = frame_deadline  # only make it wake early, once
                if core.has_data_to_send:
                    self._wake_writer()
                if core.state is ConnectionState.CLOSED:
                    if self._lost is None:
                        self._fail(self._closed_error())
                    return
                if not data:
                    return
        finally:
            self._frame_deadline = None
            self._wake_writer()

    _frame_deadline: float | None = None  # spec §11: the reader's, enforced by the timer

    def _time_out(self, message: str) -> None:
        # spec §11: a connection error TIMEOUT: GOAWAY, then close (the reader stops).
        self._core.close(ErrorCode.TIMEOUT, message)
        self._fail(ConnectionLostError(message, error_code=ErrorCode.TIMEOUT))
        self._wake_writer()

    def _closed_error(self) -> ConnectionLostError:
        g = self._goaway
        if g is not None:
            return ConnectionLostError(
                f"peer closed the connection: GOAWAY {ErrorCode.describe(g.error_code)}"
                + (f" ({g.reason})" if g.reason else ""),
                error_code=g.error_code,
                last_stream_id=g.last_stream_id,
            )
        return ConnectionLostError("the connection is closed")

    def _dispatch(self, events: list[Any]) -> None:
        streams = self._streams
        for event in events:
            if isinstance(event, MessagesReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_messages(event.messages, event.nbytes)
            elif isinstance(event, CreditGranted):
                if event.stream_id == 0:
                    for s in streams.values():
                        s._send_lot.unpark_all()
                else:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream._send_lot.unpark_all()
            elif isinstance(event, StreamOpened):
                stream = FlowStream(self, event.stream_id, _codec(self._codec_spec))
                streams[event.stream_id] = stream
                try:
                    self._accept_send.send_nowait(stream)
                except trio.ClosedResourceError:
                    # spec §10.4: opened after the peer's own GOAWAY; nobody will accept it.
                    del streams[event.stream_id]
                    self._core.reset_stream(event.stream_id, ErrorCode.REFUSED_STREAM)
                    self._end_if_finished()
            elif isinstance(event, StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_end()
                    self._after_stream_change(stream)
            elif isinstance(event, StreamReset):
                stream = streams.get(event.stream_id)
                if stream is not None and self._lost is None:
                    stream._on_reset(
                        StreamResetError(
                            event.stream_id,
                            event.error_code,
                            event.reason,
                            event.remote,
                            event.consumed
                            if event.consumed is not None
                            else self._core.peer_consumed(event.stream_id),
                        )
                    )
            elif isinstance(event, HandshakeCompleted):
                self._handshake.set()
            elif isinstance(event, PongReceived):
                entry = self._pings.pop(event.ping_id, None)
                if entry is not None:
                    self._rtt = trio.current_time() - entry[0]
                    entry[1].set()
            elif isinstance(event, GoAwayReceived):
                self._goaway = event
                if event.error_code != ErrorCode.NO_ERROR:
                    self._fail(self._closed_error())  # spec §10.2: every stream ends
                self._accept_send.close()  # spec §10.4: the peer opens no more streams
                self._stream_change.unpark_all()
                self._end_if_finished()
            elif isinstance(event, ConnectionClosed):
                if event.clean and self._goaway is not None:
                    self._fail(self._closed_error())
                else:
                    what = "in the middle of a frame" if event.truncated else "without GOAWAY"
                    self._fail(ConnectionLostError(f"the peer closed the connection {what}"))
            elif isinstance(event, PeerBlocked):
                pass  # visible to issue #6's tuning; nothing to do yet

    def _fail(self, exc: ConnectionLostError) -> None:
        if self._lost is not None:
            return
        self._lost = exc
        self._backlog_lot.unpark_all()
        for stream in list(self._streams.values()):
            stream._on_lost(exc)
        for _, event in self._pings.values():
            event.set()
        self._handshake.set()
        self._accept_send.close()
        self._stream_change.unpark_all()
        self._wake_writer()

    async def _writer(self) -> None:
        core = self._core
        try:
            while True:
                data = core.data_to_send()
                if data:
                    self._backlog = 0
                    self._backlog_lot.unpark_all()
                    try:
                        written = await self._write(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self._fail(
                            ConnectionLostError(f"transport failed: {exc or type(exc).__name__}")
                        )
                        return
                    if not written:
                        # spec §11, §10.7.2: the peer stopped reading; half a frame may be
                        # out, so nothing more can be written (not even GOAWAY).
                        self._fail(
                            ConnectionLostError(
                                f"the peer accepted no data for {self._write_timeout} s "
                                "(write timeout, spec §11)",
                                error_code=ErrorCode.TIMEOUT,
                            )
                        )
                        self._reader_scope.cancel()
                        return
                    continue
                if self._writer_done or (self._lost is not None and not core.has_data_to_send):
                    return
                await self._writer_lot.park()
        finally:
            self._writer_exited = True
            self._backlog_lot.unpark_all()
            self._stream_change.unpark_all()

    async def _write(self, data: bytes) -> bool:
        """Send ``data``; False if a chunk of it stalled for the write timeout (spec §11)."""
        send_all = self.transport.send_all
        if len(data) <= WRITE_CHUNK:
            with trio.move_on_after(self._write_timeout):
                await send_all(data)
                return True
            return False
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK):
            with trio.move_on_after(self._write_timeout):
                await send_all(view[start : start + WRITE_CHUNK])
                continue
            return False
        return True

    async def _timer(self) -> None:
        core = self._core
        while True:
            deadline = core.next_deadline()
            frame = self._frame_deadline
            if frame is not None and (deadline is None or frame < deadline):
                deadline = frame
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._timer_lot.park()
                continue
            now = trio.current_time()
            frame = self._frame_deadline
            if frame is not None and now >= frame:
                # spec §11: the frame begun did not arrive whole in time: stop the reader.
                self._frame_deadline = None
                if self._lost is None:
                    self._time_out(
                        f"a frame from the peer did not arrive whole within "
                        f"{self._frame_timeout} s of its first byte (spec §11)"
                    )
                    self._reader_scope.cancel()
                continue
            try:
                core.handle_timeout(now)
            except KeepaliveTimeout as exc:
                self._fail(ConnectionLostError(str(exc), error_code=exc.error_code))
                self._writer_done = True
                self._reader_scope.cancel()  # spec §10.2: send GOAWAY(TIMEOUT), then close
            self._wake_writer()

    async def _idle_watch(self, timeout: float) -> None:
        # spec §11: a connection with no stream for `timeout` seconds is closed.
        core = self._core
        while self._lost is None:
            if self._streams or core.stream_ids:
                await self._stream_change.park()
                continue
            with trio.move_on_after(timeout) as scope:
                await self._stream_change.park()  # any stream change restarts the wait
            if scope.cancelled_caught and not self._streams and not core.stream_ids:
                if self._lost is None:
                    message = f"no stream for {timeout} s (idle timeout, spec §11)"
                    core.close(ErrorCode.TIMEOUT, message)
                    self._fail(ConnectionLostError(message, error_code=ErrorCode.TIMEOUT))
                    self._reader_scope.cancel()
                return

    # public API ---------------------------------------------------------------------------

    async def _wait_handshake(self, timeout: float) -> None:
        with trio.move_on_after(timeout) as scope:
            await self._handshake.wait()
        if self._lost is not None:
            raise self._lost
        if scope.cancelled_caught:
            message = f"no flowproto handshake from the peer within {timeout} s"
            # spec §11: a connection error TIMEOUT: GOAWAY, then close without a grace period.
            self._core.close(ErrorCode.TIMEOUT, message)
            self._fail(ConnectionLostError(message, error_code=ErrorCode.TIMEOUT))
            self._reader_scope.cancel()
            raise HandshakeTimeout(message)

    async def open_stream(self, *, codec: CodecName | Codec | None = None) -> FlowStream:
        """Open a stream; waits while the peer's max_streams are all in use (spec §6.4).

        Args:
            codec: this stream's codec; defaults to the connection's.

        Raises:
            ConnectionLostError: the connection ended, or the peer sent GOAWAY.
        """
        await trio.lowlevel.checkpoint()
        core = self._core
        while not core.can_open_stream:
            if self._lost is not None:
                raise self._lost
            if self._goaway is not None or core.state is not ConnectionState.OPEN:
                raise ConnectionLostError(
                    "the connection is shutting down (GOAWAY); open a new connection",
                    error_code=self._goaway.error_code if self._goaway else ErrorCode.NO_ERROR,
                    last_stream_id=self._goaway.last_stream_id if self._goaway else None,
                )
            await self._stream_change.park()
        stream_id = core.open_stream()
        stream = FlowStream(
            self, stream_id, _codec(codec if codec is not None else self._codec_spec)
        )
        self._streams[stream_id] = stream
        self._wake_writer()
        return stream

    async def accept_stream(self) -> FlowStream:
        """Wait for the next stream the peer opens.

        Raises:
            ConnectionLostError: the connection ended (or is shutting down) first.
        """
        try:
            return await self._accept_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._lost or ConnectionLostError("the connection is closed") from None

    async def ping(self) -> float:
        """Send a PING and wait for its PONG (spec §5.5); returns the round-trip time in seconds."""
        if self._lost is not None:
            raise self._lost
        ping_id = self._core.ping(trio.current_time())  # the core's tuner learns the rtt too
        done = trio.Event()
        self._pings[ping_id] = (trio.current_time(), done)
        self._wake_writer()
        await done.wait()
        if self._lost is not None:
            raise self._lost
        assert self._rtt is not None
        return self._rtt

    async def aclose(self, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Graceful shutdown (spec §10.4): GOAWAY, let open streams finish, then close.

        New streams from the peer are refused at once. Streams still open after ``grace``
        seconds are reset with CANCEL. Closing twice does nothing.
        """
        core = self._core
        if self._lost is None and core.state is not ConnectionState.CLOSED:
            core.close(ErrorCode.NO_ERROR)
            self._accept_send.close()
            self._wake_writer()
            with trio.move_on_after(grace):
                while not core.finished and self._lost is None:
                    await self._stream_change.park()
            for stream in list(self._streams.values()):
                if core.stream_state(stream.stream_id) is not StreamState.CLOSED:
                    await stream.reset(ErrorCode.CANCEL, "connection closing")
            self._fail(ConnectionLostError("the connection was closed by this side", error_code=0))
        self._writer_done = True
        self._wake_writer()
        with trio.move_on_after(grace):
            await self._flushed()
        # spec §10.2, §10.4: the GOAWAY is out; wait a little for the peer to close first,
        # unless it sent GOAWAY too.
        self._end_if_finished()
        with trio.move_on_after(min(grace, CLOSE_LINGER)):
            await self._closed.wait()
        if not self._closed.is_set():
            self._nursery.cancel_scope.cancel()
            await self._closed.wait()

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of the connection's credit, buffers and traffic."""
        core = self._core
        held, _ = core.received_held(0)
        blocked = self._seconds_blocked + sum(
            trio.current_time() - s._blocked_since
            for s in self._streams.values()
            if s._blocked_since is not None
        )
        info = core.window_info(0)
        budget = core.budget
        return ConnectionStatistics(
            state=core.state.value,
            streams=len(self._streams),
            send_credit_bytes=core.connection_send_capacity,
            buffered_bytes=held,
            receive_window_bytes=core.local_settings.connection_bytes,
            messages_sent=self._messages_sent,
            bytes_sent=self._bytes_sent,
            messages_received=self._messages_received,
            bytes_received=self._bytes_received,
            seconds_blocked=blocked,
            rtt=self._rtt,
            glitches=core.glitches,
            blocked_on_peer_seconds=blocked,  # spec §14 from here on
            starvation_events=self._starvation_events,
            rtt_min=core.rtt.minimum,
            window_bytes=info.window_bytes if info is not None else 0,
            window_reason=info.reason.value if info is not None else "static",
            budget_bytes=budget.capacity if budget is not None else None,
            budget_committed_bytes=budget.committed if budget is not None else None,
            budget_share_bytes=budget.share(core._conn_recv) if budget is not None else None,
        )


# --- opening and serving ------------------------------------------------------------------


@asynccontextmanager
async def open_flow_connection(
    transport: trio.abc.Stream,
    *,
    initiator: bool = True,
    settings: Settings | None = None,
    codec: CodecName | Codec = "msgpack",
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ping_timeout: float = 15.0,
    idle_timeout: float | None = None,
    close_grace: float = DEFAULT_CLOSE_GRACE,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    limits: Limits | None = None,
    autotune: AutoTune | bool = True,
    memory_budget: MemoryBudget | None = None,
    pacing: bool = False,
) -> AsyncIterator[FlowConnection]:
    """Run flowproto over an existing Trio stream (TLS, memory streams, ...).

    Args:
        transport: the byte stream; it is closed when the block exits.
        initiator: True for the side that connected (odd stream ids, spec §6.1).
        settings: what this side accepts (spec §3.2); defaults to ``Settings()``.
        codec: ``"msgpack"`` (Python objects) or ``"raw"`` (bytes), or a :class:`Codec`.
        handshake_timeout: seconds allowed for the preface and HELLO exchange.
        ping_timeout: seconds a keepalive PING may go unanswered (spec §11).
        close_grace: seconds open streams may finish after the block exits.
        idle_timeout: if set, seconds without any stream after which the connection
            closes with GOAWAY(TIMEOUT) (spec §11); ``None`` (the default) never does.
        frame_timeout: seconds a frame may take to arrive once its first byte has; then
            the connection ends with GOAWAY(TIMEOUT) (spec §11).
        write_timeout: seconds the transport may take to accept each write of at most
            ``WRITE_CHUNK`` bytes; then the connection is lost with TIMEOUT (spec §11).
        limits: what the peer may cost this side: queued replies, the glitch budget
            (spec §10.7); defaults to ``Limits()``.
        autotune: size the receive windows from what the consumer does (spec §8.9): the
            settings' windows are where they start. ``True`` (the default) uses
            ``AutoTune()`` (a 100 ms latency target); pass an ``AutoTune`` to change it,
            or ``False`` to keep the windows of ``settings`` (spec §8.6).
        memory_budget: a :class:`flowproto.MemoryBudget` shared by every connection
            given it: their connection credit together stays within it, in fair shares
            (spec §8.9). None by default: each connection is bounded by its own
            ``connection_bytes`` (a process-wide default would make unrelated connections,
            such as a client and a server in one process, compete and refuse each other).
        pacing: space each stream's messages from the peer's feedback while the peer's
            consumer is the bottleneck (spec §8.10); off by default.

    Raises:
        HandshakeTimeout: the peer did not complete the handshake in time.
        ConnectionLostError: the transport failed or the peer broke the protocol.
    """
    role = Role.INITIATOR if initiator else Role.ACCEPTOR
    conn = FlowConnection(
        transport,
        role,
        settings,
        codec,
        ping_timeout,
        limits=limits,
        frame_timeout=frame_timeout,
        write_timeout=write_timeout,
        autotune=(AutoTune() if autotune is True else autotune or None),
        memory_budget=memory_budget,
        pacing=pacing,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(conn._run)
            if idle_timeout is not None:
                nursery.start_soon(conn._idle_watch, idle_timeout)
            try:
                await conn._wait_handshake(handshake_timeout)
                yield conn
            finally:
                with trio.CancelScope(shield=True):
                    await conn.aclose(close_grace)
    except BaseExceptionGroup as group:
        # The connection's tasks handle their own errors, so the group holds only what the
        # handshake or the block raised: raise it bare, as a plain ``async with`` would.
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context  # not the group: ``raise`` in ``except`` chains it
            del exc, context


@asynccontextmanager
async def open_connection(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[FlowConnection]:
    """Connect over TCP (or TLS with ``ssl_context``) and run flowproto on it.

    Keyword arguments are those of :func:`open_flow_connection`.
    """
    transport: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if ssl_context is not None:
        transport = trio.SSLStream(
            transport, ssl_context, server_hostname=server_hostname or host, https_compatible=True
        )
    async with open_flow_connection(transport, initiator=True, **kwargs) as conn:
        yield conn


@asynccontextmanager
async def open_unix_connection(path: str, **kwargs: Any) -> AsyncIterator[FlowConnection]:
    """Connect over a Unix socket and run flowproto on it."""
    transport = await trio.open_unix_socket(path)
    async with open_flow_connection(transport, initiator=True, **kwargs) as conn:
        yield conn


StreamHandler = Callable[[FlowStream], Awaitable[None]]


async def _serve_connection(
    transport: trio.abc.Stream, handler: StreamHandler, kwargs: dict[str, Any]
) -> None:
    try:
        async with (
            open_flow_connection(transport, initiator=False, **kwargs) as conn,
            trio.open_nursery() as nursery,
        ):
            running: set[FlowStream] = set()  # streams whose handler has not returned
            while True:
                try:
                    stream = await conn.accept_stream()
                except ConnectionLostError:
                    break
                if len(running) >= conn.local_settings.max_streams:
                    # spec §6.4: refused under load, before any of it was processed (the
                    # peer may retry): handlers that outlive their streams never pile up.
                    await stream.reset(ErrorCode.REFUSED_STREAM, "too many handlers running")
                    continue
                running.add(stream)
                nursery.start_soon(_run_stream_handler, handler, stream, running)
    except (ConnectionLostError, HandshakeTimeout, trio.BrokenResourceError):
        pass  # one bad connection never stops the server


async def _run_stream_handler(
    handler: StreamHandler, stream: FlowStream, running: set[FlowStream]
) -> None:
    try:
        with trio.CancelScope() as scope:
            stream._handler_scope = scope  # cancelled if the peer resets the stream
            if stream._reset is not None and stream._reset.remote:
                scope.cancel()
            try:
                await handler(stream)
            except (StreamResetError, ConnectionLostError):
                pass
            except Exception as exc:
                # One failing handler resets its own stream; the connection and server go on.
                _log.warning("flowproto: stream %d handler failed", stream.stream_id, exc_info=True)
                await stream.reset(
                    ErrorCode.INTERNAL_ERROR, f"handler failed: {type(exc).__name__}"
                )
            else:
                await stream.aclose()
    finally:
        running.discard(stream)


async def serve_listeners(
    handler: StreamHandler,
    listeners: list[Any],
    *,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve flowproto on listeners: ``handler(stream)`` runs for every stream a peer opens.

    A handler that returns half-closes its stream; one that raises resets it with
    INTERNAL_ERROR. Keyword arguments are those of :func:`open_flow_connection`.
    """
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in listeners]

    async def on_connection(transport: trio.abc.Stream) -> None:
        await _serve_connection(transport, handler, kwargs)

    await trio.serve_listeners(on_connection, listeners, task_status=task_status)


async def serve(
    handler: StreamHandler,
    port: int,
    *,
    host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve flowproto over TCP, following ``trio.serve_tcp``: ``port=0`` picks a free port.

    Use ``listeners = await nursery.start(serve, handler, 0)`` and read the bound port
    from ``listeners[0].socket.getsockname()`` (with ``ssl_context``, the listeners are
    ``trio.SSLListener``: use ``listeners[0].transport_listener.socket``).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    await serve_listeners(
        handler, listeners, ssl_context=ssl_context, task_status=task_status, **kwargs
    )


async def serve_unix(
    handler: StreamHandler,
    path: str,
    *,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve flowproto on a Unix socket at ``path`` (removed first if it is a stale socket)."""
    sock = trio.socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        if os.path.exists(path):
            os.unlink(path)
        await sock.bind(path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    await serve_listeners(handler, [trio.SocketListener(sock)], task_status=task_status, **kwargs)
