"""Test helpers for the Trio layer: two FlowConnections over an in-memory transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from flowproto.trio import FlowConnection, open_flow_connection


@asynccontextmanager
async def flow_pair(
    *,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    lockstep: bool = False,
) -> AsyncIterator[tuple[FlowConnection, FlowConnection]]:
    """Two FlowConnections over an in-memory transport: (initiator, acceptor)."""
    a, b = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    box: list[FlowConnection] = []
    ready = trio.Event()
    done = trio.Event()

    async def run_server() -> None:
        async with open_flow_connection(b, initiator=False, **(server or {})) as conn:
            box.append(conn)
            ready.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server)
        async with open_flow_connection(a, **(client or {})) as conn:
            await ready.wait()
            try:
                yield conn, box[0]
            finally:
                done.set()
