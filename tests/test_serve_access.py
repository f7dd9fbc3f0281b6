"""Who may connect to a server (issue 12): TLS and mutual TLS, Unix socket files, and
:func:`serve_transports`, the accept loop with caps that the CLI receiver runs on.

Real sockets on 127.0.0.1 (port 0) and in ``tmp_path``; certificates from ``trustme``;
every test inside ``trio.fail_after``.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from flowproto import ErrorCode, MemoryBudget
from flowproto.trio import (
    DEFAULT_UNIX_MODE,
    ConnectionLostError,
    FlowStream,
    UnixSocketListener,
    open_connection,
    open_flow_connection,
    open_unix_connection,
    open_unix_listener,
    serve,
    serve_transports,
    serve_unix,
)

LIMIT = 20.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_ca is not None:  # mutual TLS
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


def client_context(trusted: trustme.CA, *, cert_from: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    trusted.configure_trust(context)
    if cert_from is not None:
        cert_from.issue_cert("sender.example").configure_cert(context)
    return context


class Recorder:
    """A stream handler that keeps every message it gets (what would reach --output)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.streams = 0

    async def __call__(self, stream: FlowStream) -> None:
        self.streams += 1
        async for message in stream:
            self.messages.append(message)


@asynccontextmanager
async def tls_server(handler: Recorder, context: ssl.SSLContext) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve, handler, 0, host="127.0.0.1", ssl_context=context, codec="raw")
        )
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def send_one(port: int, context: ssl.SSLContext | None, payload: bytes) -> None:
    async with open_connection("127.0.0.1", port, ssl_context=context, codec="raw") as conn:
        stream = await conn.open_stream()
        await stream.send(payload)
        await stream.aclose()
        with pytest.raises(trio.EndOfChannel):
            await stream.receive()  # the server consumed it and ended its side


# --- TLS -------------------------------------------------------------------------------------


async def test_mutual_tls_admits_a_client_certificate_of_the_trusted_ca(ca: trustme.CA) -> None:
    handler = Recorder()
    with trio.fail_after(LIMIT):
        async with tls_server(handler, server_context(ca, client_ca=ca)) as port:
            await send_one(port, client_context(ca, cert_from=ca), b"signed")
    assert handler.messages == [b"signed"]


@pytest.mark.parametrize("client", ["no certificate", "another CA's certificate", "plain TCP"])
async def test_mutual_tls_lets_no_byte_of_an_unverified_client_through(
    ca: trustme.CA, client: str
) -> None:
    """spec §3.4: the TLS handshake runs inside the flowproto handshake, so a client the
    server cannot verify never reaches a handler; it gets a ConnectionLostError."""
    handler = Recorder()
    context = {
        "no certificate": client_context(ca),
        "another CA's certificate": client_context(ca, cert_from=trustme.CA()),
        "plain TCP": None,
    }[client]
    with trio.fail_after(LIMIT):
        async with tls_server(handler, server_context(ca, client_ca=ca)) as port:
            with pytest.raises(ConnectionLostError) as info:
                await send_one(port, context, b"INJECTED")
            await send_one(port, client_context(ca, cert_from=ca), b"real")
    assert handler.messages == [b"real"] and handler.streams == 1
    # The client is told the connection ended before the server's HELLO, or why TLS failed.
    assert "before its HELLO" in str(info.value) or "transport failed" in str(info.value)


async def test_a_client_that_does_not_trust_the_server_is_told_why(ca: trustme.CA) -> None:
    handler = Recorder()
    with trio.fail_after(LIMIT):
        async with tls_server(handler, server_context(ca)) as port:
            with pytest.raises(ConnectionLostError) as info:
                await send_one(port, client_context(trustme.CA()), b"x")
    assert "TLS: certificate verify failed: unable to get local issuer certificate" in str(
        info.value
    )
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert handler.streams == 0


async def test_a_tls_client_of_a_plain_server_is_told_the_tls_reason() -> None:
    handler = Recorder()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(serve, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            context = ssl.create_default_context()
            with pytest.raises(ConnectionLostError, match=r"TLS: .*WRONG_VERSION_NUMBER"):
                await send_one(port, context, b"x")
            nursery.cancel_scope.cancel()
    assert handler.streams == 0


async def test_tls_over_a_unix_socket(ca: trustme.CA, tmp_path: Path) -> None:
    handler = Recorder()
    path = str(tmp_path / "tls.sock")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_unix, handler, path, ssl_context=server_context(ca), codec="raw")
            )
            async with open_unix_connection(
                path, ssl_context=client_context(ca), server_hostname="localhost", codec="raw"
            ) as conn:
                assert isinstance(conn.transport, trio.SSLStream)
                stream = await conn.open_stream()
                await stream.send(b"over tls")
                await stream.aclose()
                with pytest.raises(trio.EndOfChannel):
                    await stream.receive()
            nursery.cancel_scope.cancel()
    assert handler.messages == [b"over tls"]


