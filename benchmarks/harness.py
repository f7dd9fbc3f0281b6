"""Run benchmark scenarios as sender/receiver process pairs and write their results.

A scenario is one :class:`Run`: a strategy, a message size and codec, a number of
streams, and a consumer speed. :func:`run_pair` starts the receiver, reads its port
from its stderr, starts the sender, waits for both (killing stragglers after a hard
timeout) and merges their JSON lines with figures derived from both sides. The groups:

- ``throughput``: an unpaced producer and an unlimited consumer, per message size and
  codec; repeated, each repeat running every strategy once with the two sides of each
  target back to back (A1 B1 A2 B2 ...), so the speed bar compares runs paired by
  repeat and takes the median of the pairs' ratios (:func:`targets`);
- ``consumer``: a producer paced at a fixed rate and consumers that are unlimited, 10x
  and 100x slower, bursty (a 1 s stall every 3 s) or slowing down half way;
- ``streams``: 16 streams on one connection, with and without a slow stream 0, the two
  back to back in each repeat.

:func:`invariant_problems` checks what must hold whatever the timing: every message
accounted for, each stream's sequence exactly 0..n-1 and its payloads intact, and
flowproto's receiver never holding more than the largest window it granted.
:func:`write_results` writes ``results.json`` (every run, whole), ``results.md`` (the
tables and, unless the run was ``--quick``, the speed-bar targets) and, if matplotlib
is installed, the plots.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .netns import Link

ROOT = Path(__file__).resolve().parent.parent

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
            "plain",
            "framing",
            "plain length-prefixed Trio framing, writes coalesced to ~64 KiB, every frame of a "
            "read parsed; kernel buffers are the only backpressure",
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
    ]
}

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

    @property
    def key(self) -> str:
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


@dataclass
class Plan:
    """Which runs, and how they are bounded."""

    runs: list[Run] = field(default_factory=list)
    repeats: int = 1
    quick: bool = False


#: The order of the throughput runs within a repeat: the two sides of each target run
#: back to back (A1 B1 ... A2 B2 ...), so that a pair sees about the same machine.
THROUGHPUT_ORDER = (
    "flowproto", "plain", "flowproto-single", "plain-single",
    "flowproto-small", "unbounded", "drop", "zmq",
)  # fmt: skip


def full_plan(repeats: int = 3) -> Plan:
    """Every scenario of issue #4; throughput and 16-stream runs as interleaved repeats."""
    assert sorted(THROUGHPUT_ORDER) == sorted(STRATEGIES)
    runs: list[Run] = []
    for rep in range(repeats):
        for size in SIZES:
            for codec in ("raw", "msgpack") if size <= KIB else ("raw",):
                for name in THROUGHPUT_ORDER:
                    runs.append(Run("throughput", name, size, codec, repeat=rep, duration=3.0))
    for size in (KIB, 64 * KIB):
        for consumer in CONSUMERS:
            for name in STRATEGIES:
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
            if STRATEGIES[name].multi_stream and name != "plain-single":
                for slow in (False, True):
                    runs.append(
                        Run("streams", name, KIB, streams=16, slow_stream=slow, duration=4.0,
                            repeat=rep)
                    )  # fmt: skip
    return Plan(runs, repeats)


def quick_plan() -> Plan:
    """A subset that finishes in well under a minute (a smoke test of every peer kind)."""
    runs = [
        Run("throughput", "flowproto", 64, duration=1.0),
        Run("throughput", "plain", 64, duration=1.0),
        Run("throughput", "flowproto", 64 * KIB, duration=1.0),
        Run("throughput", "plain", 64 * KIB, duration=1.0),
        Run("throughput", "flowproto-single", KIB, "msgpack", duration=1.0),
        Run("throughput", "zmq", KIB, duration=1.0),
    ]
    for name in ("flowproto", "flowproto-small", "unbounded", "drop"):
        runs.append(
            Run("consumer", name, KIB, consumer="slow10", producer_rate=20_000, duration=1.5)
        )
    for slow in (False, True):
        runs.append(Run("streams", "flowproto", KIB, streams=16, slow_stream=slow, duration=1.5))
    return Plan(runs, 1, quick=True)


