"""The README's "Securing a receiver" example runs as printed (issue 12).

The certificates are made by the README's own script, the receiver and the senders run
the README's commands (with port 0 for the receiver, and its real address for the
senders), and the refused sender prints exactly the line the README shows.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_access import ENV, FLOWPROTO, TIMEOUT, Process

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PORT = "9443"


def section(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n## ", start + len(heading))
    return README[start : end if end != -1 else None]


def command(line: str, address: str) -> list[str]:
    """A README command line as argv: ``python -m flowproto``, at ``address``."""
    args = shlex.split(line.replace(f"127.0.0.1:{PORT}", address))
    assert args[0] == "flowproto"
    return [*FLOWPROTO, *args[1:]]


def test_the_mutual_tls_example_runs_and_a_sender_without_a_certificate_gets_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = section("## Securing a receiver")
    shell = re.search(r"```sh\n(.*?)```", text, re.S)
    shown = re.search(r"```text\n\$ (.*?)\n(.*?)\n```", text, re.S)
    assert shell is not None and shown is not None
    script = re.search(r"cat > make_certs.py <<'EOF'\n(.*?)\nEOF\n", shell.group(1), re.S)
    assert script is not None
    (tmp_path / "make_certs.py").write_text(script.group(1))
    subprocess.run(
        [sys.executable, "make_certs.py"], cwd=tmp_path, check=True, timeout=TIMEOUT, env=ENV
    )
    lines = shell.group(1).splitlines()
    receive = next(line for line in lines if line.startswith("flowproto receive"))
    send = next(line for line in lines if line.startswith("flowproto send"))
    data = os.urandom(100_000)
    (tmp_path / "data.bin").write_bytes(data)

    monkeypatch.chdir(tmp_path)  # the README's relative paths
    recv = Process(command(receive, "127.0.0.1:0"))
    try:
        address = recv.wait_for_line("listening on ").removeprefix("listening on ")
        good = subprocess.run(
            command(send, address), capture_output=True, text=True, timeout=TIMEOUT, env=ENV
        )
        assert good.returncode == 0, good.stderr
        refused = subprocess.run(
            command(shown.group(1), address),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=ENV,
        )
        status, _, stderr = recv.interrupt()
    finally:
        recv.close()
    assert refused.returncode == 1
    assert refused.stderr == shown.group(2).replace(f"127.0.0.1:{PORT}", address) + "\n"
    assert status == 130, stderr
    assert (tmp_path / "copy.bin").read_bytes() == data
