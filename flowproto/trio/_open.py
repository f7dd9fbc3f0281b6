"""Opening connections: TCP, TLS, Unix sockets, any transport.

Each ``open_*`` function is an async context manager around one :class:`FlowConnection`:
:func:`open_flow_connection` runs flowproto on a transport the caller made (either role;
the server side of :mod:`._serve` uses it for every accepted transport), and
:func:`open_connection` and :func:`open_unix_connection` make the transport themselves
(and, with ``reconnect``, make a new one when a resumable session loses it, spec §15).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

if sys.version_info < (3, 11):  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

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
from ._connection import FlowConnection

__all__ = ["open_connection", "open_flow_connection", "open_unix_connection"]


@asynccontextmanager
async def open_flow_connection(
    transport: trio.abc.Stream,
    *,
    initiator: bool = True,
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
    reconnect: Reconnect | None = None,
    connect: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    resume_timeout: float | None = None,
    sessions: SessionStore[FlowConnection] | None = None,
) -> AsyncIterator[FlowConnection]:
    """Run flowproto over an existing Trio stream (TLS, memory streams, ...).

    Args:
        transport: the byte stream; it is closed when the block exits.
        initiator: True for the side that connected (odd stream ids, spec §6.1).
        settings: what this side accepts (spec §3.2); defaults to ``Settings()``.
        codec: ``"msgpack"`` (Python objects) or ``"raw"`` (bytes), or a :class:`Codec`.
        handshake_timeout: seconds allowed for the preface and HELLO exchange.
        ping_timeout: seconds a keepalive PING may go unanswered (spec §11).
        close_grace: seconds open streams may finish after the block exits (none if the
            block was cancelled: then they are reset with CANCEL at once).
        idle_timeout: if set, seconds without any stream after which the connection
            closes with GOAWAY(TIMEOUT) (spec §11); ``None`` (the default) never does.
        frame_timeout: seconds a frame may take to arrive once its first byte has; then
            the connection ends with GOAWAY(TIMEOUT) (spec §11).
        write_timeout: seconds the transport may take to accept each write of at most
            ``WRITE_CHUNK`` bytes; then the connection is lost with TIMEOUT (spec §11).
        limits: what the peer may cost this side: queued replies, the glitch budget
            (spec §10.7); defaults to ``Limits()``.
        autotune: size the receive windows from what the consumer does (spec §8.9): the
            settings' windows are where they start. ``True`` (the default) uses
            ``AutoTune()`` (a 100 ms latency target); pass an ``AutoTune`` to change it,
            or ``False`` to keep the windows of ``settings`` (spec §8.6).
        memory_budget: a :class:`flowproto.MemoryBudget` shared by every connection
            given it: their connection credit together stays within it, in fair shares
            (spec §8.9). None by default: each connection is bounded by its own
            ``connection_bytes`` (a process-wide default would make unrelated connections,
            such as a client and a server in one process, compete and refuse each other).
        pacing: space each stream's messages from the peer's feedback while the peer's
            consumer is the bottleneck (spec §8.10); off by default.
        reconnect: the initiator asks for a session (spec §15) and, when the transport is
            lost, calls ``connect()`` for a new one by this policy (backoff with jitter,
            within its deadline) and resumes: its streams go on, nothing lost or sent
            twice; ``send()`` and ``receive()`` wait meanwhile. Past the deadline they
            raise :class:`ConnectionLostError` with ``delivered``. Needs ``connect``;
            :func:`open_connection` passes one. Sent messages are kept until the peer
            reports them consumed: at most the windows it grants (spec §15.5).
        connect: opens a new transport to the same peer, for ``reconnect``.
        resume_timeout: the acceptor grants sessions and keeps one this many seconds
            after its transport is lost (spec §15.4); ``None`` (the default): no sessions.
            Resumptions are found in ``sessions``, shared by the connections of a server.
        sessions: where an acceptor's sessions are found by token (spec §15.6);
            :func:`serve` makes one per server when ``resume_timeout`` is set.

    Raises:
        HandshakeTimeout: the peer did not complete the handshake in time.
        ConnectionLostError: the transport failed or the peer broke the protocol.
    """
    role = Role.INITIATOR if initiator else Role.ACCEPTOR
    if reconnect is not None and (connect is None or not initiator):
        raise ValueError("reconnect needs connect, on the initiator (spec §15.6)")
    if resume_timeout is not None and not initiator and sessions is None:
        sessions = SessionStore()
    if memory_budget is not None:
        # spec §8.9 B2: floors that fit but room lent out: wait (within the handshake
        # time) for members to consume, then make the connection without yielding.
        await wait_for_room(memory_budget, settings, handshake_timeout)
    conn = FlowConnection(
        transport,
        role,
        settings,
        codec,
        ping_timeout,
        limits=limits,
        frame_timeout=frame_timeout,
        write_timeout=write_timeout,
        autotune=(AutoTune() if autotune is True else autotune or None),
        memory_budget=memory_budget,
        pacing=pacing,
        reconnect=reconnect,
        connect=connect,
        sessions=sessions if resume_timeout is not None and not initiator else None,
        resume_timeout=resume_timeout if resume_timeout is not None else 30.0,
    )
    grace = close_grace
    try:
        async with trio.open_nursery() as nursery:
            try:
                await conn.start(
                    nursery, handshake_timeout=handshake_timeout, idle_timeout=idle_timeout
                )
                yield conn
            except trio.Cancelled:
                # Trio's convention for a cancelled close (trio.abc.AsyncResource): close
                # at once. GOAWAY still goes out and open streams are reset with CANCEL,
                # but they get no grace to finish.
                grace = 0.0
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await conn.aclose(grace)
    except BaseExceptionGroup as group:
        # The connection's tasks handle their own errors, so the group holds only what the
        # handshake or the block raised: raise it bare, as a plain ``async with`` would.
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context  # not the group: ``raise`` in ``except`` chains it
            del exc, context


@asynccontextmanager
async def open_connection(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[FlowConnection]:
    """Connect over TCP (or TLS with ``ssl_context``) and run flowproto on it.

    Args:
        host: the server's name or address.
        port: its port.
        ssl_context: run TLS over the TCP connection, with this context (for example
            ``ssl.create_default_context(cafile=...)``, and ``load_cert_chain(...)`` to
            present a client certificate). The TLS handshake happens inside the flowproto
            handshake, so ``handshake_timeout`` bounds both.
        server_hostname: the name the server's certificate must carry; defaults to ``host``.
        **kwargs: those of :func:`open_flow_connection`; ``reconnect=True`` (or a
            :class:`flowproto.Reconnect`) resumes the session on a new TCP connection
            when this one is lost (spec §15).

    Raises:
        OSError: the TCP connection could not be made.
        ConnectionLostError: the TLS handshake failed (its reason is in the message, the
            ``ssl.SSLError`` is the ``__cause__``), or the peer refused or closed the
            connection; ``retryable`` if it said OVERLOADED.
        HandshakeTimeout: no flowproto handshake within ``handshake_timeout``.
    """

    async def connect() -> trio.abc.Stream:
        transport: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if ssl_context is not None:
            transport = trio.SSLStream(
                transport,
                ssl_context,
                server_hostname=server_hostname or host,
                https_compatible=True,
            )
        return transport

    if kwargs.get("reconnect") is True:
        kwargs["reconnect"] = Reconnect()
    async with open_flow_connection(
        await connect(), initiator=True, connect=connect, **kwargs
    ) as conn:
        yield conn


@asynccontextmanager
async def open_unix_connection(
    path: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[FlowConnection]:
    """Connect over a Unix socket and run flowproto on it.

    Args:
        path: the socket file.
        ssl_context: run TLS over the socket, as :func:`open_connection` does (rarely
            needed: the file's permissions already say who may connect).
        server_hostname: the name the server's certificate must carry; needed with an
            ``ssl_context`` that checks host names.
        **kwargs: those of :func:`open_flow_connection`.
    """

    async def connect() -> trio.abc.Stream:
        transport: trio.abc.Stream = await trio.open_unix_socket(path)
        if ssl_context is not None:
            transport = trio.SSLStream(
                transport, ssl_context, server_hostname=server_hostname, https_compatible=True
            )
        return transport

    if kwargs.get("reconnect") is True:
        kwargs["reconnect"] = Reconnect()
    transport = await connect()
    async with open_flow_connection(transport, initiator=True, connect=connect, **kwargs) as conn:
        yield conn
