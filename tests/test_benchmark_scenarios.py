"""Issue #13's scenario groups run end to end in their --quick sizes (timing asserted never).

Each test runs one group's processes over 127.0.0.1 (ports from the OS) through the
harness, as ``flowproto bench --group NAME --quick`` does, and checks that the record's
fields are there and sane: positive figures, every round trip echoed, every connection
served, a byte-identical copy. A side that cannot run here (pyzmq or OpenBSD ``nc``
missing) must leave a record saying so, not fail.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from flowproto.bench import command, report
from flowproto.bench.harness import zmq_available
from flowproto.bench.plan import SCENARIO_GROUPS, Run, scenario_runs
from flowproto.bench.report_scenarios import scenario_targets
from flowproto.bench.scenarios import nc_command, run_scenario, scenario_problems


def quick(group: str, **match: Any) -> list[Run]:
    runs = [r for r in scenario_runs(0, quick=True) if r.group == group]
    return [r for r in runs if all(getattr(r, k) == v for k, v in match.items())]


def sound(run: Run) -> dict[str, Any]:
    record = run_scenario(run)
    assert scenario_problems(record) == [], record
    if not record.get("skipped"):
        assert record["error"] is None, record
    return record


def test_latency_reports_p50_and_p99_for_each_side() -> None:
    records = [sound(run) for run in quick("latency")]
    sides = {r["run"]["strategy"]: r for r in records}
    assert set(sides) == {"flowproto", "raw", "zmq", "flowproto-asyncio", "raw-asyncio"}
    if not zmq_available():
        assert "pyzmq" in sides["zmq"]["skipped"]
    for r in records:
        if r.get("skipped"):
            continue
        assert 0 < r["derived"]["p50_us"] <= r["derived"]["p99_us"]
        assert r["receiver"]["echoed"] == r["run"]["count"] + r["run"]["warmup"]
        # both peers' CPU over the timed round trips only: each spent some, and less
        # than all of its own (start-up and warm-up are outside the timed part)
        assert r["derived"]["cpu_us_per_rt"] > 0
        for side in ("sender", "receiver"):
            assert 0 < r[side]["timed_cpu_s"] < r[side]["cpu_total_s"], (side, r[side])
    p50 = next(t for t in scenario_targets(records) if "p50" in t["target"])
    assert p50["ratio"] and p50["ratio"] > 0  # a paired ratio exists (and is not judged here)


def test_setup_counts_connections_per_second_and_cpu_of_both_processes() -> None:
    for run in quick("setup"):
        record = sound(run)
        d = record["derived"]
        assert d["conn_per_s"] > 0
        assert d["cpu_ms_per_conn"] == pytest.approx(
            d["client_cpu_ms_per_conn"] + d["server_cpu_ms_per_conn"], abs=1e-3
        )
        assert record["receiver"]["connections"] == run.count + run.warmup


@pytest.mark.parametrize("unit", ["connections", "streams"])
def test_idle_memory_measures_server_rss_growth_per_idle_thing(unit: str) -> None:
    for run in quick("idle-memory", unit=unit):
        record = sound(run)
        server = record["receiver"]
        assert server["opened"] == record["sender"]["opened"] == run.count + run.warmup
        assert 0 < server["rss_warm_kib"] <= server["rss_all_kib"]
        assert record["derived"]["kib_per_idle"] > 0


def test_cli_copy_output_is_byte_identical_and_the_temp_dir_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the copy's files go
    for run in quick("cli-copy"):
        record = sound(run)
        if run.strategy == "nc" and nc_command() is None:
            assert "netcat" in record["skipped"]
            continue
        assert record["copy"]["identical"] and record["copy"]["output_bytes"] == run.size
        assert record["derived"]["mb_per_s"] > 0
    assert list(tmp_path.iterdir()) == []  # the input and output files were removed


def test_streams_scaling_sends_the_same_total_on_1_16_and_256_streams() -> None:
    totals = set()
    for run in quick("streams-scaling"):
        record = sound(run)
        assert len(record["receiver"]["streams"]) == run.streams
        assert record["derived"]["lost"] == 0 and record["derived"]["tx_cpu_s_per_m"] > 0
        totals.add(record["sender"]["sent"])
    assert totals == {25_600}


def test_a_side_that_cannot_run_here_is_a_note_not_a_failure(monkeypatch: Any) -> None:
    monkeypatch.setattr("flowproto.bench.scenarios.nc_command", lambda: None)
    record = run_scenario(Run("cli-copy", "nc", 1 << 20, count=1))
    assert record["skipped"] and scenario_problems(record) == []
    assert "Skipped here" in report.markdown([record], _meta())


def test_every_group_is_in_the_quick_plan_and_selectable_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {r.group for r in scenario_runs(0, quick=True)} == set(SCENARIO_GROUPS)
    monkeypatch.setattr(command, "adaptive_main", lambda argv: 0)
    argv = ["--group", "setup", "--quick", "--no-plots", "--out", str(tmp_path)]
    assert command.main(argv) == 0
    text = (tmp_path / "results.md").read_text()
    assert "## Connection setup" in text and "conn/s" in text
    assert '"conn_per_s"' in (tmp_path / "results.json").read_text()


def _meta() -> dict[str, Any]:
    return {"started": "now", "command": "test", "machine": "test", "link": None, "quick": True}
