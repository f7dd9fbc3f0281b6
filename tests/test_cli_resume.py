"""``flowproto send --input`` to ``flowproto receive --output`` through a proxy that cuts
the TCP connection every 300 KB: the sender reconnects and resumes each time (spec §15),
and the output is byte-identical. Real processes on 127.0.0.1, every wait bounded."""

from __future__ import annotations

import json
import random
import signal
import sys
from pathlib import Path

import pytest
from cli_helpers import Proc, flowproto, receiver, run_flowproto

#: (sender, receiver) backends: each layer with itself, and each with the other.
BACKEND_PAIRS = [
    ("trio", "trio"),
    ("asyncio", "asyncio"),
    ("asyncio", "trio"),
    ("trio", "asyncio"),
]


def cut_proxy(target: int, cut_every: int, cwd: Path) -> tuple[Proc, int]:
    proxy = Proc(
        [
            sys.executable,
            "-m",
            "flowproto.bench.cutproxy",
            "--target",
            f"127.0.0.1:{target}",
            "--cut-every",
            str(cut_every),
        ],
        cwd,
    )
    port = int(proxy.wait_for(r"cutproxy listening on .*:(\d+)$").group(1))
    return proxy, port


def test_a_20_mb_transfer_cut_more_than_50_times_arrives_byte_identical(tmp_path: Path) -> None:
    """spec §15 end to end: at least 50 lost connections in a 20 MB transfer; each is
    resumed, nothing lost or written twice; both summaries say so."""
    data = random.Random(15).randbytes(20_000_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    out = tmp_path / "out.bin"
    with receiver("--output", str(out), "--raw", "--once", "-q", "--json", cwd=tmp_path) as (
        r,
        port,
    ):
        proxy, proxy_port = cut_proxy(port, 300_000, tmp_path)
        try:
            sent = run_flowproto(
                "send",
                "--connect",
                f"127.0.0.1:{proxy_port}",
                "--raw",
                "--input",
                str(source),
                "-q",
                "--json",
                cwd=tmp_path,
            )
            status, stdout, stderr = r.finish()
        finally:
            proxy.close()
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["reconnects"] >= 50, summary
    assert summary["delivered"] == summary["messages"] == 306
    assert summary["messages_retransmitted"] > 0
    assert status == 0, stderr
    received = json.loads(stdout)
    assert received["resumed"] == summary["reconnects"]
    assert received["connections"] == 1
    assert out.read_bytes() == data


def test_no_reconnect_fails_at_the_first_cut_and_says_what_was_confirmed(tmp_path: Path) -> None:
    """``--no-reconnect``: a lost connection fails the transfer (exit 1), as before §15."""
    source = tmp_path / "in.bin"
    source.write_bytes(random.Random(16).randbytes(4_000_000))
    with receiver("--raw", "-q", cwd=tmp_path) as (_, port):
        proxy, proxy_port = cut_proxy(port, 500_000, tmp_path)
        try:
            sent = run_flowproto(
                "send",
                "--connect",
                f"127.0.0.1:{proxy_port}",
                "--raw",
                "--input",
                str(source),
                "-q",
                "--no-reconnect",
                cwd=tmp_path,
            )
        finally:
            proxy.close()
    assert sent.returncode == 1
    assert "flowproto: error:" in sent.stderr
    assert "confirmed" in sent.stderr
    assert "resumed" not in sent.stderr


@pytest.mark.parametrize(("sending", "receiving"), BACKEND_PAIRS)
def test_a_receiver_killed_and_restarted_on_the_same_output_resumes_from_what_it_holds(
    sending: str, receiving: str, tmp_path: Path
) -> None:
    """spec §15.10 (cold resume) end to end, either command on either layer: kill -9 of
    the receiver mid-transfer; a new receiver on the same port and --output goes on after
    the bytes FILE.partial holds, the sender seeks there on a new connection, and the
    file ends byte-identical."""
    # 305 chunks: the first receiver (100 a second) would take 3 s over them; it is killed
    # at the sender's first live line with some delivered, about 1 s in.
    data = random.Random(17).randbytes(20_000_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    out = tmp_path / "out.bin"
    partial = tmp_path / "out.bin.partial"
    slow = ("--output", str(out), "--raw", "-q", "--once", "--rate", "100")
    with (
        receiver(*slow, "--backend", receiving, cwd=tmp_path) as (first, port),
        flowproto(
            *("send", "--connect", f"127.0.0.1:{port}", "--raw", "--input", str(source)),
            *("--backend", sending, "--json"),
            cwd=tmp_path,
        ) as s,
    ):
        s.wait_for(r"delivered [1-9]\d*$")  # some of it is in the file
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        held = partial.stat().st_size
        assert 0 < held < len(data)
        with flowproto(
            *("receive", "--listen", f"127.0.0.1:{port}", "--output", str(out), "--raw"),
            *("--once", "-q", "--json", "--backend", receiving),
            cwd=tmp_path,
        ) as second:
            second.wait_for(rf"resuming stream \d+ after its {held} bytes held")
            status, stdout, stderr = s.finish()
            assert status == 0, stderr
            assert f"resuming after the {held} bytes" in stderr
            second_status, second_out, second_err = second.finish()
            assert second_status == 0, second_err
    assert out.read_bytes() == data
    assert not partial.exists()
    summary = json.loads(stdout)
    assert summary["restarts"] == 1
    assert summary["resumed_at_bytes"] == held
    assert summary["failed_streams"] == []
    assert summary.get("backend", "trio") == sending
    received = json.loads(second_out)
    assert received["bytes"] == len(data) - held
    assert received["output_files"]["complete"] == 1
    assert received.get("backend", "trio") == receiving
