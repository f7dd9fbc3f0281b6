"""Opening connections: TCP, TLS, Unix sockets, any connected socket.

Each ``open_*`` function is an async context manager around one :class:`FlowConnection`:
it connects (``loop.create_connection`` with the connection as the protocol), waits for
the flowproto handshake, and on exit closes gracefully (spec §10.4) — at once if the
block was cancelled. Two pieces are shared with the server (``_serve``), which runs each
accepted connection the same way: :class:`ConnectionOptions` (what every open function
and the server take) makes the connection, and :func:`run_connection` runs its
handshake, the block and the close. ``open_connection`` and ``open_unix_connection``
also give the connection a way to connect again, for ``reconnect`` (spec §15.6).
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .. import (
    AutoTune,
    Codec,
    CodecName,
    Limits,
    MemoryBudget,
    Reconnect,
    Role,
    SessionStore,
    Settings,
)
from ..iolayer import (
    DEFAULT_CLOSE_GRACE,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
)
from ._admission import wait_for_room
from ._connection import FlowConnection, transport_failure
from ._resume import Connect, Offer

__all__ = [
    "ConnectionOptions",
    "open_connection",
    "open_flow_connection",
    "open_unix_connection",
    "run_connection",
]


@dataclass(frozen=True)
class ConnectionOptions:
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
async def run_connection(
    conn: FlowConnection, options: ConnectionOptions
) -> AsyncIterator[FlowConnection]:
    """The handshake, the block, and the close: graceful, or at once if cancelled."""
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
    options: ConnectionOptions,
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
    options = ConnectionOptions(
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
    async with run_connection(conn, options):
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
    options = ConnectionOptions(**kwargs)
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
    async with run_connection(conn, options):
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
    options = ConnectionOptions(**kwargs)
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
    async with run_connection(conn, options):
        yield conn
