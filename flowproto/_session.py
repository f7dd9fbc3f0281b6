"""Sessions that outlive their transport (spec §15): the lifecycle, retention, the exchange.

A session is the state of a connection that survives the loss of its transport: the
stream table, every limit and counter, and the messages each side retains because the
peer has not yet reported them consumed (spec §15.5). The initiator asks for one in its
HELLO (``session``) and the acceptor grants it with a SESSION frame carrying a token.

When the transport is lost, :meth:`SessionResumption.transport_lost` rolls back what a
lost transport leaves half done (a partial message) and keeps the rest. The initiator
then calls :meth:`~SessionResumption.reconnect` on a new transport: its HELLO carries the
token, and its *exchange* follows at once: one RESUME per stream it holds (what it
received, consumed and grants) and a connection RESUME. On the acceptor a fresh
connection sees the HELLO and reports :class:`ResumeRequested`; the I/O layer finds the
session's connection by the token (:class:`SessionStore`) and calls
:meth:`~SessionResumption.adopt`, which answers with a new token and its own exchange.
When each side has the other's exchange it reconciles (spec §15.8, ``_reconcile.py``,
the base :class:`SessionReconciling`): it rewinds each stream's send counters to what the
peer received and retransmits exactly the retained messages after that position. A
RESUME outside an exchange is a cold resume's answer (spec §15.10, ``_cold_start.py``).

Records of closed streams are kept until a PONG confirms the peer processed everything
sent on them (spec §15.7); one PING at a time confirms every stream closed before it.
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ._cold_start import cold_start
from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._events import (
    Event,
    ResumeRequested,
    SessionGranted,
)
from ._frames import (
    MAX_PING_ID,
    MAX_TOKEN_BYTES,
    MIN_TOKEN_BYTES,
    Frame,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    ResumeFrame,
    SessionFrame,
)
from ._inbound import Inbound, Received
from ._reconcile import SessionReconciling
from ._session_store import token_key
from ._state import ConnectionInput, ConnectionState
from ._streams import Role, StreamRecord

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "DEFAULT_SESSION_TIMEOUT",
    "MAX_UNCONFIRMED_RECORDS",
    "SessionResumption",
    "SessionState",
    "new_token",
]

#: spec §12: how long an acceptor keeps a session without a transport, by default.
DEFAULT_SESSION_TIMEOUT: Final = 30.0
#: spec §12, §15.7: closed-stream records awaiting a PONG; past it, no more resuming.
MAX_UNCONFIRMED_RECORDS: Final = 4096

#: Where a resumption is (spec §15.6), on a connection with a transport.
_HELLO: Final = "hello"  # the initiator reconnected; the acceptor's HELLO is next
_SESSION: Final = "session"  # the initiator has the acceptor's HELLO; SESSION is next
_EXCHANGE: Final = "exchange"  # our exchange is out; the peer's connection RESUME is next

_ALLOWED: Final[dict[str, tuple[type, ...]]] = {
    # spec §15.6: what the peer may send while a resumption is under way.
    _SESSION: (PingFrame, PongFrame, GoAwayFrame, SessionFrame),
    _EXCHANGE: (PingFrame, PongFrame, GoAwayFrame, ResumeFrame),
}


def new_token() -> bytes:
    """A session token: MIN_TOKEN_BYTES from a CSPRNG, 128 bits (spec §15.9)."""
    return secrets.token_bytes(MIN_TOKEN_BYTES)


class SessionState:
    """What a connection knows of its session (spec §15); None on a connection without."""

    __slots__ = (
        "active",
        "asked",
        "bytes_retransmitted",
        "closed_next",
        "closed_waiting",
        "confirm_ping",
        "gave_up",
        "grants",
        "messages_retransmitted",
        "peer_resumes",
        "phase",
        "prev_token",
        "reconnects",
        "requested",
        "resumed",
        "retained_bytes",
        "retained_peak",
        "settled",
        "timeout_ms",
        "token",
        "token_factory",
        "token_ping",
    )

    def __init__(
        self, role: Role, timeout: float, token_factory: Callable[[], bytes] = new_token
    ) -> None:
        self.asked = role is Role.INITIATOR  # the initiator asks in its HELLO (spec §15.2)
        self.grants = role is Role.ACCEPTOR  # the acceptor grants when asked
        self.settled = not self.asked  # the initiator: SESSION arrived, or cannot any more
        self.active = False  # a token was issued and the session has not ended
        self.gave_up = False  # a record was dropped unconfirmed: no resuming (spec §15.7)
        self.token: bytes | None = None
        self.token_factory = token_factory  # the acceptor's tokens (spec §15.9)
        self.prev_token: bytes | None = None  # acceptor: the token resumed with, until retired
        self.requested: bytes | None = None  # a fresh acceptor: the token its HELLO presented
        self.timeout_ms = round(timeout * 1000)
        self.phase: str | None = None
        self.peer_resumes: dict[int, ResumeFrame] = {}
        self.closed_waiting: list[int] = []  # closed before the confirming PING went out
        self.closed_next: list[int] = []  # closed since
        self.confirm_ping: int | None = None
        self.token_ping: int | None = None  # acceptor: its PONG retires prev_token (§15.6)
        self.retained_bytes = 0
        self.retained_peak = 0
        self.reconnects = 0  # the initiator's resumptions begun
        self.resumed = 0  # resumptions completed (both sides)
        self.messages_retransmitted = 0
        self.bytes_retransmitted = 0


class SessionResumption(SessionReconciling):
    """The session verbs of a connection (spec §15); a mixin of ``Connection``, with its
    reconciling (spec §15.8) in the base :class:`SessionReconciling`."""

    # --- what the application may read ---------------------------------------------------

    @property
    def session_token(self) -> bytes | None:
        """The token that resumes this session next, or None without a session (§15.3.1)."""
        sess = self._session
        return None if sess is None or not sess.active else sess.token

    @property
    def resumable(self) -> bool:
        """Whether a lost transport can be resumed now (spec §15.4): a session was granted,
        no GOAWAY went either way, and no connection error happened."""
        sess = self._session
        return (
            sess is not None
            and sess.active
            and not sess.gave_up
            and self.state is not ConnectionState.CLOSED
            and self.state is not ConnectionState.CLOSING
        )

    @property
    def session_pending(self) -> bool:
        """The initiator asked for a session, the acceptor's HELLO offered them, and its
        SESSION has not arrived yet (spec §15.2): it comes next."""
        sess = self._session
        return sess is not None and not sess.settled and self.peer_settings is not None

    @property
    def suspended(self) -> bool:
        """True from a lost transport until the resumption is reconciled: no DATA goes out,
        and ``send_message`` returns False (spec §15.6)."""
        return self._suspended

    @property
    def retained(self) -> tuple[int, int]:
        """(messages, bytes) kept for a resumption now (spec §15.5)."""
        messages = sum(len(st.retained) for st in self._streams.values() if st.retained)
        sess = self._session
        return messages, 0 if sess is None else sess.retained_bytes

    @property
    def retained_peak_bytes(self) -> int:
        """The most bytes retained at once (spec §15.11)."""
        sess = self._session
        return 0 if sess is None else max(sess.retained_peak, sess.retained_bytes)

    @property
    def session_counts(self) -> tuple[int, int, int, int]:
        """(reconnects, resumptions completed, messages retransmitted, bytes retransmitted),
        the counters of spec §15.11."""
        sess = self._session
        if sess is None:
            return 0, 0, 0, 0
        return (
            sess.reconnects,
            sess.resumed,
            sess.messages_retransmitted,
            sess.bytes_retransmitted,
        )

    def retained_on(self, stream_id: int) -> tuple[int, int]:
        """(messages, bytes) retained on one stream now (spec §15.5)."""
        st = self._streams.get(stream_id)
        if st is None or st.retained is None:
            return 0, 0
        return len(st.retained), st.retained_bytes

    def accepts_token_hash(self, key: bytes) -> bool:
        """Whether ``key`` is the hash of a token this session accepts (for the store)."""
        sess = self._session
        return sess is not None and any(
            token is not None and token_key(token) == key for token in (sess.token, sess.prev_token)
        )

    def accepts_token(self, token: bytes) -> bool:
        """Whether ``token`` resumes this session now, compared in constant time (§15.9)."""
        sess = self._session
        if sess is None or not self.resumable:
            return False
        ok = False
        for valid in (sess.token, sess.prev_token):
            if valid is not None and hmac.compare_digest(valid, token):
                ok = True
        return ok

    # --- losing and regaining the transport (spec §15.4, §15.6) --------------------------

    def transport_lost(self) -> bool:
        """The transport ended or failed. Returns True if the session is kept (spec §15.4).

        A partial message is rolled back (its bytes and its count), queued output,
        outstanding PINGs and BLOCKED notes are dropped; everything else is kept, including
        complete messages not yet released. Then the initiator calls :meth:`reconnect` on a
        new transport, and the acceptor waits for one (:meth:`adopt`). Returns False, and
        changes nothing, when the session cannot be resumed (none granted, a GOAWAY went
        either way, a connection error): handle the end as on any connection
        (``receive_data(b"")``).
        """
        if not self.resumable:
            return False
        sess = self._session
        assert sess is not None
        if self.state is not ConnectionState.RESUMING:
            self._move(ConnectionInput.LOSE_TRANSPORT)
        self._suspended = True
        sess.phase = None
        sess.peer_resumes.clear()
        conn = self._conn_recv
        for st in self._streams.values():
            if st.partial is not None:  # spec §15.4 step 2: a partial message is rolled back
                st.recv.received_bytes -= st.partial_len
                st.recv.received_messages -= 1
                conn.received_bytes -= st.partial_len
                st.partial = None
                st.partial_len = 0
        self._output.restart(None)  # step 3
        self._pings.clear()
        self._ping_times.clear()
        self._keepalive_ping = None
        self._probe = None
        self._frame_started = None
        if sess.confirm_ping is not None:
            sess.closed_next = sess.closed_waiting + sess.closed_next
            sess.closed_waiting = []
            sess.confirm_ping = None
        sess.token_ping = None  # the presented token stays valid: its PONG never came
        self._inbound = self._new_inbound()
        return True

    def reconnect(self, now: float) -> None:
        """Resume the session on a new transport (the initiator, spec §15.6).

        Queues the preface, a HELLO with the token, and the exchange; send
        ``data_to_send()`` on the new transport. DATA waits until the acceptor's exchange
        is reconciled (:class:`SessionResumed`).

        Raises:
            LocalProtocolError: not an initiator whose session lost its transport.
        """
        sess = self._session
        if (
            sess is None
            or sess.token is None
            or self.role is not Role.INITIATOR
            or self.state is not ConnectionState.RESUMING
            or not self.resumable  # closed meanwhile: a GOAWAY ended the session (§15.4)
        ):
            raise LocalProtocolError(
                "reconnect() resumes an initiator's session after transport_lost(), while "
                "it is still resumable (spec §15.4, §15.6)"
            )
        hello = HelloFrame(self.local_settings, resume_token=sess.token)
        self._output.restart(hello)
        self._queue_exchange()
        self._inbound = self._new_inbound()
        self._move(ConnectionInput.NEW_TRANSPORT)
        sess.phase = _HELLO
        sess.reconnects += 1
        self._last_rx = now

    def adopt(self, new: Connection, now: float) -> list[Event]:
        """Take over ``new``'s transport, which resumes this session (the acceptor, §15.6).

        ``new`` is the fresh connection that reported :class:`ResumeRequested` with a
        token this connection accepts (:meth:`accepts_token`). This connection answers on
        that transport with a SESSION carrying a new token and its exchange, and processes
        the bytes ``new`` held after the HELLO. From now on feed the transport's bytes to
        this connection and drop ``new``. If the old transport was still open, it is
        abandoned (spec §15.6 step 2): stop using it.

        Returns:
            The events of the bytes ``new`` held, after a :class:`SessionGranted`.
        """
        sess = self._session
        if sess is None or self.role is not Role.ACCEPTOR or not self.resumable:
            raise LocalProtocolError("adopt() needs an acceptor's resumable session (§15.6)")
        if self.state is not ConnectionState.RESUMING:
            self.transport_lost()
        presented = None if new._session is None else new._session.requested
        if presented is None or not self.accepts_token(presented):
            raise LocalProtocolError("adopt() needs a connection that resumes this session")
        pending = new.data_to_send()  # its preface and HELLO, if not yet written
        rest = bytes(new._inbound.buf)
        new._abandon_for_resume()
        self._output.restart(None)
        if pending:
            self._out.append(pending)
        # spec §15.6: the presented token stays valid until the PONG below proves the
        # initiator has the new one, so a loss before it reaches the initiator is resumable.
        sess.prev_token = presented
        sess.token = self._issue_token()
        self._output.queue(SessionFrame(sess.token, sess.timeout_ms))
        self._queue_exchange()
        self._inbound = self._new_inbound()
        self._inbound.preface_done = True
        self._inbound.awaiting_hello = False
        self._move(ConnectionInput.ADOPT_TRANSPORT)
        sess.phase = _EXCHANGE
        self._last_rx = now
        # spec §15.6: the PONG of this PING retires the presented token. It confirms no
        # closed stream: their closing frames may be sent again when reconciling, after it.
        sess.token_ping = self._queue_ping()
        events: list[Event] = [SessionGranted(sess.token, sess.timeout_ms)]
        if rest:
            events += self.receive_data(rest, now)
        return events

    def refuse_resume(self) -> None:
        """Answer a :class:`ResumeRequested` whose token names no session: a connection
        error SESSION_UNKNOWN (spec §15.6). Send ``data_to_send()``, then close."""
        self._fail(
            RemoteProtocolError(
                "no session to resume with that token (spec §15.6)", ErrorCode.SESSION_UNKNOWN
            )
        )

    def _issue_token(self) -> bytes:
        """A new token from the session's ``token_factory`` (spec §15.3.1, §15.9)."""
        sess = self._session
        assert sess is not None
        token = sess.token_factory()
        if type(token) is not bytes or not MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES:
            # never the token itself in a message: it is a bearer secret (spec §15.9)
            got = f"{len(token)} bytes" if type(token) is bytes else type(token).__name__
            raise LocalProtocolError(
                f"token_factory returned {got}; a token is a bytes of {MIN_TOKEN_BYTES} to "
                f"{MAX_TOKEN_BYTES} (spec §15.3.1)"
            )
        return token

    def _abandon_for_resume(self) -> None:
        self.leave_budget()
        self._move(ConnectionInput.ERROR)

    def _new_inbound(self) -> Inbound:
        inbound = Inbound(self._streams, self._conn_recv, self.local_settings)
        inbound.session = True
        return inbound

    def _queue_exchange(self) -> None:
        """Our exchange (spec §15.6, §15.7): a RESUME per stream held, then the connection's."""
        queue = self._output.queue
        for sid in sorted(self._streams):
            st = self._streams[sid]
            rw = st.recv
            consumed = rw.consumed_messages if st.reset_code is None else st.reset_consumed
            queue(
                ResumeFrame(
                    sid,
                    (rw.received_messages, rw.received_bytes),
                    min(consumed, rw.received_messages),
                    (rw.advertised_bytes, rw.advertised_messages),
                    st.got_end,
                    st.reset_code,
                )
            )
        conn = self._conn_recv
        queue(
            ResumeFrame(
                0,
                (0, conn.received_bytes),
                0,
                (conn.advertised_bytes, 0),
                highest=self._table.highest_peer_id,
            )
        )

    # --- the HELLO, SESSION and RESUME frames (spec §15.2, §15.3) ------------------------

    def _session_hello(self, frame: HelloFrame, rx: Received) -> bool:
        """The peer's HELLO on a session connection; True if it resumes a session (its
        settings are then ignored: a session keeps those of its first transport, and the
        handshake completes for the session's connection, not this one)."""
        sess = self._session
        assert sess is not None
        if self.role is Role.INITIATOR:
            if sess.phase == _HELLO:
                sess.phase = _SESSION
                return True
            if frame.session != 1 and not sess.settled:
                self._end_session()  # spec §15.2: no offer, so no SESSION will come
            return False
        if not sess.grants:
            return False
        if frame.resume_token is not None:
            self._inbound.session = True
            sess.requested = frame.resume_token
            rx.events.append(ResumeRequested(frame.resume_token))
            self._inbound.pause()  # the rest is for the session's own connection
            return True  # its handshake is the session's: no HandshakeCompleted here
        if frame.session == 1:
            self._inbound.session = True
            sess.token = self._issue_token()
            sess.active = True
            self._retain_all()
            self._output.queue(SessionFrame(sess.token, sess.timeout_ms))  # spec §15.2
            rx.events.append(SessionGranted(sess.token, sess.timeout_ms))
        else:
            self._end_session()
        return False

    def _session_gate(self, frame: Frame) -> None:
        """What the peer may send while a resumption is under way (spec §15.2, §15.6)."""
        sess = self._session
        assert sess is not None
        phase = sess.phase
        if phase is not None and phase != _HELLO:
            if not isinstance(frame, _ALLOWED[phase]):
                raise RemoteProtocolError(
                    f"{type(frame).__name__.removesuffix('Frame').upper()} while resuming, "
                    f"before the peer's {'SESSION' if phase == _SESSION else 'exchange'} "
                    "(spec §15.6)"
                )
        elif not sess.settled and not isinstance(
            frame, (PingFrame, PongFrame, GoAwayFrame, SessionFrame)
        ):
            self._end_session()  # spec §15.2: no SESSION first, so no session
            self._inbound.hold_data = False

    def _on_session(self, frame: SessionFrame, rx: Received) -> None:
        sess = self._session
        assert sess is not None
        first = not sess.settled and self.role is Role.INITIATOR
        if not first and sess.phase != _SESSION:
            raise RemoteProtocolError("a SESSION this side did not ask for (spec §15.3.1)")
        sess.settled = True
        sess.active = True
        sess.token = frame.token
        sess.timeout_ms = frame.timeout_ms
        if sess.phase == _SESSION:
            sess.phase = _EXCHANGE
        else:
            self._inbound.hold_data = False  # spec §15.2: decided; DATA on the hot path
        rx.events.append(SessionGranted(frame.token, frame.timeout_ms))

    def _on_resume(self, frame: ResumeFrame, rx: Received) -> None:
        sess = self._session
        assert sess is not None
        if sess.phase != _EXCHANGE:
            st = self._streams.get(frame.stream_id)
            if st is not None and st.start == "sending":
                rx.events.append(cold_start(st, frame))  # spec §15.10
                return
            raise RemoteProtocolError("a RESUME outside a resumption's exchange (spec §15.6)")
        sid = frame.stream_id
        if sid:
            if sid in sess.peer_resumes:
                raise RemoteProtocolError(f"a second RESUME for stream {sid} (spec §15.6)")
            peer = self.peer_settings
            assert peer is not None
            if len(sess.peer_resumes) > len(self._streams) + self.local_settings.max_streams:
                # The peer's table holds at most what ours does plus what it may open.
                raise RemoteProtocolError(
                    "more RESUME frames than streams (spec §15.7)", ErrorCode.ENHANCE_YOUR_CALM
                )
            sess.peer_resumes[sid] = frame
            return
        self._reconcile(frame, rx)

    # --- retention (spec §15.5) ----------------------------------------------------------

    def _retain_all(self) -> None:
        for st in self._streams.values():
            if st.retained is None:
                st.retained = deque()

    def _trim_retained(self, st: StreamRecord) -> None:
        """Drop what the peer reported consumed (spec §15.5)."""
        consumed = st.peer_consumed
        if st.retained is not None and consumed is not None and consumed > st.retained_base:
            self._drop_retained(st, consumed)

    def _drop_all_retained(self, st: StreamRecord) -> None:
        """The stream was reset or forgotten: nothing on it is sent again (spec §15.5)."""
        if st.retained:
            self._drop_retained(st, st.retained_base + len(st.retained))

    def _drop_retained(self, st: StreamRecord, upto: int) -> None:
        # Retention only grows by sends, so its peak is what it was just before it shrinks.
        sess = self._session
        assert sess is not None
        sess.retained_peak = max(sess.retained_peak, sess.retained_bytes)
        sess.retained_bytes -= st.drop_retained(upto)

    def _end_session(self) -> None:
        """No session, or not any more (a GOAWAY, an error, none granted; spec §15.4)."""
        sess = self._session
        if sess is None:
            return
        sess.settled = True
        sess.active = False
        sess.phase = None
        self._suspended = False
        if sess.retained_bytes > sess.retained_peak:
            sess.retained_peak = sess.retained_bytes
        sess.retained_bytes = 0
        for st in list(self._streams.values()):
            st.retained = None
            self._maybe_forget(st)
        sess.closed_waiting = []
        sess.closed_next = []
        sess.confirm_ping = None

    # --- records of closed streams (spec §15.7) ------------------------------------------

    def _note_closed(self, st: StreamRecord) -> None:
        """A session stream closed here: keep its record until a PONG confirms it."""
        sess = self._session
        assert sess is not None
        if st.reset_code is not None:
            self._drop_all_retained(st)
        sess.closed_next.append(st.id)
        if len(sess.closed_waiting) + len(sess.closed_next) > MAX_UNCONFIRMED_RECORDS:
            sess.gave_up = True  # spec §15.7: past our bound, the session cannot resume
            self._end_session()
            return
        if sess.confirm_ping is None and not self._suspended:
            self._send_confirm_ping()

    def _send_confirm_ping(self) -> None:
        """A PING after the closing frames of every stream in ``closed_next`` (spec §15.7)."""
        sess = self._session
        assert sess is not None
        sess.confirm_ping = self._queue_ping()
        sess.closed_waiting = sess.closed_next
        sess.closed_next = []

    def _queue_ping(self) -> int:
        ping_id = self._next_ping_id
        self._next_ping_id = (ping_id + 1) & MAX_PING_ID
        self._output.queue(PingFrame(ping_id))
        return ping_id

    def _token_confirmed(self) -> None:
        """The PONG of the PING sent after a SESSION: the initiator has the new token."""
        sess = self._session
        assert sess is not None
        sess.token_ping = None
        sess.prev_token = None

    def _confirmed(self) -> None:
        """The PONG of the confirming PING: the peer processed all we sent before it."""
        sess = self._session
        assert sess is not None
        sess.confirm_ping = None
        sess.prev_token = None  # spec §15.6: the peer has the new token
        for sid in sess.closed_waiting:
            st = self._streams.get(sid)
            if st is not None:
                st.confirmed = True
                self._drop_all_retained(st)
                self._maybe_forget(st)
        sess.closed_waiting = []
        if sess.closed_next:
            self._send_confirm_ping()
