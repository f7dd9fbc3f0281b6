"""Opening connections and serving them: TCP, TLS, Unix sockets, any listener."""

from __future__ import annotations

import errno
import logging
import os
import socket as _stdlib_socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import trio

if sys.version_info < (3, 11):  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

from .. import (
    AutoTune,
    Codec,
    CodecName,
    Connection,
    ErrorCode,
    Limits,
    MemoryBudget,
    RateLimitedLog,
    Role,
    Settings,
)
from ._connection import FlowConnection
from ._constants import (
    DEFAULT_CLOSE_GRACE,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
)
from ._errors import ConnectionLostError, HandshakeTimeout, StreamResetError
from ._stream import FlowStream

__all__ = [
    "open_connection",
    "open_flow_connection",
    "open_unix_connection",
    "serve",
    "serve_connection",
    "serve_listeners",
    "serve_unix",
]

_log = logging.getLogger("flowproto")
_limited_log = RateLimitedLog(_log)  # for serve_connection called on its own


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
) -> AsyncIterator[FlowConnection]:
    """Run flowproto over an existing Trio stream (TLS, memory streams, ...).

    Args:
        transport: the byte stream; it is closed when the block exits.
        initiator: True for the side that connected (odd stream ids, spec §6.1).
        settings: what this side accepts (spec §3.2); defaults to ``Settings()``.
        codec: ``"msgpack"`` (Python objects) or ``"raw"`` (bytes), or a :class:`Codec`.
        handshake_timeout: seconds allowed for the preface and HELLO exchange.
        ping_timeout: seconds a keepalive PING may go unanswered (spec §11).
        close_grace: seconds open streams may finish after the block exits.
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

    Raises:
        HandshakeTimeout: the peer did not complete the handshake in time.
        ConnectionLostError: the transport failed or the peer broke the protocol.
    """
    role = Role.INITIATOR if initiator else Role.ACCEPTOR
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
    )
    try:
        async with trio.open_nursery() as nursery:
            try:
                await conn.start(
                    nursery, handshake_timeout=handshake_timeout, idle_timeout=idle_timeout
                )
                yield conn
            finally:
                with trio.CancelScope(shield=True):
                    await conn.aclose(close_grace)
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

    Keyword arguments are those of :func:`open_flow_connection`.
    """
    transport: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if ssl_context is not None:
        transport = trio.SSLStream(
            transport, ssl_context, server_hostname=server_hostname or host, https_compatible=True
        )
    async with open_flow_connection(transport, initiator=True, **kwargs) as conn:
        yield conn


@asynccontextmanager
async def open_unix_connection(path: str, **kwargs: Any) -> AsyncIterator[FlowConnection]:
    """Connect over a Unix socket and run flowproto on it."""
    transport = await trio.open_unix_socket(path)
    async with open_flow_connection(transport, initiator=True, **kwargs) as conn:
        yield conn


StreamHandler = Callable[[FlowStream], Awaitable[None]]


async def serve_connection(
    transport: trio.abc.Stream,
    handler: StreamHandler,
    kwargs: dict[str, Any],
    *,
    log: RateLimitedLog | None = None,
) -> None:
    """Serve one accepted transport: ``handler(stream)`` for every stream its peer opens.

    ``kwargs`` are :func:`open_flow_connection`'s; ``log`` limits the warnings about
    failing handlers (one line per 10 s per kind, by default shared by the process).
    """
    log = log if log is not None else _limited_log
    try:
        async with (
            open_flow_connection(transport, initiator=False, **kwargs) as conn,
            trio.open_nursery() as nursery,
        ):
            running: set[FlowStream] = set()  # streams whose handler has not returned
            while True:
                try:
                    stream = await conn.accept_stream()
                except ConnectionLostError:
                    break
                if len(running) >= conn.local_settings.max_streams:
                    # spec §6.4: refused under load, before any of it was processed (the
                    # peer may retry): handlers that outlive their streams never pile up.
                    await stream.reset(ErrorCode.REFUSED_STREAM, "too many handlers running")
                    continue
                running.add(stream)
                nursery.start_soon(_run_stream_handler, handler, stream, running, log)
    except BaseException as exc:
        # One bad connection never stops the server: its own failures end here, anything
        # else (a cancellation above all) goes on up, out of any group it came in.
        if isinstance(exc, BaseExceptionGroup):
            rest = exc.split(_CONNECTION_FAILURES)[1]
            if rest is not None:
                raise rest  # noqa: B904 - the rest of the same group, not a new error
        elif not isinstance(exc, _CONNECTION_FAILURES):
            raise


#: What ends one connection without being the server's problem.
_CONNECTION_FAILURES: Final = (ConnectionLostError, HandshakeTimeout, trio.BrokenResourceError)


async def _run_stream_handler(
    handler: StreamHandler, stream: FlowStream, running: set[FlowStream], log: RateLimitedLog
) -> None:
    try:
        with trio.CancelScope() as scope:
            stream._handler_scope = scope  # cancelled if the peer resets the stream
            if stream._reset is not None and stream._reset.remote:
                scope.cancel()
            try:
                await handler(stream)
            except (StreamResetError, ConnectionLostError):
                pass
            except Exception as exc:
                # One failing handler resets its own stream; the connection and server go on.
                if log.warning(
                    ("handler", type(exc).__name__),
                    trio.current_time(),
                    "flowproto: stream %d handler failed: %r",
                    stream.stream_id,
                    exc,
                ):
                    _log.debug("flowproto: the handler's traceback", exc_info=True)
                await stream.reset(
                    ErrorCode.INTERNAL_ERROR, f"handler failed: {type(exc).__name__}"
                )
            else:
                await stream.aclose()
    finally:
        running.discard(stream)


#: accept() errors that mean "out of descriptors or memory now": back off, log, go on.
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Longest pause between accept() attempts while descriptors are exhausted.
MAX_ACCEPT_BACKOFF: Final = 1.0
#: How long a connection refused for max_connections is told to wait (GOAWAY OVERLOADED).
OVERLOADED_RETRY_AFTER_MS: Final = 1000
#: Seconds given to writing the refusal of a connection over max_connections.
REFUSAL_TIMEOUT: Final = 5.0


async def serve_listeners(
    handler: StreamHandler,
    listeners: list[Any],
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = None,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve flowproto on listeners: ``handler(stream)`` runs for every stream a peer opens.

    A handler that returns half-closes its stream; one that raises resets it with
    INTERNAL_ERROR. Keyword arguments are those of :func:`open_flow_connection`.

    Args:
        max_connections: connections served at once; one more is answered with its
            preface, HELLO and GOAWAY(OVERLOADED, retry_after_ms) and closed, before any
            of its streams is processed (spec §10.1). ``None``: no cap.

    Out of descriptors (EMFILE and its kin), accepting backs off (up to 1 s) and logs one
    line per 10 s, with a count of the failures held back; the listeners close on exit.
    """
    if max_connections is not None and max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, not {max_connections}")
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in listeners]
    active = [0]
    log = RateLimitedLog(_log)  # this server's warnings, one line per kind per 10 s

    async def on_connection(transport: trio.abc.Stream) -> None:
        if max_connections is not None and active[0] >= max_connections:
            await _refuse(transport, f"too many connections (max_connections={max_connections})")
            return
        active[0] += 1
        try:
            await serve_connection(transport, handler, kwargs, log=log)
        finally:
            active[0] -= 1

    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, listener, on_connection, nursery, log)
            task_status.started(listeners)
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()


