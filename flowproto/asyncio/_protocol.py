"""The asyncio layer's transport side of a connection, a mixin of :class:`FlowConnection`.

The connection is the transport's ``asyncio.Protocol``: the event loop calls
:meth:`data_received` with every chunk read, which feeds the core and dispatches its
events at once; :meth:`eof_received` and :meth:`connection_lost` end it or, for a session,
lose only the transport (spec §15.4). Output is written by whoever queued it
(:meth:`_flush`); one ``call_at`` handle follows the core's ``next_deadline()`` (spec §8.7,
§11); a transport that takes no ``WRITE_CHUNK`` within the write allowance loses the
connection (spec §11); :meth:`_finish` closes after the last words (spec §10.2); an idle
watch closes a connection without streams (spec §11).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from .. import (
    MIN_FRAME_RATE,
    Connection,
    ConnectionState,
    ErrorCode,
    PeerTimeout,
    RemoteProtocolError,
    Role,
)
from ..iolayer import CLOSE_LINGER, MAX_SEND_BACKLOG, WRITE_CHUNK, connection_name, tls_reason
from ._admission import room_freed
from ._errors import ConnectionLostError
from ._link import StreamLink, StreamPort, Waiters

__all__ = ["TransportProtocol", "transport_failure"]


class TransportProtocol(asyncio.Protocol):
    """The event loop's side of a connection: reading, writing, timers and the end."""

    # What FlowConnection sets up (declared here so that this part type-checks alone).
    transport: asyncio.Transport | None
    _loop: asyncio.AbstractEventLoop
    _core: Connection
    _link: StreamLink
    _role: Role
    _debug: bool
    _name: str
    _ports: dict[int, StreamPort]
    _lost: ConnectionLostError | None
    _closed: asyncio.Event
    _stream_change: Waiters
    _write_timeout: float
    _timer: asyncio.TimerHandle | None
    _timer_at: float | None
    _idle_timeout: float | None
    _idle: asyncio.TimerHandle | None
    _write_watch: asyncio.TimerHandle | None
    _write_mark: tuple[int, int]
    _linger: bool
    _discarding: bool
    _finishing: bool
    _abort_handle: asyncio.TimerHandle | None

    if TYPE_CHECKING:

        def _fail(self, exc: ConnectionLostError) -> None: ...
        def _dispatch(self, events: list[Any]) -> None: ...
        def _closed_error(self) -> ConnectionLostError: ...
        def _transport_gone(self, exc: BaseException | None) -> bool: ...

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The event loop connected the transport: send the preface and HELLO (spec §3)."""
        self.transport = cast(asyncio.Transport, transport)
        self._link.transport = self.transport
        # spec §10.7.2: past this much unwritten output, send() waits (pause_writing).
        self.transport.set_write_buffer_limits(high=MAX_SEND_BACKLOG)
        if self._debug:
            self._name = _connection_name(self.transport, self._role)
        self._flush()
        if self._core.state is ConnectionState.CLOSED:  # refused by the memory budget
            self._fail(self._closed_error())
            self._finish()

    def data_received(self, data: bytes) -> None:
        """Feed a chunk to the core and hand out what it reports."""
        if self._discarding:
            return  # spec §10.2 step 3
        core = self._core
        try:
            events = core.receive_data(data, self._loop.time())
        except RemoteProtocolError as exc:
            self._fail(
                ConnectionLostError(f"peer broke the protocol: {exc}", error_code=exc.error_code)
            )
            self._linger = True
            self._finish()
            return
        link = self._link
        link.wrote_this_turn = False  # the loop ran: a task's next send writes at once
        if events:
            self._dispatch(events)
        link.flush()  # replies (CREDIT, PONG) go out now; the timer follows the deadline
        if core.state is ConnectionState.CLOSED:
            if self._lost is None:
                self._fail(self._closed_error())
            self._finish()

    def eof_received(self) -> bool:
        """The peer ended its side: the core decides whether that was clean (spec §10.6)."""
        if self._transport_gone(None):
            return False  # spec §15.4: without GOAWAY, a session's transport is lost
        if not self._discarding:
            self._dispatch(self._core.receive_data(b"", self._loop.time()))
        if self._lost is None:
            self._fail(self._closed_error())
        self._flush()
        return False  # the transport closes (after writing what it holds)

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is closed: everything waiting on the connection ends."""
        if self._transport_gone(exc):
            return  # spec §15.4: the session is kept, and another transport sought
        if self._lost is None:
            if exc is not None:
                self._fail(transport_failure(exc))
            else:
                self._fail(self._closed_error())
        if self._core.state is not ConnectionState.CLOSED:
            # The core learns the transport ended (spec §10.6): it is CLOSED, its timers stop.
            self._dispatch(self._core.receive_data(b"", self._loop.time()))
        for handle in (self._timer, self._idle, self._write_watch, self._abort_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._idle = self._write_watch = self._abort_handle = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # The peer closed first: Python 3.10's TLS transport is left open otherwise
            # (a ResourceWarning when it is collected); closing a closed one does nothing.
            transport.close()
        budget = self._core.budget
        self._core.leave_budget()  # spec §8.9 B1: nothing more arrives
        room_freed(budget)  # spec §8.9 B2: its room may admit a waiting newcomer
        self._link.paused = False
        self._link.drain_waiters.wake_all()
        self._closed.set()
        self._stream_change.wake_all()

    def pause_writing(self) -> None:
        """The transport holds more than ``MAX_SEND_BACKLOG`` bytes: senders wait."""
        self._link.paused = True

    def resume_writing(self) -> None:
        """The transport drained below its low-water mark: senders go on."""
        self._link.paused = False
        self._link.drain_waiters.wake_all()

    # output, timers, the end --------------------------------------------------------------

    def _flush(self) -> None:
        self._link.flush()

    def _arm_timer(self, wrote: bool = False) -> None:
        # After each flush: the write watch, if the write left bytes in the transport
        # (without a write they only go down), and the core's next deadline (spec §8.7,
        # §11). A closed transport takes no write, so ``wrote`` is False then.
        transport = self.transport
        if (
            wrote
            and transport is not None
            and self._write_watch is None
            and transport.get_write_buffer_size()
        ):
            self._watch_writes()
        deadline = self._core.next_deadline()
        timer_at = self._timer_at
        if timer_at is not None and (deadline is None or timer_at <= deadline):
            # Armed no later than needed: a timer that fires early finds nothing due and
            # re-arms (_on_timer flushes), so a deadline that moves later each round trip
            # (keepalive follows every frame received) costs no cancel and no call_at.
            return
        if self._closed.is_set():
            return  # the transport is gone: nothing is timed any more
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = None
        self._timer_at = None
        # call_at may fire a clock resolution early: the deadline is reached.
        now = max(self._loop.time(), deadline or 0.0)
        try:
            self._core.handle_timeout(now)
        except PeerTimeout as exc:
            if self._transport_gone(exc):
                return  # spec §15.4: the session outlives a dead transport
            # spec §11, §10.2: the core queued GOAWAY(TIMEOUT); flush it, then close.
            self._fail(ConnectionLostError(str(exc), error_code=exc.error_code))
            self._finish()
            return
        self._flush()

    def _watch_writes(self) -> None:
        # spec §11 (1.1): each WRITE_CHUNK of what the transport holds must be taken within
        # write_timeout + its size / MIN_FRAME_RATE; progress is what the socket took.
        transport = self.transport
        assert transport is not None
        buffered = transport.get_write_buffer_size()
        self._write_mark = (self._link.written - buffered, buffered)
        chunk = min(buffered, WRITE_CHUNK)
        self._write_watch = self._loop.call_later(
            self._write_timeout + chunk / MIN_FRAME_RATE, self._check_writes
        )

    def _check_writes(self) -> None:
        self._write_watch = None
        transport = self.transport
        if transport is None or (transport.is_closing() and self._lost is not None):
            return
        buffered = transport.get_write_buffer_size()
        if not buffered:
            return
        progress, before = self._write_mark
        if self._link.written - buffered - progress >= min(before, WRITE_CHUNK):
            self._watch_writes()
            return
        if self._transport_gone(None):
            return  # spec §15.4: a write timeout loses a session's transport
        # spec §11, §10.7.2: the peer stopped reading; half a frame may be out, so nothing
        # more can be written (not even GOAWAY).
        self._fail(
            ConnectionLostError(
                f"the peer accepted no data for {self._write_timeout} s (write timeout, spec §11)",
                error_code=ErrorCode.TIMEOUT,
            )
        )
        transport.abort()

    def _finish(self) -> None:
        """The connection is over: write what is queued (GOAWAY), then close the transport.

        After the peer broke the protocol, spec §10.2 step 3: end our side and read and
        discard the peer's input for ``CLOSE_LINGER``, so that closing with unread input
        (a TCP reset) does not destroy the GOAWAY before the peer reads it.
        """
        self._flush()
        transport = self.transport
        if transport is None or self._finishing:
            return
        self._finishing = True
        if self._linger:
            self._discarding = True
            if transport.can_write_eof():
                transport.write_eof()
            self._abort_handle = self._loop.call_later(CLOSE_LINGER, self._close_transport)
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.close()  # writes what it holds first
        # A peer that takes nothing more would keep it open: abort after the allowance.
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        self._abort_handle = self._loop.call_later(
            CLOSE_LINGER + self._write_timeout, transport.abort
        )

    def abort(self) -> None:
        """Close the transport at once, writing nothing more (no GOAWAY)."""
        if self._lost is None:
            self._fail(ConnectionLostError("the connection was aborted by this side"))
        if self.transport is not None:
            self.transport.abort()

    # idle timeout -------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        timeout = self._idle_timeout
        if timeout is not None and self._idle is None and self._lost is None:
            self._idle = self._loop.call_later(timeout, self._on_idle)

    def _on_idle(self) -> None:
        # spec §11: a connection with no stream for `timeout` seconds is closed.
        self._idle = None
        if self._lost is not None or self._ports:
            return
        if self._core.stream_ids:
            self._arm_idle()
            return
        message = f"no stream for {self._idle_timeout} s (idle timeout, spec §11)"
        self._core.close(ErrorCode.TIMEOUT, message)
        self._fail(ConnectionLostError(message, error_code=ErrorCode.TIMEOUT))
        self._finish()


def transport_failure(exc: BaseException) -> ConnectionLostError:
    """The error for a transport that failed: its reason in words, TLS errors above all;
    the original is the ``__cause__``."""
    what = tls_reason(exc) or str(exc) or type(exc).__name__
    lost = ConnectionLostError(f"transport failed: {what}")
    lost.__cause__ = exc
    return lost


def _connection_name(transport: asyncio.BaseTransport, role: Role) -> str:
    """How the debug log names a connection: its peer's address where there is one."""
    peer = transport.get_extra_info("peername")
    return connection_name(peer, role, type(transport).__name__)
