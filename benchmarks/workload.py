"""What every benchmark peer does the same way, whatever the strategy.

- **Messages** (:class:`MessageMaker`): each starts with its stream's sequence number
  and the sender's ``time.monotonic()`` (the same clock in every process of the machine),
  padded to the requested size; with ``codec="msgpack"`` it is a dict
  ``{"seq": n, "t": time, "data": padding}`` of about that size instead.
- **Accounting** (:class:`Checker`): the receiver checks every message's length and adds
  up its sequence number; a stream that got ``n`` distinct messages numbered
  ``0..n-1`` sums to ``n(n-1)/2``. Latency is sampled on every ``stride``-th message.
- **Pacing** (:class:`Schedule`): how many messages a consumer (or producer) may have
  taken by a given time, from phases of unlimited, paced or stalled consumption.
- **Memory** (:class:`Sampler`): the receiver's RSS and buffered bytes/messages every
  100 ms, and its peak RSS (VmHWM) at the end.

Nothing here imports trio, so the zmq peers use it too.
"""

from __future__ import annotations

import math
import resource
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

#: Bytes at the start of a raw message: sequence number (u64) and send time (f64).
HEADER: Final = struct.Struct("<Qd")
#: Latency samples kept; past this, every other sample is dropped and the stride doubles.
MAX_LATENCY_SAMPLES: Final = 100_000
#: Seconds between two memory samples.
SAMPLE_INTERVAL: Final = 0.1

_PAGE_KIB: Final = resource.getpagesize() // 1024


# --- messages --------------------------------------------------------------------------


class MessageMaker:
    """Builds numbered, timestamped messages of ``size`` bytes (raw) or about that (msgpack)."""

    def __init__(self, size: int, codec: str) -> None:
        if size < HEADER.size:
            raise ValueError(f"messages must be at least {HEADER.size} bytes")
        self.size = size
        self.codec = codec
        self._pad = bytes(size - HEADER.size)
        # msgpack: the dict's keys and small ints take about 20 bytes.
        self._data = bytes(max(0, size - 32))
        self._pack = HEADER.pack

    def raw(self, seq: int) -> bytes:
        """One raw message."""
        return self._pack(seq, time.monotonic()) + self._pad

    def obj(self, seq: int) -> dict[str, Any]:
        """One message as a dict (the msgpack codec encodes it)."""
        return {"seq": seq, "t": time.monotonic(), "data": self._data}

    def batch(self, first: int, count: int) -> list[Any]:
        """Messages ``first .. first+count-1``: bytes for ``raw``, dicts for ``msgpack``."""
        if self.codec == "raw":
            pack, pad, now = self._pack, self._pad, time.monotonic
            return [pack(seq, now()) + pad for seq in range(first, first + count)]
        data, now = self._data, time.monotonic
        return [{"seq": seq, "t": now(), "data": data} for seq in range(first, first + count)]


def encoder(codec: str) -> Callable[[Any], bytes]:
    """How strategies without a codec of their own turn a message into bytes."""
    if codec == "raw":
        return lambda m: m
    packer = msgpack.Packer(use_bin_type=True)
    return packer.pack  # type: ignore[no-any-return]


def decoder(codec: str) -> Callable[[bytes], Any]:
    """The inverse of :func:`encoder`."""
    if codec == "raw":
        return lambda b: b
    return lambda b: msgpack.unpackb(b, raw=False)


# --- accounting ------------------------------------------------------------------------


class Checker:
    """Counts, checks and samples the messages of one stream as the consumer takes them."""

    def __init__(self, size: int, codec: str, stride: int = 16) -> None:
        self.size = size
        self.codec = codec
        self.stride = stride
        self.count = 0
        self.nbytes = 0
        self.seq_sum = 0
        self.bad = 0  # messages of the wrong length (raw)
        self.latencies = array("d")
        self._unpack = HEADER.unpack_from

    def take(self, batch: Sequence[Any], now: float) -> None:
        """The consumer took ``batch`` (raw bytes or decoded dicts) at time ``now``."""
        count = len(batch)
        if self.codec == "raw":
            unpack = self._unpack
            total = 0
            for m in batch:
                total += unpack(m)[0]
            nbytes = sum(map(len, batch))
            if nbytes != count * self.size:
                self.bad += sum(1 for m in batch if len(m) != self.size)
            self.nbytes += nbytes
            off = (-self.count) % self.stride
            lat = self.latencies
            for m in batch[off :: self.stride]:
                lat.append(now - unpack(m)[1])
        else:
            total = sum(m["seq"] for m in batch)
            self.nbytes += count * self.size
            off = (-self.count) % self.stride
            lat = self.latencies
            for m in batch[off :: self.stride]:
                lat.append(now - m["t"])
        self.seq_sum += total
        self.count += count
        if len(self.latencies) > MAX_LATENCY_SAMPLES:
            self.latencies = self.latencies[::2]
            self.stride *= 2

    def take_seqs(self, seqs: Sequence[int]) -> None:
        """Messages accounted for by number only (dropped, or drained after the run)."""
        self.count += len(seqs)
        self.seq_sum += sum(seqs)


