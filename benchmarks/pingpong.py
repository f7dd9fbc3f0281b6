"""Ping-pong latency: flowproto vs raw Trio framing, paired and interleaved (issue #13).

One 64-byte message each way, awaited, over loopback TCP; the echo server runs in a
child process. Each repeat runs flowproto, then raw Trio (4-byte length prefix, one
``send_all`` per message, the receiver parses the prefix), back to back, so the ratio of
each pair is measured under the same machine load; the report gives the medians of the
p50 and p99 round-trip times and of the per-pair ratios.

Usage::

    python -m benchmarks.pingpong --round-trips 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import time
from typing import Final, TextIO

import trio

PAYLOAD: Final = b"x" * 64
LENGTH: Final = struct.Struct(">I")
WARM_UP: Final = 200  # round trips not counted
MODES: Final = ("flowproto", "raw")


async def _flow_server(out: TextIO) -> None:
    from flowproto.trio import FlowStream, serve

    async def echo(stream: FlowStream) -> None:
        async for message in stream:
            await stream.send(message)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve(
                echo, 0, host="127.0.0.1", codec="raw", task_status=task_status
            )
        )
        print(listeners[0].socket.getsockname()[1], file=out, flush=True)


async def _raw_server(out: TextIO) -> None:
    async def echo(sock: trio.SocketStream) -> None:
        buffer = b""
        while data := await sock.receive_some(65536):
            buffer += data
            while len(buffer) >= LENGTH.size:
                (size,) = LENGTH.unpack_from(buffer)
                if len(buffer) < LENGTH.size + size:
                    break
                end = LENGTH.size + size
                await sock.send_all(buffer[:end])
                buffer = buffer[end:]

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], file=out, flush=True)
    await trio.serve_listeners(echo, listeners)


async def _flow_client(port: int, round_trips: int) -> list[float]:
    from flowproto.trio import open_connection

    times: list[float] = []
    async with open_connection("127.0.0.1", port, codec="raw") as conn:
        stream = await conn.open_stream()
        for i in range(round_trips + WARM_UP):
            start = time.perf_counter()
            await stream.send(PAYLOAD)
            await stream.receive()
            if i >= WARM_UP:
                times.append(time.perf_counter() - start)
        await stream.aclose()
    return times


async def _raw_client(port: int, round_trips: int) -> list[float]:
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    frame = LENGTH.pack(len(PAYLOAD)) + PAYLOAD
    times: list[float] = []
    buffer = b""
    for i in range(round_trips + WARM_UP):
        start = time.perf_counter()
        await sock.send_all(frame)
        while len(buffer) < len(frame):
            buffer += await sock.receive_some(65536)
        buffer = buffer[len(frame) :]
        if i >= WARM_UP:
            times.append(time.perf_counter() - start)
    await sock.aclose()
    return times


def run_once(mode: str, round_trips: int) -> tuple[float, float]:
    """One run of ``mode``: (p50, p99) round-trip time in µs."""
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.pingpong", "--serve", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        client = _flow_client if mode == "flowproto" else _raw_client
        times = sorted(trio.run(client, port, round_trips))
    finally:
        server.kill()
        server.wait()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(_flow_server if args.serve == "flowproto" else _raw_server, sys.stdout)
        return
    pairs = []
    for repeat in range(args.repeats):
        flow, raw = run_once("flowproto", args.round_trips), run_once("raw", args.round_trips)
        pairs.append((flow, raw))
        print(
            f"repeat {repeat + 1}: flowproto p50 {flow[0]:.0f} p99 {flow[1]:.0f} µs; "
            f"raw Trio p50 {raw[0]:.0f} p99 {raw[1]:.0f} µs",
            file=sys.stderr,
        )
    summary = {
        "round_trips": args.round_trips,
        "repeats": args.repeats,
        "flowproto_p50_us": statistics.median(f[0] for f, _ in pairs),
        "flowproto_p99_us": statistics.median(f[1] for f, _ in pairs),
        "raw_p50_us": statistics.median(r[0] for _, r in pairs),
        "raw_p99_us": statistics.median(r[1] for _, r in pairs),
        "ratio_p50": statistics.median(f[0] / r[0] for f, r in pairs),
        "ratio_p99": statistics.median(f[1] / r[1] for f, r in pairs),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
