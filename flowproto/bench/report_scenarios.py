"""What issue #13's scenario groups say: their tables and their targets.

Each group's sides run back to back in every repeat, so a target pairs flowproto's
repeat r with its comparator's repeat r and takes the median of the pairs' ratios, as
the throughput targets do (:func:`.report.paired`). Latency, memory and CPU are better
lower: their targets say "at most".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .plan import MIB, SCALING_STREAMS
from .report import Paired, _detail, _fmt, _target, find, median_of, paired

Records = Sequence[dict[str, Any]]


def _ok(records: Records, **match: Any) -> list[dict[str, Any]]:
    return [r for r in find(records, **match) if not r.get("skipped")]


def _sides(records: Records, group: str) -> list[str]:
    return list(dict.fromkeys(r["run"]["strategy"] for r in records if r["run"]["group"] == group))


def _pair(records: Records, unit: str, a: dict[str, Any], b: dict[str, Any]) -> Paired:
    return paired(_ok(records, **a), _ok(records, **b), unit)


# --- targets ----------------------------------------------------------------------------------


def scenario_targets(records: Records) -> list[dict[str, Any]]:
    """Issue #13's bar for the new groups, each a median of paired ratios."""
    out = []
    for q, goal in (("p50", 1.5), ("p99", 2.0)):
        p = _pair(
            records,
            f"{q}_us",
            {"group": "latency", "strategy": "flowproto"},
            {"group": "latency", "strategy": "raw"},
        )
        out.append(
            _target(
                f"ping-pong 64 B, {q}: flowproto ≤ {goal}x raw Trio",
                goal,
                p.ratio,
                _detail(p, ("flowproto", "raw"), "µs"),
                best=p.best_ratio,
                at_most=True,
            )
        )
    p = _pair(
        records,
        "conn_per_s",
        {"group": "setup", "strategy": "flowproto"},
        {"group": "setup", "strategy": "raw"},
    )
    out.append(
        _target(
            "connection setup (connect, handshake, one message consumed, close): "
            "flowproto ≥ 0.5x raw Trio's connections/s",
            0.5,
            p.ratio,
            _detail(p, ("flowproto", "raw"), "conn/s"),
            best=p.best_ratio,
        )
    )
    idle = {"group": "idle-memory", "unit": "connections", "count": 1000}
    p = _pair(
        records, "kib_per_idle", {**idle, "strategy": "flowproto"}, {**idle, "strategy": "raw"}
    )
    out.append(
        _target(
            "server memory per idle connection (1,000): flowproto ≤ 2x raw Trio",
            2.0,
            p.ratio,
            _detail(p, ("flowproto", "raw"), "KiB", 1),
            best=p.best_ratio,
            at_most=True,
        )
    )
    p = _pair(
        records,
        "mb_per_s",
        {"group": "cli-copy", "strategy": "flowproto"},
        {"group": "cli-copy", "strategy": "raw"},
    )
    out.append(
        _target(
            "CLI file copy, warm cache (send --input → receive --output): ≥ 0.7x a raw Trio copy",
            0.7,
            p.ratio,
            _detail(p, ("flowproto", "raw copy"), "MB/s"),
            best=p.best_ratio,
        )
    )
    p = _pair(
        records,
        "tx_cpu_s_per_m",
        {"group": "streams-scaling", "streams": 256},
        {"group": "streams-scaling", "streams": 1},
    )
    out.append(
        _target(
            "sender CPU per message, 256 streams ≤ 1.3x 1 stream (one connection)",
            1.3,
            p.ratio,
            _detail(p, ("256 streams", "1 stream"), "µs/msg", 3),
            best=p.best_ratio,
            at_most=True,
        )
    )
    return out


# --- tables -----------------------------------------------------------------------------------


def scenario_markdown(records: Records) -> list[str]:
    """One section per issue #13 group present in the records, then what was skipped."""
    out: list[str] = []
    for group, table in TABLES.items():
        if any(r["run"]["group"] == group for r in records):
            out += [*table(records), ""]
    skipped = [r for r in records if r.get("skipped")]
    if skipped:
        out += ["## Skipped here", ""]
        out += [f"- {r['key']}: {r['skipped']}" for r in skipped] + [""]
    return out


def _ratio_cell(p: Paired, digits: int = 2) -> str:
    return "–" if p.ratio is None else f"{p.ratio:.{digits}f}x"


def latency_table(records: Records) -> list[str]:
    runs = _ok(records, group="latency")
    n = runs[0]["run"]["count"] if runs else 0
    out = [
        f"## Ping-pong latency, 64 B each way, awaited ({n:,} round trips after a warm-up)",
        "",
        "Round-trip times in µs, medians of repeats; ratios to raw Trio are medians of the "
        "per-repeat ratios.",
        "",
        "| side | p50 µs | p99 µs | p50 vs raw | p99 vs raw |",
        "|---|---:|---:|---:|---:|",
    ]
    for side in _sides(records, "latency"):
        mine = _ok(runs, strategy=side)
        if not mine:
            continue
        raw = _ok(runs, strategy="raw")
        cells = [_ratio_cell(paired(mine, raw, f"{q}_us")) for q in ("p50", "p99")]
        out.append(
            f"| {side} | {_fmt(median_of(mine, 'p50_us'))} | "
            f"{_fmt(median_of(mine, 'p99_us'))} | {cells[0]} | {cells[1]} |"
        )
    return out


