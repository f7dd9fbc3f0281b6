"""Opening connections and serving them: TCP, TLS, Unix sockets, any connected socket.

Each ``open_*`` function is an async context manager around one :class:`FlowConnection`:
it connects (``loop.create_connection`` with the connection as the protocol), waits for
the flowproto handshake, and on exit closes gracefully (spec §10.4) — at once if the
block was cancelled. :func:`serve` is ``asyncio.start_server`` for flowproto: it returns a
:class:`FlowServer` (``serve_forever``, ``close``, ``wait_closed``, ``sockets``, ``async
with``) that runs ``handler(stream)`` in a task for every stream a peer opens.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

from .. import (
    AutoTune,
    Codec,
    CodecName,
    Connection,
    ErrorCode,
    Limits,
    MemoryBudget,
    RateLimitedLog,
    Reconnect,
    Role,
    SessionStore,
    Settings,
)
from ..iolayer import (
    CLOSE_LINGER,
    DEFAULT_CLOSE_GRACE,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
)
from ..unix_sockets import DEFAULT_UNIX_MODE, bind_unix_socket
from ._admission import wait_for_room
from ._connection import FlowConnection, transport_failure
from ._errors import ConnectionLostError, EndOfStream, HandshakeTimeout, StreamResetError
from ._resume import Connect, Offer
from ._stream import FlowStream

__all__ = [
    "ConnectionEndCallback",
    "FlowServer",
    "StreamHandler",
    "open_connection",
    "open_flow_connection",
    "open_unix_connection",
    "serve",
    "serve_unix",
]

_log = logging.getLogger("flowproto")

StreamHandler = Callable[[FlowStream], Awaitable[None]]
#: ``on_connection_end(conn, error)``: a served connection ended (see :func:`serve`).
ConnectionEndCallback = Callable[[FlowConnection, "BaseException | None"], object]

#: How long a connection refused for max_connections is told to wait (GOAWAY OVERLOADED).
OVERLOADED_RETRY_AFTER_MS: Final = 1000


@dataclass(frozen=True)
class _Options:
    """What every open function and the server take (see :func:`open_flow_connection`)."""

    settings: Settings | None = None
    codec: CodecName | Codec = "msgpack"
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    ping_timeout: float = 15.0
    idle_timeout: float | None = None
    close_grace: float = DEFAULT_CLOSE_GRACE
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    limits: Limits | None = None
    autotune: AutoTune | bool = True
    memory_budget: MemoryBudget | None = None
    pacing: bool = False
    reconnect: Reconnect | bool | None = None  # the initiator's (spec §15.4, §15.6)
    resume_timeout: float | None = None  # the acceptor's; None: no sessions (spec §15.4)

    def __post_init__(self) -> None:
        if self.settings is not None:
            self.settings.validate()  # raise here, not in the event loop's accept callback

    def connection(
        self,
        role: Role,
        connect: Connect | None = None,
        sessions: SessionStore[Offer] | None = None,
    ) -> FlowConnection:
        """A new connection (the transport's protocol) with these options. ``connect``
        opens another transport to the peer, for ``reconnect``; ``sessions`` are the
        server's, for ``resume_timeout`` (spec §15.6)."""
        autotune = self.autotune
        reconnect = Reconnect() if self.reconnect is True else self.reconnect or None
        if role is not Role.INITIATOR or connect is None:
            reconnect = None
        if role is not Role.ACCEPTOR or self.resume_timeout is None:
            sessions = None
        return FlowConnection(
            role,
            self.settings,
            self.codec,
            self.ping_timeout,
            limits=self.limits,
            frame_timeout=self.frame_timeout,
            write_timeout=self.write_timeout,
            autotune=AutoTune() if autotune is True else autotune or None,
            memory_budget=self.memory_budget,
            pacing=self.pacing,
            reconnect=reconnect,
            connect=connect,
            sessions=sessions,
            resume_timeout=self.resume_timeout if self.resume_timeout is not None else 30.0,
        )

    async def admitted(self) -> None:
        """spec §8.9 B2: floors that fit but room lent out: wait (within the handshake
        time) for members to consume; the connection is then made without suspending."""
        if self.memory_budget is not None:
            await wait_for_room(self.memory_budget, self.settings, self.handshake_timeout)


@asynccontextmanager
async def _running(conn: FlowConnection, options: _Options) -> AsyncIterator[FlowConnection]:
    # The handshake, the block, and the close: graceful, or at once if cancelled.
    grace = options.close_grace
    try:
        await conn.start(
            handshake_timeout=options.handshake_timeout, idle_timeout=options.idle_timeout
        )
        yield conn
    except asyncio.CancelledError:
        # Cancelled: close at once. GOAWAY still goes out and open streams are reset
        # with CANCEL, but they get no grace to finish.
        grace = 0.0
        raise
    finally:
        await conn.aclose(grace)


async def _connected(
    connect: Connect,
    options: _Options,
    role: Role,
    *,
    redial: Connect | None = None,
) -> FlowConnection:
    # ``redial``: how the connection opens another transport to resume (spec §15.6).
    await options.admitted()
    try:
        _, protocol = await connect(lambda: options.connection(role, redial))
    except _ssl.SSLError as exc:
        # The TLS handshake failed: its reason in the message, the SSLError the cause.
        raise transport_failure(exc) from exc
    assert isinstance(protocol, FlowConnection)
    return protocol


@asynccontextmanager
async def open_flow_connection(
    sock: socket.socket,
    *,
    initiator: bool = True,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    settings: Settings | None = None,
    codec: CodecName | Codec = "msgpack",
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ping_timeout: float = 15.0,
    idle_timeout: float | None = None,
    close_grace: float = DEFAULT_CLOSE_GRACE,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    limits: Limits | None = None,
    autotune: AutoTune | bool = True,
    memory_budget: MemoryBudget | None = None,
    pacing: bool = False,
) -> AsyncIterator[FlowConnection]:
    """Run flowproto over a connected socket (TCP, Unix, one end of ``socketpair()``).

    The socket becomes an asyncio transport whose protocol is the connection: reads go
    to the core as they arrive, writes go out without a task switch, and the transport's
    write-buffer limits bound what waits to be sent (spec §10.7.2). That is why this
    takes a socket rather than a ``(StreamReader, StreamWriter)`` pair: a reader would
    need a task and a copy per read, and a writer's buffer is not bounded by itself.
    A bare socket cannot be connected again, so sessions (spec §15) are for
    :func:`open_connection` / :func:`open_unix_connection` (``reconnect``) and
    :func:`serve` / :func:`serve_unix` (``resume_timeout``).

    Args:
        sock: the connected socket; the connection owns it and closes it on exit.
        initiator: True for the side that connected (odd stream ids, spec §6.1).
        ssl: run TLS over the socket with this context (client side if ``initiator``).
        server_hostname: the name the server's certificate must carry.
        settings: what this side accepts (spec §3.2); defaults to ``Settings()``.
        codec: ``"msgpack"`` (Python objects) or ``"raw"`` (bytes), or a :class:`Codec`.
        handshake_timeout: seconds allowed for the TLS handshake, and again for the
            preface and HELLO exchange (spec §3.4).
        ping_timeout: seconds a keepalive PING may go unanswered (spec §11).
        idle_timeout: if set, seconds without any stream after which the connection
            closes with GOAWAY(TIMEOUT) (spec §11); ``None`` (the default) never does.
        close_grace: seconds open streams may finish after the block exits (none if the
            block was cancelled: then they are reset with CANCEL at once).
        frame_timeout: seconds a frame may take to arrive once its first byte has; then
            the connection ends with GOAWAY(TIMEOUT) (spec §11).
        write_timeout: seconds the transport may take to write each ``WRITE_CHUNK`` of
            what it holds; then the connection is lost with TIMEOUT (spec §11).
        limits: what the peer may cost this side (spec §10.7); defaults to ``Limits()``.
        autotune: size the receive windows from what the consumer does (spec §8.9);
            ``True`` uses ``AutoTune()``, ``False`` keeps the windows of ``settings``.
        memory_budget: a :class:`flowproto.MemoryBudget` shared by the connections given
            it (of one event loop): their connection credit together stays within it.
        pacing: space each stream's messages from the peer's feedback while the peer's
            consumer is the bottleneck (spec §8.10); off by default.

    Raises:
        HandshakeTimeout: the peer did not complete the handshake in time.
        ConnectionLostError: the TLS handshake failed, or the peer refused or closed the
            connection, or broke the protocol; ``retryable`` if it said OVERLOADED.
    """
    options = _Options(
        settings, codec, handshake_timeout, ping_timeout, idle_timeout, close_grace,
        frame_timeout, write_timeout, limits, autotune, memory_budget, pacing,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    tls_timeout = handshake_timeout if ssl is not None else None
    if initiator:
        conn = await _connected(
            lambda factory: loop.create_connection(
                factory,
                sock=sock,
                ssl=ssl,
                server_hostname=server_hostname,
                ssl_handshake_timeout=tls_timeout,
            ),
            options,
            Role.INITIATOR,
        )
    else:
        conn = await _connected(
            lambda factory: loop.connect_accepted_socket(
                factory, sock, ssl=ssl, ssl_handshake_timeout=tls_timeout
            ),
            options,
            Role.ACCEPTOR,
        )
    async with _running(conn, options):
        yield conn


@asynccontextmanager
async def open_connection(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[FlowConnection]:
    """Connect over TCP (or TLS with ``ssl``) and run flowproto on it.

    ``async with open_connection("127.0.0.1", 7000) as conn: stream = await
    conn.open_stream()``.

    Args:
        host: the server's name or address.
        port: its port.
        ssl: run TLS with this context (``ssl.create_default_context(cafile=...)``, and
            ``load_cert_chain(...)`` to present a client certificate).
        server_hostname: the name the server's certificate must carry; defaults to ``host``.
        **kwargs: those of :func:`open_flow_connection`, and ``reconnect``: ``True`` (or a
            :class:`flowproto.Reconnect`) asks the server for a session (spec §15) and,
            when the transport is lost (EOF or reset without GOAWAY, a keepalive or write
            timeout), connects again by that policy (backoff with jitter, within its
            deadline, counted from the loss) and resumes: the streams go on, nothing lost
            or received twice; ``send()`` and ``receive()`` only wait meanwhile. Past the
            deadline they raise :class:`ConnectionLostError` with ``delivered``. Sent
            messages are kept until the server reports them consumed: at most the
            windows it grants (spec §15.5).

    Raises:
        OSError: the TCP connection could not be made.
        ConnectionLostError: the TLS handshake failed (its reason is in the message, the
            ``ssl.SSLError`` is the ``__cause__``), or the peer refused or closed the
            connection; ``retryable`` if it said OVERLOADED.
        HandshakeTimeout: no flowproto handshake within ``handshake_timeout``.
    """
    options = _Options(**kwargs)
    loop = asyncio.get_running_loop()

    def connect(
        factory: Callable[[], asyncio.BaseProtocol],
    ) -> Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]:
        return loop.create_connection(
            factory,
            host,
            port,
            ssl=ssl,
            server_hostname=(server_hostname or host) if ssl is not None else None,
            ssl_handshake_timeout=options.handshake_timeout if ssl is not None else None,
        )

    conn = await _connected(connect, options, Role.INITIATOR, redial=connect)
    async with _running(conn, options):
        yield conn


@asynccontextmanager
async def open_unix_connection(
    path: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[FlowConnection]:
    """Connect over a Unix socket and run flowproto on it.

    Args:
        path: the socket file.
        ssl: run TLS over the socket (rarely needed: the file's permissions already say
            who may connect); ``server_hostname`` is then needed if the context checks it.
        server_hostname: the name the server's certificate must carry.
        **kwargs: those of :func:`open_flow_connection`, and ``reconnect`` as for
            :func:`open_connection` (a new connection to ``path`` resumes the session).

    Raises:
        OSError: nobody listens on ``path``.
        ConnectionLostError, HandshakeTimeout: as :func:`open_connection`.
    """
    options = _Options(**kwargs)
    loop = asyncio.get_running_loop()

    def connect(
        factory: Callable[[], asyncio.BaseProtocol],
    ) -> Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]:
        return loop.create_unix_connection(
            factory,
            path,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=options.handshake_timeout if ssl is not None else None,
        )

    conn = await _connected(connect, options, Role.INITIATOR, redial=connect)
    async with _running(conn, options):
        yield conn


class _Refusal(asyncio.Protocol):
    """A connection past max_connections: preface, HELLO and GOAWAY(OVERLOADED,
    retry_after_ms), then closed before anything of it is processed (spec §10.1)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        core = Connection(Role.ACCEPTOR)
        core.close(ErrorCode.OVERLOADED, self.reason, retry_after_ms=OVERLOADED_RETRY_AFTER_MS)
        transport.write(core.data_to_send())
        if transport.can_write_eof():
            transport.write_eof()  # spec §10.2: the peer reads the GOAWAY, then EOF
        loop = asyncio.get_running_loop()
        loop.call_later(CLOSE_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # read and dropped, so closing does not reset the connection

    def eof_received(self) -> bool:
        return False


class _Admission(asyncio.Protocol):
    """A connection waiting for room in the server's memory budget (spec §8.9 B2), before
    its preface and HELLO: reading is paused (what arrives meanwhile is kept), and once
    ``wait()`` returns, ``admitted(transport, pending, eof)`` hands the transport to a new
    FlowConnection, which the budget then admits or refuses with GOAWAY(OVERLOADED)."""

    def __init__(
        self,
        wait: Callable[[], Awaitable[None]],
        admitted: Callable[[asyncio.Transport, list[bytes], bool], None],
        track: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> None:
        self.wait = wait
        self.admitted = admitted
        self.track = track
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.eof = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()
        self.task = self.track(self.admit())

    async def admit(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            await self.wait()
        except asyncio.CancelledError:  # the server closed first
            transport.abort()
            raise
        if not transport.is_closing():
            self.admitted(transport, self.pending, self.eof)

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)  # what a TLS layer had decrypted before the pause

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the connection-to-be decides

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()


class FlowServer:
    """A flowproto server, made by :func:`serve` or :func:`serve_unix` (as
    ``asyncio.start_server`` makes an ``asyncio.Server``).

    ``handler(stream)`` runs in a task for every stream a peer opens. A handler that
    returns half-closes its stream; one that raises resets it with INTERNAL_ERROR; one
    whose stream the peer resets is cancelled (spec §10.3). ``on_connection_end``, if
    given, is called once per served connection when it and its handlers are done.
    """

    def __init__(
        self,
        handler: StreamHandler,
        listen: Callable[[Callable[[], asyncio.BaseProtocol]], Awaitable[asyncio.Server]],
        options: _Options,
        *,
        max_connections: int | None = None,
        on_close: Callable[[], object] | None = None,
        on_connection_end: ConnectionEndCallback | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self._handler = handler
        self._listen = listen
        self._options = options
        self._max_connections = max_connections
        self._on_close = on_close  # serve_unix: remove the socket file
        self._on_connection_end = on_connection_end
        self._server: asyncio.Server | None = None
        self._connections: set[FlowConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # one per connection
        self._handlers: set[asyncio.Task[None]] = set()  # one per stream
        self._closing = False
        self._closed: asyncio.Future[None] | None = None
        self._log = RateLimitedLog(_log)  # one line per kind per 10 s
        # spec §15.6: this server's sessions, found by token when a peer resumes one.
        self._sessions: SessionStore[Offer] | None = (
            SessionStore() if options.resume_timeout is not None else None
        )
        #: Connections refused for ``max_connections`` so far.
        self.refused = 0

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (``sockets[0].getsockname()`` has the port)."""
        return tuple(self._server.sockets) if self._server is not None else ()

    def is_serving(self) -> bool:
        """True while the server accepts connections."""
        return self._server is not None and self._server.is_serving()

    async def start_serving(self) -> None:
        """Listen and accept (``serve`` already did; calling again does nothing)."""
        if self._server is None and not self._closing:
            self._server = await self._listen(self._new_protocol)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called, or until cancelled (then it closes the
        server and waits for it, as ``asyncio.Server.serve_forever`` does)."""
        await self.start_serving()
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.shield(self._closed)
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise

    def close(self) -> None:
        """Stop listening, and close every connection gracefully: GOAWAY now (spec §10.4),
        open streams get ``close_grace`` seconds to finish, then their handlers are
        cancelled and the streams reset. :meth:`wait_closed` waits for all of it."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._on_close is not None:
            self._on_close()
        for conn in list(self._connections):
            conn.close_soon()
        loop = asyncio.get_running_loop()
        for task in list(self._handlers):
            loop.call_later(self._options.close_grace, task.cancel)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the listeners and every connection are closed."""
        if self._server is not None:
            await self._server.wait_closed()
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def __aenter__(self) -> FlowServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def _new_protocol(self) -> asyncio.BaseProtocol:
        limit = self._max_connections
        if self._closing or (limit is not None and len(self._tasks) >= limit):
            reason = (
                "the server is closing"
                if self._closing
                else f"too many connections (max_connections={limit})"
            )
            self.refused += 1
            self._log.warning(
                ("refused", "max_connections"),
                asyncio.get_running_loop().time(),
                "flowproto: refused a connection: %s; GOAWAY(OVERLOADED, retry after %d ms)",
                reason,
                OVERLOADED_RETRY_AFTER_MS,
            )
            return _Refusal(reason)
        if self._options.memory_budget is not None:
            # spec §8.9 B2: the connection may have to wait for room before its HELLO.
            return _Admission(self._options.admitted, self._admitted, self._track)
        conn = self._options.connection(Role.ACCEPTOR, sessions=self._sessions)
        self._track(self._serve_connection(conn))
        return conn

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # A connection's task (waiting for admission, or served): wait_closed waits for it.
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _admitted(self, transport: asyncio.Transport, pending: list[bytes], eof: bool) -> None:
        # The budget admits it: the connection takes the transport over, as if just made.
        conn = self._options.connection(Role.ACCEPTOR, sessions=self._sessions)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        for data in pending:
            conn.data_received(data)
        if eof:
            conn.eof_received()
        transport.resume_reading()
        self._track(self._serve_connection(conn))

    async def _serve_connection(self, conn: FlowConnection) -> None:
        options = self._options
        error: BaseException | None = None
        try:
            self._connections.add(conn)
            async with _running(conn, options):
                if self._closing:
                    conn.close_soon()
                running: set[asyncio.Task[None]] = set()
                while True:
                    try:
                        stream = await conn.accept_stream()
                    except ConnectionLostError:
                        break
                    if len(running) >= conn.local_settings.max_streams:
                        # spec §6.4: refused under load, before any of it was processed
                        # (the peer may retry): handlers that outlive their streams never
                        # pile up.
                        await stream.reset(ErrorCode.REFUSED_STREAM, "too many handlers running")
                        continue
                    task = asyncio.get_running_loop().create_task(self._run_handler(stream))
                    stream.cancel_on_reset(task)
                    for tasks in (running, self._handlers):
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                if running:
                    await asyncio.wait(running)
        except (ConnectionLostError, HandshakeTimeout) as exc:
            error = exc  # one bad connection never stops the server
        except Exception as exc:
            error = exc
            _log.exception("flowproto: serving a connection failed")
        finally:
            self._connections.discard(conn)
        if self._on_connection_end is not None:
            self._on_connection_end(conn, error)

    async def _run_handler(self, stream: FlowStream) -> None:
        try:
            await self._handler(stream)
        except (StreamResetError, ConnectionLostError, EndOfStream):
            pass
        except asyncio.CancelledError:
            # The peer reset the stream (spec §10.3), or the server's grace ran out.
            stream.reset_now(ErrorCode.CANCEL, "handler cancelled")
        except Exception as exc:
            # One failing handler resets its own stream; the connection and server go on.
            if self._log.warning(
                ("handler", type(exc).__name__),
                asyncio.get_running_loop().time(),
                "flowproto: stream %d handler failed: %r",
                stream.stream_id,
                exc,
            ):
                _log.debug("flowproto: the handler's traceback", exc_info=True)
            stream.reset_now(ErrorCode.INTERNAL_ERROR, f"handler failed: {type(exc).__name__}")
        else:
            with suppress(StreamResetError, ConnectionLostError):
                await stream.aclose()


async def serve(
    handler: StreamHandler,
    port: int,
    *,
    host: str | None = None,
    ssl: _ssl.SSLContext | None = None,
    max_connections: int | None = None,
    backlog: int = 100,
    reuse_address: bool | None = None,
    on_connection_end: ConnectionEndCallback | None = None,
    **kwargs: Any,
) -> FlowServer:
    """Serve flowproto over TCP; like ``asyncio.start_server``, it returns listening.

    ``server = await serve(handler, 0)`` picks a free port:
    ``server.sockets[0].getsockname()[1]``. Use ``async with server:`` and
    ``await server.serve_forever()``.

    Args:
        handler: ``await handler(stream)`` for every stream a peer opens.
        port: the TCP port; 0 picks a free one.
        host: the address to listen on; ``None``: every interface.
        ssl: serve TLS with this context (``ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH)`` with ``load_cert_chain(...)``; with
            ``verify_mode = ssl.CERT_REQUIRED``, mutual TLS). The TLS handshake is
            bounded by ``handshake_timeout``.
        max_connections: connections served at once; one more is answered with its
            preface, HELLO and GOAWAY(OVERLOADED, retry_after_ms) and closed, before any
            of its streams is processed (spec §10.1). ``None``: no cap.
        backlog: the listen backlog.
        reuse_address: as ``loop.create_server``.
        on_connection_end: ``on_connection_end(conn, error)`` once for every connection
            served (not those refused for ``max_connections``, which ``refused`` counts),
            when it has ended and its handlers are done, whether or not its handshake
            completed: ``error`` is what ended it (a ``ConnectionLostError``, such as a
            memory-budget refusal, or ``HandshakeTimeout``), or ``None`` if it ended
            normally (then ``conn.close_reason`` says how).
        **kwargs: those of :func:`open_flow_connection` (``handshake_timeout``,
            ``idle_timeout``, ``close_grace``, ...), and ``resume_timeout``: grant
            sessions (spec §15) and keep one this many seconds after its transport is
            lost, for its client to reconnect and resume (``open_connection(...,
            reconnect=True)``); the handler's stream only waits meanwhile. ``None`` (the
            default): no sessions. A client that presents a token this server does not
            keep gets GOAWAY(SESSION_UNKNOWN), and an address with too many such failures
            ENHANCE_YOUR_CALM (spec §15.9).
    """
    options = _Options(**kwargs)
    loop = asyncio.get_running_loop()

    def listen(factory: Callable[[], asyncio.BaseProtocol]) -> Awaitable[asyncio.Server]:
        return loop.create_server(
            factory,
            host,
            port,
            ssl=ssl,
            ssl_handshake_timeout=options.handshake_timeout if ssl is not None else None,
            backlog=backlog,
            reuse_address=reuse_address,
        )

    server = FlowServer(
        handler,
        listen,
        options,
        max_connections=max_connections,
        on_connection_end=on_connection_end,
    )
    await server.start_serving()
    return server


async def serve_unix(
    handler: StreamHandler,
    path: str,
    *,
    mode: int | None = DEFAULT_UNIX_MODE,
    ssl: _ssl.SSLContext | None = None,
    max_connections: int | None = None,
    backlog: int = 100,
    on_connection_end: ConnectionEndCallback | None = None,
    **kwargs: Any,
) -> FlowServer:
    """Serve flowproto on a Unix socket at ``path``, as :func:`serve` does on TCP.

    The socket file is made as the Trio layer makes it (``flowproto.unix_sockets``):
    permissions ``mode`` (0600 by default: only this user may connect), a stale socket
    replaced and anything else refused, and the file removed when the server closes.

    Args:
        handler: ``await handler(stream)`` for every stream a peer opens.
        path: the socket file.
        mode: its permissions; ``None`` honours the umask.
        ssl: serve TLS over the socket.
        max_connections: as :func:`serve`.
        backlog: the listen backlog.
        on_connection_end: as :func:`serve`.
        **kwargs: those of :func:`open_flow_connection`, and ``resume_timeout`` as for
            :func:`serve`.

    Raises:
        FileExistsError: ``path`` exists and is not a socket.
        OSError: another server listens on ``path``, or binding failed.
    """
    options = _Options(**kwargs)
    loop = asyncio.get_running_loop()
    sock, socket_file = bind_unix_socket(path, mode=mode, backlog=backlog)

    def listen(factory: Callable[[], asyncio.BaseProtocol]) -> Awaitable[asyncio.Server]:
        return loop.create_unix_server(
            factory,
            sock=sock,
            ssl=ssl,
            ssl_handshake_timeout=options.handshake_timeout if ssl is not None else None,
        )

    server = FlowServer(
        handler,
        listen,
        options,
        max_connections=max_connections,
        on_close=socket_file.remove,
        on_connection_end=on_connection_end,
    )
    try:
        await server.start_serving()
    except BaseException:
        socket_file.remove()
        sock.close()
        raise
    return server
