"""Where the commands listen and connect: TCP or a Unix socket, TLS or not; retries.

The receiver's listeners (:func:`open_listeners`) and the names it prints for them and for
its peers; the sender's connection (:func:`connect`), the one line that says why it could
not connect (:func:`connect_error`), and :class:`Retry`, its backoff while the receiver
answers GOAWAY(OVERLOADED) (spec §10.1).
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from flowproto.iolayer import ConnectionLostBase
from flowproto.trio import (
    FlowConnection,
    HandshakeTimeout,
    UnixSocketListener,
    open_connection,
    open_unix_connection,
    open_unix_listener,
)

from ._access import ReceiverAccess, SenderAccess
from ._errors import CliError, flatten, os_reason
from ._layer import Layer
from ._printing import format_address
from ._progress import eprint

#: The first retry waits about this long (unless the receiver asks for longer).
FIRST_BACKOFF = 0.25
#: Backoff doubles per attempt up to this many seconds.
MAX_BACKOFF = 5.0


# --- receiving -----------------------------------------------------------------------------


async def open_listeners(
    host: str | None, port: int, unix_path: str | None
) -> list[trio.abc.Listener[Any]]:
    """TCP listeners on ``host:port``, or one Unix socket at ``unix_path`` (mode 0600,
    removed when the listener closes)."""
    where = f"unix:{unix_path}" if unix_path is not None else format_address((host or "", port))
    try:
        if unix_path is not None:
            return [open_unix_listener(unix_path)]
        return list(await trio.open_tcp_listeners(port, host=host))
    except OSError as exc:
        raise CliError(f"cannot listen on {where}: {exc.strerror or os_reason(exc)}") from None


def listener_name(listener: trio.abc.Listener[Any]) -> str:
    """``HOST:PORT`` or ``unix:PATH``, for the ``listening on`` line."""
    if isinstance(listener, UnixSocketListener):
        return f"unix:{listener.path}"
    assert isinstance(listener, trio.SocketListener)
    return format_address(listener.socket.getsockname())


def peer_name(transport: trio.abc.Stream) -> str:
    """``HOST:PORT`` of a TCP peer, ``unix:PATH (pid N, uid N)`` of a Unix socket's."""
    while isinstance(transport, trio.SSLStream):
        transport = transport.transport_stream
    if not isinstance(transport, trio.SocketStream):
        return type(transport).__name__
    return socket_peer_name(transport.socket)


def socket_peer_name(sock: Any) -> str:
    """:func:`peer_name` of a connected socket (any layer's: it needs ``family``,
    ``getpeername``, ``getsockname`` and ``getsockopt``)."""
    if sock.family != getattr(socket, "AF_UNIX", None):
        return format_address(sock.getpeername())
    name = f"unix:{sock.getsockname()}"
    so_peercred = getattr(socket, "SO_PEERCRED", None)  # Linux
    if so_peercred is not None:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, so_peercred, 12))
        name += f" (pid {pid}, uid {uid})"
    return name


def describe_access(access: ReceiverAccess) -> str:
    """The line a TLS receiver prints before ``listening on``."""
    if access.mutual:
        return "TLS: every sender must present a certificate signed by --tls-client-ca"
    return "TLS: senders need no certificate (--tls-client-ca requires one)"


# --- sending -------------------------------------------------------------------------------


def connect(
    host: str, port: int, unix_path: str | None, access: SenderAccess, **kwargs: Any
) -> AbstractAsyncContextManager[FlowConnection]:
    """``open_connection`` or ``open_unix_connection``, with TLS if ``access`` says so."""
    if unix_path is not None:
        return open_unix_connection(
            unix_path,
            ssl_context=access.ssl_context,
            server_hostname=access.server_hostname,
            **kwargs,
        )
    return open_connection(
        host, port, ssl_context=access.ssl_context, server_hostname=access.server_hostname, **kwargs
    )


