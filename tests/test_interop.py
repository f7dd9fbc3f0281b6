"""The two I/O layers speak the same protocol: a sender on one and a receiver on the
other, each in its own process (tests/interop_peer.py), every message arriving in order;
and they resume each other's sessions (spec §15) through a proxy that cuts the TCP
connection over and over."""

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


@pytest.mark.parametrize(
    ("sender", "receiver"),
    [("asyncio", "trio"), ("trio", "asyncio")],
    ids=["asyncio-resumes-against-trio", "trio-resumes-against-asyncio"],
)
def test_each_layer_resumes_a_session_of_the_other_through_a_cutting_proxy(
    sender: str, receiver: str, tmp_path: Path
) -> None:
    """spec §15.6, §15.8 across layers and processes: about 6 MB over two streams through
    ``flowproto.bench.cutproxy`` cutting every 100 KiB (FIN and RST in turn); the
    initiator of one layer resumes each time against the acceptor of the other, and
    every message arrives once, in order."""
    from test_cli_resume import cut_proxy

    with subprocess.Popen(
        [sys.executable, str(PEER), "receive", receiver, "--resume"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            proxy, proxy_port = cut_proxy(port, 100 * 1024, tmp_path)
            try:
                sent = subprocess.run(
                    [sys.executable, str(PEER), "send", sender, str(proxy_port), str(COUNT),
                     "--resume"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )  # fmt: skip
            finally:
                proxy.close()
            assert sent.returncode == 0, sent.stderr
            answers, session = [json.loads(line) for line in sent.stdout.splitlines()]
            assert answers == [{"count": COUNT}, {"count": COUNT}]
            assert session["reconnects"] >= 20, session
            served = [json.loads(server.stdout.readline()) for _ in range(2)]
            assert served == [{"count": COUNT}, {"count": COUNT}]
        finally:
            server.terminate()
            server.wait(10)
