"""Serving: TCP, TLS, Unix sockets, any listener (opening connections is :mod:`._open`).

Serving has two levels. :func:`serve_transports` is ``trio.serve_listeners`` with the caps a
server needs (issue 12): at most ``max_connections`` at once (one more is refused with
GOAWAY(OVERLOADED), retryable), accept() backing off when descriptors run out, one log line
per kind and interval, TLS around every listener with ``ssl_context``. It hands each
accepted transport to a function of the caller's. :func:`serve_listeners` (and so
:func:`serve` and :func:`serve_unix`) uses it to run flowproto on each transport and a
handler on each stream.

A Unix socket is created by :func:`open_unix_listener`: its file gets the permissions asked
for (0600 by default: only this user may connect), is never put in the place of anything
but a stale socket, and is removed when the listener closes.
"""

from __future__ import annotations

import errno
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Final

import trio

if sys.version_info < (3, 11):  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

from .. import (
    Connection,
    ErrorCode,
    RateLimitedLog,
    Role,
    SessionStore,
)
from ._errors import ConnectionLostError, HandshakeTimeout, StreamResetError
from ._open import open_flow_connection
from ._stream import FlowStream
from ._unix import DEFAULT_UNIX_MODE, open_unix_listener

__all__ = [
    "serve",
    "serve_connection",
    "serve_listeners",
    "serve_transports",
    "serve_unix",
]

_log = logging.getLogger("flowproto")
_limited_log = RateLimitedLog(_log)  # for serve_connection called on its own


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
        ssl_context: TLS around every listener (see :func:`serve_transports`).
        max_connections: connections served at once; one more is answered with its
            preface, HELLO and GOAWAY(OVERLOADED, retry_after_ms) and closed, before any
            of its streams is processed (spec §10.1). ``None``: no cap.

    Out of descriptors (EMFILE and its kin), accepting backs off (up to 1 s) and logs one
    line per 10 s, with a count of the failures held back; the listeners close on exit.
    """
    log = RateLimitedLog(_log)  # this server's warnings, one line per kind per 10 s
    if kwargs.get("resume_timeout") is not None and kwargs.get("sessions") is None:
        kwargs["sessions"] = SessionStore()  # spec §15.6: this server's sessions, by token

    async def on_transport(transport: trio.abc.Stream) -> None:
        await serve_connection(transport, handler, kwargs, log=log)

    await serve_transports(
        on_transport,
        listeners,
        ssl_context=ssl_context,
        max_connections=max_connections,
        log=log,
        task_status=task_status,
    )


async def serve_transports(
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    listeners: list[Any],
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    log: RateLimitedLog | None = None,
    on_refused: Callable[[str], object] | None = None,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``trio.serve_listeners`` with a server's caps: ``handler(transport)`` per connection.

    For a server that runs flowproto on each transport itself (with
    :func:`open_flow_connection`, ``initiator=False``); :func:`serve_listeners` is this
    with a handler per stream. The transport is closed when ``handler`` returns.

    Args:
        handler: called as ``handler(transport)`` for each accepted connection.
        listeners: ``trio.abc.Listener`` objects (``trio.open_tcp_listeners``,
            :func:`open_unix_listener`, ...); they are closed when this returns.
        ssl_context: wrap every listener in ``trio.SSLListener``: each transport is a
            ``trio.SSLStream`` whose TLS handshake runs on its first read or write, so in
            the flowproto handshake and within its ``handshake_timeout``. A peer that fails
            it (no client certificate where ``ssl_context`` requires one, plain TCP) never
            gets a byte to the handler's streams. The context is the caller's, e.g.
            ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` with
            ``load_cert_chain(...)``, and ``verify_mode = ssl.CERT_REQUIRED`` with
            ``load_verify_locations(...)`` for mutual TLS.
        max_connections: handlers running at once; a connection past them is answered
            with the preface, HELLO and GOAWAY(OVERLOADED, ``retry_after_ms`` 1000) and
            closed, before anything of it is processed (spec §10.1): the peer may retry.
            ``None``: no cap.
        handler_nursery: where the handlers run (default: a nursery of this call), as in
            ``trio.serve_listeners``.
        log: where the warnings go (accept failures, refusals): one line per kind per
            10 s, with a count of those held back. Default: a new ``RateLimitedLog`` on
            the ``flowproto`` logger.
        on_refused: called with the reason for each connection refused for
            ``max_connections`` (to count them: every one, where the log holds some back).
        task_status: ``started`` with the listeners (the ``trio.SSLListener`` wrappers
            with ``ssl_context``).

    Out of descriptors (EMFILE, ENFILE, ENOMEM, ENOBUFS), accepting backs off from 10 ms
    to 1 s; other accept errors end the server.
    """
    if max_connections is not None and max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, not {max_connections}")
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in listeners]
    active = [0]
    limited = log if log is not None else RateLimitedLog(_log)

    async def on_connection(transport: trio.abc.Stream) -> None:
        try:
            if max_connections is not None and active[0] >= max_connections:
                reason = f"too many connections (max_connections={max_connections})"
                if on_refused is not None:
                    on_refused(reason)
                limited.warning(
                    ("refused", "max_connections"),
                    trio.current_time(),
                    "flowproto: refused a connection: %s; GOAWAY(OVERLOADED, retry after %d ms)",
                    reason,
                    OVERLOADED_RETRY_AFTER_MS,
                )
                await _refuse(transport, reason)
                return
            active[0] += 1
            try:
                await handler(transport)
            finally:
                active[0] -= 1
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(transport)

    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(
                    _accept_loop, listener, on_connection, handler_nursery or nursery, limited
                )
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

    Args:
        handler: ``handler(stream)`` for every stream a peer opens.
        port: the TCP port; 0 picks a free one.
        host: the address to listen on; ``None``: every interface.
        ssl_context: serve TLS (and with ``verify_mode = ssl.CERT_REQUIRED``, mutual
            TLS) on every connection; see :func:`serve_transports`.
        **kwargs: those of :func:`serve_listeners` (``max_connections``) and
            :func:`open_flow_connection` (``handshake_timeout``, ``idle_timeout``, ...).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    await serve_listeners(
        handler, listeners, ssl_context=ssl_context, task_status=task_status, **kwargs
    )


async def serve_unix(
    handler: StreamHandler,
    path: str,
    *,
    mode: int | None = DEFAULT_UNIX_MODE,
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve flowproto on a Unix socket at ``path``, as :func:`serve` does on TCP.

    The socket file is made by :func:`open_unix_listener` (permissions ``mode``, 0600 by
    default; a stale socket is replaced, anything else is not) and removed on exit.
    Keyword arguments are those of :func:`serve_listeners` (``ssl_context``,
    ``max_connections``) and :func:`open_flow_connection`.
    """
    listener = open_unix_listener(path, mode=mode)
    await serve_listeners(handler, [listener], task_status=task_status, **kwargs)
