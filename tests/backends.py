"""One behavioural suite, two I/O layers: a thin adapter per backend, and a raw peer.

:class:`TrioBackend` and :class:`AsyncioBackend` give a test the few things whose
spelling differs between ``flowproto.trio`` and ``flowproto.asyncio`` (serving, connecting,
timeouts, tasks, the end-of-stream exception); the streams and connections they hand out
are the layers' own objects, used as they are. :class:`RawPeer` is a flowproto peer on a
blocking socket in a thread, driven by a bare sans-IO ``Connection``: it completes the
handshake and then misbehaves as a test asks (killed, stops reading, blackholed).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import trio

import flowproto.asyncio as fa
import flowproto.trio as ft
from flowproto import Connection, Role, Settings

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

Scenario = Callable[[Any], Awaitable[None]]

#: close_grace for every connection a test makes (unless it passes its own): a stream
#: left open when a block exits is reset after this, not after the default 5 s.
GRACE = 0.2


class TrioBackend:
    name = "trio"
    EndOfStream: type[BaseException] = trio.EndOfChannel
    ConnectionLostError: type[BaseException] = ft.ConnectionLostError
    ClosedForSending: type[BaseException] = trio.ClosedResourceError
    Event = trio.Event

    def run(self, scenario: Scenario, timeout: float = 10.0) -> None:
        async def main() -> None:
            with trio.fail_after(timeout):
                await scenario(self)

        trio.run(main)

    def now(self) -> float:
        return trio.current_time()

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    @asynccontextmanager
    async def tasks(self) -> AsyncIterator[Any]:
        """A nursery: ``start_soon(fn, *args)``; the block waits for them."""
        async with trio.open_nursery() as nursery:
            yield nursery

    async def within(self, seconds: float, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``fn(*args)``, cancelled after ``seconds``; True if it completed."""
        with trio.move_on_after(seconds):
            await fn(*args)
            return True
        return False

    @asynccontextmanager
    async def server(
        self, handler: Callable[[Any], Awaitable[None]], *, ssl: Any = None, **kwargs: Any
    ) -> AsyncIterator[int]:
        """Serve on 127.0.0.1, a free port; yields the port."""
        kwargs.setdefault("close_grace", GRACE)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(ft.serve, handler, 0, host="127.0.0.1", ssl_context=ssl, **kwargs)
            )
            listener = listeners[0].transport_listener if ssl is not None else listeners[0]
            yield listener.socket.getsockname()[1]
            nursery.cancel_scope.cancel()

    def connect(
        self, port: int, *, ssl: Any = None, server_hostname: str | None = None, **kwargs: Any
    ) -> AbstractAsyncContextManager[Any]:
        kwargs.setdefault("close_grace", GRACE)
        return ft.open_connection(
            "127.0.0.1", port, ssl_context=ssl, server_hostname=server_hostname, **kwargs
        )

    @asynccontextmanager
    async def unix_server(
        self, handler: Callable[[Any], Awaitable[None]], path: str, **kwargs: Any
    ) -> AsyncIterator[None]:
        kwargs.setdefault("close_grace", GRACE)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(ft.serve_unix, handler, path, **kwargs))
                yield
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # what failed, as asyncio raises it
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None

    def unix_connect(self, path: str, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
        kwargs.setdefault("close_grace", GRACE)
        return ft.open_unix_connection(path, **kwargs)


class AsyncioBackend:
    name = "asyncio"
    EndOfStream: type[BaseException] = fa.EndOfStream
    ConnectionLostError: type[BaseException] = fa.ConnectionLostError
    ClosedForSending: type[BaseException] = fa.StreamClosedError
    Event = asyncio.Event

    def run(self, scenario: Scenario, timeout: float = 10.0) -> None:
        asyncio.run(asyncio.wait_for(scenario(self), timeout))

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    @asynccontextmanager
    async def tasks(self) -> AsyncIterator[Any]:
        """``start_soon(fn, *args)``; the block waits for them (a TaskGroup on 3.11+)."""
        group = _Tasks()
        try:
            yield group
        finally:
            await group.wait()

    async def within(self, seconds: float, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        try:
            await asyncio.wait_for(fn(*args), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    @asynccontextmanager
    async def server(
        self, handler: Callable[[Any], Awaitable[None]], *, ssl: Any = None, **kwargs: Any
    ) -> AsyncIterator[int]:
        kwargs.setdefault("close_grace", GRACE)
        async with await fa.serve(handler, 0, host="127.0.0.1", ssl=ssl, **kwargs) as server:
            yield server.sockets[0].getsockname()[1]

    def connect(
        self, port: int, *, ssl: Any = None, server_hostname: str | None = None, **kwargs: Any
    ) -> AbstractAsyncContextManager[Any]:
        kwargs.setdefault("close_grace", GRACE)
        return fa.open_connection(
            "127.0.0.1", port, ssl=ssl, server_hostname=server_hostname, **kwargs
        )

    @asynccontextmanager
    async def unix_server(
        self, handler: Callable[[Any], Awaitable[None]], path: str, **kwargs: Any
    ) -> AsyncIterator[None]:
        kwargs.setdefault("close_grace", GRACE)
        async with await fa.serve_unix(handler, path, **kwargs):
            yield

    def unix_connect(self, path: str, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
        kwargs.setdefault("close_grace", GRACE)
        return fa.open_unix_connection(path, **kwargs)


class _Tasks:
    """Tasks started with ``start_soon``, awaited together; the first failure cancels the
    rest and is raised (what a nursery or a TaskGroup does, on Python 3.10 too)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        async def run() -> Any:
            return await fn(*args)

        self.tasks.append(asyncio.get_running_loop().create_task(run()))

    async def wait(self) -> None:
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise failed[0].exception()  # type: ignore[misc]
            self.tasks.extend(pending)


BACKENDS = {"trio": TrioBackend(), "asyncio": AsyncioBackend()}


class RawPeer:
    """A flowproto acceptor on a blocking socket in a thread (a bare sans-IO Connection).

    It completes the handshake, then does what ``behaviour`` says:

    - ``"killed"``: once ``go`` is set, closes the socket with a TCP reset and no
      GOAWAY (what a killed process's kernel does);
    - ``"stops-reading"``: never reads again (a peer whose application hangs);
    - ``"blackholed"``: reads everything and answers nothing (no PONG, no CREDIT);
    - ``"silent"``: accepts and never sends a byte, not even its preface;
    - ``"garbage"``: once ``go`` is set, sends bytes that are no frame, then reads what
      comes back into ``received`` (a GOAWAY is expected) until the other side closes.

    ``settings`` are what it advertises. Use as a context manager; ``port`` is its port.
    """

    def __init__(self, behaviour: str, settings: Settings | None = None) -> None:
        self.behaviour = behaviour
        self.settings = settings
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.done = threading.Event()  # set by the test: the thread may end
        self.go = threading.Event()  # set by the test: "killed" dies, "garbage" sends it
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.received = b""  # "garbage": everything read after the garbage
        self.core: Connection | None = None  # its sans-IO side, once it accepted

    def __enter__(self) -> RawPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()

    def _run(self) -> None:
        try:
            self.listener.settimeout(10)
            sock, _ = self.listener.accept()
            with sock:
                self._serve(sock)
        except BaseException as exc:  # reported by the test if it matters
            self.error = exc

    def _serve(self, sock: socket.socket) -> None:
        if self.behaviour == "silent":
            self.done.wait(10)
            return
        if self.behaviour == "stops-reading":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        core = self.core = Connection(Role.ACCEPTOR, self.settings)
        sock.sendall(core.data_to_send())
        sock.settimeout(10)
        while core.peer_settings is None:
            data = sock.recv(65536)
            if not data:
                return
            core.receive_data(data, time.monotonic())
            sock.sendall(core.data_to_send())
        if self.behaviour == "killed":
            self.go.wait(10)
            # SO_LINGER 0: close() sends RST, as the kernel does for a killed process
            # with unread input.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if self.behaviour == "stops-reading":
            self.done.wait(10)
            return
        if self.behaviour == "garbage":
            self.go.wait(10)
            sock.sendall(b"\xff" * 64)  # an unknown frame type with an absurd length
            while data := sock.recv(65536):
                self.received += data
            return
        sock.settimeout(0.05)
        while not self.done.is_set():  # blackholed: read, answer nothing
            try:
                if not sock.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return


#: Python 3.11 has asyncio.timeout and asyncio.TaskGroup.
HAS_ASYNCIO_TIMEOUT = sys.version_info >= (3, 11)
