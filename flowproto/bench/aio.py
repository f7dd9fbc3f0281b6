"""What the asyncio peers share: their event loop (asyncio's own, or uvloop's), one
accepted socket, and the bound on a whole program.

``--loop uvloop`` runs a peer on uvloop (``pip install uvloop``; an optional extra, the
``bench`` extra where it installs); :func:`uvloop_available` says whether it can.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

T = TypeVar("T")

#: The event loops an asyncio peer can run on.
LOOPS: Final = ("asyncio", "uvloop")


def uvloop_available() -> bool:
    """True if uvloop can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def run(main: Callable[[], Awaitable[T]], loop: str, timeout: float) -> T:
    """Run ``main()`` on a new event loop of kind ``loop``, for at most ``timeout`` seconds.

    Raises:
        TimeoutError: (asyncio's) ``main`` was still running after ``timeout`` seconds.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    if loop == "uvloop":
        uvloop: Any = importlib.import_module("uvloop")  # optional: no import at the top
        result: T = uvloop.run(bounded())
        return result
    return asyncio.run(bounded())


async def accept_socket(args: argparse.Namespace) -> socket.socket:
    """Listen on ``--host``/``--port``, say ``listening HOST:PORT`` on stderr (the harness
    reads the port there), and accept one connection: its socket, non-blocking."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server((args.host, args.port))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    print(f"listening {args.host}:{port}", file=sys.stderr, flush=True)
    try:
        sock, _ = await loop.sock_accept(listener)
    finally:
        listener.close()
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Trio's sockets have it
    return sock
