"""Reconciling on resumption (spec §15.8): both exchanges in, every stream set straight.

When a session resumes on a new transport, each side sends its *exchange* (one RESUME per
stream it holds, then a connection RESUME; ``_session.py`` queues ours and collects the
peer's). The peer's connection RESUME completes it, and :meth:`SessionReconciling._reconcile`
walks every stream in our table or in the peer's exchange, in increasing id order, by the
spec's numbered steps:

1. the peer's RESUME carries a reset: handled as a RESET received;
2. the stream was reset here: our exchange carried it, the peer closes it;
3. both hold it: check the peer's position, rewind our send counters to it and
   retransmit exactly the retained messages after it (and END_STREAM again if needed);
4. only we hold it: the peer never saw it (as step 3 from the start), or forgot it after
   confirming it closed at both ends;
5. only the peer holds it: a stream it opened that we never saw opens here, or one we
   forgot after confirming it is ignored.

Then the connection's counters are rewound, the session counts the resumption and its
retransmissions, and DATA flows again (:class:`SessionResumed`). A stream started by a
cold resume whose answer was lost with the transport starts first (spec §15.10,
``_cold_start.py``). Retention and the records of closed streams stay with the session
(``_session.py``); this part calls them through :class:`ConnectionParts`.
"""

from __future__ import annotations

from itertools import islice

from ._cold_start import cold_start
from ._credit import spend
from ._errors import ErrorCode, RemoteProtocolError
from ._events import SessionResumed, StreamReset
from ._frames import ResumeFrame
from ._inbound import Received
from ._parts import ConnectionParts
from ._state import StreamInput, StreamState
from ._streams import StreamRecord

__all__ = ["SessionReconciling"]


