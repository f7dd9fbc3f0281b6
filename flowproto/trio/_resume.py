"""Sessions across lost transports (spec §15): the Trio layer's part, a mixin of
:class:`FlowConnection`.

When the transport fails, ends without GOAWAY or times out, and the core keeps the session
(``Connection.transport_lost``), reading stops and ``_run`` asks :meth:`_regain_transport`
for another: the initiator connects again by its :class:`flowproto.Reconnect` policy (the
deadline runs from the loss until a resumption completes), the acceptor waits, up to its
``resume_timeout``, for a fresh connection of its server whose peer presents the
session's token (:meth:`_hand_over`, :meth:`_offer_transport`). The streams never notice
but for a wait.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, cast

import trio

from .. import (
    Connection,
    ErrorCode,
    Event,
    Reconnect,
    ResumeRequested,
    Role,
    SessionGranted,
    SessionResumed,
    SessionStore,
    StreamStarted,
)
from ._debug import peer_address
from ._errors import ConnectionLostError

if TYPE_CHECKING:
    from ._connection import FlowConnection
    from ._link import StreamLink
    from ._stream import FlowStream

__all__ = ["SessionTransport"]

_log = logging.getLogger("flowproto")


class SessionTransport:
    """The session half of a connection: losing, regaining and handing over transports."""

    # What FlowConnection sets up (declared here so that this part type-checks alone).
    transport: trio.abc.Stream
    _core: Connection
    _link: StreamLink
    _streams: dict[int, FlowStream]
    _lost: ConnectionLostError | None
    _debug: bool
    _name: str
    _nursery: trio.Nursery
    _reader_scope: trio.CancelScope
    _stream_change: trio.lowlevel.ParkingLot
    _mid_write: bool
    _timing_frame: bool
    _reconnect: Reconnect | None
    _connect: Callable[[], Awaitable[trio.abc.Stream]] | None
    _sessions: SessionStore[FlowConnection] | None
    _resume_timeout: float
    _no_transport: bool
    _transport_gen: int
    _adoption: tuple[trio.abc.Stream, Connection, trio.Event] | None
    _adopted: trio.Event
    _resume_request: bytes | None
    _handed_over: trio.Event | None
    _transport_done: trio.Event
    _write_done: trio.lowlevel.ParkingLot
    _lost_since: float | None
    _delays: Iterator[float] | None
    _attempts: int

    if TYPE_CHECKING:

        def _fail(self, exc: ConnectionLostError) -> None: ...
        def _dispatch(self, events: list[Event]) -> None: ...
        def _wake_writer(self) -> None: ...
        def _wake_timer(self) -> None: ...

    def _on_session_granted(self, event: SessionGranted) -> None:
        self._stream_change.unpark_all()  # _wait_handshake may wait for it
        # The acceptor finds the session by this token when its initiator comes back.
        if self._sessions is not None and not self._sessions.add(
            self._core, cast("FlowConnection", self), event.token
        ):
            _log.warning("flowproto: too many sessions kept; this one cannot be resumed")
        if self._debug:
            _log.debug("%s: session granted (resumable for %d ms)", self._name, event.timeout_ms)

    def _on_resume_requested(self, event: ResumeRequested) -> None:
        self._resume_request = event.token  # the reader hands the transport over (§15.6)

    def _on_stream_started(self, event: StreamStarted) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._on_started(event.messages, event.nbytes)  # spec §15.10

    def _on_resumed(self, event: SessionResumed) -> None:
        # spec §15.8: positions reconciled; senders waiting while resuming go on.
        self._lost_since = None
        self._delays = None
        self._attempts = 0
        for stream in self._streams.values():
            stream._send_lot.unpark_all()
        self._stream_change.unpark_all()  # open_stream() may wait for it (spec §15.4)
        if self._debug:
            _log.debug(
                "%s: session resumed; %d messages (%d bytes) sent again",
                self._name, event.messages_retransmitted, event.bytes_retransmitted,
            )  # fmt: skip

    def _transport_gone(self, exc: BaseException | None) -> bool:
        """The transport failed, ended without GOAWAY, or timed out. True if the session
        is kept (spec §15.4): reading stops, and ``_run`` gets another transport."""
        if self._no_transport:
            return True
        if self._lost is not None or not self._core.transport_lost():
            return False
        self._no_transport = True
        link = self._link
        link.socket = None
        link.leftover = b""
        link._taken()  # the core dropped its output: the backlog is empty
        self._reader_scope.cancel()
        self._nursery.start_soon(trio.aclose_forcefully, self.transport)
        self._transport_done.set()
        self._wake_writer()
        if self._debug:
            _log.debug("%s: transport lost (%s); the session is kept", self._name, exc)
        return True

    def _install(self, transport: trio.abc.Stream) -> None:
        self.transport = transport
        self._transport_gen += 1
        self._transport_done = trio.Event()
        self._link.socket = transport.socket if isinstance(transport, trio.SocketStream) else None
        self._timing_frame = False
        self._no_transport = False

    async def _regain_transport(self) -> bool:
        """A new transport for the session (spec §15.6): the initiator reconnects, the
        acceptor waits for its peer to. False, with the connection failed, past the
        deadline."""
        core = self._core
        if core.role is Role.INITIATOR:
            policy, connect = self._reconnect, self._connect
            assert policy is not None and connect is not None
            if self._lost_since is None or self._delays is None:
                # A loss after the last resumption completed. A loss during a resumption
                # goes on with the same deadline and backoff.
                self._lost_since = trio.current_time()
                self._delays = policy.delays(random.Random())
                self._attempts = 0
            deadline = self._lost_since + policy.deadline
            for delay in self._delays:
                if self._lost is not None or not core.resumable:
                    return False  # closed by this side meanwhile: aclose() said why
                if self._attempts:  # the first attempt after a loss is at once
                    if trio.current_time() + delay >= deadline:
                        break
                    await trio.sleep(delay)
                    if self._lost is not None or not core.resumable:
                        return False
                self._attempts += 1
                transport = None
                failure: str = "timed out"
                with trio.move_on_at(policy.attempt_deadline(trio.current_time(), deadline)):
                    try:
                        transport = await connect()
                    except (OSError, trio.BrokenResourceError) as exc:
                        failure = str(exc) or type(exc).__name__
                if transport is None and self._debug:
                    _log.debug(
                        "%s: reconnect attempt %d failed: %s", self._name, self._attempts, failure
                    )
                if self._lost is not None or not core.resumable:
                    if transport is not None:
                        await trio.aclose_forcefully(transport)
                    return False
                if transport is not None and trio.current_time() < deadline:
                    self._install(transport)
                    core.reconnect(trio.current_time())
                    self._wake_writer()
                    self._wake_timer()
                    return True
                if transport is not None:
                    await trio.aclose_forcefully(transport)
                if trio.current_time() >= deadline:
                    break
            self._fail(
                ConnectionLostError(
                    f"the connection was lost and not resumed within {policy.deadline} s "
                    "(spec §15.4)"
                )
            )
            return False
        with trio.move_on_after(self._resume_timeout):
            await self._adopted.wait()
        adoption, self._adoption = self._adoption, None
        self._adopted = trio.Event()
        if adoption is None or self._lost is not None:
            if adoption is not None:
                adoption[2].set()  # its first owner may close it
            self._fail(
                ConnectionLostError(
                    f"the peer did not resume the session within {self._resume_timeout} s "
                    "(spec §15.4)"
                )
            )
            return False
        transport, fresh, released = adoption
        self._install(transport)
        self._transport_done = released
        self._dispatch(core.adopt(fresh, trio.current_time()))
        self._wake_writer()
        self._wake_timer()
        return True

    async def _hand_over(self, token: bytes) -> None:
        """This fresh connection's peer resumes a session (spec §15.6): give the transport
        to that session's connection, or refuse with SESSION_UNKNOWN."""
        store = self._sessions
        peer = _peer_host(self.transport)
        now = trio.current_time()
        if store is not None and store.over_budget(peer, now):
            # spec §15.9: too many failed resumptions from this address: no lookup at all.
            message = "too many failed resumptions from this address (spec §15.9)"
            self._core.close(ErrorCode.ENHANCE_YOUR_CALM, message)
            self._fail(ConnectionLostError(message, error_code=ErrorCode.ENHANCE_YOUR_CALM))
            return
        entry = store.find(token) if store is not None else None
        owner = entry[1] if entry is not None else None
        while self._mid_write:  # our preface and HELLO may be on their way out
            await self._write_done.park()
        released = trio.Event()
        if owner is None or not owner._offer_transport(self.transport, self._core, released):
            if store is not None:
                store.failed(peer, now)
            self._core.refuse_resume()
            self._fail(
                ConnectionLostError(
                    "the peer resumes a session this side does not keep; sent "
                    "GOAWAY(SESSION_UNKNOWN) (spec §15.6)",
                    error_code=ErrorCode.SESSION_UNKNOWN,
                )
            )
            return
        self._handed_over = released
        self.transport = _NoTransport()
        self._link.socket = None
        self._fail(
            ConnectionLostError(
                "handed over to the session it resumes (spec §15.6)",
                error_code=ErrorCode.NO_ERROR,
                handed_over=True,
            )
        )

    def _offer_transport(
        self, transport: trio.abc.Stream, fresh: Connection, released: trio.Event
    ) -> bool:
        # The acceptor's session connection: a transport that resumes it (spec §15.6).
        # If the old one still looks alive, it is abandoned (step 2). ``released`` is set
        # once this connection no longer uses the transport.
        if self._lost is not None or self._adoption is not None:
            return False
        if not self._transport_gone(None):
            return False  # no longer resumable (a GOAWAY, an error)
        self._adoption = (transport, fresh, released)
        self._adopted.set()
        return True


def _peer_host(transport: trio.abc.Stream) -> str:
    """The peer's address without its port (spec §15.9 counts failures by address)."""
    peer = peer_address(transport)
    return str(peer[0]) if isinstance(peer, tuple) else "local"


class _NoTransport(trio.abc.Stream):
    """What a connection that handed its transport over holds instead (spec §15.6)."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise trio.ClosedResourceError

    async def wait_send_all_might_not_block(self) -> None:
        raise trio.ClosedResourceError

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise trio.ClosedResourceError

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
