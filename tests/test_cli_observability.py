"""The CLI's tuning options and its statistics: --json-lines and --metrics-port (spec §14).

Options are checked with click's CliRunner; the commands run as subprocesses on 127.0.0.1
(the receiver on port 0), every call bounded by a timeout. Nothing is timed.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_cli import ENV, FLOWPROTO, TIMEOUT, receiver, run_flowproto

from flowproto.cli import main

#: Every field of spec §14 that a stream reports, as --json-lines prints it.
STREAM_FIELDS = {
    "blocked_on_peer_seconds",
    "blocked_on_peer_events",
    "blocked_on_app_seconds",
    "peer_consume_rate",
    "peer_queue_depth",
    "queue_depth_messages",
    "queue_depth_bytes",
    "consume_rate",
    "consume_rate_bytes",
    "drain_seconds",
    "starvation_events",
    "starved_seconds",
    "window_bytes",
    "window_messages",
    "window_reason",
    "window_changes",
}
CONNECTION_FIELDS = {
    "rtt",
    "rtt_min",
    "window_bytes",
    "window_reason",
    "budget_bytes",
    "budget_committed_bytes",
    "budget_share_bytes",
    "blocked_on_peer_seconds",
    "starvation_events",
}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["receive", "--listen", ":0", "--no-autotune", "--latency-target", "50"], "fixed"),
        (["receive", "--listen", ":0", "--json-lines", "--output", "-"], "stdout"),
        (["receive", "--listen", ":0", "--memory-budget", "0"], "--memory-budget"),
        (["receive", "--listen", ":0", "--metrics-port", "x"], "--metrics-port"),
        (["send", "--connect", "127.0.0.1:1", "--count", "1", "--metrics-port", "70000"], "PORT"),
    ],
)
def test_bad_tuning_and_metrics_options_are_usage_errors(args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert complaint in result.output


def test_metrics_without_prometheus_client_gives_commands_that_work_from_a_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # issue #16: "pip install flowproto[metrics]" works only once published on PyPI.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # makes the import fail
    result = CliRunner().invoke(main, ["receive", "--listen", ":0", "--metrics-port", "0"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "pip install 'prometheus_client>=0.17'" in output
    assert "pip install -e '.[metrics]'" in output
    assert "flowproto[metrics]" not in output.replace("'.[metrics]'", "")


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_json_lines_report_the_spec_statistics_each_second(tmp_path: Path, backend: str) -> None:
    """spec §14: one JSON object per second, with every stream's and connection's names;
    the receiver's memory budget is reported and was never exceeded (spec §8.9). Both
    ends on either backend (#15)."""
    budget = str(4 << 20)
    with receiver(
        *("--once", "--rate", "400", "--json-lines", "--memory-budget", budget, "-q"),
        *("--backend", backend),
        cwd=tmp_path,
    ) as r:
        sent = run_flowproto(
            "send",
            *("--connect", f"127.0.0.1:{r.port}", "--size", "200", "--count", "900"),
            *("--json-lines", "--pace", "-q", "--backend", backend),
        )
        status, stdout, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    assert status == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) >= 2
    seen_streams = [s for line in lines for c in line["connections"] for s in c["streams"]]
    assert seen_streams
    for line in lines:
        assert line["role"] == "receive"
        for conn in line["connections"]:
            assert conn.keys() >= CONNECTION_FIELDS
            assert conn["budget_bytes"] == int(budget)
            assert conn["budget_committed_bytes"] <= int(budget)
            for stream in conn["streams"]:
                assert stream.keys() >= STREAM_FIELDS
    assert any(s["window_reason"] != "static" for s in seen_streams)
    sender_lines = [json.loads(line) for line in sent.stdout.splitlines()]
    assert sender_lines and all(line["role"] == "send" for line in sender_lines)


def test_no_autotune_keeps_the_window_the_options_gave(tmp_path: Path) -> None:
    with receiver(
        "--once", "--rate", "300", "--window-messages", "50", "--no-autotune", "--json-lines", "-q",
        cwd=tmp_path,
    ) as r:  # fmt: skip
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{r.port}", "--size", "100", "--count", "400", "-q"
        )
        status, stdout, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    assert status == 0, stderr
    streams = [
        s
        for line in stdout.splitlines()
        for c in json.loads(line)["connections"]
        for s in c["streams"]
    ]
    assert streams
    assert {(s["window_messages"], s["window_reason"]) for s in streams} == {(50, "static")}


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_metrics_port_serves_the_prometheus_text_format(tmp_path: Path, backend: str) -> None:
    pytest.importorskip("prometheus_client")
    with receiver(
        *("--once", "--rate", "200", "--metrics-port", "0", "--metrics-per-connection", "-q"),
        *("--backend", backend),
        cwd=tmp_path,
    ) as r:
        metrics_line = r.lines.get(timeout=TIMEOUT)
        r.stderr.append(metrics_line)
        assert metrics_line.startswith("metrics on http://127.0.0.1:"), metrics_line
        url = metrics_line.split()[-1]
        args = ["send", "--connect", f"127.0.0.1:{r.port}", "--size", "100", "--count", "250"]
        sender = subprocess.Popen([*FLOWPROTO, *args, "-q"], env=ENV)
        text = ""
        try:
            for _ in range(200):
                with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                    assert response.status == 200
                    text = response.read().decode()
                if "flowproto_window_messages{" in text:
                    break
        finally:
            assert sender.wait(timeout=TIMEOUT) == 0
        status, _, stderr = r.finish()
    assert status == 0, stderr
    for name in (
        "flowproto_window_messages",
        "flowproto_window_reason",
        "flowproto_queue_depth_messages",
        "flowproto_drain_seconds",
        "flowproto_starvation_events_total",
        "flowproto_blocked_on_peer_seconds_total",
        "flowproto_rtt_min_seconds",
        "flowproto_connection_window_bytes",
    ):
        assert name in text, name


