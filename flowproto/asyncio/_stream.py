"""FlowStream: one stream as an asyncio channel of messages (spec §6-§8).

The cancellation contract, as asyncio delivers it: a task is cancelled only where it
suspends. ``send()`` suspends only before it queues anything (to let the loop run, for
pacing, for the transport to drain, for credit), and queues each message whole without
suspending; ``receive()`` suspends only while the inbox is empty, and takes the message
without suspending. So a cancelled ``send()`` queued all of its message or none, and a
cancelled ``receive()`` consumed nothing — under ``asyncio.timeout``, ``wait_for``,
``TaskGroup`` or ``task.cancel()`` alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import Codec, ErrorCode, Pacer, RateEstimator, RawCodec, StreamState, StreamStatistics
from ..iolayer import (
    YIELD_AFTER_BYTES,
    decode_batch,
    pace,
    stream_statistics,
    take_held,
)
from ._admission import room_freed
from ._errors import EndOfStream, StreamClosedError, StreamResetError
from ._link import StreamLink, StreamPort
from ._resume import StreamStart

if TYPE_CHECKING:
    from ._connection import FlowConnection

__all__ = ["FlowStream"]

_log = logging.getLogger("flowproto")


class FlowStream(StreamStart):
    """One flowproto stream: a channel of messages in each direction.

    Create with :meth:`FlowConnection.open_stream`, or receive one from
    :meth:`FlowConnection.accept_stream` (or as a :func:`serve` handler's argument).
    ``async for message in stream`` receives until the peer ends the stream.
    """

    def __init__(
        self,
        conn: FlowConnection,
        link: StreamLink,
        port: StreamPort,
        stream_id: int,
        codec: Codec,
    ) -> None:
        self._conn = conn  # only for the connection property
        self._link = link
        self._port = port
        port.stream = self
        self.stream_id = stream_id
        self.codec = codec
        # The core forgets a stream once it is closed, maybe in the same read as the
        # peer's last CREDIT; its record keeps what the peer reported consumed (spec §10.5).
        self._record = link.core.stream_record(stream_id)
        # The one consumption-rate estimator (spec §8.9 rule 2), fed by release().
        self._rate = self._record.rate if self._record is not None else RateEstimator(1.0)
        self._send_closed = False  # we sent END_STREAM
        self._send_lock = asyncio.Lock()  # messages of concurrent send() calls do not interleave
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.bytes_received = 0
        self.seconds_blocked = 0.0
        # spec §14: why this stream waits, each way.
        self._opened_at = link.loop.time()
        self.blocked_on_peer_events = 0
        self.starvation_events = 0
        self.starved_seconds = 0.0
        # spec §8.10: the one pacer; max_lag=0: a sender that fell behind never bursts
        self._pacer = Pacer(max_lag=0.0)

    def __repr__(self) -> str:
        return f"<FlowStream {self.stream_id} {self._link.core.stream_state(self.stream_id).value}>"

    @property
    def connection(self) -> FlowConnection:
        """The connection this stream belongs to."""
        return self._conn

    # sending -----------------------------------------------------------------------------

    def _check_send(self) -> None:
        port = self._port
        if port.reset is not None:
            raise port.reset
        if port.lost is not None:
            raise port.lost.for_stream(self._delivered())
        if self._send_closed:
            raise StreamClosedError(f"stream {self.stream_id} was closed for sending")

    async def send(self, message: Any) -> None:
        """Send one message, waiting while there is no credit for all of it (spec §8.3).

        It also waits while the transport holds more than ``MAX_SEND_BACKLOG`` bytes it
        could not write yet (spec §10.7.2), and, every ``YIELD_AFTER_BYTES`` queued, lets
        the event loop run before it queues more.

        Cancellation: if cancelled, the message was queued whole or not at all, and
        ``messages_sent`` says which (every wait comes before the message is queued).

        Raises:
            StreamResetError: the stream was reset.
            ConnectionLostError: the connection ended (``delivered`` says what the peer
                reported consumed on this stream).
            StreamClosedError: this side already closed the stream for sending.
            flowproto.LocalProtocolError: the message is over the peer's max_message_bytes.
        """
        payload = self.codec.encode(message)
        await self._locked_send([payload])

    async def send_many(self, messages: Iterable[Any]) -> None:
        """Send several messages in order; the batch path for small messages.

        Cancellation: a prefix of the messages was queued, each whole; ``messages_sent``
        tells how many in all.

        Raises:
            as :meth:`send`.
        """
        codec = self.codec
        if type(codec) is RawCodec:
            # bytes go as they are (what encode() returns for them), checked in one pass
            payloads = list(messages)
            if not set(map(type, payloads)) <= {bytes}:
                payloads = [codec.encode(m) for m in payloads]
        else:
            payloads = [codec.encode(m) for m in messages]
        await self._locked_send(payloads)

    async def _locked_send(self, payloads: list[bytes]) -> None:
        link = self._link
        if link.unyielded_bytes >= YIELD_AFTER_BYTES:
            # Let the loop run (the flush, the reads) before queuing more; nothing of this
            # send is queued yet, so cancelling here loses nothing.
            link.yielded()
            await asyncio.sleep(0)
        if link.pacing:
            await self._pace(len(payloads))
        lock = self._send_lock
        sent = 0
        if not lock.locked():
            # No send() in progress: queue what the credit allows now, without the lock
            # (nothing awaits in between, so no other send() can interleave).
            sent = self._queue(payloads, 0)
            if sent == len(payloads):
                return
        # Taking a free asyncio.Lock does not suspend.
        async with lock:
            await self._send_payloads(payloads, sent)

    async def _pace(self, count: int) -> None:
        # spec §8.10: a little faster than the peer's consumer while it reports a queue
        now = self._link.loop.time()
        due = pace(self._pacer, self._link.core.peer_feedback(self.stream_id), count, now)
        if due > now:
            await asyncio.sleep(due - now)

    def _queue(self, payloads: list[bytes], sent: int) -> int:
        """Queue the messages of ``payloads[sent:]`` the credit allows now (spec §8.3); the
        new count sent. Nothing while the transport is not taking what is queued."""
        self._check_send()
        link = self._link
        if link.paused:
            return sent  # spec §10.7.2: wait for the transport first (_send_payloads)
        n = link.core.send_messages(self.stream_id, payloads[sent:] if sent else payloads)
        if n:
            done = payloads if n == len(payloads) else payloads[sent : sent + n]
            nbytes = sum(map(len, done))
            self.messages_sent += n
            self.bytes_sent += nbytes
            link.messages_sent += n
            link.bytes_sent += nbytes
            link.unyielded_bytes += nbytes + 16 * n
            link.sent()  # now, or in one write with the rest of this turn's
        return sent + n

    async def _send_payloads(self, payloads: list[bytes], sent: int) -> None:
        # The rest of a send(): wait for the transport or for credit, queue, until all is.
        link = self._link
        port = self._port
        while sent < len(payloads):
            self._check_send()
            while link.paused:
                # spec §10.7.2: the transport is not taking what is queued; wait for it
                # before queuing more, whatever credit the peer grants.
                await link.drain_waiters.wait()
                self._check_send()
            before = sent
            sent = self._queue(payloads, sent)
            if sent == len(payloads) or (sent > before and link.paused):
                continue
            # Not enough credit for the next message: wait for CREDIT (spec §8.3, §8.7).
            link.flush()  # what is queued goes out now; the timer learns of BLOCKED
            self.blocked_on_peer_events += 1  # spec §14: credit starvation
            start = port.blocked_since = link.loop.time()
            try:
                await port.send_waiters.wait()
            finally:
                port.blocked_since = None
                waited = link.loop.time() - start
                self.seconds_blocked += waited
                link.seconds_blocked += waited

    async def aclose(self) -> None:
        """Half-close: the peer sees the end of our messages (END_STREAM, spec §7.2).

        Receiving goes on until the peer ends its side. Waits for a ``send()`` in
        progress to finish queuing. Closing twice does nothing.
        """
        port = self._port
        if self._send_closed or port.reset is not None or port.lost is not None:
            return
        async with self._send_lock:
            if self._send_closed or port.reset is not None or port.lost is not None:
                return
            self._send_closed = True
            port.send_done_at = self._link.loop.time()
            core = self._link.core
            if core.stream_state(self.stream_id) in (
                StreamState.OPEN,
                StreamState.HALF_CLOSED_REMOTE,
            ):
                core.end_stream(self.stream_id)
                self._link.flush_soon()
            self._link.stream_changed(self.stream_id, bool(port.inbox))

    async def reset(self, error_code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abandon the stream both ways with RESET (spec §10.3); buffered messages are dropped."""
        self.reset_now(error_code, reason)

    def reset_now(self, error_code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """:meth:`reset` as a plain call (from a callback, or a connection closing)."""
        port = self._port
        if port.reset is not None or port.lost is not None:
            return
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("stream %d reset by this side: %s %s", self.stream_id, error_code.name,
                       reason or "-")  # fmt: skip
        core = self._link.core
        core.reset_stream(self.stream_id, error_code, reason)
        exc = StreamResetError(
            self.stream_id, error_code, reason, False, core.peer_consumed(self.stream_id)
        )
        port.reset_by(exc, self._link.loop.time())
        self._link.stream_changed(self.stream_id, False)
        self._link.flush_soon()

    async def reject(self, reason: str = "", *, accepted: int | None = None) -> None:
        """Refuse what the application could not accept: RESET(REJECTED) (spec §5.7, 1.1).

        The peer learns that only ``accepted`` messages were delivered (default: every
        message received so far but the last, the one being rejected), even if credit
        already reported more consumed; later messages are dropped, as by :meth:`reset`.
        """
        port = self._port
        if port.reset is not None or port.lost is not None:
            return
        if accepted is None:
            accepted = max(0, self.messages_received - 1)
        core = self._link.core
        core.reset_stream(self.stream_id, ErrorCode.REJECTED, reason, accepted=accepted)
        exc = StreamResetError(self.stream_id, ErrorCode.REJECTED, reason, False, accepted)
        port.reset_by(exc, self._link.loop.time())
        self._link.stream_changed(self.stream_id, False)
        self._link.flush_soon()

    def cancel_on_reset(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` when the peer resets this stream (at once if it already has).

        The peer abandoned the stream, so the work of a task serving it is wasted (spec
        §10.3); :func:`serve` does this for every handler, and an application running its
        own ``accept_stream()`` loop may do the same.
        """
        port = self._port
        port.handler_task = task
        if port.reset is not None and port.reset.remote:
            task.cancel()

    # receiving ---------------------------------------------------------------------------

    async def receive(self) -> Any:
        """Wait for the next message; consuming it returns its credit (spec §8.5).

        Cancellation: a cancelled ``receive()`` consumed nothing (it suspends only while
        no message is there; taking one does not suspend).

        Raises:
            EndOfStream: the peer ended the stream and every message was received.
            StreamResetError: the stream was reset (buffered messages are dropped).
            ConnectionLostError: the connection ended; messages that arrived before it
                are received first.
            MessageDecodeError: the message could not be decoded (it was consumed).
        """
        inbox = self._port.inbox
        now = await self._starve() if not inbox.count else None
        # No await from here on: cancelling receive() never loses a message.
        data = inbox.popleft()
        self._consumed(len(data), 1, now)
        return self.codec.decode(data)

    async def receive_many(self, max_messages: int = 1024, *, release: bool = True) -> list[Any]:
        """Wait for at least one message and return up to ``max_messages`` of them.

        Args:
            max_messages: the most messages to return.
            release: ``False`` keeps the messages' credit until :meth:`release` says the
                application is done with them (for example, wrote them to disk): until
                then the peer is not told they were consumed (spec §8.5, §10.5).

        Cancellation: as :meth:`receive`, nothing was consumed.

        Raises:
            as :meth:`receive`; with ``release=False`` a message that cannot be decoded
            raises ``MessageDecodeError`` and the whole batch stays held.
        """
        port = self._port
        now = await self._starve() if not port.inbox.count else None
        batch = port.inbox.take(max_messages)
        count = len(batch)
        if not release:
            sizes = list(map(len, batch))
            port.held.extend(sizes)
            port.inbox_bytes -= sum(sizes)
        else:
            self._consumed(sum(map(len, batch)), count, now)
        return decode_batch(self.codec, batch)

    def release(self, count: int | None = None) -> None:
        """Consume the first ``count`` messages taken with ``receive_many(release=False)``.

        Their credit may go back to the peer now, and the peer counts them consumed
        (spec §8.5, §10.5); ``None`` releases every held message. After the stream was
        reset or the connection lost, held messages were dropped, and this does nothing.

        Raises:
            ValueError: ``count`` is more than the messages held.
        """
        port = self._port
        if port.reset is not None or port.lost is not None:
            port.held.clear()
            return
        count, nbytes = take_held(port.held, count)
        if count:
            self._consumed(nbytes, count, from_inbox=False)

    def __aiter__(self) -> FlowStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except EndOfStream:
            raise StopAsyncIteration from None

    async def _starve(self) -> float:
        """Wait for a message (raising as ``_check_receive`` does); spec §14 counts it.

        Called with the inbox empty; returns the loop's time once it is not.
        """
        self._check_receive()
        link = self._link
        port = self._port
        if self.awaits_start:
            self.start_at()  # spec §15.10: nothing comes until the stream is started
        start = link.loop.time()
        self.starvation_events += 1
        link.starvation_events += 1
        link.flush_pending()  # what this task queued (CREDIT, messages) goes out now
        link.yielded()  # this task waits: the loop runs
        try:
            while True:
                await port.receive_waiters.wait()
                if port.inbox.count:
                    break
                self._check_receive()
        finally:
            now = link.loop.time()
            self.starved_seconds += now - start
        return now

    def _check_receive(self) -> None:
        port = self._port
        if port.reset is not None:
            raise port.reset
        if port.ended:
            raise EndOfStream(f"stream {self.stream_id} was ended by the peer")
        if port.lost is not None:
            raise port.lost.for_stream(self._delivered())

    def _consumed(
        self, nbytes: int, count: int, now: float | None = None, *, from_inbox: bool = True
    ) -> None:
        """Count consumed messages and release their credit (spec §8.5); ``now``: the
        loop's time, if the caller just read it."""
        port = self._port
        if from_inbox:
            port.inbox_bytes -= nbytes
        self.messages_received += count
        self.bytes_received += nbytes
        link = self._link
        link.messages_received += count
        link.bytes_received += nbytes
        core = link.core
        if now is None:
            now = link.loop.time()
        core.release(self.stream_id, nbytes, count, now)  # spec §8.5; §8.9 tunes
        if core.has_data_to_send:
            link.flush()  # the CREDIT goes out now, whatever the consumer does next
        else:
            link.dirty = True  # the timer learns of it at the next flush (spec §8.9 probes)
        budget = core.budget
        if budget is not None and budget.waiting:
            room_freed(budget)  # spec §8.9 B2: the consumed room may admit a newcomer
        if port.ended and not port.inbox and not port.held:
            link.stream_changed(self.stream_id, False)

    def _delivered(self) -> int | None:
        if self._record is not None:
            return self._record.peer_consumed
        return self._link.core.peer_consumed(self.stream_id)

    def _seconds_blocked_now(self) -> float:
        since = self._port.blocked_since
        return self.seconds_blocked + (0.0 if since is None else self._link.loop.time() - since)

    def statistics(self) -> StreamStatistics:
        """A snapshot of this stream's credit, buffers and traffic (spec §14)."""
        now = self._link.loop.time()
        return stream_statistics(
            self._link.core,
            self,
            record=self._record,
            rate=self._rate,
            buffered_messages=len(self._port.inbox),
            buffered_bytes=self._port.inbox_bytes,
            blocked_seconds=self._seconds_blocked_now(),
            sending_seconds=(self._port.send_done_at or now) - self._opened_at,
        )
