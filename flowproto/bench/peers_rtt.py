"""Ping-pong latency and connection setup: a server and a client program per peer.

Run as two processes, the server first (it says ``listening HOST:PORT`` on stderr)::

    python -m flowproto.bench.peers_rtt server --scenario latency --peer flowproto --port 0
    python -m flowproto.bench.peers_rtt client --scenario latency --peer flowproto --port PORT

Each prints ONE JSON line on stdout when it exits. Scenarios (issue #13):

- ``latency``: one connection; the client sends 64 bytes, the server echoes them, the
  client awaits the echo: ``--warmup`` round trips, then ``--count`` timed ones (p50,
  p99 in µs). Peers: ``flowproto`` (:mod:`flowproto.trio`, raw codec, one stream),
  ``raw`` (the ``raw`` strategy's ``<u32 length>`` framing, :mod:`.peers_raw`),
  ``zmq`` (pyzmq REQ/REP), and their asyncio twins ``flowproto-asyncio`` and
  ``raw-asyncio`` (:mod:`.peers_rtt_asyncio`; ``--loop uvloop`` runs them on uvloop).
- ``setup``: ``--warmup`` then ``--count`` connections, one after the other: connect,
  handshake, one 64-byte message sent and consumed (the client waits for the server to
  say so: flowproto's end of stream, raw's close), close. Each side reports its CPU
  seconds over the timed connections. Peers: ``flowproto`` (``open_connection`` and
  ``serve_connection``), ``raw``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from . import aio, peers_rtt_asyncio
from .peers_common import READ_SIZE, TimedCpu, accept_one
from .peers_raw import LENGTH, raw_frame
from .workload import cpu_seconds, peak_rss_kib

#: The message each way.
PAYLOAD: Final = bytes(64)
#: Seconds any one program may run.
TIMEOUT: Final = 120.0


#: What a latency client returns: the timed round trips (seconds), and its CPU seconds
#: over them (:class:`.peers_common.TimedCpu`).
Pings = tuple[list[float], float]


def quantiles_us(times: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of round-trip times (seconds), in µs."""
    s = sorted(times)
    n = len(s)
    return {
        "p50_us": round(s[n // 2] * 1e6, 1),
        "p99_us": round(s[min(n - 1, int(n * 0.99))] * 1e6, 1),
        "mean_us": round(sum(s) / n * 1e6, 1),
    }


async def read_frame(sock: trio.abc.Stream, buffer: bytearray) -> bytes | None:
    """The next whole raw frame's body (``buffer`` keeps what follows); None at EOF."""
    while True:
        if len(buffer) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(buffer)
            end = LENGTH.size + length
            if len(buffer) >= end:
                body = bytes(buffer[LENGTH.size : end])
                del buffer[:end]
                return body
        chunk = await sock.receive_some(READ_SIZE)
        if not chunk:
            return None
        buffer += chunk


# --- latency -------------------------------------------------------------------------------


async def flowproto_echo(args: argparse.Namespace) -> dict[str, Any]:
    from flowproto.trio import open_flow_connection

    transport = await accept_one(args)
    echoed = 0
    cpu = TimedCpu(args.warmup)
    async with open_flow_connection(transport, initiator=False, codec="raw") as conn:
        stream = await conn.accept_stream()
        async for message in stream:
            await stream.send(message)
            echoed += 1
            cpu.tick()
        cpu.stop()
        await stream.aclose()
    return {"role": "server", "peer": "flowproto", "echoed": echoed, "timed_cpu_s": cpu.seconds}


async def raw_echo(args: argparse.Namespace) -> dict[str, Any]:
    sock = await accept_one(args)
    buffer = bytearray()
    echoed = 0
    cpu = TimedCpu(args.warmup)
    while (body := await read_frame(sock, buffer)) is not None:
        await sock.send_all(raw_frame(body))
        echoed += 1
        cpu.tick()
    cpu.stop()
    await sock.aclose()
    return {"role": "server", "peer": "raw", "echoed": echoed, "timed_cpu_s": cpu.seconds}


async def flowproto_pings(args: argparse.Namespace) -> Pings:
    from flowproto.trio import open_connection

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


async def raw_pings(args: argparse.Namespace) -> Pings:
    sock = await trio.open_tcp_stream(args.host, args.port)
    frame = raw_frame(PAYLOAD)
    buffer = bytearray()
    times: list[float] = []
    clock = time.perf_counter
    cpu = TimedCpu(args.warmup)
    for i in range(args.warmup + args.count):
        start = clock()
        await sock.send_all(frame)
        await read_frame(sock, buffer)
        if i >= args.warmup:
            times.append(clock() - start)
        cpu.tick()
    cpu.stop()
    await sock.send_eof()
    await sock.receive_some(1)  # the server's close
    await sock.aclose()
    return times, cpu.seconds


def zmq_echo(args: argparse.Namespace) -> dict[str, Any]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    port = sock.bind_to_random_port(f"tcp://{args.host}")
    print(f"listening {args.host}:{port}", file=sys.stderr, flush=True)
    cpu = TimedCpu(args.warmup)
    for _ in range(args.warmup + args.count):
        sock.send(sock.recv())
        cpu.tick()
    cpu.stop()
    sock.close()
    ctx.term()
    echoed = args.warmup + args.count
    return {"role": "server", "peer": "zmq", "echoed": echoed, "timed_cpu_s": cpu.seconds}


def zmq_pings(args: argparse.Namespace) -> Pings:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    sock.connect(f"tcp://{args.host}:{args.port}")
    times: list[float] = []
    clock = time.perf_counter
    cpu = TimedCpu(args.warmup)
    for i in range(args.warmup + args.count):
        start = clock()
        sock.send(PAYLOAD)
        sock.recv()
        if i >= args.warmup:
            times.append(clock() - start)
        cpu.tick()
    cpu.stop()
    sock.close()
    ctx.term()
    return times, cpu.seconds


# --- setup ---------------------------------------------------------------------------------


class Accepted:
    """A server's count of finished connections and its CPU over the timed ones."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = warmup
        self.total = total
        self.done = 0
        self.cpu0 = cpu_seconds()
        self.cpu = 0.0
        self.finished = trio.Event()

    def one_done(self) -> None:
        self.done += 1
        if self.done == self.warmup:
            self.cpu0 = cpu_seconds()
        if self.done == self.total:
            self.cpu = cpu_seconds() - self.cpu0
            self.finished.set()


async def accept_loop(
    args: argparse.Namespace, serve_one: Callable[[trio.SocketStream], Awaitable[None]]
) -> dict[str, Any]:
    """Serve ``--warmup`` + ``--count`` connections, each by ``serve_one``, then stop."""
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    print(f"listening {args.host}:{listeners[0].socket.getsockname()[1]}", file=sys.stderr)
    sys.stderr.flush()
    accepted = Accepted(args.warmup, args.warmup + args.count)

    async def one(transport: trio.SocketStream) -> None:
        await serve_one(transport)
        accepted.one_done()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, one, listeners)
        await accepted.finished.wait()
        nursery.cancel_scope.cancel()
    return {"role": "server", "connections": accepted.done, "cpu_s": round(accepted.cpu, 4)}


async def flowproto_setup_server(args: argparse.Namespace) -> dict[str, Any]:
    from flowproto.trio import FlowStream, serve_connection

    async def consume(stream: FlowStream) -> None:
        await stream.receive()  # the one message: consumed
        await stream.aclose()  # our end of stream tells the client so

    async def serve_one(transport: trio.SocketStream) -> None:
        await serve_connection(transport, consume, {"codec": "raw"})

    return {"peer": "flowproto", **await accept_loop(args, serve_one)}


async def raw_setup_server(args: argparse.Namespace) -> dict[str, Any]:
    async def serve_one(transport: trio.SocketStream) -> None:
        await read_frame(transport, bytearray())  # the one message: consumed
        await transport.aclose()  # our close tells the client so

    return {"peer": "raw", **await accept_loop(args, serve_one)}


async def flowproto_connect(args: argparse.Namespace) -> None:
    from flowproto.trio import open_connection

    async with open_connection(args.host, args.port, codec="raw") as conn:
        stream = await conn.open_stream()
        await stream.send(PAYLOAD)
        await stream.aclose()
        async for _ in stream:  # until the server ends its side: consumed
            pass


async def raw_connect(args: argparse.Namespace) -> None:
    sock = await trio.open_tcp_stream(args.host, args.port)
    await sock.send_all(raw_frame(PAYLOAD))
    await sock.receive_some(1)  # the server's close: consumed
    await sock.aclose()


async def setup_client(args: argparse.Namespace) -> dict[str, Any]:
    connect = flowproto_connect if args.peer == "flowproto" else raw_connect
    for _ in range(args.warmup):
        await connect(args)
    cpu0 = cpu_seconds()
    start = time.perf_counter()
    for _ in range(args.count):
        await connect(args)
    elapsed = time.perf_counter() - start
    return {
        "role": "client",
        "peer": args.peer,
        "connections": args.count,
        "elapsed_s": round(elapsed, 4),
        "cpu_s": round(cpu_seconds() - cpu0, 4),
    }


# --- entry point ---------------------------------------------------------------------------

SERVERS: Final[dict[tuple[str, str], Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]]] = {
    ("latency", "flowproto"): flowproto_echo,
    ("latency", "raw"): raw_echo,
    ("setup", "flowproto"): flowproto_setup_server,
    ("setup", "raw"): raw_setup_server,
}
PINGS: Final[dict[str, Callable[[argparse.Namespace], Awaitable[Pings]]]] = {
    "flowproto": flowproto_pings,
    "raw": raw_pings,
}
#: The latency programs on asyncio, by peer: (server, client).
ASYNCIO_LATENCY: Final = {
    "flowproto-asyncio": (peers_rtt_asyncio.flowproto_echo, peers_rtt_asyncio.flowproto_pings),
    "raw-asyncio": (peers_rtt_asyncio.raw_echo, peers_rtt_asyncio.raw_pings),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--scenario", choices=["latency", "setup"], required=True)
    p.add_argument("--peer", choices=["flowproto", "raw", "zmq", *ASYNCIO_LATENCY], required=True)
    p.add_argument("--loop", choices=aio.LOOPS, default="asyncio", help="asyncio peers' loop")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--count", type=int, default=2000, help="round trips / connections timed")
    p.add_argument("--warmup", type=int, default=200, help="round trips / connections first")
    return p.parse_args(argv)


def client_line(peer: str, pings: Pings) -> dict[str, Any]:
    """A latency client's JSON line: p50, p99 and mean in µs, and the timed CPU."""
    times, cpu_s = pings
    return {"role": "client", "peer": peer, "round_trips": len(times), **quantiles_us(times),
            "timed_cpu_s": cpu_s}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One program's JSON line."""
    if args.peer == "zmq":
        if args.role == "server":
            return zmq_echo(args)
        return client_line("zmq", zmq_pings(args))
    if args.peer in ASYNCIO_LATENCY:
        if args.scenario != "latency":
            raise SystemExit(f"{args.peer}: only the latency scenario")
        server, pings = ASYNCIO_LATENCY[args.peer]
        if args.role == "server":
            return aio.run(lambda: server(args), args.loop, TIMEOUT)
        return client_line(args.peer, aio.run(lambda: pings(args), args.loop, TIMEOUT))

    async def bounded() -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            if args.role == "server":
                return await SERVERS[(args.scenario, args.peer)](args)
            if args.scenario == "setup":
                return await setup_client(args)
            return client_line(args.peer, await PINGS[args.peer](args))

    return trio.run(bounded)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    report.update(cpu_total_s=round(cpu_seconds(), 4), peak_rss_kib=peak_rss_kib())
    print(json.dumps(report, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
