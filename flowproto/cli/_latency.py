"""Message latencies for ``receive --latency``, kept compactly for percentiles."""

from __future__ import annotations

import math
from array import array
from typing import Any

from ._constants import TIMESTAMP_BYTES


class Latencies:
    """Message latencies in milliseconds, from the send time each message starts with."""

    def __init__(self) -> None:
        self._values = array("d")
        self._mark = 0

    def add_message(self, message: Any, now_ns: int) -> None:
        """Count one message received at ``now_ns`` (ignored if it carries no time)."""
        if isinstance(message, (bytes, bytearray)) and len(message) >= TIMESTAMP_BYTES:
            sent_ns = int.from_bytes(message[:TIMESTAMP_BYTES], "big")
            self._values.append((now_ns - sent_ns) / 1e6)

    def summary(self, recent: bool = False) -> dict[str, float] | None:
        """p50/p99/max over every message, or over those since the last ``recent`` call."""
        values = self._values[self._mark :] if recent else self._values
        if recent:
            self._mark = len(self._values)
        if not values:
            return None
        ordered = sorted(values)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

        return {"p50": pick(0.50), "p99": pick(0.99), "max": round(ordered[-1], 3)}
