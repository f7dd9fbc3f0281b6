"""DATA off the hot path (spec §5.1, §6, §7, §8.4): new streams, fragments, END_STREAM,
closed streams, header-time checks, stream errors, and the glitch budget's charges.
"""

from __future__ import annotations

from typing import Final

from ._errors import (
    ErrorCode,
    RemoteProtocolError,
)
from ._events import (
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from ._frames import (
    Flags,
    ResetFrame,
)
from ._inbound import Received
from ._parts import ConnectionParts
from ._state import (
    RECEIVING_STATES,
    ConnectionState,
    StreamInput,
    StreamState,
)
from ._streams import StreamRecord

__all__ = ["DataReceiving"]

_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_END_STREAM: Final = int(Flags.END_STREAM)


class DataReceiving(ConnectionParts):
    """What the connection does with DATA the input walk hands back."""

    def _check_data_header(
        self,
        sid: int,
        length: int,
        flags: int,
        st: StreamRecord | None,
        rx: Received,
    ) -> None:
        """Checks of a DATA frame from its header, before its body is buffered (spec §8.4).

        Connection errors raise; a message over max_message_bytes resets its stream at
        once (spec §7.3), and the body, when it comes, is discarded as on a closed stream.
        Everything here is repeated harmlessly if the same header is parsed again.
        """
        self._conn_check(length)
        truncates = flags & _END_STREAM and not flags & _END_MESSAGE
        if st is None:
            if not self._table.is_idle(sid):
                return  # closed: spec §6.5
            self._table.check_peer_open(sid)
            if self._table.beyond_our_goaway(sid) or self._would_refuse(sid):
                return
            ls = self.local_settings
            if length > ls.stream_bytes:
                raise RemoteProtocolError(
                    f"peer opened stream {sid} with {length} bytes against a limit of "
                    f"{ls.stream_bytes} (spec §8.4)",
                    ErrorCode.FLOW_CONTROL_ERROR,
                )
            if truncates and length:
                raise RemoteProtocolError(
                    f"END_STREAM on stream {sid} inside a message (spec §7.2)"
                )
            if length > ls.max_message_bytes:
                opened = self._open_peer_stream(sid, rx)
                if opened is not None:
                    self._too_large(opened, rx)
            return
        if st.state not in RECEIVING_STATES:
            return
        rw = st.recv
        begins = 1 if st.partial is None and (length or not truncates) else 0
        if (
            rw.received_bytes + length > rw.advertised_bytes
            or rw.received_messages + begins > rw.advertised_messages
        ):
            rw.receive(length, begins, f"stream {sid}")  # raises
        if truncates and (st.partial is not None or length):
            raise RemoteProtocolError(f"END_STREAM on stream {sid} inside a message (spec §7.2)")
        so_far = st.partial_len if st.partial is not None else 0
        if so_far + length > self.local_settings.max_message_bytes:
            self._too_large(st, rx)

    def _would_refuse(self, sid: int) -> bool:
        return (
            self.state is not ConnectionState.OPEN and self.state is not ConnectionState.CLOSING
        ) or self._table.at_peer_limit(sid, self.local_settings.max_streams)

    def _too_large(self, st: StreamRecord, rx: Received) -> None:
        # spec §7.3: the stream is reset; the connection lives.
        rx.flush(st.id)
        self._stream_error(
            st,
            ErrorCode.MESSAGE_TOO_LARGE,
            f"message over max_message_bytes = {self.local_settings.max_message_bytes}",
            rx,
        )

    def _conn_check(self, length: int) -> None:
        conn = self._conn_recv
        if conn.received_bytes + length > conn.advertised_bytes:
            conn.receive(length, 0, "the connection")  # raises

    def _open_peer_stream(
        self, sid: int, rx: Received, *, await_start: bool = False
    ) -> StreamRecord | None:
        """The peer's first frame on a new stream id (spec §6.2); None if not processed.

        ``await_start``: its opening CREDIT asks us to say where it starts (spec §15.10).
        """
        self._table.check_peer_open(sid)
        self._table.note_peer_id(sid)  # spec §6.1: skipped ids are closed
        if self._table.beyond_our_goaway(sid):
            return None  # spec §10.4: not processed
        if self.state is not ConnectionState.OPEN and self.state is not ConnectionState.CLOSING:
            return None
        if self._table.at_peer_limit(sid, self.local_settings.max_streams):
            # spec §6.4: refuse it; the connection lives. Refusals spend the budget (§10.7.1).
            self._glitch(f"stream {sid} over max_streams = {self.local_settings.max_streams}")
            self._output.queue(
                ResetFrame(sid, ErrorCode.REFUSED_STREAM, "too many concurrent streams", 0)
            )
            self._output.count_reply()
            return None
        st = self._new_stream(sid)
        self._table.highest_accepted_peer_id = sid
        if await_start:
            st.start = "receiving"  # spec §15.10: the opener waits for our start
        rx.events.append(StreamOpened(sid, await_start))
        return st

    def _stream_for_frame(
        self, sid: int, rx: Received, *, await_start: bool = False
    ) -> StreamRecord | None:
        """The stream a received stream-level frame is for, opening it if new; None if closed."""
        st = self._streams.get(sid)
        if st is not None:
            return st
        if self._table.is_idle(sid):
            return self._open_peer_stream(sid, rx, await_start=await_start)
        return None

    def _receive_data_frame(
        self,
        sid: int,
        flags: int,
        body: bytes | memoryview,
        rx: Received,
    ) -> None:
        """DATA off the hot path: new streams, fragments, END_STREAM, closed streams.

        A large ``body`` may be a view of the read (``_inbound.VIEW_MIN_BYTES``): it is
        kept as such only in ``st.partial``, until the message is joined.
        """
        length = len(body)
        if sid not in self._streams and self._table.is_idle(sid):
            # The header-time checks of a new stream, in the order a frame whose body
            # has not arrived yet gets them, so a split never changes the outcome (§4.2).
            self._check_data_header(sid, length, flags, None, rx)
        st = self._stream_for_frame(sid, rx)
        if st is None or st.state not in RECEIVING_STATES:
            if not length:
                self._glitch(f"empty DATA on closed stream {sid}")  # spec §10.7.1
            # spec §6.5, §8.8: counted against the connection, its credit returned at once.
            self._conn_recv.receive(length, 0, "the connection")
            self._conn_recv.consume(length, 0)
            self._update_connection_credit()
            if st is not None and st.state is StreamState.HALF_CLOSED_REMOTE:
                rx.flush(sid)
                self._stream_error(st, ErrorCode.STREAM_CLOSED, "DATA after END_STREAM", rx)
            return
        end_message = flags & _END_MESSAGE
        end_stream = flags & _END_STREAM
        if not end_message and not end_stream and length < self.limits.min_fragment_bytes:
            # spec §7.1, §10.7.1: a non-final fragment shorter than MIN_FRAGMENT_BYTES.
            self._glitch(f"{length}-byte DATA fragment on stream {sid}")
        begins = st.partial is None and (length or end_message or not end_stream)
        self._conn_recv.receive(length, 0, "the connection")
        st.recv.receive(length, 1 if begins else 0, f"stream {sid}")
        if end_stream and not end_message and (st.partial is not None or begins):
            raise RemoteProtocolError(f"END_STREAM on stream {sid} inside a message (spec §7.2)")
        if begins:
            st.partial = []
            st.partial_len = 0
        if st.partial is not None:
            if st.partial_len + length > self.local_settings.max_message_bytes:
                self._too_large(st, rx)  # spec §7.3
                return
            st.partial.append(body)
            st.partial_len += length
            if end_message:
                parts = st.partial
                message = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
                st.partial = None
                rx.message(sid, message)
        if end_stream:
            rx.flush(sid)
            st.got_end = True  # spec §15.3.2: a RESUME's "ended"
            self._advance(st, StreamInput.RECV_END, local=False)
            rx.events.append(StreamEnded(sid))
            self._final_report(st)
            self._maybe_forget(st)

    def _glitch(self, what: str) -> None:
        """The peer's frame cost work and made no progress: spend a token (spec §10.7.1)."""
        self._glitch_budget.spend(what, self._conn_recv.consumed_bytes)

    def _stream_error(self, st: StreamRecord, code: ErrorCode, reason: str, rx: Received) -> None:
        """Reset one stream for the peer's error (spec §10.3)."""
        self._glitch(f"{code.name} on stream {st.id}")  # spec §10.7.1: resets we are made to send
        self._output.queue(ResetFrame(st.id, code, reason, st.recv.consumed_messages))
        self._output.count_reply()
        st.reset_code = code  # spec §15.7
        st.reset_consumed = st.recv.consumed_messages
        self._advance(st, StreamInput.SEND_RESET, local=True)
        rx.events.append(StreamReset(st.id, code, reason, False, None))
        self._discard(st)