def select(plan: Plan, groups: Sequence[str] | None, strategies: Sequence[str] | None) -> Plan:
    """Only the runs of the named groups and strategies."""
    runs = [
        r
        for r in plan.runs
        if (not groups or r.group in groups) and (not strategies or r.strategy in strategies)
    ]
    return replace(plan, runs=runs)


# --- running one pair -------------------------------------------------------------------------


def zmq_available() -> bool:
    try:
        import zmq  # noqa: F401
    except ImportError:
        return False
    return True


def peer_args(run: Run, strategy: Strategy) -> list[str]:
    args = [
        "--peer", strategy.peer, "--size", str(run.size), "--codec", run.codec,
        "--streams", str(run.streams), "--api", strategy.api, "--window", strategy.window,
        "--policy", strategy.policy, "--duration", str(run.duration),
        "--timeout", str(run.duration + 30),
    ]  # fmt: skip
    return args


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _last_json(path: Path) -> dict[str, Any] | None:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_pair(run: Run, link: Link | None = None) -> dict[str, Any]:
    """Run one scenario's receiver and sender processes; their results, merged."""
    strategy = STRATEGIES[run.strategy]
    common = peer_args(run, strategy)
    host = link.receiver_host if link else "127.0.0.1"
    rx_args = [*common, "--schedule", json.dumps(run.schedule())]
    if run.slow_stream:
        rx_args += ["--slow-schedule", json.dumps([[0, SLOW_STREAM_RATE]])]
    tx_args = [*common, "--count", str(run.count)]
    if run.producer_rate is not None:
        tx_args += ["--rate", str(run.producer_rate)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    py = [sys.executable, "-m", "benchmarks.peers"]
    hard = run.duration + 45
    record: dict[str, Any] = {"run": asdict(run), "key": run.key, "error": None}
    with tempfile.TemporaryDirectory(prefix="flowproto-bench-") as tmp:
        files = {name: Path(tmp, name) for name in ("rx.out", "rx.err", "tx.out", "tx.err")}
        handles = {name: path.open("wb") for name, path in files.items()}
        rx = subprocess.Popen(
            [*(link.receiver_prefix if link else []), *py, "receiver", "--host", host,
             "--port", "0", *rx_args],
            stdout=handles["rx.out"], stderr=handles["rx.err"], cwd=ROOT, env=env,
            start_new_session=True,
        )  # fmt: skip
        tx: subprocess.Popen[bytes] | None = None
        started = time.monotonic()
        try:
            port = None
            while port is None and time.monotonic() - started < 30 and rx.poll() is None:
                for line in files["rx.err"].read_text(errors="replace").splitlines():
                    if line.startswith("listening "):
                        port = int(line.rsplit(":", 1)[1])
                time.sleep(0.02)
            if port is None:
                raise RuntimeError("the receiver did not start listening")
            tx = subprocess.Popen(
                [*(link.sender_prefix if link else []), *py, "sender", "--host", host,
                 "--port", str(port), *tx_args],
                stdout=handles["tx.out"], stderr=handles["tx.err"], cwd=ROOT, env=env,
                start_new_session=True,
            )  # fmt: skip
            for waited in (tx, rx):
                remaining = hard - (time.monotonic() - started)
                try:
                    waited.wait(timeout=max(1.0, remaining))
                except subprocess.TimeoutExpired:
                    record["error"] = f"killed after {hard:.0f} s"
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for proc in (tx, rx):
                if proc is not None:
                    _kill(proc)
            for h in handles.values():
                h.close()
        record["wall_s"] = round(time.monotonic() - started, 2)
        record["sender"] = _last_json(files["tx.out"])
        record["receiver"] = _last_json(files["rx.out"])
        for side, name in (("sender", "tx.err"), ("receiver", "rx.err")):
            if record[side] is None or (rx.returncode or (tx and tx.returncode)):
                err = files[name].read_text(errors="replace").strip().splitlines()
                tail = [ln for ln in err if not ln.startswith("listening ")][-8:]
                if tail:
                    record.setdefault("stderr", {})[side] = tail
        if record["error"] is None and (record["sender"] is None or record["receiver"] is None):
            record["error"] = "a peer exited without its JSON line"
    derive(record)
    return record


def _window(streams: Sequence[dict[str, Any]]) -> tuple[int, float]:
    """Messages consumed by these streams and the seconds from first to last."""
    consumed = sum(s["consumed"] for s in streams)
    firsts = [s["first_s"] for s in streams if s["first_s"] is not None]
    lasts = [s["last_s"] for s in streams if s["last_s"] is not None]
    if not firsts or not lasts:
        return consumed, 0.0
    return consumed, max(lasts) - min(firsts)


def derive(record: dict[str, Any]) -> None:
    """Add the figures that need both sides: throughput, loss, CPU per message."""
    run = record["run"]
    tx, rx = record["sender"], record["receiver"]
    d: dict[str, Any] = {}
    record["derived"] = d
    if tx is None or rx is None:
        return
    size = run["size"]
    streams = rx["streams"]
    consumed, seconds = _window(streams)
    msgs = consumed / seconds if seconds > 0 else 0.0
    d["msgs_per_s"] = round(msgs, 1)
    d["mb_per_s"] = round(msgs * size / 1e6, 2)
    if run["group"] == "streams":
        others, others_s = _window(streams[1:])
        d["others_msgs_per_s"] = round(others / others_s, 1) if others_s > 0 else 0.0
        slow, slow_s = _window(streams[:1])
        d["stream0_msgs_per_s"] = round(slow / slow_s, 1) if slow_s > 0 else 0.0
    sent = tx["sent"]
    d["sent"] = sent
    d["lost"] = sent - rx["accounted"]
    d["dropped"] = rx["dropped"]
    d["stream_problems"] = stream_problems(streams, tx["sent_per_stream"])
    d["checksum_ok"] = not d["stream_problems"]
    total = max(1, sent)
    d["tx_cpu_s_per_m"] = round(tx["cpu_s"] / total * 1e6, 3)
    d["rx_cpu_s_per_m"] = round(rx["cpu_s"] / max(1, rx["accounted"]) * 1e6, 3)
    d["rx_peak_rss_mib"] = round(rx["peak_rss_kib"] / 1024, 1)
    d["tx_peak_rss_mib"] = round(tx["peak_rss_kib"] / 1024, 1)


def stream_problems(streams: Sequence[dict[str, Any]], sent: Sequence[int]) -> list[str]:
    """What each receiving stream's checks found wrong, against what was sent on it.

    A stream is right when its sequence ran exactly ``0 .. n-1`` for the ``n`` messages
    sent on it (in order, none missing or repeated; a drop strategy's gaps are exactly
    what it dropped), every payload was what the sender wrote, and every message was
    accounted for once. For flowproto it must also have held at most the largest window
    it granted (both peak and window exact, see ``benchmarks/peers.py``).
    """
    problems = []
    for i, s in enumerate(streams):
        n = sent[i] if i < len(sent) else 0
        name = f"stream {i}"
        for text in s["sequence_problems"]:
            problems.append(f"{name}: sequence: {text}")
        more = s["sequence_problem_count"] - len(s["sequence_problems"])
        if more > 0:
            problems.append(f"{name}: sequence: {more} more problems")
        if s["sequence_end"] != n or s["accounted"] != n:
            problems.append(
                f"{name}: sent {n}, the sequence ran 0..{s['sequence_end'] - 1}, "
                f"{s['accounted']} messages accounted for"
            )
        if s["bad_payloads"]:
            problems.append(f"{name}: {s['bad_payloads']} payloads not what the sender wrote")
        if "largest_window_messages" in s:
            if s["unmatched_grants"]:
                problems.append(
                    f"{name}: {s['unmatched_grants']} CREDIT frames matched no receive call: "
                    "the largest window granted is unknown"
                )
            for unit in ("messages", "bytes"):
                held, window = s[f"peak_buffered_{unit}"], s[f"largest_window_{unit}"]
                if held > window:
                    problems.append(f"{name}: held {held} {unit} > largest window granted {window}")
    return problems


def invariant_problems(record: dict[str, Any]) -> list[str]:
    """What a run broke of the invariants the smoke test checks (never timings)."""
    problems = []
    key = record["key"]
    if record["error"]:
        problems.append(f"{key}: {record['error']} {record.get('stderr', '')}")
        return problems
    d = record["derived"]
    rx = record["receiver"]
    strategy = STRATEGIES[record["run"]["strategy"]]
    if rx.get("error"):
        problems.append(f"{key}: receiver: {rx['error']}")
    if d["lost"] != 0:
        problems.append(
            f"{key}: messages not accounted for: sent {d['sent']}, receiver accounted "
            f"{rx['accounted']} (consumed {rx['consumed']}, drained {rx['drained']}, "
            f"dropped {rx['dropped']})"
        )
    problems += [f"{key}: {p}" for p in d["stream_problems"]]
    if strategy.policy == "drop" and strategy.peer == "framing":
        if rx["dropped"] + rx["consumed"] + rx["drained"] != d["sent"]:
            problems.append(f"{key}: dropped + received != sent")
    elif rx["dropped"]:
        problems.append(f"{key}: {rx['dropped']} messages dropped by a strategy that must not drop")
    if strategy.peer == "flowproto" and not all("largest_window_bytes" in s for s in rx["streams"]):
        problems.append(f"{key}: a flowproto stream without its peak and largest window")
    return problems


# --- running a plan ----------------------------------------------------------------------------


def run_plan(
    plan: Plan,
    link: Link | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every scenario of the plan in order; zmq runs are skipped if pyzmq is missing."""
    records = []
    have_zmq = zmq_available()
    if not have_zmq and any(r.strategy == "zmq" for r in plan.runs) and progress:
        progress("pyzmq is not installed: skipping the zmq runs (pip install -e '.[bench]')")
    for i, run in enumerate(plan.runs, 1):
        if run.strategy == "zmq" and not have_zmq:
            continue
        record = run_pair(run, link)
        records.append(record)
        if progress:
            d = record["derived"]
            note = record["error"] or (
                f"{d.get('msgs_per_s', 0):>12,.0f} msg/s {d.get('mb_per_s', 0):>9,.1f} MB/s"
                f"  lost {d.get('lost')} dropped {d.get('dropped')}"
            )
            progress(f"[{i}/{len(plan.runs)}] {run.key}: {note}")
    return records


# --- summaries ----------------------------------------------------------------------------------


def median_of(records: Iterable[dict[str, Any]], field_name: str) -> float | None:
    values = [r["derived"][field_name] for r in records if r["derived"].get(field_name) is not None]
    return statistics.median(values) if values else None


def best_of(records: Iterable[dict[str, Any]], field_name: str) -> float | None:
    """The highest value over repeats: the run other tenants of the machine disturbed least."""
    values = [r["derived"][field_name] for r in records if r["derived"].get(field_name) is not None]
    return max(values) if values else None


def find(records: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """Records whose run has every given field value."""
    return [
        r for r in records if not r["error"] and all(r["run"].get(k) == v for k, v in match.items())
    ]


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return a / b


@dataclass(frozen=True)
class Paired:
    """Two scenarios run as interleaved repeats (A1 B1 A2 B2 ...), compared pair by pair."""

    ratios: list[float]  # A_r / B_r for each repeat r that both completed
    a_median: float | None
    b_median: float | None
    a_best: float | None
    b_best: float | None

    @property
    def ratio(self) -> float | None:
        """The headline: the median of the per-pair ratios."""
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def best_ratio(self) -> float | None:
        """Best-of A over best-of B (shown beside the median, labelled)."""
        return _ratio(self.a_best, self.b_best)


def paired(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], unit: str) -> Paired:
    """Pair the runs of two scenarios by repeat number and compare them pair by pair.

    Each repeat of A ran right next to the same repeat of B (:func:`full_plan` orders
    them so), so the two saw about the same load from other tenants of the machine:
    the ratio of a pair cancels most of it, and the median of the pairs' ratios drops
    the pairs that a burst of load hit on one side only.
    """
    by_a = {r["run"]["repeat"]: r["derived"].get(unit) for r in a}
    by_b = {r["run"]["repeat"]: r["derived"].get(unit) for r in b}
    ratios = [by_a[k] / by_b[k] for k in sorted(by_a.keys() & by_b.keys()) if by_a[k] and by_b[k]]
    return Paired(ratios, median_of(a, unit), median_of(b, unit), best_of(a, unit),
                  best_of(b, unit))  # fmt: skip


def targets(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The speed bar of issue #4, each with its measured figures and whether it was met.

    Throughput targets (and the 16-stream one) compare two scenarios run as interleaved
    repeats: the ratio of each pair of runs of the same repeat (flowproto's repeat r
    against plain framing's repeat r), and the target's ratio is the **median of those
    per-pair ratios** (:func:`paired`). The medians of each side's runs and the ratio of
    their best-of are given beside it, labelled; they decide nothing. The consumer
    targets compare one run with the consumer's nominal rate, and the memory target
    one run's exact peak buffer with the largest window its receiver granted.
    """
    out: list[dict[str, Any]] = []

    def thr(strategy: str, size: int, codec: str = "raw") -> list[dict[str, Any]]:
        return find(records, group="throughput", strategy=strategy, size=size, codec=codec)

    def detail(p: Paired, names: tuple[str, str], unit: str, digits: int = 0) -> str:
        return (
            f"paired median of {len(p.ratios)}: {p.ratio or 0:.2f}x; medians "
            f"{names[0]} {_fmt(p.a_median, digits)} vs {names[1]} {_fmt(p.b_median, digits)} "
            f"{unit}; best-of {_fmt(p.a_best, digits)} vs {_fmt(p.b_best, digits)} "
            f"({_fmt(p.best_ratio, 2)}x)"
        )

    def add(name: str, goal: float, r: float | None, text: str, within: float | None = None,
            best: float | None = None) -> None:  # fmt: skip
        # A goal "within x" means |ratio - 1| <= x; otherwise the ratio must reach the goal.
        met = None if r is None else (abs(r - 1) <= within if within is not None else r >= goal)
        out.append(
            {
                "target": name,
                "goal": goal if within is None else f"1 ± {within}",
                "ratio": None if r is None else round(r, 3),
                "best_of_ratio": None if best is None else round(best, 3),
                "met": met,
                "detail": text,
            }
        )

    p = paired(thr("flowproto", 64 * KIB), thr("plain", 64 * KIB), "mb_per_s")
    add(
        "64 KiB messages, unlimited consumer: flowproto ≥ 0.8x coalesced plain framing",
        0.8, p.ratio, detail(p, ("flowproto", "plain"), "MB/s"), best=p.best_ratio,
    )  # fmt: skip
    for size in (64, KIB):
        for codec in ("raw", "msgpack"):
            p = paired(thr("flowproto", size, codec), thr("plain", size, codec), "msgs_per_s")
            add(
                f"{SIZE_NAMES[size]} {codec}, batch path: flowproto ≥ 0.5x plain framing ({codec})",
                0.5, p.ratio, detail(p, ("flowproto", "plain"), "msg/s"), best=p.best_ratio,
            )  # fmt: skip
    for size in (64, KIB):
        p = paired(thr("flowproto-single", size), thr("plain-single", size), "msgs_per_s")
        add(
            f"{SIZE_NAMES[size]}, one send()/receive() per message: flowproto ≥ 2x plain "
            "framing with one send_all per message",
            2.0, p.ratio, detail(p, ("flowproto", "plain"), "msg/s"), best=p.best_ratio,
        )  # fmt: skip
    for size in (KIB, 64 * KIB):
        for consumer in ("slow10", "slow100"):
            recs = find(records, group="consumer", strategy="flowproto", size=size,
                        consumer=consumer)  # fmt: skip
            if not recs:
                continue
            run = recs[0]
            nominal = Run(**run["run"]).nominal_rate()
            got = run["derived"]["msgs_per_s"]
            add(
                f"{SIZE_NAMES[size]}, consumer {CONSUMER_NAMES[consumer]}: flowproto's "
                "throughput within 5% of the consumer's rate",
                0.95, _ratio(got, nominal),
                f"{_fmt(got, 1)} msg/s against {_fmt(nominal, 1)} msg/s; "
                f"p99 {_fmt(run['receiver']['latency']['p99_ms'], 1)} ms",
                within=0.05,
            )  # fmt: skip
            by = {
                r["run"]["strategy"]: r
                for r in find(records, group="consumer", size=size, consumer=consumer)
            }
            rx = run["receiver"]
            growth = rss_growth_mib(run)
            unbounded = by.get("unbounded")
            u_growth = rss_growth_mib(unbounded) if unbounded else None
            dropped = by["drop"]["derived"]["dropped"] if "drop" in by else None
            held = (rx["peak_buffered_bytes"] or 0) / rx["peak_window_bytes"]
            ok = (
                held <= 1
                and growth is not None
                and growth <= 1.0
                and run["derived"]["lost"] == 0
                and run["derived"]["dropped"] == 0
                and (u_growth is None or u_growth > 10 * max(growth, 0.1))
                and (dropped is None or dropped > 0)
            )
            out.append(
                {
                    "target": f"{SIZE_NAMES[size]}, consumer {CONSUMER_NAMES[consumer]}: "
                    "flowproto's receiver memory flat and within its window, zero loss, "
                    "while unbounded buffering grows and the drop strategy loses",
                    "goal": "≤ 1 (peak held / largest window granted)",
                    "ratio": round(held, 3),
                    "best_of_ratio": None,
                    "met": ok,
                    "detail": f"flowproto held at most "
                    f"{_fmt((rx['peak_buffered_bytes'] or 0) / KIB)} KiB of a largest granted "
                    f"window of {_fmt(rx['peak_window_bytes'] / KIB)} KiB, RSS "
                    f"{_fmt(growth, 1)} MiB over the second half, lost "
                    f"{run['derived']['lost']}, dropped {run['derived']['dropped']}; unbounded "
                    f"RSS {_fmt(u_growth, 1)} MiB over the second half; drop lost "
                    f"{_fmt(dropped)}",
                }
            )
    p = paired(
        find(records, group="streams", strategy="flowproto", slow_stream=True),
        find(records, group="streams", strategy="flowproto", slow_stream=False),
        "others_msgs_per_s",
    )
    add(
        "16 streams, stream 0 slow: the other 15 keep ≥ 90% of their throughput",
        0.9, p.ratio, detail(p, ("one slow", "none slow"), "msg/s"), best=p.best_ratio,
    )  # fmt: skip
    return out


def rss_growth_mib(record: dict[str, Any]) -> float | None:
    """Receiver RSS growth (MiB) over the second half of the paced phase: flat or not."""
    duration = record["run"]["duration"]
    series = [p for p in record["receiver"]["memory_series"] if p[0] <= duration]
    if len(series) < 4:
        return None
    middle = next(p for p in series if p[0] >= duration / 2)
    growth: float = (series[-1][1] - middle[1]) / KIB
    return round(growth, 1)


def memory_verdicts(records: Sequence[dict[str, Any]]) -> list[str]:
    """Plain-words checks of the slow-consumer memory claims, from the same run."""
    lines = []
    for size in (KIB, 64 * KIB):
        for consumer in ("slow10", "slow100"):
            by = {
                r["run"]["strategy"]: r
                for r in find(records, group="consumer", size=size, consumer=consumer)
            }
            parts = []
            for name in ("flowproto", "flowproto-small", "unbounded", "drop", "plain"):
                if name not in by:
                    continue
                rx = by[name]["receiver"]
                text = (
                    f"`{name}` buffered at most "
                    f"{_fmt((rx['peak_buffered_bytes'] or 0) / KIB, 0)} KiB"
                )
                if name.startswith("flowproto"):
                    text += f" (largest window {_fmt(rx['peak_window_bytes'] / KIB, 0)} KiB)"
                growth = rss_growth_mib(by[name])
                text += f", peak RSS {_fmt(rx['peak_rss_kib'] / KIB, 1)} MiB"
                if growth is not None:
                    text += f" ({growth:+.1f} MiB over the second half)"
                if by[name]["derived"]["dropped"]:
                    text += f", dropped {by[name]['derived']['dropped']:,} messages"
                parts.append(text)
            if parts:
                lines.append(f"{SIZE_NAMES[size]}, {CONSUMER_NAMES[consumer]}: " + "; ".join(parts))
    return lines


def markdown(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results as markdown tables."""
    out = [f"# flowproto socket benchmarks ({meta['started']})", ""]
    out.append(f"Command: `{meta['command']}`  ")
    out.append(f"Machine: {meta['machine']}" + (f"; link: {meta['link']}" if meta["link"] else ""))
    out.append("")
    thr = [r for r in records if r["run"]["group"] == "throughput"]
    if thr:
        out += [
            "## Throughput, unlimited consumer (median of repeats)",
            "",
            "msg/s (MB/s), one stream, unpaced producer; CPU in seconds per million messages "
            "(sender / receiver).",
            "",
        ]
        sizes = sorted({r["run"]["size"] for r in thr})
        header = "| strategy | codec | " + " | ".join(SIZE_NAMES[s] for s in sizes) + " |"
        out += [header, "|---|---|" + "---:|" * len(sizes)]
        for codec in ("raw", "msgpack"):
            for name in STRATEGIES:
                cells = []
                for size in sizes:
                    recs = find(thr, strategy=name, size=size, codec=codec)
                    if not recs:
                        cells.append("")
                        continue
                    m, mb = median_of(recs, "msgs_per_s"), median_of(recs, "mb_per_s")
                    ctx, crx = median_of(recs, "tx_cpu_s_per_m"), median_of(recs, "rx_cpu_s_per_m")
                    cells.append(f"{_fmt(m)} ({_fmt(mb, 1)}); CPU {_fmt(ctx, 1)} / {_fmt(crx, 1)}")
                if any(cells):
                    out.append(f"| {name} | {codec} | " + " | ".join(cells) + " |")
        out.append("")
    con = [r for r in records if r["run"]["group"] == "consumer"]
    for size in sorted({r["run"]["size"] for r in con}):
        rate = PRODUCER_RATE[size]
        out += [
            f"## Consumer speeds, {SIZE_NAMES[size]} messages, producer paced at {rate:,} msg/s",
            "",
            "Per cell: consumed msg/s · latency p99 · receiver peak RSS · peak buffered · "
            "lost/dropped.",
            "",
        ]
        consumers = [c for c in CONSUMERS if any(r["run"]["consumer"] == c for r in con)]
        out.append("| strategy | " + " | ".join(CONSUMER_NAMES[c] for c in consumers) + " |")
        out.append("|---|" + "---|" * len(consumers))
        for name in STRATEGIES:
            cells = []
            for c in consumers:
                recs = find(con, strategy=name, size=size, consumer=c)
                if not recs:
                    cells.append("")
                    continue
                r = recs[0]
                d, rx = r["derived"], r["receiver"]
                buffered = (
                    "–"
                    if rx["peak_buffered_bytes"] is None
                    else f"{rx['peak_buffered_bytes'] / KIB / KIB:,.1f} MiB"
                )
                cells.append(
                    f"{_fmt(d['msgs_per_s'])} · {_fmt(rx['latency']['p99_ms'])} ms · "
                    f"{d['rx_peak_rss_mib']:,.0f} MiB · {buffered} · {d['lost']}/{d['dropped']:,}"
                )
            if any(cells):
                out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    st = [r for r in records if r["run"]["group"] == "streams"]
    if st:
        out += [
            f"## 16 streams on one connection, 1 KiB messages (stream 0 slow: "
            f"{SLOW_STREAM_RATE} msg/s)",
            "",
            "| strategy | other 15, none slow (msg/s) | other 15, stream 0 slow | ratio | "
            "stream 0 (msg/s) | receiver peak RSS | lost/dropped |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in STRATEGIES:
            base = find(st, strategy=name, slow_stream=False)
            slow = find(st, strategy=name, slow_stream=True)
            if not base or not slow:
                continue
            b = median_of(base, "others_msgs_per_s")
            sl = median_of(slow, "others_msgs_per_s")
            sd = slow[0]["derived"]
            out.append(
                f"| {name} | {_fmt(b)} | {_fmt(sl)} | {_fmt(_ratio(sl, b), 2)} | "
                f"{_fmt(sd['stream0_msgs_per_s'], 1)} | {sd['rx_peak_rss_mib']:,.0f} MiB | "
                f"{sd['lost']}/{sd['dropped']:,} |"
            )
        out.append("")
    tg = [] if meta.get("quick") else targets(records)  # --quick judges no timing
    if any(t["ratio"] is not None for t in tg):
        out += [
            "## Targets (ratios measured in this run)",
            "",
            "Throughput targets pair each repeat of flowproto with the same repeat of the "
            "strategy it is compared with (run back to back), and the ratio is the median of "
            "those per-pair ratios. Beside it, labelled: each side's median and the ratio of "
            "their best-of (which decides nothing).",
            "",
            "| target | measured | ratio | met |",
            "|---|---|---:|---|",
        ]
        for t in tg:
            if t["ratio"] is None:
                continue
            met = "met" if t["met"] else "**missed**"
            out.append(f"| {t['target']} | {t['detail']} | {t['ratio']:.2f} | {met} |")
        out.append("")
    mv = memory_verdicts(records)
    if mv:
        out += ["## Memory under a slow consumer", ""] + [f"- {line}" for line in mv] + [""]
    errors = [r for r in records if r["error"]]
    if errors:
        out += ["## Failed runs", ""] + [f"- {r['key']}: {r['error']}" for r in errors] + [""]
    out += ["## Strategies", ""]
    out += [f"- `{s.name}`: {s.description}" for s in STRATEGIES.values()]
    out.append("")
    return "\n".join(out)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_results(
    out_dir: Path,
    records: list[dict[str, Any]],
    meta: dict[str, Any],
    plots: bool = True,
    say: Callable[[str], None] = print,
    json_too: bool = True,
) -> None:
    """results.json, results.md and (with matplotlib) the PNG plots, in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if json_too:
        tg = [] if meta.get("quick") else targets(records)
        payload = {"meta": meta, "targets": tg, "runs": records}
        (out_dir / "results.json").write_text(json.dumps(payload, indent=1))
    (out_dir / "results.md").write_text(markdown(records, meta))
    if plots:
        try:
            from . import plots as plotting
        except ImportError as exc:  # matplotlib is an optional extra
            say(f"plots skipped: {exc} (pip install -e '.[bench]')")
        else:
            for path in plotting.all_plots(records, out_dir):
                say(f"wrote {path}")
