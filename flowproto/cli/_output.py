"""Where ``receive --output`` puts messages, and when they count as delivered.

A message is delivered when the receiving application consumed it (spec §10.5), and
for ``flowproto receive`` that means: written to the output and flushed to the
operating system (with ``--fsync``, also on disk). So the run takes each batch with
``receive_many(release=False)``, hands it to a :class:`Sink`, and releases its credit
only after :meth:`Sink.write` (and :meth:`Sink.sync`) returned: the sender's
"confirmed N" never counts a message that a killed receiver had not written.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import BinaryIO

import trio


class Sink:
    """One output: each batch is written and flushed at once, and fsynced on request."""

    def __init__(self, file: BinaryIO, *, fsync: bool = False) -> None:
        self.file = file
        self.messages = 0
        self.bytes = 0
        # fsync is for files: a pipe or a terminal (stdout) has nothing to sync.
        self._fsync_fd: int | None = None
        if fsync:
            try:
                fd = file.fileno()
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    self._fsync_fd = fd
            except (OSError, ValueError):
                pass

    def write(self, chunks: Sequence[bytes]) -> None:
        """Write and flush: the bytes are the operating system's when this returns.

        Raises:
            OSError: the output could not take them (disk full, a closed pipe).
        """
        data = b"".join(chunks)
        self.file.write(data)
        self.file.flush()
        self.messages += len(chunks)
        self.bytes += len(data)

    async def sync(self) -> None:
        """With ``--fsync``: wait (in a thread) until the file's data is on disk."""
        if self._fsync_fd is not None:
            await trio.to_thread.run_sync(os.fsync, self._fsync_fd)
