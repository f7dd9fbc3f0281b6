"""FlowConnection: one transport and one sans-IO core, driven by asyncio's callbacks.

The connection is the transport's ``asyncio.Protocol`` (as aioquic's connection is its
datagram protocol): the event loop calls :meth:`FlowConnection.data_received` with every
chunk read, which feeds the core and hands the events out at once — messages to their
stream's inbox, credit to blocked senders. Nothing waits on the application there, so
CREDIT and PING are processed while nothing is being consumed (spec §9 R2), and there is
no reader task, no writer task and no timer task:

- output is written by whoever queued it (:meth:`StreamLink.flush`, one ``write`` per
  turn of the loop for many sends); the transport buffers what the socket does not
  take, and past ``MAX_SEND_BACKLOG`` it pauses the protocol, which makes ``send()`` wait
  (spec §10.7.2); a transport that takes no ``WRITE_CHUNK`` within the write allowance
  loses the connection (spec §11);
- one ``call_at`` handle follows the core's ``next_deadline()`` (keepalive, frame
  timeouts, BLOCKED repeats, tuning probes; spec §8.7, §11).

The transport side (the ``asyncio.Protocol`` methods, output, timers, the end) is
``_protocol.TransportProtocol``; sessions across lost transports are ``_resume``; this
module keeps the state, the core's events and the public verbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

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
from ._errors import ConnectionLostError, HandshakeTimeout
from ._link import StreamLink, StreamPort, Waiters
from ._protocol import TransportProtocol, transport_failure
from ._resume import Connect, Offer, SessionTransport
from ._stream import FlowStream

__all__ = ["FlowConnection", "transport_failure"]

_log = logging.getLogger("flowproto")


class FlowConnection(SessionTransport, TransportProtocol):
    """One flowproto connection over an asyncio transport. Open it with an ``open_*``
    function or :func:`serve`; the ``asyncio.Protocol`` methods are the event loop's."""

    def __init__(
        self,
        role: Role,
        settings: Settings | None = None,
        codec: CodecName | Codec = "msgpack",
        ping_timeout: float = 15.0,
        *,
        limits: Limits | None = None,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        autotune: AutoTune | None = None,
        memory_budget: MemoryBudget | None = None,
        pacing: bool = False,
        reconnect: Reconnect | None = None,
        connect: Connect | None = None,
        sessions: SessionStore[Offer] | None = None,
        resume_timeout: float = 30.0,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._core = Connection(
            role,
            settings,
            ping_timeout=ping_timeout,
            frame_timeout=frame_timeout,  # spec §11: the core times frames in progress
            limits=limits,
            autotune=autotune,
            budget=memory_budget,
            # spec §15: the initiator asks for a session when it can reconnect; the
            # acceptor grants one when it keeps a store to find sessions in.
            session=reconnect is not None if role is Role.INITIATOR else sessions is not None,
            session_timeout=resume_timeout,
        )
        self._init_session(reconnect, connect, sessions, resume_timeout)
        self._role = role
        self._link = StreamLink(self._core, loop, pacing, self._stream_changed, self._arm_timer)
        #: The asyncio transport, once the event loop connected it.
        self.transport: asyncio.Transport | None = None
        #: DEBUG logging of the lifecycle (``flowproto -v``), decided once: free when off.
        self._debug = _log.isEnabledFor(logging.DEBUG)
        self._name = ""
        self._window_log = WindowLog()
        self._write_timeout = write_timeout
        self._codec_spec = codec
        self._ports: dict[int, StreamPort] = {}
        # The accept queue is bounded by max_streams: the core refuses streams past it.
        self._accept: deque[FlowStream] = deque()
        self._accept_closed = False
        self._accept_waiters = Waiters()
        self._handshake = asyncio.Event()
        self._closed = asyncio.Event()  # connection_lost ran: the transport is closed
        self._stream_change = Waiters()
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
        self._goaway_sent = False
        self._pings: dict[int, asyncio.Future[float | None]] = {}  # ping() calls waiting
        self._rtt: float | None = None
        self._stream_limit_seconds = 0.0  # spec §14: time open_stream() waited on max_streams
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._idle_timeout: float | None = None
        self._idle: asyncio.TimerHandle | None = None
        # spec §11: the write allowance, watched while the transport holds unwritten bytes.
        self._write_watch: asyncio.TimerHandle | None = None
        self._write_mark = (0, 0)  # (progress, buffered) when the watch was armed
        self._linger = False  # the peer broke the protocol: more of its input may come
        self._discarding = False  # spec §10.2 step 3: input is read and dropped
        self._finishing = False
        self._abort_handle: asyncio.TimerHandle | None = None
        #: What the layer does with each event the core reports (``flowproto._events``).
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            MessagesReceived: self._on_messages,
            CreditGranted: self._on_credit,
            StreamOpened: self._on_stream_opened,
            StreamEnded: self._on_stream_ended,
            StreamReset: self._on_stream_reset,
            HandshakeCompleted: self._on_handshake,
            PongReceived: self._on_pong,
            GoAwayReceived: self._on_goaway,
            ConnectionClosed: self._on_closed,
            PeerBlocked: self._ignore,
            PingReceived: self._ignore,
            SessionGranted: self._on_session_granted,
            ResumeRequested: self._on_resume_requested,
            SessionResumed: self._on_resumed,
            StreamStarted: self._on_stream_started,
        }

    @property
    def peer_settings(self) -> Settings | None:
        """What the peer accepts (from its HELLO), once the handshake is done."""
        return self._core.peer_settings

    @property
    def local_settings(self) -> Settings:
        """What this side accepts (sent in our HELLO)."""
        return self._core.local_settings

    @property
    def closed(self) -> bool:
        """True once the connection has ended (closed by either side, or lost)."""
        return self._lost is not None

    @property
    def close_reason(self) -> ConnectionLostError | None:
        """Why the connection ended (the error its streams raise), or None while it runs."""
        return self._lost

    # events ---------------------------------------------------------------------------------

    def _stream_changed(self, stream_id: int, buffered: bool) -> None:
        # A stream ended, was reset or drained: forget it once closed and read out.
        if not buffered and self._core.stream_state(stream_id) is StreamState.CLOSED:
            self._ports.pop(stream_id, None)
            if not self._ports:
                self._arm_idle()
        self._stream_change.wake_all()
        self._end_if_finished()

    def _end_if_finished(self) -> None:
        # spec §10.4: after the peer's GOAWAY, once no stream is open, flush and close.
        if self._goaway is not None and self._core.finished:
            if self._lost is None:
                self._fail(self._closed_error())
            self._finish()

    def _closed_error(self) -> ConnectionLostError:
        if self._goaway is not None:
            return goaway_error(ConnectionLostError, self._goaway)
        return self._refusal or ConnectionLostError("the connection is closed")

    def _dispatch(self, events: list[Any]) -> None:
        handlers = self._handlers
        for event in events:
            handlers[type(event)](event)
        if self._debug:
            self._window_log.check(self._name, self._core)
        if self._goaway is not None:
            # After the whole batch: a RESET read with the GOAWAY still reaches its stream.
            self._end_if_finished()

    def _new_stream(self, stream_id: int, codec: CodecName | Codec | None) -> FlowStream:
        port = StreamPort(self._loop)
        self._ports[stream_id] = port
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        return FlowStream(
            self,
            self._link,
            port,
            stream_id,
            get_codec(codec if codec is not None else self._codec_spec),
        )

    def _on_messages(self, event: MessagesReceived) -> None:
        port = self._ports.get(event.stream_id)
        if port is not None:
            port.deliver(event.messages, event.nbytes)

    def _on_credit(self, event: CreditGranted) -> None:
        if event.stream_id == 0:
            for port in self._ports.values():
                port.send_waiters.wake_all()
        else:
            one = self._ports.get(event.stream_id)
            if one is not None:
                one.send_waiters.wake_all()

    def _on_stream_opened(self, event: StreamOpened) -> None:
        if self._accept_closed:
            # spec §10.4: opened after a GOAWAY; nobody will accept it.
            self._core.reset_stream(event.stream_id, ErrorCode.REFUSED_STREAM)
            self._end_if_finished()
            return
        self._accept.append(self._new_stream(event.stream_id, None))
        self._accept_waiters.wake_all()

    def _on_stream_ended(self, event: StreamEnded) -> None:
        port = self._ports.get(event.stream_id)
        if port is not None:
            port.end()
            self._stream_changed(event.stream_id, bool(port.inbox))

    def _on_stream_reset(self, event: StreamReset) -> None:
        port = self._ports.get(event.stream_id)
        if port is not None and self._lost is None:
            port.reset_by(reset_error(event, self._core), self._loop.time())
            self._stream_changed(event.stream_id, False)
        if self._debug:
            log_reset(self._name, event)

    def _on_handshake(self, event: HandshakeCompleted) -> None:
        if not self._core.session_pending:  # spec §15.2: else ready once SESSION came
            self._handshake.set()
        if self._debug:
            peer = self._core.peer_settings
            assert peer is not None
            log_handshake(self._name, peer)

    def _on_pong(self, event: PongReceived) -> None:
        # The core measured the round trip (its one RTT estimator, spec §8.9).
        self._rtt = event.rtt if event.rtt is not None else self._rtt
        future = self._pings.get(event.ping_id)
        if future is not None and event.rtt is not None and not future.done():
            future.set_result(event.rtt)

    def _on_goaway(self, event: GoAwayReceived) -> None:
        self._goaway = event
        if self._debug:
            log_goaway(self._name, event)
        if event.error_code != ErrorCode.NO_ERROR:
            self._fail(self._closed_error())  # spec §10.2: every stream ends
        self._close_accept()  # spec §10.4: the peer opens no more streams
        self._stream_change.wake_all()  # _dispatch ends the connection if nothing is open

    def _on_closed(self, event: ConnectionClosed) -> None:
        if event.clean and self._goaway is not None:
            self._fail(self._closed_error())
        else:
            self._fail(ConnectionLostError(peer_closed_reason(event, self._core)))

    def _ignore(self, event: Event) -> None:
        """PeerBlocked and PingReceived: the core already acted (spec §8.7, §5.5)."""

    def _close_accept(self) -> None:
        self._accept_closed = True
        self._accept_waiters.wake_all()

    def _fail(self, exc: ConnectionLostError) -> None:
        if self._lost is not None:
            return
        self._lost = exc
        if self._debug:
            _log.debug("%s: connection ended: %s", self._name, exc)
        now = self._loop.time()
        self._link.drain_waiters.wake_all()
        for port in list(self._ports.values()):
            port.lose(exc, now)
        for future in self._pings.values():
            if not future.done():
                future.set_result(None)
        self._handshake.set()
        self._close_accept()
        self._stream_change.wake_all()
        self._session_over()  # spec §15.4: no other transport is sought

    def _abandon(self) -> None:
        # spec §10.4: the streams still open are reset with CANCEL, GOAWAY is queued if it
        # was not yet, and the connection ends on this side.
        for port in list(self._ports.values()):
            stream = port.stream
            if stream is not None and self._core.stream_state(stream.stream_id) is not (
                StreamState.CLOSED
            ):
                stream.reset_now(ErrorCode.CANCEL, "connection closing")
        if self._core.state is not ConnectionState.CLOSED and not self._goaway_sent:
            self._goaway_sent = True
            self._core.close(ErrorCode.NO_ERROR)
        self._fail(ConnectionLostError("the connection was closed by this side", error_code=0))

    # public API ---------------------------------------------------------------------------

    async def start(self, *, handshake_timeout: float, idle_timeout: float | None = None) -> None:
        """Wait for the peer's preface and HELLO (spec §3.4); the open functions call it.

        Args:
            handshake_timeout: seconds to wait for the handshake.
            idle_timeout: if set, close with GOAWAY(TIMEOUT) after that many seconds
                without any stream (spec §11).

        Raises:
            HandshakeTimeout: no preface and HELLO within ``handshake_timeout``.
            ConnectionLostError: the connection ended before the handshake completed.
        """
        self._idle_timeout = idle_timeout
        if not self._ports:
            self._arm_idle()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._handshake.wait(), handshake_timeout)
        if self._lost is not None:
            raise self._lost
        if not self._handshake.is_set():
            message = f"no flowproto handshake from the peer within {handshake_timeout} s"
            # spec §11: a connection error TIMEOUT: GOAWAY, then close without a grace period.
            self._core.close(ErrorCode.TIMEOUT, message)
            self._fail(ConnectionLostError(message, error_code=ErrorCode.TIMEOUT))
            self._finish()
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

        Cancellation: a cancelled call opened no stream.

        Raises:
            ConnectionLostError: the connection ended, or the peer sent GOAWAY.
            StreamLimitError: ``wait=False`` and no stream may be opened now.
        """
        core = self._core
        if not core.can_open_stream:
            started = self._loop.time()
            try:
                await self._wait_for_stream_slot(wait)
            finally:
                self._stream_limit_seconds += self._loop.time() - started
        stream_id = core.open_stream(await_start=await_start)
        stream = self._new_stream(stream_id, codec)
        self._link.flush_soon()
        return stream

    async def _wait_for_stream_slot(self, wait: bool) -> None:
        core = self._core
        while not core.can_open_stream:
            if self._lost is not None:
                raise self._lost
            refusal = stream_slot_refusal(ConnectionLostError, core, self._goaway, wait=wait)
            if refusal is not None:
                raise refusal
            await self._stream_change.wait()

    async def accept_stream(self) -> FlowStream:
        """Wait for the next stream the peer opens.

        Cancellation: a cancelled call took no stream.

        Raises:
            ConnectionLostError: the connection ended (or is shutting down) first.
        """
        while not self._accept:
            if self._accept_closed:
                raise self._lost or ConnectionLostError(
                    "the connection is shutting down (GOAWAY)",
                    error_code=self._goaway.error_code if self._goaway else ErrorCode.NO_ERROR,
                )
            await self._accept_waiters.wait()
        return self._accept.popleft()

    async def ping(self) -> float:
        """Send a PING and wait for its PONG (spec §5.5); returns the round-trip time in seconds.

        Raises:
            ConnectionLostError: the connection ended first.
        """
        if self._lost is not None:
            raise self._lost
        ping_id = self._core.ping(self._loop.time())  # the core measures the round trip
        future: asyncio.Future[float | None] = self._loop.create_future()
        self._pings[ping_id] = future
        self._flush()
        try:
            rtt = await future
        finally:
            del self._pings[ping_id]
        if rtt is None:
            raise self._lost or ConnectionLostError("the connection is closed")
        return rtt

    def close_soon(self) -> None:
        """Begin a graceful shutdown without waiting: GOAWAY(NO_ERROR) (spec §10.4).

        The peer opens no more streams; open streams may finish. :meth:`aclose` waits
        for them and closes the transport.
        """
        if self._close_while_resuming():
            return  # spec §15.4, §15.6: a session resuming ends at once
        if self.transport is None:  # not connected yet: nothing to say GOAWAY on
            self._fail(ConnectionLostError("the connection was closed before it was made"))
            return
        if (
            self._lost is None
            and not self._goaway_sent
            and self._core.state is not (ConnectionState.CLOSED)
        ):
            self._goaway_sent = True
            if self._debug:
                _log.debug(
                    "%s: closing: GOAWAY NO_ERROR sent, %d streams open",
                    self._name, len(self._ports),
                )  # fmt: skip
            self._core.close(ErrorCode.NO_ERROR)
            self._close_accept()
            self._flush()

    async def aclose(self, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Graceful shutdown (spec §10.4): GOAWAY, let open streams finish, then close.

        New streams from the peer are refused at once. Streams still open after ``grace``
        seconds are reset with CANCEL. Closing twice does nothing. If cancelled, the
        transport is aborted.
        """
        core = self._core
        if self._close_while_resuming():
            await self._closed.wait()  # spec §15.4, §15.6: a session resuming ends
            return
        if self.transport is None:  # never connected (a TLS handshake that failed)
            self._fail(ConnectionLostError("the connection was closed before it was made"))
            self._closed.set()
            return
        try:
            if self._lost is None and core.state is not ConnectionState.CLOSED:
                self.close_soon()
                await self._wait_until(lambda: core.finished or self._lost is not None, grace)
                self._abandon()
            self._flush()
            # spec §10.2, §10.4: the GOAWAY is out; wait a little for the peer to close
            # first, unless it sent GOAWAY too.
            self._end_if_finished()
            await self._wait_until(self._closed.is_set, min(grace, CLOSE_LINGER))
            if not self._closed.is_set():
                self._finish()
                self._close_transport()
                await self._closed.wait()
        except BaseException:
            self.abort()
            raise

    async def wait_closed(self) -> None:
        """Wait until the connection has ended and its transport is closed (by either
        side, or lost); :attr:`close_reason` then says why."""
        if self.transport is None and self._lost is not None:
            return  # never connected
        await self._closed.wait()

    async def _wait_until(self, done: Callable[[], bool], timeout: float) -> None:
        # Wait for a stream or connection change until done(), at most `timeout` seconds.
        deadline = self._loop.time() + timeout
        while not done():
            left = deadline - self._loop.time()
            if left <= 0:
                return
            await self._stream_change.wait(left)

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of the connection's credit, buffers and traffic (spec §14)."""
        now = self._loop.time()
        blocked = self._link.seconds_blocked + sum(
            now - port.blocked_since
            for port in self._ports.values()
            if port.blocked_since is not None
        )
        return connection_statistics(
            self._core,
            self._link,
            streams=len(self._ports),
            blocked_seconds=blocked,
            rtt=self._rtt,
            stream_limit_seconds=self._stream_limit_seconds,
        )
