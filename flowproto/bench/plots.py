"""PNG plots of a benchmark run (matplotlib, the optional ``bench`` extra).

Importing this module imports matplotlib; :mod:`.report` imports it only when plots are
wanted and says so if matplotlib is missing.

- ``throughput_vs_consumer.png``: messages/s consumed per strategy at each consumer speed;
- ``memory_slow_consumer.png``: the receiver's RSS and buffered bytes over time while the
  consumer is 10x slower than the producer;
- ``latency_cdf.png``: end-to-end latency CDFs per strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .plan import CONSUMER_NAMES, CONSUMERS, PRODUCER_RATE, SIZE_NAMES, STRATEGIES

DPI = 90
COLORS = {
    "flowproto": "#1f77b4",
    "flowproto-small": "#17becf",
    "flowproto-single": "#9467bd",
    "unbounded": "#d62728",
    "drop": "#ff7f0e",
    "plain": "#2ca02c",
    "plain-single": "#98df8a",
    "zmq": "#7f7f7f",
}


def _consumer_runs(records: Sequence[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["run"]["group"] == "consumer" and r["run"]["size"] == size and not r["error"]
    ]


def _main_size(records: Sequence[dict[str, Any]]) -> int | None:
    sizes = sorted({r["run"]["size"] for r in records if r["run"]["group"] == "consumer"})
    if not sizes:
        return None
    return 1024 if 1024 in sizes else sizes[0]


def throughput_vs_consumer(records: Sequence[dict[str, Any]], out: Path) -> Path | None:
    size = _main_size(records)
    if size is None:
        return None
    runs = _consumer_runs(records, size)
    consumers = [c for c in CONSUMERS if any(r["run"]["consumer"] == c for r in runs)]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    xs = range(len(consumers))
    for name in STRATEGIES:
        ys = []
        for c in consumers:
            match = [r for r in runs if r["run"]["strategy"] == name and r["run"]["consumer"] == c]
            ys.append(match[0]["derived"]["msgs_per_s"] if match else float("nan"))
        if all(y != y for y in ys):  # all NaN
            continue
        ax.plot(xs, ys, marker="o", label=name, color=COLORS.get(name))
    rate = PRODUCER_RATE[size]
    nominal = {"unlimited": rate, "slow10": rate / 10, "slow100": rate / 100, "bursty": rate}
    ax.plot(
        [i for i, c in enumerate(consumers) if c in nominal],
        [nominal[c] for c in consumers if c in nominal],
        "k_",
        markersize=22,
        label="consumer's rate",
    )
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([CONSUMER_NAMES[c].replace(" (", "\n(") for c in consumers], fontsize=8)
    ax.set_ylabel("messages consumed / s")
    ax.set_title(
        f"Throughput vs consumer speed ({SIZE_NAMES[size]} messages, producer {rate:,} msg/s)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "throughput_vs_consumer.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def memory_slow_consumer(records: Sequence[dict[str, Any]], out: Path) -> Path | None:
    size = _main_size(records)
    if size is None:
        return None
    runs = [r for r in _consumer_runs(records, size) if r["run"]["consumer"] == "slow10"]
    if not runs:
        return None
    fig, (ax_rss, ax_buf) = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        name = r["run"]["strategy"]
        series = r["receiver"]["memory_series"]
        t = [p[0] for p in series]
        ax_rss.plot(t, [p[1] / 1024 for p in series], label=name, color=COLORS.get(name))
        if any(p[2] is not None for p in series):
            ax_buf.plot(
                t,
                [(p[2] or 0) / 1024 / 1024 for p in series],
                label=name,
                color=COLORS.get(name),
            )
    rate = PRODUCER_RATE[size]
    ax_rss.set_title("receiver RSS (MiB)")
    ax_buf.set_title("messages buffered at the receiver (MiB)")
    for ax in (ax_rss, ax_buf):
        ax.set_xlabel("seconds")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Consumer 10x slower than the producer ({SIZE_NAMES[size]} messages, "
        f"{rate:,} msg/s produced, {rate // 10:,} msg/s consumed)",
        fontsize=10,
    )
    fig.tight_layout()
    path = out / "memory_slow_consumer.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def latency_cdf(records: Sequence[dict[str, Any]], out: Path) -> Path | None:
    size = _main_size(records)
    panels = []
    if size is not None:
        runs = _consumer_runs(records, size)
        for consumer in ("unlimited", "slow10", "bursty"):
            chosen = [r for r in runs if r["run"]["consumer"] == consumer]
            if chosen:
                panels.append((f"{SIZE_NAMES[size]}, consumer {CONSUMER_NAMES[consumer]}", chosen))
    if not panels:
        thr = [
            r
            for r in records
            if r["run"]["group"] == "throughput"
            and not r["error"]
            and r["run"]["size"] == 1024
            and r["run"]["codec"] == "raw"
            and r["run"]["repeat"] == 0
        ]
        if thr:
            panels.append(("1 KiB, unpaced producer, unlimited consumer", thr))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, runs) in zip(axes[0], panels, strict=True):
        for r in runs:
            cdf = r["receiver"]["latency_cdf_ms"]
            if not cdf:
                continue
            name = r["run"]["strategy"]
            ys = [i / (len(cdf) - 1) for i in range(len(cdf))]
            ax.plot([max(x, 1e-3) for x in cdf], ys, label=name, color=COLORS.get(name))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fraction of messages")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = out / "latency_cdf.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def all_plots(records: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Every plot the records allow; returns the files written."""
    made = [
        throughput_vs_consumer(records, out),
        memory_slow_consumer(records, out),
        latency_cdf(records, out),
    ]
    return [p for p in made if p is not None]
