"""Sending messages (spec §7, §8.3, §8.7): the send verbs of a connection and their hot path.

Credit is checked and counted by ``_credit`` (``send_room``/``spend``/``take_send``), frames
go to the ``Outbound`` queue; a message short of credit notes BLOCKED (spec §8.7).
"""

from __future__ import annotations

from typing import Final

from ._credit import send_room, spend, take_send
from ._errors import ConnectionClosedError, ErrorCode, LocalProtocolError, StreamClosedError
from ._frames import HEADER, CreditFrame, Flags, FrameType
from ._parts import ConnectionParts
from ._state import (
    CONNECTION_CLOSED,
    SENDING_STATES,
    StreamInput,
    StreamState,
)
from ._streams import StreamRecord

__all__ = ["DataSending"]

_DATA: Final = int(FrameType.DATA)
_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_pack_header = HEADER.pack


class DataSending(ConnectionParts):
    """The send verbs: whole messages and batches under credit, END_STREAM, BLOCKED."""

    def _sendable(self, stream_id: int) -> StreamRecord:
        if self.state is CONNECTION_CLOSED:
            # spec §10.2 step 2: nothing is sent after an error GOAWAY (ours or the peer's).
            raise ConnectionClosedError(
                f"cannot send on stream {stream_id}: the connection is closed (spec §10.2)"
            )
        st = self._streams.get(stream_id)
        if st is None or st.state not in SENDING_STATES:
            state = self.stream_state(stream_id)
            raise StreamClosedError(
                f"cannot send on stream {stream_id}: it is {state.value} (spec §6.3)"
            )
        return st

    def send_message(self, stream_id: int, payload: bytes, *, end_stream: bool = False) -> bool:
        """Queue one whole message if credit covers all of it (spec §8.3).

        A message is sent whole or not at all: nothing is queued unless the stream's
        byte and message credit and the connection's byte credit each cover it.

        Returns:
            True if queued; False if credit is short (a BLOCKED frame is then queued
            once per limit value, spec §8.7): wait for :class:`CreditGranted` and retry.

        Raises:
            StreamClosedError: the stream cannot carry messages from us.
            ConnectionClosedError: the connection is closed (spec §10.2).
            LocalProtocolError: MESSAGE_TOO_LARGE if over the peer's max_message_bytes.
        """
        st = self._sendable(stream_id)
        if self._suspended or st.start is not None:
            # spec §15.6: resuming, wait for SessionResumed; §15.10: for StreamStarted.
            return False
        n = len(payload)
        peer = self.peer_settings
        assert peer is not None
        if n > peer.max_message_bytes:
            raise LocalProtocolError(
                f"a {n}-byte message is over the peer's max_message_bytes = "
                f"{peer.max_message_bytes} (spec §7.3)",
                ErrorCode.MESSAGE_TOO_LARGE,
            )
        if not take_send(st.send, self._conn_send, n):  # spec §8.3: counted if it fits
            self._has_credit(st, n)  # notes BLOCKED
            return False
        self._blocked.pop(stream_id, None)
        retained = st.retained
        if retained is not None:  # spec §15.5: kept until reported consumed
            retained.append(payload if type(payload) is bytes else bytes(payload))
            st.retained_bytes += n
            self._retained_grew(n)
        if n <= peer.max_frame_bytes and not end_stream:
            self._out += (_pack_header(n, _DATA, _END_MESSAGE, stream_id), payload)
            return True
        if end_stream:
            self._report_before_close(st)
            st.sent_end = True
        self._output.message(stream_id, payload, peer.max_frame_bytes, end_stream)
        if end_stream:
            # After the frame: closing may queue the confirming PING, which must follow
            # the stream's last frame (spec §15.7).
            self._advance(st, StreamInput.SEND_END, local=True)
            self._maybe_forget(st)
        return True

    def send_messages(
        self, stream_id: int, payloads: list[bytes], *, end_stream: bool = False
    ) -> int:
        """Queue as many whole messages from the front of ``payloads`` as credit allows.

        The batch path of :meth:`send_message` (spec §8.3). ``end_stream`` applies
        only if every message was queued.

        Returns:
            How many were queued; fewer than ``len(payloads)`` means credit ran short.
        """
        count = len(payloads)
        if count == 1:  # the Trio layer's send(): the single-message path, same rules
            return 1 if self.send_message(stream_id, payloads[0], end_stream=end_stream) else 0
        st = self._sendable(stream_id)
        if self._suspended or st.start is not None:
            return 0  # spec §15.6, §15.10: wait for SessionResumed or StreamStarted
        peer = self.peer_settings
        assert peer is not None
        max_message = peer.max_message_bytes
        max_frame = peer.max_frame_bytes
        bytes_left, messages_left = send_room(st.send, self._conn_send)  # spec §8.3
        if 8 <= count <= messages_left:
            # The whole batch in one go when credit covers it and no message needs
            # fragments: the same checks as the loop below, made once over the batch.
            lengths = list(map(len, payloads))
            nbytes = sum(lengths)
            if nbytes <= bytes_left and max(lengths) <= min(max_message, max_frame):
                spend(st.send, self._conn_send, nbytes, count)
                if st.retained is not None:
                    self._retain(st, payloads, nbytes)
                self._output.whole_messages(st.id, payloads, lengths)
                self._output.unblock(st.id)
                if end_stream:
                    self.end_stream(st.id)
                return count
        sent = nbytes = 0
        while sent < count:
            n = len(payloads[sent])
            if n > max_message or n > bytes_left - nbytes or sent >= messages_left:
                break
            nbytes += n
            sent += 1
        spend(st.send, self._conn_send, nbytes, sent)
        if st.retained is not None and sent:
            self._retain(st, payloads[:sent], nbytes)
        output = self._output
        out = self._out
        sid = st.id
        for payload in payloads[:sent]:
            n = len(payload)
            if n <= max_frame:
                out += (_pack_header(n, _DATA, _END_MESSAGE, sid), payload)
            else:
                output.fragments(sid, payload, max_frame, False)
        if sent < count:
            n = len(payloads[sent])
            if n > max_message:
                if sent:
                    return sent
                raise LocalProtocolError(
                    f"a {n}-byte message is over the peer's max_message_bytes = "
                    f"{max_message} (spec §7.3)",
                    ErrorCode.MESSAGE_TOO_LARGE,
                )
            self._has_credit(st, n)  # notes BLOCKED
            return sent
        self._blocked.pop(sid, None)
        if end_stream:
            self.end_stream(st.id)
        return sent

    def _retain(self, st: StreamRecord, payloads: list[bytes], nbytes: int) -> None:
        """Keep sent messages until the peer reports them consumed (spec §15.5)."""
        retained = st.retained
        assert retained is not None
        retained.extend(p if type(p) is bytes else bytes(p) for p in payloads)
        st.retained_bytes += nbytes
        self._retained_grew(nbytes)

    def _retained_grew(self, nbytes: int) -> None:
        sess = self._session
        assert sess is not None
        sess.retained_bytes += nbytes

    def _has_credit(self, st: StreamRecord, n: int) -> bool:
        """Whether credit covers an ``n``-byte message; if not, BLOCKED names the limit."""
        bytes_left, messages_left = send_room(st.send, self._conn_send)
        if n <= bytes_left and messages_left > 0:
            return True
        send = st.send
        if send.sent_bytes + n > send.limit_bytes or not messages_left:
            self._output.note_blocked(st.id, (send.limit_bytes, send.limit_messages))
        conn = self._conn_send
        if conn.sent_bytes + n > conn.limit_bytes:
            self._output.note_blocked(0, (conn.limit_bytes, None))
        return False

    def end_stream(self, stream_id: int) -> None:
        """Half-close: send END_STREAM on an empty DATA frame; needs no credit (spec §7.2)."""
        st = self._sendable(stream_id)
        self._report_before_close(st)
        st.sent_end = True
        if not self._suspended:  # resuming: reconciling sends it (spec §15.8 step 3.4)
            self._output.end_stream(stream_id)
        # After the frame: closing may queue the confirming PING, which must follow the
        # stream's last frame (spec §15.7).
        self._advance(st, StreamInput.SEND_END, local=True)
        self._maybe_forget(st)

    def _report_before_close(self, st: StreamRecord) -> None:
        # spec §10.5 (1.1): our END_STREAM closes a stream the peer ended while messages
        # are still unconsumed; no CREDIT can go after it, so report the count so far now.
        rw = st.recv
        if (
            st.state is StreamState.HALF_CLOSED_REMOTE
            and rw.held_messages
            and rw.consumed_messages > st.reported_consumed
        ):
            self._output.queue(
                CreditFrame(
                    st.id, rw.advertised_bytes, rw.advertised_messages, rw.consumed_messages
                )
            )
            st.reported_consumed = rw.consumed_messages
