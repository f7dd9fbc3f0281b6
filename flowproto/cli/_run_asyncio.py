"""``send`` and ``receive`` on the asyncio layer (``--backend asyncio``).

The runs over ``flowproto.asyncio``'s public API, in asyncio's idioms: tasks for the
producers and the reporters, a :func:`flowproto.asyncio.serve` server whose handler runs
each stream's consumption, ``loop.add_signal_handler`` for the stop signals. What happens
on a stream is written once for both layers (:class:`~flowproto.cli._sender.Sender`,
:class:`~flowproto.cli._consumer.Consumer`), and so are the live lines, ``--json-lines``,
the metrics and the output rules, so each run returns the same summary dict (the same JSON
field names) as its Trio twin. Sessions (spec §15) as on Trio: ``send`` resumes a lost
connection within ``--reconnect-timeout``, ``receive`` keeps a lost sender's session for
``--resume-timeout``; and the cold resume of spec §15.10: ``receive --output FILE`` goes on
after what an existing ``FILE.partial`` holds, and ``send --input FILE`` whose receiver
restarted (and lost the session) connects anew and starts there
(:class:`~flowproto.cli._sender.Restarts`), with a peer on either layer.
:func:`run_asyncio` is :func:`run_trio`'s twin.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import click

from flowproto import ErrorCode, Reconnect
from flowproto import asyncio as fa

from ._constants import CLOSE_GRACE
from ._consumer import Consumer, ReceiveOptions
from ._errors import EXPECTED_ERRORS, CliError, describe
from ._layer_asyncio import ASYNCIO, serve_metrics, stop_signals
from ._metrics import json_lines
from ._printing import format_address
from ._progress import ProgressCallback, eprint, every_second, finish_live_output
from ._sender import Restarts, Sender, SendOptions, check_peer
from ._transport import Retry, connect_error, describe_access, overloaded, socket_peer_name

__all__ = [
    "receive_asyncio",
    "run_asyncio",
    "send_asyncio",
]

T = TypeVar("T")


def run_asyncio(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """Run ``fn(*args)`` under ``asyncio.run``; expected failures become one line and
    exit 1, a Ctrl-C before the run's own signal handling is in place exits 130."""
    ctx = click.get_current_context()
    try:
        return asyncio.run(fn(*args))
    except KeyboardInterrupt:
        finish_live_output()
        click.echo("flowproto: interrupted", err=True)
        ctx.exit(130)
    except EXPECTED_ERRORS as exc:
        finish_live_output()  # the error starts a line of its own, after the bar's last
        click.echo(f"flowproto: error: {describe(exc)}", err=True)
        ctx.exit(1)


