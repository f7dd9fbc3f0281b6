"""Control frames in (spec §5): a handler per frame type, chosen by table; the transport's end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ._credit import replenish_threshold
from ._errors import (
    ErrorCode,
    RemoteProtocolError,
)
from ._events import (
    ConnectionClosed,
    CreditGranted,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    PeerBlocked,
    PingReceived,
    PongReceived,
    StreamReset,
    StreamStarted,
)
from ._frames import (
    BlockedFrame,
    CreditFrame,
    DataFrame,
    Flags,
    Frame,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    ResumeFrame,
    SessionFrame,
    UnknownFrame,
)
from ._inbound import Received
from ._parts import ConnectionParts
from ._session import SessionResumption
from ._state import (
    RECEIVING_STATES,
    SENDING_STATES,
    ConnectionInput,
    ConnectionState,
    StreamInput,
    StreamState,
)

__all__ = ["CONTROL_HANDLERS", "ControlReceiving"]

_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_END_STREAM: Final = int(Flags.END_STREAM)


class ControlReceiving(ConnectionParts):
    """What the connection does with each control frame the peer sends."""

    def _receive_control(self, frame: Frame, rx: Received) -> None:
        """Dispatch a control frame to its handler by type (spec §5)."""
        if self.state is ConnectionState.HELLO:
            if not isinstance(frame, HelloFrame):
                raise RemoteProtocolError(
                    f"the first frame after the preface must be HELLO, got {type(frame).__name__} "
                    "(spec §3.4)"
                )
            self._on_hello(frame, rx)
            return
        if self._session is not None:
            self._session_gate(frame)  # spec §15.2, §15.6: what may come, and when
            if type(frame) is DataFrame:
                self._held_data(frame, rx)
                return
        CONTROL_HANDLERS[type(frame)](self, frame, rx)

    def _held_data(self, frame: DataFrame, rx: Received) -> None:
        """DATA walked as a frame while the session's start was undecided (spec §15.2)."""
        flags = (_END_MESSAGE if frame.end_message else 0) | (
            _END_STREAM if frame.end_stream else 0
        )
        sid = frame.stream_id
        self._check_data_header(sid, len(frame.data), flags, self._streams.get(sid), rx)
        self._receive_data_frame(sid, flags, frame.data, rx)

    def _on_hello(self, frame: HelloFrame, rx: Received) -> None:
        sess = self._session
        # spec §15.6: a resumed HELLO's settings are ignored; the session keeps its first.
        resumed = sess is not None and self._session_hello(frame, rx)
        if not resumed:
            self.peer_settings = frame.settings
            self._conn_send.limit_bytes = frame.settings.connection_bytes
        self._inbound.awaiting_hello = False
        # spec §15.2, §15.6: DATA is judged frame by frame until the session's start is
        # decided (a SESSION or another frame first) and any resumption reconciled.
        self._inbound.hold_data = sess is not None and (sess.phase is not None or not sess.settled)
        self._move(ConnectionInput.RECV_HELLO)
        if not resumed:
            rx.events.append(HandshakeCompleted(frame.settings))

    def _on_second_hello(self, frame: HelloFrame, rx: Received) -> None:
        raise RemoteProtocolError("a second HELLO (spec §3.4)")

    def _on_ping(self, frame: PingFrame, rx: Received) -> None:
        if self._output.urgent:
            # spec §10.7.1: charged only while an earlier PONG is still unsent; a probe
            # that awaits each PONG before its next PING costs nothing.
            self._glitch("PING while a PONG is unsent")
        self._output.queue_urgent(PongFrame(frame.id))  # spec §5.5: ahead of queued DATA
        self._output.count_reply()
        rx.events.append(PingReceived(frame.id))

    def _on_pong(self, frame: PongFrame, rx: Received) -> None:
        sess = self._session
        if sess is not None and frame.id == sess.confirm_ping:
            self._confirmed()  # spec §15.7: closed streams before its PING are confirmed
            return
        if sess is not None and frame.id == sess.token_ping:
            self._token_confirmed()  # spec §15.6: the presented token is spent
            return
        if frame.id in self._pings:  # spec §5.6: an unmatched PONG is ignored
            self._pings.discard(frame.id)
            sent = self._ping_times.pop(frame.id, None)
            rtt = None if sent is None else max(0.0, self._clock - sent)
            if rtt is not None:
                self.rtt.add(rtt)  # the one round-trip estimator (spec §8.9)
                self._rtt_floor = self.rtt.minimum or 0.0
            if frame.id == self._probe:
                self._probe = None
            rx.events.append(PongReceived(frame.id, rtt))
        else:
            self._glitch("unmatched PONG")

    def _on_unknown(self, frame: UnknownFrame, rx: Received) -> None:
        self._glitch(f"unknown frame type {frame.type}")  # ignored (spec §4.4, §10.7.1)

    def _on_blocked(self, frame: BlockedFrame, rx: Received) -> None:
        sid = frame.stream_id
        if sid == 0:
            limits: tuple[int, int | None] = (self._conn_recv.advertised_bytes, None)
            st = None
        else:
            was_idle = self._table.is_idle(sid)
            st = self._stream_for_frame(sid, rx)
            if st is None or st.state not in RECEIVING_STATES:
                # spec §5.4: ignored on closed and half-closed (remote) streams.
                if not was_idle or st is not None:
                    self._glitch(f"BLOCKED on closed stream {sid}")  # spec §10.7.1
                return
            limits = (st.recv.advertised_bytes, st.recv.advertised_messages)
        # spec §10.7.1: a sender can be blocked only at limits we advertised; repeats at
        # them are how a blocked sender shows it is alive (spec §8.7) and cost nothing.
        if (
            frame.bytes_limit is None
            or frame.bytes_limit > limits[0]
            or (
                limits[1] is not None
                and (frame.messages_limit is None or frame.messages_limit > limits[1])
            )
        ):
            self._glitch(f"BLOCKED at limits never advertised on stream {sid}")
        rx.events.append(PeerBlocked(sid, frame.bytes_limit, frame.messages_limit))
        if st is not None and st.tuner is not None:
            st.tuner.blocked = True  # spec §8.9 rule 4: the sender is credit-limited
        elif sid == 0 and self.autotune is not None:
            for other in self._streams.values():  # short of connection credit: all of them
                if other.tuner is not None:
                    other.tuner.blocked = True

    def _on_credit(self, frame: CreditFrame, rx: Received) -> None:
        peer = self.peer_settings
        assert peer is not None
        if frame.stream_id == 0:
            conn = self._conn_send
            before = conn.limit_bytes
            if conn.grant(frame.bytes_limit):
                self._output.unblock(0)  # spec §8.7: BLOCKED stops when the credit arrives
                rx.events.append(CreditGranted(0, conn.limit_bytes, None))
            raised = conn.limit_bytes - before
            if raised < self._credit_step(peer.connection_bytes) and not conn.funded(raised, 0):
                self._glitch("CREDIT raising the connection limit by too little")
            return
        sid = frame.stream_id
        was_idle = self._table.is_idle(sid)
        # spec §15.10: an opener waiting for our start (only on a session connection)
        await_start = bool(frame.await_start) and self._session is not None
        st = self._stream_for_frame(sid, rx, await_start=await_start)
        if st is None:
            if not was_idle:
                self._glitch(f"CREDIT on closed stream {sid}")  # spec §10.7.1
            return  # spec §6.5: CREDIT on a closed stream is ignored
        if st.start == "sending":
            st.start = None  # spec §15.10: a CREDIT starts it from the beginning
            rx.events.append(StreamStarted(sid, 0, 0))
        send = st.send
        old_bytes = send.limit_bytes
        old_messages = send.limit_messages
        old_consumed = st.peer_consumed
        st.record_consumed(frame.consumed)
        if st.retained is not None:
            self._trim_retained(st)  # spec §15.5
        if frame.rate is not None or frame.depth is not None:
            st.feedback = (frame.rate, frame.depth)  # spec §8.10: advice, never credit
        if send.grant(frame.bytes_limit, frame.messages_limit) and st.state in SENDING_STATES:
            self._output.unblock(st.id)
            rx.events.append(CreditGranted(st.id, send.limit_bytes, send.limit_messages))
        raised_bytes = send.limit_bytes - old_bytes
        raised_messages = (send.limit_messages or 0) - (old_messages or 0)
        if (
            not was_idle  # opening a stream is progress (spec §6.2)
            and send.limit_messages == old_messages
            and st.peer_consumed == old_consumed
            and raised_bytes < self._credit_step(peer.stream_bytes)
            and not send.funded(raised_bytes, raised_messages)  # spec §10.7.1: never charged
        ):
            self._glitch(f"CREDIT raising nothing but a little of stream {sid}'s byte limit")

    def _credit_step(self, peer_window: int) -> int:
        # spec §10.7.1: the least raise a CREDIT makes alone without counting as a glitch,
        # never above what the reference policy raises a limit by (spec §8.6).
        peer = self.peer_settings
        assert peer is not None
        step = replenish_threshold(peer_window, peer.max_message_bytes)
        return min(self.limits.min_credit_step, step)

    def _on_reset(self, frame: ResetFrame, rx: Received) -> None:
        sid = frame.stream_id
        rx.flush(sid)
        st = self._streams.get(sid)
        if st is None:
            if self._table.is_idle(sid) and not self._table.beyond_our_goaway(sid):
                raise RemoteProtocolError(f"RESET on idle stream {sid} (spec §5.7)")
            self._glitch(f"RESET on closed stream {sid}")  # spec §10.7.1
            return  # spec §6.5: never answer a RESET with a RESET
        if st.state is StreamState.CLOSED or not self._table.is_ours(sid):
            # spec §10.7.1: a stream the peer opened and reset made us work for nothing
            # ("Rapid Reset"); a RESET on a closed stream changes nothing.
            self._glitch(f"RESET of stream {sid}")
        if frame.code == ErrorCode.REJECTED and frame.consumed is not None:
            st.record_accepted(frame.consumed)  # spec §5.7 (1.1): final, may go down
        else:
            st.record_consumed(frame.consumed)
        if st.state is not StreamState.CLOSED:
            st.reset_code = frame.code  # spec §15.7
            st.reset_consumed = st.recv.consumed_messages
            self._advance(st, StreamInput.RECV_RESET, local=False)
            rx.events.append(StreamReset(sid, frame.code, frame.reason, True, frame.consumed))
            self._discard(st)
        # On a closed stream the RESET changes nothing (spec §5.7): the complete messages
        # still held were handed to the application, which releases them as usual.

    def _on_goaway(self, frame: GoAwayFrame, rx: Received) -> None:
        # spec §15.4, §15.6: a GOAWAY ends a session; one during a resumption, before the
        # positions were reconciled, fails every stream whatever its code.
        resuming = self._session is not None and self._session.phase is not None
        graceful = frame.code == ErrorCode.NO_ERROR and not resuming
        self._end_session()
        self._goaways_received += 1
        if self._goaways_received > 1:
            self._glitch("a repeated GOAWAY")  # spec §10.7.1
        last = self._table.goaway_received(frame.last_stream)  # spec §10.4: the lowest
        rx.events.append(GoAwayReceived(last, frame.code, frame.reason, frame.retry_after_ms))
        if not graceful:
            self._move(ConnectionInput.ERROR)  # spec §10.2: it sends nothing further
        # spec §10.4: our streams above last_stream were not processed: safe to retry. Not
        # during a resumption (§15.6): its GOAWAY's last_stream 0 says nothing about what the
        # session processed, so every stream fails below with what the peer reported consumed.
        for st in list(self._streams.values()):
            if resuming:
                break
            if self._table.is_ours(st.id) and st.id > last and st.state is not StreamState.CLOSED:
                rx.flush(st.id)
                self._advance(st, StreamInput.RECV_RESET, local=False)
                rx.events.append(
                    StreamReset(st.id, ErrorCode.REFUSED_STREAM, "not processed (GOAWAY)", True, 0)
                )
                self._discard(st)
        if graceful:
            self._move(ConnectionInput.GRACEFUL_GOAWAY)
            return
        # spec §10.2: an error GOAWAY ends every stream with its code.
        for st in list(self._streams.values()):
            rx.flush(st.id)
            if st.state is not StreamState.CLOSED:
                self._advance(st, StreamInput.RECV_RESET, local=False)
                rx.events.append(
                    StreamReset(st.id, frame.code, frame.reason, True, st.peer_consumed)
                )
            self._discard(st)
        self._move(ConnectionInput.ERROR)

    def _on_eof(self) -> list[Event]:
        truncated = self._inbound.truncated or any(
            st.partial is not None for st in self._streams.values()
        )
        # spec §10.6: the normal end is EOF after a GOAWAY (either way) with no stream open.
        clean = self._table.goaway_seen and not truncated and not self._table.any_open()
        self._move(ConnectionInput.ERROR)
        return [ConnectionClosed(clean, truncated)]


#: spec §5: one handler per control frame type (HELLO is handled first, in its state).
#: A new frame type adds its dataclass in _frames.py, a handler above and a row here.
CONTROL_HANDLERS: Final[dict[type, Callable[[Any, Any, Received], None]]] = {
    CreditFrame: ControlReceiving._on_credit,
    PingFrame: ControlReceiving._on_ping,
    PongFrame: ControlReceiving._on_pong,
    ResetFrame: ControlReceiving._on_reset,
    BlockedFrame: ControlReceiving._on_blocked,
    GoAwayFrame: ControlReceiving._on_goaway,
    HelloFrame: ControlReceiving._on_second_hello,
    SessionFrame: SessionResumption._on_session,  # spec §15.3, on session transports only
    ResumeFrame: SessionResumption._on_resume,
    UnknownFrame: ControlReceiving._on_unknown,
}