def overloaded(exc: BaseException) -> ConnectionLostBase | None:
    """The GOAWAY(OVERLOADED) refusal ``exc`` is (or holds only), else ``None`` (either
    layer's ``ConnectionLostError``)."""
    leaves = flatten(exc)
    if all(isinstance(e, ConnectionLostBase) and e.retryable for e in leaves):
        first = leaves[0]
        assert isinstance(first, ConnectionLostBase)
        return first
    return None


def connect_error(exc: BaseException, address: str, tls: bool) -> CliError | None:
    """The one line for a failure to connect, with a hint where one helps; ``None`` if
    ``exc`` is not such a failure. Either layer's: asyncio's ``ConnectionLostError`` is an
    ``OSError`` too, so it is told apart first."""
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionLostBase):
        return CliError(f"cannot connect to {address}: {os_reason(exc)}")
    if isinstance(exc, HandshakeTimeout):
        return CliError(f"cannot connect to {address}: {exc}")
    if not isinstance(exc, ConnectionLostBase):
        return None
    cause = exc.__cause__
    if _closed_in_handshake(exc):
        # A TLS receiver drops plain TCP, and a mutual-TLS one a sender without a
        # certificate it trusts, without a word of flowproto: the sender sees EOF or a
        # reset (which of the two is a matter of timing), so it is told one thing.
        hint = (
            "does it require a client certificate signed by a CA it trusts? (--tls-cert, --tls-key)"
            if tls
            else "does it require TLS? (--tls-ca)"
        )
        return CliError(
            f"cannot connect to {address}: the receiver closed the connection in the "
            f"handshake, before its HELLO: {hint}"
        )
    text = f"cannot connect to {address}: {exc}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        text += " (is the receiver's certificate signed by a CA of --tls-ca, for that name?)"
    elif isinstance(cause, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(cause):
        text += " (the receiver does not speak TLS: drop --tls/--tls-ca)"
    elif isinstance(cause, ssl.SSLError) and "ALERT" in str(cause):
        text += " (the receiver refused the TLS handshake: does it require a client "
        text += "certificate signed by a CA it trusts? --tls-cert, --tls-key)"
    return CliError(text)


def _closed_in_handshake(exc: ConnectionLostBase) -> bool:
    """The receiver hung up before its HELLO (EOF or a reset), saying nothing."""
    if exc.error_code is None and "before its HELLO" in exc.reason:
        return True
    return isinstance(exc.__cause__, ConnectionResetError)


class Retry:
    """Backoff while the receiver refuses as overloaded: bounded by ``retry_for`` seconds.

    Each wait is the larger of the receiver's ``retry_after`` and an exponential backoff
    (0.25 s doubling to 5 s), times a random factor in [1, 1.5), so that senders refused
    together do not come back together.
    """

    def __init__(self, retry_for: float, address: str, layer: Layer) -> None:
        self.retry_for = retry_for
        self.address = address
        self.layer = layer  # its clock and sleep: the same backoff on either loop
        self.attempts = 0
        self._started = layer.now()
        self._backoff = FIRST_BACKOFF

    async def wait(self, refusal: ConnectionLostBase) -> None:
        """Print one line and sleep before the next attempt.

        Raises:
            CliError: the next attempt would start after ``retry_for`` seconds.
        """
        self.attempts += 1
        delay = max(self._backoff, refusal.retry_after or 0.0) * random.uniform(1.0, 1.5)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        spent = self.layer.now() - self._started
        if spent + delay > self.retry_for:
            tried = f" after {self.attempts} attempts in {spent:.1f} s" if self.attempts > 1 else ""
            raise CliError(
                f"{self.address} refused the connection: {refusal}{tried} (--retry-for "
                f"{self.retry_for:g})"
            )
        eprint(
            f"flowproto: {self.address} is overloaded ({refusal.reason}); "
            f"retry {self.attempts} in {delay:.1f} s"
        )
        await self.layer.sleep_until(self.layer.now() + delay)
