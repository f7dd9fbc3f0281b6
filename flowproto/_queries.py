"""What a connection can tell its application: streams, credit, windows, held data."""

from __future__ import annotations

from ._autotune import (
    RateEstimator,
    WindowInfo,
    WindowReason,
)
from ._parts import ConnectionParts
from ._state import (
    RECEIVING_STATES,
    SENDING_STATES,
    ConnectionState,
    StreamState,
)
from ._streams import StreamRecord

__all__ = ["ConnectionQueries"]


class ConnectionQueries(ConnectionParts):
    """Read-only views of a connection's state (no frames are queued)."""

    @property
    def partial_input(self) -> int:
        """Bytes held of a preface or frame whose rest has not arrived yet (spec §11)."""
        return len(self._inbound.buf)

    @property
    def handshake_complete(self) -> bool:
        """True once the peer's HELLO arrived (spec §3.4)."""
        return self.peer_settings is not None

    @property
    def stream_ids(self) -> list[int]:
        """Streams in the table: open, or closed with messages not yet released."""
        return list(self._streams)

    def stream_state(self, stream_id: int) -> StreamState:
        """The stream's state; a stream not in the table is IDLE or CLOSED (spec §6.3)."""
        return self._table.state_of(stream_id)

    def send_capacity(self, stream_id: int) -> tuple[int, int]:
        """(bytes, messages) we may send on the stream now: the least of its limits (spec §8.3)."""
        st = self._streams.get(stream_id)
        if st is None or st.state not in SENDING_STATES:
            return 0, 0
        messages_left = st.send.messages_left
        assert messages_left is not None
        return min(st.send.bytes_left, self._conn_send.bytes_left), messages_left

    @property
    def connection_send_capacity(self) -> int:
        """Bytes the peer's connection limit still lets us send (spec §8.3)."""
        return self._conn_send.bytes_left

    def receive_capacity(self, stream_id: int) -> tuple[int, int]:
        """(bytes, messages) the peer may still send on the stream before it needs CREDIT."""
        st = self._streams.get(stream_id)
        if st is None or st.state not in RECEIVING_STATES:
            return 0, 0
        rw = st.recv
        conn = self._conn_recv
        return (
            min(
                rw.advertised_bytes - rw.received_bytes, conn.advertised_bytes - conn.received_bytes
            ),
            rw.advertised_messages - rw.received_messages,
        )

    def received_held(self, stream_id: int = 0) -> tuple[int, int]:
        """(bytes, messages) received and not yet released; stream 0 is the connection."""
        if stream_id == 0:
            return self._conn_recv.held_bytes, 0
        st = self._streams.get(stream_id)
        if st is None:
            return 0, 0
        return st.recv.held_bytes, st.recv.held_messages

    def received_peak(self, stream_id: int = 0) -> tuple[int, int]:
        """The most (bytes, messages) held at once on the stream; stream 0 is the connection.

        Held means received and not yet released: what the application has yet to take,
        plus a message still arriving in fragments. Kept exactly where credit is checked
        (see :meth:`ReceiveWindow.held_peak`), so it never exceeds what was advertised.
        ``(0, 0)`` for a stream no longer in the table.
        """
        if stream_id == 0:
            return self._conn_recv.held_peak()[0], 0
        st = self._streams.get(stream_id)
        if st is None:
            return 0, 0
        return st.recv.held_peak()

    def peer_consumed(self, stream_id: int) -> int | None:
        """Messages the peer reported consumed on our stream (spec §10.5), if it said."""
        st = self._streams.get(stream_id)
        return None if st is None else st.peer_consumed

    @property
    def can_open_stream(self) -> bool:
        """Whether ``open_stream()`` would succeed now (spec §6.4, §10.4)."""
        return (
            self.state is ConnectionState.OPEN
            and self.peer_settings is not None
            and self._table.can_open_local(self.peer_settings.max_streams)
        )

    @property
    def finished(self) -> bool:
        """True when the connection is closed, or closing with no stream left (spec §10.4)."""
        return self.state is ConnectionState.CLOSED or (
            self.state is ConnectionState.CLOSING and not self._table.any_open()
        )

    def window_info(self, stream_id: int = 0) -> WindowInfo | None:
        """The receive window of a stream, or of the connection (0), and why it is so."""
        if stream_id == 0:
            rw = self._conn_recv
            return WindowInfo(rw.window_bytes, 0, self._conn_reason, self._conn_changes, 0.0, 0.0)
        st = self._streams.get(stream_id)
        if st is None:
            return None
        rw, tuner, rate = st.recv, st.tuner, st.rate
        return WindowInfo(
            rw.window_bytes,
            rw.window_messages,
            WindowReason.STATIC if tuner is None else tuner.reason,
            0 if tuner is None else tuner.changes,
            rate.bytes_per_second,
            rate.messages_per_second,
        )

    @property
    def budget_share(self) -> int | None:
        """This connection's fair share of its memory budget (spec §8.9 B3), if it has one."""
        budget = self.budget
        return budget.share(self._conn_recv) if budget is not None else None

    def stream_record(self, stream_id: int) -> StreamRecord | None:
        """The stream's record: its state, credit each way, rate and the peer's reports.

        For I/O layers that keep a stream's numbers after it leaves the table (the
        record stays valid, frozen at its last values). Read it; never change it: the
        verbs of :class:`Connection` do that. ``None`` for a stream not in the table.
        """
        return self._streams.get(stream_id)

    def consume_rate(self, stream_id: int) -> RateEstimator | None:
        """The stream's consumption rate (spec §8.9 rule 2), kept from :meth:`release`.

        The same object for the stream's whole life, so a caller may keep it after the
        stream leaves the table. Its rates in bytes and in messages come from the same
        samples. ``None`` for a stream not in the table.
        """
        st = self._streams.get(stream_id)
        return None if st is None else st.rate

    def peer_feedback(self, stream_id: int) -> tuple[int | None, int | None] | None:
        """The peer's latest (rate, depth) feedback on our stream (spec §8.10), if any."""
        st = self._streams.get(stream_id)
        return None if st is None else st.feedback

    @property
    def glitches(self) -> int:
        """Frames the peer sent that cost work and made no progress (spec §10.7.1)."""
        return self._glitch_budget.count
