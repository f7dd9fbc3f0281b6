"""Tests for the ``flowproto`` command line."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from flowproto.cli import main


def test_help_lists_demo() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "demo" in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert "0.1.0" in result.output


def test_demo_reports_not_implemented() -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 1
    assert "not implemented yet" in result.output


def test_python_m_flowproto_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flowproto", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout
