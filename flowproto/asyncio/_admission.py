"""Waiting for room in a memory budget before a connection starts (spec §8.9 B2).

The asyncio twin of the Trio layer's admission: when a budget's floors fit but its room
is lent out, the newcomer waits here, before its preface and HELLO, counted in the
budget's ``waiting`` so that the members' next raises leave the room to it (B3, B4).
Consumption (:func:`room_freed`, called after each release) and closing connections wake
the waiters; each checks and is admitted synchronously with making its connection, so
two waiters never take the same room. A budget serves the connections of one event loop.

An opened connection waits in ``ConnectionOptions.admitted`` before it connects; a served
one arrives before it can wait, so its transport's protocol is a :class:`PendingAdmission`
until there is room, which then hands the transport to a new connection.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from .. import Admission, MemoryBudget, Settings, tuned_floor
from ._link import Waiters

__all__ = ["RECHECK_INTERVAL", "PendingAdmission", "room_freed", "wait_for_room"]

#: Seconds between a waiter's own checks, should a wake-up be missed (room also frees
#: when data for closed streams is discarded, spec §8.8, which wakes no one).
RECHECK_INTERVAL: Final = 0.1

_waiters: weakref.WeakKeyDictionary[MemoryBudget, Waiters] = weakref.WeakKeyDictionary()


async def wait_for_room(budget: MemoryBudget, settings: Settings | None, timeout: float) -> None:
    """Return once ``budget`` admits a connection with ``settings``, or after ``timeout``.

    Returns at once if it admits or refuses now; after the wait the caller makes the
    connection without suspending in between (the core then admits or refuses it).
    """
    floor = tuned_floor((settings or Settings()).validate().max_message_bytes)
    if budget.admission(floor) is not Admission.WAIT:
        return
    waiters = _waiters.setdefault(budget, Waiters())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    budget.wait(floor)
    try:
        while budget.admission(floor, waiting=True) is Admission.WAIT:
            left = deadline - loop.time()
            if left <= 0:
                return
            await waiters.wait(min(left, RECHECK_INTERVAL))
    finally:
        budget.stop_waiting(floor)


def room_freed(budget: MemoryBudget | None) -> None:
    """Wake the connections waiting on ``budget`` (after consumption or a close)."""
    if budget is not None and budget.waiting:
        waiters = _waiters.get(budget)
        if waiters is not None:
            waiters.wake_all()


class PendingAdmission(asyncio.Protocol):
    """A served connection waiting for room in the server's memory budget (spec §8.9 B2), before
    its preface and HELLO: reading is paused (what arrives meanwhile is kept), and once
    ``wait()`` returns, ``admitted(transport, pending, eof)`` hands the transport to a new
    FlowConnection, which the budget then admits or refuses with GOAWAY(OVERLOADED)."""

    def __init__(
        self,
        wait: Callable[[], Awaitable[None]],
        admitted: Callable[[asyncio.Transport, list[bytes], bool], None],
        track: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> None:
        self.wait = wait
        self.admitted = admitted
        self.track = track
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.eof = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()
        self.task = self.track(self.admit())

    async def admit(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            await self.wait()
        except asyncio.CancelledError:  # the server closed first
            transport.abort()
            raise
        if not transport.is_closing():
            self.admitted(transport, self.pending, self.eof)

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)  # what a TLS layer had decrypted before the pause

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the connection-to-be decides

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()
