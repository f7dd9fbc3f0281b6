"""A TCP relay that models a long, narrow link: fixed one-way delay, a rate, bounded buffers.

Run it between a sender and a receiver (it prints ``relay listening on HOST:PORT`` on
stderr, and one JSON line of its counters on stdout when it exits)::

    python -m flowproto.bench.relay --target 127.0.0.1:9000 --delay-ms 50 --rate-mbps 160

Each accepted connection is paired with a new connection to ``--target``; each direction
is a :class:`DelayLine`. Bytes are serialized at ``--rate-mbps`` (a bottleneck link; no
limit if 0) and then delayed by ``--delay-ms`` (propagation), so a round trip through the
relay takes ``2 x delay`` plus queueing. Buffering is bounded: the relay stops reading a
direction while more than ``--queue-bytes`` wait to be serialized, and TCP pushes back
on the sender. What a direction holds is at most ``queue_bytes + rate x delay``; its
capacity is the rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

import trio

#: Bytes read from a socket at once.
READ_SIZE = 64 * 1024


class DelayLine:
    """One direction: read, serialize at ``rate`` bytes/s, delay, write; bounded (module doc)."""

    def __init__(self, delay: float, rate: float | None, queue_bytes: int) -> None:
        self.delay = delay
        self.rate = rate
        self.queue_bytes = queue_bytes
        self.items: deque[tuple[float, bytes]] = deque()  # (deliver at, data); b"" is EOF
        self.held = 0  # bytes read and not yet written
        self.peak_held = 0
        self.forwarded = 0
        self.free_at = 0.0  # when the link has serialized everything read so far
        self._have_item = trio.Event()
        self._space = trio.Event()

    def _backlog(self, now: float) -> float:
        """Bytes still waiting to be serialized."""
        if self.rate:
            return max(0.0, self.free_at - now) * self.rate
        return float(self.held)  # no rate: bound everything held

    async def read_side(self, src: trio.abc.ReceiveStream) -> None:
        while True:
            while self._backlog(trio.current_time()) >= self.queue_bytes:
                if self.rate:
                    await trio.sleep_until(self.free_at - self.queue_bytes / self.rate)
                else:
                    self._space = trio.Event()
                    await self._space.wait()
            try:
                data = await src.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            now = trio.current_time()
            start = max(now, self.free_at)
            self.free_at = start + (len(data) / self.rate if self.rate else 0.0)
            self.items.append((self.free_at + self.delay, bytes(data)))
            self.held += len(data)
            self.peak_held = max(self.peak_held, self.held)
            self._have_item.set()
            if not data:
                return

    async def write_side(self, dst: trio.abc.SendStream) -> None:
        while True:
            while not self.items:
                self._have_item = trio.Event()
                await self._have_item.wait()
            due, data = self.items.popleft()
            await trio.sleep_until(due)
            if not data:
                return
            try:
                await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self.held -= len(data)
            self.forwarded += len(data)
            self._space.set()


class Relay:
    """Counters over every connection (for the JSON line)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.connections = 0
        self.lines: list[DelayLine] = []

    def line(self) -> DelayLine:
        a = self.args
        line = DelayLine(a.delay_ms / 1000, a.rate_mbps * 1e6 / 8 or None, a.queue_bytes)
        self.lines.append(line)
        return line

    async def handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        host, _, port = self.args.target.rpartition(":")
        try:
            server = await trio.open_tcp_stream(host, int(port))
        except OSError:
            await client.aclose()
            return
        forward, backward = self.line(), self.line()

        async def pump(line: DelayLine, src: trio.SocketStream, dst: trio.SocketStream) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(line.read_side, src)
                nursery.start_soon(line.write_side, dst)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await dst.send_eof()

        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(pump, forward, client, server)
            nursery.start_soon(pump, backward, server, client)

    def summary(self) -> dict[str, Any]:
        return {
            "role": "relay",
            "connections": self.connections,
            "delay_ms": self.args.delay_ms,
            "rate_mbps": self.args.rate_mbps,
            "queue_bytes": self.args.queue_bytes,
            "forwarded_bytes": sum(line.forwarded for line in self.lines),
            "peak_held_bytes": max((line.peak_held for line in self.lines), default=0),
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    relay = Relay(args)
    host, _, port = args.listen.rpartition(":")
    listeners = await trio.open_tcp_listeners(int(port), host=host or None)
    bound = listeners[0].socket.getsockname()
    print(f"relay listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    with trio.move_on_after(args.lifetime) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, relay.handle, listeners)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:  # stopped by the benchmark: report, then exit
                    scope.cancel()
    return relay.summary()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flowproto.bench.relay", description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    p.add_argument("--target", required=True, metavar="HOST:PORT")
    p.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay")
    p.add_argument("--rate-mbps", type=float, default=0.0, help="link rate; 0: no limit")
    p.add_argument(
        "--queue-bytes", type=int, default=1 << 20, help="bytes that may wait per direction"
    )
    p.add_argument("--lifetime", type=float, default=600.0, help="seconds before it exits")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    print(json.dumps(trio.run(run, parse_args(argv))), flush=True)


if __name__ == "__main__":
    main()
