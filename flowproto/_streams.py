"""The stream table: one record per stream, ids and their parity, open counts, GOAWAY bounds.

Stream ids (spec §6.1): the initiator opens odd ids, the acceptor even ones, each side in
increasing order; an id above the highest seen is idle, one below is closed. Only open
and half-closed streams count against max_streams (spec §6.4), although a closed stream
stays in the table until its received messages are all released (spec §6.3). A GOAWAY
bounds the ids either side still processes (spec §10.4). Nothing here sends frames.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator

from ._autotune import STATIC_RATE_TIME_CONSTANT, RateEstimator, WindowTuner
from ._credit import ReceiveWindow, SendCredit
from ._errors import RemoteProtocolError
from ._frames import MAX_STREAM_ID
from ._state import StreamState

__all__ = ["Role", "StreamRecord", "StreamTable"]


class Role(enum.Enum):
    """Which end of the transport this is; it fixes stream-id parity (spec §6.1)."""

    INITIATOR = 1  # connected; opens odd stream ids
    ACCEPTOR = 2  # accepted; opens even stream ids


class StreamRecord:
    """One stream's state and credit in both directions."""

    __slots__ = (
        "confirmed",
        "feedback",
        "got_end",
        "id",
        "partial",
        "partial_len",
        "peer_consumed",
        "rate",
        "recv",
        "reported_at",
        "reported_consumed",
        "reset_code",
        "reset_consumed",
        "retained",
        "retained_base",
        "retained_base_bytes",
        "retained_bytes",
        "send",
        "sent_end",
        "start",
        "state",
        "tuner",
    )

    def __init__(self, stream_id: int, send: SendCredit, recv: ReceiveWindow) -> None:
        self.id = stream_id
        self.state = StreamState.OPEN
        self.send = send
        self.recv = recv
        self.partial: list[bytes | memoryview] | None = None  # fragments of a message
        self.partial_len = 0
        self.peer_consumed: int | None = None  # spec §10.5: the peer's last "consumed"
        self.reported_consumed = 0  # the "consumed" of our last CREDIT on this stream
        self.reported_at: float | None = None  # when it was queued (or consuming began)
        self.tuner: WindowTuner | None = None  # spec §8.9: sizes recv's window
        self.rate = RateEstimator(STATIC_RATE_TIME_CONSTANT)  # how fast it is consumed
        self.feedback: tuple[int | None, int | None] | None = None  # the peer's (rate, depth)
        # spec §15: what a session keeps. ``retained`` holds the messages sent and not yet
        # reported consumed (None without a session); ``retained_base`` messages of
        # ``retained_base_bytes`` bytes precede its first.
        self.retained: deque[bytes] | None = None
        self.retained_bytes = 0
        self.retained_base = 0
        self.retained_base_bytes = 0
        self.sent_end = False  # our END_STREAM is counted as sent (spec §15.8 step 3.4)
        self.got_end = False  # the peer's END_STREAM arrived (a RESUME's "ended")
        self.reset_code: int | None = None  # the stream was reset, either way (spec §15.7)
        self.reset_consumed = 0  # the final count that reset carried or will carry
        self.confirmed = False  # a PONG confirmed its closing (spec §15.7)
        # spec §15.10: "sending" while we opened it with await_start and wait for the
        # receiver's start; "receiving" while the peer did, until we start it.
        self.start: str | None = None

    def record_consumed(self, consumed: int | None) -> None:
        """The peer's ``consumed`` (spec §5.3, §10.5): never down, never past what we sent."""
        if consumed is None:
            return
        if consumed > self.send.sent_messages:
            raise RemoteProtocolError(
                f"peer reports {consumed} messages consumed on stream {self.id}, but only "
                f"{self.send.sent_messages} were sent (spec §5.3)"
            )
        if self.peer_consumed is None or consumed > self.peer_consumed:
            self.peer_consumed = consumed

    def drop_retained(self, upto: int) -> int:
        """Forget the retained messages up to message ``upto`` (spec §15.5); returns their
        bytes. ``upto`` past the last retained drops them all."""
        retained = self.retained
        assert retained is not None
        dropped = 0
        while self.retained_base < upto and retained:
            dropped += len(retained.popleft())
            self.retained_base += 1
        self.retained_base_bytes += dropped
        self.retained_bytes -= dropped
        return dropped

    def record_accepted(self, accepted: int) -> None:
        """A RESET(REJECTED)'s count (spec §5.7, 1.1): the messages the peer's application
        accepted, final, and possibly below an earlier ``consumed``."""
        if accepted > self.send.sent_messages:
            raise RemoteProtocolError(
                f"peer reports {accepted} messages accepted on stream {self.id}, but only "
                f"{self.send.sent_messages} were sent (spec §5.7)"
            )
        self.peer_consumed = accepted


