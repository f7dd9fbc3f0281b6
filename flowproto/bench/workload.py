"""What every benchmark peer does the same way, whatever the strategy.

- **Messages** (:class:`MessageMaker`): each starts with its stream's sequence number
  and the sender's ``time.monotonic()`` (the same clock in every process of the machine),
  padded with zero bytes to the requested size; with ``codec="msgpack"`` it is a dict
  ``{"seq": n, "t": time, "data": zero bytes}`` of about that size instead.
- **Checking** (:class:`Checker`): the receiver checks every message it is given, in
  the paced phase, drained after it or dropped: its stream's sequence must run exactly
  0, 1, 2, ... in order (:class:`SequenceCheck`; a message a drop strategy dropped is
  a gap it registered, nothing else may be missing), and its payload must be what the
  sender wrote (the length and the zero filler of a raw message; the keys, the filler
  and its length of a msgpack dict). Latency is sampled on every ``stride``-th
  message consumed in the paced phase.
- **Pacing** (:class:`Schedule`): how many messages a consumer (or producer) may have
  taken by a given time, from phases of unlimited, paced or stalled consumption, each
  paced phase a :class:`flowproto.Pacer`.
- **Memory** (:class:`Sampler`): the receiver's RSS and buffered bytes/messages every
  100 ms (a series for the plots; the peaks the checks use are exact, kept where
  buffers grow), and its peak RSS (VmHWM) at the end.

Nothing here imports trio, so the zmq peers use it too.
"""

from __future__ import annotations

import math
import resource
import struct
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final

import msgpack

from flowproto import Pacer

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


class ConstantMaker:
    """The ``constant`` workload (issue #13's raw-Trio floor): one payload of ``size`` zero
    bytes built once, sent again and again. Nothing in it can be checked but the count."""

    def __init__(self, size: int, per_batch: int) -> None:
        self._batch = [bytes(size)] * per_batch

    def batch(self, first: int, count: int) -> list[bytes]:
        """``count`` messages (at most one batch): the same list object when it is whole."""
        return self._batch if count == len(self._batch) else self._batch[:count]

    def raw(self, seq: int) -> bytes:
        """One message (the one-message-at-a-time API)."""
        return self._batch[0]

    obj = raw


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


# --- checking --------------------------------------------------------------------------

#: Problems a check keeps in words; past this many it only counts them.
MAX_PROBLEMS: Final = 5


class SequenceCheck:
    """One stream's sequence numbers must run 0, 1, 2, ... with no gap and no repeat.

    A receiver that drops messages on purpose (the drop strategy) registers each one it
    drops, in arrival order, with :meth:`drop`. The sequence it delivers must then be
    strictly increasing, and each gap in it exactly the dropped runs that begin there.
    Anything else (a message missing, repeated or out of order, or both dropped and
    delivered) is a problem, kept in words with its numbers.
    """

    def __init__(self) -> None:
        self.next = 0  # the number due next in the sequence
        self.problems: list[str] = []
        self.problem_count = 0
        self._dropped: deque[list[int]] = deque()  # runs [first, end) not yet passed
        self._drop_next = 0  # dropped messages arrive in order too: the least next one

    def take(self, seqs: list[int]) -> None:
        """Messages delivered, in the order the consumer got them."""
        nxt = self.next
        n = len(seqs)
        if n and seqs[0] == nxt and seqs == list(range(nxt, nxt + n)):
            self.next = nxt + n  # the usual case, compared in one C loop
            return
        for seq in seqs:
            self._one(seq)

    def _one(self, seq: int) -> None:
        nxt = self.next
        if seq == nxt:
            self.next = nxt + 1
            return
        if seq > nxt:
            passed = self._pass_dropped(seq)
            if passed != seq:
                self._problem(f"got {seq} after {nxt - 1}: {passed}..{seq - 1} missing")
            self.next = seq + 1
        else:
            self._problem(f"got {seq} after {nxt - 1}: repeated or out of order")

    def _pass_dropped(self, upto: int | float) -> int:
        """Where the sequence is after the dropped runs that start there, up to ``upto``."""
        nxt = self.next
        runs = self._dropped
        while runs and runs[0][0] == nxt and runs[0][1] <= upto:
            nxt = runs.popleft()[1]
        return nxt

    def drop(self, seqs: list[int]) -> None:
        """Messages the receiver dropped on purpose, in the order they arrived."""
        runs = self._dropped
        for seq in seqs:
            if seq < self._drop_next or seq < self.next:
                self._problem(f"dropped {seq} again or out of order")
                continue
            self._drop_next = seq + 1
            if runs and runs[-1][1] == seq:
                runs[-1][1] = seq + 1
            else:
                runs.append([seq, seq + 1])

    def finish(self) -> int:
        """The stream ended: pass the trailing drops; returns how many it ran (0..n-1)."""
        self.next = self._pass_dropped(math.inf)
        for first, end in self._dropped:
            self._problem(f"dropped {first}..{end - 1} but never passed them in the sequence")
        self._dropped.clear()
        return self.next

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