async def _stopped(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them to end."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


@asynccontextmanager
async def _reporting(
    report: Callable[[float], None] | None,
    start: float | None,
    snapshot: Callable[[], dict[str, Any]],
    *,
    lines: bool,
    metrics: tuple[str, int] | None,
    per_connection: bool,
) -> AsyncIterator[None]:
    """While the block runs: ``report`` once a second (from ``start``), ``snapshot`` as
    --json-lines, and --metrics-port's responder."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    if report is not None:
        tasks.append(loop.create_task(every_second(ASYNCIO, report, start)))
    if lines:
        tasks.append(loop.create_task(json_lines(ASYNCIO, snapshot)))
    server: asyncio.Server | None = None
    try:
        if metrics is not None:
            server = await serve_metrics(*metrics, snapshot, per_connection=per_connection)
        yield
    finally:
        await _stopped(tasks)
        if server is not None:
            server.close()


# --- send ----------------------------------------------------------------------------------


async def _connect(stack: AsyncExitStack, opts: SendOptions, address: str) -> fa.FlowConnection:
    """The connection, entered on ``stack``; a failure to connect is one clear line (a
    CliError, which :meth:`Restarts.connect` retries after a restart)."""
    access = opts.access
    kwargs: dict[str, Any] = {"codec": opts.codec, "close_grace": CLOSE_GRACE}
    kwargs.update(
        pacing=opts.pacing, ssl=access.ssl_context, server_hostname=access.server_hostname
    )
    if opts.reconnect_timeout is not None:
        # spec §15: a lost connection is resumed on a new one, within the deadline.
        kwargs["reconnect"] = Reconnect(deadline=opts.reconnect_timeout)
    if opts.unix_path is not None:
        opening = fa.open_unix_connection(opts.unix_path, **kwargs)
    else:
        opening = fa.open_connection(opts.host, opts.port, **kwargs)
    try:
        return await stack.enter_async_context(opening)
    except Exception as exc:
        if overloaded(exc) is not None:
            raise  # send_asyncio retries it (--retry-for)
        error = connect_error(exc, address, tls=access.ssl_context is not None)
        if error is None:
            raise
        raise error from None


async def send_asyncio(opts: SendOptions, progress: ProgressCallback | None) -> dict[str, Any]:
    """Connect, send, half-close, wait until the receiver consumed everything; summary
    (see :func:`flowproto.cli._run_send.run_send`, its Trio twin; a lost connection is
    resumed within ``--reconnect-timeout``, spec §15, and after a receiver restarted and
    lost the session, ``--input FILE`` goes on on a new connection from what its output
    holds, spec §15.10; while the receiver refuses as overloaded, retried within
    ``--retry-for`` as long as nothing was sent, spec §10.1).

    Raises:
        CliError: the connection was refused, or a message is over the receiver's limit.
    """
    if opts.unix_path is not None:
        address = f"unix:{opts.unix_path}"
    else:
        address = format_address((opts.host, opts.port))
    retry = Retry(opts.access.retry_for, address, ASYNCIO)
    restarts = Restarts(opts, ASYNCIO)
    sender = Sender(opts, ASYNCIO, sessions=True)
    producers: list[asyncio.Task[Any]] = []  # what a stop cancels: the producers, a connect

    def stop(name: str) -> None:
        # Ctrl-C, SIGTERM, SIGHUP: stop sending, then say what was sent and confirmed.
        if sender.signal is None:
            sender.stop(name)
            for task in producers:
                task.cancel()

    with stop_signals(stop):  # from the start: a stop while connecting sends nothing
        while True:
            try:
                async with AsyncExitStack() as stack:
                    # A stop signal while connecting (the handshake, a restart's backoff)
                    # cancels the attempt.
                    connecting = await _stoppable(
                        restarts.connect(partial(_connect, stack, opts, address)), producers
                    )
                    if sender.signal is not None and connecting.cancelled():
                        return {**sender.summary(0.0, []), "backend": "asyncio"}
                    conn = connecting.result()
                    check_peer(opts, conn.peer_settings)
                    seconds = await _send_all(sender, conn, address, progress, producers)
                    final = [s.statistics() for s in sender.streams]  # the same moment
                    session = conn.statistics() if opts.reconnect_timeout is not None else None
                if not restarts.again(sender):
                    break
                # spec §15.10: the receiver restarted and lost the session: a new
                # connection, whose stream starts after what the receiver's output holds.
            except Exception as exc:
                # spec §10.1: OVERLOADED means nothing was processed; retry while nothing
                # was sent (as run_send does).
                refusal = overloaded(exc)
                if refusal is None or sender.totals()[0] > 0 or sender.signal is not None:
                    raise
                waiting = await _stoppable(retry.wait(refusal), producers)  # a line, a backoff
                if sender.signal is not None:  # stopped while waiting: nothing was sent
                    return {**sender.summary(0.0, []), "backend": "asyncio"}
                waiting.result()  # CliError once --retry-for is spent
            sender = Sender(opts, ASYNCIO, sessions=True)
            producers.clear()
    return {**sender.summary(seconds, final, session, restarts.count), "backend": "asyncio"}


async def _stoppable(work: Awaitable[T], tasks: list[asyncio.Task[Any]]) -> asyncio.Task[T]:
    """``work`` run as a task kept in ``tasks`` (which a stop signal cancels) until it is
    done; the done task: its result, its error, or cancelled."""
    task = asyncio.ensure_future(work)
    tasks.append(task)
    try:
        await asyncio.wait({task})
    finally:
        tasks.remove(task)
    return task


async def _send_all(
    sender: Sender,
    conn: fa.FlowConnection,
    address: str,
    progress: ProgressCallback | None,
    producers: list[asyncio.Task[None]],
) -> float:
    """A producer task per stream (in ``producers``, which a stop signal cancels: see
    :meth:`Sender.finish`) and the reporters; the seconds it took."""
    opts = sender.opts
    loop = asyncio.get_running_loop()
    sender.watched.add_connection(conn, address)
    start = loop.time()
    deadline = start + opts.duration if opts.duration is not None else math.inf
    async with _reporting(
        lambda tick: sender.report(tick - start, progress),
        start,
        sender.snapshot,
        lines=opts.json_lines,
        metrics=opts.metrics,
        per_connection=opts.metrics_per_connection,
    ):
        try:
            if sender.signal is None:
                producers.extend(
                    loop.create_task(sender.produce(conn, deadline, address))
                    for _ in range(opts.streams)
                )
                await asyncio.wait(producers)
        finally:
            await _stopped(producers)
    for task in producers:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure
    seconds = loop.time() - start
    await sender.finish(seconds, progress)
    return seconds


# --- receive -------------------------------------------------------------------------------


def _peer_name(conn: fa.FlowConnection) -> str:
    """``HOST:PORT`` or ``unix:PATH (pid N, uid N)`` of the peer, as on Trio."""
    transport = conn.transport
    if transport is None:
        return "?"
    sock = transport.get_extra_info("socket")
    try:
        return socket_peer_name(sock)
    except (OSError, AttributeError):  # closed already: what the transport remembers
        peername = transport.get_extra_info("peername")
        return format_address(peername) if isinstance(peername, tuple) else "?"


class _Receiver(Consumer):
    """The consumer on asyncio: each stream's consumption is a task that :meth:`stop`
    cancels; the server's handler waits for it (shielded, so the server cancelling the
    handler when the peer resets the stream leaves the consumption to see the reset)."""

    def __init__(self, opts: ReceiveOptions) -> None:
        super().__init__(opts, ASYNCIO, sessions=True)
        self.done = asyncio.Event()  # stop(): the run closes the server
        self.tasks: set[asyncio.Task[None]] = set()  # consumptions and connection watchers
        self.numbers: dict[fa.FlowConnection, tuple[str, int]] = {}  # peer, connection number
        self.consuming: dict[fa.FlowConnection, set[asyncio.Task[None]]] = {}
        self.server: fa.FlowServer | None = None

    def stop_handle(self) -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    async def stoppable(self, handle: Any, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # not ours: pass it on
            uncancel = getattr(handle, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        me = asyncio.current_task()
        for consuming in self.open_streams.values():
            if consuming is not me and consuming is not None:
                consuming.cancel()  # each stream's task ends it: cleanly if it can, else reset
        self.done.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _numbered(self, conn: fa.FlowConnection) -> tuple[str, int]:
        """The peer's name and the connection's number (which names --output-dir files),
        given when its first stream or its end is seen."""
        if conn not in self.numbers:
            self.connections += 1
            self.numbers[conn] = (_peer_name(conn), self.connections)
            self.consuming[conn] = set()
        return self.numbers[conn]

    async def handle(self, stream: fa.FlowStream) -> None:
        """The server's handler: one stream, consumed in a task of its own."""
        conn = stream.connection
        if conn not in self.numbers:
            self.watched.add_connection(conn, self._numbered(conn)[0])
        peer, number = self.numbers[conn]
        consuming = self._spawn(self.consume(stream, peer, number))
        self.consuming[conn].add(consuming)
        consuming.add_done_callback(self.consuming[conn].discard)
        await asyncio.shield(consuming)

    def connection_ended(self, conn: fa.FlowConnection, error: BaseException | None) -> None:
        """The server is done with a connection (``on_connection_end``)."""
        self._spawn(self._ended(conn, error))

    async def _ended(self, conn: fa.FlowConnection, error: BaseException | None) -> None:
        """Once its streams were consumed (what arrived before it ended is taken first),
        count how the connection ended; with --once, stop."""
        if conn not in self.numbers and getattr(error, "handed_over", False):
            self.resumed += 1  # spec §15.6: its session's connection goes on with it
            return
        if conn not in self.numbers and getattr(error, "error_code", None) == (
            ErrorCode.SESSION_UNKNOWN
        ):
            # spec §15.6: a sender resuming a session this receiver does not have (it
            # restarted, or the session expired): refused, and it may connect anew.
            eprint(f"a sender ({_peer_name(conn)}) resumed a session this receiver does not have")
            return
        peer, _ = self._numbered(conn)
        while self.consuming[conn]:
            await asyncio.wait(list(self.consuming[conn]))
        self.watched.forget_connection(conn)
        if error is not None:
            self.watched.count_failure(error)
            graceful = getattr(error, "error_code", None) == ErrorCode.NO_ERROR  # spec §10.4
            if not graceful:
                self.problem(f"connection from {peer}: {describe(error)}", peer, "connection")
        if self.opts.once:
            self.stop()

    def snapshot(self) -> dict[str, Any]:
        if self.server is not None:
            self.watched.refused = self.server.refused  # max_connections; the budget's own
        return super().snapshot()


