"""The Trio layer's connection tasks, a mixin of :class:`FlowConnection`.

One reader task feeds the core what the transport delivers and dispatches the events
(:meth:`_reader`); one writer task drains ``data_to_send()`` into the transport, vectored on
a plain socket, and turns a write that makes no progress into the write timeout
(:meth:`_writer`, spec §11); a timer task calls the core's ``handle_timeout`` at its
``next_deadline()`` (keepalive, frame timeout); an optional idle watch closes a connection
without streams (spec §11). :meth:`_run` runs them in the connection's nursery, asks for a
new transport when a session's is lost (spec §15.4), and says the last words of a
connection cancelled from outside (spec §10.4).
"""

from __future__ import annotations

import math
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import trio

from .. import (
    Connection,
    ConnectionState,
    ErrorCode,
    PeerTimeout,
    RemoteProtocolError,
    SessionStore,
    StreamState,
)
from ..iolayer import CLOSE_LINGER, tls_reason
from ._admission import room_freed
from ._constants import READ_SIZE
from ._errors import ConnectionLostError
from ._link import MAX_WRITE_BUFFERS, StreamLink
from ._write import write_all, write_socket

if TYPE_CHECKING:
    from ._connection import FlowConnection
    from ._stream import FlowStream

__all__ = ["ConnectionTasks"]


