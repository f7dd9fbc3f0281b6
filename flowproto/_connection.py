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
from typing import Final

from ._autotune import (
    AutoTune,
    MemoryBudget,
    RttEstimator,
    WindowInfo,
    WindowReason,
    WindowTuner,
    tuned_floor,
)
from ._credit import ReceiveWindow, SendCredit, replenish_threshold, send_room, spend, take_send
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
    PeerBlocked,
    PingReceived,
    PongReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from ._frames import (
    HEADER,
    MAX_COUNTER,
    MAX_FEEDBACK_RATE,
    MAX_PING_ID,
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
)
from ._inbound import DataBody, DataHeader, Inbound, Item, Received
from ._limits import GlitchBudget, Limits
from ._outbound import Outbound
from ._state import (
    RECEIVING_STATES,
    SENDING_STATES,
    ConnectionInput,
    ConnectionState,
    StreamInput,
    StreamState,
    next_connection_state,
    next_state,
)
from ._streams import Role, StreamRecord, StreamTable

__all__ = ["Connection", "Role"]

_DATA: Final = int(FrameType.DATA)
_HELLO: Final = int(FrameType.HELLO)
_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_END_STREAM: Final = int(Flags.END_STREAM)
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


#: Keepalive PINGs we keep track of at once; answers to others are ignored (spec §11).
MAX_OUTSTANDING_PINGS: Final = 16


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
        self._table = StreamTable(role)  # spec §6: ids, parity, open counts, GOAWAY bounds
        self._streams = self._table.records  # the receive hot path reads it directly
        self._conn_send = SendCredit(0)  # the peer's connection limit arrives in its HELLO
        self._conn_recv = ReceiveWindow(ls.connection_bytes, MAX_COUNTER, ls.max_message_bytes)
        self._inbound = Inbound(self._streams, self._conn_recv, ls)  # bytes in (spec §4)
        self._output = Outbound(ls, self.limits.max_queued_replies)  # preface and HELLO
        self._out = self._output.out  # the send hot path appends to it directly
        self._blocked = self._output.blocked
        self._next_ping_id = 0
        self._pings: set[int] = set()
        self._keepalive_ping: int | None = None
        self._keepalive_sent_at = 0.0
        self._last_rx = 0.0
        # spec §10.7.1: the glitch budget, a token bucket refilled by time and by progress.
        self._glitch_budget = GlitchBudget(self.limits)
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
        return self._output.data_to_send()

    @property
    def has_data_to_send(self) -> bool:
        """True if ``data_to_send()`` would return bytes."""
        return self._output.has_data

    # --- information ---------------------------------------------------------------------

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
        stream_id = self._table.allocate_local_id()
        st = self._new_stream(stream_id)
        self._output.queue(
            CreditFrame(stream_id, st.recv.advertised_bytes, st.recv.advertised_messages, 0)
        )
        return stream_id

    def _new_stream(self, stream_id: int) -> StreamRecord:
        peer = self.peer_settings
        assert peer is not None
        ls = self.local_settings
        st = StreamRecord(
            stream_id,
            SendCredit(peer.stream_bytes, peer.stream_messages),
            ReceiveWindow(ls.stream_bytes, ls.stream_messages, ls.max_message_bytes),
        )
        if self.autotune is not None:
            st.tuner = WindowTuner(self.autotune, ls.max_message_bytes)  # spec §8.9
        self._table.add(st)
        return st

    def _sendable(self, stream_id: int) -> StreamRecord:
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
        if not take_send(st.send, self._conn_send, n):  # spec §8.3: counted if it fits
            self._has_credit(st, n)  # notes BLOCKED
            return False
        self._blocked.pop(stream_id, None)
        if end_stream:
            self._advance(st, StreamInput.SEND_END, local=True)
        if n <= peer.max_frame_bytes and not end_stream:
            self._out += (_pack_header(n, _DATA, _END_MESSAGE, stream_id), payload)
        else:
            self._output.message(stream_id, payload, peer.max_frame_bytes, end_stream)
        if end_stream:
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
        st = self._sendable(stream_id)
        peer = self.peer_settings
        assert peer is not None
        max_message = peer.max_message_bytes
        max_frame = peer.max_frame_bytes
        bytes_left, messages_left = send_room(st.send, self._conn_send)  # spec §8.3
        count = len(payloads)
        if 8 <= count <= messages_left:
            # The whole batch in one go when credit covers it and no message needs
            # fragments: the same checks as the loop below, made once over the batch.
            lengths = list(map(len, payloads))
            nbytes = sum(lengths)
            if nbytes <= bytes_left and max(lengths) <= min(max_message, max_frame):
                spend(st.send, self._conn_send, nbytes, count)
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
        output = self._output
        for payload in payloads[:sent]:
            output.message(st.id, payload, max_frame, False)
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
        output.unblock(st.id)
        if end_stream:
            self.end_stream(st.id)
        return sent

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
        self._advance(st, StreamInput.SEND_END, local=True)
        self._output.end_stream(stream_id)
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
        if st.state in RECEIVING_STATES:
            update = st.recv.update()
            if update is not None:
                rate, depth = self._feedback(st) if st.tuner is not None else (None, None)
                self._output.queue(
                    CreditFrame(
                        stream_id, update[0], update[1], st.recv.consumed_messages, rate, depth
                    )
                )
                st.reported_consumed = st.recv.consumed_messages
                self._output.replies += 1  # spec §10.7: CREDIT answers the peer's data
                credit = True
        else:
            self._final_report(st)
        self._update_connection_credit()
        self._maybe_forget(st)
        return credit

    def _final_report(self, st: StreamRecord) -> None:
        # spec §10.5 "Final report": the peer ended the stream and every message was
        # consumed; tell it the final count (limits restated) if it does not know it yet.
        rw = st.recv
        if (
            st.state is StreamState.HALF_CLOSED_REMOTE
            and rw.held_messages == 0
            and rw.consumed_messages > st.reported_consumed
        ):
            self._output.queue(
                CreditFrame(
                    st.id, rw.advertised_bytes, rw.advertised_messages, rw.consumed_messages
                )
            )
            st.reported_consumed = rw.consumed_messages
            self._output.replies += 1  # spec §10.7

    def _update_connection_credit(self) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        update = self._conn_recv.update()
        if update is not None:
            self._output.queue(CreditFrame(0, update[0]))
            self._output.replies += 1  # spec §10.7

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
            self._output.queue(ResetFrame(stream_id, error_code, reason, st.recv.consumed_messages))
            self._advance(st, StreamInput.SEND_RESET, local=True)
        self._discard(st)

    def _discard(self, st: StreamRecord) -> None:
        # spec §8.8: data that will never be consumed returns connection credit at once.
        self._conn_recv.consume(st.recv.consume_all(), 0)
        st.partial = None
        self._output.unblock(st.id)
        self._update_connection_credit()
        self._maybe_forget(st)

    def _maybe_forget(self, st: StreamRecord) -> None:
        # spec §6.3: a closed stream leaves the table once its received messages are all
        # released; its max_streams slot was freed when it closed (see _advance).
        if st.state is StreamState.CLOSED and st.recv.held_messages == 0 and st.partial is None:
            self._streams.pop(st.id, None)
            self._output.unblock(st.id)

    def _advance(self, st: StreamRecord, event: StreamInput, *, local: bool) -> None:
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
            self._output.unblock(st.id)  # spec §8.7: no BLOCKED once we may not send
        if new is StreamState.CLOSED:
            # spec §6.4: only open and half-closed streams count, even while messages
            # received on a closed one wait to be released.
            self._table.closed(st)
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
        self._output.queue(PingFrame(ping_id))
        return ping_id

    def close(self, error_code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Send GOAWAY (spec §10.4): no new streams; with NO_ERROR open streams may finish.

        With any other code the connection is closed at once: send ``data_to_send()``,
        then close the transport.
        """
        if self.state is ConnectionState.CLOSED:
            return
        last = self._table.goaway_last_stream()  # spec §10.4: never raises last_stream
        self._output.queue(GoAwayFrame(last, error_code, reason))
        graceful = error_code is ErrorCode.NO_ERROR
        self._move(ConnectionInput.GRACEFUL_GOAWAY if graceful else ConnectionInput.ERROR)

    @property
    def finished(self) -> bool:
        """True when the connection is closed, or closing with no stream left (spec §10.4)."""
        return self.state is ConnectionState.CLOSED or (
            self.state is ConnectionState.CLOSING and not self._table.any_open()
        )

    def _move(self, event: ConnectionInput) -> None:
        self.state = next_connection_state(self.state, event)  # spec §3, §10: the table

    def _check_open(self) -> None:
        if self.state is ConnectionState.CLOSED:
            raise ConnectionClosedError("the connection is closed")

    def _fail(self, exc: RemoteProtocolError) -> None:
        """A connection error (spec §10.2): GOAWAY with the error's code, then closed."""
        if self.state is ConnectionState.CLOSED:
            return
        last = self._table.goaway_last_stream()
        versions = (VERSION,) if exc.error_code is ErrorCode.VERSION_MISMATCH else None
        self._output.queue(GoAwayFrame(last, exc.error_code, str(exc), versions))
        self._move(ConnectionInput.ERROR)

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
        blocked = self._output.blocked_deadline(self.blocked_interval)
        if blocked is not None:
            deadlines.append(blocked)
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
        self._glitch_budget.tick(now)  # spec §10.7.1: the glitch budget refills with time
        if self._inbound.activity:
            self._inbound.activity = False
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
        self._output.repeat_blocked(now, self.blocked_interval)  # spec §8.7
        if self._answered or self.autotune is not None:
            self._tune_timers(now)

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

    def _feedback(self, st: StreamRecord) -> tuple[int | None, int | None]:
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
        if self._output.too_many_replies:
            # spec §10.7: CREDIT and BLOCKED queued by the application's calls count too.
            exc = self._output.reply_error()
            self._fail(exc)
            raise exc
        inbound = self._inbound
        rx = Received()
        try:
            for chunk, pos in inbound.chunks(data):
                if not inbound.preface_done:
                    pos = inbound.preface(chunk, pos)
                    if pos < 0:
                        break
                    self._move(ConnectionInput.RECV_PREFACE)
                for item in inbound.walk(chunk, pos, rx):
                    self._receive_item(item, rx)
                if inbound.stopped:
                    break
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        return rx.flush_all()

    def _receive_item(self, item: Item, rx: Received) -> None:
        """Act on what the walk of the input handed back (see ``_inbound``)."""
        if type(item) is DataBody:
            self._receive_data_frame(item.stream_id, item.flags, item.body, rx)
        elif type(item) is DataHeader:
            st = self._streams.get(item.stream_id)
            self._check_data_header(item.stream_id, item.length, item.flags, st, rx)
        else:
            self._receive_control(item, rx)  # type: ignore[arg-type]
            if self.state is ConnectionState.CLOSED:
                self._inbound.stop()

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

    def _open_peer_stream(self, sid: int, rx: Received) -> StreamRecord | None:
        """The peer's first frame on a new stream id (spec §6.2); None if not processed."""
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
        rx.events.append(StreamOpened(sid))
        return st

    def _stream_for_frame(self, sid: int, rx: Received) -> StreamRecord | None:
        """The stream a received stream-level frame is for, opening it if new; None if closed."""
        st = self._streams.get(sid)
        if st is not None:
            return st
        if self._table.is_idle(sid):
            return self._open_peer_stream(sid, rx)
        return None

    def _receive_data_frame(
        self,
        sid: int,
        flags: int,
        body: bytes,
        rx: Received,
    ) -> None:
        """DATA off the hot path: new streams, fragments, END_STREAM, closed streams."""
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
                self._too_large(st, rx)  # spec §7.3
                return
            st.partial.append(body)
            st.partial_len += length
            if end_message:
                message = st.partial[0] if len(st.partial) == 1 else b"".join(st.partial)
                st.partial = None
                rx.message(sid, message)
        if end_stream:
            rx.flush(sid)
            self._advance(st, StreamInput.RECV_END, local=False)
            rx.events.append(StreamEnded(sid))
            self._final_report(st)
            self._maybe_forget(st)

    def _glitch(self, what: str) -> None:
        """The peer's frame cost work and made no progress: spend a token (spec §10.7.1)."""
        self._glitch_budget.spend(what, self._conn_recv.consumed_bytes)

    @property
    def glitches(self) -> int:
        """Frames the peer sent that cost work and made no progress (spec §10.7.1)."""
        return self._glitch_budget.count

    def _stream_error(self, st: StreamRecord, code: ErrorCode, reason: str, rx: Received) -> None:
        """Reset one stream for the peer's error (spec §10.3)."""
        self._glitch(f"{code.name} on stream {st.id}")  # spec §10.7.1: resets we are made to send
        self._output.queue(ResetFrame(st.id, code, reason, st.recv.consumed_messages))
        self._output.count_reply()
        self._advance(st, StreamInput.SEND_RESET, local=True)
        rx.events.append(StreamReset(st.id, code, reason, False, None))
        self._discard(st)

    def _receive_control(self, frame: Frame, rx: Received) -> None:
        if self.state is ConnectionState.HELLO:
            if not isinstance(frame, HelloFrame):
                raise RemoteProtocolError(
                    f"the first frame after the preface must be HELLO, got {type(frame).__name__} "
                    "(spec §3.4)"
                )
            self.peer_settings = frame.settings
            self._inbound.awaiting_hello = False
            self._conn_send.limit_bytes = frame.settings.connection_bytes
            self._move(ConnectionInput.RECV_HELLO)
            rx.events.append(HandshakeCompleted(frame.settings))
            return
        if isinstance(frame, CreditFrame):
            self._on_credit(frame, rx)
        elif isinstance(frame, PingFrame):
            self._glitch("PING")  # spec §10.7.1: PINGs beyond the budget's rate
            self._output.queue_urgent(PongFrame(frame.id))
            self._output.count_reply()
            rx.events.append(PingReceived(frame.id))
        elif isinstance(frame, PongFrame):
            if frame.id in self._pings:  # spec §5.6: an unmatched PONG is ignored
                self._pings.discard(frame.id)
                rx.events.append(PongReceived(frame.id))
                if frame.id in self._ping_times:
                    self._answered.append(frame.id)  # timed by handle_timeout (spec §8.9)
            else:
                self._glitch("unmatched PONG")
        elif isinstance(frame, ResetFrame):
            rx.flush(frame.stream_id)
            self._on_reset(frame, rx)
        elif isinstance(frame, BlockedFrame):
            self._on_blocked(frame, rx)
        elif isinstance(frame, GoAwayFrame):
            self._goaways_received += 1
            if self._goaways_received > 1:
                self._glitch("a repeated GOAWAY")  # spec §10.7.1
            self._on_goaway(frame, rx)
        elif isinstance(frame, HelloFrame):
            raise RemoteProtocolError("a second HELLO (spec §3.4)")
        elif isinstance(frame, UnknownFrame):
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
            before = self._conn_send.limit_bytes
            if self._conn_send.grant(frame.bytes_limit):
                self._output.unblock(0)  # spec §8.7: BLOCKED stops when the credit arrives
                rx.events.append(CreditGranted(0, self._conn_send.limit_bytes, None))
            if self._conn_send.limit_bytes - before < self._credit_step(peer.connection_bytes):
                self._glitch("CREDIT raising the connection limit by too little")
            return
        sid = frame.stream_id
        was_idle = self._table.is_idle(sid)
        st = self._stream_for_frame(sid, rx)
        if st is None:
            if not was_idle:
                self._glitch(f"CREDIT on closed stream {sid}")  # spec §10.7.1
            return  # spec §6.5: CREDIT on a closed stream is ignored
        send = st.send
        old_bytes = send.limit_bytes
        old_messages = send.limit_messages
        old_consumed = st.peer_consumed
        st.record_consumed(frame.consumed)
        if frame.rate is not None or frame.depth is not None:
            st.feedback = (frame.rate, frame.depth)  # spec §8.10: advice, never credit
        if send.grant(frame.bytes_limit, frame.messages_limit) and st.state in SENDING_STATES:
            self._output.unblock(st.id)
            rx.events.append(CreditGranted(st.id, send.limit_bytes, send.limit_messages))
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

    def _on_reset(self, frame: ResetFrame, rx: Received) -> None:
        sid = frame.stream_id
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
        st.record_consumed(frame.consumed)
        if st.state is not StreamState.CLOSED:
            self._advance(st, StreamInput.RECV_RESET, local=False)
            rx.events.append(StreamReset(sid, frame.code, frame.reason, True, frame.consumed))
        self._discard(st)

    def _on_goaway(self, frame: GoAwayFrame, rx: Received) -> None:
        last = self._table.goaway_received(frame.last_stream)  # spec §10.4: the lowest
        rx.events.append(GoAwayReceived(last, frame.code, frame.reason))
        # spec §10.4: our streams above last_stream were not processed: safe to retry.
        for st in list(self._streams.values()):
            if self._table.is_ours(st.id) and st.id > last and st.state is not StreamState.CLOSED:
                rx.flush(st.id)
                self._advance(st, StreamInput.RECV_RESET, local=False)
                rx.events.append(
                    StreamReset(st.id, ErrorCode.REFUSED_STREAM, "not processed (GOAWAY)", True, 0)
                )
                self._discard(st)
        if frame.code == ErrorCode.NO_ERROR:
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
