"""Idle memory: what a server holds per idle connection, and per idle open stream.

Run as two processes, the server first (it says ``listening HOST:PORT`` on stderr)::

    python -m flowproto.bench.peers_idle server --peer flowproto --count 1000 --port 0
    python -m flowproto.bench.peers_idle client --peer flowproto --count 1000 --port PORT

``--unit connections``: the client opens ``--warmup`` + ``--count`` connections one
after another and leaves them idle. ``--unit streams``: one connection; the client
opens that many streams on it, sends one 64-byte message on each (a stream exists for
its receiver from its first message) and leaves them idle. The server keeps a task per
connection (per stream) waiting for the next message, as a service would, and reads
its own RSS (``VmRSS``, after a garbage collection) when the warm-up ones are open and
again when all are: the growth over ``--count`` is the figure. Then it closes
everything, and both print ONE JSON line.

Peers: ``flowproto`` (:func:`~flowproto.trio.open_flow_connection` per accepted
connection, ``accept_stream`` per stream) and ``raw`` (raw Trio: a socket and a task per
connection; per stream, on one connection of ``<u32 length>`` frames whose first 4
payload bytes name the stream, a memory channel and a task).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import struct
import sys
from collections.abc import Sequence
from typing import Any, Final

import trio

from flowproto import Settings
from flowproto.trio import ConnectionLostError, FlowStream, open_connection, open_flow_connection

from .peers_common import READ_SIZE, accept_one
from .peers_raw import raw_frame
from .peers_rtt import PAYLOAD, TIMEOUT, read_frame
from .workload import rss_kib

STREAM_ID: Final = struct.Struct("<I")


def settled_rss_kib() -> int:
    """This process's resident set size now, after a garbage collection."""
    gc.collect()
    return rss_kib()


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Tally:
    """Counts idle things as they open; reads RSS after the warm-up ones and after all."""

    def __init__(self, warmup: int, count: int) -> None:
        self.warmup = warmup
        self.total = warmup + count
        self.opened = 0
        self.rss_start = settled_rss_kib()
        self.rss_warm: int | None = None if warmup else self.rss_start
        self.rss_all: int | None = None
        self.all_open = trio.Event()

    def one_open(self) -> None:
        self.opened += 1
        if self.opened == self.warmup:
            self.rss_warm = settled_rss_kib()
        if self.opened == self.total:
            self.rss_all = settled_rss_kib()
            self.all_open.set()

    def line(self, peer: str, unit: str) -> dict[str, Any]:
        return {
            "role": "server",
            "peer": peer,
            "unit": unit,
            "opened": self.opened,
            "rss_start_kib": self.rss_start,
            "rss_warm_kib": self.rss_warm,
            "rss_all_kib": self.rss_all,
        }


# --- the server ----------------------------------------------------------------------------


async def serve_connections(args: argparse.Namespace, tally: Tally) -> None:
    listeners = await trio.open_tcp_listeners(args.port, host=args.host, backlog=4096)
    print(f"listening {args.host}:{listeners[0].socket.getsockname()[1]}", file=sys.stderr)
    sys.stderr.flush()

    async def flowproto_one(transport: trio.SocketStream) -> None:
        async with open_flow_connection(
            transport, initiator=False, codec="raw", close_grace=0.5
        ) as conn:
            tally.one_open()
            with contextlib.suppress(ConnectionLostError):
                await conn.accept_stream()  # idle: no stream comes

    async def raw_one(transport: trio.SocketStream) -> None:
        tally.one_open()
        await transport.receive_some(READ_SIZE)  # idle: nothing comes

    handler = flowproto_one if args.peer == "flowproto" else raw_one
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        await tally.all_open.wait()
        nursery.cancel_scope.cancel()


async def serve_streams(args: argparse.Namespace, tally: Tally) -> None:
    transport = await accept_one(args)

    async with trio.open_nursery() as nursery:
        if args.peer == "flowproto":
            nursery.start_soon(flowproto_streams, transport, args, tally)
        else:
            nursery.start_soon(raw_streams, transport, tally)
        await tally.all_open.wait()
        nursery.cancel_scope.cancel()
    await transport.aclose()