# --- Unix socket files -------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_a_unix_socket_is_0600_whatever_the_umask_and_removed_when_closed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fp.sock"
    old = os.umask(0)  # the most permissive umask: the socket must still be 0600
    try:
        listener = open_unix_listener(str(path))
    finally:
        os.umask(old)
    assert DEFAULT_UNIX_MODE == 0o600
    assert stat.S_ISSOCK(os.lstat(path).st_mode) and _mode(path) == 0o600
    await listener.aclose()
    assert not path.exists()


async def test_mode_none_honours_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "fp.sock"
    old = os.umask(0o022)
    try:
        listener = open_unix_listener(str(path), mode=None)
    finally:
        os.umask(old)
    assert _mode(path) == 0o755  # a socket's bits are 0777 & ~umask
    await listener.aclose()


async def test_a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "fp.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # its server is gone; the file stays
    listener = open_unix_listener(str(path))  # replaces it
    with pytest.raises(OSError, match="another server is listening"):
        open_unix_listener(str(path))
    assert path.exists()  # the live server's socket was left alone
    await listener.aclose()

    regular = tmp_path / "data.txt"
    regular.write_text("precious")
    with pytest.raises(FileExistsError, match="is not a socket"):
        open_unix_listener(str(regular))
    assert regular.read_text() == "precious"


async def test_closing_does_not_remove_a_socket_that_replaced_ours(tmp_path: Path) -> None:
    path = tmp_path / "fp.sock"
    listener = open_unix_listener(str(path))
    os.unlink(path)
    newer = open_unix_listener(str(path))  # another server took the name
    await listener.aclose()
    assert path.exists()
    await newer.aclose()
    assert not path.exists()


async def test_serve_unix_removes_its_socket_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "fp.sock"
    handler = Recorder()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(serve_unix, handler, str(path), codec="raw"))
            assert isinstance(listeners[0], UnixSocketListener)
            assert _mode(path) == 0o600
            async with open_unix_connection(str(path), codec="raw") as conn:
                stream = await conn.open_stream()
                await stream.send(b"local")
                await stream.aclose()
                with pytest.raises(trio.EndOfChannel):
                    await stream.receive()
            nursery.cancel_scope.cancel()
    assert handler.messages == [b"local"]
    assert not path.exists()


# --- serve_transports --------------------------------------------------------------------------


async def test_serve_transports_caps_connections_in_a_handler_nursery_of_the_callers() -> None:
    """spec §10.1: past max_connections, a newcomer gets GOAWAY(OVERLOADED) with a retry
    time and nothing of it reaches the handler; handlers run in the caller's nursery."""
    seen: list[str] = []
    got_first = trio.Event()
    release = trio.Event()

    async def on_transport(transport: trio.abc.Stream) -> None:
        async with open_flow_connection(transport, initiator=False, codec="raw") as conn:
            stream = await conn.accept_stream()
            seen.append((await stream.receive()).decode())
            got_first.set()
            await release.wait()
            await stream.aclose()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as handlers, trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(
                partial(
                    serve_transports,
                    on_transport,
                    listeners,
                    max_connections=1,
                    handler_nursery=handlers,
                )
            )
            port = listeners[0].socket.getsockname()[1]
            async with open_connection("127.0.0.1", port, codec="raw") as first:
                stream = await first.open_stream()
                await stream.send(b"first")
                await got_first.wait()
                with pytest.raises(ConnectionLostError) as info:
                    async with open_connection("127.0.0.1", port, codec="raw") as second:
                        await (await second.open_stream()).send(b"second")
                assert info.value.error_code == ErrorCode.OVERLOADED
                assert info.value.retryable and info.value.retry_after == 1.0
                release.set()
                await stream.aclose()
                with pytest.raises(trio.EndOfChannel):
                    await stream.receive()
            nursery.cancel_scope.cancel()
    assert seen == ["first"]
    assert listeners[0].socket.fileno() == -1  # closed on exit


async def test_a_budget_refusal_says_why_on_the_refusing_side_too() -> None:
    """spec §8.9: the acceptor's own error names the budget, not just "closed"."""
    refusals: list[ConnectionLostError] = []
    refused = trio.Event()
    budget = MemoryBudget(1)  # not even a floor window fits

    async def on_transport(transport: trio.abc.Stream) -> None:
        try:
            async with open_flow_connection(transport, initiator=False, memory_budget=budget):
                pass
        except ConnectionLostError as exc:
            refusals.append(exc)
            refused.set()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            listeners: list[Any] = await nursery.start(
                partial(serve_transports, on_transport, await trio.open_tcp_listeners(0))
            )
            port = listeners[0].socket.getsockname()[1]
            with pytest.raises(ConnectionLostError) as info:
                async with open_connection("127.0.0.1", port):
                    pass
            assert info.value.retryable
            await refused.wait()
            nursery.cancel_scope.cancel()
    assert refusals[0].error_code == ErrorCode.OVERLOADED
    assert "memory budget of 1 bytes is exhausted" in str(refusals[0])
