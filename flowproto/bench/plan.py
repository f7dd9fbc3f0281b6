"""The benchmark scenarios: strategies, runs and the plans that order them.

A scenario is one :class:`Run`: a strategy (:data:`STRATEGIES`), a message size and
codec, a number of streams, and a consumer speed. :func:`full_plan` orders every
scenario of issue #4 as interleaved repeats; :func:`quick_plan` is the smoke-test subset
of ``flowproto bench --quick``. Nothing here runs anything. The groups:

- ``throughput``: an unpaced producer and an unlimited consumer, per message size and
  codec; repeated, each repeat running every strategy once with the two sides of each
  target back to back (A1 B1 A2 B2 ...), so the speed bar compares runs paired by
  repeat and takes the median of the pairs' ratios (:func:`~flowproto.bench.report.targets`);
- ``consumer``: a producer paced at a fixed rate and consumers that are unlimited, 10x
  and 100x slower, bursty (a 1 s stall every 3 s) or slowing down half way;
- ``streams``: 16 streams on one connection, with and without a slow stream 0, the two
  back to back in each repeat;
- issue #13's groups (:data:`SCENARIO_GROUPS`, run by :mod:`.scenarios`), each repeat
  running every side once back to back: ``latency`` (ping-pong p50/p99), ``setup``
  (connections per second, CPU per connection), ``idle-memory`` (server RSS per idle
  connection and per idle stream), ``cli-copy`` (the CLI's file copy against a raw Trio
  copy and ``nc``) and ``streams-scaling`` (sender CPU per message for 1/16/256 streams).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

KIB = 1024
SIZES = (64, KIB, 64 * KIB, KIB * KIB)
SIZE_NAMES = {64: "64 B", KIB: "1 KiB", 64 * KIB: "64 KiB", KIB * KIB: "1 MiB"}


@dataclass(frozen=True)
class Strategy:
    """How one side of the comparison moves messages (the peers' options)."""

    name: str
    peer: str
    description: str
    api: str = "batch"
    window: str = "default"
    policy: str = "block"
    multi_stream: bool = True
    workload: str = "checked"  # or "constant": raw's one payload, only counted
    loop: str = ""  # the asyncio peers' event loop: "asyncio" or "uvloop"
    baseline: str = "raw"  # what its speed is compared with (the raw framing of its loop)


def _asyncio_strategies() -> list[Strategy]:
    """The asyncio twins of flowproto and raw, on asyncio's own loop and on uvloop."""
    out = []
    for loop, suffix, where in (
        ("asyncio", "", "asyncio's own event loop"),
        ("uvloop", "-uvloop", "uvloop (optional: skipped where it is not installed)"),
    ):
        raw = f"raw-asyncio{suffix}"
        out += [
            Strategy(
                f"flowproto-asyncio{suffix}",
                "flowproto-asyncio",
                "flowproto.asyncio as the flowproto strategy (default auto-tuned windows, "
                f"send_many / receive_many, every message checked) on {where}",
                loop=loop,
                baseline=raw,
            ),
            Strategy(
                raw,
                "raw-asyncio",
                "the minimal asyncio framing program (raw's twin): StreamReader/StreamWriter, "
                "<u32 length> frames, one constant payload, ~64 KiB writes each followed by "
                f"drain(); the receiver cuts each message out of its reads and counts, on {where}",
                multi_stream=False,
                loop=loop,
                baseline=raw,
            ),
        ]
        if not suffix:
            out.append(
                Strategy(
                    "flowproto-asyncio-const",
                    "flowproto-asyncio",
                    "flowproto-asyncio with raw's workload (one constant payload, messages "
                    "only counted): against raw-asyncio it measures what flowproto.asyncio "
                    "costs, not the benchmark's checks",
                    multi_stream=False,
                    workload="constant",
                    loop=loop,
                    baseline=raw,
                )
            )
    return out


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy(
            "flowproto",
            "flowproto",
            "flowproto credit, default windows (start at 4 MiB and 4096 messages a stream, "
            "auto-tuned as the Trio layer does by default, spec §8.9), send_many / receive_many",
        ),
        Strategy(
            "flowproto-small",
            "flowproto",
            "flowproto credit, small fixed windows (16 messages a stream, no auto-tuning), "
            "send_many / receive_many",
            window="small",
        ),
        Strategy(
            "flowproto-single",
            "flowproto",
            "flowproto credit, default (auto-tuned) windows, one send() and one receive() per "
            "message",
            api="single",
        ),
        Strategy(
            "unbounded",
            "framing",
            "length-prefixed frames; the receiver reads as fast as it can into an unbounded queue",
            policy="unbounded",
        ),
        Strategy(
            "drop",
            "framing",
            "length-prefixed frames; a bounded queue (4096 messages or 4 MiB) drops the newest",
            policy="drop",
        ),
        Strategy(
            "raw",
            "raw",
            "the minimal raw-Trio program, the floor of any Trio framing and what the speed "
            "targets are stated against: <u32 length> frames, one constant payload built "
            "once, writes coalesced to ~64 KiB; the receiver cuts each message out of its "
            "reads and counts (nothing checked but counts)",
            multi_stream=False,
        ),
        Strategy(
            "flowproto-const",
            "flowproto",
            "flowproto (as the flowproto strategy) with raw's workload: one constant payload "
            "sent again and again, messages only counted; against raw it measures what "
            "flowproto's framing, credit and delivery cost, not the benchmark's checks",
            multi_stream=False,
            workload="constant",
        ),
        Strategy(
            "plain",
            "framing",
            "the checking comparator: plain length-prefixed Trio framing, writes coalesced to "
            "~64 KiB, every frame of a read parsed into a message that is checked (sequence "
            "and payload) as the other strategies' are; kernel buffers are the only "
            "backpressure",
        ),
        Strategy(
            "plain-single",
            "framing",
            "plain length-prefixed Trio framing, one send_all and one awaited receive per message",
            api="single",
        ),
        Strategy(
            "zmq",
            "zmq",
            "pyzmq PUSH/PULL, high-water marks 1000, one send/recv per message",
            multi_stream=False,
        ),
        *_asyncio_strategies(),
    ]
}