class StreamTable:
    """Every stream in the table, and the id bookkeeping of spec §6.1, §6.4 and §10.4.

    ``records`` maps stream id to :class:`StreamRecord`; the receive hot path reads it
    directly. ``open_count[p]`` counts open and half-closed streams of id parity ``p``.
    """

    __slots__ = (
        "goaway_received_last",
        "goaway_sent_last",
        "highest_accepted_peer_id",
        "highest_peer_id",
        "next_local_id",
        "open_count",
        "parity",
        "records",
    )

    def __init__(self, role: Role) -> None:
        self.records: dict[int, StreamRecord] = {}
        self.parity = 1 if role is Role.INITIATOR else 0  # our ids are odd for the initiator
        self.open_count = [0, 0]  # open and half-closed streams by parity: [even, odd]
        self.next_local_id = 1 if role is Role.INITIATOR else 2
        self.highest_peer_id = 0
        self.highest_accepted_peer_id = 0  # what our GOAWAY names as processed (spec §10.4)
        self.goaway_sent_last: int | None = None  # spec §10.4
        self.goaway_received_last: int | None = None

    def __iter__(self) -> Iterator[StreamRecord]:
        return iter(list(self.records.values()))

    def __len__(self) -> int:
        return len(self.records)

    def get(self, stream_id: int) -> StreamRecord | None:
        return self.records.get(stream_id)

    def state_of(self, stream_id: int) -> StreamState:
        """The stream's state; a stream not in the table is IDLE or CLOSED (spec §6.3)."""
        st = self.records.get(stream_id)
        if st is not None:
            return st.state
        if stream_id % 2 == self.parity:
            return StreamState.CLOSED if stream_id < self.next_local_id else StreamState.IDLE
        return StreamState.CLOSED if stream_id <= self.highest_peer_id else StreamState.IDLE

    def is_ours(self, stream_id: int) -> bool:
        return stream_id & 1 == self.parity

    def is_idle(self, stream_id: int) -> bool:
        """Not opened yet by either side (spec §6.1)."""
        if stream_id & 1 == self.parity:
            return stream_id >= self.next_local_id
        return stream_id > self.highest_peer_id

    def can_open_local(self, max_streams: int) -> bool:
        """Whether the peer's max_streams and the id space allow one more of ours (§6.4)."""
        return self.open_count[self.parity] < max_streams and self.next_local_id <= MAX_STREAM_ID

    def allocate_local_id(self) -> int:
        stream_id = self.next_local_id
        self.next_local_id += 2
        return stream_id

    def add(self, st: StreamRecord) -> None:
        self.records[st.id] = st
        self.open_count[st.id & 1] += 1

    def at_peer_limit(self, stream_id: int, max_streams: int) -> bool:
        """Whether a new peer stream would pass our max_streams (spec §6.4)."""
        return self.open_count[stream_id & 1] >= max_streams

    def closed(self, st: StreamRecord) -> None:
        """``st`` just became CLOSED: it no longer counts against max_streams (spec §6.4)."""
        self.open_count[st.id & 1] -= 1

    def forget(self, stream_id: int) -> None:
        self.records.pop(stream_id, None)

    def any_open(self) -> bool:
        """Whether any stream in the table is not CLOSED."""
        return any(st.state is not StreamState.CLOSED for st in self.records.values())

    # --- peer streams (spec §6.1, §6.2) --------------------------------------------------

    def check_peer_open(self, stream_id: int) -> None:
        """A new stream must have the peer's parity; one of ours would be idle (spec §6.1)."""
        if stream_id & 1 == self.parity:
            raise RemoteProtocolError(
                f"frame on stream {stream_id}, which this side has not opened (spec §6.1)"
            )

    def note_peer_id(self, stream_id: int) -> None:
        """The peer used a new id: skipped ids are closed, nothing allocated (spec §6.1)."""
        self.highest_peer_id = stream_id

    # --- GOAWAY bounds (spec §10.4) ------------------------------------------------------

    def beyond_our_goaway(self, stream_id: int) -> bool:
        """A new peer stream our GOAWAY already refused: treated as closed (spec §10.4)."""
        return (
            self.goaway_sent_last is not None
            and stream_id & 1 != self.parity
            and stream_id > self.goaway_sent_last
        )

    def goaway_last_stream(self) -> int:
        """The last_stream for a GOAWAY we send now; never above an earlier one (§10.4)."""
        last = self.highest_accepted_peer_id
        if self.goaway_sent_last is not None:
            last = min(last, self.goaway_sent_last)
        self.goaway_sent_last = last
        return last

    def goaway_received(self, last_stream: int) -> int:
        """Keep the lowest last_stream the peer named (spec §10.4); returns it."""
        if self.goaway_received_last is not None:
            last_stream = min(last_stream, self.goaway_received_last)
        self.goaway_received_last = last_stream
        return last_stream

    @property
    def goaway_seen(self) -> bool:
        """Whether a GOAWAY went either way (spec §10.6)."""
        return self.goaway_received_last is not None or self.goaway_sent_last is not None
