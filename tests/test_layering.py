"""The layers stay apart: ``import flowproto`` leaves trio and asyncio unloaded, each I/O
layer loads without the other, the core does no I/O, and every ``spec §N.M`` the code and
tests cite names a section of spec/PROTOCOL.md.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import flowproto

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(flowproto.__file__).resolve().parent
SPEC = ROOT / "spec" / "PROTOCOL.md"

#: Modules the sans-IO core must not import: no sockets, no event loops, no clock, no threads.
IO_MODULES = frozenset({"socket", "select", "selectors", "asyncio", "trio", "time", "threading"})


def core_modules() -> list[Path]:
    """flowproto/_*.py, the sans-IO core (``__main__`` only hands over to the CLI), and
    flowproto/iolayer.py."""
    # The CLI and the conformance suite are packages (flowproto/cli/, flowproto/conformance/):
    # they run under trio and are not the core; neither is anything else in a subpackage.
    paths = sorted(p for p in PACKAGE.glob("_*.py") if p.name != "__main__.py")
    assert any(p.name == "_connection.py" for p in paths), paths
    # What the two I/O layers share is written once, outside both, and is as free of I/O
    # as the core (STYLE.md).
    return [*paths, PACKAGE / "iolayer.py"]


def test_importing_flowproto_and_its_core_modules_does_not_load_trio_or_asyncio() -> None:
    names = [f"flowproto.{p.stem}" for p in core_modules() if p.name != "__init__.py"]
    code = (
        "import importlib, sys\n"
        "import flowproto\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'asyncio')\n"
        "                or m.startswith(('flowproto.trio', 'flowproto.asyncio')))\n"
        "print(' '.join(loaded))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"I/O layer modules loaded: {proc.stdout.strip()}"


@pytest.mark.parametrize(
    ("layer", "other"), [("flowproto.asyncio", "trio"), ("flowproto.trio", "flowproto.asyncio")]
)
def test_each_io_layer_loads_without_the_other(layer: str, other: str) -> None:
    code = (
        "import sys\n"
        f"import {layer}\n"
        f"print(' '.join(sorted(m for m in sys.modules if m == {other!r}\n"
        f"                      or m.startswith({other + '.'!r}))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"{layer} loaded {proc.stdout.strip()}"


def imported_top_level_names(tree: ast.AST) -> set[str]:
    """The top-level module of every absolute import in ``tree``, wherever it occurs."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in {"__import__", "import_module"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_the_core_modules_import_no_io_clock_or_thread_modules() -> None:
    offenders = {}
    for path in core_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        bad = imported_top_level_names(tree) & IO_MODULES
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_the_import_check_sees_every_kind_of_import() -> None:
    tree = ast.parse(
        "import os.path, time\n"
        "from asyncio import sleep\n"
        "from . import _frames\n"
        "def f():\n"
        "    import socket\n"
        "    importlib.import_module('trio.lowlevel')\n"
    )
    assert imported_top_level_names(tree) == {"os", "time", "asyncio", "socket", "trio"}


# --- spec citations ---------------------------------------------------------------------------

_SECTION = r"\d+(?:\.\d+)*"
#: A heading that opens a numbered section: "## 8. Flow control", "### 8.4 Receiver checks",
#: "#### 4.3.1 Sender rules" (a "§" before the number is tolerated).
_HEADING = re.compile(rf"^#{{1,6}}[ \t]+(?:§[ \t]*)?({_SECTION})\.?(?=[ \t]|$)", re.MULTILINE)
#: A citation: "spec §8.4", and the lists "spec §8.4, §8.5", "spec §4.2, §4.5 and §8.4",
#: "spec §8.4-§8.6" (each number in it is checked).
_CITATION = re.compile(
    rf"spec[ \t]+§[ \t]*{_SECTION}(?:[ \t]*(?:,|-|–|/|\band\b|\bor\b|\bto\b)\s*§[ \t]*{_SECTION})*"
)
_NUMBER = re.compile(rf"§[ \t]*({_SECTION})")


_FENCED = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.MULTILINE | re.DOTALL)


def spec_sections(text: str) -> set[str]:
    """The numbers of the section headings in ``text``, outside fenced code blocks."""
    return {m.group(1) for m in _HEADING.finditer(_FENCED.sub("", text))}


def citations(text: str) -> list[tuple[int, str]]:
    """(line number, section) for every section number cited as ``spec §...`` in ``text``."""
    found: list[tuple[int, str]] = []
    for match in _CITATION.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.extend((line, n.group(1)) for n in _NUMBER.finditer(match.group(0)))
    return found


def cited_files() -> list[Path]:
    files = []
    for folder in ("flowproto", "tests", "benchmarks"):
        files.extend(sorted((ROOT / folder).rglob("*.py")))
    return files


def test_the_citation_parser_reads_lists_and_ranges() -> None:
    text = (
        "# spec §8.4: one\n"
        "x = 1  # (spec §8.4, §8.5) and spec §4.2, §4.5 and §8.4; spec §3-§11\n"
        'raise E("over the limit (spec §7.3)")  # spec §9 R3. Not cited: §6.1\n'
    )
    assert citations(text) == [
        (1, "8.4"),
        (2, "8.4"),
        (2, "8.5"),
        (2, "4.2"),
        (2, "4.5"),
        (2, "8.4"),
        (2, "3"),
        (2, "11"),
        (3, "7.3"),
        (3, "9"),
    ]
    headings = "# Title\n## 8. Flow control\n### 8.4 Receiver checks\n#### 4.3.1 Sender rules\n"
    code = "```python\n# 7 is not a heading in a code block\n```\n"
    assert spec_sections(headings + code + "## Appendix A. notes\nsee 9.9 below\n") == {
        "8",
        "8.4",
        "4.3.1",
    }


def test_every_cited_spec_section_exists() -> None:
    assert SPEC.is_file(), f"{SPEC} is missing: the cited sections cannot be checked"
    sections = spec_sections(SPEC.read_text(encoding="utf-8"))
    # The section numbers are fixed; a few of them show the headings were read at all.
    assert {"3.1", "4.4", "8", "8.4", "9", "10.4", "13"} <= sections, sorted(sections)
    missing = []
    total = 0
    for path in cited_files():
        for line, section in citations(path.read_text(encoding="utf-8")):
            total += 1
            if section not in sections:
                missing.append(f"{path.relative_to(ROOT)}:{line}: spec §{section}")
    assert total > 100, "suspiciously few citations found: is the pattern still right?"
    assert missing == []
