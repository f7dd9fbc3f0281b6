"""Run benchmark scenarios as sender/receiver process pairs and check what must hold.

:func:`run_pair` starts one :class:`~flowproto.bench.plan.Run`'s receiver (a process of
:mod:`flowproto.bench.peers`), reads its port from its stderr, starts the sender, waits
for both (killing stragglers after a hard timeout) and merges their JSON lines with
figures derived from both sides (:func:`derive`). :func:`run_plan` runs a whole plan.

:func:`invariant_problems` checks what must hold whatever the timing: every message
accounted for, each stream's sequence exactly 0..n-1 and its payloads intact, and
flowproto's receiver never holding more than the largest window it granted. What the
records say about speed is :mod:`flowproto.bench.report`'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .aio import uvloop_available
from .netns import Link
from .plan import SCENARIO_GROUPS, SLOW_STREAM_RATE, STRATEGIES, Plan, Run, Strategy
from .procs import child_env, python_module

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
        "--policy", strategy.policy, "--workload", strategy.workload,
        "--duration", str(run.duration),
        "--timeout", str(run.duration + 30),
    ]  # fmt: skip
    if strategy.loop:
        args += ["--loop", strategy.loop]
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
    host = link.receiver_host if link else "127.0.0.1"
    rx_args, tx_args = _sides_args(run)
    py = python_module("peers")
    record: dict[str, Any] = {"run": asdict(run), "key": run.key, "error": None}
    pair = spawn_pair(
        [*(link.receiver_prefix if link else []), *py, "receiver", "--host", host,
         "--port", "0", *rx_args],
        lambda port: [*(link.sender_prefix if link else []), *py, "sender", "--host", host,
                      "--port", str(port), *tx_args],
        run.duration + 45,
    )  # fmt: skip
    record.update(pair)
    derive(record)
    return record


def spawn_pair(
    server: list[str], client: Callable[[int], list[str]], hard: float
) -> dict[str, Any]:
    """Run a server process and a client process; each one's last JSON line.

    The server starts first and says ``listening HOST:PORT`` on its stderr; the client
    gets that port. Both run from a scratch directory, in their own sessions, and are
    killed after ``hard`` seconds. Returns ``error`` (None when both exited cleanly with
    their JSON lines), ``wall_s``, ``client_wall_s`` (from the client's start until both
    had exited), ``receiver`` (the server's line), ``sender`` (the
    client's) and, on failure, the tails of their stderr.
    """
    env = child_env()
    record: dict[str, Any] = {"error": None}
    with tempfile.TemporaryDirectory(prefix="flowproto-bench-") as tmp:
        files = {name: Path(tmp, name) for name in ("rx.out", "rx.err", "tx.out", "tx.err")}
        handles = {name: path.open("wb") for name, path in files.items()}
        rx = subprocess.Popen(
            server, stdout=handles["rx.out"], stderr=handles["rx.err"], cwd=tmp, env=env,
            start_new_session=True,
        )  # fmt: skip
        tx: subprocess.Popen[bytes] | None = None
        started = time.monotonic()
        try:
            port = _wait_for_port(rx, files["rx.err"], started)
            tx = subprocess.Popen(
                client(port), stdout=handles["tx.out"], stderr=handles["tx.err"], cwd=tmp,
                env=env, start_new_session=True,
            )  # fmt: skip
            client_started = time.monotonic()
            for waited in (tx, rx):
                remaining = hard - (time.monotonic() - started)
                try:
                    waited.wait(timeout=max(1.0, remaining))
                except subprocess.TimeoutExpired:
                    record["error"] = f"killed after {hard:.0f} s"
            record["client_wall_s"] = round(time.monotonic() - client_started, 4)
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for proc in (tx, rx):
                if proc is not None:
                    _kill(proc)
            for h in handles.values():
                h.close()
        record["wall_s"] = round(time.monotonic() - started, 2)
        record["exit_status"] = [rx.returncode, tx.returncode if tx else None]
        failed = bool(rx.returncode or (tx and tx.returncode))
        _collect(record, files, failed)
    return record


def _wait_for_port(proc: subprocess.Popen[bytes], err: Path, started: float) -> int:
    """The port a server process says it listens on (``listening HOST:PORT``)."""
    while time.monotonic() - started < 30 and proc.poll() is None:
        for line in err.read_text(errors="replace").splitlines():
            if line.startswith("listening "):
                return int(line.rsplit(":", 1)[1])
        time.sleep(0.02)
    raise RuntimeError("the receiver did not start listening")


def _sides_args(run: Run) -> tuple[list[str], list[str]]:
    """The receiver's and the sender's command-line options for one run."""
    common = peer_args(run, STRATEGIES[run.strategy])
    rx_args = [*common, "--schedule", json.dumps(run.schedule())]
    if run.slow_stream:
        rx_args += ["--slow-schedule", json.dumps([[0, SLOW_STREAM_RATE]])]
    tx_args = [*common, "--count", str(run.count)]
    if run.producer_rate is not None:
        tx_args += ["--rate", str(run.producer_rate)]
    return rx_args, tx_args


def _collect(record: dict[str, Any], files: dict[str, Path], failed: bool) -> None:
    """Each side's JSON line into ``record``, and its stderr's tail if it failed."""
    record["sender"] = _last_json(files["tx.out"])
    record["receiver"] = _last_json(files["rx.out"])
    for side, name in (("sender", "tx.err"), ("receiver", "rx.err")):
        if record[side] is None or failed:
            err = files[name].read_text(errors="replace").strip().splitlines()
            tail = [ln for ln in err if not ln.startswith("listening ")][-8:]
            if tail:
                record.setdefault("stderr", {})[side] = tail
    if record["error"] is None and (record["sender"] is None or record["receiver"] is None):
        record["error"] = "a peer exited without its JSON line"


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
    accounted for once (for the constant workload of ``raw`` and ``flowproto-const``, whose
    messages carry no number: the messages counted equal the messages sent). For flowproto
    it must also have held at most the largest window it granted (both peak and window
    exact, see :mod:`flowproto.bench.peers_flowproto`).
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
        if s["sequence_end"] is None:  # a constant workload: counted, not sequenced
            if s["accounted"] != n:
                problems.append(f"{name}: sent {n}, {s['accounted']} frames counted")
        elif s["sequence_end"] != n or s["accounted"] != n:
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
    if strategy.peer in ("raw", "raw-asyncio"):
        body = sum(s["body_bytes"] for s in rx["streams"])
        if body != d["sent"] * record["run"]["size"]:
            problems.append(f"{key}: {body} body bytes counted for {d['sent']} frames sent")
    # uvloop writes from C: its receiver cannot read the windows it grants off its sends.
    tapped = strategy.peer == "flowproto" or (
        strategy.peer == "flowproto-asyncio" and strategy.loop != "uvloop"
    )
    if tapped and not all("largest_window_bytes" in s for s in rx["streams"]):
        problems.append(f"{key}: a flowproto stream without its peak and largest window")
    return problems


# --- running a plan ----------------------------------------------------------------------------


def run_plan(
    plan: Plan,
    link: Link | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every scenario of the plan in order; zmq runs are skipped if pyzmq is missing,
    uvloop runs if uvloop is.

    Issue #13's groups run through :func:`.scenarios.run_scenario` (over 127.0.0.1 only);
    a side that cannot run here leaves a record that says why (``skipped``).
    """
    from .scenarios import run_scenario  # it builds on this module

    records = []
    have_zmq = zmq_available()
    if not have_zmq and any(r.strategy == "zmq" for r in plan.runs) and progress:
        progress("pyzmq is not installed: skipping the zmq runs (pip install 'flowproto[bench]')")
    have_uvloop = uvloop_available()
    if not have_uvloop and progress and any(on_uvloop(r) for r in plan.runs):
        progress("uvloop is not installed: skipping the uvloop runs (pip install uvloop)")
    for i, run in enumerate(plan.runs, 1):
        if run.group in SCENARIO_GROUPS:
            record = run_scenario(run)
        elif (run.strategy == "zmq" and not have_zmq) or (on_uvloop(run) and not have_uvloop):
            continue  # said above
        else:
            record = run_pair(run, link)
        records.append(record)
        if progress:
            progress(f"[{i}/{len(plan.runs)}] {run.key}: {progress_note(record)}")
    return records


def on_uvloop(run: Run) -> bool:
    """True for a run of a strategy on uvloop (an optional extra)."""
    strategy = STRATEGIES.get(run.strategy)
    return strategy is not None and strategy.loop == "uvloop"


def progress_note(record: dict[str, Any]) -> str:
    """One run's figures in a few words, for the progress lines."""
    if record.get("skipped"):
        return f"skipped: {record['skipped']}"
    if record["error"]:
        return str(record["error"])
    d = record["derived"]
    group = record["run"]["group"]
    if group == "latency":
        return f"p50 {d['p50_us']:,.0f} µs, p99 {d['p99_us']:,.0f} µs"
    if group == "setup":
        return f"{d['conn_per_s']:,.0f} conn/s, CPU {d['cpu_ms_per_conn']:.3f} ms/conn (both sides)"
    if group == "idle-memory":
        return f"{d['kib_per_idle']:,.1f} KiB per idle {record['run']['unit'].rstrip('s')}"
    if group == "cli-copy":
        return f"{d['mb_per_s']:,.1f} MB/s, identical: {d['identical']}"
    if group == "streams-scaling":
        return f"sender CPU {d['tx_cpu_s_per_m']:.3f} µs/msg, lost {d['lost']}"
    return (
        f"{d.get('msgs_per_s', 0):>12,.0f} msg/s {d.get('mb_per_s', 0):>9,.1f} MB/s"
        f"  lost {d.get('lost')} dropped {d.get('dropped')}"
    )


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
