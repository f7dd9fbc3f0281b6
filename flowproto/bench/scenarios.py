"""Run issue #13's scenario groups: one :class:`~flowproto.bench.plan.Run` each.

Every group runs two processes over 127.0.0.1 through :func:`.harness.spawn_pair` (the
server first, on a port the OS picks), except ``nc``'s copy, and ``streams-scaling``,
which is the throughput peers' pair (:func:`.harness.run_pair`) with 1, 16 or 256
streams. :func:`run_scenario` returns a record shaped like a throughput run's (``run``,
``key``, ``error``, ``derived``, the two sides' JSON lines) plus ``skipped`` when a side
cannot run here (pyzmq or ``nc`` missing, too few file descriptors); a skipped record is
no failure. :func:`scenario_problems` checks what must hold whatever the timing.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from .aio import uvloop_available
from .harness import derive, invariant_problems, run_pair, spawn_pair, zmq_available
from .plan import STRATEGIES, Run
from .procs import child_env, python_module

#: Descriptors a process keeps beyond one per connection.
FD_SPARE: Final = 100
#: Bytes per block of the copied file.
BLOCK: Final = 1 << 20


def run_scenario(run: Run) -> dict[str, Any]:
    """Run one scenario of :data:`~flowproto.bench.plan.SCENARIO_GROUPS`; its record."""
    if run.group == "streams-scaling":
        return run_pair(run)
    record: dict[str, Any] = {"run": asdict(run), "key": run.key, "error": None, "derived": {}}
    skip = skip_reason(run)
    if skip:
        record["skipped"] = skip
        return record
    if run.group == "cli-copy":
        record.update(copy_file(run))
    else:
        record.update(_run_programs(run))
    if record["error"] is None:
        DERIVE[run.group](record)
    return record


def skip_reason(run: Run) -> str | None:
    """Why a side cannot run on this machine, or None."""
    if run.strategy == "zmq" and not zmq_available():
        return "pyzmq is not installed (pip install 'flowproto[bench]')"
    strategy = STRATEGIES.get(run.strategy)
    if strategy is not None and strategy.loop == "uvloop" and not uvloop_available():
        return "uvloop is not installed (pip install uvloop)"
    if run.strategy == "nc" and nc_command() is None:
        return "OpenBSD netcat (nc with -N) is not installed"
    if run.group == "idle-memory" and run.unit == "connections":
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        need = run.count + run.warmup + FD_SPARE
        if hard != resource.RLIM_INFINITY and hard < need:
            return f"the open-files hard limit is {hard}: {need} descriptors a process needed"
    return None


def _run_programs(run: Run) -> dict[str, Any]:
    """The server and client programs of a latency, setup or idle-memory run."""
    if run.group == "idle-memory":
        py = python_module("peers_idle")
        common = ["--peer", run.strategy, "--unit", run.unit]
    else:
        py = python_module("peers_rtt")
        strategy = STRATEGIES[run.strategy]
        common = ["--scenario", run.group, "--peer", strategy.peer]
        if strategy.loop:
            common += ["--loop", strategy.loop]
    common += ["--count", str(run.count), "--warmup", str(run.warmup)]
    return spawn_pair(
        [*py, "server", *common],
        lambda port: [*py, "client", "--port", str(port), *common],
        150,
    )


# --- figures from both sides ------------------------------------------------------------------


def derive_latency(record: dict[str, Any]) -> None:
    client, server = record["sender"], record["receiver"]
    record["derived"] = {k: client[k] for k in ("p50_us", "p99_us", "mean_us")}
    # Both peers' CPU over the timed round trips: the work, with the CPU of each wake-up
    # but not the time waited for it.
    cpu_s = client["timed_cpu_s"] + server["timed_cpu_s"]
    record["derived"]["cpu_us_per_rt"] = round(cpu_s / client["round_trips"] * 1e6, 2)


def derive_setup(record: dict[str, Any]) -> None:
    client, server = record["sender"], record["receiver"]
    n = client["connections"]
    record["derived"] = {
        "conn_per_s": round(n / client["elapsed_s"], 1),
        "cpu_ms_per_conn": round((client["cpu_s"] + server["cpu_s"]) / n * 1e3, 4),
        "client_cpu_ms_per_conn": round(client["cpu_s"] / n * 1e3, 4),
        "server_cpu_ms_per_conn": round(server["cpu_s"] / n * 1e3, 4),
    }


def derive_idle(record: dict[str, Any]) -> None:
    server = record["receiver"]
    n = record["run"]["count"]
    grown = server["rss_all_kib"] - server["rss_warm_kib"]
    record["derived"] = {"rss_growth_kib": grown, "kib_per_idle": round(grown / n, 2)}


def derive_copy(record: dict[str, Any]) -> None:
    size = record["run"]["size"]
    seconds = record["client_wall_s"]
    sender = record.get("sender") or {}
    transfer = sender.get("seconds")  # the sender's own clock, start-up not counted
    record["derived"] = {
        "seconds": seconds,
        "mb_per_s": round(size / seconds / 1e6, 1),
        "transfer_mb_per_s": round(size / transfer / 1e6, 1) if transfer else None,
        "identical": record["copy"]["identical"],
    }


DERIVE: Final = {
    "latency": derive_latency,
    "setup": derive_setup,
    "idle-memory": derive_idle,
    "cli-copy": derive_copy,
    "streams-scaling": derive,
}


# --- the file copy -----------------------------------------------------------------------------


def nc_command() -> str | None:
    """OpenBSD netcat's path (its ``-N`` ends the send at EOF), or None."""
    nc = shutil.which("nc")
    if nc is None:
        return None
    helped = subprocess.run([nc, "-h"], capture_output=True, text=True, timeout=10)
    # "-N" as an option of its own in the help, after a space or a tab (Debian's has tabs).
    return nc if re.search(r"\s-N\s", helped.stdout + helped.stderr) else None


