"""Sizes and counts with units on the command line (issue #16): ``--size 1KiB``,
``--window-bytes 4M``, ``--count 10k``; defaults shown as people read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import flowproto, receiver, run_flowproto
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from flowproto.cli import main
from flowproto.cli._options import UNITS, parse_quantity
from flowproto.cli._printing import human_size


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100", 100),
        ("1_000", 1000),
        ("10k", 10_000),
        ("10K", 10_000),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("1kib", 1024),
        ("64KiB", 65_536),
        ("4M", 4_000_000),
        ("4MiB", 4_194_304),
        ("4 MiB", 4_194_304),
        ("1.5K", 1500),
        ("1.5Ki", 1536),
        ("2G", 2_000_000_000),
        ("5b", 5),
    ],
)
def test_quantities_parse_as_iperf3_and_pv_read_them(text: str, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "x", "B", "-3", "2.5", "1.0005k", "4m", "4 MiB s", "0x10"])
def test_what_is_not_a_whole_quantity_is_refused(text: str) -> None:
    assert parse_quantity(text) is None


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS)))
def test_a_number_with_any_unit_parses_to_number_times_unit(n: int, unit: str) -> None:
    assert parse_quantity(f"{n}{unit}") == n * UNITS[unit]
    assert parse_quantity(f"{n} {unit}B") == n * UNITS[unit]


def test_sizes_print_as_people_read_them() -> None:
    assert human_size(4 * 1024 * 1024) == "4 MiB"
    assert human_size(65_536) == "64 KiB"
    assert human_size(1000) == "1000 B"
    assert human_size(100) == "100 B"


def test_help_shows_byte_defaults_with_units() -> None:
    receive = CliRunner().invoke(main, ["receive", "--help"]).output
    send = CliRunner().invoke(main, ["send", "--help"]).output
    assert "[default: 4 MiB]" in receive
    assert "4194304" not in receive
    assert "[default: 64 KiB]" in send
    assert "65536" not in send


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["send", "--connect", "127.0.0.1:9", "--size", "1.5"], "--size"),
        (["send", "--connect", "127.0.0.1:9", "--count", "10q"], "--count"),
        (["send", "--connect", "127.0.0.1:9", "--size", "4B"], "--size"),  # under 8 bytes
        (["receive", "--listen", "127.0.0.1:0", "--window-bytes", "0KiB"], "--window-bytes"),
    ],
)
def test_a_bad_quantity_is_a_usage_error_naming_its_option(args: list[str], option: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert option in result.output


def test_a_transfer_with_units_moves_what_the_units_say(tmp_path: Path) -> None:
    with receiver("--window-bytes", "64KiB", "--once", "-q", "--json", cwd=tmp_path) as (r, port):
        sent = run_flowproto(
            *("send", "--connect", f"127.0.0.1:{port}", "--size", "1KiB", "--count", "2k"),
            *("--json", "-q"),
            cwd=tmp_path,
        )
        status, stdout, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["messages"] == summary["delivered"] == 2000
    assert summary["bytes"] == 2000 * 1024
    assert status == 0, stderr
    assert json.loads(stdout)["messages"] == 2000


def test_a_bare_port_listens_and_connects_on_loopback_only(tmp_path: Path) -> None:
    # issue #16: "--listen 9000" was rejected; a bare port is 127.0.0.1, never every
    # interface by accident (":PORT" asks for every interface).
    with flowproto("receive", "--listen", "0", "--once", "-q", cwd=tmp_path) as r:
        port = int(r.wait_for(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
        sent = run_flowproto(
            "send", "--connect", str(port), "--count", "3", "-q", "--json", cwd=tmp_path
        )
        status, _, stderr = r.finish()
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["delivered"] == 3
    assert status == 0, stderr
