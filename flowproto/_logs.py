"""Rate-limited warnings: one line per key and interval, with a count of what was held back.

A hostile or broken peer must not turn into a flood of log lines (issue 12): every warning an
I/O layer logs about a peer goes through a :class:`RateLimitedLog`, keyed by (peer, reason).
The caller brings the clock; nothing here reads one.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["LOG_INTERVAL", "MAX_LOG_KEYS", "RateLimitedLog"]

#: Seconds between two lines of one key.
LOG_INTERVAL: Final = 10.0
#: Keys remembered at once; the oldest is forgotten past this, so memory stays bounded.
MAX_LOG_KEYS: Final = 1024


class RateLimitedLog:
    """At most one line per key per ``interval``; the next line says how many were held back."""

    def __init__(
        self, logger: logging.Logger, interval: float = LOG_INTERVAL, max_keys: int = MAX_LOG_KEYS
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[object, tuple[float, int]] = {}  # key -> (when logged, held back since)

    def warning(self, key: object, now: float, message: str, *args: object) -> bool:
        """Log ``message % args`` for ``key`` unless it was logged less than ``interval`` ago.

        Returns:
            Whether a line was written.
        """
        entry = self._last.get(key)
        if entry is not None and entry[0] <= now < entry[0] + self.interval:
            self._last[key] = (entry[0], entry[1] + 1)
            return False
        held = entry[1] if entry is not None else 0
        self._last.pop(key, None)
        if len(self._last) >= self.max_keys:
            del self._last[next(iter(self._last))]  # the oldest key
        self._last[key] = (now, 0)
        if held:
            message += f" ({held} more like this in the last {self.interval:g} s)"
        self.logger.warning(message, *args)
        return True
