"""The ``raw`` peers: the minimal raw-Trio program, the floor any Trio framing can reach.

Length-prefixed frames (``<u32 length>``, one stream), one constant payload built once,
writes coalesced to ~64 KiB (the same bytes every write: the block of frames is built
once too). The receiver cuts every message's body out of its reads as an object of its
own (what an application must at least be handed) and counts frames and bytes; nothing
is checked but the count and the total length. What the other strategies pay on top of
this is framing, checking and flow control (issue #13).

:data:`LENGTH` and :func:`raw_frame` are shared with the latency, setup and
idle-memory programs (:mod:`.peers_rtt`, :mod:`.peers_idle`), so "raw Trio" is the
same framing everywhere.
"""

from __future__ import annotations

import argparse
import struct
from typing import Any, Final

import trio

from .peers_common import (
    READ_SIZE,
    WRITE_SIZE,
    RunClock,
    accept_one,
    finish_sending,
    mono,
    sender_report,
)
from .workload import Sampler, cpu_seconds, peak_rss_kib, percentiles

#: The raw framing's header: the body's length.
LENGTH: Final = struct.Struct("<I")


def raw_frame(payload: bytes) -> bytes:
    """One frame: the length prefix, then the payload."""
    return LENGTH.pack(len(payload)) + payload


def raw_frames_block(size: int) -> tuple[bytes, int]:
    """The constant write: as many frames of ``size`` zero bytes as fit in ~64 KiB (at
    least one), and how many that is."""
    frame = raw_frame(bytes(size))
    per_write = max(1, WRITE_SIZE // len(frame))
    return frame * per_write, per_write


class RawCounter:
    """Cuts a byte stream into its frames' bodies, one ``bytes`` per message, and counts them.

    This is what any framing must do at the least: an application is handed each message
    as an object of its own (issue #13's "the receiver parses and counts"). Reads are
    appended to one buffer; every whole frame's body is sliced out of it; what follows
    the last whole frame (a cut header or body) waits for the next read. The buffer holds
    at most one frame plus one read.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.body_bytes = 0
        self.last = bytearray()  # the last message cut out
        self._buffer = bytearray()

    def feed(self, chunk: bytes | bytearray) -> int:
        """Cut out the messages that end in ``chunk``; how many that was."""
        buffer = self._buffer
        buffer += chunk
        n = len(buffer)
        pos = frames = 0
        unpack = LENGTH.unpack_from
        while n - pos >= 4:
            (length,) = unpack(buffer, pos)
            end = pos + 4 + length
            if end > n:
                break
            self.last = buffer[pos + 4 : end]  # the message, a copy of its own
            self.body_bytes += length
            frames += 1
            pos = end
        if pos:
            del buffer[:pos]
        self.frames += frames
        return frames

    @property
    def pending(self) -> bool:
        """True while a frame is cut (the stream must not end here)."""
        return bool(self._buffer)


async def raw_receiver(args: argparse.Namespace) -> dict[str, Any]:
    """Count frames until the sender's end of stream; the receiver's JSON line."""
    sock = await accept_one(args)
    cpu0 = cpu_seconds()
    clock = RunClock()
    counter = RawCounter()
    first: float | None = None
    last: float | None = None
    while chunk := await sock.receive_some(READ_SIZE):
        now = mono()
        if first is None:
            first = clock.start(now)
        if counter.feed(chunk):
            last = now
    cpu = cpu_seconds() - cpu0
    await sock.aclose()  # the sender waits for this: everything was counted
    return receiver_line("raw", counter, clock, first, last, cpu)


def receiver_line(
    peer: str,
    counter: RawCounter,
    clock: RunClock,
    first: float | None,
    last: float | None,
    cpu: float,
) -> dict[str, Any]:
    """A counting receiver's JSON line (``raw`` and ``raw-asyncio``)."""
    base = clock.t0 or 0.0
    stream: dict[str, Any] = {
        "index": 0,
        "consumed": counter.frames,
        "drained": 0,
        "dropped": 0,
        "accounted": counter.frames,
        "body_bytes": counter.body_bytes,
        "cut_frame_at_end": counter.pending,
        # raw checks counts only: no sequence, no payloads (the floor does no checking)
        "sequence_end": None,
        "sequence_problems": [],
        "sequence_problem_count": 0,
        "bad_payloads": 0,
        "first_s": None if first is None else 0.0,
        "last_s": None if last is None else round(last - base, 4),
    }
    return {
        "role": "receiver",
        "peer": peer,
        "streams": [stream],
        "consumed": counter.frames,
        "drained": 0,
        "dropped": 0,
        "accounted": counter.frames,
        "latency": percentiles([]),
        "latency_samples": 0,
        "latency_cdf_ms": [],
        "peak_rss_kib": peak_rss_kib(),
        "peak_buffered_bytes": None,
        "peak_buffered_messages": None,
        "memory_series": Sampler(mono()).series,
        "cpu_s": round(cpu, 4),
        "error": "a frame was cut by the end of the stream" if counter.pending else None,
    }


async def raw_sender(args: argparse.Namespace) -> dict[str, Any]:
    """Write the constant block until ``--count`` frames or ``--duration`` seconds."""
    sock = await trio.open_tcp_stream(args.host, args.port)
    block, per_write = raw_frames_block(args.size)
    frame_len = len(block) // per_write
    cpu0 = cpu_seconds()
    start = mono()
    stop_at = start + args.duration
    sent = 0
    waited = 0.0
    send_all = sock.send_all
    while sent < args.count and mono() < stop_at:
        n = min(per_write, args.count - sent)
        data = block if n == per_write else block[: n * frame_len]  # the last write only
        t = mono()
        await send_all(data)
        waited += mono() - t
        sent += n
    elapsed = mono() - start
    cpu = cpu_seconds() - cpu0
    await finish_sending(sock, args.timeout)
    return sender_report("raw", [sent], elapsed, cpu, waited)
