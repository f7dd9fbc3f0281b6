"""What a FlowConnection shares with its FlowStreams: one StreamLink, one StreamPort each.

The connection is an ``asyncio.Protocol``: the event loop calls it with every chunk read,
and it writes to the transport itself, so there is no reader or writer task. A stream
queues messages in the core and asks the link to :meth:`StreamLink.flush` (now, or once
at the end of this turn of the loop); the connection hands each stream what the core
reported through its :class:`StreamPort`. Everything the classes share goes through these
two objects, so neither reads the other's private attributes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import Connection
from ..iolayer import Inbox
from ._errors import ConnectionLostError, StreamResetError

if TYPE_CHECKING:
    from ._stream import FlowStream

__all__ = ["StreamLink", "StreamPort", "Waiters"]


class Waiters:
    """Tasks waiting for something to change (asyncio's ``ParkingLot``).

    :meth:`wait` returns after the next :meth:`wake_all`; the waiter then checks again
    what it waits for. Cancelling a wait leaves nothing behind.
    """

    __slots__ = ("_futures", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._futures: list[asyncio.Future[None]] = []
        # The loop its waiters run on, if known (asyncio.get_running_loop() otherwise,
        # which costs a getpid() system call each time on Linux).
        self._loop = loop

    def __bool__(self) -> bool:
        return bool(self._futures)

    async def wait(self, timeout: float | None = None) -> None:
        """Wait for the next :meth:`wake_all`, or at most ``timeout`` seconds.

        The waiter is registered before this suspends, so a wake-up between the
        caller's check and its wait is never missed.
        """
        future: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()
        self._futures.append(future)
        try:
            if timeout is None:
                await future
            else:
                await asyncio.wait((future,), timeout=timeout)
        finally:
            if not future.done():  # cancelled, or timed out: forget it
                future.cancel()
                self._futures.remove(future)

    def wake_all(self) -> None:
        """Let every waiting task go on."""
        futures = self._futures
        if futures:
            self._futures = []
            for future in futures:
                if not future.done():
                    future.set_result(None)


class StreamPort:
    """One stream's side of the seam: what arrived for it and why it ended.

    The connection fills it (:meth:`deliver`, :meth:`end`, :meth:`reset_by`,
    :meth:`lose`); the stream reads it. The inbox holds at most what we advertised,
    because the core rejects anything past it (spec §8.4).
    """

    __slots__ = (
        "blocked_since",
        "ended",
        "handler_task",
        "held",
        "inbox",
        "inbox_bytes",
        "lost",
        "receive_waiters",
        "reset",
        "send_done_at",
        "send_waiters",
        "start_position",
        "stream",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.inbox = Inbox()
        self.inbox_bytes = 0
        # Sizes of messages taken with receive_many(release=False) and not yet released.
        self.held: deque[int] = deque()
        self.ended = False  # the peer sent END_STREAM
        self.reset: StreamResetError | None = None
        self.lost: ConnectionLostError | None = None
        self.receive_waiters = Waiters(loop)  # receive() waiting for a message
        self.send_waiters = Waiters(loop)  # send() waiting for credit
        self.blocked_since: float | None = None  # when the send() waiting now began
        self.send_done_at: float | None = None  # when the stream stopped being able to send
        #: The serve() handler's task, cancelled when the peer resets the stream.
        self.handler_task: asyncio.Task[Any] | None = None
        self.stream: FlowStream | None = None  # the stream this port belongs to
        # spec §15.10: where the peer said a stream we opened with await_start starts,
        # (messages, bytes) it already holds; started() waits in send_waiters for it.
        self.start_position = (0, 0)

    def deliver(self, messages: list[bytes], nbytes: int) -> None:
        """Messages arrived for the stream (spec §7.1)."""
        self.inbox.extend(messages)
        self.inbox_bytes += nbytes
        self.receive_waiters.wake_all()

    def started_at(self, messages: int, nbytes: int) -> None:
        """The peer said where the stream starts (spec §15.10): sending may begin."""
        self.start_position = (messages, nbytes)
        self.send_waiters.wake_all()

    def end(self) -> None:
        """The peer sent END_STREAM (spec §7.2)."""
        self.ended = True
        self.receive_waiters.wake_all()

    def reset_by(self, exc: StreamResetError, now: float) -> None:
        """The stream was reset (spec §10.3): buffered messages are dropped."""
        if self.reset is None:
            self.reset = exc
        if self.send_done_at is None:
            self.send_done_at = now
        task = self.handler_task
        if exc.remote and task is not None and task is not asyncio.current_task():
            # spec §10.3: the peer abandoned the stream, so its handler's work is wasted;
            # cancelling it keeps reset streams from piling up work ("Rapid Reset").
            task.cancel()
        self.inbox.clear()
        self.inbox_bytes = 0
        self.held.clear()  # the core released them with the reset (spec §8.8)
        self.receive_waiters.wake_all()
        self.send_waiters.wake_all()

    def lose(self, exc: ConnectionLostError, now: float) -> None:
        """The connection ended; messages that arrived before it are still received."""
        if self.lost is None:
            self.lost = exc
        if self.send_done_at is None:
            self.send_done_at = now
        self.receive_waiters.wake_all()
        self.send_waiters.wake_all()


class StreamLink:
    """The seam between a :class:`FlowConnection` and its :class:`FlowStream` objects.

    Output: the core queues it, :meth:`flush` writes it to the transport in one write.
    Messages a task queues (:meth:`sent`) go out at once the first time in a turn of the
    loop, so a lone message waits for nothing; more in the same turn go out together at
    its end (``flush_soon``), so many sends make one write. The transport buffers what
    the socket does not take; past ``MAX_SEND_BACKLOG`` it pauses the protocol
    (``paused``) and ``send()`` waits in ``drain_waiters``.
    """

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "core",
        "dirty",
        "drain_waiters",
        "flush_scheduled",
        "loop",
        "messages_received",
        "messages_sent",
        "on_flush",
        "pacing",
        "paused",
        "seconds_blocked",
        "starvation_events",
        "stream_changed",
        "transport",
        "unyielded_bytes",
        "written",
        "wrote_this_turn",
    )

    def __init__(
        self,
        core: Connection,
        loop: asyncio.AbstractEventLoop,
        pacing: bool,
        stream_changed: Callable[[int, bool], None],
        on_flush: Callable[[bool], None],
    ) -> None:
        self.core = core  # the sans-IO connection both drive
        self.loop = loop
        self.pacing = pacing  # spec §8.10: streams pace from the peer's feedback
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self.paused = False  # the transport's buffer is over its high-water mark
        self.drain_waiters = Waiters(loop)  # send() waiting for the transport to drain
        self.flush_scheduled = False
        # A task wrote at once (sent()) and may not have let the loop run since: what it
        # queues next waits for the end of the turn (flush_soon), to go out together.
        self.wrote_this_turn = False
        # The core changed (a release() that queued nothing) since the last flush, which
        # re-arms the timer: the deadline may have moved (spec §8.9 round-trip probes).
        self.dirty = False
        self.unyielded_bytes = 0  # queued by send() since the loop last ran other tasks
        self.written = 0  # bytes handed to the transport (the write timeout's progress)
        # The connection's totals (spec §14), counted by its streams.
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.bytes_received = 0
        self.seconds_blocked = 0.0
        self.starvation_events = 0
        #: Called as ``stream_changed(stream_id, buffered)`` when a stream ended, was reset
        #: or was drained; ``buffered``: messages still wait in its inbox.
        self.stream_changed = stream_changed
        #: Called after each flush as ``on_flush(wrote)``: the connection re-arms its timer,
        #: and watches the transport's progress if the write left bytes in it (spec §11).
        self.on_flush = on_flush

    def flush(self) -> None:
        """Write everything the core has queued to the transport, now, in one write.

        ``transport.write`` never blocks: what the socket does not take at once is
        buffered by the transport, which pauses the protocol past its high-water mark.
        """
        self.flush_scheduled = False
        self.dirty = False
        core = self.core
        transport = self.transport
        wrote = False
        if transport is not None and core.has_data_to_send and not transport.is_closing():
            data = core.data_to_send()
            self.written += len(data)
            transport.write(data)
            wrote = True
        self.on_flush(wrote)

    def flush_pending(self) -> None:
        """:meth:`flush`, unless nothing changed since the last one: a task about to wait
        flushes what it queued, which a send has often written already."""
        if self.flush_scheduled or self.dirty or self.core.has_data_to_send:
            self.flush()

    def sent(self) -> None:
        """A task queued messages: write them now, unless it already wrote in this turn
        of the loop (then at the end of the turn, with what it queues next)."""
        if self.wrote_this_turn:
            self.flush_soon()
        else:
            self.wrote_this_turn = True
            self.flush()

    def yielded(self) -> None:
        """The running task lets the loop run: its next message starts a new turn's
        writes, and its allowance of bytes queued without yielding starts again."""
        self.wrote_this_turn = False
        self.unyielded_bytes = 0

    def flush_soon(self) -> None:
        """Flush once the running task lets the loop run: sends of one turn, one write."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        # A flush since flush_soon (a receive() about to wait flushes at once, as does
        # every read) wrote everything and re-armed the timer: nothing is left to do.
        self.wrote_this_turn = False  # the loop ran: the next send writes at once
        if self.flush_scheduled:
            self.flush()
