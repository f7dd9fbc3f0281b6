"""CPU per round trip in one process: what each layer costs, without the wake-ups.

A 64-byte message goes from a client to a server and back, ``--round-trips`` times after
a warm-up, over a loopback TCP pair whose two ends live in this process (one event
loop), and the process's CPU time (``time.process_time``) is divided by the round trips.
Nothing waits for another process to be scheduled, so what is measured is the work: the
system calls and the Python. The ping-pong rows of ``python -m benchmarks --group
latency`` hold each wake-up as well, whose cost changes with the machine and its load
(on one machine, one day: raw-asyncio's p50 was 35 µs beside a busy loop, 93 µs idle).

Rows (``--only`` picks some):

- ``raw-asyncio``: ``StreamReader``/``StreamWriter`` and ``<u32 length>`` frames, the
  ``raw-asyncio`` strategy's framing.
- ``core``: two sans-IO :class:`flowproto.Connection` objects handing each other their
  bytes, no socket and no event loop: the protocol's own work, both ends.
- ``core+protocol``: the core driven by a bare ``asyncio.Protocol`` with one future per
  wait, and nothing else (no streams, statistics, timers, pacing): the floor of any
  asyncio layer over this core.
- ``flowproto-asyncio``: :mod:`flowproto.asyncio`.
- ``raw-trio``, ``flowproto-trio``: the raw framing and :mod:`flowproto.trio` on Trio.

Usage::

    python -m benchmarks.round_trip_cpu --round-trips 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import trio

from flowproto import AutoTune, Connection, MessagesReceived, Role
from flowproto.asyncio import open_flow_connection as open_asyncio_connection
from flowproto.bench.peers_raw import LENGTH, raw_frame
from flowproto.bench.peers_rtt import read_frame
from flowproto.trio import open_flow_connection as open_trio_connection

#: The message each way.
PAYLOAD: Final = bytes(64)
#: Round trips before the timed ones.
WARMUP: Final = 500
#: Seconds one row's run may take.
TIMEOUT: Final = 120.0


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets, non-blocking, with TCP_NODELAY."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for sock in (client, server):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


async def _timed(n: int, one: Callable[[], Awaitable[Any]]) -> float:
    """CPU seconds of ``n`` calls of ``one`` after the warm-up."""
    for _ in range(WARMUP):
        await one()
    start = time.process_time()
    for _ in range(n):
        await one()
    return time.process_time() - start


class _Connection(Protocol):
    """What the rows use of either layer's FlowConnection."""

    async def open_stream(self) -> Any: ...
    async def accept_stream(self) -> Any: ...


async def _echo(conn: _Connection) -> None:
    """The server of a flowproto row: every message of the one stream sent back."""
    stream = await conn.accept_stream()
    async for message in stream:
        await stream.send(message)
    await stream.aclose()


async def _pings(conn: _Connection, n: int) -> float:
    """The client of a flowproto row: ``n`` timed round trips on one stream."""
    stream = await conn.open_stream()

    async def one() -> None:
        await stream.send(PAYLOAD)
        await stream.receive()

    cpu = await _timed(n, one)
    await stream.aclose()
    async for _ in stream:  # the server's end of the stream
        pass
    return cpu


# --- asyncio ---------------------------------------------------------------------------------