class Checker:
    """Checks every message of one stream and samples latency (see the module docstring).

    ``take`` is for messages consumed in the paced phase (latency is sampled),
    ``take_drained`` for messages taken after it, ``drop`` for messages the receiver
    dropped on purpose (their numbers only). Raw messages are bytes; msgpack messages
    are the decoded dicts.
    """

    def __init__(self, size: int, codec: str, stride: int = 16) -> None:
        maker = MessageMaker(size, codec)
        self.size = size
        self.codec = codec
        self.stride = stride
        self.count = 0  # messages accounted for: delivered (consumed or drained) and dropped
        self.bad = 0  # messages whose payload is not what the sender wrote
        self.sequence = SequenceCheck()
        self.latencies = array("d")
        self._consumed = 0  # messages taken with latency sampling
        self._filler = maker._pad  # what follows a raw message's header
        self._data = maker._data  # a msgpack message's "data"
        self._unpack = HEADER.unpack_from

    def take(self, batch: Sequence[Any], now: float) -> None:
        """The consumer took ``batch`` in the paced phase, at time ``now``."""
        off = (-self._consumed) % self.stride
        self._consumed += len(batch)
        if not self._check(batch):
            return  # a bad message carries no trustworthy send time
        lat = self.latencies
        if self.codec == "raw":
            unpack = self._unpack
            for m in batch[off :: self.stride]:
                lat.append(now - unpack(m)[1])
        else:
            for m in batch[off :: self.stride]:
                lat.append(now - m["t"])
        if len(lat) > MAX_LATENCY_SAMPLES:
            self.latencies = lat[::2]
            self.stride *= 2

    def take_drained(self, batch: Sequence[Any]) -> None:
        """The consumer took ``batch`` after the paced phase: checked the same way."""
        self._check(batch)

    def drop(self, seqs: list[int]) -> None:
        """The receiver dropped these messages on purpose (drop strategy, memory cap)."""
        self.count += len(seqs)
        self.sequence.drop(seqs)

    def _check(self, batch: Sequence[Any]) -> bool:
        """Check payloads and sequence; True if every payload was right."""
        self.count += len(batch)
        if self.codec == "raw":
            unpack, filler = self._unpack, self._filler
            try:
                if set(map(len, batch)) <= {self.size} and all(
                    map(bytes.endswith, batch, repeat(filler))
                ):
                    self.sequence.take([unpack(m)[0] for m in batch])
                    return True
            except TypeError:  # not bytes: checked one by one below
                pass
            seqs = []
            bad = 0
            for item in batch:
                m = bytes(item)
                if len(m) >= HEADER.size:
                    seqs.append(unpack(m)[0])
                if len(m) != self.size or not m.endswith(filler):
                    bad += 1
        else:
            data = self._data
            seqs = []
            bad = 0
            for m in batch:
                try:
                    seq = m["seq"]
                    ok = len(m) == 3 and m["data"] == data and isinstance(m["t"], float)
                except (KeyError, TypeError):
                    bad += 1
                    continue
                if isinstance(seq, int):
                    seqs.append(seq)
                else:
                    ok = False
                bad += not ok
        self.sequence.take(seqs)
        self.bad += bad
        return bad == 0

    def finish(self) -> dict[str, Any]:
        """The stream ended: what the checks found, for the receiver's JSON line."""
        end = self.sequence.finish()
        return {
            "accounted": self.count,
            "sequence_end": end,  # the sequence ran 0..end-1 (with drops registered)
            "sequence_problems": self.sequence.problems,
            "sequence_problem_count": self.sequence.problem_count,
            "bad_payloads": self.bad,
        }


