"""Unix socket listeners: the socket file's permissions, a stale file replaced, removal.

The socket file itself is made and removed by :mod:`flowproto.unix_sockets`, which the
asyncio layer shares; this wraps the listening socket in a Trio listener.
"""

from __future__ import annotations

import trio

from ..unix_sockets import DEFAULT_UNIX_MODE, SocketFile, bind_unix_socket

__all__ = ["DEFAULT_UNIX_MODE", "UnixSocketListener", "open_unix_listener"]


class UnixSocketListener(trio.abc.Listener[trio.SocketStream]):
    """A listening Unix socket that removes its file when it is closed.

    Made by :func:`open_unix_listener`. Attributes: ``path`` (the socket file),
    ``socket`` (the listening ``trio.socket.SocketType``), ``listener`` (the
    ``trio.SocketListener`` it accepts with).
    """

    def __init__(self, listener: trio.SocketListener, path: str) -> None:
        self.listener = listener
        self.socket = listener.socket
        self.path = path
        self._file = SocketFile(path)

    async def accept(self) -> trio.SocketStream:
        return await self.listener.accept()

    async def aclose(self) -> None:
        """Remove the socket file (if it is still ours), then close the socket."""
        self._file.remove()
        await self.listener.aclose()


def open_unix_listener(
    path: str, *, mode: int | None = DEFAULT_UNIX_MODE, backlog: int = 128
) -> UnixSocketListener:
    """Create a Unix socket at ``path`` and listen on it, in a Trio listener.

    The arguments, what replaces a stale socket file and what raises are those of
    :func:`flowproto.unix_sockets.bind_unix_socket`: ``mode`` (default 0600) is the
    file's permissions, never wider while it exists; ``None`` honours the umask.
    """
    sock, _ = bind_unix_socket(path, mode=mode, backlog=backlog)
    try:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    except BaseException:
        sock.close()
        raise
    return UnixSocketListener(listener, path)
