"""The sender and receiver programs of the socket benchmarks, one pair per strategy.

Run as two processes; the receiver first, it prints ``listening HOST:PORT`` on stderr::

    python -m flowproto.bench.peers receiver --peer flowproto --port 0 --size 1024 ...
    python -m flowproto.bench.peers sender --peer flowproto --port PORT --size 1024 ...

Each prints ONE JSON line of its own measurements on stdout when it exits. Peers:

- ``flowproto``: :mod:`flowproto.trio`, one connection, ``--streams`` streams;
  ``--api batch`` uses ``send_many``/``receive_many``, ``--api single`` one
  ``send()``/``receive()`` per message; ``--window small`` advertises 16 messages.
- ``framing``: plain length-prefixed frames (``<u32 length><u16 stream>``) over one Trio
  TCP stream. The sender coalesces frames into ~64 KiB writes (``--api batch``) or calls
  ``send_all`` once per message (``--api single``). The receiver's reader parses every
  frame of a read into a per-stream queue, by ``--policy``: ``block`` (the reader stops
  reading while a queue holds a read's worth: kernel buffers are the only
  backpressure), ``unbounded`` (it never stops: the queue grows), or ``drop`` (a bounded
  queue; the newest messages are dropped and counted).
- ``raw``: the minimal raw-Trio program (:mod:`.peers_raw`): ``<u32 length>`` frames,
  one constant payload, ~64 KiB writes; the receiver counts frames by their prefixes.
- ``zmq``: pyzmq PUSH/PULL with high-water marks (``--hwm``), one message per call.
- ``flowproto-asyncio``: :mod:`flowproto.asyncio`, the ``flowproto`` peers' twins
  (:mod:`.peers_flowproto_asyncio`), with the same options.
- ``raw-asyncio``: the ``raw`` peers' twins on asyncio's ``StreamReader``/``StreamWriter``
  (:mod:`.peers_raw_asyncio`).

The asyncio peers run on asyncio's own event loop, or with ``--loop uvloop`` on uvloop.

Every run is bounded: the sender stops after ``--count`` messages or ``--duration``
seconds; the receiver consumes by its schedule for ``--duration`` seconds from its first
message, then takes whatever is left without pacing ("drained", not counted as consumed)
until the sender's end of stream; both give up after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from flowproto import Settings

from . import aio
from .peers_flowproto import flowproto_receiver, flowproto_sender
from .peers_flowproto_asyncio import flowproto_asyncio_receiver, flowproto_asyncio_sender
from .peers_framing import framing_receiver, framing_sender
from .peers_raw import raw_receiver, raw_sender
from .peers_raw_asyncio import raw_asyncio_receiver, raw_asyncio_sender
from .peers_zmq import zmq_receiver, zmq_sender

Runner = Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]
#: The peers on asyncio (``--loop``), by (peer, role).
ASYNCIO_PEERS: dict[tuple[str, str], Runner] = {
    ("flowproto-asyncio", "sender"): flowproto_asyncio_sender,
    ("flowproto-asyncio", "receiver"): flowproto_asyncio_receiver,
    ("raw-asyncio", "sender"): raw_asyncio_sender,
    ("raw-asyncio", "receiver"): raw_asyncio_receiver,
}

# --- entry point -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["sender", "receiver"])
    p.add_argument(
        "--peer",
        choices=["flowproto", "framing", "raw", "zmq", "flowproto-asyncio", "raw-asyncio"],
        required=True,
    )
    p.add_argument(
        "--loop", choices=aio.LOOPS, default="asyncio", help="the asyncio peers' event loop"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--size", type=int, default=1024, help="message size in bytes (>= 16)")
    p.add_argument("--codec", choices=["raw", "msgpack"], default="raw")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--api", choices=["batch", "single"], default="batch")
    p.add_argument(
        "--workload",
        choices=["checked", "constant"],
        default="checked",
        help="checked: numbered, timestamped messages, each checked; constant: one payload "
        "sent again and again, only counted (flowproto peers, batch API, raw codec)",
    )
    p.add_argument("--count", type=int, default=1_000_000, help="sender: most messages a stream")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of sending / pacing")
    p.add_argument("--timeout", type=float, default=60.0, help="hard limit in seconds")
    p.add_argument("--rate", type=float, default=None, help="sender: messages/s a stream")
    p.add_argument(
        "--schedule",
        type=json.loads,
        default=[[0, None]],
        help="receiver: consumption phases as JSON [[start_s, rate|null], ...]",
    )
    p.add_argument(
        "--slow-schedule", type=json.loads, default=None, help="receiver: stream 0's phases"
    )
    p.add_argument("--window", choices=["default", "small"], default="default")
    p.add_argument("--policy", choices=["block", "unbounded", "drop"], default="block")
    p.add_argument("--queue-messages", type=int, default=Settings().stream_messages)
    p.add_argument("--queue-bytes", type=int, default=Settings().stream_bytes)
    p.add_argument("--max-buffer-mb", type=int, default=1024, help="unbounded: safety cap")
    p.add_argument("--hwm", type=int, default=1000, help="zmq high-water mark")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    runners: dict[tuple[str, str], Callable[[argparse.Namespace], Any]] = {
        ("flowproto", "sender"): flowproto_sender,
        ("flowproto", "receiver"): flowproto_receiver,
        ("framing", "sender"): framing_sender,
        ("framing", "receiver"): framing_receiver,
        ("raw", "sender"): raw_sender,
        ("raw", "receiver"): raw_receiver,
    }
    if args.peer == "zmq":
        report = zmq_sender(args) if args.role == "sender" else zmq_receiver(args)
    elif (args.peer, args.role) in ASYNCIO_PEERS:
        runner = ASYNCIO_PEERS[(args.peer, args.role)]
        report = aio.run(lambda: runner(args), args.loop, args.timeout)
    else:
        fn = runners[(args.peer, args.role)]

        async def bounded() -> dict[str, Any]:
            with trio.fail_after(args.timeout):
                result: dict[str, Any] = await fn(args)
                return result

        report = trio.run(bounded)
    print(json.dumps(report, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
