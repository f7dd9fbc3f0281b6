"""Auto-tuning (spec §8.9): windows that follow the consumer, round trips, a memory budget.

A :class:`WindowTuner` per stream follows its consumer (the bandwidth-delay product
when the sender waits on credit, the consumer's rate times a latency target when a
queue builds up); :class:`RttEstimator` keeps the round-trip times it needs;
:class:`ConnectionTuning` applies rule 8 to the connection window; and a
:class:`MemoryBudget` shared by many connections caps what they grant together, in fair
shares. Time is always passed in as ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

from ._credit import ReceiveWindow

__all__ = [
    "Admission",
    "AutoTune",
    "MemoryBudget",
    "RateEstimator",
    "RttEstimator",
    "WindowInfo",
    "WindowReason",
    "WindowTuner",
    "tuned_floor",
]


#: spec §8.9 rule 5: the window floor never lets the replenish threshold fall below this.
FLOOR_STEP_BYTES: Final = 2048
#: spec §8.9 rule 5: the least message window; one message consumed, one in flight.
FLOOR_MESSAGES: Final = 2
#: spec §8.9 rule 4: credit counts as used up when in flight plus queued reach this share.
CREDIT_LIMITED_SHARE: Final = 2 / 3
#: spec §8.9 rule 6: window changes smaller than this share of the window are skipped.
MIN_CHANGE_SHARE: Final = 1 / 16
#: spec §8.9 B2: a newcomer's initial connection window is at most free / this.
ADMISSION_SHARE: Final = 16


def tuned_floor(max_message_bytes: int) -> int:
    """The least byte window the tuner sets (spec §8.9 rule 5).

    Two largest messages (one being consumed, one in flight) and at least
    ``max_message_bytes + 2048``, so the replenish threshold of spec §8.6 never drops
    below 1024 bytes and no CREDIT raises a limit by a sliver.
    """
    return max(2 * max_message_bytes, max_message_bytes + FLOOR_STEP_BYTES)


@dataclass(frozen=True, slots=True)
class AutoTune:
    """How a receiver sizes its windows while it runs (spec §8.9); never on the wire.

    Attributes:
        latency_target: seconds a message should wait, at most, between leaving the
            sender and being consumed, beyond one round trip: the window is the
            consumer's rate times ``rtt + latency_target`` (spec §8.9 rule 3).
        max_window_bytes: the largest byte window of a stream or of the connection.
        max_window_messages: the largest message window of a stream.
        min_epoch: least seconds between two retunings of one window (spec §8.9 rule 1).
        rate_time_constant: seconds over which consumption rates are averaged (rule 2).
        shrink_time_constant: seconds over which a window shrinks toward its target
            (rule 6); growth is immediate.
        rtt_probe_interval: seconds between the PINGs that measure the round trip
            while streams are open, once the application has consumed (spec §8.9).
        feedback: put the consumer's ``rate`` and ``depth`` in stream CREDIT frames
            (spec §8.10).
    """

    latency_target: float = 0.1
    max_window_bytes: int = 64 * 1024 * 1024
    max_window_messages: int = 1 << 20
    min_epoch: float = 0.05
    rate_time_constant: float = 0.5
    shrink_time_constant: float = 0.25
    rtt_probe_interval: float = 1.0
    feedback: bool = True

    def validate(self) -> AutoTune:
        """Return self, or raise ``ValueError`` naming what is out of range."""
        problems = []
        for name in (
            "latency_target",
            "min_epoch",
            "rate_time_constant",
            "shrink_time_constant",
            "rtt_probe_interval",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} = {value!r} must be a finite number >= 0")
        if self.rate_time_constant <= 0 or self.shrink_time_constant <= 0:
            problems.append("the time constants must be > 0")
        if self.rtt_probe_interval <= 0:
            problems.append("rtt_probe_interval must be > 0")
        if self.max_window_bytes < 1 or self.max_window_messages < FLOOR_MESSAGES:
            problems.append(
                f"max_window_bytes must be >= 1 and max_window_messages >= {FLOOR_MESSAGES}"
            )
        if problems:
            raise ValueError("invalid AutoTune: " + "; ".join(problems) + " (spec §8.9)")
        return self


class WindowReason(enum.Enum):
    """Why a window last changed (spec §8.9 rule 7, §14)."""

    STATIC = "static"  # no tuning: the HELLO settings, refilled by spec §8.6
    INITIAL = "initial"  # tuning, but no epoch has ended yet
    GROW = "grow"  # credit ran out while the consumer kept up: toward the BDP (rule 4)
    LATENCY = "latency"  # toward rate x (rtt + latency target) (rule 3)
    FLOOR = "floor"  # held at the floor (rule 5)
    CAP = "cap"  # held at max_window_* (rule 5)
    BUDGET = "budget"  # held at the memory budget's fair share (rule 8)


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """A snapshot of one receive window and its tuner (spec §14).

    Attributes:
        window_bytes / window_messages: the current window (limit ≈ consumed + window).
        reason: why it last changed.
        changes: how many times the tuner changed it.
        rate_bytes / rate_messages: the consumer's smoothed rate per second (0 until
            the first epoch ends, or without tuning).
    """

    window_bytes: int
    window_messages: int
    reason: WindowReason
    changes: int
    rate_bytes: float
    rate_messages: float


class RttEstimator:
    """Round-trip times measured by PING (spec §8.9 rule 2).

    ``minimum`` is the least sample of the connection: queueing behind data inflates
    later samples, and a window grown from inflated samples would inflate them further.
    """

    __slots__ = ("latest", "minimum", "samples", "smoothed")

    def __init__(self) -> None:
        self.latest: float | None = None
        self.smoothed: float | None = None
        self.minimum: float | None = None
        self.samples = 0

    def add(self, rtt: float) -> None:
        """One sample, in seconds."""
        rtt = max(0.0, rtt)
        self.samples += 1
        self.latest = rtt
        self.smoothed = rtt if self.smoothed is None else self.smoothed + (rtt - self.smoothed) / 8
        self.minimum = rtt if self.minimum is None else min(self.minimum, rtt)


#: Seconds between the samples of a consumption rate when no tuner takes them (rule 2).
RATE_PERIOD: Final = 0.25
#: The time constant of a consumption rate when no tuner sets one.
STATIC_RATE_TIME_CONSTANT: Final = 1.0


class RateEstimator:
    """How fast the application consumes a stream, in bytes and messages per second.

    The one consumption-rate estimator (spec §8.9 rule 2): :meth:`count` adds what was
    consumed, :meth:`fold` ends a sample period and updates the smoothed rates
    ``R += (1 - exp(-dt / tau)) (s - R)``, starting at the first sample. A
    :class:`WindowTuner` folds at its epoch ends; without one, the connection folds every
    :data:`RATE_PERIOD` seconds. Both units come from the same samples, so a rate in
    bytes and one in messages always describe the same consumption.
    """

    __slots__ = (
        "bytes_per_second",
        "messages_per_second",
        "pending_bytes",
        "pending_messages",
        "rated",
        "since",
        "time_constant",
    )

    def __init__(self, time_constant: float) -> None:
        self.time_constant = time_constant
        self.bytes_per_second = 0.0
        self.messages_per_second = 0.0
        self.rated = False  # a first sample was taken
        self.since: float | None = None  # when the current sample period began
        self.pending_bytes = 0
        self.pending_messages = 0

    def count(self, nbytes: int, nmessages: int) -> None:
        """The application consumed this much (spec §8.5)."""
        self.pending_bytes += nbytes
        self.pending_messages += nmessages

    def fold(self, now: float) -> tuple[float, float] | None:
        """End the sample period at ``now``: its (bytes, messages) per second, or ``None``.

        The first call only starts a period (what was counted before it is dropped);
        so does a call with no time elapsed.
        """
        since = self.since
        self.since = now
        nbytes, nmessages = self.pending_bytes, self.pending_messages
        self.pending_bytes = self.pending_messages = 0
        if since is None or now <= since:
            return None
        dt = now - since
        sample_bytes, sample_messages = nbytes / dt, nmessages / dt
        if self.rated:
            weight = 1.0 - math.exp(-dt / self.time_constant)
            self.bytes_per_second += weight * (sample_bytes - self.bytes_per_second)
            self.messages_per_second += weight * (sample_messages - self.messages_per_second)
        else:
            self.bytes_per_second, self.messages_per_second = sample_bytes, sample_messages
            self.rated = True
        return sample_bytes, sample_messages

    def due(self, now: float) -> bool:
        """Whether a period of :data:`RATE_PERIOD` has passed (when no tuner folds)."""
        return self.since is None or now >= self.since + RATE_PERIOD


class WindowTuner:
    """Sizes one stream's receive window from what its consumer does (spec §8.9).

    The rules, numbered as in spec §8.9 (L is the latency target, rtt the least RTT):

    1. **Epochs.** The first release starts an epoch; an epoch ends at the first release
       at least ``max(min_epoch, rtt)`` after it began (rtt as known then). During an
       epoch the tuner counts the bytes and messages consumed, the least messages still
       held right after a release (the standing queue ``Qm``, with ``Qb`` the bytes held
       at that moment), and whether BLOCKED arrived.
    2. **Rates.** At the end of an epoch of ``dt`` seconds: samples ``sb = bytes / dt``
       and ``sm = messages / dt``; smoothed rates ``R += (1 - exp(-dt / tau)) (s - R)``,
       starting at the first sample.
    3. **Latency target.** With the horizon ``H = max(rtt + L, 2 rtt)``, the target is
       ``Tb = Rb H`` bytes and ``Tm = Rm H`` messages: a round trip in flight and L
       queued, and never less than two round trips, because the replenish threshold
       (half the window, spec §8.6) is consumed before credit goes back.
    4. **Growth.** The sender is *credit-limited* if BLOCKED arrived, or if
       ``sb rtt + Qb >= 2/3 (W - T)`` or ``sm rtt + Qm >= 2/3 (Wm - Tm')`` (in flight
       plus queued fill the credit the sender has once the threshold ``T``/``Tm'`` is
       held back); the consumer *keeps up* if its queue emptied (``Qm == 0``). If both:
       ``Tb = max(W, 2 max(sb, Rb) H)``, likewise ``Tm``: a credit-limited sender moves
       ``(W - T) / rtt`` per second, so the window at least doubles per epoch until the
       link, not credit, is the limit.
    5. **Bounds.** ``tuned_floor(M) <= W <= max_window_bytes`` and
       ``2 <= Wm <= max_window_messages``.
    6. **Moving.** A larger target is taken at once; toward a smaller one the window
       moves by ``1 - exp(-dt / tau_shrink)`` of the gap (an EMA). A window within 1/16
       of its target stays as it is, unless it is past a bound.
    7. **Never revoke.** Only the window changes; the replenish policy (spec §8.6) then
       raises limits to ``consumed + window``, so a smaller window grants less and no
       limit ever goes down.

    Rule 8 (the connection window and the memory budget) is in ``Connection``.
    """

    __slots__ = (
        "blocked",
        "changes",
        "config",
        "epoch_end",
        "floor_bytes",
        "queue_bytes",
        "queue_messages",
        "rate",
        "reason",
    )

    def __init__(
        self, config: AutoTune, max_message_bytes: int, rate: RateEstimator | None = None
    ) -> None:
        self.config = config
        self.floor_bytes = tuned_floor(max_message_bytes)
        # rules 1-2: the stream's rate estimator; the tuner folds it at each epoch's end
        self.rate = rate if rate is not None else RateEstimator(config.rate_time_constant)
        self.epoch_end = -math.inf  # the first release at or after this ends the epoch
        self.queue_bytes = 0
        self.queue_messages = 0
        self.blocked = False
        self.reason = WindowReason.INITIAL
        self.changes = 0

    @property
    def rated(self) -> bool:
        return self.rate.rated

    @property
    def rate_bytes(self) -> float:
        return self.rate.bytes_per_second

    @property
    def rate_messages(self) -> float:
        return self.rate.messages_per_second

    def on_release(
        self, rw: ReceiveWindow, nbytes: int, nmessages: int, now: float, rtt: float
    ) -> bool:
        """Count one release batch (already consumed in ``rw``); retune at an epoch's end.

        This runs on every release, so it is a few additions and one comparison until
        the epoch ends.

        Returns:
            Whether ``rw``'s window changed.
        """
        rate = self.rate
        rate.count(nbytes, nmessages)
        held_messages = rw.received_messages - rw.consumed_messages
        if held_messages < self.queue_messages:  # the standing queue (rule 1)
            self.queue_messages = held_messages
            self.queue_bytes = rw.received_bytes - rw.consumed_bytes
        if now < self.epoch_end:
            return False
        start = rate.since
        samples = rate.fold(now)  # rule 2; the first release only starts the first epoch
        changed = False
        if samples is not None and start is not None:
            changed = self._retune(rw, now - start, rtt, *samples)
        self._new_epoch(rw, now, rtt)
        return changed

    def _new_epoch(self, rw: ReceiveWindow, now: float, rtt: float) -> None:
        self.epoch_end = now + max(self.config.min_epoch, rtt)
        self.queue_bytes = rw.held_bytes
        self.queue_messages = rw.held_messages
        self.blocked = False

    def _retune(
        self, rw: ReceiveWindow, dt: float, rtt: float, sample_bytes: float, sample_messages: float
    ) -> bool:
        cfg = self.config
        latency = cfg.latency_target
        horizon = max(rtt + latency, 2 * rtt)  # rule 3
        window, window_messages = rw.window_bytes, rw.window_messages
        usable = window - rw.threshold_bytes  # what the sender has once a threshold is held
        usable_m = window_messages - rw.threshold_messages
        credit_limited = (
            self.blocked
            or sample_bytes * rtt + self.queue_bytes >= CREDIT_LIMITED_SHARE * usable
            or sample_messages * rtt + self.queue_messages >= CREDIT_LIMITED_SHARE * usable_m
        )
        keeps_up = self.queue_messages == 0  # the consumer caught up at least once
        if credit_limited and keeps_up:  # rule 4
            target = max(window, 2 * max(sample_bytes, self.rate_bytes) * horizon)
            target_m = max(window_messages, 2 * max(sample_messages, self.rate_messages) * horizon)
            reason = WindowReason.GROW
        else:  # rule 3
            target = self.rate_bytes * horizon
            target_m = self.rate_messages * horizon
            reason = WindowReason.LATENCY
        shrink = 1.0 - math.exp(-dt / cfg.shrink_time_constant)  # rule 6
        new = target if target >= window else window - (window - target) * shrink
        new_m = (
            target_m
            if target_m >= window_messages
            else (window_messages - (window_messages - target_m) * shrink)
        )
        new_bytes, low, high = _bounded(new, self.floor_bytes, cfg.max_window_bytes)  # rule 5
        new_messages, low_m, high_m = _bounded(new_m, FLOOR_MESSAGES, cfg.max_window_messages)
        if high or high_m:
            reason = WindowReason.CAP
        elif low and low_m:
            reason = WindowReason.FLOOR
        if not (low or high) and abs(target - window) < window * MIN_CHANGE_SHARE:
            new_bytes = window  # rule 6: close enough to the target already
        if not (low_m or high_m) and abs(target_m - window_messages) < (
            window_messages * MIN_CHANGE_SHARE
        ):
            new_messages = window_messages
        if new_bytes == window and new_messages == window_messages:
            return False
        rw.set_window(new_bytes, new_messages)  # rule 7: limits themselves never go down
        self.reason = reason
        self.changes += 1
        return True


def _bounded(value: float, low: int, high: int) -> tuple[int, bool, bool]:
    """``value`` rounded into ``low..high``, and whether it was raised or lowered to fit.

    The floor wins over a cap below it: progress first (spec §8.5).
    """
    n = int(value + 0.5)
    high = max(high, low)
    if n <= low:
        return low, True, False
    if n >= high:
        return high, False, True
    return n, False, False


class Admission(enum.Enum):
    """What a memory budget says to a newcomer (spec §8.9 B2)."""

    #: Its floor fits in the free room now: admit it.
    ADMIT = "admit"
    #: The floors fit, but the room is lent out to members above their floors: it fits
    #: once they consume. An I/O layer may wait for that (``wait``/``stop_waiting``).
    WAIT = "wait"
    #: Even the floors do not fit: refuse it (GOAWAY OVERLOADED, retryable).
    REFUSE = "refuse"


class MemoryBudget:
    """A cap on the credit that many connections of one receiver grant together (spec §8.9).

    Share one budget between the connections of a process (the Trio layer takes it as
    ``memory_budget=``); it is not thread-safe. Its members are connection receive
    windows. Rules B1-B5 of spec §8.9:

    - **B1** A member's commitment is ``conn_limit - conn_consumed``, the most its peer
      can make it hold (spec §8.4); ``committed`` is their sum and never exceeds
      ``capacity`` (``peak`` records the most it reached).
    - **B2** A newcomer with floor ``F`` is refused only if the floors cannot all fit:
      ``floors + waiting + F > capacity``. Otherwise it is admitted if ``room = free -
      waiting`` covers ``F``, with an initial window of ``min(connection_bytes, room //
      16)``, at least ``F``; if not, the room is lent out, and an I/O layer may hold the
      newcomer (counted in ``waiting``) until members consume and it fits
      (:meth:`admission`). A small start leaves room for the connections that arrive
      together; tuning grows it to its share.
    - **B3** Shares are max-min fair: each member gets its floor, and what is left of
      ``capacity - waiting`` is shared out by water-filling over what members want above
      their floors.
    - **B4** A raise of a member's limit is cut to ``max(need, min(raise, free -
      waiting))``, where ``need`` is what the floor of spec §8.5 requires; a cut raise
      below the replenish threshold is not sent unless needed. Room freed by consumption
      thus goes to the waiting newcomers first.
    - **B5** ``need`` never exceeds what was just consumed, so B4 never takes
      ``committed`` above ``capacity``.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if type(capacity_bytes) is not int or capacity_bytes < 1:
            raise ValueError(
                f"a memory budget needs a positive byte capacity, not {capacity_bytes!r}"
            )
        self.capacity = capacity_bytes
        self.committed = 0
        self.peak = 0
        self.refused = 0
        self.floors = 0  # the members' floors, summed (B2)
        self.waiting = 0  # the floors of newcomers waiting for room (B2)
        self.waits = 0  # newcomers that had to wait for room, in all
        self._members: dict[ReceiveWindow, list[int]] = {}  # member -> [floor, demand]
        self._shares: dict[ReceiveWindow, int] | None = None

    def __repr__(self) -> str:
        return (
            f"<MemoryBudget {self.committed}/{self.capacity} bytes committed, "
            f"{len(self._members)} members>"
        )

    @property
    def members(self) -> int:
        return len(self._members)

    @property
    def free(self) -> int:
        """Bytes not committed."""
        return self.capacity - self.committed

    def note_peak(self) -> None:
        if self.committed > self.peak:
            self.peak = self.committed

    def admission(self, floor: int, *, waiting: bool = False) -> Admission:
        """B2's verdict for a newcomer whose floor is ``floor`` bytes.

        ``waiting``: the newcomer is one of those counted in ``waiting`` (it called
        :meth:`wait`), so its own floor is not held against it.
        """
        others = self.waiting - floor if waiting else self.waiting
        if self.floors + others + floor > self.capacity:
            return Admission.REFUSE
        if self.capacity - self.committed - others >= floor:
            return Admission.ADMIT
        return Admission.WAIT

    def wait(self, floor: int) -> None:
        """A newcomer waits for room (B2): B3 and B4 keep ``floor`` bytes aside for it."""
        self.waiting += floor
        self.waits += 1
        self._shares = None

    def stop_waiting(self, floor: int) -> None:
        """The newcomer of :meth:`wait` stops waiting (admitted next, or given up)."""
        self.waiting -= floor
        self._shares = None

    def initial_window(self, want: int, floor: int) -> int | None:
        """The initial connection window for a newcomer, or ``None`` to refuse it (B2).

        A newcomer that would have to wait is refused here: waiting is the I/O layer's
        (:meth:`admission`, :meth:`wait`), before it makes the connection.
        """
        if self.admission(floor) is not Admission.ADMIT:
            self.refused += 1
            return None
        room = self.capacity - self.committed - self.waiting
        return max(floor, min(want, room // ADMISSION_SHARE))

    def join(self, member: ReceiveWindow, floor: int, demand: int) -> None:
        """Count ``member``'s commitment from now on (B1)."""
        member.budget = self
        self._members[member] = [floor, demand]
        self.floors += floor
        self.committed += member.advertised_bytes - member.consumed_bytes
        self.note_peak()
        self._shares = None

    def leave(self, member: ReceiveWindow) -> None:
        """Stop counting ``member`` (its connection closed); leaving twice does nothing."""
        entry = self._members.pop(member, None)
        if entry is None:
            return
        self.floors -= entry[0]
        member.budget = None
        self.committed -= member.advertised_bytes - member.consumed_bytes
        self._shares = None

    def set_demand(self, member: ReceiveWindow, demand: int) -> None:
        """The window ``member`` would like; shares are recomputed when next asked for."""
        entry = self._members.get(member)
        if entry is not None and entry[1] != demand:
            entry[1] = demand
            self._shares = None

    def share(self, member: ReceiveWindow) -> int:
        """``member``'s fair share (B3): the most its window may be."""
        shares = self._shares
        if shares is None:
            shares = self._shares = self._water_fill()
        return shares.get(member, 0)

    def _water_fill(self) -> dict[ReceiveWindow, int]:
        members = self._members
        shares = {m: floor for m, (floor, _) in members.items()}
        extra = self.capacity - self.waiting - self.floors  # B3: room is kept for waiters
        wants = sorted(
            ((max(0, demand - floor), m) for m, (floor, demand) in members.items()),
            key=lambda item: item[0],
        )
        left = len(wants)
        for want, m in wants:
            if extra <= 0:
                break
            give = min(want, extra // left)
            shares[m] += give
            extra -= give
            left -= 1
        return shares

    def clip(self, grant: int, need: int) -> int:
        """How much of a raise of ``grant`` bytes the budget allows (B4)."""
        return max(need, min(grant, self.capacity - self.committed - self.waiting), 0)