async def raw_asyncio(n: int) -> float:
    a, b = _socket_pair()

    async def echo() -> None:
        reader, writer = await asyncio.open_connection(sock=b)
        while True:
            try:
                (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
                body = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                break
            writer.write(raw_frame(body))
            await writer.drain()
        writer.close()

    server = asyncio.ensure_future(echo())
    reader, writer = await asyncio.open_connection(sock=a)
    frame = raw_frame(PAYLOAD)

    async def one() -> None:
        writer.write(frame)
        await writer.drain()
        (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        await reader.readexactly(length)

    cpu = await _timed(n, one)
    writer.write_eof()
    await server
    writer.close()
    return cpu


async def flowproto_asyncio(n: int) -> float:
    a, b = _socket_pair()

    async def echo() -> None:
        async with open_asyncio_connection(b, initiator=False, codec="raw") as conn:
            await _echo(conn)

    server = asyncio.ensure_future(echo())
    async with open_asyncio_connection(a, initiator=True, codec="raw") as conn:
        cpu = await _pings(conn, n)
    await server
    return cpu


class _BareProtocol(asyncio.Protocol):
    """The core and a transport, nothing more: each read fed to the core, each reply
    written at once, one future per wait for a message."""

    def __init__(self, role: Role, loop: asyncio.AbstractEventLoop) -> None:
        self.core = Connection(role, autotune=AutoTune())
        self.loop = loop
        self.inbox: list[bytes] = []
        self.stream_id = 0
        self.waiter: asyncio.Future[None] | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.flush()

    def flush(self) -> None:
        if self.core.has_data_to_send and self.transport is not None:
            self.transport.write(self.core.data_to_send())
        self.core.next_deadline()  # what a layer asks after each write (spec §11)

    def data_received(self, data: bytes) -> None:
        for event in self.core.receive_data(data, self.loop.time()):
            if type(event) is MessagesReceived:
                self.stream_id = event.stream_id
                self.inbox.extend(event.messages)
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
            elif not self.ready.done():
                self.ready.set_result(None)  # the handshake
        self.flush()

    async def receive(self) -> bytes:
        while not self.inbox:
            self.flush()
            self.waiter = self.loop.create_future()
            await self.waiter
        message = self.inbox.pop(0)
        self.core.release(self.stream_id, len(message), 1, self.loop.time())
        return message

    def send(self, stream_id: int, message: bytes) -> None:
        self.core.send_message(stream_id, message)
        self.flush()


async def core_protocol(n: int) -> float:
    loop = asyncio.get_running_loop()
    a, b = _socket_pair()
    transport_a, client = await loop.create_connection(
        lambda: _BareProtocol(Role.INITIATOR, loop), sock=a
    )
    transport_b, server = await loop.connect_accepted_socket(
        lambda: _BareProtocol(Role.ACCEPTOR, loop), sock=b
    )
    await client.ready
    stream_id = client.core.open_stream()

    async def echo() -> None:
        while True:
            message = await server.receive()  # first: it learns the stream's id
            server.send(server.stream_id, message)

    echoing = asyncio.ensure_future(echo())

    async def one() -> None:
        client.send(stream_id, PAYLOAD)
        await client.receive()

    cpu = await _timed(n, one)
    echoing.cancel()
    transport_a.close()
    transport_b.close()
    return cpu


# --- no loop -------------------------------------------------------------------------------


def core(n: int) -> float:
    """Two cores handing each other their bytes: the protocol's work, both ends."""
    client = Connection(Role.INITIATOR, autotune=AutoTune())
    server = Connection(Role.ACCEPTOR, autotune=AutoTune())
    now = 0.0

    def deliver(src: Connection, dst: Connection) -> list[Any]:
        data = src.data_to_send()
        return dst.receive_data(data, now) if data else []

    for _ in range(2):  # prefaces and HELLOs
        deliver(client, server)
        deliver(server, client)
    stream_id = client.open_stream()

    def one() -> None:
        client.send_message(stream_id, PAYLOAD)
        for event in deliver(client, server):
            if type(event) is MessagesReceived:
                server.release(event.stream_id, event.nbytes, len(event.messages), now)
                for message in event.messages:
                    server.send_message(event.stream_id, message)
        server.next_deadline()
        for event in deliver(server, client):
            if type(event) is MessagesReceived:
                client.release(stream_id, event.nbytes, len(event.messages), now)
        client.next_deadline()

    for _ in range(WARMUP):
        one()
    start = time.process_time()
    for _ in range(n):
        one()
        now += 1e-4  # a clock that moves, as the layers' does
    return time.process_time() - start


# --- Trio ------------------------------------------------------------------------------------


async def _trio_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


async def raw_trio(n: int) -> float:
    client, server = await _trio_pair()
    async with trio.open_nursery() as nursery:

        async def echo() -> None:
            buffer = bytearray()
            while (body := await read_frame(server, buffer)) is not None:
                await server.send_all(raw_frame(body))
            await server.aclose()

        nursery.start_soon(echo)
        frame = raw_frame(PAYLOAD)
        buffer = bytearray()

        async def one() -> None:
            await client.send_all(frame)
            await read_frame(client, buffer)

        cpu = await _timed(n, one)
        await client.aclose()
    return cpu


async def flowproto_trio(n: int) -> float:
    client, server = await _trio_pair()
    async with trio.open_nursery() as nursery:

        async def echo() -> None:
            async with open_trio_connection(server, initiator=False, codec="raw") as conn:
                await _echo(conn)

        nursery.start_soon(echo)
        async with open_trio_connection(client, initiator=True, codec="raw") as conn:
            cpu = await _pings(conn, n)
    return cpu


def _on_asyncio(run: Callable[[int], Awaitable[float]]) -> Callable[[int], float]:
    return lambda n: asyncio.run(asyncio.wait_for(run(n), TIMEOUT))


def _on_trio(run: Callable[[int], Awaitable[float]]) -> Callable[[int], float]:
    async def bounded(n: int) -> float:
        with trio.fail_after(TIMEOUT):
            return await run(n)

    return lambda n: trio.run(bounded, n)


#: Each row: how to run it once for ``n`` round trips (CPU seconds), and its baseline.
ROWS: Final[dict[str, tuple[Callable[[int], float], str]]] = {
    "raw-asyncio": (_on_asyncio(raw_asyncio), "raw-asyncio"),
    "core": (core, "raw-asyncio"),
    "core+protocol": (_on_asyncio(core_protocol), "raw-asyncio"),
    "flowproto-asyncio": (_on_asyncio(flowproto_asyncio), "raw-asyncio"),
    "raw-trio": (_on_trio(raw_trio), "raw-trio"),
    "flowproto-trio": (_on_trio(flowproto_trio), "raw-trio"),
}


def measure(round_trips: int, repeats: int, only: list[str] | None = None) -> dict[str, Any]:
    """µs of CPU per round trip for each row: the median of ``repeats`` runs (the rows
    run in turn, repeat by repeat), with its ratio to the baseline of its loop."""
    names = only or list(ROWS)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        # Not counted: a process's first run of a row costs more than the next ones
        # (raw-asyncio's first took 42 µs a round trip, the next 18; with glibc's mmap
        # threshold fixed at 4 MiB the first took 35, so its malloc explains only part).
        ROWS[name][0](min(round_trips, 2000))
    for _ in range(repeats):
        for name in names:
            runs[name].append(ROWS[name][0](round_trips) / round_trips * 1e6)
    rows: dict[str, Any] = {}
    for name in names:
        median = statistics.median(runs[name])
        base = ROWS[name][1]
        ratio = median / statistics.median(runs[base]) if base in runs else None
        rows[name] = {
            "cpu_us_per_rt": round(median, 2),
            "runs": [round(r, 2) for r in runs[name]],
            "baseline": base,
            "ratio": None if ratio is None else round(ratio, 2),
        }
    return {"round_trips": round_trips, "repeats": repeats, "payload_bytes": len(PAYLOAD),
            "rows": rows}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--round-trips", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", action="append", choices=list(ROWS), help="only these rows")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = p.parse_args()
    result = measure(args.round_trips, args.repeats, args.only)
    if args.json:
        print(json.dumps(result))
        return
    print(f"CPU µs per {len(PAYLOAD)}-byte round trip, both ends in one process "
          f"(median of {args.repeats} x {args.round_trips:,}):")  # fmt: skip
    for name, row in result["rows"].items():
        ratio = f"{row['ratio']:.2f}x {row['baseline']}" if row["ratio"] is not None else ""
        print(f"  {name:18s} {row['cpu_us_per_rt']:7.2f}  {ratio}")


if __name__ == "__main__":
    main()