def _scrape(url: str) -> dict[str, Any]:
    """The metric families of one scrape, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families[name]
    for sample in family.samples:
        if sample.name in (name, name + "_total") and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            return float(sample.value)
    raise AssertionError(f"{name} {labels} not in {family.samples}")


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_metrics_are_bounded_persist_past_each_connection_and_serve_only_metrics(
    tmp_path: Path, backend: str
) -> None:
    """issue #16: series labelled by ephemeral peer ports vanished with the connection, so
    a scrape after a transfer had no samples. By default no series is labelled by peer;
    process-wide counters (messages, connections, blocked time) persist and never go
    backwards across a connection's end; flowproto_info names the version; only /metrics
    is served. Parsed with prometheus_client's parser, types checked."""
    pytest.importorskip("prometheus_client")
    with receiver(
        "--rate", "500", "--metrics-port", "0", "-q", "--backend", backend, cwd=tmp_path
    ) as r:
        metrics_line = r.lines.get(timeout=TIMEOUT)
        r.stderr.append(metrics_line)
        url = metrics_line.split()[-1]
        base = url.rsplit("/", 1)[0]
        before = _scrape(url)
        assert _value(before, "flowproto_info", role="receive") == 1.0
        assert before["flowproto_info"].samples[0].labels["version"]
        scrapes = []
        for _ in range(2):  # two senders, one after the other: two connections that end
            args = ["send", "--connect", f"127.0.0.1:{r.port}", "--size", "100", "--count"]
            sender = subprocess.Popen([*FLOWPROTO, *args, "300", "-q"], env=ENV)
            try:
                while sender.poll() is None:
                    scrapes.append(_scrape(url))
            finally:
                assert sender.wait(timeout=TIMEOUT) == 0
            # The receiver forgets the connection once its close is done, which may be a
            # moment after the sender exits: scrape until it has (bounded).
            for _ in range(500):
                scrapes.append(_scrape(url))
                if _value(scrapes[-1], "flowproto_open_connections") == 0:
                    break
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/", timeout=TIMEOUT)
        info.value.close()
        assert info.value.code == 404
        r.proc.send_signal(signal.SIGTERM)
        r.finish()
    after = scrapes[-1]
    assert _value(after, "flowproto_messages", direction="received") == 600
    assert _value(after, "flowproto_connections_opened") == 2
    assert _value(after, "flowproto_streams_closed") == 2
    assert _value(after, "flowproto_connections_refused") == 0
    assert _value(after, "flowproto_open_connections") == 0
    assert _value(after, "flowproto_blocked_on_app_seconds") > 0  # kept after the streams ended
    for name, family in after.items():
        for sample in family.samples:
            assert "peer" not in sample.labels, (name, sample)  # bounded: no per-peer series
    kinds = {name: family.type for name, family in after.items()}
    assert kinds["flowproto_messages"] == "counter"
    assert kinds["flowproto_queue_depth_messages"] == "gauge"
    assert kinds["flowproto_blocked_on_peer_seconds"] == "counter"
    # spec §15.11: the sessions the senders asked for (nothing was lost, so nothing resumed)
    for name in ("flowproto_reconnects", "flowproto_resumed_sessions"):
        assert kinds[name] == "counter" and _value(after, name) == 0
    for name in ("flowproto_messages_retransmitted", "flowproto_bytes_retransmitted"):
        assert kinds[name] == "counter"
    assert kinds["flowproto_retained_bytes"] == "gauge"
    assert _value(after, "flowproto_retained_bytes") == 0  # no connection open

    def counter_samples(families: dict[str, Any]) -> dict[tuple[str, str], float]:
        return {
            (s.name, repr(sorted(s.labels.items()))): s.value
            for f in families.values()
            if f.type == "counter"
            for s in f.samples
        }

    for earlier, later in itertools.pairwise(scrapes):
        before, now = counter_samples(earlier), counter_samples(later)
        for key, value in before.items():
            assert now.get(key, 0.0) >= value, key  # never backwards, never gone


async def test_resets_and_errors_are_counted_by_code_with_a_bounded_label_set() -> None:
    """flowproto_streams_reset_total and flowproto_connection_errors_total, by code; a
    code this side does not know is UNKNOWN, so a peer cannot grow the label set."""
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from flowproto import ErrorCode
    from flowproto.cli._metrics import Watched, prometheus_text
    from flowproto.trio import ConnectionLostError, StreamResetError

    watched = Watched("receive")
    watched.count_failure(StreamResetError(1, ErrorCode.REJECTED, "", True, 3))
    watched.count_failure(StreamResetError(3, 0xDEAD, "", True, 0))
    watched.count_failure(StreamResetError(5, 0xBEEF, "", True, 0))
    watched.count_reset(ErrorCode.REFUSED_STREAM)
    watched.count_failure(ConnectionLostError("gone", error_code=ErrorCode.PROTOCOL_ERROR))
    watched.count_failure(ConnectionLostError("closed", error_code=0))  # not an error
    watched.count_refused("too many connections")
    text = prometheus_text(watched.snapshot(role="receive", messages=0, bytes=0))[0].decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    resets = {s.labels["code"]: s.value for s in families["flowproto_streams_reset"].samples}
    assert resets == {"REJECTED": 1.0, "UNKNOWN": 2.0, "REFUSED_STREAM": 1.0}
    errors = {s.labels["code"]: s.value for s in families["flowproto_connection_errors"].samples}
    assert errors == {"PROTOCOL_ERROR": 1.0}
    assert _value(families, "flowproto_connections_refused") == 1.0