class ConnectionTasks:
    """The reader, writer, timer and idle watch of a connection, and how they end."""

    # What FlowConnection sets up (declared here so that this part type-checks alone).
    transport: trio.abc.Stream
    _core: Connection
    _link: StreamLink
    _streams: dict[int, FlowStream]
    _lost: ConnectionLostError | None
    _nursery: trio.Nursery
    _reader_scope: trio.CancelScope
    _stream_change: trio.lowlevel.ParkingLot
    _write_done: trio.lowlevel.ParkingLot
    _write_timeout: float
    _writer_done: bool
    _sessions: SessionStore[FlowConnection] | None
    _no_transport: bool
    _transport_gen: int
    _resume_request: bytes | None
    _handed_over: trio.Event | None
    _transport_done: trio.Event
    _closed: trio.Event

    if TYPE_CHECKING:

        def _fail(self, exc: ConnectionLostError) -> None: ...
        def _dispatch(self, events: list[Any]) -> None: ...
        def _closed_error(self) -> ConnectionLostError: ...
        def _wake_writer(self) -> None: ...
        def _wake_timer(self) -> None: ...
        def _transport_gone(self, exc: BaseException | None) -> bool: ...
        async def _regain_transport(self) -> bool: ...
        async def _hand_over(self, token: bytes) -> None: ...

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._timer)
                task_status.started()
                while True:
                    with self._reader_scope:
                        await self._reader()
                    # spec §15.4: a lost transport of a session: get another, read on.
                    if not self._no_transport or self._lost is not None:
                        break
                    if not await self._regain_transport():
                        break
                    self._reader_scope = trio.CancelScope()
                # The reader ended: let the writer flush what is queued (GOAWAY), then stop.
                self._writer_done = True
                self._wake_writer()
                nursery.cancel_scope.deadline = trio.current_time() + 5.0
                await self._flushed()
                if self._linger:
                    await self._discard_input()
                nursery.cancel_scope.cancel()
        finally:
            budget = self._core.budget
            self._core.leave_budget()  # spec §8.9 B1: nothing more arrives
            room_freed(budget)  # spec §8.9 B2: its room may admit a waiting newcomer
            if self._sessions is not None:
                self._sessions.discard(self._core)
            self._transport_done.set()
            with trio.CancelScope(shield=True):
                if self._handed_over is not None:
                    # The transport now carries the session it resumed; its server task
                    # closes it when this returns, so wait until the session is done.
                    await self._handed_over.wait()
                else:
                    await self._last_words()
                self._closed.set()
                await trio.aclose_forcefully(self.transport)

    async def _last_words(self) -> None:
        # The connection's tasks were cancelled from outside (a cancelled block cancels
        # them with it), or aclose ran out of grace while they were: say GOAWAY and reset
        # the open streams (spec §10.4), then write what the writer left, within
        # CLOSE_LINGER. Not after a write was cut off (half a frame may be out) or the
        # transport failed; after a normal end there is nothing left to write.
        if self._lost is None:
            self._abandon()
        if self._mid_write:
            return
        data = self._link.take()
        if data:
            with (
                trio.move_on_after(CLOSE_LINGER),
                suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await self.transport.send_all(data[0])

    def _abandon(self) -> None:
        # spec §10.4: the streams still open are reset with CANCEL, GOAWAY is queued if it
        # was not yet, and the connection ends on this side.
        for stream in list(self._streams.values()):
            if self._core.stream_state(stream.stream_id) is not StreamState.CLOSED:
                stream.reset_now(ErrorCode.CANCEL, "connection closing")
        if self._core.state is not ConnectionState.CLOSED and not self._said_goaway:
            self._core.close(ErrorCode.NO_ERROR)  # one GOAWAY: a repeat is a glitch (§10.7.1)
        self._fail(ConnectionLostError("the connection was closed by this side", error_code=0))

    async def _flushed(self) -> None:
        while not self._writer_exited:
            await self._stream_change.park()

    async def _discard_input(self) -> None:
        # spec §10.2 step 3: after our error GOAWAY, end our side and read and discard the
        # peer's input for a while, so that closing with unread input (a TCP reset) does
        # not destroy the GOAWAY before the peer reads it.
        with trio.move_on_after(CLOSE_LINGER):
            try:
                if isinstance(self.transport, trio.abc.HalfCloseableStream):
                    await self.transport.send_eof()
                while await self.transport.receive_some(READ_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    _linger = False  # the peer broke the protocol: more of its input may be on the way
    _said_goaway = False  # aclose() queued our graceful GOAWAY (spec §10.4)

    _writer_exited = False
    _mid_write = False  # the writer is (or was cut off) in the middle of a write

    async def _reader(self) -> None:
        core = self._core
        try:
            while True:
                try:
                    # The timer enforces the frame timeout (the core's next_deadline): a
                    # cancel scope around each read would cost about as much as parsing it.
                    generation = self._transport_gen
                    data = await self.transport.receive_some(READ_SIZE)
                    if self._no_transport or generation != self._transport_gen:
                        # spec §15.4: the writer found the transport dead while this read
                        # completed; what it read belongs to the lost transport.
                        return
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    if self._transport_gone(exc):
                        return  # spec §15.4: the session is kept; _run gets a transport
                    self._fail(_transport_failure(exc))
                    # Nothing can be written either (a writer may be stuck in a failed TLS
                    # handshake): stop now rather than wait to flush.
                    self._nursery.cancel_scope.cancel()
                    return
                if not data and self._transport_gone(None):
                    return  # EOF without GOAWAY: lost, and the session is kept (§15.4)
                try:
                    events = core.receive_data(bytes(data), trio.current_time())
                except RemoteProtocolError as exc:
                    self._fail(
                        ConnectionLostError(
                            f"peer broke the protocol: {exc}", error_code=exc.error_code
                        )
                    )
                    self._linger = True
                    return
                self._dispatch(events)
                if self._resume_request is not None:
                    await self._hand_over(self._resume_request)  # spec §15.6
                    return
                if data:
                    # spec §11: keepalive and frame timeouts count from this receipt.
                    held = core.partial_input
                    if held and not self._timing_frame:
                        self._wake_timer()  # it may sleep past the new frame's deadline
                    self._timing_frame = bool(held)
                if core.has_data_to_send:
                    self._link.flush()  # replies (CREDIT, PONG) go out before the next read
                if core.state is ConnectionState.CLOSED:
                    if self._lost is None:
                        self._fail(self._closed_error())
                    return
                if not data:
                    return
        finally:
            self._wake_writer()

    _timing_frame = False  # the reader saw a frame in progress (the timer knows its deadline)

    def _on_timeout(self, exc: PeerTimeout) -> None:
        if self._core.state is ConnectionState.RESUMING:
            self._transport_gone(exc)  # spec §15.4: the session outlives a dead transport
            return
        # spec §11, §10.2: the core queued GOAWAY(TIMEOUT); flush it, then close.
        self._fail(ConnectionLostError(str(exc), error_code=exc.error_code))
        self._writer_done = True
        self._reader_scope.cancel()
        self._wake_writer()

    async def _writer(self) -> None:
        core = self._core
        link = self._link
        try:
            while True:
                if self._handed_over is not None:
                    return  # the transport belongs to the session it resumed (§15.6)
                if self._no_transport:
                    # spec §15.4: nothing to write to until the session has a transport.
                    if self._writer_done or self._lost is not None:
                        return
                    await self._link.writer_lot.park()
                    continue
                if trio.current_effective_deadline() == -math.inf:
                    # Cancelled from outside: leave the output to _last_words rather than
                    # start a write that the cancellation would cut off.
                    await trio.lowlevel.checkpoint()
                sock = link.socket
                # A plain socket takes the pieces themselves (vectored), others the bytes.
                data = link.take(MAX_WRITE_BUFFERS if sock is not None else 1)
                if data:
                    self._mid_write = True  # until the write completes: see aclose
                    generation = self._transport_gen
                    try:
                        if sock is not None:
                            written = await write_socket(sock, data, self._write_timeout)
                        else:
                            written = await write_all(self.transport, data[0], self._write_timeout)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self._mid_write = False
                        self._write_done.unpark_all()
                        if generation != self._transport_gen or self._transport_gone(exc):
                            continue  # spec §15.4: kept; the core sends it all again
                        self._fail(_transport_failure(exc))
                        return
                    self._write_done.unpark_all()
                    if not written and self._transport_gone(None):
                        self._mid_write = False
                        continue  # spec §15.4: a write timeout loses the transport
                    if not written:
                        # spec §11, §10.7.2: the peer stopped reading; half a frame may be
                        # out, so nothing more can be written (not even GOAWAY).
                        self._fail(
                            ConnectionLostError(
                                f"the peer accepted no data for {self._write_timeout} s "
                                "(write timeout, spec §11)",
                                error_code=ErrorCode.TIMEOUT,
                            )
                        )
                        self._reader_scope.cancel()
                        return
                    self._mid_write = False
                    continue
                if self._writer_done or (self._lost is not None and not core.has_data_to_send):
                    return
                await self._link.writer_lot.park()
        finally:
            self._writer_exited = True
            self._link.backlog_lot.unpark_all()
            self._stream_change.unpark_all()

    async def _timer(self) -> None:
        core = self._core
        while True:
            deadline = core.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._link.timer_lot.park()
                continue
            try:
                core.handle_timeout(trio.current_time())
            except PeerTimeout as exc:
                self._on_timeout(exc)  # keepalive or frame timeout (spec §11)
            self._wake_writer()

    async def _idle_watch(self, timeout: float) -> None:
        # spec §11: a connection with no stream for `timeout` seconds is closed.
        core = self._core
        while self._lost is None:
            if self._streams or core.stream_ids:
                await self._stream_change.park()
                continue
            with trio.move_on_after(timeout) as scope:
                await self._stream_change.park()  # any stream change restarts the wait
            if scope.cancelled_caught and not self._streams and not core.stream_ids:
                if self._lost is None:
                    message = f"no stream for {timeout} s (idle timeout, spec §11)"
                    core.close(ErrorCode.TIMEOUT, message)
                    self._fail(ConnectionLostError(message, error_code=ErrorCode.TIMEOUT))
                    self._reader_scope.cancel()
                return


def _transport_failure(exc: BaseException) -> ConnectionLostError:
    """The error for a transport that failed: its reason in words, TLS errors above all.

    ``trio.SSLStream`` raises ``trio.BrokenResourceError`` (with no text) from the
    ``ssl.SSLError``; the message names the TLS reason ("certificate verify failed: unable
    to get local issuer certificate"), and the original is the ``__cause__``.
    """
    cause = exc.__cause__
    what = tls_reason(cause) if cause is not None else None
    if what is None:
        what = str(exc) or (str(cause) if cause is not None else "") or type(exc).__name__
    lost = ConnectionLostError(f"transport failed: {what}")
    lost.__cause__ = cause if cause is not None else exc
    return lost
