"""What a benchmark run's records say: medians, paired ratios, targets, tables, files.

:func:`paired` compares two scenarios run as interleaved repeats, pair by pair;
:func:`targets` holds the speed bar (issue #4's, stated against ``raw`` by issue #13);
:func:`markdown` renders the tables;
:func:`write_results` writes ``results.json``, ``results.md`` and (with matplotlib, the
``bench`` extra) the plots of :mod:`flowproto.bench.plots`.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plan import (
    CONSUMER_NAMES,
    CONSUMERS,
    KIB,
    PRODUCER_RATE,
    SIZE_NAMES,
    SLOW_STREAM_RATE,
    STRATEGIES,
    Run,
)

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
    out = _throughput_targets(records)
    for name in ("flowproto", "flowproto-asyncio"):
        for size in (KIB, 64 * KIB):
            for consumer in ("slow10", "slow100"):
                recs = find(records, group="consumer", strategy=name, size=size,
                            consumer=consumer)  # fmt: skip
                if recs:
                    out.append(_rate_target(recs[0], size, consumer))
                    out.append(_memory_target(records, recs[0], size, consumer))
    p = paired(
        find(records, group="streams", strategy="flowproto", slow_stream=True),
        find(records, group="streams", strategy="flowproto", slow_stream=False),
        "others_msgs_per_s",
    )
    out.append(
        _target(
            "16 streams, stream 0 slow: the other 15 keep ≥ 90% of their throughput",
            0.9, p.ratio, _detail(p, ("one slow", "none slow"), "msg/s"), best=p.best_ratio,
        )
    )  # fmt: skip
    from .report_scenarios import scenario_targets  # it builds on this module

    return out + scenario_targets(records)


def _target(name: str, goal: float, r: float | None, text: str, within: float | None = None,
            best: float | None = None, at_most: bool = False) -> dict[str, Any]:  # fmt: skip
    """One target's entry. A goal "within x" means |ratio - 1| <= x; ``at_most`` means the
    ratio must not exceed the goal (latency, memory, CPU); otherwise it must reach it."""
    if r is None:
        met = None
    elif within is not None:
        met = abs(r - 1) <= within
    else:
        met = r <= goal if at_most else r >= goal
    shown: float | str = goal if within is None else f"1 ± {within}"
    return {
        "target": name,
        "goal": f"≤ {goal}" if at_most else shown,
        "ratio": None if r is None else round(r, 3),
        "best_of_ratio": None if best is None else round(best, 3),
        "met": met,
        "detail": text,
    }


def _detail(p: Paired, names: tuple[str, str], unit: str, digits: int = 0) -> str:
    return (
        f"paired median of {len(p.ratios)}: {p.ratio or 0:.2f}x; medians "
        f"{names[0]} {_fmt(p.a_median, digits)} vs {names[1]} {_fmt(p.b_median, digits)} "
        f"{unit}; best-of {_fmt(p.a_best, digits)} vs {_fmt(p.b_best, digits)} "
        f"({_fmt(p.best_ratio, 2)}x)"
    )


#: Issue #13's throughput bar against ``raw`` (the minimal raw-Trio program), by size:
#: (goal, the unit compared).
RAW_TARGETS = {
    64: (0.7, "msgs_per_s"),
    KIB: (0.8, "msgs_per_s"),
    64 * KIB: (0.9, "mb_per_s"),
    KIB * KIB: (0.9, "mb_per_s"),
}


def _throughput_targets(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """flowproto against ``raw`` (issue #13), unpaced, paired by repeat.

    Against ``raw`` flowproto runs raw's workload (``flowproto-const``: one constant
    payload, only counted), so the ratio is what flowproto costs; beside it, not a
    target, the ``flowproto`` strategy, which numbers, timestamps and checks every
    message. The msgpack rows keep issue #4's bar against ``plain`` (the checking
    comparator): ``raw`` has no codec. The one-call-per-message rows compare with
    ``plain-single``, one ``send_all`` per message.
    """

    def thr(strategy: str, size: int, codec: str = "raw") -> list[dict[str, Any]]:
        return find(records, group="throughput", strategy=strategy, size=size, codec=codec)

    out = []
    for size, (goal, unit) in RAW_TARGETS.items():
        p = paired(thr("flowproto-const", size), thr("raw", size), unit)
        shown = "MB/s" if unit == "mb_per_s" else "msg/s"
        detail = _detail(p, ("flowproto", "raw"), shown)
        checked = paired(thr("flowproto", size), thr("raw", size), unit)
        if checked.ratio is not None:
            detail += f"; with every message checked {checked.ratio:.2f}x"
        out.append(
            _target(
                f"{SIZE_NAMES[size]} raw, batch path, raw's workload: flowproto ≥ {goal}x "
                "raw Trio",
                goal, p.ratio, detail, best=p.best_ratio,
            )
        )  # fmt: skip
    for size in (64, KIB):
        p = paired(thr("flowproto", size, "msgpack"), thr("plain", size, "msgpack"), "msgs_per_s")
        out.append(
            _target(
                f"{SIZE_NAMES[size]} msgpack, batch path: flowproto ≥ 0.5x plain framing "
                "(msgpack; plain is the checking comparator, raw has no codec)",
                0.5, p.ratio, _detail(p, ("flowproto", "plain"), "msg/s"), best=p.best_ratio,
            )
        )  # fmt: skip
    out += _asyncio_throughput_targets(thr)
    for size in (64, KIB):
        p = paired(thr("flowproto-single", size), thr("plain-single", size), "msgs_per_s")
        out.append(
            _target(
                f"{SIZE_NAMES[size]}, one send()/receive() per message: flowproto ≥ 2x plain "
                "framing with one send_all per message",
                2.0, p.ratio, _detail(p, ("flowproto", "plain"), "msg/s"), best=p.best_ratio,
            )
        )  # fmt: skip
    return out


#: Issue #15's throughput bar for flowproto.asyncio against ``raw-asyncio``, by size.
ASYNCIO_TARGETS = {
    64: (0.6, "msgs_per_s"),
    KIB: (0.6, "msgs_per_s"),
    64 * KIB: (0.8, "mb_per_s"),
}


def _asyncio_throughput_targets(
    thr: Callable[..., list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """flowproto-asyncio against raw-asyncio (issue #15), on each event loop, paired.

    The target compares the ``flowproto-asyncio`` strategy (every message numbered,
    timestamped and checked) with ``raw-asyncio`` (counted only), as the issue states
    it; beside it, ``flowproto-asyncio-const`` (raw's workload) against the same runs.
    """
    out = []
    for suffix, where in (("", ""), ("-uvloop", ", both on uvloop")):
        raw = f"raw-asyncio{suffix}"
        for size, (goal, unit) in ASYNCIO_TARGETS.items():
            p = paired(thr(f"flowproto-asyncio{suffix}", size), thr(raw, size), unit)
            if p.ratio is None:
                continue
            shown = "MB/s" if unit == "mb_per_s" else "msg/s"
            detail = _detail(p, ("flowproto-asyncio", raw), shown)
            const = paired(thr(f"flowproto-asyncio-const{suffix}", size), thr(raw, size), unit)
            if const.ratio is not None:
                detail += f"; with raw's workload (flowproto-asyncio-const) {const.ratio:.2f}x"
            out.append(
                _target(
                    f"{SIZE_NAMES[size]}, asyncio{where}: flowproto-asyncio ≥ {goal}x "
                    f"{raw} (issue #15)",
                    goal, p.ratio, detail, best=p.best_ratio,
                )
            )  # fmt: skip
    return out


def _rate_target(run: dict[str, Any], size: int, consumer: str) -> dict[str, Any]:
    """flowproto's throughput against a slow consumer's nominal rate."""
    nominal = Run(**run["run"]).nominal_rate()
    got = run["derived"]["msgs_per_s"]
    name = run["run"]["strategy"]
    return _target(
        f"{SIZE_NAMES[size]}, consumer {CONSUMER_NAMES[consumer]}: {name}'s "
        "throughput within 5% of the consumer's rate",
        0.95, _ratio(got, nominal),
        f"{_fmt(got, 1)} msg/s against {_fmt(nominal, 1)} msg/s; "
        f"p99 {_fmt(run['receiver']['latency']['p99_ms'], 1)} ms",
        within=0.05,
    )  # fmt: skip


def _memory_target(
    records: Sequence[dict[str, Any]], run: dict[str, Any], size: int, consumer: str
) -> dict[str, Any]:
    """flowproto's receiver within its window and flat, where the others grow or lose."""
    by = {
        r["run"]["strategy"]: r
        for r in find(records, group="consumer", size=size, consumer=consumer)
    }
    rx = run["receiver"]
    name = run["run"]["strategy"]
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
    return {
        "target": f"{SIZE_NAMES[size]}, consumer {CONSUMER_NAMES[consumer]}: "
        f"{name}'s receiver memory flat and within its window, zero loss, "
        "while unbounded buffering grows and the drop strategy loses (where they ran)",
        "goal": "≤ 1 (peak held / largest window granted)",
        "ratio": round(held, 3),
        "best_of_ratio": None,
        "met": ok,
        "detail": f"{name} held at most "
        f"{_fmt((rx['peak_buffered_bytes'] or 0) / KIB)} KiB of a largest granted "
        f"window of {_fmt(rx['peak_window_bytes'] / KIB)} KiB, RSS "
        f"{_fmt(growth, 1)} MiB over the second half, lost "
        f"{run['derived']['lost']}, dropped {run['derived']['dropped']}; unbounded "
        f"RSS {_fmt(u_growth, 1)} MiB over the second half; drop lost "
        f"{_fmt(dropped)}",
    }


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
            for name in ("flowproto", "flowproto-small", "unbounded", "drop", "plain",
                         "flowproto-asyncio"):  # fmt: skip
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
    from .report_scenarios import scenario_markdown  # it builds on this module

    out += _throughput_table(records) + _consumer_tables(records) + _streams_table(records)
    out += scenario_markdown(records)
    tg = [] if meta.get("quick") else targets(records)  # --quick judges no timing
    out += _targets_table(tg)
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


def _throughput_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Throughput, unlimited consumer: each strategy's medians."""
    out: list[str] = []
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
    return out


def _consumer_tables(records: Sequence[dict[str, Any]]) -> list[str]:
    """Consumer speeds, one table per message size."""
    out: list[str] = []
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
    return out


def _streams_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """16 streams, with and without a slow stream 0 (medians)."""
    out: list[str] = []
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
    return out


def _targets_table(tg: list[dict[str, Any]]) -> list[str]:
    """The speed bar, with the paired ratios that decide it."""
    out: list[str] = []
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
    return out


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
            say(f"plots skipped: {exc} (pip install 'flowproto[bench]')")
        else:
            for path in plotting.all_plots(records, out_dir):
                say(f"wrote {path}")
