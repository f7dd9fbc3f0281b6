"""What issue #13's scenario groups say: their tables and their targets.

Each group's sides run back to back in every repeat, so a target pairs flowproto's
repeat r with its comparator's repeat r and takes the median of the pairs' ratios, as
the throughput targets do (:func:`.report.paired`). Latency, memory and CPU are better
lower: their targets say "at most".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .plan import MIB, SCALING_STREAMS, STRATEGIES
from .report import Paired, _detail, _fmt, _target, find, median_of, paired

Records = Sequence[dict[str, Any]]


def _ok(records: Records, **match: Any) -> list[dict[str, Any]]:
    return [r for r in find(records, **match) if not r.get("skipped")]


def _sides(records: Records, group: str) -> list[str]:
    return list(dict.fromkeys(r["run"]["strategy"] for r in records if r["run"]["group"] == group))


def _pair(records: Records, unit: str, a: dict[str, Any], b: dict[str, Any]) -> Paired:
    return paired(_ok(records, **a), _ok(records, **b), unit)


# --- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One of issue #13's targets: the paired ratio of ``field`` between sides a and b."""

    name: str
    goal: float
    field: str
    a: dict[str, Any]
    b: dict[str, Any]
    names: tuple[str, str]
    unit: str
    digits: int = 0
    at_most: bool = False  # latency, memory, CPU: the ratio must not exceed the goal


def _vs_raw(group: str, **match: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"group": group, "strategy": "flowproto", **match}, {
        "group": group,
        "strategy": "raw",
        **match,
    }


_IDLE_1000 = {"unit": "connections", "count": 1000}
#: Issue #13's bar for the new groups, in the order results.md lists them.
BARS: tuple[Bar, ...] = (
    *(
        Bar(
            f"ping-pong 64 B, {q}: flowproto ≤ {goal}x raw Trio",
            goal,
            f"{q}_us",
            *_vs_raw("latency"),
            ("flowproto", "raw"),
            "µs",
            at_most=True,
        )
        for q, goal in (("p50", 1.5), ("p99", 2.0))
    ),
    *(
        Bar(
            f"ping-pong 64 B, {q}{where}: flowproto-asyncio ≤ 1.5x raw-asyncio{suffix}",
            1.5,
            f"{q}_us",
            {"group": "latency", "strategy": f"flowproto-asyncio{suffix}"},
            {"group": "latency", "strategy": f"raw-asyncio{suffix}"},
            ("flowproto-asyncio", f"raw-asyncio{suffix}"),
            "µs",
            at_most=True,
        )
        for suffix, where in (("", ""), ("-uvloop", ", on uvloop"))
        for q in ("p50", "p99")
    ),
    Bar(
        "connection setup (connect, handshake, one message consumed, close): "
        "flowproto ≥ 0.5x raw Trio's connections/s",
        0.5,
        "conn_per_s",
        *_vs_raw("setup"),
        ("flowproto", "raw"),
        "conn/s",
    ),
    Bar(
        "server memory per idle connection (1,000): flowproto ≤ 2x raw Trio",
        2.0,
        "kib_per_idle",
        *_vs_raw("idle-memory", **_IDLE_1000),
        ("flowproto", "raw"),
        "KiB",
        1,
        at_most=True,
    ),
    Bar(
        "CLI file copy, warm cache (send --input → receive --output): ≥ 0.7x a raw Trio copy",
        0.7,
        "mb_per_s",
        *_vs_raw("cli-copy"),
        ("flowproto", "raw copy"),
        "MB/s",
    ),
    Bar(
        "sender CPU per message, 256 streams ≤ 1.3x 1 stream (one connection)",
        1.3,
        "tx_cpu_s_per_m",
        {"group": "streams-scaling", "streams": 256},
        {"group": "streams-scaling", "streams": 1},
        ("256 streams", "1 stream"),
        "µs/msg",
        3,
        at_most=True,
    ),
)


