"""Tests for the ``flowproto`` command line.

Options are checked with click's CliRunner (nothing is started when they are wrong);
the commands themselves run as ``python -m flowproto`` subprocesses on 127.0.0.1. The
receiver listens on port 0 and the tests learn the port from its ``listening on`` line,
so nothing waits by sleeping, and every subprocess call is bounded by a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowproto.cli import main

TIMEOUT = 60
FLOWPROTO = [sys.executable, "-m", "flowproto"]
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


def run_flowproto(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLOWPROTO, *args],
        capture_output=True,
        encoding="utf-8",
        env=ENV,
        cwd=cwd,
        check=False,
        timeout=TIMEOUT,
    )


class Receiver:
    """A ``flowproto receive`` subprocess whose stderr is read line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")  # end of stderr

    def wait_for_port(self) -> int:
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            self.stderr.append(line)
            if not line:
                raise AssertionError(f"receiver exited before listening: {self.stderr}")
            if line.startswith("listening on "):
                return int(line.rsplit(":", 1)[1])

    def finish(self) -> tuple[int, str, str]:
        """Wait for the receiver to exit: (status, stdout, all of stderr)."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout.read()
        status = self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        return status, stdout, "".join(self.stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def receiver(*args: str, cwd: Path) -> Iterator[Receiver]:
    proc = subprocess.Popen(
        [*FLOWPROTO, "receive", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        env=ENV,
        cwd=cwd,
    )
    r = Receiver(proc)
    try:
        r.port = r.wait_for_port()
        yield r
    finally:
        r.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- help and options ---------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("demo", "receive", "send"):
        assert command in result.output


@pytest.mark.parametrize("command", [[], ["demo"], ["receive"], ["send"], ["conformance"]])
def test_dash_h_is_help_everywhere(command: list[str]) -> None:
    # issue #16: "flowproto -h" said "No such option '-h'"; -h is --help, as in most tools.
    short = CliRunner().invoke(main, [*command, "-h"])
    long = CliRunner().invoke(main, [*command, "--help"])
    assert short.exit_code == 0, short.output
    assert short.output == long.output
    assert "-h, --help" in short.output


def test_bench_dash_h_is_the_harness_help() -> None:
    # bench passes its arguments to the harness, whose argparse has its own -h.
    result = CliRunner().invoke(main, ["bench", "-h"])
    assert result.exit_code == 0, result.output
    assert "--quick" in result.output


@pytest.mark.parametrize("command", ["demo", "receive", "send"])
def test_each_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert "0.1.0" in result.output


def test_python_m_flowproto_help() -> None:
    proc = run_flowproto("--help")
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--connect", "nonsense", "--count", "1"],
        ["send", "--connect", "127.0.0.1:99999", "--count", "1"],
        ["send", "--connect", "127.0.0.1:port", "--count", "1"],
        ["receive", "--listen", "localhost"],
        ["receive"],
    ],
)
def test_a_bad_host_port_is_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["send", "--connect", "127.0.0.1:9"], "--count"),
        (["send", "--connect", "127.0.0.1:9", "--input", "-", "--count", "3"], "--input"),
        (["send", "--connect", "127.0.0.1:9", "--input", "-", "--streams", "2"], "--streams"),
        (["send", "--connect", "127.0.0.1:9", "--count", "3", "--lines"], "--lines"),
        (["send", "--connect", "127.0.0.1:9", "--count", "3", "--size", "4"], "--size"),
        (["send", "--connect", "127.0.0.1:0", "--count", "3"], "--connect"),
        (["receive", "--listen", ":0", "--window-bytes", "1000", "--max-message", "2000"], "2000"),
        (["receive", "--listen", ":0", "--json", "--output", "-"], "stdout"),
        (["receive", "--listen", ":0", "--rate", "0"], "--rate"),
        (["demo", "--duration", "0"], "--duration"),
        (["demo", "--window-messages", "0"], "--window-messages"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output
    assert complaint in result.output


# --- the commands -------------------------------------------------------------------------


def test_demo_shows_backpressure_and_exits_0() -> None:
    proc = run_flowproto("demo", "--duration", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = proc.stdout.strip().splitlines()[-1]
    assert "lost 0" in verdict
    assert "≤ window 16" in verdict
    assert "backpressure worked" in verdict
    sent = int(verdict.split(",")[0].removeprefix("sent "))
    assert f"received {sent}," in verdict
    assert "Traceback" not in proc.stderr


def test_a_file_sent_raw_arrives_byte_identical(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024))
    out = tmp_path / "out.bin"
    with receiver("--rate", "2000", "--output", str(out), "--once", "--raw", cwd=tmp_path) as r:
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{r.port}", "--input", str(source), "--raw"
        )
        status, _, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    assert status == 0, stderr
    assert sha256(out) == sha256(source)


@pytest.mark.parametrize("chunk", [65536, 1000])
def test_a_file_goes_in_whole_chunks_read_by_the_block(tmp_path: Path, chunk: int) -> None:
    # Unpaced, send reads READ_BLOCK at a time (whole chunks) and sends each block's
    # chunks as one batch: every chunk but the last is --chunk-size, across block ends.
    size = 2 * 1024 * 1024 + 12_345
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(size))
    out = tmp_path / "out.bin"
    with receiver("--output", str(out), "--once", "--raw", cwd=tmp_path) as r:
        sent = run_flowproto(
            *("send", "--connect", f"127.0.0.1:{r.port}", "--input", str(source), "--raw"),
            *("--chunk-size", str(chunk), "--json"),
        )
        status, _, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    assert status == 0, stderr
    summary = json.loads(sent.stdout)
    assert summary["messages"] == summary["delivered"] == -(-size // chunk)
    assert summary["bytes"] == size
    assert sha256(out) == sha256(source)


def test_generated_messages_are_all_reported_delivered(tmp_path: Path) -> None:
    with receiver("--once", "--latency", "--json", "-q", cwd=tmp_path) as r:
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{r.port}", "--size", "100", "--count", "1000", "--json"
        )
        status, stdout, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["messages"] == 1000
    assert summary["bytes"] == 100_000
    assert summary["delivered"] == 1000
    for field in ("seconds", "msgs_per_s", "mb_per_s", "seconds_blocked"):
        assert field in summary
    assert status == 0, stderr
    received = json.loads(stdout)
    assert received["messages"] == 1000
    assert received["latency_ms"]["max"] >= received["latency_ms"]["p50"] >= 0


def test_lines_in_msgpack_mode_arrive_as_json_lines(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("first\nsecond\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with receiver("--once", "--msgpack", "--output", str(out), "-q", cwd=tmp_path) as r:
        sent = run_flowproto(
            "send",
            *("--connect", f"127.0.0.1:{r.port}", "--input", str(source), "--lines", "--msgpack"),
        )
        status, _, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    assert status == 0, stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == ["first", "second"]


def test_a_refused_connection_is_one_line_on_stderr_and_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_flowproto("send", "--connect", f"127.0.0.1:{port}", "--count", "1")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("flowproto: error: cannot connect to 127.0.0.1:")


def test_a_receiver_that_stops_early_fails_the_sender_with_one_error_line(tmp_path: Path) -> None:
    """The summary, then one error line naming the stream (issue 12: streams fail alone,
    so the summary is printed even when one fails)."""
    with receiver("--count", "10", "--json", "-q", cwd=tmp_path) as r:
        sent = run_flowproto("send", "--connect", f"127.0.0.1:{r.port}", "--count", "1000", "-q")
        status, stdout, stderr = r.finish()
    assert status == 0, stderr
    assert json.loads(stdout)["messages"] == 10
    assert sent.returncode == 1
    assert "Traceback" not in sent.stderr
    lines = sent.stderr.strip().splitlines()
    assert len(lines) == 2, sent.stderr
    assert lines[0].startswith("sent ") and lines[0].endswith("; 1 of 1 streams failed")
    assert lines[1].startswith("flowproto: error: stream 1 was reset by the peer: CANCEL")
    assert re.search(r"the receiver confirmed 10 of \d+ messages", lines[1]), lines[1]


def test_vectors_prints_where_the_spec_vectors_are_and_they_are_the_specs() -> None:
    """issue #16: the test vectors are usable from an installed package; in a checkout
    flowproto/_vectors links to spec/vectors, and no vector file is left out."""
    from pathlib import Path

    from click.testing import CliRunner

    from flowproto.cli import main

    root = Path(__file__).resolve().parent.parent
    result = CliRunner().invoke(main, ["vectors"])
    assert result.exit_code == 0, result.output
    where = Path(result.output.strip())
    spec = sorted(p.name for p in (root / "spec" / "vectors").glob("*.json"))
    assert sorted(p.name for p in where.glob("*.json")) == spec
    for name in spec:
        assert (where / name).read_bytes() == (root / "spec" / "vectors" / name).read_bytes()
    listed = CliRunner().invoke(main, ["vectors", "--json"])
    assert listed.exit_code == 0
    frames = json.loads((root / "spec" / "vectors" / "frames.json").read_text("utf-8"))
    assert f'"vectors": {len(frames["vectors"])}' in listed.output  # frames.json's count
