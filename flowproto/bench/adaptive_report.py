"""The adaptive-credit benchmark's summary, table and plots (matplotlib, optional)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .adaptive_peers import KIB, MIB, parse_schedule, rate_at


def series(result: dict[str, Any], key: str | None = None) -> list[list[Any]]:
    """[t, bytes, messages, window_bytes, window_messages, reason, depth, rate] per sample."""
    rows = []
    for s in result["receiver"]["samples"]:
        streams = s["streams"]
        k = key or next(iter(streams), None)
        if k in streams:
            rows.append([s["t"], *streams[k]])
    return rows


def effective_window(row: list[Any], size: int = KIB) -> int:
    """The messages a window lets in: the least of its message and byte limits."""
    return int(min(row[4], row[3] // size))


def throughput_series(rows: list[list[Any]], step: float = 0.5) -> list[tuple[float, float]]:
    out = []
    last = None
    for row in rows:
        if last is None or row[0] - last[0] >= step:
            if last is not None:
                out.append((row[0], (row[1] - last[1]) / (row[0] - last[0])))
            last = row
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the README quotes, per scenario."""
    s: dict[str, Any] = {}
    for name, summary in SUMMARIES.items():
        if name in results:
            s.update(summary(results[name]))
    return s


def _summary_long_link(result: dict[str, Any]) -> dict[str, Any]:
    """Throughput against the relay's capacity, per RTT and window kind."""
    s: dict[str, Any] = {}
    for r in result["runs"]:
        rows = series(r)
        tp = throughput_series(rows, 0.25)
        cap = r["capacity_bytes_per_s"]
        first = next((row[0] for row in rows if row[1] > 0), 0.0)  # the first consumption
        reach = next((t - first for t, v in tp if v >= 0.9 * cap), None)
        steady = [v for t, v in tp if t >= tp[-1][0] - 3] if tp else []
        name = f"long_link_{int(r['rtt'] * 1000)}ms_{'tuned' if r['autotune'] else 'static'}"
        s[name] = {
            "capacity_mb_s": round(cap / 1e6, 2),
            "steady_mb_s": round(sum(steady) / len(steady) / 1e6, 2) if steady else None,
            "steady_share_of_capacity": round(sum(steady) / len(steady) / cap, 3)
            if steady
            else None,
            "seconds_to_90_percent": round(reach, 2) if reach is not None else None,
            "window_over_rtt_mb_s": round(64 * KIB / r["rtt"] / 1e6, 2),
            "final_window_bytes": series(r)[-1][3] if series(r) else None,
        }
    return s


def _summary_slow_consumer(result: dict[str, Any]) -> dict[str, Any]:
    """Latency and consumed rate, auto-tuned against a static window."""
    s: dict[str, Any] = {}
    for r in result["runs"]:
        st = next(iter(r["receiver"]["streams"].values()))
        name = f"slow_consumer_{'tuned' if r['autotune'] else 'static'}"
        rows = series(r)
        first = next((row[0] for row in rows if row[2] > 0), 0.0)
        # Consumed per second while the sender was sending (after a 1 s start), not
        # counting the drain after it stopped.
        span = [row for row in rows if first + 1 <= row[0] <= first + r["duration"] - 0.5]
        rate = (span[-1][2] - span[0][2]) / (span[-1][0] - span[0][0]) if span else None
        s[name] = {
            "latency_ms": st["latency_ms"],
            "latency_after_warmup_ms": st["latency_after_warmup_ms"],
            "consumed_msgs_per_s": round(rate, 1) if rate else None,
            "final_window_messages": effective_window(rows[-1]) if rows else None,
        }
    return s


def _summary_speed_change(r: dict[str, Any]) -> dict[str, Any]:
    """How soon the window follows the consumer's new rate."""
    s: dict[str, Any] = {}
    rows = series(r)
    phase = r["phase"]
    rtt = min((x["rtt_min"] for x in r["receiver"]["samples"] if x["rtt_min"]), default=0)
    follow = []
    for i, rate in enumerate((500, 5000)):
        start = phase * (i + 1)
        target = rate * (rtt + 0.1)
        hit = next(
            (row[0] - start for row in rows
             if row[0] >= start and abs(effective_window(row) - target) <= 0.25 * target),
            None,
        )  # fmt: skip
        follow.append({"to_rate": rate, "target_messages": round(target), "seconds": hit})
    s["speed_change"] = {"follow": follow}
    return s


