"""Sessions across lost transports (spec §15): the asyncio layer's part, mixins of
:class:`FlowConnection` and :class:`FlowStream`.

When the transport fails, ends without GOAWAY or times out, and the core keeps the session
(``Connection.transport_lost``), :meth:`SessionTransport._transport_gone` detaches the
connection from it (the dead transport's late callbacks go to a :class:`_Detached`
protocol) and the connection waits for another: the initiator connects again in a task,
by its :class:`flowproto.Reconnect` policy (the deadline runs from the loss until a
resumption completes); the acceptor waits, up to its ``resume_timeout``, for a fresh
connection of its server whose peer presents the session's token. That connection's
``ResumeRequested`` hands the transport over (:meth:`_hand_over`): ``set_protocol``
makes the session's connection the transport's protocol, and the core adopts it. The
streams never notice but for a wait: ``send()`` finds no credit while the core is
suspended, and the ``SessionResumed`` of the reconciliation wakes it.

A connection's own objects are reached through ``self`` only: what the server's session
store keeps per session is the bound :meth:`_offer_transport` of its connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import (
    Connection,
    ErrorCode,
    Reconnect,
    RemoteProtocolError,
    ResumeRequested,
    Role,
    SessionGranted,
    SessionResumed,
    SessionStore,
    StreamRecord,
    StreamStarted,
)
from ..iolayer import MAX_SEND_BACKLOG
from ._errors import ConnectionLostError

if TYPE_CHECKING:
    from ._link import StreamLink, StreamPort, Waiters

__all__ = ["Connect", "Offer", "SessionTransport", "StreamStart"]

_log = logging.getLogger("flowproto")

#: Opens a new transport to the same peer with the protocol the factory makes (the
#: initiator's ``loop.create_connection`` for reconnecting, spec §15.6).
Connect = Callable[
    [Callable[[], asyncio.BaseProtocol]],
    Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]],
]
#: What an acceptor's session store keeps per session: offer it a transport that resumes
#: it, with the fresh connection's core; True if the session took it (spec §15.6).
Offer = Callable[[asyncio.Transport, Connection], bool]


class SessionTransport:
    """The session half of a connection: losing, regaining and handing over transports."""

    # What FlowConnection sets up (declared here so that this part type-checks alone).
    transport: asyncio.Transport | None
    _loop: asyncio.AbstractEventLoop
    _core: Connection
    _link: StreamLink
    _ports: dict[int, StreamPort]
    _lost: ConnectionLostError | None
    _linger: bool
    _debug: bool
    _name: str
    _handshake: asyncio.Event
    _stream_change: Waiters
    _write_watch: asyncio.TimerHandle | None

    if TYPE_CHECKING:

        def _fail(self, exc: ConnectionLostError) -> None: ...
        def _dispatch(self, events: list[Any]) -> None: ...
        def _flush(self) -> None: ...
        def _finish(self) -> None: ...
        def _arm_timer(self, wrote: bool = False) -> None: ...
        def connection_lost(self, exc: Exception | None) -> None: ...

    def _init_session(
        self,
        reconnect: Reconnect | None,
        connect: Connect | None,
        sessions: SessionStore[Offer] | None,
        resume_timeout: float,
    ) -> None:
        self._reconnect = reconnect
        self._connect = connect
        self._sessions = sessions
        self._resume_timeout = resume_timeout
        self._no_transport = False  # spec §15.4: the transport is lost, the session kept
        self._regain_task: asyncio.Task[None] | None = None  # the initiator reconnecting
        self._expiry: asyncio.TimerHandle | None = None  # the acceptor's resume_timeout
        # spec §15.4: since when the session has had no working transport, and the waits
        # between attempts; both run on until a resumption completes.
        self._lost_since: float | None = None
        self._delays: Iterator[float] | None = None
        self._attempts = 0

    @property
    def resumable(self) -> bool:
        """True while the connection has a session that a lost transport would not end
        (spec §15.4): the peer granted one, no GOAWAY went either way, and the
        connection has not ended."""
        return self._lost is None and self._core.resumable

    # events -------------------------------------------------------------------------------

    def _on_session_granted(self, event: SessionGranted) -> None:
        # spec §15.2: the initiator's connection is ready once the SESSION came.
        self._handshake.set()
        # The acceptor finds the session by this token when its initiator comes back.
        if self._sessions is not None and not self._sessions.add(
            self._core, self._offer_transport, event.token
        ):
            _log.warning("flowproto: too many sessions kept; this one cannot be resumed")
        if self._debug:
            _log.debug("%s: session granted (resumable for %d ms)", self._name, event.timeout_ms)

    def _on_resume_requested(self, event: ResumeRequested) -> None:
        self._hand_over(event.token)  # spec §15.6: a fresh acceptor connection

    def _on_stream_started(self, event: StreamStarted) -> None:
        port = self._ports.get(event.stream_id)
        if port is not None:
            port.started_at(event.messages, event.nbytes)  # spec §15.10

    def _on_resumed(self, event: SessionResumed) -> None:
        # spec §15.8: positions reconciled; senders waiting while resuming go on.
        self._lost_since = None
        self._delays = None
        self._attempts = 0
        for port in self._ports.values():
            port.send_waiters.wake_all()
        self._stream_change.wake_all()  # open_stream() may wait for it
        if self._debug:
            _log.debug(
                "%s: session resumed; %d messages (%d bytes) sent again",
                self._name, event.messages_retransmitted, event.bytes_retransmitted,
            )  # fmt: skip

    # losing the transport -----------------------------------------------------------------

    def _transport_gone(self, exc: BaseException | None) -> bool:
        """The transport failed, ended without GOAWAY, or timed out. True if the session
        is kept (spec §15.4): the transport is dropped, and another is sought."""
        if self._lost is not None:
            return False
        if self._no_transport:
            return True
        if not self._core.transport_lost():
            return False
        self._no_transport = True
        old = self.transport
        self.transport = None
        link = self._link
        link.transport = None
        link.paused = False
        link.drain_waiters.wake_all()  # senders go on to wait for credit (suspended)
        if old is not None:
            old.set_protocol(_Detached())  # its connection_lost is no longer ours
            old.abort()
        if self._write_watch is not None:
            self._write_watch.cancel()
            self._write_watch = None
        self._arm_timer()  # no transport, no timers (spec §15.4)
        if self._debug:
            _log.debug("%s: transport lost (%s); the session is kept", self._name, exc)
        if self._core.role is Role.INITIATOR:
            self._regain_task = self._loop.create_task(self._regain())
        else:
            self._expiry = self._loop.call_later(self._resume_timeout, self._resume_expired)
        return True

    def _install(self, transport: asyncio.Transport) -> None:
        # The session's new transport: this connection is its protocol from now on.
        transport.set_protocol(self)  # type: ignore[arg-type]
        transport.set_write_buffer_limits(high=MAX_SEND_BACKLOG)  # spec §10.7.2
        self.transport = transport
        self._link.transport = transport
        self._no_transport = False

    def _close_while_resuming(self) -> bool:
        """``close_soon``/``aclose`` while the session is between transports or in a
        resumption's exchange: it ends now. With no transport there is nobody to say
        GOAWAY to; in an exchange, our GOAWAY ends the session before the peer's
        connection RESUME (spec §15.6), and what the peer sent across it is not read.
        False if neither."""
        core = self._core
        if not self._no_transport and not (self._lost is None and core.suspended):
            return False
        if not self._no_transport:
            core.close(ErrorCode.NO_ERROR)
            self._linger = True  # spec §10.2 step 3: the peer's exchange may be coming
        self._fail(
            ConnectionLostError(
                "the connection was closed by this side while its session was resuming "
                "(spec §15.4, §15.6)",
                error_code=ErrorCode.NO_ERROR,
            )
        )
        self._finish()  # writes the GOAWAY, if there is a transport, and closes it
        return True

    def _session_over(self) -> None:
        """The connection ended (``_fail``): stop seeking a transport. Without one, the
        end is this connection's ``connection_lost``, run now."""
        task, self._regain_task = self._regain_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._sessions is not None:
            self._sessions.discard(self._core)
        if self._no_transport:
            self._no_transport = False
            self._loop.call_soon(self.connection_lost, None)

    # the initiator: reconnecting ----------------------------------------------------------

    async def _regain(self) -> None:
        """A new transport for the session (spec §15.6), by the Reconnect policy; past
        the deadline the connection fails with what each stream knows was delivered."""
        try:
            await self._reconnect_by_policy()
        except Exception as exc:  # not a failed attempt: a fault, which ends the session
            _log.debug("flowproto: reconnecting failed", exc_info=True)
            self._fail(ConnectionLostError(f"reconnecting failed: {exc!r} (spec §15.6)"))

    async def _reconnect_by_policy(self) -> None:
        loop = self._loop
        policy, connect = self._reconnect, self._connect
        assert policy is not None and connect is not None
        if self._lost_since is None or self._delays is None:
            # A loss after the last resumption completed. A loss during a resumption goes
            # on with the same deadline and backoff.
            self._lost_since = loop.time()
            self._delays = policy.delays(random.Random())
            self._attempts = 0
        deadline = self._lost_since + policy.deadline
        for delay in self._delays:
            if self._attempts:  # the first attempt after a loss is at once
                if loop.time() + delay >= deadline:
                    break
                await asyncio.sleep(delay)
            self._attempts += 1
            transport: asyncio.BaseTransport | None = None
            arrival: Any = None
            # An attempt that hangs (a SYN sent while the path was down waits in TCP's own
            # backoff) is given up for a fresh one at attempt_timeout.
            now = loop.time()
            try:
                transport, arrival = await asyncio.wait_for(
                    connect(_Arrival), max(0.0, policy.attempt_deadline(now, deadline) - now)
                )
            except (OSError, asyncio.TimeoutError) as exc:
                transport = None
                if self._debug:
                    _log.debug(
                        "%s: reconnect attempt %d failed: %s",
                        self._name, self._attempts, str(exc) or "timed out",
                    )  # fmt: skip
            if transport is not None and loop.time() < deadline and self._lost is None:
                assert isinstance(transport, asyncio.Transport)
                assert isinstance(arrival, _Arrival)
                self._regain_task = None
                self._install(transport)
                self._core.reconnect(loop.time())  # preface, HELLO with the token, exchange
                self._flush()
                arrival.replay(self, transport)
                return
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            if loop.time() >= deadline or self._lost is not None:
                break
        self._fail(
            ConnectionLostError(
                f"the connection was lost and not resumed within {policy.deadline} s (spec §15.4)"
            )
        )

    # the acceptor: waiting, handing over, adopting ----------------------------------------

    def _resume_expired(self) -> None:
        self._expiry = None
        self._fail(
            ConnectionLostError(
                f"the peer did not resume the session within {self._resume_timeout} s (spec §15.4)"
            )
        )

    def _hand_over(self, token: bytes) -> None:
        """This fresh connection's peer resumes a session (spec §15.6): give the transport
        to that session's connection, or refuse with SESSION_UNKNOWN."""
        store = self._sessions
        transport = self.transport
        assert transport is not None
        peer = _peer_host(transport)
        now = self._loop.time()
        if store is not None and store.over_budget(peer, now):
            # spec §15.9: too many failed resumptions from this address: no lookup at all.
            message = "too many failed resumptions from this address (spec §15.9)"
            self._core.close(ErrorCode.ENHANCE_YOUR_CALM, message)
            self._fail(ConnectionLostError(message, error_code=ErrorCode.ENHANCE_YOUR_CALM))
            self._linger = True
            self._finish()
            return
        entry = store.find(token) if store is not None else None
        offer = entry[1] if entry is not None else None
        if offer is None or not offer(transport, self._core):
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
            self._linger = True  # spec §10.2 step 3: its exchange may still be coming
            self._finish()
            return
        # The transport carries the session's connection now: this one lets go of it.
        self.transport = None
        self._link.transport = None
        self._fail(
            ConnectionLostError(
                "handed over to the session it resumes (spec §15.6)",
                error_code=ErrorCode.NO_ERROR,
                handed_over=True,
            )
        )
        self.connection_lost(None)

    def _offer_transport(self, transport: asyncio.Transport, fresh: Connection) -> bool:
        # The acceptor's session connection: a transport that resumes it (spec §15.6).
        # If the old one still looks alive, it is abandoned (step 2).
        if self._lost is not None or not self._transport_gone(None):
            return False  # no longer resumable (a GOAWAY, an error)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._install(transport)
        try:
            events = self._core.adopt(fresh, self._loop.time())
        except RemoteProtocolError as exc:  # in the bytes that followed the HELLO
            self._fail(
                ConnectionLostError(f"peer broke the protocol: {exc}", error_code=exc.error_code)
            )
            self._linger = True
            self._finish()
            return True
        self._dispatch(events)
        self._flush()
        return True


