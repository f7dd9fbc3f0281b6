"""What a FlowConnection shares with its FlowStreams: one StreamLink per connection."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from typing import Final

import trio

from .. import Connection

#: The most pieces one vectored write takes (``Connection.buffers_to_send``): more are
#: joined into one. Well under the kernel's IOV_MAX (1024 on Linux).
MAX_WRITE_BUFFERS: Final = 256

__all__ = ["StreamLink"]


class StreamLink:
    """The seam between a :class:`FlowConnection` and its :class:`FlowStream` objects.

    A stream queues messages into the core and counts them here; the connection's writer
    takes the output (emptying ``backlog``) and is woken through here. Everything the two
    classes share goes through this object, so neither reads the other's attributes
    (the connection still hands each stream its events: messages, end, reset, loss).
    """

    __slots__ = (
        "backlog",
        "backlog_lot",
        "bytes_received",
        "bytes_sent",
        "core",
        "leftover",
        "messages_received",
        "messages_sent",
        "pacing",
        "seconds_blocked",
        "socket",
        "starvation_events",
        "stream_changed",
        "timer_lot",
        "unyielded_bytes",
        "writer_lot",
    )

    def __init__(
        self, core: Connection, pacing: bool, stream_changed: Callable[[int, bool], None]
    ) -> None:
        self.core = core  # the sans-IO connection both drive
        self.pacing = pacing  # spec §8.10: streams pace from the peer's feedback
        # spec §10.7.2: bytes send() queued since the writer last took the output; send()
        # waits in backlog_lot while it is over MAX_SEND_BACKLOG.
        self.backlog = 0
        self.backlog_lot = trio.lowlevel.ParkingLot()
        self.unyielded_bytes = 0  # queued by send() since it last let the writer run
        # The connection's totals (spec §14), counted by its streams.
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.bytes_received = 0
        self.seconds_blocked = 0.0
        self.starvation_events = 0
        self.writer_lot = trio.lowlevel.ParkingLot()  # the writer waits here for output
        #: The transport's socket when it is a ``trio.SocketStream`` (TCP, Unix): then
        #: :meth:`flush` may write from the calling task. None: only the writer writes.
        self.socket: trio.socket.SocketType | None = None
        #: Bytes :meth:`flush` could not write at once; the writer writes them first.
        self.leftover: bytes | memoryview = b""
        self.timer_lot = trio.lowlevel.ParkingLot()  # the timer waits here for a deadline
        #: Called as ``stream_changed(stream_id, buffered)`` when a stream ended, was reset
        #: or was drained; ``buffered``: messages still wait in its inbox.
        self.stream_changed = stream_changed

    def wake_writer(self) -> None:
        """Let the writer take what is queued."""
        if self.writer_lot:  # unpark_all() costs ~0.6 µs even with nobody parked
            self.writer_lot.unpark_all()

    def take(self, max_buffers: int = 1) -> list[bytes | memoryview]:
        """The bytes to write next, taken: a :meth:`flush`'s leftover first, then the
        core's output, as at most ``max_buffers`` pieces (``Connection.buffers_to_send``;
        1: one piece, for a plain write). The backlog is empty again, so senders waiting
        on it go on. Empty when there is nothing to write."""
        if self.leftover:
            data: list[bytes | memoryview] = [self.leftover]
            self.leftover = b""
        else:
            data = self.core.buffers_to_send(max_buffers)
        if data:
            self._taken()
        return data

    def _taken(self) -> None:
        # The backlog is empty again, so senders waiting on it go on.
        self.backlog = 0
        self.unyielded_bytes = 0  # the output is taken: the senders let it be written
        if self.backlog_lot:
            self.backlog_lot.unpark()  # the first; each passes it on while there is room

    def flush(self) -> None:
        """Write what the core has queued, now, from the calling task, if that is safe.

        Called by a send that finds nothing queued before it, a receive about to wait, a
        consume that queued CREDIT, and the reader between reads: the bytes go out
        without waking the writer task, one scheduler round fewer per message. Safe only
        while the writer is parked (it is then mid-nothing and has no leftover) and the
        transport is an open plain socket; then one non-blocking ``write`` takes what the
        kernel accepts and the writer is handed the rest (it also meets any error, and
        the write timeout of spec §11). Otherwise this only wakes the writer.
        """
        sock = self.socket
        if sock is None or not self.writer_lot:
            self.wake_writer()
            return
        pieces = self.take()
        if not pieces:
            return
        data = pieces[0]
        fd = sock.fileno()  # -1 once closed: never write to a number since reused
        written = 0
        if fd >= 0:
            with suppress(OSError):  # full (BlockingIOError), reset, ...: the writer sees to it
                written = os.write(fd, data)
        if written < len(data):
            self.leftover = memoryview(data)[written:]
            self.writer_lot.unpark_all()

    def wake_timer(self) -> None:
        """Let the timer look at the core's next deadline again."""
        self.timer_lot.unpark_all()
