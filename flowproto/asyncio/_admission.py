"""Waiting for room in a memory budget before a connection starts (spec §8.9 B2).

The asyncio twin of the Trio layer's admission: when a budget's floors fit but its room
is lent out, the newcomer waits here, before its preface and HELLO, counted in the
budget's ``waiting`` so that the members' next raises leave the room to it (B3, B4).
Consumption (:func:`room_freed`, called after each release) and closing connections wake
the waiters; each checks and is admitted synchronously with making its connection, so
two waiters never take the same room. A budget serves the connections of one event loop.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Final

from .. import Admission, MemoryBudget, Settings, tuned_floor
from ._link import Waiters

__all__ = ["RECHECK_INTERVAL", "room_freed", "wait_for_room"]

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