async def _accept_loop(
    listener: trio.abc.Listener[Any],
    on_connection: Callable[[trio.abc.Stream], Awaitable[None]],
    nursery: trio.Nursery,
    log: RateLimitedLog,
) -> None:
    backoff = 0.01
    while True:
        try:
            transport = await listener.accept()
        except OSError as exc:
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            log.warning(
                ("accept", exc.errno),
                trio.current_time(),
                "flowproto: accept failed: %s; backing off (spec §10.7: descriptors bound)",
                errno.errorcode.get(exc.errno or 0, str(exc.errno)),
            )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_ACCEPT_BACKOFF)
            continue
        backoff = 0.01
        nursery.start_soon(on_connection, transport)


async def _refuse(transport: trio.abc.Stream, reason: str) -> None:
    """Preface, HELLO and GOAWAY(OVERLOADED, retry_after_ms), then close (spec §10.1)."""
    core = Connection(Role.ACCEPTOR)
    core.close(ErrorCode.OVERLOADED, reason, retry_after_ms=OVERLOADED_RETRY_AFTER_MS)
    with trio.move_on_after(REFUSAL_TIMEOUT):
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await transport.send_all(core.data_to_send())
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(transport)


async def serve(
    handler: StreamHandler,
    port: int,
    *,
    host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve flowproto over TCP, following ``trio.serve_tcp``: ``port=0`` picks a free port.

    Use ``listeners = await nursery.start(serve, handler, 0)`` and read the bound port
    from ``listeners[0].socket.getsockname()`` (with ``ssl_context``, the listeners are
    ``trio.SSLListener``: use ``listeners[0].transport_listener.socket``).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    await serve_listeners(
        handler, listeners, ssl_context=ssl_context, task_status=task_status, **kwargs
    )


async def serve_unix(
    handler: StreamHandler,
    path: str,
    *,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve flowproto on a Unix socket at ``path`` (removed first if it is a stale socket)."""
    sock = trio.socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        if os.path.exists(path):
            os.unlink(path)
        await sock.bind(path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    await serve_listeners(handler, [trio.SocketListener(sock)], task_status=task_status, **kwargs)