class StreamStart:
    """Where a stream starts (spec §15.10, cold resume): a mixin of :class:`FlowStream`.

    The core's record of the stream says who waits for its start (``"sending"``: we
    opened it with ``await_start``; ``"receiving"``: the peer did), ``None`` once started.
    """

    _port: StreamPort
    _link: StreamLink
    _record: StreamRecord | None
    stream_id: int

    if TYPE_CHECKING:

        def _check_send(self) -> None: ...

    @property
    def awaits_start(self) -> bool:
        """The peer opened this stream with ``await_start``: it sends nothing until
        :meth:`start_at` says where the stream starts (the first ``receive()`` starts it
        from the beginning)."""
        return self._record is not None and self._record.start == "receiving"

    def start_at(self, messages: int = 0, nbytes: int = 0) -> None:
        """Tell the peer where this stream starts (spec §15.10): after ``messages``
        messages of ``nbytes`` bytes this side already holds (say, a file it wrote
        before it restarted). The peer sends what follows. A claim of this application,
        not the protocol's knowledge: vouch only for what you hold.

        Raises:
            flowproto.LocalProtocolError: the peer did not open the stream with
                ``await_start``, or it was started already.
        """
        self._link.core.start_stream(self.stream_id, messages, nbytes)
        self._link.flush_soon()

    async def started(self) -> tuple[int, int]:
        """For a stream opened with ``open_stream(await_start=True)``: wait until the
        peer says where it starts; ``(messages, bytes)`` already there, ``(0, 0)`` for the
        beginning. Send what follows. At once for any other stream.

        Cancellation: a cancelled call changed nothing.

        Raises:
            StreamResetError, ConnectionLostError: the stream ended first.
        """
        port = self._port
        record = self._record
        while record is not None and record.start == "sending":
            self._check_send()
            await port.send_waiters.wait()
        return port.start_position


def _peer_host(transport: asyncio.BaseTransport) -> str:
    """The peer's address without its port (spec §15.9 counts failures by address)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "local"


class _Arrival(asyncio.Protocol):
    """A new transport of a reconnecting initiator until the session takes it over:
    reading is paused, and what arrived meanwhile (the acceptor's preface and HELLO go
    out at once) is kept for :meth:`replay`."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)  # what a TLS layer had decrypted before the pause

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the session's connection decides

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def replay(self, conn: SessionTransport, transport: asyncio.Transport) -> None:
        """Hand what arrived to ``conn``, now the transport's protocol, and read on.
        Each step only while ``conn`` still holds this transport."""
        protocol: Any = conn  # a FlowConnection: the asyncio.Protocol methods are its own
        for data in self.pending:
            if conn.transport is not transport:
                return
            protocol.data_received(data)
        if self.eof and conn.transport is transport:
            protocol.eof_received()
        if self.lost is not None and conn.transport is transport:
            protocol.connection_lost(self.lost[0])
        elif conn.transport is transport and not transport.is_closing():
            transport.resume_reading()


class _Detached(asyncio.Protocol):
    """What a lost transport's late callbacks reach: nothing (spec §15.4: a lost
    transport's bytes are not processed)."""

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False