#: The asyncio strategies: raw codec only (raw-asyncio has none to compare with), and
#: the ones on uvloop neither paced (their receiver cannot tap the windows it grants)
#: nor in the 16-stream group.
ASYNCIO = tuple(name for name, s in STRATEGIES.items() if s.loop)
UVLOOP = tuple(name for name, s in STRATEGIES.items() if s.loop == "uvloop")
#: The ping-pong sides: Trio's, zmq, and the asyncio pair on each loop.
LATENCY_SIDES = (
    "flowproto", "raw", "zmq", "flowproto-asyncio", "raw-asyncio",
    "flowproto-asyncio-uvloop", "raw-asyncio-uvloop",
)  # fmt: skip

CONSUMERS = ("unlimited", "slow10", "slow100", "bursty", "changing")
CONSUMER_NAMES = {
    "unlimited": "unlimited",
    "slow10": "10x slower",
    "slow100": "100x slower",
    "bursty": "bursty (1 s stall every 3 s)",
    "changing": "unlimited, then 10x slower",
}

#: The producer's rate (messages/s) in the consumer-speed scenarios, by message size.
PRODUCER_RATE = {64: 20_000, KIB: 20_000, 64 * KIB: 1_000, KIB * KIB: 50}
#: The slow stream's rate in the 16-stream scenarios (messages/s).
SLOW_STREAM_RATE = 100


