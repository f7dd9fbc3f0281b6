"""How the DEBUG log of the Trio layer (``flowproto -v``) names a connection."""

from __future__ import annotations

import trio

from .. import Role, iolayer


def peer_address(transport: trio.abc.Stream) -> object:
    """The peer's socket address (a tuple for IP, a str for a Unix socket), or None."""
    sock = getattr(transport, "socket", None)
    if sock is None:
        inner = getattr(transport, "transport_stream", None)  # TLS: the stream under it
        sock = getattr(inner, "socket", None)
    try:
        return sock.getpeername() if sock is not None else None
    except OSError:
        return None


def connection_name(transport: trio.abc.Stream, role: Role) -> str:
    """How the debug log names a connection: its peer's address where there is one."""
    return iolayer.connection_name(peer_address(transport), role, type(transport).__name__)
