"""``flowproto send/receive --backend asyncio``: the commands on the asyncio layer, each
side on either backend, as ``python -m flowproto`` subprocesses on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import receiver, run_flowproto


@pytest.mark.parametrize(
    ("sender", "receiving"),
    [("asyncio", "asyncio"), ("asyncio", "trio"), ("trio", "asyncio")],
)
def test_send_and_receive_across_backends(sender: str, receiving: str, tmp_path: Path) -> None:
    with receiver(
        "--backend", receiving, "--once", "--json", "--window-messages", "16", "--no-autotune",
        cwd=tmp_path,
    ) as (r, port):  # fmt: skip
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{port}", "--count", "5000", "--size", "200",
            "--streams", "3", "--json", "--backend", sender,
            cwd=tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        status, out, err = r.finish()
    assert status == 0, err
    summary = json.loads(sent.stdout)
    assert summary["messages"] == summary["delivered"] == 5000
    assert summary["bytes"] == 5000 * 200
    assert summary["failed_streams"] == []
    got = json.loads(out)
    assert (got["messages"], got["bytes"], got["streams"]) == (5000, 5000 * 200, 3)
    assert got["buffered_peak_messages"] <= 16  # the window (spec §8.4)


def test_asyncio_refuses_the_options_it_does_not_have(tmp_path: Path) -> None:
    done = run_flowproto(
        "receive", "--listen", "127.0.0.1:0", "--backend", "asyncio", "--latency", cwd=tmp_path
    )
    assert done.returncode == 2
    assert "--backend asyncio does not support --latency" in done.stderr


def test_conformance_passes_strictly_against_an_asyncio_receiver(tmp_path: Path) -> None:
    """CI's run against `flowproto receive --backend asyncio`, minus the timers."""
    import re

    from test_cli import receiver as receive_process

    with receive_process("--quiet", "--backend", "asyncio", cwd=tmp_path) as r:
        proc = run_flowproto(
            "conformance", f"127.0.0.1:{r.port}", "--strict", "--no-timers", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # The asyncio layer has no sessions yet (spec §15): it offers none, so the three
        # cases that need one are skipped, saying so.
        assert re.search(r"\n(\d+) passed, 0 failed, 3 skipped", proc.stdout)
        assert proc.stdout.count("the peer's HELLO offers no sessions") == 3


def test_conformance_passes_strictly_against_asyncio_senders(tmp_path: Path) -> None:
    """CI's sender run: one `flowproto send --backend asyncio --streams 3` per case."""
    from test_conformance import SENDER_CASES, check_senders

    _, stdout, _ = check_senders(
        tmp_path, "--count", "100", "--streams", "3", "-q", "--backend", "asyncio"
    )
    assert f"{len(SENDER_CASES)} passed, 0 failed" in stdout