@dataclass(frozen=True)
class Run:
    """One scenario: a strategy on one workload."""

    group: str
    strategy: str
    size: int
    codec: str = "raw"
    streams: int = 1
    consumer: str = "unlimited"
    producer_rate: float | None = None
    duration: float = 3.0
    count: int = 50_000_000
    slow_stream: bool = False
    repeat: int = 0
    warmup: int = 0
    unit: str = ""

    @property
    def key(self) -> str:
        if self.group in SCENARIO_GROUPS:
            return scenario_key(self)
        parts = [self.group, self.strategy, SIZE_NAMES.get(self.size, f"{self.size} B"), self.codec]
        if self.group == "consumer":
            parts.append(self.consumer)
        if self.group == "streams":
            parts.append(f"{self.streams} streams" + (", one slow" if self.slow_stream else ""))
        return " | ".join(parts)

    def schedule(self) -> list[list[float | None]]:
        """The consumer's phases as ``[[start_s, rate], ...]``."""
        p = self.producer_rate
        d = self.duration
        if self.consumer == "unlimited":
            return [[0, None]]
        assert p is not None, "slow consumers are defined against a paced producer"
        if self.consumer == "slow10":
            return [[0, p / 10]]
        if self.consumer == "slow100":
            return [[0, p / 100]]
        if self.consumer == "bursty":
            phases: list[list[float | None]] = []
            t = 0.0
            while t < d + 1:
                phases += [[t, None], [t + 2, 0]]
                t += 3
            return phases
        if self.consumer == "changing":
            return [[0, None], [d / 2, p / 10]]
        raise ValueError(self.consumer)

    def nominal_rate(self) -> float | None:
        """The consumer's long-run rate (messages/s), where the schedule fixes one."""
        p = self.producer_rate
        if p is None:
            return None
        return {"unlimited": p, "slow10": p / 10, "slow100": p / 100, "bursty": p}.get(
            self.consumer
        )


#: The scenario groups of issue #13, run by :mod:`.scenarios` (each its own programs).
SCENARIO_GROUPS = ("latency", "setup", "idle-memory", "cli-copy", "streams-scaling")
#: Every group, in the order of a full plan.
GROUPS = ("throughput", "consumer", "streams", *SCENARIO_GROUPS)
#: Stream counts of the streams-scaling group (one connection, the same total messages).
SCALING_STREAMS = (1, 16, 256)
MIB = KIB * KIB


def scenario_key(run: Run) -> str:
    """The key of a run of one of :data:`SCENARIO_GROUPS`."""
    if run.group == "latency":
        detail = f"64 B each way, {run.count:,} round trips"
    elif run.group == "setup":
        detail = f"{run.count:,} connections"
    elif run.group == "idle-memory":
        detail = f"{run.count:,} idle {run.unit}"
    elif run.group == "cli-copy":
        detail = f"{run.size / MIB:g} MiB file"
    else:
        detail = (
            f"{SIZE_NAMES[run.size]}, {run.streams} streams, {run.count * run.streams:,} messages"
        )
    return f"{run.group} | {run.strategy} | {detail}"


def scenario_runs(repeat: int, quick: bool) -> list[Run]:
    """One repeat of the issue #13 groups: full, or the ``--quick`` smoke-test sizes."""
    q = quick
    runs = [
        Run("latency", name, 64, count=200 if q else 2000, warmup=20 if q else 200, repeat=repeat)
        for name in LATENCY_SIDES
        if not (q and name in UVLOOP)  # --quick (CI) does not depend on uvloop
    ]
    runs += [
        Run("setup", name, 64, count=50 if q else 500, warmup=5 if q else 20, repeat=repeat)
        for name in ("flowproto", "raw")
    ]
    idle = [(1000, "connections"), (200 if q else 1000, "streams")]
    if not q:
        idle.insert(1, (10_000, "connections"))  # if the descriptor limit allows
    for count, unit in idle:
        runs += [
            Run("idle-memory", name, 0, count=count, warmup=20, unit=unit, repeat=repeat)
            for name in ("flowproto", "raw")
        ]
    size = 16 * MIB if q else 256 * MIB
    runs += [
        Run("cli-copy", name, size, count=1, repeat=repeat) for name in ("flowproto", "raw", "nc")
    ]
    total = 25_600 if q else 2_048_000  # ~2 s a run: shorter ones were too noisy
    runs += [
        Run("streams-scaling", "flowproto", KIB, streams=n, count=total // n, duration=60.0,
            repeat=repeat)
        for n in SCALING_STREAMS
    ]  # fmt: skip
    return runs


@dataclass
class Plan:
    """Which runs, and how they are bounded."""

    runs: list[Run] = field(default_factory=list)
    repeats: int = 1
    quick: bool = False


