"""Unix socket files for the I/O layers: made with the permissions asked for, never put in
the place of anything but a stale socket, and removed only while they are still ours.

Shared by ``flowproto.trio`` and ``flowproto.asyncio`` (each wraps the listening socket in
its own listener); no event loop here. ``import flowproto`` does not load it.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from contextlib import suppress
from typing import Final

__all__ = ["DEFAULT_UNIX_MODE", "SocketFile", "bind_unix_socket"]

#: The permissions of a Unix socket file made by :func:`bind_unix_socket`: only its owner
#: may connect (connecting needs write permission on the file).
DEFAULT_UNIX_MODE: Final = 0o600


class SocketFile:
    """The file of a bound Unix socket, remembered by identity so that :meth:`remove`
    never unlinks a file that replaced it."""

    def __init__(self, path: str) -> None:
        self.path = path
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def remove(self) -> None:
        """Remove the socket file, if it is still the one bound."""
        with suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)


def bind_unix_socket(
    path: str, *, mode: int | None = DEFAULT_UNIX_MODE, backlog: int = 128
) -> tuple[socket.socket, SocketFile]:
    """Create a Unix socket at ``path`` and listen on it; the socket and its file.

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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
        return sock, SocketFile(path)
    except BaseException:
        sock.close()
        raise


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a socket nobody listens on; refuse anything else there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
