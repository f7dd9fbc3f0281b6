"""Connection: wires frames, credit and stream state together; no I/O, no clock.

Bytes in, events out, bytes out::

    conn = Connection(Role.ACCEPTOR)
    for event in conn.receive_data(chunk):      # b"" means the peer closed its side
        if isinstance(event, MessagesReceived):
            deliver(event.messages)
            conn.release(event.stream_id, event.nbytes, len(event.messages))  # spec §8.5
    wire = conn.data_to_send()                  # everything queued so far, possibly b""

Every method only queues output; after touching a connection, send ``data_to_send()``.
The receive loop parses every whole frame of a chunk before it returns, and gives one
:class:`MessagesReceived` per stream per call: the hot path is per batch, not per
message. Timed work (keepalive, BLOCKED repeats) takes ``now`` in
:meth:`Connection.handle_timeout` and reports :meth:`Connection.next_deadline`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Final

from ._credit import (
    AutoTune,
    MemoryBudget,
    ReceiveWindow,
    RttEstimator,
    SendCredit,
    WindowInfo,
    WindowReason,
    WindowTuner,
    replenish_threshold,
    tuned_floor,
)
from ._errors import (
    ConnectionClosedError,
    ErrorCode,
    KeepaliveTimeout,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosedError,
)
from ._events import (
    ConnectionClosed,
    CreditGranted,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    MessagesReceived,
    PeerBlocked,
    PingReceived,
    PongReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from ._frames import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_COUNTER,
    MAX_FEEDBACK_RATE,
    MAX_PING_ID,
    MAX_STREAM_ID,
    PREFACE,
    PREFACE_SIZE,
    STREAM_ID_MASK,
    VERSION,
    BlockedFrame,
    CreditFrame,
    Flags,
    Frame,
    FrameType,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    Settings,
    UnknownFrame,
    check_header,
    parse_frame,
)
from ._limits import Limits
from ._state import (
    RECEIVING_STATES,
    SENDING_STATES,
    ConnectionState,
    StreamInput,
    StreamState,
    next_state,
)

__all__ = ["Connection", "Role"]

_DATA: Final = int(FrameType.DATA)
_HELLO: Final = int(FrameType.HELLO)
_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_END_STREAM: Final = int(Flags.END_STREAM)
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from

_PLACEHOLDER: Final = StreamEnded(0)  # a slot in the event list that _flush fills

#: Keepalive PINGs we keep track of at once; answers to others are ignored (spec §11).
MAX_OUTSTANDING_PINGS: Final = 16


class _Batch:
    """Messages completed on one stream during one ``receive_data`` call."""

    __slots__ = ("index", "messages", "nbytes")

    def __init__(self, index: int, message: bytes) -> None:
        self.index = index  # where its MessagesReceived goes in the event list
        self.messages = [message]
        self.nbytes = len(message)


class _Blocked:
    """A BLOCKED we reported: the limits it named and when it was last sent (spec §8.7)."""

    __slots__ = ("limits", "sent_at")

    def __init__(self, limits: tuple[int, int | None]) -> None:
        self.limits = limits
        self.sent_at: float | None = None  # set by the first handle_timeout after it


class Role(enum.Enum):
    """Which end of the transport this is; it fixes stream-id parity (spec §6.1)."""

    INITIATOR = 1  # connected; opens odd stream ids
    ACCEPTOR = 2  # accepted; opens even stream ids


class _Stream:
    """One stream's state and credit in both directions."""

    __slots__ = (
        "feedback",
        "id",
        "partial",
        "partial_len",
        "peer_consumed",
        "recv",
        "reported_consumed",
        "send",
        "state",
        "tuner",
    )

    def __init__(self, stream_id: int, send: SendCredit, recv: ReceiveWindow) -> None:
        self.id = stream_id
        self.state = StreamState.OPEN
        self.send = send
        self.recv = recv
        self.partial: list[bytes] | None = None  # fragments of a message in progress
        self.partial_len = 0
        self.peer_consumed: int | None = None  # spec §10.5: the peer's last "consumed"
        self.reported_consumed = 0  # the "consumed" of our last CREDIT on this stream
        self.tuner: WindowTuner | None = None  # spec §8.9: sizes recv's window
        self.feedback: tuple[int | None, int | None] | None = None  # the peer's (rate, depth)


