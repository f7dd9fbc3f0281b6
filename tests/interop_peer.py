"""One side of an interop run, in its own process: ``receive`` or ``send``, on a backend.

    python tests/interop_peer.py receive trio          # prints its port, then a line a stream
    python tests/interop_peer.py send asyncio PORT N   # prints one JSON line

With ``--resume`` last, the receiver keeps sessions (``resume_timeout``) and the sender
reconnects and resumes a lost connection (spec §15), then prints a second line: its
``{"reconnects": n}``.

The receiver serves with small windows (so credit goes back many times) until it is
terminated, checks on each stream that the messages come in order (message i is
``[i, bytes]`` with ``i % 2000`` bytes of ``i % 256``), answers with their count and
prints it. The sender opens two streams, sends N messages on each with ``send`` and
``send_many``, half-closes them, and prints the answers.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from typing import Any

from flowproto import Reconnect, Settings

WINDOW = Settings(
    stream_bytes=64 * 1024,
    stream_messages=64,
    connection_bytes=128 * 1024,
    max_message_bytes=16 * 1024,
)
#: ``--resume``: what each side passes for sessions (spec §15).
RESUME = "--resume" in sys.argv
SERVER_SESSIONS: dict[str, Any] = {"resume_timeout": 10.0} if RESUME else {}
CLIENT_SESSIONS: dict[str, Any] = (
    {"reconnect": Reconnect(deadline=10.0, initial_delay=0.01, max_delay=0.2)} if RESUME else {}
)


def message(i: int) -> list[Any]:
    return [i, bytes([i % 256]) * (i % 2000)]


async def check(stream: Any) -> None:
    """Receive until the peer ends the stream, checking the order; answer the count."""
    n = 0
    result: dict[str, Any]
    async for m in stream:
        if m != message(n):
            result = {"error": f"message {n} was {m[0]!r}"}
            break
        n += 1
    else:
        result = {"count": n}
    await stream.send(result)
    print(json.dumps(result), flush=True)


async def send(conn: Any, count: int) -> list[Any]:
    streams = [await conn.open_stream() for _ in range(2)]
    for stream in streams:
        half = count // 2
        for i in range(half):
            await stream.send(message(i))
        await stream.send_many([message(i) for i in range(half, count)])
        await stream.aclose()
    return [await stream.receive() for stream in streams]


async def receive_trio() -> None:
    import trio

    import flowproto.trio as ft

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                ft.serve,
                check,
                0,
                host="127.0.0.1",
                settings=WINDOW,
                autotune=False,
                **SERVER_SESSIONS,
            )
        )
        print(listeners[0].socket.getsockname()[1], flush=True)


async def send_trio(port: int, count: int) -> None:
    import flowproto.trio as ft

    async with ft.open_connection("127.0.0.1", port, **CLIENT_SESSIONS) as conn:
        print(json.dumps(await send(conn, count)), flush=True)
        if RESUME:
            print(json.dumps({"reconnects": conn.statistics().reconnects}), flush=True)


async def receive_asyncio() -> None:
    import flowproto.asyncio as fa

    server = await fa.serve(
        check, 0, host="127.0.0.1", settings=WINDOW, autotune=False, **SERVER_SESSIONS
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


async def send_asyncio(port: int, count: int) -> None:
    import flowproto.asyncio as fa

    async with fa.open_connection("127.0.0.1", port, **CLIENT_SESSIONS) as conn:
        print(json.dumps(await send(conn, count)), flush=True)
        if RESUME:
            print(json.dumps({"reconnects": conn.statistics().reconnects}), flush=True)


def main() -> None:
    role, backend, *rest = [a for a in sys.argv[1:] if a != "--resume"]
    args = [int(a) for a in rest]
    if backend == "trio":
        import trio

        trio.run(receive_trio if role == "receive" else send_trio, *args)
    else:
        import asyncio

        asyncio.run((receive_asyncio if role == "receive" else send_asyncio)(*args))


if __name__ == "__main__":
    main()