async def receive_asyncio(opts: ReceiveOptions) -> dict[str, Any]:
    """Serve until --count messages, the end of the first connection (--once), or a stop
    signal; the summary (see :func:`flowproto.cli._run_receive.run_receive`, its Trio twin)."""
    access = opts.access
    receiver = _Receiver(opts)
    kwargs: dict[str, Any] = {
        "ssl": access.ssl_context,
        "max_connections": access.max_connections,
        "settings": opts.settings,
        "codec": "raw",  # decoded by the consumer, message by message
        "autotune": opts.autotune or False,
        "memory_budget": receiver.budget,
        "idle_timeout": access.idle_timeout,
        "handshake_timeout": access.handshake_timeout,
        "close_grace": CLOSE_GRACE,
        "on_connection_end": receiver.connection_ended,
        # spec §15: keep a lost sender's session this long, for it to resume (None: none)
        "resume_timeout": opts.resume_timeout,
    }
    with stop_signals(receiver.stop_on_signal):  # from the start, as on Trio
        return await _serve(receiver, kwargs)


async def _serve(receiver: _Receiver, kwargs: dict[str, Any]) -> dict[str, Any]:
    opts = receiver.opts
    try:
        if opts.unix_path is not None:
            server = await fa.serve_unix(receiver.handle, opts.unix_path, **kwargs)
            address = f"unix:{opts.unix_path}"
        else:
            server = await fa.serve(receiver.handle, opts.port, host=opts.host, **kwargs)
            address = format_address(server.sockets[0].getsockname())
    except OSError as exc:
        where = opts.unix_path or format_address((opts.host or "", opts.port))
        raise CliError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    receiver.server = server
    if opts.access.ssl_context is not None:
        eprint(describe_access(opts.access))
    eprint(f"listening on {address}")
    try:
        async with (
            _reporting(
                receiver.report if opts.live else None,
                None,
                receiver.snapshot,
                lines=opts.json_lines,
                metrics=opts.metrics,
                per_connection=opts.metrics_per_connection,
            ),
            server,  # leaving it: GOAWAY, then the streams' grace
        ):
            await receiver.done.wait()
            while receiver.open_streams:  # each ends its stream, cleanly if it can
                await asyncio.wait(list(receiver.open_streams.values()))
        while receiver.tasks:
            await asyncio.wait(list(receiver.tasks))
    finally:
        await _stopped(list(receiver.tasks))
        if opts.output == "-":
            sys.stdout.buffer.flush()
    return {**receiver.summary(address), "backend": "asyncio"}