def setup_table(records: Records) -> list[str]:
    runs = _ok(records, group="setup")
    n = runs[0]["run"]["count"] if runs else 0
    out = [
        f"## Connection setup ({n:,} connections, one after another)",
        "",
        "Each: connect, handshake, one 64 B message sent and consumed, close. CPU in ms per "
        "connection, client + server processes (each measured over the timed connections).",
        "",
        "| side | conn/s | CPU ms/conn (both) | client | server | conn/s vs raw |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    raw = _ok(runs, strategy="raw")
    for side in _sides(records, "setup"):
        mine = _ok(runs, strategy=side)
        if mine:
            out.append(
                f"| {side} | {_fmt(median_of(mine, 'conn_per_s'))} | "
                f"{_fmt(median_of(mine, 'cpu_ms_per_conn'), 3)} | "
                f"{_fmt(median_of(mine, 'client_cpu_ms_per_conn'), 3)} | "
                f"{_fmt(median_of(mine, 'server_cpu_ms_per_conn'), 3)} | "
                f"{_ratio_cell(paired(mine, raw, 'conn_per_s'))} |"
            )
    return out


def idle_table(records: Records) -> list[str]:
    runs = _ok(records, group="idle-memory")
    out = [
        "## Server memory per idle connection and per idle open stream",
        "",
        "Server RSS growth (after a garbage collection) from 20 warm-up ones open to all "
        "open, divided by the count; medians of repeats. A raw Trio stream is a memory "
        "channel and a task per stream id on one connection.",
        "",
        "| side | idle | KiB each | vs raw |",
        "|---|---|---:|---:|",
    ]
    kinds = dict.fromkeys((r["run"]["unit"], r["run"]["count"]) for r in runs)
    for unit, count in kinds:
        raw = _ok(runs, strategy="raw", unit=unit, count=count)
        for side in _sides(records, "idle-memory"):
            mine = _ok(runs, strategy=side, unit=unit, count=count)
            if mine:
                each = _fmt(median_of(mine, "kib_per_idle"), 1)
                vs = _ratio_cell(paired(mine, raw, "kib_per_idle"))
                out.append(f"| {side} | {count:,} {unit} | {each} | {vs} |")
    return out


def copy_table(records: Records) -> list[str]:
    runs = _ok(records, group="cli-copy")
    size = runs[0]["run"]["size"] / MIB if runs else 0
    out = [
        f"## File copy, {size:g} MiB, warm page cache, two processes",
        "",
        "`flowproto receive --output` ← `flowproto send --input` as a user runs them, against "
        "a raw Trio copy (64 KiB chunks) and `nc`. MB/s from the sender's start until both "
        "processes exited (start-up included); the sender's own transfer time beside it.",
        "",
        "| side | MB/s (wall) | MB/s (transfer) | output identical | vs raw copy |",
        "|---|---:|---:|---|---:|",
    ]
    raw = _ok(runs, strategy="raw")
    for side in _sides(records, "cli-copy"):
        mine = _ok(runs, strategy=side)
        if mine:
            same = "yes" if all(r["derived"]["identical"] for r in mine) else "**no**"
            wall = _fmt(median_of(mine, "mb_per_s"), 1)
            transfer = _fmt(median_of(mine, "transfer_mb_per_s"), 1)
            vs = _ratio_cell(paired(mine, raw, "mb_per_s"))
            out.append(f"| {side} | {wall} | {transfer} | {same} | {vs} |")
    return out


def scaling_table(records: Records) -> list[str]:
    runs = _ok(records, group="streams-scaling")
    total = runs[0]["run"]["count"] * runs[0]["run"]["streams"] if runs else 0
    out = [
        f"## Streams scaling: one connection, {total:,} messages of 1 KiB in all",
        "",
        "CPU µs per message (medians of repeats); the ratio to 1 stream pairs repeats.",
        "",
        "| streams | sender µs/msg | receiver µs/msg | sender vs 1 stream |",
        "|---:|---:|---:|---:|",
    ]
    one = _ok(runs, streams=1)
    for n in SCALING_STREAMS:
        mine = _ok(runs, streams=n)
        if mine:
            out.append(
                f"| {n} | {_fmt(median_of(mine, 'tx_cpu_s_per_m'), 3)} | "
                f"{_fmt(median_of(mine, 'rx_cpu_s_per_m'), 3)} | "
                f"{_ratio_cell(paired(mine, one, 'tx_cpu_s_per_m'))} |"
            )
    return out


TABLES = {
    "latency": latency_table,
    "setup": setup_table,
    "idle-memory": idle_table,
    "cli-copy": copy_table,
    "streams-scaling": scaling_table,
}
