"""Connection: wires frames, credit and stream state together; no I/O, no clock.

Bytes in, events out, bytes out::

    conn = Connection(Role.ACCEPTOR)
    for event in conn.receive_data(chunk, now):  # b"" means the peer closed its side
        if isinstance(event, MessagesReceived):
            deliver(event.messages)
            conn.release(event.stream_id, event.nbytes, len(event.messages), now)  # §8.5
    wire = conn.data_to_send()                  # everything queued so far, possibly b""

Every method only queues output; after touching a connection, send ``data_to_send()``.
The receive loop parses every whole frame of a chunk before it returns, and gives one
:class:`MessagesReceived` per stream per call: the hot path is per batch, not per
message. Timed work (keepalive, BLOCKED repeats) takes ``now`` in
:meth:`Connection.handle_timeout` and reports :meth:`Connection.next_deadline`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from typing import Final

from ._autotune import (
    AutoTune,
    MemoryBudget,
    RateEstimator,
    RttEstimator,
    WindowReason,
    WindowTuner,
    tuned_floor,
)
from ._control import ControlReceiving
from ._credit import ReceiveWindow, SendCredit
from ._errors import (
    ConnectionClosedError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosedError,
)
from ._events import (
    Event,
    MessagesReceived,
)
from ._frames import (
    HEADER,
    MAX_COUNTER,
    MAX_PING_ID,
    VERSION,
    CreditFrame,
    Flags,
    FrameType,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    ResetFrame,
    ResumeFrame,
    Settings,
)
from ._inbound import DataBody, DataHeader, Inbound, Item, Received
from ._limits import FRAME_TIMEOUT, GlitchBudget, Limits
from ._outbound import Outbound
from ._queries import ConnectionQueries
from ._receiving import DataReceiving
from ._releasing import CreditReturn
from ._sending import DataSending
from ._session import DEFAULT_SESSION_TIMEOUT, SessionResumption, SessionState, new_token
from ._state import (
    CONNECTION_CLOSED,
    SENDING_STATES,
    STREAM_CLOSED,
    ConnectionInput,
    ConnectionState,
    StreamInput,
    next_connection_state,
    next_state,
)
from ._streams import Role, StreamRecord, StreamTable
from ._timers import ConnectionTimers

__all__ = ["Connection", "Role"]

_DATA: Final = int(FrameType.DATA)
_HELLO: Final = int(FrameType.HELLO)
_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_END_STREAM: Final = int(Flags.END_STREAM)

_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


#: spec §8.9, §10.1: how long a connection the memory budget refused is told to wait.
BUDGET_RETRY_AFTER_MS: Final = 1000

#: Keepalive PINGs we keep track of at once; answers to others are ignored (spec §11).
MAX_OUTSTANDING_PINGS: Final = 16


class Connection(
    ConnectionQueries,
    DataSending,
    DataReceiving,
    CreditReturn,
    ControlReceiving,
    ConnectionTimers,
    SessionResumption,
):
    """One flowproto connection, as a state machine that does no I/O (spec §3-§11).

    The one clock rule: the core reads no clock. Every call where time matters takes the
    caller's ``now`` in seconds, required: :meth:`receive_data` (when bytes arrived),
    :meth:`release` (when the application consumed), :meth:`ping`, and
    :meth:`handle_timeout`, which the caller runs at :meth:`next_deadline`. Any monotonic
    clock works, as long as it is the same one for every call.

    Args:
        role: which end this is.
        settings: what this side accepts; sent in HELLO. Defaults to ``Settings()``.
        ping_timeout: seconds a keepalive PING may go unanswered before the connection
            fails with TIMEOUT (spec §11).
        frame_timeout: seconds a frame (or the preface) may take to arrive whole once
            its first byte has, plus its length / MIN_FRAME_RATE once its header is in
            (spec §11), from the ``now`` of the ``receive_data`` that brought its first byte.
        blocked_interval: least seconds between repeats of BLOCKED for one stream (spec §8.7).
        limits: what the peer may cost this side (spec §10.7); defaults to ``Limits()``.
            The glitch budget refills with time (the ``now`` of each call) and with DATA
            consumed.
        autotune: size the receive windows from what the consumer does (spec §8.9),
            measuring the round trip with PINGs. ``None`` (the default) keeps the HELLO
            windows (spec §8.6).
        budget: a :class:`MemoryBudget` shared with other connections: it caps the
            connection credit they grant together (spec §8.9). If it cannot admit this
            connection, GOAWAY(ENHANCE_YOUR_CALM) is queued after the HELLO at once.
            Call :meth:`leave_budget` when done with a connection that never closed.
        session: sessions that outlive their transport (spec §15). The initiator asks for
            one in its HELLO; the acceptor grants one when asked (a SESSION frame, the
            :class:`SessionGranted` event). Then sent messages are retained until the
            peer reports them consumed, and a lost transport is resumed with
            :meth:`transport_lost`, :meth:`reconnect` (initiator) and :meth:`adopt`
            (acceptor). Off by default.
        session_timeout: seconds an acceptor keeps a session after losing its transport,
            announced in its SESSION (spec §15.3.1).
        token_factory: makes each token an acceptor issues in a SESSION (spec §15.3.1),
            16 to 64 bytes. ``None`` (the default) is :func:`new_token`: 16 bytes from a
            CSPRNG, as spec §15.9 requires. Another factory is for tests and for replaying
            the conversation vectors of spec §13.3, whose tokens are fixed; a predictable
            token lets anyone who guesses it take the session over.

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
        frame_timeout: float = FRAME_TIMEOUT,
        blocked_interval: float = 1.0,
        limits: Limits | None = None,
        autotune: AutoTune | None = None,
        budget: MemoryBudget | None = None,
        session: bool = False,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        token_factory: Callable[[], bytes] | None = None,
    ) -> None:
        self.role = role
        self._session = (
            SessionState(role, session_timeout, token_factory or new_token) if session else None
        )
        self._suspended = False  # spec §15.6: no DATA from a lost transport to reconciling
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
        self.frame_timeout = frame_timeout
        self._frame_started: float | None = None  # when the frame held in part began
        self.blocked_interval = blocked_interval
        ls = self.local_settings
        self._table = StreamTable(role)  # spec §6: ids, parity, open counts, GOAWAY bounds
        self._streams = self._table.records  # the receive hot path reads it directly
        self._conn_send = SendCredit(0)  # the peer's connection limit arrives in its HELLO
        self._conn_recv = ReceiveWindow(ls.connection_bytes, MAX_COUNTER, ls.max_message_bytes)
        self._inbound = Inbound(self._streams, self._conn_recv, ls)  # bytes in (spec §4)
        # spec §15.2: the initiator asks for a session; the acceptor offers them.
        hello = HelloFrame(ls, session=1) if self._session is not None else None
        asks = self._session is not None and self._session.asked
        self._output = Outbound(ls, self.limits.max_queued_replies, hello)  # preface and HELLO
        self._inbound.session = asks
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
        self._clock = 0.0  # the ``now`` of the receive_data call in progress
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
                # spec §8.9 B2, §10.1: not even the floor fits now; retryable, not misbehaviour
                self.close(
                    ErrorCode.OVERLOADED,
                    "memory budget exhausted (spec §8.9)",
                    retry_after_ms=BUDGET_RETRY_AFTER_MS,
                )
            else:
                budget.join(self._conn_recv, tuned_floor(ls.max_message_bytes), ls.connection_bytes)

    # --- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued so far, possibly ``b""``; the queue is then empty."""
        return self._output.data_to_send()

    def buffers_to_send(self, max_buffers: int = 64) -> list[bytes | memoryview]:
        """:meth:`data_to_send` for a vectored write (``sendmsg``/``writev``): the same
        bytes, in order, as a list of at most ``max_buffers`` pieces (one joined piece
        when there would be more), so large payloads are not copied into a joined
        buffer first. Possibly empty; the queue is then empty. The pieces may be views
        of ``bytes`` payloads passed to a send; none is mutable.
        """
        return self._output.buffers_to_send(max_buffers)

    @property
    def has_data_to_send(self) -> bool:
        """True if ``data_to_send()`` would return bytes."""
        return self._output.has_data

    # --- streams -------------------------------------------------------------------------

    def open_stream(self, *, await_start: bool = False) -> int:
        """Open a stream and return its id (spec §6.2).

        A CREDIT restating our initial limits is queued so the peer learns of the
        stream at once, even before a message is sent.

        ``await_start`` (spec §15.10, cold resume): the peer says where the stream starts
        (:class:`StreamStarted`) before anything is sent on it; meanwhile
        ``send_message`` returns False. Only with a session the peer granted.

        Raises:
            LocalProtocolError: before the peer's HELLO, after GOAWAY, at the peer's
                max_streams, when stream ids are exhausted, or ``await_start`` without
                a session.
        """
        if await_start and self.session_token is None:
            raise LocalProtocolError("await_start needs a session the peer granted (spec §15.10)")
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
        if await_start:
            st.start = "sending"
        self._output.queue(
            CreditFrame(
                stream_id,
                st.recv.advertised_bytes,
                st.recv.advertised_messages,
                0,
                await_start=1 if await_start else None,
            )
        )
        return stream_id

    def start_stream(self, stream_id: int, messages: int = 0, nbytes: int = 0) -> None:
        """Say where a stream the peer opened with ``await_start`` starts (spec §15.10).

        ``(0, 0)``: from the beginning (a CREDIT). Otherwise the position the receiving
        application vouches for (what it holds durably, say): both ends count the stream
        from there, as if those messages had been sent, received and consumed, and the
        peer sends what follows (a RESUME). A claim, not the protocol's knowledge.

        Raises:
            LocalProtocolError: the stream is not waiting for a start.
        """
        st = self._streams.get(stream_id)
        if st is None or st.start != "receiving":
            raise LocalProtocolError(
                f"stream {stream_id} was not opened with await_start (spec §15.10)"
            )
        st.start = None
        rw = st.recv
        if messages or nbytes:
            rw.received_messages = rw.consumed_messages = messages
            rw.received_bytes = rw.consumed_bytes = nbytes
            rw.advertised_bytes = nbytes + rw.window_bytes
            rw.advertised_messages = messages + rw.window_messages
            st.reported_consumed = messages
            self._output.queue(
                ResumeFrame(
                    stream_id,
                    (messages, nbytes),
                    messages,
                    (rw.advertised_bytes, rw.advertised_messages),
                )
            )
        else:
            self._output.queue(
                CreditFrame(stream_id, rw.advertised_bytes, rw.advertised_messages, 0)
            )

    def _new_stream(self, stream_id: int) -> StreamRecord:
        peer = self.peer_settings
        assert peer is not None
        ls = self.local_settings
        st = StreamRecord(
            stream_id,
            SendCredit(peer.stream_bytes, peer.stream_messages),
            ReceiveWindow(ls.stream_bytes, ls.stream_messages, ls.max_message_bytes),
        )
        sess = self._session
        if sess is not None and (sess.active or not sess.settled):
            st.retained = deque()  # spec §15.5: kept until the peer reports it consumed
        if self.autotune is not None:
            st.rate = RateEstimator(self.autotune.rate_time_constant)
            st.tuner = WindowTuner(self.autotune, ls.max_message_bytes, st.rate)  # spec §8.9
        self._table.add(st)
        return st

    def reset_stream(
        self,
        stream_id: int,
        error_code: ErrorCode = ErrorCode.CANCEL,
        reason: str = "",
        *,
        accepted: int | None = None,
    ) -> None:
        """End a stream at once with RESET (spec §10.3); its held data is released.

        The RESET carries the messages consumed so far (spec §10.5). With ``accepted``
        (and ``error_code`` REJECTED, spec §5.7), it carries that count instead: the
        messages the application accepted, the only ones the peer reports delivered.
        Resetting a stream that is already closed on the wire, or on a closed connection
        (after GOAWAY with an error, which ended every stream: spec §10.2), only discards
        what is held.

        Raises:
            ValueError: ``accepted`` is more than was consumed.
        """
        st = self._streams.get(stream_id)
        if st is None:
            return
        consumed = st.recv.consumed_messages
        if accepted is not None:
            if not 0 <= accepted <= consumed:
                raise ValueError(
                    f"{accepted} messages accepted on stream {stream_id}, but {consumed} "
                    "were consumed (spec §5.7)"
                )
            consumed = accepted
        if st.state is not STREAM_CLOSED and self.state is not CONNECTION_CLOSED:
            st.reset_code = error_code  # spec §15.7: a resumption restates it
            st.reset_consumed = consumed
            self._output.queue(ResetFrame(stream_id, error_code, reason, consumed))
            self._advance(st, StreamInput.SEND_RESET, local=True)
        self._discard(st)

    def _discard(self, st: StreamRecord) -> None:
        # spec §8.8: data that will never be consumed returns connection credit at once.
        self._conn_recv.consume(st.recv.consume_all(), 0)
        if st.retained:
            self._drop_all_retained(st)  # spec §15.5: nothing on it is sent again
        st.partial = None
        self._output.unblock(st.id)
        self._update_connection_credit()
        self._maybe_forget(st)

    def _maybe_forget(self, st: StreamRecord) -> None:
        # spec §6.3: a closed stream leaves the table once its received messages are all
        # released; its max_streams slot was freed when it closed (see _advance).
        if st.state is STREAM_CLOSED and st.recv.held_messages == 0 and st.partial is None:
            if st.retained is not None and not st.confirmed:
                return  # spec §15.7: a session keeps it until a PONG confirms it
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
        if new is STREAM_CLOSED:
            # spec §6.4: only open and half-closed streams count, even while messages
            # received on a closed one wait to be released.
            self._table.closed(st)
            st.state = new
            if st.retained is not None:
                self._note_closed(st)  # spec §15.7
            return
        st.state = new

    # --- connection-level verbs ----------------------------------------------------------

    def ping(self, now: float) -> int:
        """Queue a PING and return its id; the answer is a :class:`PongReceived` (spec §5.5).

        ``now`` is the caller's clock: the PONG's ``rtt`` is measured from it, and added to
        ``rtt``, the round-trip estimator auto-tuning uses (spec §8.9). At most
        ``MAX_OUTSTANDING_PINGS`` are tracked; the oldest is forgotten past that.
        """
        self._check_open()
        ping_id = self._next_ping_id
        self._next_ping_id = (ping_id + 1) & MAX_PING_ID
        if len(self._pings) >= MAX_OUTSTANDING_PINGS:
            oldest = min(self._pings)
            self._pings.discard(oldest)
            self._ping_times.pop(oldest, None)
        self._pings.add(ping_id)
        self._ping_times[ping_id] = now
        self._output.queue(PingFrame(ping_id))
        return ping_id

    def close(
        self,
        error_code: ErrorCode = ErrorCode.NO_ERROR,
        reason: str = "",
        *,
        retry_after_ms: int | None = None,
    ) -> None:
        """Send GOAWAY (spec §10.4): no new streams; with NO_ERROR open streams may finish.

        With any other code the connection is closed at once: send ``data_to_send()``,
        then close the transport. ``retry_after_ms`` goes with OVERLOADED (spec §5.8): when
        the peer may try a new connection.
        """
        if self.state is CONNECTION_CLOSED:
            return
        last = self._table.goaway_last_stream()  # spec §10.4: never raises last_stream
        self._end_session()  # spec §15.4: a GOAWAY ends a session
        self._output.queue(GoAwayFrame(last, error_code, reason, None, 0, retry_after_ms))
        graceful = error_code is ErrorCode.NO_ERROR
        self._move(ConnectionInput.GRACEFUL_GOAWAY if graceful else ConnectionInput.ERROR)

    def _move(self, event: ConnectionInput) -> None:
        self.state = next_connection_state(self.state, event)  # spec §3, §10: the table

    def _check_open(self) -> None:
        if self.state is CONNECTION_CLOSED:
            raise ConnectionClosedError("the connection is closed")

    def _fail(self, exc: RemoteProtocolError) -> None:
        """A connection error (spec §10.2): GOAWAY with the error's code, then closed."""
        if self.state is CONNECTION_CLOSED:
            return
        last = self._table.goaway_last_stream()
        self._end_session()  # spec §15.4
        versions = (VERSION,) if exc.error_code is ErrorCode.VERSION_MISMATCH else None
        self._output.queue(GoAwayFrame(last, exc.error_code, str(exc), versions))
        self._move(ConnectionInput.ERROR)

    # --- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the transport; ``b""`` means it ended. Returns the events.

        ``now`` is when they arrived, on the caller's clock (the one clock of every timed
        rule: keepalive and frame timeouts, the glitch budget's refill, round trips; spec
        §8.9, §10.7.1, §11). Every whole frame in the data is processed before this
        returns. Replies (PONG, CREDIT, RESET, GOAWAY) are queued for ``data_to_send()``.

        Raises:
            RemoteProtocolError: the peer broke the spec. A GOAWAY with the error's code
                is queued and the connection is closed: send the queued bytes, then close
                the transport. Events of frames before the bad one are lost with it.
        """
        if self.state is CONNECTION_CLOSED:
            return []
        if not data:
            return self._on_eof()
        if self._output.too_many_replies:
            # spec §10.7: CREDIT and BLOCKED queued by the application's calls count too.
            exc = self._output.reply_error()
            self._fail(exc)
            raise exc
        self._glitch_budget.tick(now)  # spec §10.7.1: refilled up to now
        self._clock = now
        try:
            # The walk's first step, without its machinery: the run of whole messages on
            # one stream that the chunk starts with. Mostly that is the whole chunk, and
            # its one event is what the walk would have returned.
            run = self._inbound.leading_run(data)
            if run is not None and run[3] == len(data):
                events: list[Event] = [MessagesReceived(run[0], run[1], run[2])]
            else:
                events = self._walk(data, run)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        self._note_receipt(now)
        return events

    def _walk(self, data: bytes, run: tuple[int, list[bytes], int, int] | None) -> list[Event]:
        """The frames of ``data`` after the ``run`` that ``leading_run`` took, if any."""
        inbound = self._inbound
        rx = Received()
        pos = 0
        if run is not None:
            sid, messages, nbytes, pos = run
            rx.messages(sid, messages, nbytes)
        # A chunk that starts with a frame is walked in place; otherwise chunks() joins
        # it to the bytes held from the last one.
        chunks = ((data, pos),) if not inbound.buf else inbound.chunks(data)
        for chunk, pos in chunks:
            if inbound.stopped:
                if inbound.paused:  # spec §15.6: kept for the session's connection
                    inbound.buf += memoryview(chunk)[pos:]
                continue
            if not inbound.preface_done:
                pos = inbound.preface(chunk, pos)
                if pos < 0:
                    break
                self._move(ConnectionInput.RECV_PREFACE)
            for item in inbound.walk(chunk, pos, rx):
                self._receive_item(item, rx)
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
            if self.state is CONNECTION_CLOSED:
                self._inbound.stop()
