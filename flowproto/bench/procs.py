"""How the benchmarks start their peer processes: by module name, never via the cwd.

A peer runs as ``python -m flowproto.bench.<module>`` with the interpreter of the
harness, from an empty scratch directory and with ``PYTHONSAFEPATH`` set, so nothing
in the directory the benchmarks were started from can be imported in its place. A
child imports the same ``flowproto`` as its parent: installed (a wheel in
site-packages) it finds it there; imported from a source tree (a checkout used without
installing it), that tree is put first on the child's ``PYTHONPATH``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import sysconfig
import tempfile
from functools import cache
from pathlib import Path

import flowproto


def python_module(module: str) -> list[str]:
    """The command line that runs ``flowproto.bench.<module>`` as a program."""
    return [sys.executable, "-m", f"flowproto.bench.{module}"]


def child_env() -> dict[str, str]:
    """The environment of a peer process (see the module docstring)."""
    env = dict(os.environ)
    env["PYTHONSAFEPATH"] = "1"  # Python >= 3.11: no cwd or script dir on sys.path
    root = Path(flowproto.__file__).resolve().parent.parent
    installed = {
        Path(p).resolve()
        for p in (sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))
        if p
    }
    if root not in installed:
        rest = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(root) + (os.pathsep + rest if rest else "")
    return env


@cache
def scratch_dir() -> Path:
    """An empty directory, removed at exit: the peers' working directory."""
    path = Path(tempfile.mkdtemp(prefix="flowproto-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
