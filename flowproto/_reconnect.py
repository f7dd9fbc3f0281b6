"""When to try again after a lost transport: backoff with jitter, within a deadline.

Shared by the I/O layers (spec §15.4 leaves the initiator's policy to it). Nothing here
sleeps or connects: :meth:`Reconnect.delays` only says how long to wait between attempts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Reconnect"]


@dataclass(frozen=True)
class Reconnect:
    """How an initiator resumes a session after losing its transport (spec §15.4, §15.6).

    Attributes:
        deadline: seconds after the loss to keep trying; then the connection fails with
            what each stream knows was delivered.
        initial_delay: seconds before the second attempt (the first is at once).
        max_delay: the longest wait between attempts; each wait doubles up to it.
        jitter: each wait is scaled by a random factor in ``1 ± jitter``, so clients
            cut off together do not all come back together.
        attempt_timeout: seconds one attempt to connect may take before it is given up
            for the next. A connection attempt made while the path was down can hang in
            TCP's own SYN backoff (1 s, 2 s, 4 s, ... doubling) long after the path is
            back; a fresh attempt comes sooner.
    """

    deadline: float = 60.0
    initial_delay: float = 0.25
    max_delay: float = 5.0
    jitter: float = 0.5
    attempt_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.deadline < 0 or self.initial_delay <= 0 or self.max_delay < self.initial_delay:
            raise ValueError(f"invalid reconnect policy: {self}")
        if self.attempt_timeout <= 0:
            raise ValueError(f"attempt_timeout must be positive, not {self.attempt_timeout}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {self.jitter}")

    def attempt_deadline(self, now: float, deadline: float) -> float:
        """When an attempt started at ``now`` is given up: after ``attempt_timeout``, or
        at the policy's ``deadline`` (counted from the loss) if that comes first."""
        return min(deadline, now + self.attempt_timeout)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between attempts, without end: the caller stops at the deadline."""
        rng = rng or random.Random()
        delay = self.initial_delay
        while True:
            yield delay * (1 + self.jitter * (2 * rng.random() - 1))
            delay = min(self.max_delay, 2 * delay)
