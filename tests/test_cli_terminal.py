"""What ``flowproto send`` draws on a real terminal: a pseudo-terminal of 80 columns.

Issue #16: at 80 columns the live line (~165 characters) wrapped, and each ``\\r`` rewound
only one of its rows, so fragments piled up; an error was glued onto the bar; the bar
was drawn before the connection existed. Each test runs the command on the slave side
of a pty sized 80x24 and reads everything it drew from the master side.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from cli_helpers import ENV, FLOWPROTO, receiver

COLUMNS = 80
TIMEOUT = 60


def on_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``flowproto ARGS`` with stderr on an 80-column pty; (status, what it drew)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    env = {**ENV, "COLUMNS": str(COLUMNS), "TERM": "xterm"}
    proc = subprocess.Popen(
        [*FLOWPROTO, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=slave, env=env, cwd=cwd,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the slave side is closed, everything was read
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    status = proc.wait(timeout=TIMEOUT)
    return status, b"".join(chunks).decode("utf-8", "replace")


#: Terminal escape sequences (click's bar hides and shows the cursor).
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def drawn_rows(text: str) -> list[str]:
    """What each carriage return or newline leaves on one row (escape codes removed)."""
    return [row for row in re.split(r"[\r\n]", ESCAPES.sub("", text)) if row]


def send_on_terminal(
    tmp_path: Path, receiver_args: list[str], count: int, backend: str = "trio"
) -> tuple[int, str]:
    """``send --raw --size 100 --count COUNT`` on the pty, to a receiver with these args."""
    with receiver("--raw", "-q", *receiver_args, cwd=tmp_path) as (_, port):
        return on_terminal(
            ["send", "--connect", f"127.0.0.1:{port}", "--raw", "--size", "100",
             "--count", str(count), "--backend", backend],
            tmp_path,
        )  # fmt: skip


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_the_bar_fits_80_columns_and_the_summary_starts_its_own_line(
    tmp_path: Path, backend: str
) -> None:
    status, drawn = send_on_terminal(tmp_path, ["--rate", "1000", "--once"], 2500, backend)
    assert status == 0, drawn
    rows = drawn_rows(drawn)
    assert any(row.startswith("sending") for row in rows), rows  # the bar was drawn
    assert max(len(row) for row in rows if row.startswith("sending")) <= COLUMNS, rows
    # The summary is a line of its own, right after the bar's last state.
    assert re.search(r"\nsent 2500 messages", ESCAPES.sub("", drawn)), drawn
    assert "100%" in drawn


def test_no_bar_before_the_connection_and_an_error_starts_its_own_line(tmp_path: Path) -> None:
    with receiver("--raw", "-q", cwd=tmp_path) as (_, port):
        pass  # the receiver is gone: nothing listens on the port any more
    status, drawn = on_terminal(
        ["send", "--connect", f"127.0.0.1:{port}", "--count", "100", "--retry-for", "0"],
        tmp_path,
    )
    assert status == 1, drawn
    assert "sending" not in drawn  # never connected: no bar
    assert re.search(r"(^|\n)flowproto: error: ", drawn), drawn


@pytest.mark.skipif(sys.platform != "linux", reason="pty sizes as on Linux")
@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_stream_failing_mid_transfer_ends_the_bar_before_the_error(
    tmp_path: Path, backend: str
) -> None:
    status, drawn = send_on_terminal(tmp_path, ["--rate", "500", "--count", "300"], 5000, backend)
    assert status == 1, drawn
    assert "sending" in drawn
    for match in re.finditer(r"flowproto: error:", drawn):
        before = ESCAPES.sub("", drawn[: match.start()])
        assert before.endswith("\n"), drawn  # never glued onto the bar
