"""Where ``receive --output`` puts messages, and when they count as delivered.

A message is delivered when the receiving application consumed it (spec §10.5), and
for ``flowproto receive`` that means: written to the output and flushed to the
operating system (with ``--fsync``, also on disk). So the run takes each batch with
``receive_many(release=False)``, hands it to a :class:`Sink`, and releases its credit
only after :meth:`Sink.write` (and, with ``--fsync``, :meth:`Sink.fsync`, which the run
calls in a worker thread of its event loop) returned: the sender's
"confirmed N" never counts a message that a killed receiver had not written.

:class:`Outputs` decides which stream writes where (``--output FILE`` takes one stream,
``--output-dir`` a file per stream) and names files ``NAME.partial`` until their stream
ends cleanly, so an incomplete file never looks complete.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from typing import Any, BinaryIO, Final

from ._printing import fmt_bytes


class OutputError(OSError):
    """Writing an output failed: which output, after how many bytes, and why."""

    def __init__(self, cause: OSError, name: str, written: int) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.name = name
        self.written = written

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.strerror} (after {self.written:,} bytes, "
            f"{fmt_bytes(self.written)}, were written to it)"
        )


class Sink:
    """One output: each batch is written and flushed at once, and fsynced on request."""

    def __init__(
        self, file: BinaryIO, *, fsync: bool = False, path: str | None = None, final: str = ""
    ) -> None:
        self.file = file
        self.path = path  # where the bytes are now; None: not a file of ours (stdout)
        self.final = final  # the name it gets once complete
        self.messages = 0
        self.bytes = 0
        self.held = 0  # bytes it held before this stream wrote (a resumed .partial)
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
            OutputError: the output could not take them (disk full, a closed pipe); it
                names the output and how much of it was written before.
        """
        data = b"".join(chunks)
        try:
            self.file.write(data)
            self.file.flush()
        except OSError as exc:
            raise OutputError(exc, self.path or "standard output", self.bytes) from exc
        self.messages += len(chunks)
        self.bytes += len(data)

    @property
    def syncs(self) -> bool:
        """True with ``--fsync`` on a file: each write is followed by :meth:`fsync`."""
        return self._fsync_fd is not None

    def fsync(self) -> None:
        """Block until the file's data is on disk (call it in a worker thread)."""
        if self._fsync_fd is not None:
            os.fsync(self._fsync_fd)

    def close(self) -> None:
        """Close a file of ours (stdout stays open); closing twice does nothing."""
        if self.path is not None and not self.file.closed:
            self.file.close()


#: Incomplete output files named in the summary; the rest are only counted.
MAX_LISTED_FILES: Final = 100
#: An output file is written under its name plus this, and renamed when its stream ends
#: cleanly: a file without it is complete.
PARTIAL_SUFFIX: Final = ".partial"


def _fsync_directory(path: str) -> None:
    """Put a rename on disk (``--fsync``): fsync the directory that holds the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputRefused(Exception):
    """This stream may not write to the output: it is refused with REFUSED_STREAM, which
    tells its sender that nothing of it was processed (spec §6.4)."""


def stream_file_name(peer: str, connection: int, stream_id: int) -> str:
    """``<peer host>_<peer port>_<connection number>_<stream id>`` for ``--output-dir``.

    Only the peer's address and our own counters go in, reduced to letters, digits and
    dots, so the name has no path component whatever the peer sends.
    """
    host, _, port = peer.rpartition(":")
    host = host.strip("[]") if host else peer
    safe_host = re.sub(r"[^A-Za-z0-9.]", "-", host) or "peer"
    safe_port = re.sub(r"[^0-9]", "", port) or "0"
    return f"{safe_host}_{safe_port}_{connection}_{stream_id}"


class Outputs:
    """Which stream writes where (``--output FILE``, ``--output -``, ``--output-dir DIR``).

    - ``--output FILE`` takes exactly one stream, the first: every other stream, at the
      same time or later, on any connection, is refused before any of its bytes are
      written, so no one else's messages ever reach the file.
    - ``--output -`` (stdout): every stream writes, batch by batch, as before.
    - ``--output-dir DIR``: each stream writes its own file, named by
      :func:`stream_file_name`.

    A file is written as ``NAME.partial`` and renamed to ``NAME`` when its stream ends
    cleanly (the sender ended it and every message was written), before the END_STREAM
    that tells the sender so; an incomplete transfer keeps the ``.partial`` name, so it
    never looks complete, and the summary names it.
    """

    def __init__(
        self,
        *,
        file: str | None = None,
        directory: str | None = None,
        stdout: BinaryIO | None = None,
        fsync: bool = False,
    ) -> None:
        self.file = file
        self.directory = directory
        self.fsync = fsync
        self._stdout = Sink(stdout, fsync=False) if stdout is not None else None
        self._owner: str | None = None  # --output FILE: the stream that has it
        self.complete = 0
        self.incomplete = 0
        self.incomplete_paths: list[str] = []  # at most MAX_LISTED_FILES

    @property
    def active(self) -> bool:
        return self._stdout is not None or self.file is not None or self.directory is not None

    def claim(
        self, peer: str, connection: int, stream_id: int, *, resume: bool = False
    ) -> Sink | None:
        """The sink this stream writes to (``None``: no output).

        ``resume`` (spec §15.10): the sender can start anywhere, so ``--output FILE``
        goes on after what ``FILE.partial`` holds (from a receiver that stopped before
        the stream ended) instead of starting it again; the sink's ``held`` says how much.

        Raises:
            OutputRefused: --output FILE already has its stream.
            OSError: the file cannot be created.
        """
        if self._stdout is not None:
            return self._stdout
        if self.file is not None:
            if self._owner is not None:
                raise OutputRefused(
                    f"--output {self.file} takes one stream and has one ({self._owner}); "
                    "the receiver uses --output-dir for many senders"
                )
            self._owner = f"stream {stream_id} from {peer}"
            return self._open(self.file, resume=resume)
        if self.directory is not None:
            name = stream_file_name(peer, connection, stream_id)
            return self._open(os.path.join(self.directory, name))
        return None

    def _open(self, final: str, *, resume: bool = False) -> Sink:
        partial = final + PARTIAL_SUFFIX
        if resume and os.path.isfile(partial):
            file = open(partial, "ab")  # noqa: SIM115 - the Sink closes it
            sink = Sink(file, fsync=self.fsync, path=partial, final=final)
            sink.held = file.tell()
            return sink
        return Sink(open(partial, "wb"), fsync=self.fsync, path=partial, final=final)

    def finish(self, sink: Sink | None, *, complete: bool) -> None:
        """The stream ended: close its file; if ``complete``, rename it to its final name
        (fsyncing the directory with --fsync), else it keeps its ``.partial`` name.

        Raises:
            OSError: the rename failed; the file keeps its ``.partial`` name, and the caller
                must not tell the sender the stream is done.
        """
        if sink is None or sink is self._stdout:
            return
        sink.close()
        if complete and sink.path != sink.final:
            os.replace(sink.path or "", sink.final)
            sink.path = sink.final
            if self.fsync:
                _fsync_directory(os.path.dirname(sink.final) or ".")
        if complete:
            self.complete += 1
        else:
            self.incomplete += 1
            if len(self.incomplete_paths) < MAX_LISTED_FILES:
                self.incomplete_paths.append(sink.path or "?")

    def summary(self) -> dict[str, Any] | None:
        if self.file is None and self.directory is None:
            return None
        return {
            "complete": self.complete,
            "incomplete": self.incomplete,
            "incomplete_paths": self.incomplete_paths,
        }
