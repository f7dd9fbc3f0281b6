"""Local resource limits: what one endpoint lets a peer cost it (spec §10.7, §12).

Nothing here is on the wire, so peers never see these values and must not rely on
them. :class:`Limits` bounds the replies a peer can make us queue while it does not
read, and sets the *glitch budget*: a token bucket that frames costing work without
progress spend (spec §10.7.1). The defaults are the reference values of spec §12;
no conforming peer exceeds them under normal use.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from ._errors import ErrorCode, RemoteProtocolError

__all__ = [
    "FRAME_TIMEOUT",
    "GLITCH_BURST",
    "GLITCH_REFILL_BYTES",
    "GLITCH_REFILL_PER_SECOND",
    "MAX_QUEUED_REPLIES",
    "MIN_CREDIT_STEP",
    "MIN_FRAGMENT_BYTES",
    "MIN_FRAME_RATE",
    "REPORT_INTERVAL",
    "GlitchBudget",
    "Limits",
]

#: Control frames queued in reply to the peer and not yet taken for sending (spec §10.7).
MAX_QUEUED_REPLIES: Final = 1000
#: Tokens in a full glitch budget: frames that make no progress allowed in a burst.
GLITCH_BURST: Final = 1000
#: Tokens the budget regains per second of the clock given to ``handle_timeout``.
GLITCH_REFILL_PER_SECOND: Final = 100.0
#: Bytes of DATA consumed (or discarded) for which the budget regains one token.
GLITCH_REFILL_BYTES: Final = 1024
#: A CREDIT that raises only a byte limit, by less than this, is a glitch (spec §10.7.1).
MIN_CREDIT_STEP: Final = 1024
#: A DATA frame that continues a message without ending it, shorter than this, is a glitch.
MIN_FRAGMENT_BYTES: Final = 1024
#: spec §11: a frame of L bytes may take FRAME_TIMEOUT + L / MIN_FRAME_RATE seconds to arrive.
MIN_FRAME_RATE: Final = 16384
#: spec §11: the frame timeout of a frame whose length is not known yet (and the preface).
FRAME_TIMEOUT: Final = 10.0
#: spec §8.6 step 3: while a stream's consumer consumes, its consumption is reported (by a
#: funded CREDIT) at least this often, in seconds, even below the thresholds.
REPORT_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one endpoint (spec §10.7); local, never sent to the peer.

    Attributes:
        max_queued_replies: control frames (PONG, RESET, CREDIT, BLOCKED) that peer
            input may make us queue before ``data_to_send()`` takes them; one more is a
            connection error ENHANCE_YOUR_CALM.
        glitch_burst: tokens of the glitch budget when full; a glitch when the budget
            is empty is a connection error ENHANCE_YOUR_CALM.
        glitch_refill_per_second: tokens regained per second of ``handle_timeout``'s clock.
        glitch_refill_bytes: DATA bytes consumed or discarded per token regained.
        min_credit_step: the smallest byte-limit raise a CREDIT may make alone without
            counting as a glitch (lowered to the peer's own replenish threshold, spec §8.6).
        min_fragment_bytes: the shortest DATA frame that may continue a message without
            ending it and without counting as a glitch.
    """

    max_queued_replies: int = MAX_QUEUED_REPLIES
    glitch_burst: int = GLITCH_BURST
    glitch_refill_per_second: float = GLITCH_REFILL_PER_SECOND
    glitch_refill_bytes: int = GLITCH_REFILL_BYTES
    min_credit_step: int = MIN_CREDIT_STEP
    min_fragment_bytes: int = MIN_FRAGMENT_BYTES

    def validate(self) -> Limits:
        """Return self, or raise ``ValueError`` naming every limit out of its range."""
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            least = 0 if f.name == "glitch_refill_per_second" else 1
            if type(value) not in (int, float) or value < least:
                problems.append(f"{f.name} = {value!r} must be a number of at least {least}")
        if problems:
            raise ValueError("invalid flowproto limits: " + "; ".join(problems))
        return self


class GlitchBudget:
    """The glitch budget of spec §10.7.1: a token bucket, refilled by time and by progress.

    A frame that costs work and makes no progress spends a token (:meth:`spend`). The
    bucket regains ``glitch_refill_per_second`` tokens per second of the clock given to
    :meth:`tick`, and one per ``glitch_refill_bytes`` of DATA consumed or discarded
    (the connection's running total, passed to :meth:`spend`); it never holds more than
    ``glitch_burst``. Spending from an empty bucket is a connection error.
    """

    __slots__ = ("consumed", "count", "limits", "time", "tokens")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.count = 0  # glitches over the connection
        self.tokens = float(limits.glitch_burst)
        self.time: float | None = None  # tick()'s last ``now``
        self.consumed = 0  # connection bytes consumed when tokens were last refilled

    def tick(self, now: float) -> None:
        """Refill by the time since the last tick."""
        if self.time is None:
            self.time = now
        elif now > self.time:  # a clock that goes back refills nothing
            refill = (now - self.time) * self.limits.glitch_refill_per_second
            self.tokens = min(self.tokens + refill, self.limits.glitch_burst)
            self.time = now

    def spend(self, what: str, consumed: int) -> None:
        """Spend a token for ``what``; ``consumed`` is the connection's bytes consumed so far.

        Raises:
            RemoteProtocolError: ENHANCE_YOUR_CALM when the budget is empty (spec §10.7).
        """
        self.count += 1
        limits = self.limits
        tokens = self.tokens
        if consumed != self.consumed:
            tokens += (consumed - self.consumed) / limits.glitch_refill_bytes
            self.consumed = consumed
        tokens = min(tokens, limits.glitch_burst) - 1
        self.tokens = tokens
        if tokens < 0:
            raise RemoteProtocolError(
                f"peer sent more frames that make no progress than the budget of "
                f"{limits.glitch_burst} allows (the last: {what}) (spec §10.7)",
                ErrorCode.ENHANCE_YOUR_CALM,
            )
