"""What the CLI prints, from its pure formatters (flowproto/cli/_printing.py), and the
conformance report and exit status, without running anything."""

from __future__ import annotations

import json

import pytest

from flowproto.cli._printing import (
    demo_verdict,
    fmt_bytes,
    format_address,
    json_line,
    json_summary,
    receive_summary,
)
from flowproto.cli._run_demo import DemoResult, DemoSample
from flowproto.conformance import CASES, Result, exit_status, report


def demo(**changes: float) -> DemoResult:
    fields = dict(
        sent=616, received=616, delivered=616, window=16, peak_buffered=16, seconds_blocked=2.98
    )
    fields.update(changes)
    return DemoResult(**fields)  # type: ignore[arg-type]


def test_the_demo_verdict_says_backpressure_worked_when_the_sender_waited() -> None:
    r = demo()
    assert r.ok
    assert demo_verdict(r) == (
        "\nsent 616, received 616, lost 0; receiver buffer peaked at 16 ≤ window 16; "
        "sender spent 3.0 s blocked on credit — backpressure worked"
    )


def test_the_demo_verdict_suggests_a_lower_rate_when_credit_never_ran_out() -> None:
    assert demo_verdict(demo(seconds_blocked=0.0)).endswith(
        "credit never ran out (try a lower --rate)"
    )


@pytest.mark.parametrize("changes", [{"received": 615}, {"delivered": 600}, {"peak_buffered": 17}])
def test_the_demo_fails_on_a_lost_message_or_a_buffer_over_its_window(
    changes: dict[str, float],
) -> None:
    r = demo(**changes)
    assert not r.ok
    assert demo_verdict(r).startswith("FAILED: sent 616, received ")


def test_a_demo_row_lines_up_under_the_header() -> None:
    from flowproto.cli._printing import demo_header, demo_row

    header = demo_header("127.0.0.1:9", 200, 16, 100, 3).splitlines()[-1]
    row = demo_row(DemoSample(1.0, 216, 200, 16, 0.99), 16)
    assert row == "    1 s     216       200         16 of 16                    0.99 s"
    assert len(row) == len(header)


def test_formatters_of_sizes_and_addresses() -> None:
    assert [fmt_bytes(n) for n in (999, 1000, 1_234_567, 5e12)] == [
        "999 B",
        "1.0 kB",
        "1.2 MB",
        "5000.0 GB",
    ]
    assert format_address(("::1", 9000, 0, 0)) == "[::1]:9000"
    assert format_address(("127.0.0.1", 9000)) == "127.0.0.1:9000"


def test_the_receive_summary_adds_latency_only_when_measured() -> None:
    result = {
        "messages": 10,
        "bytes": 1000,
        "seconds": 2.0,
        "msgs_per_s": 5.0,
        "mb_per_s": 0.0005,
        "buffered_peak_messages": 3,
    }
    assert receive_summary(result) == [
        "received 10 messages (1000 bytes) in 2.00 s: 5 msg/s, 0.00 MB/s; "
        "buffer peaked at 3 messages"
    ]
    lines = receive_summary({**result, "latency_ms": {"p50": 1.5, "p99": 9.0, "max": 12.25}})
    assert lines[1] == "latency p50 1.5 ms, p99 9.0 ms, max 12.25 ms"


def test_a_summary_gives_no_rate_over_a_moment() -> None:
    """issue #16: 100 messages that arrived within 80 µs were "1225926 msg/s"."""
    from flowproto.cli._printing import summary_rate

    assert summary_rate(100, 0.00008) is None
    assert summary_rate(2026, 1.0) == 2026.0
    assert summary_rate(10_000_000, 2.0, 1e6, 3) == 5.0
    result = {
        "messages": 100,
        "bytes": 10_000,
        "seconds": 0.00008,
        "msgs_per_s": None,
        "mb_per_s": None,
        "buffered_peak_messages": 100,
    }
    assert receive_summary(result) == [
        "received 100 messages (10000 bytes) in 0.00 s (too short for a rate); "
        "buffer peaked at 100 messages"
    ]


def test_a_msgpack_message_becomes_one_json_line() -> None:
    assert json_line({"a": b"\x00\x01", "n": 1}) == b'{"a": {"bytes_base64": "AAE="}, "n": 1}\n'
    assert json_line("héllo") == '"héllo"\n'.encode()
    # bytes as a map key cannot be JSON: the line says what it was instead
    assert json.loads(json_line({b"k": 1})) == {"repr": "{b'k': 1}"}
    assert json_summary({"a": 1, "b": [1, 2]}) == '{"a": 1, "b": [1, 2]}'


def test_the_conformance_report_counts_outcomes_and_exit_status_fails_only_on_fail() -> None:
    results = [
        Result(CASES[0], "pass", "GOAWAY PROTOCOL_ERROR, closed", 0.01234),
        Result(CASES[1], "skip", "not here", 0.0),
    ]
    assert exit_status(results) == 0
    summary = report(results, "127.0.0.1:9")
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (1, 0, 1)
    assert summary["cases"][0] == {
        "id": CASES[0].id,
        "description": CASES[0].description,
        "result": "pass",
        "answer": "GOAWAY PROTOCOL_ERROR, closed",
        "seconds": 0.012,
    }
    assert exit_status([*results, Result(CASES[2], "FAIL", "no answer", 2.0)]) == 1
