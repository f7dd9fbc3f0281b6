"""``flowproto bench`` runs from an installed wheel, in a fresh venv, from any directory.

The wheel is built from a copy of the checkout (``pip wheel --no-deps
--no-build-isolation``: no network, the test extra holds setuptools and wheel) and
installed with ``--no-deps --no-index`` into a new venv outside the checkout. The
venv reaches this interpreter's site-packages for trio, msgpack, click and pyzmq
through a ``.pth`` line, which adds the directory but runs none of the ``.pth`` files
in it, so the checkout's editable install stays out of sight: the venv's ``flowproto``
is the wheel's. The benchmarks then run from an empty directory holding decoy
``flowproto`` and ``benchmarks`` packages that fail on import, so an import through the
current directory fails the run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What a build needs from the checkout (pyproject.toml names the readme and license).
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "LICENSE", "flowproto")

DECOY = 'raise ImportError("imported through the current directory: {}")\n'


def run(args: list[str], cwd: Path, timeout: float, **kwargs: object) -> str:
    proc = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out: str = proc.stdout + proc.stderr
    return out


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(dist), str(src)],
        cwd=tmp, timeout=180,
    )  # fmt: skip
    (wheel,) = dist.glob("flowproto-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, timeout=120)
    python = venv / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        cwd=tmp, timeout=180,
    )  # fmt: skip
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            cwd=tmp, timeout=60).strip()
    )  # fmt: skip
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "outer-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return venv


def test_flowproto_bench_runs_from_a_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("__init__", "command", "harness", "peers", "workload", "adaptive", "relay"):
        assert f"flowproto/bench/{module}.py" in names
    assert "flowproto/py.typed" in names
    assert not any(n.startswith(("benchmarks/", "tests/")) for n in names)
    vectors = sorted(p.name for p in (ROOT / "spec" / "vectors").glob("*.json"))
    assert sorted(n.split("/")[-1] for n in names if "/_vectors/" in n) == vectors

    venv = fresh_venv(tmp_path, wheel)
    assert not venv.resolve().is_relative_to(ROOT)
    cwd = tmp_path / "elsewhere"
    for decoy in ("flowproto", "benchmarks"):
        (cwd / decoy).mkdir(parents=True)
        (cwd / decoy / "__init__.py").write_text(DECOY.format(decoy))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    python = str(venv / "bin" / "python")
    decoyed = subprocess.run(
        [python, "-c", "import flowproto"], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert "imported through the current directory" in decoyed.stderr  # the decoys bite
    # -I: isolated, so not the cwd; the wheel's copy, with trio from the outer .pth.
    code = "import flowproto, flowproto.bench, trio; print(flowproto.__file__)"
    where = run([python, "-I", "-c", code], cwd=cwd, timeout=60, env=env).strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where

    # The spec's vectors, installed, for implementations in other languages (issue #16).
    listed = json.loads(run([str(venv / "bin" / "flowproto"), "vectors", "--json"], cwd=cwd,
                            timeout=60, env=env))  # fmt: skip
    assert Path(listed["directory"]).resolve().is_relative_to(venv.resolve())
    for name, entry in listed["files"].items():
        assert Path(entry["path"]).read_bytes() == (ROOT / "spec" / "vectors" / name).read_bytes()

    # A regular install keeps the types visible: mypy --strict on code that uses it.
    user = cwd / "user_code.py"
    user.write_text(
        "from flowproto.trio import FlowStream, open_connection\n\n\n"
        "async def send(host: str, port: int) -> int:\n"
        "    async with open_connection(host, port) as conn:\n"
        "        stream: FlowStream = await conn.open_stream()\n"
        "        await stream.send(b'x')\n"
        "        return stream.messages_sent\n"
    )
    run([python, "-m", "mypy", "--strict", "--no-incremental", "user_code.py"], cwd=cwd,
        timeout=300, env=env)  # fmt: skip

    out = tmp_path / "out"
    log = run(
        [str(venv / "bin" / "flowproto"), "bench", "--quick", "--group", "throughput",
         "--no-plots", "--out", str(out)],
        cwd=cwd, timeout=300, env=env,
    )  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    strategies = {r["run"]["strategy"] for r in saved["runs"]}
    assert {"flowproto", "plain", "flowproto-single", "zmq"} <= strategies  # every peer kind
    assert all(r["error"] is None for r in saved["runs"])
    assert f"invariants hold in all {len(saved['runs'])} runs" in log
    assert (out / "adaptive" / "adaptive.json").is_file()  # --quick's adaptive scenario
    assert saved["meta"]["command"].startswith("flowproto bench --quick")
