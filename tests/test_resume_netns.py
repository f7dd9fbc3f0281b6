"""A link that goes down for 20 s in the middle of a copy, then comes back (spec §15).

Two network namespaces joined by a veth pair: the receiver in one, the sender in the
other. Mid-transfer the sender's end of the link goes down for LINK_DOWN seconds: no FIN,
no reset, packets just stop. Either TCP rides the outage out by itself (its
retransmissions get through once the link is up, before any flowproto timer fires), or a
timeout ends the transport and the sender resumes the session once it can connect again;
either way the copy completes, byte-identical, and nothing is reported lost. Needs root
and iproute2; skipped, saying so, without them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import ENV, Proc

#: How long the link stays down (the issue asks for 20 s).
LINK_DOWN = 20.0
#: Names of this process's own (suites running at once in other checkouts must not delete
#: or reuse them: that once cut a copy here for good); interface names are at most 15.
_TAG = f"fprs{os.getpid() % 100000}"
NS_RECEIVER, NS_SENDER = f"{_TAG}-r", f"{_TAG}-s"
VETH_RECEIVER, VETH_SENDER = f"{_TAG}r", f"{_TAG}s"
RECEIVER_IP, SENDER_IP = "10.231.77.1", "10.231.77.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _can_use_namespaces() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root for ip netns (run as root to include it)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


@pytest.fixture
def link() -> Iterator[None]:
    reason = _can_use_namespaces()
    if reason is not None:
        pytest.skip(reason)
    for ns in (NS_RECEIVER, NS_SENDER):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    try:
        _ip("netns", "add", NS_RECEIVER)
        _ip("netns", "add", NS_SENDER)
        _ip("link", "add", VETH_RECEIVER, "type", "veth", "peer", "name", VETH_SENDER)
        _ip("link", "set", VETH_RECEIVER, "netns", NS_RECEIVER)
        _ip("link", "set", VETH_SENDER, "netns", NS_SENDER)
        _ip("-n", NS_RECEIVER, "addr", "add", f"{RECEIVER_IP}/24", "dev", VETH_RECEIVER)
        _ip("-n", NS_SENDER, "addr", "add", f"{SENDER_IP}/24", "dev", VETH_SENDER)
        for ns, dev in ((NS_RECEIVER, VETH_RECEIVER), (NS_SENDER, VETH_SENDER)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot set up network namespaces here: {exc}")
    try:
        yield
    finally:
        for ns in (NS_RECEIVER, NS_SENDER):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "flowproto", *args]


def test_a_link_down_for_20_s_mid_copy_then_up_completes_byte_identical(
    link: None, tmp_path: Path
) -> None:
    data = random.Random(18).randbytes(6_000_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    out = tmp_path / "out.bin"
    receiver = Proc(
        in_ns(
            NS_RECEIVER,
            *("receive", "--listen", f"{RECEIVER_IP}:9000", "--output", str(out)),
            *("--raw", "--once", "-q", "--rate", "20"),
        ),
        tmp_path,
    )
    try:
        receiver.wait_for(r"^listening on ")
        sender = subprocess.Popen(
            in_ns(
                NS_SENDER,
                *("send", "--connect", f"{RECEIVER_IP}:9000", "--raw", "--input", str(source)),
                *("-q", "--json"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
            cwd=tmp_path,
        )
        partial = tmp_path / "out.bin.partial"
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size > 0):
            assert time.monotonic() < deadline, "the copy did not start"
            assert sender.poll() is None, sender.communicate()
            threading.Event().wait(0.05)  # polling a file another process writes
        _ip("-n", NS_SENDER, "link", "set", VETH_SENDER, "down")
        threading.Event().wait(LINK_DOWN)  # the outage itself: what this test is about
        held = partial.stat().st_size
        _ip("-n", NS_SENDER, "link", "set", VETH_SENDER, "up")
        stdout, stderr = sender.communicate(timeout=120)
        assert sender.returncode == 0, stderr.decode()
        status, _, receiver_err = receiver.finish(timeout=60)
        assert status == 0, receiver_err
    finally:
        receiver.close()
    assert 0 < held < len(data)  # the outage came in the middle of the copy
    assert out.read_bytes() == data
    summary = json.loads(stdout)
    assert summary["delivered"] == summary["messages"]
    assert summary["failed_streams"] == []