def scenario_targets(records: Records) -> list[dict[str, Any]]:
    """Issue #13's bar for the new groups (:data:`BARS`), each a median of paired ratios."""
    out = []
    for bar in BARS:
        if not _ok(records, **bar.a):
            continue  # a side this run did not have (uvloop, or only some groups)
        p = _pair(records, bar.field, bar.a, bar.b)
        text = _detail(p, bar.names, bar.unit, bar.digits)
        out.append(
            _target(bar.name, bar.goal, p.ratio, text, best=p.best_ratio, at_most=bar.at_most)
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


def _head(title: str, caption: str, columns: str, align: str) -> list[str]:
    """A table's heading, its caption, and its header and alignment rows."""
    return [f"## {title}", "", caption, "", columns, align]


def _per_side(
    records: Records, group: str, runs: Records, **match: Any
) -> Iterator[tuple[str, Records]]:
    """Each side of the group that has runs (matching ``match``), with its runs."""
    for side in _sides(records, group):
        mine = _ok(runs, strategy=side, **match)
        if mine:
            yield side, mine


def latency_table(records: Records) -> list[str]:
    runs = _ok(records, group="latency")
    n = runs[0]["run"]["count"] if runs else 0
    out = _head(
        f"Ping-pong latency, 64 B each way, awaited ({n:,} round trips after a warm-up)",
        "Round-trip times in µs, medians of repeats; CPU: both peers' CPU µs over the timed "
        "round trips, per round trip (the work and what each wake-up costs in CPU, not the "
        "time waited for it). The ratios, to the raw framing of the side's own "
        "event loop (raw Trio, raw-asyncio, raw-asyncio-uvloop), are medians of the "
        "per-repeat ratios.",
        "| side | p50 µs | p99 µs | CPU µs | compared with | p50 vs it | p99 vs it | CPU vs it |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    )
    for side, mine in _per_side(records, "latency", runs):
        strategy = STRATEGIES.get(side)
        base = strategy.baseline if strategy is not None else "raw"
        raw = _ok(runs, strategy=base)
        cells = [
            _ratio_cell(paired(mine, raw, key)) for key in ("p50_us", "p99_us", "cpu_us_per_rt")
        ]
        out.append(
            f"| {side} | {_fmt(median_of(mine, 'p50_us'))} | "
            f"{_fmt(median_of(mine, 'p99_us'))} | {_fmt(median_of(mine, 'cpu_us_per_rt'))} | "
            f"{base} | {cells[0]} | {cells[1]} | {cells[2]} |"
        )
    return out


def setup_table(records: Records) -> list[str]:
    runs = _ok(records, group="setup")
    n = runs[0]["run"]["count"] if runs else 0
    out = _head(
        f"Connection setup ({n:,} connections, one after another)",
        "Each: connect, handshake, one 64 B message sent and consumed, close. CPU in ms per "
        "connection, client + server processes (each measured over the timed connections).",
        "| side | conn/s | CPU ms/conn (both) | client | server | conn/s vs raw |",
        "|---|---:|---:|---:|---:|---:|",
    )
    raw = _ok(runs, strategy="raw")
    for side, mine in _per_side(records, "setup", runs):
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
    out = _head(
        "Server memory per idle connection and per idle open stream",
        "Server RSS growth (after a garbage collection) from 20 warm-up ones open to all "
        "open, divided by the count; medians of repeats. A raw Trio stream is a memory "
        "channel and a task per stream id on one connection.",
        "| side | idle | KiB each | vs raw |",
        "|---|---|---:|---:|",
    )
    kinds = dict.fromkeys((r["run"]["unit"], r["run"]["count"]) for r in runs)
    for unit, count in kinds:
        raw = _ok(runs, strategy="raw", unit=unit, count=count)
        for side, mine in _per_side(records, "idle-memory", runs, unit=unit, count=count):
            each = _fmt(median_of(mine, "kib_per_idle"), 1)
            vs = _ratio_cell(paired(mine, raw, "kib_per_idle"))
            out.append(f"| {side} | {count:,} {unit} | {each} | {vs} |")
    return out


def copy_table(records: Records) -> list[str]:
    runs = _ok(records, group="cli-copy")
    size = runs[0]["run"]["size"] / MIB if runs else 0
    out = _head(
        f"File copy, {size:g} MiB, warm page cache, two processes",
        "`flowproto receive --output` ← `flowproto send --input` as a user runs them, against "
        "a raw Trio copy (64 KiB chunks) and `nc`. MB/s from the sender's start until both "
        "processes exited (start-up included); the sender's own transfer time beside it.",
        "| side | MB/s (wall) | MB/s (transfer) | output identical | vs raw copy |",
        "|---|---:|---:|---|---:|",
    )
    raw = _ok(runs, strategy="raw")
    for side, mine in _per_side(records, "cli-copy", runs):
        same = "yes" if all(r["derived"]["identical"] for r in mine) else "**no**"
        wall = _fmt(median_of(mine, "mb_per_s"), 1)
        transfer = _fmt(median_of(mine, "transfer_mb_per_s"), 1)
        vs = _ratio_cell(paired(mine, raw, "mb_per_s"))
        out.append(f"| {side} | {wall} | {transfer} | {same} | {vs} |")
    return out


def scaling_table(records: Records) -> list[str]:
    runs = _ok(records, group="streams-scaling")
    total = runs[0]["run"]["count"] * runs[0]["run"]["streams"] if runs else 0
    out = _head(
        f"Streams scaling: one connection, {total:,} messages of 1 KiB in all",
        "CPU µs per message (medians of repeats); the ratio to 1 stream pairs repeats.",
        "| streams | sender µs/msg | receiver µs/msg | sender vs 1 stream |",
        "|---:|---:|---:|---:|",
    )
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
