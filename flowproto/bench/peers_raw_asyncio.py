"""The ``raw-asyncio`` peers: the minimal asyncio framing program, the twin of :mod:`.peers_raw`.

asyncio's ``StreamReader``/``StreamWriter``, ``<u32 length>`` frames, one constant
payload, the same ~64 KiB block of frames written each time (``write`` then ``drain``).
The receiver cuts every message's body out of its reads (:class:`.peers_raw.RawCounter`)
and counts frames and bytes: what any asyncio framing must do at the least, and what
``flowproto-asyncio`` is compared with. ``--loop uvloop`` runs it on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from .aio import accept_socket
from .peers_common import READ_SIZE, RunClock, mono, sender_report
from .peers_raw import RawCounter, raw_frames_block, receiver_line
from .workload import cpu_seconds

PEER = "raw-asyncio"


async def raw_asyncio_receiver(args: argparse.Namespace) -> dict[str, Any]:
    """Count frames until the sender's end of stream; the receiver's JSON line."""
    sock = await accept_socket(args)
    # A reader may hold one read's worth before it pauses the transport.
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
    cpu0 = cpu_seconds()
    clock = RunClock()
    counter = RawCounter()
    first: float | None = None
    last: float | None = None
    read = reader.read
    while chunk := await read(READ_SIZE):
        now = mono()
        if first is None:
            first = clock.start(now)
        if counter.feed(chunk):
            last = now
    cpu = cpu_seconds() - cpu0
    writer.close()  # the sender waits for this: everything was counted
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return receiver_line(PEER, counter, clock, first, last, cpu)


async def raw_asyncio_sender(args: argparse.Namespace) -> dict[str, Any]:
    """Write the constant block until ``--count`` frames or ``--duration`` seconds."""
    reader, writer = await asyncio.open_connection(args.host, args.port)
    block, per_write = raw_frames_block(args.size)
    frame_len = len(block) // per_write
    cpu0 = cpu_seconds()
    start = mono()
    stop_at = start + args.duration
    sent = 0
    waited = 0.0
    write, drain = writer.write, writer.drain
    while sent < args.count and mono() < stop_at:
        n = min(per_write, args.count - sent)
        write(block if n == per_write else block[: n * frame_len])  # the last write only
        t = mono()
        await drain()  # waits while the transport holds more than its high-water mark
        waited += mono() - t
        sent += n
    elapsed = mono() - start
    cpu = cpu_seconds() - cpu0
    # Half-close, then wait (bounded) for the receiver's close: it has counted everything.
    writer.write_eof()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(), args.timeout)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return sender_report(PEER, [sent], elapsed, cpu, waited)
