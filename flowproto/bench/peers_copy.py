"""The raw Trio file copy: the comparator of ``flowproto send --input`` → ``receive --output``.

Two processes, the receiver first (it says ``listening HOST:PORT`` on stderr)::

    python -m flowproto.bench.peers_copy receive --output FILE --port 0
    python -m flowproto.bench.peers_copy send --input FILE --port PORT

The sender reads the file in 64 KiB chunks and ``send_all``\\ s each; the receiver writes
each chunk it reads (at most 64 KiB) to its file, closes the file at the sender's end
of stream and then the connection, which the sender waits for: when both have exited
the copy is on disk. No framing, no checking, no flow control beyond TCP's: the floor
of a copy from Python with Trio. Each prints ONE JSON line (bytes, seconds, CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from .peers_common import accept_one
from .workload import cpu_seconds, peak_rss_kib

#: Bytes per read and per write.
CHUNK: Final = 64 * 1024


async def receive(args: argparse.Namespace) -> dict[str, Any]:
    sock = await accept_one(args)
    start = time.monotonic()
    total = 0
    with Path(args.output).open("wb") as out:
        while chunk := await sock.receive_some(CHUNK):
            out.write(chunk)
            total += len(chunk)
    await sock.aclose()  # the file is closed: the sender may finish
    return {"role": "receiver", "bytes": total, "seconds": round(time.monotonic() - start, 4)}


async def send(args: argparse.Namespace) -> dict[str, Any]:
    sock = await trio.open_tcp_stream(args.host, args.port)
    start = time.monotonic()
    total = 0
    with Path(args.input).open("rb") as src:
        while chunk := src.read(CHUNK):
            await sock.send_all(chunk)
            total += len(chunk)
    await sock.send_eof()
    await sock.receive_some(1)  # the receiver's close: everything is written
    await sock.aclose()
    return {"role": "sender", "bytes": total, "seconds": round(time.monotonic() - start, 4)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["send", "receive"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--input", help="send: the file to send")
    p.add_argument("--output", help="receive: the file to write")
    p.add_argument("--timeout", type=float, default=300.0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    async def bounded() -> dict[str, Any]:
        with trio.fail_after(args.timeout):
            return await (send(args) if args.role == "send" else receive(args))

    report = trio.run(bounded)
    report.update(cpu_s=round(cpu_seconds(), 4), peak_rss_kib=peak_rss_kib())
    print(json.dumps(report, separators=(",", ":")), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
