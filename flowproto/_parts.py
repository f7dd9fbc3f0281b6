"""The state a connection's parts share, declared once (the parts are mixins of Connection).

:class:`~flowproto._connection.Connection` is assembled from small classes, each owning
one concept: :class:`~flowproto._queries.ConnectionQueries` (what the application may
read), :class:`~flowproto._sending.DataSending` (the send verbs),
:class:`~flowproto._receiving.DataReceiving` (DATA off the hot path),
:class:`~flowproto._releasing.CreditReturn` (release and the CREDIT it queues),
:class:`~flowproto._control.ControlReceiving` (control frames, by table),
:class:`~flowproto._timers.ConnectionTimers` (keepalive, BLOCKED repeats, tuning) and
:class:`~flowproto._session.SessionResumption` (sessions, spec §15; its reconciling,
:class:`~flowproto._reconcile.SessionReconciling`, is its base). The
objects they share (stream table, credit, input walk, output queue, budgets) are created
in ``Connection.__init__``; this class only declares them, and the verbs the parts call
on each other, so each part type-checks alone. Nothing here runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._autotune import AutoTune, MemoryBudget, RttEstimator, WindowReason
    from ._credit import ReceiveWindow, SendCredit
    from ._errors import ErrorCode, RemoteProtocolError
    from ._events import Event
    from ._frames import Frame, HelloFrame, Settings
    from ._inbound import Inbound, Received
    from ._limits import GlitchBudget, Limits
    from ._outbound import Outbound, _Blocked
    from ._session import SessionState
    from ._state import ConnectionInput, ConnectionState, StreamInput, StreamState
    from ._streams import Role, StreamRecord, StreamTable

__all__ = ["ConnectionParts"]


class ConnectionParts:
    """Declarations only: the attributes and cross-part verbs of a connection."""

    # what the application chose
    role: Role
    local_settings: Settings
    autotune: AutoTune | None
    budget: MemoryBudget | None
    limits: Limits
    ping_timeout: float
    frame_timeout: float
    _frame_started: float | None
    blocked_interval: float
    # what the peer said, and where the connection is
    peer_settings: Settings | None
    state: ConnectionState
    # the rooms
    _table: StreamTable
    _streams: dict[int, StreamRecord]
    _conn_send: SendCredit
    _conn_recv: ReceiveWindow
    _inbound: Inbound
    _output: Outbound
    _out: list[bytes | memoryview]  # the Outbound's list, appended to on the send hot path
    _blocked: dict[int, _Blocked]  # the Outbound's BLOCKED notes
    _glitch_budget: GlitchBudget
    _budget_demand: int
    # PING and keepalive (spec §5.5, §11)
    _next_ping_id: int
    _pings: set[int]
    _keepalive_ping: int | None
    _keepalive_sent_at: float
    _last_rx: float
    _goaways_received: int
    # round trips and the connection window (spec §8.9)
    rtt: RttEstimator
    _ping_times: dict[int, float]
    _clock: float
    _probe: int | None
    _next_probe: float
    _conn_next_tune: float
    _rtt_floor: float
    _conn_reason: WindowReason
    _conn_changes: int
    _consuming: bool
    # sessions (spec §15)
    _session: SessionState | None
    _suspended: bool

    if TYPE_CHECKING:
        # Verbs of Connection and of the parts that other parts call.
        def ping(self, now: float) -> int: ...
        def close(
            self, error_code: ErrorCode = ..., reason: str = "", *, retry_after_ms: int | None = ...
        ) -> None: ...
        def _move(self, event: ConnectionInput) -> None: ...
        def _fail(self, exc: RemoteProtocolError) -> None: ...
        def _new_stream(self, stream_id: int) -> StreamRecord: ...
        def _advance(self, st: StreamRecord, event: StreamInput, *, local: bool) -> None: ...
        def _discard(self, st: StreamRecord) -> None: ...
        def _maybe_forget(self, st: StreamRecord) -> None: ...
        def _final_report(self, st: StreamRecord) -> None: ...
        def _update_connection_credit(self) -> None: ...
        def stream_state(self, stream_id: int) -> StreamState: ...
        def _glitch(self, what: str) -> None: ...
        def _stream_for_frame(
            self, sid: int, rx: Received, *, await_start: bool = ...
        ) -> StreamRecord | None: ...
        def _receive_data_frame(self, sid: int, flags: int, body: bytes, rx: Received) -> None: ...
        def _check_data_header(
            self, sid: int, length: int, flags: int, st: StreamRecord | None, rx: Received
        ) -> None: ...
        def _receive_control(self, frame: Frame, rx: Received) -> None: ...
        def _on_eof(self) -> list[Event]: ...
        def _note_receipt(self, now: float) -> None: ...
        def _tune(self, now: float) -> None: ...
        def _feedback(self, st: StreamRecord) -> tuple[int | None, int | None]: ...
        def leave_budget(self) -> None: ...
        def receive_data(self, data: bytes, now: float) -> list[Event]: ...
        def transport_lost(self) -> bool: ...
        def data_to_send(self) -> bytes: ...
        def _open_peer_stream(
            self, sid: int, rx: Received, *, await_start: bool = ...
        ) -> StreamRecord | None: ...
        def _note_closed(self, st: StreamRecord) -> None: ...
        def _drop_all_retained(self, st: StreamRecord) -> None: ...
        def _trim_retained(self, st: StreamRecord) -> None: ...
        def _send_confirm_ping(self) -> None: ...
        def _end_session(self) -> None: ...
        def _session_hello(self, frame: HelloFrame, rx: Received) -> bool: ...
        def _session_gate(self, frame: Frame) -> None: ...
        def _confirmed(self) -> None: ...
        def _token_confirmed(self) -> None: ...
