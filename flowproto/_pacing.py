"""One pacer for everything that spaces messages in time; no clock, no I/O.

A :class:`Pacer` lets items through at ``rate`` per second on an absolute schedule:
item ``n`` (from 0, counted since the rate was last set) is due no earlier than
``start + n / rate``. Because the schedule is absolute, the long-run rate is exact
whatever each sleep overshoots. The caller brings the clock (``now``, in seconds) and
does the waiting: the Trio layer sleeps until :meth:`Pacer.reserve` says, the CLI
paces ``--rate`` with it, and the benchmarks build consumer schedules from it.

A schedule that falls behind by more than ``max_lag`` seconds (the sender was idle, or
blocked on credit) restarts at ``now`` instead of catching up with a burst.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["DEFAULT_MAX_LAG", "Pacer"]

#: Seconds a schedule may fall behind before it restarts rather than burst to catch up.
DEFAULT_MAX_LAG: Final = 1.0


class Pacer:
    """Items at ``rate`` per second on an absolute schedule (``None``: no limit; 0: none).

    Args:
        rate: items per second, ``None`` for no limit, ``0`` to let nothing through.
        max_lag: seconds the schedule may fall behind before it restarts at ``now``.
    """

    __slots__ = ("_rate", "_start", "_taken", "max_lag")

    def __init__(self, rate: float | None = None, *, max_lag: float = DEFAULT_MAX_LAG) -> None:
        if rate is not None and rate < 0:
            raise ValueError(f"a pacing rate must be at least 0, not {rate}")
        self._rate = rate
        self._start: float | None = None  # when item 0 of the current schedule was due
        self._taken = 0  # items booked since then
        self.max_lag = max_lag

    @property
    def rate(self) -> float | None:
        """Items per second now; ``None`` means no limit."""
        return self._rate

    @property
    def limited(self) -> bool:
        """True if the pacer holds anything back."""
        return self._rate is not None

    def set_rate(self, rate: float | None, now: float) -> None:
        """Change the rate. The new schedule starts when the old one would have let the
        next item go (or ``now``, if that has passed): a debt is kept, no credit carried.
        """
        if rate is not None and rate < 0:
            raise ValueError(f"a pacing rate must be at least 0, not {rate}")
        if rate != self._rate:
            start = now
            if self._rate and self._start is not None:
                start = max(now, self._start + self._taken / self._rate)
            self._rate = rate
            self._start = start
            self._taken = 0

    def _catch_up(self, now: float) -> float:
        rate = self._rate
        assert rate
        start = self._start
        if start is None or start + self._taken / rate < now - self.max_lag:
            start = self._start = now - self._taken / rate  # restart: no burst
        return start

    def reserve(self, count: int, now: float) -> float:
        """Book ``count`` items; returns when the first of them may go (``>= now``).

        With no limit that is ``now``. A rate of 0 returns ``math.inf``: nothing goes.
        The items after the first are spaced by ``1 / rate`` behind it, so the next
        call returns when they are all through.
        """
        rate = self._rate
        if rate is None:
            return now
        if rate == 0:
            return math.inf
        start = self._catch_up(now)
        due = start + self._taken / rate
        self._taken += count
        return max(now, due)

    def allowed(self, now: float) -> int | None:
        """How many items may go by ``now`` and are not booked yet (``None``: any number).

        Item ``n`` is allowed from ``start + n / rate``, so the first is allowed at once.
        Book what you take with :meth:`take`.
        """
        rate = self._rate
        if rate is None:
            return None
        if rate == 0:
            return 0
        start = self._catch_up(now)
        due = math.floor((now - start) * rate + 1e-9) + 1
        return max(0, due - self._taken)

    def take(self, count: int) -> None:
        """Book ``count`` items taken (after :meth:`allowed` said they may go)."""
        self._taken += count

    def next_time(self, now: float) -> float:
        """When the next item not yet booked may go (``now`` if already; inf at rate 0)."""
        rate = self._rate
        if rate is None:
            return now
        if rate == 0:
            return math.inf
        start = self._catch_up(now)
        return max(now, start + self._taken / rate)
