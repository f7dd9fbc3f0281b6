"""Waiting for room in a memory budget before a connection starts (spec §8.9 B2).

A budget refuses a newcomer only when the floors of all its connections cannot fit. When
they fit but the room is lent out (members granted above their floors while there were
few of them), the newcomer waits here, before its preface and HELLO, counted in the
budget's ``waiting`` so that the members' next raises leave the room to it (B3, B4).
Consumption (:func:`room_freed`, called after each release) and closing connections
wake the waiters; each checks and is admitted synchronously with making its connection,
so two waiters never take the same room.
"""

from __future__ import annotations

import weakref
from typing import Final

import trio

from .. import Admission, MemoryBudget, Settings, tuned_floor

__all__ = ["RECHECK_INTERVAL", "room_freed", "wait_for_room"]

#: Seconds between a waiter's own checks, should a wake-up be missed (room also frees
#: when data for closed streams is discarded, spec §8.8, which wakes no one).
RECHECK_INTERVAL: Final = 0.1

_lots: weakref.WeakKeyDictionary[MemoryBudget, trio.lowlevel.ParkingLot] = (
    weakref.WeakKeyDictionary()
)


async def wait_for_room(budget: MemoryBudget, settings: Settings | None, timeout: float) -> None:
    """Return once ``budget`` admits a connection with ``settings``, or after ``timeout``.

    Returns at once if it admits or refuses now; after the wait the caller makes the
    connection without yielding in between (the core then admits or refuses it).
    """
    floor = tuned_floor((settings or Settings()).validate().max_message_bytes)
    if budget.admission(floor) is not Admission.WAIT:
        return
    lot = _lots.setdefault(budget, trio.lowlevel.ParkingLot())
    budget.wait(floor)
    try:
        with trio.move_on_after(timeout):
            while budget.admission(floor, waiting=True) is Admission.WAIT:
                with trio.move_on_after(RECHECK_INTERVAL):
                    await lot.park()
    finally:
        budget.stop_waiting(floor)


def room_freed(budget: MemoryBudget | None) -> None:
    """Wake the connections waiting on ``budget`` (after consumption or a close)."""
    if budget is not None and budget.waiting:
        lot = _lots.get(budget)
        if lot is not None:
            lot.unpark_all()