class SessionReconciling(ConnectionParts):
    """Reconciling a resumed session (spec §15.8); a base of ``SessionResumption``."""

    def _reconcile(self, conn_resume: ResumeFrame, rx: Received) -> None:
        """The peer's connection RESUME completes its exchange: reconcile every stream
        in ours or in its exchange, in increasing id order (spec §15.8, the steps named
        on the lines), then the connection, and resume sending."""
        sess = self._session
        peer = self.peer_settings
        assert sess is not None and peer is not None
        resumes = sess.peer_resumes
        conn = self._conn_send
        received = conn_resume.received[1]
        if received > conn.sent_bytes:
            raise RemoteProtocolError(
                f"peer resumes the connection at {received} bytes, but {conn.sent_bytes} "
                "were sent (spec §15.8)"
            )
        conn.sent_bytes = received
        conn.grant(conn_resume.limits[0])
        count = nbytes = 0
        for sid in sorted(self._streams.keys() | resumes.keys()):
            st = self._streams.get(sid)
            resume = resumes.get(sid)
            if st is None:
                assert resume is not None
                st = self._resumed_peer_stream(resume, rx)  # step 5
                if st is None:
                    continue
            if resume is None:
                if self._table.is_ours(sid) and sid > conn_resume.highest:
                    # step 4: the peer never saw it; our exchange has just opened it there.
                    resume = ResumeFrame(sid, (0, 0), 0, (0, 0))
                else:
                    self._peer_forgot(st)  # step 4
                    continue
            if resume.reset is not None:
                self._resumed_reset(st, resume, rx)  # step 1
                continue
            if st.reset_code is not None:
                continue  # step 2: our exchange carried the reset; the peer closes it
            if st.start == "sending" and sid in resumes:
                # spec §15.10: the receiver's start was lost with the transport; its
                # RESUME states the same position.
                rx.events.append(cold_start(st, resume))
            sent = self._retransmit(st, resume)  # step 3
            count += sent[0]
            nbytes += sent[1]
        resumes.clear()
        sess.phase = None
        sess.resumed += 1
        sess.messages_retransmitted += count
        sess.bytes_retransmitted += nbytes
        self._suspended = False
        self._inbound.hold_data = False
        # Streams forgotten by step 4 need no confirmation any more (spec §15.7).
        streams = self._streams
        sess.closed_next = [sid for sid in sess.closed_next if sid in streams]
        if sess.closed_next:
            self._send_confirm_ping()
        self._update_connection_credit()
        rx.events.append(SessionResumed(count, nbytes))

    def _resumed_peer_stream(self, resume: ResumeFrame, rx: Received) -> StreamRecord | None:
        """Step 5: a stream only the peer has."""
        sid = resume.stream_id
        if not self._table.is_idle(sid):
            # We forgot it after confirming it; the peer forgets it too. Legal (its PONG of
            # our confirming PING may have been lost), so never a glitch (spec §10.7.1).
            return None
        if self._table.is_ours(sid):
            raise RemoteProtocolError(f"RESUME of stream {sid}, never opened here (spec §15.8)")
        if resume.received != (0, 0):
            raise RemoteProtocolError(
                f"peer resumes stream {sid} at {resume.received}, but nothing was sent on it "
                "(spec §15.8 step 5)"
            )
        st = self._open_peer_stream(sid, rx, await_start=False)
        if st is not None:
            st.send.grant(*resume.limits)
        return st

    def _peer_forgot(self, st: StreamRecord) -> None:
        """Step 4: the peer forgot a stream only after confirming it closed at both ends."""
        if st.state is not StreamState.CLOSED:
            raise RemoteProtocolError(
                f"peer holds no record of stream {st.id}, which is {st.state.value} here "
                "(spec §15.8 step 4)"
            )
        self._drop_all_retained(st)
        st.confirmed = True
        self._maybe_forget(st)

    def _resumed_reset(self, st: StreamRecord, resume: ResumeFrame, rx: Received) -> None:
        """Step 1: the peer's exchange says the stream was reset; as a RESET received."""
        if st.state is StreamState.CLOSED:
            return
        code = resume.reset
        assert code is not None
        if code == ErrorCode.REJECTED:
            st.record_accepted(resume.consumed)
        else:
            st.record_consumed(resume.consumed)
        st.reset_code = code
        st.reset_consumed = st.recv.consumed_messages
        rx.flush(st.id)
        self._advance(st, StreamInput.RECV_RESET, local=False)
        rx.events.append(StreamReset(st.id, code, "reset (resumed)", True, resume.consumed))
        self._discard(st)

    def _retransmit(self, st: StreamRecord, resume: ResumeFrame) -> tuple[int, int]:
        """Step 3: rewind the stream to what the peer received; queue what follows."""
        messages, nbytes = resume.received
        send = st.send
        retained = st.retained
        assert retained is not None
        if messages > send.sent_messages or nbytes > send.sent_bytes:
            raise RemoteProtocolError(
                f"peer resumes stream {st.id} at {resume.received}, past the "
                f"{send.sent_messages} messages / {send.sent_bytes} bytes sent (spec §15.8)"
            )
        skip = messages - st.retained_base
        if skip < 0:
            raise RemoteProtocolError(
                f"peer resumes stream {st.id} at message {messages}, before the "
                f"{st.retained_base} it reported consumed (spec §15.8)"
            )
        at = st.retained_base_bytes + sum(map(len, islice(retained, skip)))
        if at != nbytes:
            raise RemoteProtocolError(
                f"peer resumes stream {st.id} at {nbytes} bytes, but message {messages} ends "
                f"at byte {at} (spec §15.8)"
            )
        if resume.ended and (messages != send.sent_messages or not st.sent_end):
            raise RemoteProtocolError(
                f"peer says stream {st.id} ended, but not all was sent (spec §15.8)"
            )
        st.record_consumed(resume.consumed)
        self._trim_retained(st)
        send.grant(*resume.limits)
        conn = self._conn_send
        conn.sent_messages -= send.sent_messages - messages
        send.sent_bytes = nbytes
        send.sent_messages = messages
        peer = self.peer_settings
        assert peer is not None
        output = self._output
        count = total = 0
        for payload in islice(retained, messages - st.retained_base, None):
            n = len(payload)
            spend(send, conn, n, 1)  # spec §15.8 step 3.3: each counted as a new send
            output.message(st.id, payload, peer.max_frame_bytes, False)
            count += 1
            total += n
        if st.sent_end and not resume.ended:
            output.end_stream(st.id)  # step 3.4
        return count, total