class Connection:
    """One flowproto connection, as a state machine that does no I/O (spec §3-§11).

    Args:
        role: which end this is.
        settings: what this side accepts; sent in HELLO. Defaults to ``Settings()``.
        ping_timeout: seconds a keepalive PING may go unanswered before the connection
            fails with TIMEOUT (spec §11).
        blocked_interval: least seconds between repeats of BLOCKED for one stream (spec §8.7).
        limits: what the peer may cost this side (spec §10.7); defaults to ``Limits()``.
            The glitch budget refills with the ``now`` given to :meth:`handle_timeout`
            and with DATA consumed, so call ``handle_timeout`` after ``receive_data``.
        autotune: size the receive windows from what the consumer does (spec §8.9). The
            tuner needs time: pass ``now`` to :meth:`release` and call
            :meth:`handle_timeout` after each ``receive_data`` (it measures the round trip
            with PINGs). ``None`` (the default) keeps the HELLO windows (spec §8.6).
        budget: a :class:`MemoryBudget` shared with other connections: it caps the
            connection credit they grant together (spec §8.9). If it cannot admit this
            connection, GOAWAY(ENHANCE_YOUR_CALM) is queued after the HELLO at once.
            Call :meth:`leave_budget` when done with a connection that never closed.

    Attributes:
        glitches: frames the peer sent that cost work and made no progress
            (spec §10.7.1), counted over the connection.

    The preface and HELLO are queued at once; send ``data_to_send()`` right away.
    """

    def __init__(
        self,
        role: Role,
        settings: Settings | None = None,
        *,
        ping_timeout: float = 15.0,
        blocked_interval: float = 1.0,
        limits: Limits | None = None,
        autotune: AutoTune | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.role = role
        self.local_settings = (settings or Settings()).validate()
        self.autotune = autotune.validate() if autotune is not None else None
        self.budget = budget
        self._budget_demand = self.local_settings.connection_bytes
        refused = False
        if budget is not None:
            # spec §8.9 B2: a fair initial connection window, or no admission at all.
            floor = tuned_floor(self.local_settings.max_message_bytes)
            start = budget.initial_window(self.local_settings.connection_bytes, floor)
            refused = start is None
            if start is not None and start != self.local_settings.connection_bytes:
                self.local_settings = dataclasses.replace(
                    self.local_settings, connection_bytes=start
                )
        self.limits = (limits or Limits()).validate()
        self.peer_settings: Settings | None = None
        self.state = ConnectionState.PREFACE
        self.ping_timeout = ping_timeout
        self.blocked_interval = blocked_interval
        ls = self.local_settings
        self._streams: dict[int, _Stream] = {}
        self._parity = 1 if role is Role.INITIATOR else 0  # our ids are odd for the initiator
        self._open_count = [0, 0]  # table entries by parity: [even, odd]
        self._next_local_id = 1 if role is Role.INITIATOR else 2
        self._highest_peer_id = 0
        self._highest_accepted_peer_id = 0  # what our GOAWAY names as processed (spec §10.4)
        self._goaway_sent_last: int | None = None  # spec §10.4
        self._goaway_received_last: int | None = None
        self._conn_send = SendCredit(0)  # the peer's connection limit arrives in its HELLO
        self._conn_recv = ReceiveWindow(ls.connection_bytes, MAX_COUNTER, ls.max_message_bytes)
        self._out: list[bytes | memoryview] = [PREFACE, HelloFrame(ls).encode()]
        self._urgent: list[bytes] = []  # PONG goes ahead of queued DATA (spec §5.5)
        self._preface_queued = True
        self._replies = 0  # replies queued since data_to_send() last took the output
        self._inbuf = bytearray()
        self._need = 0  # bytes _inbuf must reach before parsing can make progress
        self._next_ping_id = 0
        self._pings: set[int] = set()
        self._keepalive_ping: int | None = None
        self._keepalive_sent_at = 0.0
        self._last_rx = 0.0
        self._rx_since_tick = True
        self._blocked: dict[int, _Blocked] = {}  # stream id (0 = connection) -> last report
        # spec §10.7.1: the glitch budget, a token bucket refilled by time and by progress.
        self.glitches = 0
        self._glitch_tokens = float(self.limits.glitch_burst)
        self._glitch_time: float | None = None  # handle_timeout's last ``now``
        self._glitch_consumed = 0  # connection bytes consumed when tokens were last refilled
        self._goaways_received = 0
        # spec §8.9: round trips for the tuner, and the connection window's state.
        self.rtt = RttEstimator()
        self._ping_times: dict[int, float] = {}  # PINGs sent with a time -> when
        self._answered: list[int] = []  # their PONGs, timed at the next handle_timeout
        self._probe: int | None = None  # the tuner's PING in flight
        self._next_probe = 0.0
        self._conn_next_tune = -float("inf")
        self._rtt_floor = 0.0  # the least rtt (spec §8.9), 0 until measured
        self._conn_reason = WindowReason.STATIC if autotune is None else WindowReason.INITIAL
        self._conn_changes = 0
        self._consuming = False  # probes start once the application consumes (spec §8.9)
        if budget is not None:
            if refused:
                self.budget = None
                self.close(ErrorCode.ENHANCE_YOUR_CALM, "memory budget exhausted (spec §8.9)")
            else:
                budget.join(self._conn_recv, tuned_floor(ls.max_message_bytes), ls.connection_bytes)

    # --- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued so far, possibly ``b""``; the queue is then empty."""
        out = self._out
        if self._urgent:
            at = 2 if self._preface_queued else 0  # never ahead of our preface and HELLO
            out[at:at] = self._urgent
            self._urgent.clear()
        if not out:
            return b""
        self._preface_queued = False
        self._replies = 0
        data = b"".join(out)
        out.clear()
        return data

    @property
    def has_data_to_send(self) -> bool:
        """True if ``data_to_send()`` would return bytes."""
        return bool(self._out or self._urgent)

    def _queue(self, frame: Frame) -> None:
        self._out.append(frame.encode())

    # --- information ---------------------------------------------------------------------

    @property
    def partial_input(self) -> int:
        """Bytes held of a preface or frame whose rest has not arrived yet (spec §11)."""
        return len(self._inbuf)

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
        st = self._streams.get(stream_id)
        if st is not None:
            return st.state
        if stream_id % 2 == self._parity:
            return StreamState.CLOSED if stream_id < self._next_local_id else StreamState.IDLE
        return StreamState.CLOSED if stream_id <= self._highest_peer_id else StreamState.IDLE

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
            and self._open_count[self._parity] < self.peer_settings.max_streams
            and self._next_local_id <= MAX_STREAM_ID
        )

    # --- streams -------------------------------------------------------------------------

    def open_stream(self) -> int:
        """Open a stream and return its id (spec §6.2).

        A CREDIT restating our initial limits is queued so the peer learns of the
        stream at once, even before a message is sent.

        Raises:
            LocalProtocolError: before the peer's HELLO, after GOAWAY, at the peer's
                max_streams, or when stream ids are exhausted.
        """
        if not self.can_open_stream:
            if self.state is not ConnectionState.OPEN or self.peer_settings is None:
                raise ConnectionClosedError(
                    f"cannot open a stream while the connection is {self.state.value} (spec §10.4)"
                )
            raise LocalProtocolError(
                f"the peer allows {self.peer_settings.max_streams} concurrent streams (spec §6.4)",
                ErrorCode.REFUSED_STREAM,
            )
        stream_id = self._next_local_id
        self._next_local_id += 2
        st = self._new_stream(stream_id)
        self._queue(
            CreditFrame(stream_id, st.recv.advertised_bytes, st.recv.advertised_messages, 0)
        )
        return stream_id

    def _new_stream(self, stream_id: int) -> _Stream:
        peer = self.peer_settings
        assert peer is not None
        ls = self.local_settings
        st = _Stream(
            stream_id,
            SendCredit(peer.stream_bytes, peer.stream_messages),
            ReceiveWindow(ls.stream_bytes, ls.stream_messages, ls.max_message_bytes),
        )
        if self.autotune is not None:
            st.tuner = WindowTuner(self.autotune, ls.max_message_bytes)  # spec §8.9
        self._streams[stream_id] = st
        self._open_count[stream_id & 1] += 1
        return st

    def _sendable(self, stream_id: int) -> _Stream:
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
            LocalProtocolError: MESSAGE_TOO_LARGE if over the peer's max_message_bytes.
        """
        st = self._sendable(stream_id)
        n = len(payload)
        peer = self.peer_settings
        assert peer is not None
        if n > peer.max_message_bytes:
            raise LocalProtocolError(
                f"a {n}-byte message is over the peer's max_message_bytes = "
                f"{peer.max_message_bytes} (spec §7.3)",
                ErrorCode.MESSAGE_TOO_LARGE,
            )
        if not self._has_credit(st, n):
            return False
        self._emit(st, payload, n, peer.max_frame_bytes, end_stream)
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
        st = self._sendable(stream_id)
        peer = self.peer_settings
        assert peer is not None
        max_message = peer.max_message_bytes
        max_frame = peer.max_frame_bytes
        send = st.send
        conn = self._conn_send
        out = self._out
        sid = st.id
        bytes_left = min(send.limit_bytes - send.sent_bytes, conn.limit_bytes - conn.sent_bytes)
        messages_left = send.limit_messages - send.sent_messages  # type: ignore[operator]
        count = len(payloads)
        if 8 <= count <= messages_left:
            # The whole batch in one go when credit covers it and no message needs
            # fragments: the same checks as the loop below, made once over the batch.
            lengths = list(map(len, payloads))
            nbytes = sum(lengths)
            if nbytes <= bytes_left and max(lengths) <= min(max_message, max_frame):
                frames = [b""] * (2 * count)
                frames[0::2] = [_pack_header(n, _DATA, _END_MESSAGE, sid) for n in lengths]
                frames[1::2] = payloads
                out += frames
                send.sent_bytes += nbytes
                send.sent_messages += count
                conn.sent_bytes += nbytes
                self._blocked.pop(sid, None)
                if end_stream:
                    self.end_stream(sid)
                return count
        sent = 0
        nbytes = 0
        while sent < count:
            payload = payloads[sent]
            n = len(payload)
            if n > max_message:
                break
            if n > bytes_left or not messages_left:
                break
            bytes_left -= n
            messages_left -= 1
            nbytes += n
            sent += 1
            if n <= max_frame:
                out.append(_pack_header(n, _DATA, _END_MESSAGE, sid))
                out.append(payload)
            else:
                self._fragment(sid, payload, n, max_frame, False)
        send.sent_bytes += nbytes
        send.sent_messages += sent
        conn.sent_bytes += nbytes
        if sent < count:
            payload = payloads[sent]
            if len(payload) > max_message:
                if sent:
                    return sent
                raise LocalProtocolError(
                    f"a {len(payload)}-byte message is over the peer's max_message_bytes = "
                    f"{max_message} (spec §7.3)",
                    ErrorCode.MESSAGE_TOO_LARGE,
                )
            self._has_credit(st, len(payload))  # notes BLOCKED
            return sent
        self._blocked.pop(sid, None)
        if end_stream:
            self.end_stream(sid)
        return sent

    def _has_credit(self, st: _Stream, n: int) -> bool:
        send = st.send
        conn = self._conn_send
        ok = True
        assert send.limit_messages is not None
        if send.sent_bytes + n > send.limit_bytes or send.sent_messages >= send.limit_messages:
            self._note_blocked(st.id, (send.limit_bytes, send.limit_messages))
            ok = False
        if conn.sent_bytes + n > conn.limit_bytes:
            self._note_blocked(0, (conn.limit_bytes, None))
            ok = False
        return ok

    def _emit(self, st: _Stream, payload: bytes, n: int, max_frame: int, end_stream: bool) -> None:
        st.send.sent_bytes += n
        st.send.sent_messages += 1
        self._conn_send.sent_bytes += n
        self._blocked.pop(st.id, None)
        if end_stream:
            self._advance(st, StreamInput.SEND_END, local=True)
        if n <= max_frame:
            flags = _END_MESSAGE | _END_STREAM if end_stream else _END_MESSAGE
            self._out.append(_pack_header(n, _DATA, flags, st.id))
            self._out.append(payload)
        else:
            self._fragment(st.id, payload, n, max_frame, end_stream)
        if end_stream:
            self._maybe_forget(st)

    def _fragment(self, sid: int, payload: bytes, n: int, max_frame: int, end_stream: bool) -> None:
        # spec §7.1: fragments in order, the last with END_MESSAGE.
        view = memoryview(payload)
        out = self._out
        for start in range(0, n, max_frame):
            chunk = view[start : start + max_frame]
            last = start + max_frame >= n
            flags = (_END_MESSAGE | (_END_STREAM if end_stream else 0)) if last else 0
            out.append(_pack_header(len(chunk), _DATA, flags, sid))
            # bytes cannot change before data_to_send() joins them: no copy needed here
            out.append(chunk if type(payload) is bytes else bytes(chunk))

    def end_stream(self, stream_id: int) -> None:
        """Half-close: send END_STREAM on an empty DATA frame; needs no credit (spec §7.2)."""
        st = self._sendable(stream_id)
        self._advance(st, StreamInput.SEND_END, local=True)
        self._out.append(_pack_header(0, _DATA, _END_STREAM, stream_id))
        self._maybe_forget(st)

    def release(
        self, stream_id: int, nbytes: int, nmessages: int, now: float | None = None
    ) -> bool:
        """The application consumed this much of the stream: credit may go back (spec §8.5).

        Queues CREDIT frames when the replenish policy says so (spec §8.6). Releasing on
        a stream that was reset does nothing: its data was released when it was reset.
        With auto-tuning (or a memory budget), ``now`` (the caller's clock, in seconds)
        lets the windows follow the consumer (spec §8.9); without it they stay as they are.

        Returns:
            True if a CREDIT for the stream was queued: the peer may be waiting for it, so
            send ``data_to_send()`` soon.

        Raises:
            LocalProtocolError: releasing more than was received and not yet released.
        """
        st = self._streams.get(stream_id)
        if st is None:
            return False
        credit = False
        st.recv.consume(nbytes, nmessages)
        self._conn_recv.consume(nbytes, 0)
        if now is not None:
            tuner = st.tuner  # spec §8.9: rules 1-7 count each release batch...
            if tuner is not None:
                tuner.on_release(st.recv, nbytes, nmessages, now, self._rtt_floor)
            if now >= self._conn_next_tune and (tuner is not None or self.budget is not None):
                self._tune(now)  # ...and rule 8 runs at most once per min_epoch
        if self.state is ConnectionState.CLOSED:
            pass  # spec §10.2: nothing is sent after a connection error
        elif st.state in RECEIVING_STATES:
            update = st.recv.update()
            if update is not None:
                rate, depth = self._feedback(st) if st.tuner is not None else (None, None)
                self._queue(
                    CreditFrame(
                        stream_id, update[0], update[1], st.recv.consumed_messages, rate, depth
                    )
                )
                st.reported_consumed = st.recv.consumed_messages
                self._replies += 1  # spec §10.7: CREDIT answers the peer's data
                credit = True
        else:
            self._final_report(st)
        self._update_connection_credit()
        self._maybe_forget(st)
        return credit

    def _final_report(self, st: _Stream) -> None:
        # spec §10.5 "Final report": the peer ended the stream and every message was
        # consumed; tell it the final count (limits restated) if it does not know it yet.
        rw = st.recv
        if (
            st.state is StreamState.HALF_CLOSED_REMOTE
            and rw.held_messages == 0
            and rw.consumed_messages > st.reported_consumed
        ):
            self._queue(
                CreditFrame(
                    st.id, rw.advertised_bytes, rw.advertised_messages, rw.consumed_messages
                )
            )
            st.reported_consumed = rw.consumed_messages
            self._replies += 1  # spec §10.7

    def _update_connection_credit(self) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        update = self._conn_recv.update()
        if update is not None:
            self._queue(CreditFrame(0, update[0]))
            self._replies += 1  # spec §10.7

    def reset_stream(
        self, stream_id: int, error_code: ErrorCode = ErrorCode.CANCEL, reason: str = ""
    ) -> None:
        """End a stream at once with RESET (spec §10.3); its held data is released.

        Resetting a stream that is already closed on the wire only discards what is held.
        """
        st = self._streams.get(stream_id)
        if st is None:
            return
        if st.state is not StreamState.CLOSED:
            self._queue(ResetFrame(stream_id, error_code, reason, st.recv.consumed_messages))
            self._advance(st, StreamInput.SEND_RESET, local=True)
        self._discard(st)

    def _discard(self, st: _Stream) -> None:
        # spec §8.8: data that will never be consumed returns connection credit at once.
        self._conn_recv.consume(st.recv.consume_all(), 0)
        st.partial = None
        self._blocked.pop(st.id, None)
        self._update_connection_credit()
        self._maybe_forget(st)

    def _maybe_forget(self, st: _Stream) -> None:
        # spec §6.3: a closed stream leaves the table once its received messages are all
        # released; its max_streams slot was freed when it closed (see _advance).
        if st.state is StreamState.CLOSED and st.recv.held_messages == 0 and st.partial is None:
            self._streams.pop(st.id, None)
            self._blocked.pop(st.id, None)

    def _advance(self, st: _Stream, event: StreamInput, *, local: bool) -> None:
        new = next_state(st.state, event)
        if new is None:
            message = (
                f"{event.value} is not allowed on stream {st.id} "
                f"in state {st.state.value} (spec §6.3)"
            )
            if local:
                raise StreamClosedError(message)
            raise RemoteProtocolError(message, ErrorCode.STREAM_CLOSED)
        if new not in SENDING_STATES:
            self._blocked.pop(st.id, None)  # spec §8.7: no BLOCKED once we may not send
        if new is StreamState.CLOSED:
            # spec §6.4: only open and half-closed streams count, even while messages
            # received on a closed one wait to be released.
            self._open_count[st.id & 1] -= 1
        st.state = new

    # --- connection-level verbs ----------------------------------------------------------

    def ping(self, now: float | None = None) -> int:
        """Queue a PING and return its id; the answer is a :class:`PongReceived` (spec §5.5).

        At most ``MAX_OUTSTANDING_PINGS`` are tracked; the oldest is forgotten past that.
        With ``now``, the round trip is measured: the PONG is timed by the next
        :meth:`handle_timeout` (``rtt``, used by auto-tuning, spec §8.9).
        """
        self._check_open()
        ping_id = self._next_ping_id
        self._next_ping_id = (ping_id + 1) & MAX_PING_ID
        if len(self._pings) >= MAX_OUTSTANDING_PINGS:
            oldest = min(self._pings)
            self._pings.discard(oldest)
            self._ping_times.pop(oldest, None)
        self._pings.add(ping_id)
        if now is not None:
            self._ping_times[ping_id] = now
        self._queue(PingFrame(ping_id))
        return ping_id

    def close(self, error_code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Send GOAWAY (spec §10.4): no new streams; with NO_ERROR open streams may finish.

        With any other code the connection is closed at once: send ``data_to_send()``,
        then close the transport.
        """
        if self.state is ConnectionState.CLOSED:
            return
        last = self._highest_accepted_peer_id
        if self._goaway_sent_last is not None:
            last = min(last, self._goaway_sent_last)  # spec §10.4: never raise last_stream
        self._goaway_sent_last = last
        self._queue(GoAwayFrame(last, error_code, reason))
        if error_code is ErrorCode.NO_ERROR:
            if self.state is ConnectionState.OPEN:
                self.state = ConnectionState.CLOSING
        else:
            self.state = ConnectionState.CLOSED

    @property
    def finished(self) -> bool:
        """True when the connection is closed, or closing with no stream left (spec §10.4)."""
        return self.state is ConnectionState.CLOSED or (
            self.state is ConnectionState.CLOSING
            and not any(st.state is not StreamState.CLOSED for st in self._streams.values())
        )

    def _check_open(self) -> None:
        if self.state is ConnectionState.CLOSED:
            raise ConnectionClosedError("the connection is closed")

    def _fail(self, exc: RemoteProtocolError) -> None:
        """A connection error (spec §10.2): GOAWAY with the error's code, then closed."""
        if self.state is ConnectionState.CLOSED:
            return
        last = self._highest_accepted_peer_id
        if self._goaway_sent_last is not None:
            last = min(last, self._goaway_sent_last)
        versions = (VERSION,) if exc.error_code is ErrorCode.VERSION_MISMATCH else None
        self._queue(GoAwayFrame(last, exc.error_code, str(exc), versions))
        self.state = ConnectionState.CLOSED

    # --- timers (spec §8.7, §11) -------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` next has work, on the caller's clock, or ``None``."""
        if self.state is ConnectionState.CLOSED:
            self.leave_budget()  # spec §8.9 B1: a closed connection holds no more credit
            return None  # handle_timeout does nothing then: a deadline would spin the caller
        deadlines: list[float] = []
        keepalive = self.local_settings.keepalive_ms / 1000
        if self._keepalive_ping is not None:
            deadlines.append(self._keepalive_sent_at + self.ping_timeout)
        elif keepalive:
            deadlines.append(self._last_rx + keepalive)
        for entry in self._blocked.values():
            sent_at = entry.sent_at
            deadlines.append(0.0 if sent_at is None else sent_at + self.blocked_interval)
        if self._answered:
            deadlines.append(0.0)
        if self._probe_due():
            deadlines.append(self._next_probe)
        return min(deadlines) if deadlines else None

    def handle_timeout(self, now: float) -> None:
        """Do timed work due at ``now``: keepalive PING and its timeout, BLOCKED repeats.

        It also refills the glitch budget (spec §10.7.1) by the time since the last call,
        so call it after each ``receive_data`` as well as at :meth:`next_deadline`.

        Raises:
            KeepaliveTimeout: a keepalive PING went unanswered for ``ping_timeout`` with
                nothing else received; GOAWAY(TIMEOUT) is queued and the connection closed.
        """
        if self.state is ConnectionState.CLOSED:
            self.leave_budget()  # spec §8.9 B1
            return
        if self._glitch_time is not None and now > self._glitch_time:
            # spec §10.7.1: the glitch budget refills with time.
            refill = (now - self._glitch_time) * self.limits.glitch_refill_per_second
            self._glitch_tokens = min(self._glitch_tokens + refill, self.limits.glitch_burst)
        self._glitch_time = now
        if self._rx_since_tick:
            self._rx_since_tick = False
            self._last_rx = now
            self._keepalive_ping = None  # spec §11: any frame shows the peer is alive
        keepalive = self.local_settings.keepalive_ms / 1000
        # Each test is the same sum as in next_deadline(): ``now - t >= d`` can be false at
        # ``now == t + d`` in floating point, and a timer waking at the deadline would spin.
        if self._keepalive_ping is not None:
            if now >= self._keepalive_sent_at + self.ping_timeout:
                exc = KeepaliveTimeout(
                    f"no frame from the peer for {now - self._last_rx:.1f} s, and no answer to "
                    f"a PING for {self.ping_timeout:.1f} s (spec §11)"
                )
                self._fail(exc)
                raise exc
        elif keepalive and now >= self._last_rx + keepalive:
            self._keepalive_ping = self.ping()
            self._keepalive_sent_at = now
        for key, entry in self._blocked.items():
            if entry.sent_at is None:
                entry.sent_at = now
            elif now >= entry.sent_at + self.blocked_interval:
                entry.sent_at = now
                self._queue(self._blocked_frame(key, entry.limits))
        if self._answered or self.autotune is not None:
            self._tune_timers(now)

    def _note_blocked(self, key: int, limits: tuple[int, int | None]) -> None:
        # spec §8.7: BLOCKED once per limit value; repeats come from handle_timeout.
        entry = self._blocked.get(key)
        if entry is None or entry.limits != limits:
            self._blocked[key] = _Blocked(limits)
            self._queue(self._blocked_frame(key, limits))
            self._replies += 1  # spec §10.7: new limits from the peer, a new BLOCKED

    @staticmethod
    def _blocked_frame(key: int, limits: tuple[int, int | None]) -> BlockedFrame:
        return BlockedFrame(key, limits[0], limits[1])

    # --- auto-tuning and memory budget (spec §8.9, §8.10) -----------------------------------

    def window_info(self, stream_id: int = 0) -> WindowInfo | None:
        """The receive window of a stream, or of the connection (0), and why it is so."""
        if stream_id == 0:
            rw = self._conn_recv
            return WindowInfo(rw.window_bytes, 0, self._conn_reason, self._conn_changes, 0.0, 0.0)
        st = self._streams.get(stream_id)
        if st is None:
            return None
        rw, tuner = st.recv, st.tuner
        if tuner is None:
            return WindowInfo(rw.window_bytes, rw.window_messages, WindowReason.STATIC, 0, 0.0, 0.0)
        return WindowInfo(
            rw.window_bytes,
            rw.window_messages,
            tuner.reason,
            tuner.changes,
            tuner.rate_bytes,
            tuner.rate_messages,
        )

    def peer_feedback(self, stream_id: int) -> tuple[int | None, int | None] | None:
        """The peer's latest (rate, depth) feedback on our stream (spec §8.10), if any."""
        st = self._streams.get(stream_id)
        return None if st is None else st.feedback

    def leave_budget(self) -> None:
        """Stop counting this connection against its memory budget (spec §8.9 B1).

        Done by itself once the connection is closed and ``handle_timeout`` or
        ``next_deadline`` runs; calling it again does nothing.
        """
        if self.budget is not None:
            self.budget.leave(self._conn_recv)

    def _feedback(self, st: _Stream) -> tuple[int | None, int | None]:
        # spec §8.10: the consumer's smoothed rate and its queue, once a rate is measured.
        tuner = st.tuner
        assert tuner is not None and self.autotune is not None
        if not (tuner.rated and self.autotune.feedback):
            return None, None
        rate = min(int(tuner.rate_messages + 0.5), MAX_FEEDBACK_RATE)
        return rate, st.recv.received_messages - st.recv.consumed_messages

    def _tune(self, now: float) -> None:
        # spec §8.9 rule 8 for the connection, at most once per min_epoch.
        self._consuming = True
        cfg = self.autotune
        self._conn_next_tune = now + (cfg.min_epoch if cfg is not None else 0.0)
        self._tune_connection()

    def _tune_connection(self) -> None:
        # spec §8.9 rule 8: the connection window is what its streams want, within the
        # cap and the budget's fair share (B3), never below the floor.
        ls = self.local_settings
        floor = tuned_floor(ls.max_message_bytes)
        cfg = self.autotune
        if cfg is not None:
            want = sum(
                s.recv.window_bytes for s in self._streams.values() if s.state in RECEIVING_STATES
            )
            cap = cfg.max_window_bytes
        else:
            want = cap = self._budget_demand  # static windows: what the settings asked for
        window = max(floor, min(want, cap))
        reason = WindowReason.CAP if want > cap else None
        budget = self.budget
        if budget is not None:
            budget.set_demand(self._conn_recv, window)
            share = budget.share(self._conn_recv)
            if share < window:
                window, reason = max(floor, share), WindowReason.BUDGET
        rw = self._conn_recv
        if window == rw.window_bytes:
            return
        if reason is None:
            if window == floor:
                reason = WindowReason.FLOOR
            else:
                reason = WindowReason.GROW if window > rw.window_bytes else WindowReason.LATENCY
        rw.set_window(window, rw.window_messages)  # limits never go down (spec §8.2)
        self._conn_reason = reason
        self._conn_changes += 1

    def _probe_due(self) -> bool:
        # spec §8.9: the tuner measures the round trip while streams are open.
        return (
            self.autotune is not None
            and self._probe is None
            and self._consuming
            and bool(self._streams)
            and self.peer_settings is not None
            and self.state is ConnectionState.OPEN
        )

    def _tune_timers(self, now: float) -> None:
        for ping_id in self._answered:
            sent = self._ping_times.pop(ping_id, None)
            if sent is not None:
                self.rtt.add(now - sent)
                self._rtt_floor = self.rtt.minimum or 0.0
            if ping_id == self._probe:
                self._probe = None
        self._answered.clear()
        cfg = self.autotune
        if cfg is None:
            return
        probe = self._probe
        if probe is not None and probe not in self._pings:
            self._probe = None  # forgotten (spec §11 keeps at most 16 PINGs)
        if self._probe_due() and now >= self._next_probe:
            self._probe = self.ping(now)
            self._next_probe = now + cfg.rtt_probe_interval

    # --- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the transport; ``b""`` means it ended. Returns the events.

        Every whole frame in the data is processed before this returns. Replies (PONG,
        CREDIT, RESET, GOAWAY) are queued for ``data_to_send()``.

        Raises:
            RemoteProtocolError: the peer broke the spec. A GOAWAY with the error's code
                is queued and the connection is closed: send the queued bytes, then close
                the transport. Events of frames before the bad one are lost with it.
        """
        if self.state is ConnectionState.CLOSED:
            return []
        if not data:
            return self._on_eof()
        if self._replies > self.limits.max_queued_replies:
            # spec §10.7: CREDIT and BLOCKED queued by the application's calls count too.
            exc = self._too_many_replies()
            self._fail(exc)
            raise exc
        head = None
        start = 0
        if self._inbuf:
            if self.state is not ConnectionState.PREFACE and len(self._inbuf) >= HEADER_SIZE:
                # A frame cut by the end of the last chunk: complete it alone and parse the
                # rest of this chunk in place, so each byte is copied once, into its message.
                start = self._need - len(self._inbuf)
                if len(data) < start:
                    self._inbuf += data
                    return []
                head = b"".join((self._inbuf, memoryview(data)[:start]))
            else:
                self._inbuf += data
                if len(self._inbuf) < self._need and self.state is not ConnectionState.PREFACE:
                    return []
                data = bytes(self._inbuf)
            self._inbuf.clear()
        events: list[Event] = []
        try:
            if head is not None:
                pending: dict[int, _Batch] = {}
                try:
                    self._receive_frames(head, events, 0, pending)
                    # (mypy does not see that the call above may close the connection)
                    if self.state is not ConnectionState.CLOSED:  # type: ignore[comparison-overlap]
                        self._receive_frames(data, events, start, pending)
                finally:
                    for sid in list(pending):
                        self._flush(sid, events, pending)
                return events
            if self.state is ConnectionState.PREFACE:
                data = self._receive_preface(data)
            if data:
                self._receive_frames(data, events)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        return events

    def _receive_preface(self, data: bytes) -> bytes:
        # spec §3.1: check the magic byte by byte as it arrives.
        have = len(data)
        if data[: len(MAGIC)] != MAGIC[:have]:
            raise RemoteProtocolError(
                f"the peer did not send the flowproto preface (got {bytes(data[: len(MAGIC)])!r}) "
                "(spec §3.1)"
            )
        if have < PREFACE_SIZE:
            self._inbuf += data
            self._need = PREFACE_SIZE
            return b""
        version = int.from_bytes(data[len(MAGIC) : PREFACE_SIZE], "big")
        if version != VERSION:
            raise RemoteProtocolError(
                f"the peer speaks flowproto version {version}; this endpoint speaks version "
                f"{VERSION} (spec §3.3)",
                ErrorCode.VERSION_MISMATCH,
            )
        self.state = ConnectionState.HELLO
        return data[PREFACE_SIZE:]

    def _receive_frames(
        self,
        data: bytes,
        events: list[Event],
        pos: int = 0,
        pending: dict[int, _Batch] | None = None,
    ) -> None:
        """Process the whole frames of ``data`` from ``pos``; keep the rest for later.

        With ``pending`` given, its batches are the caller's to flush.
        """
        n = len(data)
        max_frame = self.local_settings.max_frame_bytes
        max_message = min(max_frame, self.local_settings.max_message_bytes)
        streams = self._streams
        conn = self._conn_recv
        flush = pending is None
        if pending is None:
            pending = {}  # one batch of messages per stream
        try:
            while n - pos >= HEADER_SIZE:
                length, ftype, flags, sid = _unpack_header(data, pos)
                end = pos + HEADER_SIZE + length
                if ftype == _DATA and self.state is not ConnectionState.HELLO:
                    # The hot path: spec §4.2, §4.5 and §8.4 checked from the header.
                    sid &= STREAM_ID_MASK
                    if length > max_frame or not sid:
                        check_header(length, ftype, sid, max_frame)
                    st = streams.get(sid)
                    if (
                        st is None
                        or st.partial is not None
                        or st.state not in RECEIVING_STATES
                        or flags & _END_STREAM
                        or not flags & _END_MESSAGE
                    ):
                        if end > n:
                            self._check_data_header(sid, length, flags, st, events, pending)
                            break
                        self._receive_data_frame(
                            sid, flags, data[pos + HEADER_SIZE : end], events, pending
                        )
                        pos = end
                        continue
                    rw = st.recv
                    if (
                        rw.received_bytes + length > rw.advertised_bytes
                        or rw.received_messages >= rw.advertised_messages
                        or length > self.local_settings.max_message_bytes
                    ):
                        self._check_data_header(sid, length, flags, st, events, pending)
                        if end > n:
                            break
                        self._receive_data_frame(
                            sid, flags, data[pos + HEADER_SIZE : end], events, pending
                        )
                        pos = end
                        continue
                    if conn.received_bytes + length > conn.advertised_bytes:
                        conn.receive(length, 0, "the connection")  # raises
                    if end > n:
                        break
                    rw.received_bytes += length
                    rw.received_messages += 1
                    conn.received_bytes += length
                    batch = pending.get(sid)
                    if batch is None:
                        batch = pending[sid] = _Batch(len(events), data[pos + HEADER_SIZE : end])
                        events.append(_PLACEHOLDER)  # replaced by _flush
                    else:
                        batch.messages.append(data[pos + HEADER_SIZE : end])
                        batch.nbytes += length
                    pos = end
                    # The frames that follow, while each is a whole message on the same
                    # stream: the same checks, against credit counted down here (spec §8.4).
                    room_bytes = min(
                        rw.advertised_bytes - rw.received_bytes,
                        conn.advertised_bytes - conn.received_bytes,
                    )
                    room_messages = rw.advertised_messages - rw.received_messages
                    messages = batch.messages
                    nbytes = count = 0
                    while n - pos >= HEADER_SIZE and count < room_messages:
                        length, ftype, flags, next_sid = _unpack_header(data, pos)
                        end = pos + HEADER_SIZE + length
                        if (
                            next_sid != sid
                            or ftype != _DATA
                            or flags != _END_MESSAGE
                            or end > n
                            or length > max_message
                            or nbytes + length > room_bytes
                        ):
                            break  # the loop above takes it from here
                        messages.append(data[pos + HEADER_SIZE : end])
                        nbytes += length
                        count += 1
                        pos = end
                    if count:
                        rw.received_bytes += nbytes
                        rw.received_messages += count
                        conn.received_bytes += nbytes
                        batch.nbytes += nbytes
                    continue
                sid &= STREAM_ID_MASK
                if (ftype == _HELLO) != (self.state is ConnectionState.HELLO):
                    # spec §4.2 H1, §3.4: decided from the header, before its size (H2).
                    raise RemoteProtocolError(
                        "a second HELLO (spec §3.4)"
                        if ftype == _HELLO
                        else f"the first frame after the preface must be HELLO, got type {ftype} "
                        "(spec §3.4)"
                    )
                check_header(length, ftype, sid, max_frame)
                if end > n:
                    break
                frame = parse_frame(ftype, flags, sid, data[pos + HEADER_SIZE : end])
                pos = end
                self._receive_control(frame, events, pending)
                if self.state is ConnectionState.CLOSED:
                    pos = n
                    break
        finally:
            if flush:
                for sid in list(pending):
                    self._flush(sid, events, pending)
        if pos < n:
            self._inbuf += memoryview(data)[pos:]
            if n - pos >= HEADER_SIZE:
                length = _unpack_header(data, pos)[0]
                self._need = HEADER_SIZE + length
            else:
                self._need = HEADER_SIZE
        else:
            self._need = 0
        if pos:
            self._rx_since_tick = True  # spec §11: only whole frames count as activity

    @staticmethod
    def _flush(sid: int, events: list[Event], pending: dict[int, _Batch]) -> None:
        batch = pending.pop(sid, None)
        if batch is not None:
            events[batch.index] = MessagesReceived(sid, batch.messages, batch.nbytes)

    def _check_data_header(
        self,
        sid: int,
        length: int,
        flags: int,
        st: _Stream | None,
        events: list[Event],
        pending: dict[int, _Batch],
    ) -> None:
        """Checks of a DATA frame from its header, before its body is buffered (spec §8.4).

        Connection errors raise; a message over max_message_bytes resets its stream at
        once (spec §7.3), and the body, when it comes, is discarded as on a closed stream.
        Everything here is repeated harmlessly if the same header is parsed again.
        """
        self._conn_check(length)
        truncates = flags & _END_STREAM and not flags & _END_MESSAGE
        if st is None:
            if not self._is_idle(sid):
                return  # closed: spec §6.5
            self._check_peer_open(sid)
            if self._beyond_our_goaway(sid) or self._would_refuse(sid):
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
                opened = self._open_peer_stream(sid, events)
                if opened is not None:
                    self._too_large(opened, events, pending)
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
            self._too_large(st, events, pending)

    def _would_refuse(self, sid: int) -> bool:
        return (
            self.state is not ConnectionState.OPEN and self.state is not ConnectionState.CLOSING
        ) or self._open_count[sid & 1] >= self.local_settings.max_streams

    def _too_large(self, st: _Stream, events: list[Event], pending: dict[int, _Batch]) -> None:
        # spec §7.3: the stream is reset; the connection lives.
        self._flush(st.id, events, pending)
        self._stream_error(
            st,
            ErrorCode.MESSAGE_TOO_LARGE,
            f"message over max_message_bytes = {self.local_settings.max_message_bytes}",
            events,
        )

    def _conn_check(self, length: int) -> None:
        conn = self._conn_recv
        if conn.received_bytes + length > conn.advertised_bytes:
            conn.receive(length, 0, "the connection")  # raises

    def _is_idle(self, sid: int) -> bool:
        if sid & 1 == self._parity:
            return sid >= self._next_local_id
        return sid > self._highest_peer_id

    def _beyond_our_goaway(self, sid: int) -> bool:
        """A new peer stream our GOAWAY already refused: treated as closed (spec §10.4)."""
        return (
            self._goaway_sent_last is not None
            and sid & 1 != self._parity
            and sid > self._goaway_sent_last
        )

    def _check_peer_open(self, sid: int) -> None:
        # spec §6.1: a new stream has the peer's parity; ours would be idle.
        if sid & 1 == self._parity:
            raise RemoteProtocolError(
                f"frame on stream {sid}, which this side has not opened (spec §6.1)"
            )

    def _open_peer_stream(self, sid: int, events: list[Event]) -> _Stream | None:
        """The peer's first frame on a new stream id (spec §6.2); None if not processed."""
        self._check_peer_open(sid)
        self._highest_peer_id = sid  # spec §6.1: skipped ids are closed, nothing allocated
        if self._goaway_sent_last is not None and sid > self._goaway_sent_last:
            return None  # spec §10.4: not processed
        if self.state is not ConnectionState.OPEN and self.state is not ConnectionState.CLOSING:
            return None
        if self._open_count[sid & 1] >= self.local_settings.max_streams:
            # spec §6.4: refuse it; the connection lives. Refusals spend the budget (§10.7.1).
            self._glitch(f"stream {sid} over max_streams = {self.local_settings.max_streams}")
            self._queue(ResetFrame(sid, ErrorCode.REFUSED_STREAM, "too many concurrent streams", 0))
            self._count_reply()
            return None
        st = self._new_stream(sid)
        self._highest_accepted_peer_id = sid
        events.append(StreamOpened(sid))
        return st

    def _stream_for_frame(self, sid: int, events: list[Event]) -> _Stream | None:
        """The stream a received stream-level frame is for, opening it if new; None if closed."""
        st = self._streams.get(sid)
        if st is not None:
            return st
        if self._is_idle(sid):
            return self._open_peer_stream(sid, events)
        return None

    def _receive_data_frame(
        self,
        sid: int,
        flags: int,
        body: bytes,
        events: list[Event],
        pending: dict[int, _Batch],
    ) -> None:
        """DATA off the hot path: new streams, fragments, END_STREAM, closed streams."""
        length = len(body)
        if sid not in self._streams and self._is_idle(sid):
            # The header-time checks of a new stream, in the order a frame whose body
            # has not arrived yet gets them, so a split never changes the outcome (§4.2).
            self._check_data_header(sid, length, flags, None, events, pending)
        st = self._stream_for_frame(sid, events)
        if st is None or st.state not in RECEIVING_STATES:
            if not length:
                self._glitch(f"empty DATA on closed stream {sid}")  # spec §10.7.1
            # spec §6.5, §8.8: counted against the connection, its credit returned at once.
            self._conn_recv.receive(length, 0, "the connection")
            self._conn_recv.consume(length, 0)
            self._update_connection_credit()
            if st is not None and st.state is StreamState.HALF_CLOSED_REMOTE:
                self._flush(sid, events, pending)
                self._stream_error(st, ErrorCode.STREAM_CLOSED, "DATA after END_STREAM", events)
            return
        end_message = flags & _END_MESSAGE
        end_stream = flags & _END_STREAM
        if (
            not end_message
            and not end_stream
            and length < self.limits.min_fragment_bytes
            and (not length or st.partial is not None)
        ):
            # spec §10.7.1: an empty frame, or a short one in the middle of a message.
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
                self._flush(sid, events, pending)
                # spec §7.3: the stream is reset; the connection lives.
                self._stream_error(
                    st,
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"message over max_message_bytes = {self.local_settings.max_message_bytes}",
                    events,
                )
                return
            st.partial.append(body)
            st.partial_len += length
            if end_message:
                message = st.partial[0] if len(st.partial) == 1 else b"".join(st.partial)
                st.partial = None
                batch = pending.get(sid)
                if batch is None:
                    pending[sid] = _Batch(len(events), message)
                    events.append(_PLACEHOLDER)
                else:
                    batch.messages.append(message)
                    batch.nbytes += len(message)
        if end_stream:
            self._flush(sid, events, pending)
            self._advance(st, StreamInput.RECV_END, local=False)
            events.append(StreamEnded(sid))
            self._final_report(st)
            self._maybe_forget(st)

    def _count_reply(self) -> None:
        # spec §10.7: replies the peer makes us queue are bounded; a peer that keeps
        # asking without reading what we send is cut off, never buffered for.
        self._replies += 1
        if self._replies > self.limits.max_queued_replies:
            raise self._too_many_replies()

    def _too_many_replies(self) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"peer made this side queue more than {self.limits.max_queued_replies} control "
            "frames (PONG, RESET, CREDIT, BLOCKED) that it has not read (spec §10.7)",
            ErrorCode.ENHANCE_YOUR_CALM,
        )

    def _glitch(self, what: str) -> None:
        """The peer's frame cost work and made no progress: spend a token (spec §10.7.1).

        The bucket regains a token per ``glitch_refill_bytes`` of DATA consumed or
        discarded since the last glitch, and with time in :meth:`handle_timeout`.
        """
        self.glitches += 1
        limits = self.limits
        consumed = self._conn_recv.consumed_bytes
        tokens = self._glitch_tokens
        if consumed != self._glitch_consumed:
            tokens += (consumed - self._glitch_consumed) / limits.glitch_refill_bytes
            self._glitch_consumed = consumed
        tokens = min(tokens, limits.glitch_burst) - 1
        self._glitch_tokens = tokens
        if tokens < 0:
            raise RemoteProtocolError(
                f"peer sent more frames that make no progress than the budget of "
                f"{limits.glitch_burst} allows (the last: {what}) (spec §10.7)",
                ErrorCode.ENHANCE_YOUR_CALM,
            )

    def _stream_error(self, st: _Stream, code: ErrorCode, reason: str, events: list[Event]) -> None:
        """Reset one stream for the peer's error (spec §10.3)."""
        self._glitch(f"{code.name} on stream {st.id}")  # spec §10.7.1: resets we are made to send
        self._queue(ResetFrame(st.id, code, reason, st.recv.consumed_messages))
        self._count_reply()
        self._advance(st, StreamInput.SEND_RESET, local=True)
        events.append(StreamReset(st.id, code, reason, False, None))
        self._discard(st)

    def _receive_control(
        self, frame: Frame, events: list[Event], pending: dict[int, _Batch]
    ) -> None:
        if self.state is ConnectionState.HELLO:
            if not isinstance(frame, HelloFrame):
                raise RemoteProtocolError(
                    f"the first frame after the preface must be HELLO, got {type(frame).__name__} "
                    "(spec §3.4)"
                )
            self.peer_settings = frame.settings
            self._conn_send.limit_bytes = frame.settings.connection_bytes
            self.state = ConnectionState.OPEN
            events.append(HandshakeCompleted(frame.settings))
            return
        if isinstance(frame, CreditFrame):
            self._on_credit(frame, events)
        elif isinstance(frame, PingFrame):
            self._glitch("PING")  # spec §10.7.1: PINGs beyond the budget's rate
            self._urgent.append(PongFrame(frame.id).encode())
            self._count_reply()
            events.append(PingReceived(frame.id))
        elif isinstance(frame, PongFrame):
            if frame.id in self._pings:  # spec §5.6: an unmatched PONG is ignored
                self._pings.discard(frame.id)
                events.append(PongReceived(frame.id))
                if frame.id in self._ping_times:
                    self._answered.append(frame.id)  # timed by handle_timeout (spec §8.9)
            else:
                self._glitch("unmatched PONG")
        elif isinstance(frame, ResetFrame):
            self._flush(frame.stream_id, events, pending)
            self._on_reset(frame, events)
        elif isinstance(frame, BlockedFrame):
            self._on_blocked(frame, events)
        elif isinstance(frame, GoAwayFrame):
            self._goaways_received += 1
            if self._goaways_received > 1:
                self._glitch("a repeated GOAWAY")  # spec §10.7.1
            self._on_goaway(frame, events, pending)
        elif isinstance(frame, HelloFrame):
            raise RemoteProtocolError("a second HELLO (spec §3.4)")
        elif isinstance(frame, UnknownFrame):
            self._glitch(f"unknown frame type {frame.type}")  # ignored (spec §4.4, §10.7.1)

    def _on_blocked(self, frame: BlockedFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid == 0:
            limits: tuple[int, int | None] = (self._conn_recv.advertised_bytes, None)
            st = None
        else:
            was_idle = self._is_idle(sid)
            st = self._stream_for_frame(sid, events)
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
        events.append(PeerBlocked(sid, frame.bytes_limit, frame.messages_limit))
        if st is not None and st.tuner is not None:
            st.tuner.blocked = True  # spec §8.9 rule 4: the sender is credit-limited
        elif sid == 0 and self.autotune is not None:
            for other in self._streams.values():  # short of connection credit: all of them
                if other.tuner is not None:
                    other.tuner.blocked = True

    def _on_credit(self, frame: CreditFrame, events: list[Event]) -> None:
        peer = self.peer_settings
        assert peer is not None
        if frame.stream_id == 0:
            before = self._conn_send.limit_bytes
            if self._conn_send.grant(frame.bytes_limit):
                self._blocked.pop(0, None)  # spec §8.7: BLOCKED stops when the credit arrives
                events.append(CreditGranted(0, self._conn_send.limit_bytes, None))
            if self._conn_send.limit_bytes - before < self._credit_step(peer.connection_bytes):
                self._glitch("CREDIT raising the connection limit by too little")
            return
        sid = frame.stream_id
        was_idle = self._is_idle(sid)
        st = self._stream_for_frame(sid, events)
        if st is None:
            if not was_idle:
                self._glitch(f"CREDIT on closed stream {sid}")  # spec §10.7.1
            return  # spec §6.5: CREDIT on a closed stream is ignored
        send = st.send
        old_bytes = send.limit_bytes
        old_messages = send.limit_messages
        old_consumed = st.peer_consumed
        self._record_consumed(st, frame.consumed)
        if frame.rate is not None or frame.depth is not None:
            st.feedback = (frame.rate, frame.depth)  # spec §8.10: advice, never credit
        if send.grant(frame.bytes_limit, frame.messages_limit) and st.state in SENDING_STATES:
            self._blocked.pop(st.id, None)
            events.append(CreditGranted(st.id, send.limit_bytes, send.limit_messages))
        if (
            not was_idle  # opening a stream is progress (spec §6.2)
            and send.limit_messages == old_messages
            and st.peer_consumed == old_consumed
            and send.limit_bytes - old_bytes < self._credit_step(peer.stream_bytes)
        ):
            self._glitch(f"CREDIT raising nothing but a little of stream {sid}'s byte limit")

    def _credit_step(self, peer_window: int) -> int:
        # spec §10.7.1: the least raise a CREDIT makes alone without counting as a glitch,
        # never above what the reference policy raises a limit by (spec §8.6).
        peer = self.peer_settings
        assert peer is not None
        step = replenish_threshold(peer_window, peer.max_message_bytes)
        return min(self.limits.min_credit_step, step)

    @staticmethod
    def _record_consumed(st: _Stream, consumed: int | None) -> None:
        # spec §5.3, §10.5: "consumed" never goes down, and never past what we sent.
        if consumed is None:
            return
        if consumed > st.send.sent_messages:
            raise RemoteProtocolError(
                f"peer reports {consumed} messages consumed on stream {st.id}, but only "
                f"{st.send.sent_messages} were sent (spec §5.3)"
            )
        if st.peer_consumed is None or consumed > st.peer_consumed:
            st.peer_consumed = consumed

    def _on_reset(self, frame: ResetFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        st = self._streams.get(sid)
        if st is None:
            if self._is_idle(sid) and not self._beyond_our_goaway(sid):
                raise RemoteProtocolError(f"RESET on idle stream {sid} (spec §5.7)")
            self._glitch(f"RESET on closed stream {sid}")  # spec §10.7.1
            return  # spec §6.5: never answer a RESET with a RESET
        if st.state is StreamState.CLOSED or sid & 1 != self._parity:
            # spec §10.7.1: a stream the peer opened and reset made us work for nothing
            # ("Rapid Reset"); a RESET on a closed stream changes nothing.
            self._glitch(f"RESET of stream {sid}")
        self._record_consumed(st, frame.consumed)
        if st.state is not StreamState.CLOSED:
            self._advance(st, StreamInput.RECV_RESET, local=False)
            events.append(StreamReset(sid, frame.code, frame.reason, True, frame.consumed))
        self._discard(st)

    def _on_goaway(
        self, frame: GoAwayFrame, events: list[Event], pending: dict[int, _Batch]
    ) -> None:
        last = frame.last_stream
        if self._goaway_received_last is not None:
            last = min(last, self._goaway_received_last)  # spec §10.4: keep the lowest
        self._goaway_received_last = last
        events.append(GoAwayReceived(last, frame.code, frame.reason))
        if frame.code != ErrorCode.NO_ERROR:
            self.state = ConnectionState.CLOSED  # spec §10.2: sends nothing further
        # spec §10.4: our streams above last_stream were not processed: safe to retry.
        for st in list(self._streams.values()):
            if st.id & 1 == self._parity and st.id > last and st.state is not StreamState.CLOSED:
                self._flush(st.id, events, pending)
                self._advance(st, StreamInput.RECV_RESET, local=False)
                events.append(
                    StreamReset(st.id, ErrorCode.REFUSED_STREAM, "not processed (GOAWAY)", True, 0)
                )
                self._discard(st)
        if frame.code == ErrorCode.NO_ERROR:
            if self.state is ConnectionState.OPEN:
                self.state = ConnectionState.CLOSING
            return
        # spec §10.2: an error GOAWAY ends every stream with its code.
        for st in list(self._streams.values()):
            self._flush(st.id, events, pending)
            if st.state is not StreamState.CLOSED:
                self._advance(st, StreamInput.RECV_RESET, local=False)
                events.append(StreamReset(st.id, frame.code, frame.reason, True, st.peer_consumed))
            self._discard(st)
        self.state = ConnectionState.CLOSED

    def _on_eof(self) -> list[Event]:
        truncated = bool(self._inbuf) or any(
            st.partial is not None for st in self._streams.values()
        )
        # spec §10.6: the normal end is EOF after a GOAWAY (either way) with no stream open.
        goaway = self._goaway_received_last is not None or self._goaway_sent_last is not None
        open_streams = any(st.state is not StreamState.CLOSED for st in self._streams.values())
        clean = goaway and not truncated and not open_streams
        self.state = ConnectionState.CLOSED
        return [ConnectionClosed(clean, truncated)]
