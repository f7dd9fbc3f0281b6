"""FlowConnection: one transport and one sans-IO core; its tasks are in ``_tasks``, its
session across lost transports in ``_resume``."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import trio

if sys.version_info < (3, 11):  # trio depends on the backport there
    pass  # type: ignore[import-not-found, unused-ignore]

from .. import (
    AutoTune,
    Codec,
    CodecName,
    Connection,
    ConnectionClosed,
    ConnectionState,
    ConnectionStatistics,
    CreditGranted,
    ErrorCode,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    Limits,
    MemoryBudget,
    MessagesReceived,
    PeerBlocked,
    PingReceived,
    PongReceived,
    Reconnect,
    ResumeRequested,
    Role,
    SessionGranted,
    SessionResumed,
    SessionStore,
    Settings,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamStarted,
    StreamState,
    get_codec,
)
from ..iolayer import (
    CLOSE_LINGER,
    DEFAULT_CLOSE_GRACE,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    WindowLog,
    connection_statistics,
    goaway_error,
    log_goaway,
    log_handshake,
    log_reset,
    peer_closed_reason,
    reset_error,
    stream_slot_refusal,
)
from ._debug import connection_name
from ._errors import ConnectionLostError, HandshakeTimeout
from ._link import StreamLink
from ._resume import SessionTransport
from ._stream import FlowStream
from ._tasks import ConnectionTasks

__all__ = ["FlowConnection"]

_log = logging.getLogger("flowproto")


class FlowConnection(SessionTransport, ConnectionTasks):
    """One flowproto connection over a Trio stream. Create it with an ``open_*`` function."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        role: Role,
        settings: Settings | None,
        codec: CodecName | Codec,
        ping_timeout: float,
        *,
        limits: Limits | None = None,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        autotune: AutoTune | None = None,
        memory_budget: MemoryBudget | None = None,
        pacing: bool = False,
        reconnect: Reconnect | None = None,
        connect: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
        sessions: SessionStore[FlowConnection] | None = None,
        resume_timeout: float = 30.0,
    ) -> None:
        self.transport = transport
        # spec §15: the initiator asks for a session when it can reconnect; the acceptor
        # grants one when it keeps a store to find sessions in.
        session = reconnect is not None if role is Role.INITIATOR else sessions is not None
        self._core = Connection(
            role,
            settings,
            ping_timeout=ping_timeout,
            frame_timeout=frame_timeout,  # spec §11: the core times frames in progress
            limits=limits,
            autotune=autotune,
            budget=memory_budget,
            session=session,
            session_timeout=resume_timeout,
        )
        self._reconnect = reconnect
        self._connect = connect
        self._sessions = sessions
        self._resume_timeout = resume_timeout
        self._no_transport = False  # spec §15.4: the transport is lost, the session kept
        self._transport_gen = 0  # which transport a write began on
        self._adoption: tuple[trio.abc.Stream, Connection, trio.Event] | None = None
        self._adopted = trio.Event()
        self._resume_request: bytes | None = None  # a fresh acceptor: the token presented
        self._handed_over: trio.Event | None = None  # set once the session is done with it
        self._transport_done = trio.Event()  # for a handed-over transport's first owner
        self._write_done = trio.lowlevel.ParkingLot()
        # spec §15.4: since when the session has had no working transport, and the waits
        # between attempts; both run on until a resumption completes.
        self._lost_since: float | None = None
        self._delays: Iterator[float] | None = None
        self._attempts = 0
        # What this connection shares with its streams (counters, backlog, wake-ups).
        self._link = StreamLink(self._core, pacing, self._stream_changed)
        if isinstance(transport, trio.SocketStream):
            self._link.socket = transport.socket  # direct writes (StreamLink.flush)
        #: DEBUG logging of the lifecycle (``flowproto -v``), decided once: free when off.
        self._debug = _log.isEnabledFor(logging.DEBUG)
        self._name = connection_name(transport, role) if self._debug else ""
        self._window_log = WindowLog()
        self._write_timeout = write_timeout
        self._codec_spec = codec
        self._streams: dict[int, FlowStream] = {}
        self._accept_send, self._accept_receive = trio.open_memory_channel[FlowStream](math.inf)
        # The accept queue is bounded by max_streams: the core refuses streams past it.
        self._handshake = trio.Event()
        self._closed = trio.Event()
        self._stream_change = trio.lowlevel.ParkingLot()
        self._lost: ConnectionLostError | None = None
        self._refusal: ConnectionLostError | None = None
        if memory_budget is not None and self._core.state is ConnectionState.CLOSED:
            # spec §8.9 B2, §10.1: the core refused the connection as it was made (not even
            # the floor window fits) and queued GOAWAY(OVERLOADED): say so, not just "closed".
            self._refusal = ConnectionLostError(
                f"refused: the memory budget of {memory_budget.capacity} bytes is exhausted "
                "(spec §8.9); sent GOAWAY(OVERLOADED)",
                error_code=ErrorCode.OVERLOADED,
            )
        self._goaway: GoAwayReceived | None = None
        self._pings: dict[int, trio.Event] = {}  # ping() calls waiting for their PONG
        self._ping_rtts: dict[int, float] = {}  # their round trips, for them to take
        self._rtt: float | None = None
        self._stream_limit_seconds = 0.0  # spec §14: time open_stream() waited on max_streams
        self._writer_done = False
        self._reader_scope = trio.CancelScope()  # cancelled to stop reading and close

    @property
    def peer_settings(self) -> Settings | None:
        """What the peer accepts (from its HELLO), once the handshake is done."""
        return self._core.peer_settings

    @property
    def local_settings(self) -> Settings:
        """What this side accepts (sent in our HELLO)."""
        return self._core.local_settings

    @property
    def resumable(self) -> bool:
        """True while the connection has a session that a lost transport would not end
        (spec §15.4): the peer granted one, and no GOAWAY went either way."""
        return self._lost is None and self._core.resumable

    @property
    def closed(self) -> bool:
        """True once the connection has ended (closed by either side, or lost)."""
        return self._lost is not None

    @property
    def close_reason(self) -> ConnectionLostError | None:
        """Why the connection ended (the error its streams raise), or None while it runs."""
        return self._lost

    def _wake_writer(self) -> None:
        self._link.wake_writer()

    def _wake_timer(self) -> None:
        self._link.timer_lot.unpark_all()

    def _stream_changed(self, stream_id: int, buffered: bool) -> None:
        # A stream ended, was reset or drained: forget it once closed and read out.
        if not buffered and self._core.stream_state(stream_id) is StreamState.CLOSED:
            self._streams.pop(stream_id, None)
        self._stream_change.unpark_all()
        self._end_if_finished()

    def _end_if_finished(self) -> None:
        # spec §10.4: after the peer's GOAWAY, once no stream is open, flush and close.
        if self._goaway is not None and self._core.finished:
            if self._lost is None:
                self._fail(self._closed_error())
            self._reader_scope.cancel()

    # tasks --------------------------------------------------------------------------------

    async def start(
        self,
        nursery: trio.Nursery,
        *,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = None,
    ) -> None:
        """Run this connection's tasks in ``nursery`` and wait for the peer's HELLO.

        The one way to bring a connection up (``open_flow_connection`` uses it): the reader,
        writer and timer start, an idle watch if ``idle_timeout`` is set (spec §11), and
        this returns once the handshake is complete (spec §3.4).

        Raises:
            HandshakeTimeout: no preface and HELLO within ``handshake_timeout``.
            ConnectionLostError: the connection ended before the handshake completed.
        """
        await nursery.start(self._run)
        if idle_timeout is not None:
            nursery.start_soon(self._idle_watch, idle_timeout)
        await self._wait_handshake(handshake_timeout)

    def _closed_error(self) -> ConnectionLostError:
        if self._goaway is not None:
            return goaway_error(ConnectionLostError, self._goaway)
        return self._refusal or ConnectionLostError("the connection is closed")

    def _dispatch(self, events: list[Any]) -> None:
        handlers = _EVENT_HANDLERS
        for event in events:
            handlers[type(event)](self, event)
        if self._debug:
            self._window_log.check(self._name, self._core)
        if self._goaway is not None:
            # After the whole batch: a RESET read with the GOAWAY still reaches its stream.
            self._end_if_finished()

    # --- what the core reports, one handler per event type (see _EVENT_HANDLERS) ------------

    def _on_messages(self, event: MessagesReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._on_messages(event.messages, event.nbytes)

    def _on_credit(self, event: CreditGranted) -> None:
        if event.stream_id == 0:
            for s in self._streams.values():
                s._send_lot.unpark_all()
        else:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._send_lot.unpark_all()

    def _on_stream_opened(self, event: StreamOpened) -> None:
        stream = FlowStream(self, self._link, event.stream_id, get_codec(self._codec_spec))
        self._streams[event.stream_id] = stream
        try:
            self._accept_send.send_nowait(stream)
        except trio.ClosedResourceError:
            # spec §10.4: opened after the peer's own GOAWAY; nobody will accept it.
            del self._streams[event.stream_id]
            self._core.reset_stream(event.stream_id, ErrorCode.REFUSED_STREAM)
            self._end_if_finished()

    def _on_stream_ended(self, event: StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._on_end()

    def _on_stream_reset(self, event: StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None and self._lost is None:
            stream._on_reset(reset_error(event, self._core))
        if self._debug:
            log_reset(self._name, event)

    def _on_handshake(self, event: HandshakeCompleted) -> None:
        self._handshake.set()
        if self._debug:
            peer = self._core.peer_settings
            assert peer is not None
            log_handshake(self._name, peer)

    def _on_pong(self, event: PongReceived) -> None:
        # The core measured the round trip (its one RTT estimator, spec §8.9).
        self._rtt = event.rtt if event.rtt is not None else self._rtt
        done = self._pings.get(event.ping_id)
        if done is not None and event.rtt is not None:
            self._ping_rtts[event.ping_id] = event.rtt
            done.set()

    def _on_goaway(self, event: GoAwayReceived) -> None:
        self._goaway = event
        if self._debug:
            log_goaway(self._name, event)
        if event.error_code != ErrorCode.NO_ERROR:
            self._fail(self._closed_error())  # spec §10.2: every stream ends
        self._accept_send.close()  # spec §10.4: the peer opens no more streams
        self._stream_change.unpark_all()  # _dispatch ends the connection if nothing is open

    def _on_closed(self, event: ConnectionClosed) -> None:
        if event.clean and self._goaway is not None:
            self._fail(self._closed_error())
        else:
            self._fail(ConnectionLostError(peer_closed_reason(event, self._core)))

    def _ignore(self, event: Event) -> None:
        """PeerBlocked and PingReceived: the core already acted (spec §8.7, §5.5)."""

    def _fail(self, exc: ConnectionLostError) -> None:
        if self._lost is not None:
            return
        self._lost = exc
        if self._debug:
            _log.debug("%s: connection ended: %s", self._name, exc)
        self._link.backlog_lot.unpark_all()
        for stream in list(self._streams.values()):
            stream._on_lost(exc)
        for event in self._pings.values():
            event.set()
        self._handshake.set()
        self._accept_send.close()
        self._stream_change.unpark_all()
        self._wake_writer()

    # public API ---------------------------------------------------------------------------

    async def _wait_handshake(self, timeout: float) -> None:
        with trio.move_on_after(timeout) as scope:
            await self._handshake.wait()
            while self._core.session_pending and self._lost is None:
                # spec §15.2: the acceptor offered sessions; its SESSION comes next, and
                # the connection is ready once it has (streams may then await_start).
                await self._stream_change.park()
        if self._lost is not None:
            raise self._lost
        if scope.cancelled_caught:
            message = f"no flowproto handshake from the peer within {timeout} s"
            # spec §11: a connection error TIMEOUT: GOAWAY, then close without a grace period.
            self._core.close(ErrorCode.TIMEOUT, message)
            self._fail(ConnectionLostError(message, error_code=ErrorCode.TIMEOUT))
            self._reader_scope.cancel()
            raise HandshakeTimeout(message)

    async def open_stream(
        self,
        *,
        codec: CodecName | Codec | None = None,
        wait: bool = True,
        await_start: bool = False,
    ) -> FlowStream:
        """Open a stream; waits while the peer's max_streams are all in use (spec §6.4).

        The time waited is the statistic ``blocked_on_stream_limit_seconds``.

        Args:
            codec: this stream's codec; defaults to the connection's.
            wait: ``False`` to fail at once rather than wait for a stream to close.
            await_start: the peer says where the stream starts (spec §15.10, cold
                resume): ``await stream.started()`` gives the position (what it already
                holds) and the stream sends what follows. Needs a session
                (``reconnect``) the peer granted.

        Raises:
            ConnectionLostError: the connection ended, or the peer sent GOAWAY.
            StreamLimitError: ``wait=False`` and no stream may be opened now.
        """
        await trio.lowlevel.checkpoint()
        core = self._core
        if not core.can_open_stream:
            started = trio.current_time()
            try:
                await self._wait_for_stream_slot(wait)
            finally:
                self._stream_limit_seconds += trio.current_time() - started
        stream_id = core.open_stream(await_start=await_start)
        stream = FlowStream(
            self,
            self._link,
            stream_id,
            get_codec(codec if codec is not None else self._codec_spec),
        )
        self._streams[stream_id] = stream
        self._wake_writer()
        return stream

    async def _wait_for_stream_slot(self, wait: bool) -> None:
        core = self._core
        while not core.can_open_stream:
            if self._lost is not None:
                raise self._lost
            refusal = stream_slot_refusal(ConnectionLostError, core, self._goaway, wait=wait)
            if refusal is not None:
                raise refusal
            await self._stream_change.park()

    async def accept_stream(self) -> FlowStream:
        """Wait for the next stream the peer opens.

        Raises:
            ConnectionLostError: the connection ended (or is shutting down) first.
        """
        try:
            return await self._accept_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._lost or ConnectionLostError("the connection is closed") from None

    async def ping(self) -> float:
        """Send a PING and wait for its PONG (spec §5.5); returns the round-trip time in seconds."""
        if self._lost is not None:
            raise self._lost
        ping_id = self._core.ping(trio.current_time())  # the core measures the round trip
        done = trio.Event()
        self._pings[ping_id] = done
        self._wake_writer()
        try:
            await done.wait()
        finally:
            del self._pings[ping_id]
            rtt = self._ping_rtts.pop(ping_id, None)
        if self._lost is not None:
            raise self._lost
        assert rtt is not None
        return rtt

    async def aclose(self, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Graceful shutdown (spec §10.4): GOAWAY, let open streams finish, then close.

        New streams from the peer are refused at once. Streams still open after ``grace``
        seconds are reset with CANCEL. Closing twice does nothing.
        """
        core = self._core
        if self._lost is None and self._no_transport:
            # spec §15.4: between transports there is nobody to say GOAWAY to; closing
            # ends the session here at once (no reconnecting until the deadline).
            core.close(ErrorCode.NO_ERROR)  # a GOAWAY ends the session (§15.4)
            self._said_goaway = True
            self._fail(ConnectionLostError("the connection was closed by this side", error_code=0))
        if self._lost is None and core.state is not ConnectionState.CLOSED:
            if self._debug:
                _log.debug(
                    "%s: closing: GOAWAY NO_ERROR sent, %d streams get %g s to finish",
                    self._name, len(self._streams), grace,
                )  # fmt: skip
            core.close(ErrorCode.NO_ERROR)
            self._said_goaway = True
            self._accept_send.close()
            self._wake_writer()
            with trio.move_on_after(grace):
                while not core.finished and self._lost is None:
                    await self._stream_change.park()
            self._abandon()
        self._writer_done = True
        self._wake_writer()
        with trio.move_on_after(grace):
            await self._flushed()
        # spec §10.2, §10.4: the GOAWAY is out; wait a little for the peer to close first,
        # unless it sent GOAWAY too.
        self._end_if_finished()
        with trio.move_on_after(min(grace, CLOSE_LINGER)):
            await self._closed.wait()
        if not self._closed.is_set():
            self._nursery.cancel_scope.cancel()
            await self._closed.wait()

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of the connection's credit, buffers and traffic (spec §14)."""
        now = trio.current_time()
        blocked = self._link.seconds_blocked + sum(
            now - s._blocked_since for s in self._streams.values() if s._blocked_since is not None
        )
        return connection_statistics(
            self._core,
            self._link,
            streams=len(self._streams),
            blocked_seconds=blocked,
            rtt=self._rtt,
            stream_limit_seconds=self._stream_limit_seconds,
        )


#: What the layer does with each event the core reports (``flowproto._events``).
_EVENT_HANDLERS: Final[dict[type[Event], Callable[[FlowConnection, Any], None]]] = {
    MessagesReceived: FlowConnection._on_messages,
    CreditGranted: FlowConnection._on_credit,
    StreamOpened: FlowConnection._on_stream_opened,
    StreamEnded: FlowConnection._on_stream_ended,
    StreamReset: FlowConnection._on_stream_reset,
    HandshakeCompleted: FlowConnection._on_handshake,
    PongReceived: FlowConnection._on_pong,
    GoAwayReceived: FlowConnection._on_goaway,
    ConnectionClosed: FlowConnection._on_closed,
    PeerBlocked: FlowConnection._ignore,
    PingReceived: FlowConnection._ignore,
    SessionGranted: FlowConnection._on_session_granted,
    ResumeRequested: FlowConnection._on_resume_requested,
    SessionResumed: FlowConnection._on_resumed,
    StreamStarted: FlowConnection._on_stream_started,
}