def seq_of(message: Any, codec: str) -> int:
    """The sequence number of a raw message or a decoded dict."""
    if codec == "raw":
        return int(HEADER.unpack_from(message)[0])
    return int(message["seq"])


def expected_sum(count: int) -> int:
    """The sequence-number sum of messages ``0 .. count-1``."""
    return count * (count - 1) // 2


def percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max of latency samples, in milliseconds."""
    if not samples:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(samples)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 3)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(s[-1] * 1000, 3)}


def cdf_points(samples: Sequence[float], points: int = 200) -> list[float]:
    """Latency quantiles (ms) at ``points`` evenly spaced probabilities, for a CDF plot."""
    if not samples:
        return []
    s = sorted(samples)
    n = len(s)
    return [round(s[min(n - 1, int(i / (points - 1) * (n - 1)))] * 1000, 3) for i in range(points)]


# --- pacing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """From ``start`` seconds on, take ``rate`` messages/s (``None``: unlimited; 0: stall)."""

    start: float
    rate: float | None


class Schedule:
    """How many messages may have been taken by a time, from phases of consumption.

    Paced phases follow an absolute schedule (message ``n`` of a phase no earlier than
    ``phase start + n / rate``), so the long-run rate is exact whatever a sleep overshoots.
    """

    def __init__(self, phases: Sequence[Phase]) -> None:
        self.phases = sorted(phases, key=lambda p: p.start)
        if not self.phases or self.phases[0].start != 0:
            self.phases.insert(0, Phase(0.0, None))
        self._index = -1
        self._base = 0  # messages taken when the current phase began
        self._phase_start = 0.0

    @property
    def unlimited(self) -> bool:
        """True if no phase limits the rate."""
        return all(p.rate is None for p in self.phases)

    def _phase(self, elapsed: float, taken: int) -> Phase:
        i = self._index
        while i + 1 < len(self.phases) and self.phases[i + 1].start <= elapsed:
            i += 1
        if i != self._index:
            self._index = i
            self._base = taken
            self._phase_start = self.phases[i].start
        return self.phases[i]

    def allowed(self, elapsed: float, taken: int) -> int | None:
        """How many more may be taken now: ``None`` for any number."""
        phase = self._phase(elapsed, taken)
        if phase.rate is None:
            return None
        if phase.rate == 0:
            return 0
        due = self._base + math.floor((elapsed - self._phase_start) * phase.rate) + 1
        return max(0, due - taken)

    def next_time(self, elapsed: float, taken: int) -> float:
        """The elapsed time at which :meth:`allowed` is next above zero."""
        phase = self._phase(elapsed, taken)
        following = [p.start for p in self.phases if p.start > elapsed]
        change = following[0] if following else math.inf
        if phase.rate is None:
            return elapsed
        if phase.rate == 0:
            return change
        at = self._phase_start + (taken - self._base) / phase.rate
        return min(max(at, elapsed), change)


def schedule_from_json(spec: Sequence[Sequence[float | None]]) -> Schedule:
    """A schedule from ``[[start, rate], ...]`` (``rate`` null for unlimited)."""
    return Schedule([Phase(float(s or 0), None if r is None else float(r)) for s, r in spec])


# --- memory and CPU --------------------------------------------------------------------


def rss_kib() -> int:
    """This process's resident set size now, in KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_KIB


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Sampler:
    """A time series of RSS and buffered bytes/messages, and the peaks seen."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.series: list[list[float | int | None]] = []
        self.peak_buffered_bytes: int | None = None
        self.peak_buffered_messages: int | None = None
        self.peak_window_bytes = 0  # flowproto: the largest receive windows (spec §8.9)
        self.peak_window_messages = 0

    def note_window(self, window_bytes: int, window_messages: int) -> None:
        """Track the largest receive window seen (it changes with auto-tuning)."""
        self.peak_window_bytes = max(self.peak_window_bytes, window_bytes)
        self.peak_window_messages = max(self.peak_window_messages, window_messages)

    def note(self, buffered_bytes: int | None, buffered_messages: int | None) -> None:
        """Track the peak buffer without adding to the series."""
        if buffered_bytes is not None:
            self.peak_buffered_bytes = max(self.peak_buffered_bytes or 0, buffered_bytes)
        if buffered_messages is not None:
            self.peak_buffered_messages = max(self.peak_buffered_messages or 0, buffered_messages)

    def sample(self, now: float, buffered_bytes: int | None, buffered_messages: int | None) -> None:
        """One point of the series: [seconds, RSS KiB, buffered bytes, buffered messages]."""
        self.note(buffered_bytes, buffered_messages)
        self.series.append(
            [round(now - self.start, 3), rss_kib(), buffered_bytes, buffered_messages]
        )