#: The order of the throughput runs within a repeat: the two sides of each target run
#: back to back (A1 B1 ... A2 B2 ...), so that a pair sees about the same machine.
THROUGHPUT_ORDER = (
    "flowproto-const", "raw", "flowproto", "plain", "flowproto-single", "plain-single",
    "flowproto-small", "unbounded", "drop", "zmq",
    "flowproto-asyncio", "raw-asyncio", "flowproto-asyncio-const",
    "flowproto-asyncio-uvloop", "raw-asyncio-uvloop",
)  # fmt: skip
#: Strategies with one constant payload: no codec, no consumer to pace.
CONSTANT = (
    "raw", "flowproto-const", "raw-asyncio", "raw-asyncio-uvloop", "flowproto-asyncio-const",
)  # fmt: skip


def full_plan(repeats: int = 3) -> Plan:
    """Every scenario of issue #4; throughput and 16-stream runs as interleaved repeats."""
    assert sorted(THROUGHPUT_ORDER) == sorted(STRATEGIES)
    runs: list[Run] = []
    for rep in range(repeats):
        for size in SIZES:
            for codec in ("raw", "msgpack") if size <= KIB else ("raw",):
                for name in THROUGHPUT_ORDER:
                    if (name in CONSTANT or name in ASYNCIO) and codec != "raw":
                        continue  # one constant payload: no codec
                    runs.append(Run("throughput", name, size, codec, repeat=rep, duration=3.0))
    for size in (KIB, 64 * KIB):
        for consumer in CONSUMERS:
            for name in STRATEGIES:
                if name in CONSTANT or name in UVLOOP:
                    continue  # counts as fast as it can: no consumer to pace
                runs.append(
                    Run(
                        "consumer",
                        name,
                        size,
                        consumer=consumer,
                        producer_rate=PRODUCER_RATE[size],
                        duration=7.0 if consumer == "bursty" else 6.0,
                    )
                )
    for rep in range(repeats):
        for name in STRATEGIES:
            if STRATEGIES[name].multi_stream and name not in ("plain-single", *UVLOOP):
                for slow in (False, True):
                    runs.append(
                        Run("streams", name, KIB, streams=16, slow_stream=slow, duration=4.0,
                            repeat=rep)
                    )  # fmt: skip
    for rep in range(repeats):
        runs += scenario_runs(rep, quick=False)
    return Plan(runs, repeats)


def quick_plan() -> Plan:
    """A subset that finishes in well under a minute (a smoke test of every peer kind)."""
    runs = [
        Run("throughput", "flowproto", 64, duration=1.0),
        Run("throughput", "plain", 64, duration=1.0),
        Run("throughput", "raw", 64, duration=1.0),
        Run("throughput", "flowproto-const", 64, duration=1.0),
        Run("throughput", "flowproto", 64 * KIB, duration=1.0),
        Run("throughput", "plain", 64 * KIB, duration=1.0),
        Run("throughput", "flowproto-single", KIB, "msgpack", duration=1.0),
        Run("throughput", "zmq", KIB, duration=1.0),
        Run("throughput", "flowproto-asyncio", 64, duration=1.0),
        Run("throughput", "raw-asyncio", 64, duration=1.0),
        Run("throughput", "flowproto-asyncio-const", 64 * KIB, duration=1.0),
    ]
    for name in ("flowproto", "flowproto-small", "unbounded", "drop", "flowproto-asyncio"):
        runs.append(
            Run("consumer", name, KIB, consumer="slow10", producer_rate=20_000, duration=1.5)
        )
    for slow in (False, True):
        runs.append(Run("streams", "flowproto", KIB, streams=16, slow_stream=slow, duration=1.5))
    runs += scenario_runs(0, quick=True)
    return Plan(runs, 1, quick=True)


def select(plan: Plan, groups: Sequence[str] | None, strategies: Sequence[str] | None) -> Plan:
    """Only the runs of the named groups and strategies."""
    runs = [
        r
        for r in plan.runs
        if (not groups or r.group in groups) and (not strategies or r.strategy in strategies)
    ]
    return replace(plan, runs=runs)