async def flowproto_streams(transport: trio.SocketStream, args: argparse.Namespace,
                            tally: Tally) -> None:  # fmt: skip
    async def idle(stream: FlowStream) -> None:
        await stream.receive()  # the first message: the stream is open
        tally.one_open()
        await stream.receive()  # idle: nothing more comes

    settings = Settings(max_streams=tally.total)
    async with (
        open_flow_connection(
            transport, initiator=False, codec="raw", settings=settings, close_grace=0.5
        ) as conn,
        trio.open_nursery() as nursery,
    ):
        while True:
            nursery.start_soon(idle, await conn.accept_stream())


async def raw_streams(transport: trio.SocketStream, tally: Tally) -> None:
    """A minimal raw-Trio multiplexer: a memory channel and a task per stream id."""

    async def idle(channel: trio.MemoryReceiveChannel[bytes]) -> None:
        await channel.receive()
        tally.one_open()
        await channel.receive()

    inboxes: dict[int, trio.MemorySendChannel[bytes]] = {}
    buffer = bytearray()
    async with trio.open_nursery() as nursery:
        while (body := await read_frame(transport, buffer)) is not None:
            (sid,) = STREAM_ID.unpack_from(body)
            inbox = inboxes.get(sid)
            if inbox is None:
                inbox, receive = trio.open_memory_channel[bytes](16)
                inboxes[sid] = inbox
                nursery.start_soon(idle, receive)
            inbox.send_nowait(body)


# --- the client ----------------------------------------------------------------------------


async def client(args: argparse.Namespace) -> dict[str, Any]:
    total = args.warmup + args.count
    if args.unit == "streams":
        opener = flowproto_open_streams if args.peer == "flowproto" else raw_open_streams
        await opener(args, total)
    else:
        hold = flowproto_hold if args.peer == "flowproto" else raw_hold
        async with trio.open_nursery() as nursery:
            for _ in range(total):
                await nursery.start(hold, args)
    return {"role": "client", "peer": args.peer, "unit": args.unit, "opened": total}


async def flowproto_hold(args: argparse.Namespace, task_status: trio.TaskStatus[None]) -> None:
    """One idle connection, held until the server closes it."""
    try:
        async with open_connection(args.host, args.port, codec="raw", close_grace=0.5) as conn:
            task_status.started()
            await conn.accept_stream()
    except (ConnectionLostError, trio.BrokenResourceError):
        pass  # the server closed it: the measurement is over


async def raw_hold(args: argparse.Namespace, task_status: trio.TaskStatus[None]) -> None:
    sock = await trio.open_tcp_stream(args.host, args.port)
    task_status.started()
    with contextlib.suppress(trio.BrokenResourceError):
        await sock.receive_some(1)
    await sock.aclose()


async def flowproto_open_streams(args: argparse.Namespace, total: int) -> None:
    try:
        async with open_connection(args.host, args.port, codec="raw", close_grace=0.5) as conn:
            for _ in range(total):
                stream = await conn.open_stream()
                await stream.send(PAYLOAD)
            await conn.accept_stream()  # until the server closes the connection
    except (ConnectionLostError, trio.BrokenResourceError):
        pass


async def raw_open_streams(args: argparse.Namespace, total: int) -> None:
    sock = await trio.open_tcp_stream(args.host, args.port)
    for sid in range(total):
        await sock.send_all(raw_frame(STREAM_ID.pack(sid) + PAYLOAD[STREAM_ID.size :]))
    with contextlib.suppress(trio.BrokenResourceError):
        await sock.receive_some(1)
    await sock.aclose()


# --- entry point ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--peer", choices=["flowproto", "raw"], required=True)
    p.add_argument("--unit", choices=["connections", "streams"], default="connections")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--count", type=int, default=1000, help="idle connections / streams measured")
    p.add_argument("--warmup", type=int, default=20, help="opened before the baseline")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    fd_limit = raise_fd_limit()

    async def bounded() -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            if args.role == "client":
                return await client(args)
            tally = Tally(args.warmup, args.count)
            serve = serve_streams if args.unit == "streams" else serve_connections
            await serve(args, tally)
            return tally.line(args.peer, args.unit)

    report = trio.run(bounded)
    report["fd_limit"] = fd_limit
    print(json.dumps(report, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