def make_source(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256. Reading it back to hash it
    warms the page cache, as the issue asks (a copy of a file just read)."""
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(BLOCK, left)))
            left -= BLOCK
    return file_digest(path)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def copy_commands(strategy: str, src: Path, dst: Path) -> tuple[list[str], Any]:
    """The receiver's command line, and the sender's for a port."""
    if strategy == "flowproto":
        py = [sys.executable, "-m", "flowproto"]  # as a user runs `flowproto ...`
        return (
            [*py, "receive", "--listen", "127.0.0.1:0", "--output", str(dst), "--once",
             "--raw", "--json", "--quiet"],
            lambda port: [*py, "send", "--connect", f"127.0.0.1:{port}", "--input", str(src),
                          "--raw", "--json", "--quiet"],
        )  # fmt: skip
    py = python_module("peers_copy")
    return (
        [*py, "receive", "--output", str(dst)],
        lambda port: [*py, "send", "--port", str(port), "--input", str(src)],
    )


def copy_file(run: Run) -> dict[str, Any]:
    """Copy a fresh file of ``run.size`` random bytes with ``run.strategy``; timed from the
    sender's start until both processes exited, the output compared byte for byte."""
    with tempfile.TemporaryDirectory(prefix="flowproto-bench-copy-") as tmp:
        src, dst = Path(tmp, "input.bin"), Path(tmp, "output.bin")
        digest = make_source(src, run.size)
        if run.strategy == "nc":
            result = nc_copy(src, dst, hard=300)
        else:
            server, client = copy_commands(run.strategy, src, dst)
            result = spawn_pair(server, client, 300)
        got = dst.stat().st_size if dst.exists() else None
        result["copy"] = {
            "bytes": run.size,
            "output_bytes": got,
            "identical": got == run.size and file_digest(dst) == digest,
        }
        if result["error"] is None and any(result.get("exit_status") or []):
            result["error"] = f"exit statuses {result['exit_status']}"
    return result


def nc_copy(src: Path, dst: Path, hard: float) -> dict[str, Any]:
    """``nc -l`` into ``dst`` and ``nc -N`` from ``src``, on a port the OS picked."""
    nc = nc_command()
    assert nc is not None
    port = free_port()
    record: dict[str, Any] = {"error": None, "sender": None, "receiver": None}
    with dst.open("wb") as out:
        rx = subprocess.Popen([nc, "-l", "127.0.0.1", str(port)], stdout=out, env=child_env())
        try:
            wait_listening(port, rx)
            started = time.monotonic()
            with src.open("rb") as data:
                tx = subprocess.run([nc, "-N", "127.0.0.1", str(port)], stdin=data,
                                    timeout=hard, check=False)  # fmt: skip
            rx.wait(timeout=hard)
            record["client_wall_s"] = round(time.monotonic() - started, 4)
            record["exit_status"] = [rx.returncode, tx.returncode]
        except (subprocess.TimeoutExpired, RuntimeError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
    return record


def free_port() -> int:
    """A port the OS picks (bound and released: nc cannot report the one it gets)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until a socket listens on 127.0.0.1:``port`` (read from /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with open("/proc/net/tcp") as f:
            if any(wanted in line and line.split()[3] == "0A" for line in f):
                return
        time.sleep(0.01)
    raise RuntimeError(f"nc did not listen on port {port}")


# --- what must hold ------------------------------------------------------------------------------


def scenario_problems(record: dict[str, Any]) -> list[str]:
    """What a scenario run broke of what must hold whatever the timing."""
    if record.get("skipped"):
        return []
    run, key = record["run"], record["key"]
    if run["group"] == "streams-scaling":
        return invariant_problems(record)
    if record["error"]:
        return [f"{key}: {record['error']} {record.get('stderr', '')}"]
    client, server, d = record["sender"], record["receiver"], record["derived"]
    total = run["count"] + run["warmup"]
    checks: list[tuple[bool, str]] = []
    if run["group"] == "latency":
        checks = [
            (server["echoed"] == total, f"server echoed {server['echoed']} of {total}"),
            (0 < d["p50_us"] <= d["p99_us"], f"p50 {d['p50_us']} µs, p99 {d['p99_us']} µs"),
            (d["cpu_us_per_rt"] > 0, f"CPU {d['cpu_us_per_rt']} µs per round trip"),
        ]
    elif run["group"] == "setup":
        checks = [
            (server["connections"] == total, f"server served {server['connections']} of {total}"),
            (d["conn_per_s"] > 0 and d["cpu_ms_per_conn"] > 0, f"figures {d}"),
        ]
    elif run["group"] == "idle-memory":
        opened = (client["opened"], server["opened"])
        checks = [(opened == (total, total), f"opened {opened}, expected {total} each side")]
    elif run["group"] == "cli-copy":
        checks = [(d["identical"], f"output not identical: {record['copy']}")]
    return [f"{key}: {text}" for ok, text in checks if not ok]
