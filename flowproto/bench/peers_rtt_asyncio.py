"""Ping-pong latency on asyncio: the twins of :mod:`.peers_rtt`'s Trio programs.

``flowproto-asyncio`` (:mod:`flowproto.asyncio`, raw codec, one stream) and
``raw-asyncio`` (``StreamReader``/``StreamWriter``, the ``raw`` ``<u32 length>``
framing: one ``write`` per message, ``readexactly`` for the reply). The client sends 64
bytes, the server echoes them, the client awaits the echo, as in the Trio programs;
``peers_rtt --loop uvloop`` runs them on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from flowproto.asyncio import open_connection, open_flow_connection

from .aio import accept_socket
from .peers_common import READ_SIZE, TimedCpu
from .peers_raw import LENGTH, raw_frame

#: The message each way (as :data:`.peers_rtt.PAYLOAD`).
PAYLOAD = bytes(64)


async def flowproto_echo(args: argparse.Namespace) -> dict[str, Any]:
    sock = await accept_socket(args)
    echoed = 0
    cpu = TimedCpu(args.warmup)
    async with open_flow_connection(sock, initiator=False, codec="raw") as conn:
        stream = await conn.accept_stream()
        async for message in stream:
            await stream.send(message)
            echoed += 1
            cpu.tick()
        cpu.stop()
        await stream.aclose()
    return {"role": "server", "peer": "flowproto-asyncio", "echoed": echoed,
            "timed_cpu_s": cpu.seconds}  # fmt: skip


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next whole raw frame's body; None at the end of the stream."""
    try:
        (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


async def raw_echo(args: argparse.Namespace) -> dict[str, Any]:
    sock = await accept_socket(args)
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
    echoed = 0
    cpu = TimedCpu(args.warmup)
    while (body := await read_frame(reader)) is not None:
        writer.write(raw_frame(body))
        await writer.drain()
        echoed += 1
        cpu.tick()
    cpu.stop()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return {"role": "server", "peer": "raw-asyncio", "echoed": echoed, "timed_cpu_s": cpu.seconds}


async def flowproto_pings(args: argparse.Namespace) -> tuple[list[float], float]:
    times: list[float] = []
    clock = time.perf_counter
    cpu = TimedCpu(args.warmup)
    async with open_connection(args.host, args.port, codec="raw") as conn:
        stream = await conn.open_stream()
        for i in range(args.warmup + args.count):
            start = clock()
            await stream.send(PAYLOAD)
            await stream.receive()
            if i >= args.warmup:
                times.append(clock() - start)
            cpu.tick()
        cpu.stop()
        await stream.aclose()
        async for _ in stream:  # the server's end of stream
            pass
    return times, cpu.seconds


async def raw_pings(args: argparse.Namespace) -> tuple[list[float], float]:
    reader, writer = await asyncio.open_connection(args.host, args.port, limit=READ_SIZE)
    frame = raw_frame(PAYLOAD)
    times: list[float] = []
    clock = time.perf_counter
    cpu = TimedCpu(args.warmup)
    for i in range(args.warmup + args.count):
        start = clock()
        writer.write(frame)
        await writer.drain()
        await read_frame(reader)
        if i >= args.warmup:
            times.append(clock() - start)
        cpu.tick()
    cpu.stop()
    writer.write_eof()
    await reader.read()  # the server's close
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return times, cpu.seconds
