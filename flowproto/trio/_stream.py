"""FlowStream: one stream as a Trio channel of messages (spec §6-§8)."""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

if sys.version_info < (3, 11):  # trio depends on the backport there
    pass  # type: ignore[import-not-found, unused-ignore]

from .. import Codec, ErrorCode, Pacer, RateEstimator, RawCodec, StreamState, StreamStatistics
from ..iolayer import (
    MAX_SEND_BACKLOG,
    YIELD_AFTER_BYTES,
    Inbox,
    decode_batch,
    pace,
    stream_statistics,
    take_held,
)
from ._admission import room_freed
from ._errors import ConnectionLostError, StreamResetError
from ._link import StreamLink

if TYPE_CHECKING:
    from ._connection import FlowConnection

__all__ = ["FlowStream"]

_log = logging.getLogger("flowproto")


class FlowStream:
    """One flowproto stream: a channel of messages in each direction.

    Create with :meth:`FlowConnection.open_stream` or receive from
    :meth:`FlowConnection.accept_stream` (or a :func:`serve` handler).
    """

    def __init__(
        self, conn: FlowConnection, link: StreamLink, stream_id: int, codec: Codec
    ) -> None:
        self._conn = conn  # only for the connection property
        self._link = link
        self.stream_id = stream_id
        self.codec = codec
        # The core forgets a stream once it is closed, maybe in the same read as the
        # peer's last CREDIT; its record keeps what the peer reported consumed (spec §10.5).
        self._record = link.core.stream_record(stream_id)
        # The one consumption-rate estimator (spec §8.9 rule 2), fed by release().
        self._rate = self._record.rate if self._record is not None else RateEstimator(1.0)
        self._inbox = Inbox()  # the core's batches, taken by slices
        self._inbox_bytes = 0
        # Sizes of messages taken with receive_many(release=False) and not yet released;
        # at most the window we advertised, like the inbox.
        self._held: deque[int] = deque()
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
        # spec §8.10: the one pacer; max_lag=0: a sender that fell behind never bursts
        self._pacer = Pacer(max_lag=0.0)
        self._started = trio.Event()
        self._start_position = (0, 0)

    def __repr__(self) -> str:
        return f"<FlowStream {self.stream_id} {self._link.core.stream_state(self.stream_id).value}>"

    @property
    def connection(self) -> FlowConnection:
        """The connection this stream belongs to."""
        return self._conn

    # where the stream starts (spec §15.10, cold resume) ------------------------------------

    @property
    def awaits_start(self) -> bool:
        """The peer opened this stream with ``await_start``: it sends nothing until
        :meth:`start_at` says where the stream starts (the first ``receive()`` starts it
        from the beginning)."""
        return self._start == "receiving"

    @property
    def _start(self) -> str | None:
        # spec §15.10: the core's record says who waits for the stream's start ("sending":
        # we opened it with await_start; "receiving": the peer did), None once started.
        return self._record.start if self._record is not None else None

    def start_at(self, messages: int = 0, nbytes: int = 0) -> None:
        """Tell the peer where this stream starts (spec §15.10): after ``messages``
        messages of ``nbytes`` bytes this side already holds (say, a file it wrote
        before it restarted). The peer sends what follows. A claim of this application,
        not the protocol's knowledge: vouch only for what you hold.

        Raises:
            flowproto.LocalProtocolError: the peer did not open the stream with
                ``await_start``, or it was started already.
        """
        self._link.core.start_stream(self.stream_id, messages, nbytes)
        self._link.wake_writer()

    async def started(self) -> tuple[int, int]:
        """For a stream opened with ``open_stream(await_start=True)``: wait until the
        peer says where it starts; ``(messages, bytes)`` already there, ``(0, 0)`` for the
        beginning. Send what follows. At once for any other stream.

        Raises:
            StreamResetError, ConnectionLostError: the stream ended first.
        """
        if self._start == "sending":
            await self._started.wait()
            self._check_send()
        else:
            await trio.lowlevel.checkpoint()
        return self._start_position

    def _on_started(self, messages: int, nbytes: int) -> None:
        self._start_position = (messages, nbytes)
        self._started.set()
        self._send_lot.unpark_all()

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
        if self._link.pacing:
            await self._pace(1)
        await self._locked_send([payload])

    async def send_many(self, messages: Iterable[Any]) -> None:
        """Send several messages in order; the batch path for small messages.

        Cancellation: a prefix of the messages was queued, each whole; ``messages_sent``
        tells how many in all.
        """
        codec = self.codec
        if type(codec) is RawCodec:
            # bytes go as they are (what encode() returns for them), checked in one pass
            payloads = list(messages)
            if not set(map(type, payloads)) <= {bytes}:
                payloads = [codec.encode(m) for m in payloads]
        else:
            payloads = [codec.encode(m) for m in messages]
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._link.pacing:
            await self._pace(len(payloads))
        await self._locked_send(payloads)

    async def _pace(self, count: int) -> None:
        # spec §8.10: a little faster than the peer's consumer while it reports a queue
        now = trio.current_time()
        due = pace(self._pacer, self._link.core.peer_feedback(self.stream_id), count, now)
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
        link = self._link
        core = link.core
        sent = 0
        total = 0  # bytes queued
        while True:
            self._check_send()
            while link.backlog >= MAX_SEND_BACKLOG:
                # spec §10.7.2: the transport is not taking what is queued; wait for it
                # before queuing more, whatever credit the peer grants.
                try:
                    await link.backlog_lot.park()
                finally:
                    # Woken one at a time (StreamLink._taken): pass the wake-up on while
                    # there is room, so a full backlog does not wake every waiting
                    # sender at once only to park most of them again. Also when
                    # cancelled, so no wake-up is lost.
                    if link.backlog < MAX_SEND_BACKLOG and link.backlog_lot:
                        link.backlog_lot.unpark()
                self._check_send()
            n = core.send_messages(self.stream_id, payloads[sent:] if sent else payloads)
            if n:
                self.messages_sent += n
                done = payloads if n == len(payloads) else payloads[sent : sent + n]
                nbytes = sum(map(len, done))
                total += nbytes
                self.bytes_sent += nbytes
                link.messages_sent += n
                link.bytes_sent += nbytes
                link.backlog += nbytes + 10 * n
                sent += n
                if link.unyielded_bytes or total != nbytes:
                    link.wake_writer()  # the writer takes it with what follows, in one write
                else:
                    link.flush()  # the first since the writer ran: out now, no task switch
            if sent == len(payloads):
                break
            # Not enough credit for the next message: wait for CREDIT (spec §8.3, §8.7).
            link.wake_writer()
            link.wake_timer()
            self.blocked_on_peer_events += 1  # spec §14: credit starvation
            start = self._blocked_since = trio.current_time()
            try:
                await self._send_lot.park()
            finally:
                self._blocked_since = None
                waited = trio.current_time() - start
                self.seconds_blocked += waited
                link.seconds_blocked += waited
        # Counted even when flush() wrote it: the next send before this task waits goes
        # through the writer, so a loop of sends makes one write per yield, not per message.
        link.unyielded_bytes += total + 16 * len(payloads)
        if link.unyielded_bytes >= YIELD_AFTER_BYTES:
            # Let the writer drain what is queued: this keeps the output small and the
            # latency low. Shielded, because the message is already queued.
            link.unyielded_bytes = 0
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
            core = self._link.core
            if core.stream_state(self.stream_id) in (
                StreamState.OPEN,
                StreamState.HALF_CLOSED_REMOTE,
            ):
                core.end_stream(self.stream_id)
                self._link.wake_writer()
            self._link.stream_changed(self.stream_id, bool(self._inbox))

    async def reset(self, error_code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abandon the stream both ways with RESET (spec §10.3); buffered messages are dropped."""
        await trio.lowlevel.checkpoint()
        self.reset_now(error_code, reason)

    def reset_now(self, error_code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """:meth:`reset` without a checkpoint, for a connection closing from a shield."""
        if self._reset is not None or self._lost is not None:
            return
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("stream %d reset by this side: %s %s", self.stream_id, error_code.name,
                       reason or "-")  # fmt: skip
        core = self._link.core
        core.reset_stream(self.stream_id, error_code, reason)
        self._on_reset(
            StreamResetError(
                self.stream_id, error_code, reason, False, core.peer_consumed(self.stream_id)
            )
        )
        self._link.wake_writer()

    async def reject(self, reason: str = "", *, accepted: int | None = None) -> None:
        """Refuse what the application could not accept: RESET(REJECTED) (spec §5.7, 1.1).

        The peer learns that only ``accepted`` messages were delivered (default: every
        message received so far but the last, the one being rejected), even if credit
        already reported more consumed; later messages are dropped, as by :meth:`reset`.
        """
        await trio.lowlevel.checkpoint()
        if self._reset is not None or self._lost is not None:
            return
        if accepted is None:
            accepted = max(0, self.messages_received - 1)
        core = self._link.core
        core.reset_stream(self.stream_id, ErrorCode.REJECTED, reason, accepted=accepted)
        self._on_reset(
            StreamResetError(self.stream_id, ErrorCode.REJECTED, reason, False, accepted)
        )
        self._link.wake_writer()

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

    async def receive_many(self, max_messages: int = 1024, *, release: bool = True) -> list[Any]:
        """Wait for at least one message and return up to ``max_messages`` of them.

        Args:
            max_messages: the most messages to return.
            release: ``False`` keeps the messages' credit until :meth:`release` says the
                application is done with them (for example, wrote them to disk): until
                then the peer is not told they were consumed (spec §8.5, §10.5).

        Raises:
            as :meth:`receive`; with ``release=False`` a message that cannot be decoded
            raises ``MessageDecodeError`` and the whole batch stays held.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._inbox:
            await self._starve()
        batch = self._inbox.take(max_messages)
        count = len(batch)
        if not release:
            sizes = list(map(len, batch))
            self._held.extend(sizes)
            self._inbox_bytes -= sum(sizes)
        elif self._consumed(sum(map(len, batch)), count):
            # A CREDIT is queued: let the writer send it while the caller works on this
            # batch (spec §8.5). Shielded, because the batch is already consumed.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return decode_batch(self.codec, batch)

    def release(self, count: int | None = None) -> None:
        """Consume the first ``count`` messages taken with ``receive_many(release=False)``.

        Their credit may go back to the peer now, and the peer counts them consumed
        (spec §8.5, §10.5); ``None`` releases every held message. After the stream was
        reset or the connection lost, held messages were dropped, and this does nothing.

        Raises:
            ValueError: ``count`` is more than the messages held.
        """
        if self._reset is not None or self._lost is not None:
            self._held.clear()
            return
        count, nbytes = take_held(self._held, count)
        if count:
            self._consumed(nbytes, count, from_inbox=False)

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
        if self._start == "receiving":
            self.start_at()  # spec §15.10: nothing comes until the stream is started
        start = trio.current_time()
        self.starvation_events += 1
        self._link.starvation_events += 1
        self._link.flush()  # what this task queued (CREDIT, replies) goes out before it waits
        self._link.unyielded_bytes = 0  # this task waits: the next send may write at once
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

    def _consumed(self, nbytes: int, count: int, *, from_inbox: bool = True) -> bool:
        """Count consumed messages and release their credit; True if a CREDIT was queued."""
        if from_inbox:
            self._inbox_bytes -= nbytes
        self.messages_received += count
        self.bytes_received += nbytes
        link = self._link
        link.messages_received += count
        link.bytes_received += nbytes
        now = trio.current_time()
        credit = link.core.release(self.stream_id, nbytes, count, now)  # spec §8.5; §8.9 tunes
        if link.core.has_data_to_send:
            link.flush()  # the CREDIT goes out now, whatever the consumer does next
        budget = link.core.budget
        if budget is not None and budget.waiting:
            room_freed(budget)  # spec §8.9 B2: the consumed room may admit a newcomer
        if self._ended and not self._inbox and not self._held:
            link.stream_changed(self.stream_id, False)
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
        self._link.stream_changed(self.stream_id, bool(self._inbox))

    def _on_reset(self, exc: StreamResetError) -> None:
        self._started.set()  # a started() waiter sees the reset
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
        self._held.clear()  # the core released them with the reset (spec §8.8)
        self._receive_lot.unpark_all()
        self._send_lot.unpark_all()
        self._link.stream_changed(self.stream_id, bool(self._inbox))

    def _on_lost(self, exc: ConnectionLostError) -> None:
        self._started.set()  # a started() waiter sees the loss
        if self._lost is None:
            self._lost = exc.for_stream(self._delivered())
        if self._send_done_at is None:
            self._send_done_at = trio.current_time()
        self._receive_lot.unpark_all()
        self._send_lot.unpark_all()

    def _delivered(self) -> int | None:
        if self._record is not None:
            return self._record.peer_consumed
        return self._link.core.peer_consumed(self.stream_id)

    def _seconds_blocked_now(self) -> float:
        since = self._blocked_since
        return self.seconds_blocked + (0.0 if since is None else trio.current_time() - since)

    def statistics(self) -> StreamStatistics:
        """A snapshot of this stream's credit, buffers and traffic (spec §14)."""
        now = trio.current_time()
        return stream_statistics(
            self._link.core,
            self,
            record=self._record,
            rate=self._rate,
            buffered_messages=len(self._inbox),
            buffered_bytes=self._inbox_bytes,
            blocked_seconds=self._seconds_blocked_now(),
            sending_seconds=(self._send_done_at or now) - self._opened_at,
        )
