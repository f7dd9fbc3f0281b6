"""The two I/O layers speak the same protocol: a sender on one and a receiver on the
other, each in its own process (tests/interop_peer.py), every message arriving in order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PEER = Path(__file__).resolve().parent / "interop_peer.py"
COUNT = 3000  # per stream, two streams: many CREDIT round trips with the peer's windows


@pytest.mark.parametrize(
    ("sender", "receiver"),
    [("asyncio", "trio"), ("trio", "asyncio"), ("asyncio", "asyncio")],
    ids=["asyncio-to-trio", "trio-to-asyncio", "asyncio-to-asyncio"],
)
def test_every_message_arrives_in_order_across_processes(sender: str, receiver: str) -> None:
    with subprocess.Popen(
        [sys.executable, str(PEER), "receive", receiver],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            sent = subprocess.run(
                [sys.executable, str(PEER), "send", sender, str(port), str(COUNT)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout) == [{"count": COUNT}, {"count": COUNT}]
            served = [json.loads(server.stdout.readline()) for _ in range(2)]
            assert served == [{"count": COUNT}, {"count": COUNT}]
        finally:
            server.terminate()
            server.wait(10)
