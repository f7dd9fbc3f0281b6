"""What a FlowConnection shares with its FlowStreams: one StreamLink per connection."""

from __future__ import annotations

from collections.abc import Callable

import trio

from .. import Connection

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
        "messages_received",
        "messages_sent",
        "pacing",
        "seconds_blocked",
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
        self.timer_lot = trio.lowlevel.ParkingLot()  # the timer waits here for a deadline
        #: Called as ``stream_changed(stream_id, buffered)`` when a stream ended, was reset
        #: or was drained; ``buffered``: messages still wait in its inbox.
        self.stream_changed = stream_changed

    def wake_writer(self) -> None:
        """Let the writer take what is queued."""
        if self.writer_lot:  # unpark_all() costs ~0.6 µs even with nobody parked
            self.writer_lot.unpark_all()

    def wake_timer(self) -> None:
        """Let the timer look at the core's next deadline again."""
        self.timer_lot.unpark_all()
