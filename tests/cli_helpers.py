"""Subprocesses of ``python -m flowproto`` whose stderr is read line by line.

The CLI delivery tests (``test_cli_delivery.py``) start receivers and senders as real
processes on 127.0.0.1 and wait for what they print (``listening on ...``, a sender's
live ``delivered N`` line) instead of sleeping; every wait is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TIMEOUT = 60
FLOWPROTO = [sys.executable, "-m", "flowproto"]
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


class Proc:
    """A subprocess whose stderr lines are collected by a thread, so waits are bounded."""

    def __init__(self, args: list[str], cwd: Path, stdin: bytes | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
            cwd=cwd,
        )
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._out: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read_out, daemon=True)
        self._out_reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.decode("utf-8", "replace"))
        self.lines.put("")  # end of stderr

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read(65536), b""):  # type: ignore[union-attr]
            self._out.append(chunk)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stderr line (from now on) that matches ``pattern``."""
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            self.stderr.append(line)
            if not line:
                raise AssertionError(f"exited before printing {pattern!r}: {self.stderr}")
            match = re.search(pattern, line)
            if match is not None:
                return match

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        """Wait for the exit: (status, stdout, all of stderr)."""
        status = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=TIMEOUT)
        self._out_reader.join(timeout=TIMEOUT)
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        return status, b"".join(self._out).decode("utf-8", "replace"), "".join(self.stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        self._out_reader.join(timeout=TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def flowproto(*args: str, cwd: Path, stdin: bytes | None = None) -> Iterator[Proc]:
    """``python -m flowproto ARGS`` running; killed on exit if still running."""
    p = Proc([*FLOWPROTO, *args], cwd, stdin)
    try:
        yield p
    finally:
        p.close()


@contextmanager
def receiver(*args: str, cwd: Path) -> Iterator[tuple[Proc, int]]:
    """``flowproto receive --listen 127.0.0.1:0 ARGS`` and the port it listens on."""
    with flowproto("receive", "--listen", "127.0.0.1:0", *args, cwd=cwd) as r:
        port = int(r.wait_for(r"^listening on .*:(\d+)$").group(1))
        yield r, port


@contextmanager
def script(source: str, *args: str, cwd: Path) -> Iterator[tuple[Proc, int]]:
    """A Python script that prints ``port N`` to stderr once it listens, and that port."""
    path = cwd / "peer_script.py"
    path.write_text(source, encoding="utf-8")
    p = Proc([sys.executable, str(path), *args], cwd)
    try:
        port = int(p.wait_for(r"^port (\d+)$").group(1))
        yield p, port
    finally:
        p.close()


def run_flowproto(
    *args: str, cwd: Path, stdin: bytes | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowproto ARGS`` to its end; stdout and stderr as text."""
    done = subprocess.run(
        [*FLOWPROTO, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=ENV,
        cwd=cwd,
        check=False,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
