"""The receiver's delivery rule, written once for both backends (``flowproto.cli._consumer``):
a batch is written, flushed and (with ``--fsync``) on disk before its credit goes back
(spec §8.5, §10.5), on Trio's and on asyncio's event loop alike."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from flowproto import Settings
from flowproto.cli._consumer import Consumer, ReceiveOptions
from flowproto.cli._layer import Layer
from flowproto.cli._layer_asyncio import ASYNCIO
from flowproto.cli._layer_trio import TRIO


class FakeStream:
    """Records when the batch's credit goes back, and what the output held then."""

    def __init__(self, out: Path, events: list[str]) -> None:
        self.out = out
        self.events = events
        self.stream_id = 1

    def release(self, count: int) -> None:
        self.events.append(f"release {count} after {self.out.stat().st_size} bytes")


class Sole(Consumer):
    def stop(self) -> None:
        self.stopping = True


async def deliver(layer: Layer, tmp_path: Path, events: list[str]) -> None:
    out = tmp_path / "out.bin"
    opts = ReceiveOptions(
        host=None, port=0, settings=Settings(), codec="raw", output=str(out), fsync=True
    )
    consumer = Sole(opts, layer, sessions=False)
    sink = consumer.outputs.claim("127.0.0.1:1", 1, 1)
    assert sink is not None and sink.syncs
    stream = FakeStream(tmp_path / "out.bin.partial", events)
    await consumer._deliver(stream, [b"abc", b"de"], sink)
    consumer.outputs.finish(sink, complete=True)
    assert out.read_bytes() == b"abcde"
    assert consumer.messages == 2 and consumer.bytes == 5


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_batch_is_written_and_fsynced_before_its_credit_goes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.fstat(fd).st_size} bytes")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    runs: dict[str, Any] = {
        "trio": lambda: trio.run(deliver, TRIO, tmp_path, events),
        "asyncio": lambda: asyncio.run(deliver(ASYNCIO, tmp_path, events)),
    }
    runs[backend]()
    assert events[:2] == ["fsync 5 bytes", "release 2 after 5 bytes"]