def _summary_budget(r: dict[str, Any]) -> dict[str, Any]:
    """Committed credit against the budget, and each consumer's share."""
    s: dict[str, Any] = {}
    b = r["receiver"]["budget"]
    groups: dict[str, list[int]] = {}
    for v in r["receiver"]["streams"].values():
        groups.setdefault(v["consumer"], []).append(v["messages"])
    s["budget"] = {
        "capacity": b["capacity"],
        "peak_committed": b["peak"],
        "connections": r["connections"],
        "messages": sum(v["messages"] for v in r["receiver"]["streams"].values()),
        "mean_msgs_per_s_by_consumer": {
            k: round(sum(v) / len(v) / r["duration"]) for k, v in sorted(groups.items())
        },
    }
    return s


SUMMARIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "long_link": _summary_long_link,
    "slow_consumer": _summary_slow_consumer,
    "speed_change": _summary_speed_change,
    "budget": _summary_budget,
}


def markdown(summary: dict[str, Any]) -> str:
    lines = ["# Adaptive credit (python -m flowproto.bench.adaptive)", ""]
    for name, values in summary.items():
        lines.append(f"- **{name}**: " + json.dumps(values))
    return "\n".join(lines) + "\n"


# --- plots (matplotlib, optional) ------------------------------------------------------------


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per scenario in ``results`` (none, and a note, without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return []
    written = []
    for name, plot in PLOTS.items():
        if name in results:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            plot(ax, results[name])
            ax.legend()
            written.append(save(fig, out / f"adaptive_{name}.png"))
    return written


def _plot_long_link(ax: Any, result: dict[str, Any]) -> None:
    for r in result["runs"]:
        tp = throughput_series(series(r), 0.25)
        style = "-" if r["autotune"] else "--"
        kind = "auto-tuned" if r["autotune"] else "static 64 KiB"
        label = f"{int(r['rtt'] * 1000)} ms RTT, {kind}"
        ax.plot([t for t, _ in tp], [v / 1e6 for _, v in tp], style, label=label)
    caps = {r["rtt"]: r["capacity_bytes_per_s"] for r in result["runs"]}
    for cap in caps.values():
        ax.axhline(cap / 1e6, color="grey", lw=0.8, ls=":")
        ax.axhline(0.9 * cap / 1e6, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB/s consumed")
    ax.set_title("Long link through a delaying relay (capacity dotted, 90% below it)")


def _plot_slow_consumer(ax: Any, result: dict[str, Any]) -> None:
    for r in result["runs"]:
        st = next(iter(r["receiver"]["streams"].values()))
        rows = st["latency_series"]
        label = "auto-tuned (100 ms target)" if r["autotune"] else "static 4 MiB window"
        ax.plot([x[0] for x in rows], [x[2] for x in rows], label=f"{label}, p99")
    ax.axhline(100, color="grey", ls=":", lw=0.8)
    ax.axhline(150, color="red", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("queueing latency, ms (p99 per 0.5 s)")
    ax.set_title("Slow consumer (2000 msg/s): latency target 100 ms, bound 150 ms")


def _plot_speed_change(ax: Any, r: dict[str, Any]) -> None:
    rows = series(r)
    rtt = min((x["rtt_min"] for x in r["receiver"]["samples"] if x["rtt_min"]), default=0)
    sched = parse_schedule(r["schedule"])
    ax.plot(
        [x[0] for x in rows],
        [effective_window(x) for x in rows],
        label="window: least of its messages and bytes / 1 KiB",
    )
    ts = [x[0] for x in rows]
    ax.plot(
        ts,
        [(rate_at(sched, t) or 0) * (rtt + 0.1) for t in ts],
        ":",
        label="consumer rate x (rtt + 100 ms)",
    )
    ax.plot([x[0] for x in rows], [x[6] for x in rows], lw=0.6, label="queued (messages)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("messages")
    ax.set_title("Consumer speed 5000 -> 500 -> 5000 msg/s: the window follows")


def _plot_budget(ax: Any, r: dict[str, Any]) -> None:
    samples = r["receiver"]["samples"]
    ax.plot([s["t"] for s in samples], [s.get("committed", 0) / MIB for s in samples],
            label="committed credit, all connections")  # fmt: skip
    ax.plot([s["t"] for s in samples], [sum(s["connection_windows"]) / MIB for s in samples],
            lw=0.8, label="sum of connection windows (each capped at its share)")  # fmt: skip
    ax.axhline(r["budget"] / MIB, color="red", ls=":", label="memory budget")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_title(f"{r['connections']} connections under one {r['budget'] // MIB} MiB budget")


PLOTS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "long_link": _plot_long_link,
    "slow_consumer": _plot_slow_consumer,
    "speed_change": _plot_speed_change,
    "budget": _plot_budget,
}


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# --- command line ----------------------------------------------------------------------------
