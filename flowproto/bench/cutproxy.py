"""A TCP proxy that cuts every connection after a number of bytes: lost transports on demand.

For the proofs of spec §15 (sessions that outlive their transport)::

    python -m flowproto.bench.cutproxy --target 127.0.0.1:9000 --cut-every 300000

Each accepted connection is paired with a new connection to ``--target``. Once the bytes
forwarded on it (both directions together) reach ``--cut-every``, the proxy forwards only
part of the chunk in hand (so the cut falls inside a frame, most of the time) and ends
both sides: alternately with a FIN and with a TCP reset. With ``--half-open`` the target
side is left open and silent instead (a server that has not noticed), until the proxy
exits. It listens on 127.0.0.1 only, prints ``cutproxy listening on HOST:PORT`` on
stderr and, when it exits (SIGINT, SIGTERM, or after ``--max-cuts``), one JSON line of
its counters on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import struct
import sys
from collections.abc import Sequence

import trio

#: Bytes read from a socket at once.
READ_SIZE = 64 * 1024


class CutProxy:
    """Forward to ``target``, cutting each connection after ``cut_every`` bytes.

    Attributes:
        cuts: connections cut so far; ``connections``: accepted so far;
        forwarded: bytes forwarded, both ways, over all connections.
    """

    def __init__(
        self,
        target: tuple[str, int],
        cut_every: int,
        *,
        half_open: bool = False,
        max_cuts: int | None = None,
        cut_interval: float | None = None,
    ) -> None:
        if cut_every < 1:
            raise ValueError(f"cut_every must be at least 1, not {cut_every}")
        self.target = target
        self.cut_every = cut_every
        self.half_open = half_open
        self.max_cuts = max_cuts
        self.cut_interval = cut_interval  # also cut each connection this many seconds in
        self.cuts = 0
        self.connections = 0
        self.forwarded = 0
        self.enabled = True  # False: forward without cutting
        self.accepting = True  # False: refuse new connections (a peer that is down)
        self.done = trio.Event()  # max_cuts reached
        self._open_ends: list[trio.SocketStream] = []  # target sides left half-open
        self._active: dict[trio.CancelScope, list[bool]] = {}  # connections, and "cut"

    def cut_now(self) -> None:
        """Cut every connection now, as if its budget ran out."""
        for scope, cut in self._active.items():
            cut[0] = True
            scope.cancel()

    async def serve(
        self, port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on 127.0.0.1 (``port`` 0: a free one); ``started`` with the port."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        try:
            await trio.serve_listeners(self._handle, listeners)
        finally:
            with trio.CancelScope(shield=True):
                for end in self._open_ends:
                    await trio.aclose_forcefully(end)

    async def _handle(self, client: trio.SocketStream) -> None:
        if not self.accepting:
            _abort(client)
            await trio.aclose_forcefully(client)
            return
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            _abort(client)
            await trio.aclose_forcefully(client)
            return
        self.connections += 1
        budget = [self.cut_every]
        cut = [False]
        try:
            async with trio.open_nursery() as nursery:

                async def pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                    try:
                        while True:
                            data = await src.receive_some(READ_SIZE)
                            if not data:
                                break
                            if self.enabled and budget[0] <= len(data):
                                keep = budget[0] // 2 if budget[0] > 1 else budget[0]
                                if keep:
                                    await dst.send_all(data[:keep])
                                self.forwarded += keep
                                cut[0] = True
                                break
                            budget[0] -= len(data)
                            await dst.send_all(data)
                            self.forwarded += len(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                self._active[nursery.cancel_scope] = cut
                nursery.start_soon(pipe, client, server)
                nursery.start_soon(pipe, server, client)
                if self.cut_interval is not None and self.enabled:

                    async def timed_cut(interval: float) -> None:
                        await trio.sleep(interval)
                        cut[0] = True
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(timed_cut, self.cut_interval)
        except BaseException:
            # Cancelled (the proxy is shutting down): close both ends now rather than leave
            # them to the garbage collector (a ResourceWarning in whoever runs next).
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(server)
                await trio.aclose_forcefully(client)
            raise
        del self._active[nursery.cancel_scope]
        if cut[0]:
            self.cuts += 1
            if self.cuts % 2:
                _abort(client)  # a TCP reset
            if self.half_open:
                self._open_ends.append(server)
            else:
                if self.cuts % 2:
                    _abort(server)
                await trio.aclose_forcefully(server)
            if self.max_cuts is not None and self.cuts >= self.max_cuts:
                self.done.set()
        else:
            await trio.aclose_forcefully(server)
        await trio.aclose_forcefully(client)


def _abort(stream: trio.SocketStream) -> None:
    """Make the close send a TCP reset rather than a FIN."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowproto.bench.cutproxy")
    parser.add_argument("--target", type=_parse_target, required=True, help="HOST:PORT")
    parser.add_argument("--port", type=int, default=0, help="listen port (0: a free one)")
    parser.add_argument("--cut-every", type=int, required=True, help="bytes per connection")
    parser.add_argument(
        "--cut-interval", type=float, default=None, help="also cut each connection after S s"
    )
    parser.add_argument("--half-open", action="store_true", help="leave the target side open")
    parser.add_argument("--max-cuts", type=int, default=None, help="exit after this many")
    args = parser.parse_args(argv)
    proxy = CutProxy(
        args.target,
        args.cut_every,
        half_open=args.half_open,
        max_cuts=args.max_cuts,
        cut_interval=args.cut_interval,
    )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(proxy.serve, args.port)
            print(f"cutproxy listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

            async def stop_at_max() -> None:
                await proxy.done.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(stop_at_max)

    trio.run(run)
    counters = {
        "connections": proxy.connections,
        "cuts": proxy.cuts,
        "forwarded": proxy.forwarded,
    }
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