class CountOnly:
    """The checker of the ``constant`` workload: counts messages and their bytes, as the
    ``raw`` strategy's receiver does; no sequence, payload or latency (see :class:`Checker`
    for the methods)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self.bad = 0  # messages of another length than ``size``
        self.latencies = array("d")

    def take(self, batch: Sequence[Any], now: float) -> None:
        self._check(batch)

    def take_drained(self, batch: Sequence[Any]) -> None:
        self._check(batch)

    def drop(self, seqs: list[int]) -> None:
        self.count += len(seqs)

    def _check(self, batch: Sequence[Any]) -> None:
        self.count += len(batch)
        if batch and len(batch[0]) != self.size:  # one length looked at per batch
            self.bad += 1

    def finish(self) -> dict[str, Any]:
        return {
            "accounted": self.count,
            "sequence_end": None,
            "sequence_problems": [],
            "sequence_problem_count": 0,
            "bad_payloads": self.bad,
        }


def seq_of(message: Any, codec: str) -> int:
    """The sequence number of a raw message or a decoded dict."""
    if codec == "raw":
        return int(HEADER.unpack_from(message)[0])
    return int(message["seq"])


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

    Each paced phase is a :class:`flowproto.Pacer` (the package's one pacer) started at
    the phase's start: message ``n`` of a phase no earlier than ``phase start + n / rate``,
    an absolute schedule, so the long-run rate is exact whatever a sleep overshoots. A
    benchmark's schedule never forgives a lag (``max_lag`` is infinite): a consumer or
    producer that fell behind catches up, as the scenario's nominal rate demands.
    Callers pass the running count of messages taken; the messages taken since the
    last call are booked with the phase's pacer.
    """

    def __init__(self, phases: Sequence[Phase]) -> None:
        self.phases = sorted(phases, key=lambda p: p.start)
        if not self.phases or self.phases[0].start != 0:
            self.phases.insert(0, Phase(0.0, None))
        self._index = -1
        self._pacer = Pacer(None, max_lag=math.inf)
        self._booked = 0  # messages taken (the callers' count) already booked

    @property
    def unlimited(self) -> bool:
        """True if no phase limits the rate."""
        return all(p.rate is None for p in self.phases)

    def _phase(self, elapsed: float, taken: int) -> Phase:
        """The phase at ``elapsed``, its pacer up to date with ``taken``."""
        i = self._index
        while i + 1 < len(self.phases) and self.phases[i + 1].start <= elapsed:
            i += 1
        phase = self.phases[i]
        if i != self._index:  # a new phase: a new schedule from its start, nothing owed
            self._index = i
            self._pacer = Pacer(None, max_lag=math.inf)
            self._pacer.set_rate(phase.rate, phase.start)
        else:
            self._pacer.take(taken - self._booked)
        self._booked = taken
        return phase

    def allowed(self, elapsed: float, taken: int) -> int | None:
        """How many more may be taken now: ``None`` for any number."""
        self._phase(elapsed, taken)
        return self._pacer.allowed(elapsed)

    def next_time(self, elapsed: float, taken: int) -> float:
        """The elapsed time at which :meth:`allowed` is next above zero."""
        self._phase(elapsed, taken)
        following = [p.start for p in self.phases if p.start > elapsed]
        change = following[0] if following else math.inf
        return min(self._pacer.next_time(elapsed), change)


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
    """A time series of RSS and buffered bytes/messages, for the plots.

    Only a series: a sample reads values at one moment and may miss the peak between
    two, so the checks use peaks kept where the buffers grow instead.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self.series: list[list[float | int | None]] = []

    def sample(self, now: float, buffered_bytes: int | None, buffered_messages: int | None) -> None:
        """One point of the series: [seconds, RSS KiB, buffered bytes, buffered messages]."""
        self.series.append(
            [round(now - self.start, 3), rss_kib(), buffered_bytes, buffered_messages]
        )
