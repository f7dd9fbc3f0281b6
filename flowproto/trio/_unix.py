"""Unix socket listeners: the socket file's permissions, a stale file replaced, removal."""

from __future__ import annotations

import errno
import os
import socket as _stdlib_socket
import stat
from contextlib import suppress
from typing import Final

import trio

__all__ = ["DEFAULT_UNIX_MODE", "UnixSocketListener", "open_unix_listener"]

#: The permissions of a Unix socket file made by :func:`open_unix_listener`: only its owner
#: may connect (connecting needs write permission on the file).
DEFAULT_UNIX_MODE: Final = 0o600


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
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    async def accept(self) -> trio.SocketStream:
        return await self.listener.accept()

    async def aclose(self) -> None:
        """Remove the socket file (if it is still ours), then close the socket."""
        with suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        await self.listener.aclose()


def open_unix_listener(
    path: str, *, mode: int | None = DEFAULT_UNIX_MODE, backlog: int = 128
) -> UnixSocketListener:
    """Create a Unix socket at ``path`` and listen on it.

    Args:
        path: the socket file. A stale socket there (nobody listening) is replaced; a
            socket somebody listens on, or anything that is not a socket, is not.
        mode: the file's permissions; connecting needs write permission, so the default
            0600 lets only this user (and root) connect. The socket is bound under a
            umask that allows no more than ``mode``, then ``chmod``-ed to exactly ``mode``,
            so it is never reachable with wider permissions. ``None`` honours the umask.
            The directory's permissions apply too.
        backlog: the listen backlog.

    Raises:
        FileExistsError: ``path`` exists and is not a socket.
        OSError: another server listens on ``path`` (EADDRINUSE), or binding failed.
    """
    _remove_stale_socket(path)
    sock = _stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        # Bound synchronously, so no other task runs under the narrowed umask.
        old_umask = os.umask(0o777 & ~mode) if mode is not None else None
        try:
            sock.bind(path)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if mode is not None:
            os.chmod(path, mode)
        sock.listen(backlog)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    except BaseException:
        sock.close()
        raise
    return UnixSocketListener(listener, path)


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a socket nobody listens on; refuse anything else there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
    probe = _stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    probe.setblocking(False)  # a full backlog answers EAGAIN instead of blocking
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: its server is gone
        return
    except FileNotFoundError:
        return
    except BlockingIOError:
        pass  # somebody listens, with a full backlog
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
