"""Serving: TCP, TLS and Unix sockets, a handler task for every stream a peer opens.

:func:`serve` is ``asyncio.start_server`` for flowproto: it returns a :class:`FlowServer`
(``serve_forever``, ``close``, ``wait_closed``, ``sockets``, ``async with``) that runs
``handler(stream)`` in a task for every stream a peer opens; :func:`serve_unix` does the
same on a Unix socket file (``flowproto.unix_sockets``). Each accepted transport's
protocol is chosen as it arrives: past ``max_connections`` a :class:`_Refusal`
(GOAWAY(OVERLOADED), spec §10.1); with a memory budget a :class:`PendingAdmission`, which
waits for room first (spec §8.9 B2); otherwise a :class:`FlowConnection`, made and run as
the open functions make and run theirs (``_open``: :class:`ConnectionOptions`,
:func:`run_connection`). With ``resume_timeout`` the server keeps one
:class:`flowproto.SessionStore` for its connections: a peer that reconnects presents its
token on a fresh connection, which hands its transport over to the session's connection
(``_resume``, spec §15.6).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any, Final

from .. import (
    Connection,
    ErrorCode,
    RateLimitedLog,
    Role,
    SessionStore,
)
from ..iolayer import CLOSE_LINGER
from ..unix_sockets import DEFAULT_UNIX_MODE, bind_unix_socket
from ._admission import PendingAdmission
from ._connection import FlowConnection
from ._errors import ConnectionLostError, EndOfStream, HandshakeTimeout, StreamResetError
from ._open import ConnectionOptions, run_connection
from ._resume import Offer
from ._stream import FlowStream

__all__ = [
    "ConnectionEndCallback",
    "FlowServer",
    "StreamHandler",
    "serve",
    "serve_unix",
]

_log = logging.getLogger("flowproto")

StreamHandler = Callable[[FlowStream], Awaitable[None]]
#: ``on_connection_end(conn, error)``: a served connection ended (see :func:`serve`).
ConnectionEndCallback = Callable[[FlowConnection, "BaseException | None"], object]

#: How long a connection refused for max_connections is told to wait (GOAWAY OVERLOADED).
OVERLOADED_RETRY_AFTER_MS: Final = 1000


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
        options: ConnectionOptions,
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
            return PendingAdmission(self._options.admitted, self._admitted, self._track)
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
            async with run_connection(conn, options):
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
    options = ConnectionOptions(**kwargs)
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
    options = ConnectionOptions(**kwargs)
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
