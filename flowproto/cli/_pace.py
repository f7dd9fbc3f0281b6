"""``--rate`` and ``--delay`` for the commands' loops, on an absolute schedule.

Event ``n`` (from 0) passes no earlier than ``start + n / rate``, so the long-run rate is
exact whatever each sleep overshoots. A loop that fell more than a second behind (idle,
or blocked on credit) restarts its schedule instead of catching up with a burst. Shared
by several tasks, a :class:`Pace` paces their total.
"""

from __future__ import annotations

from typing import Final

import trio

#: Seconds a paced loop may fall behind its schedule before the schedule restarts (so
#: an idle gap is not made up by a burst).
MAX_PACING_LAG: Final = 1.0


class Pace:
    """Lets events through at ``rate`` per second (``None``: no limit), then ``delay`` s."""

    def __init__(self, rate: float | None, delay: float = 0.0) -> None:
        self.rate = rate
        self.delay = delay
        self._start: float | None = None
        self._n = 0

    @property
    def active(self) -> bool:
        """True if :meth:`wait` ever waits."""
        return bool(self.rate) or self.delay > 0

    async def wait(self) -> None:
        """Wait until the next event is due (it is booked now), then the delay."""
        if self.rate:
            now = trio.current_time()
            if self._start is None:
                self._start = now
            due = self._start + self._n / self.rate
            if due < now - MAX_PACING_LAG:
                # Far behind (idle, or blocked on credit): restart the schedule instead of
                # catching up with a burst.
                self._start = now - self._n / self.rate
                due = now
            self._n += 1
            await trio.sleep_until(due)
        if self.delay > 0:
            await trio.sleep(self.delay)
