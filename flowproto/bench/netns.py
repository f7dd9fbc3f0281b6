"""Two network namespaces joined by a veth pair whose link is rate-limited with ``tc tbf``.

Used by ``flowproto bench --netns RATE``: the receiver runs in one namespace, the
sender in the other, and the sender's side of the link is shaped to ``RATE`` (``tc``
syntax, e.g. ``200mbit``). It needs root and ``ip``/``tc``; where that is not possible,
:func:`veth_pair` raises :class:`NetnsUnavailable` with the reason and the harness skips.
Everything it creates is removed on exit (deleting a namespace deletes its veth end).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class NetnsUnavailable(Exception):
    """Namespaces cannot be made here; the message says why."""


@dataclass(frozen=True)
class Link:
    """Where each side runs: command prefixes and the receiver's address."""

    receiver_prefix: list[str]
    sender_prefix: list[str]
    receiver_host: str
    rate: str


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise NetnsUnavailable(f"'ip {' '.join(args)}' failed: {result.stderr.strip()}")


def _tc(ns: str, *args: str) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True, timeout=10
    )
    if result.returncode != 0:
        raise NetnsUnavailable(f"'tc {' '.join(args)}' failed: {result.stderr.strip()}")


@contextmanager
def veth_pair(rate: str) -> Iterator[Link]:
    """Create the namespaces and the shaped link for the duration of the block."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"'{tool}' is not installed")
    tag = f"fpb{os.getpid() % 100000}"
    rx_ns, tx_ns = f"{tag}rx", f"{tag}tx"
    rx_if, tx_if = f"{tag}r", f"{tag}t"
    made: list[str] = []
    try:
        for ns in (rx_ns, tx_ns):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", rx_if, "netns", rx_ns, "type", "veth",
            "peer", "name", tx_if, "netns", tx_ns)  # fmt: skip
        _ip("-n", rx_ns, "addr", "add", "10.203.0.2/24", "dev", rx_if)
        _ip("-n", tx_ns, "addr", "add", "10.203.0.1/24", "dev", tx_if)
        for ns, dev in ((rx_ns, rx_if), (tx_ns, tx_if)):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        # Shape the data direction: the sender's egress.
        _tc(tx_ns, "qdisc", "add", "dev", tx_if, "root", "tbf", "rate", rate, "burst", "64kb",
            "latency", "50ms")  # fmt: skip
        yield Link(
            receiver_prefix=["ip", "netns", "exec", rx_ns],
            sender_prefix=["ip", "netns", "exec", tx_ns],
            receiver_host="10.203.0.2",
            rate=rate,
        )
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
