"""The README's embedding example runs as printed, and its two commands are the CI's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_block_after(heading: str) -> str:
    section = README[README.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_the_embedding_example_runs_and_shows_backpressure(tmp_path: Path) -> None:
    """spec §8.3, §8.5, §10.5: the sender waits for credit; everything is delivered."""
    script = tmp_path / "example.py"
    script.write_text(python_block_after("## Embedding in a Trio service"))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "server consumed 300 messages"
    assert lines[1] == "delivered (reported by the server): 300"
    waited = float(re.fullmatch(r"sender waited ([0-9.]+) s for credit", lines[2]).group(1))  # type: ignore[union-attr]
    assert waited > 0  # 300 messages against 16 of credit: the sender must have waited


def test_the_asyncio_embedding_example_runs_and_shows_backpressure(tmp_path: Path) -> None:
    """The asyncio twin of the example above: the same output."""
    script = tmp_path / "example_asyncio.py"
    script.write_text(python_block_after("## Embedding in an asyncio service"))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "server consumed 300 messages"
    assert lines[1] == "delivered (reported by the server): 300"
    waited = float(re.fullmatch(r"sender waited ([0-9.]+) s for credit", lines[2]).group(1))  # type: ignore[union-attr]
    assert waited > 0
    assert result.stderr == ""


def test_the_readme_starts_with_the_demo_and_the_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[0].strip().endswith("flowproto demo")
    assert blocks[1].strip().endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci
