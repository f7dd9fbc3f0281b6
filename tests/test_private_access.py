"""The I/O layers and the CLI use only the core's public API (issue 10, STYLE.md).

Two checks, each able to fail:

1. Statically, no module of an I/O layer or of the programs imports a private flowproto
   module (``flowproto._x``) or a private name (``_x``) from any flowproto module: they
   import from ``flowproto`` (and the programs from ``flowproto.trio``).
2. Dynamically, while a Trio workload runs (streams opened, messages sent and received,
   credit, ping, statistics, reset, close), no code outside the core reads or writes an
   underscore attribute of a core object (``Connection``, a stream record, credit).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_helpers import flow_pair

import flowproto
from flowproto import Connection, ReceiveWindow, SendCredit, StreamRecord

PACKAGE = Path(flowproto.__file__).resolve().parent
#: Packages that must use only public names of the layers below.
LAYERS = ("trio", "asyncio", "cli", "conformance", "bench")


def layer_modules() -> list[Path]:
    paths = [p for name in LAYERS for p in sorted((PACKAGE / name).glob("*.py"))]
    assert any(p.parent.name == "trio" for p in paths), "the Trio layer is a package"
    return paths


def private_imports(tree: ast.AST, package: str) -> list[str]:
    """Imports of private flowproto modules or private names, in a module of ``package``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against flowproto.<package>
                base = ["flowproto", package][: 3 - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("flowproto"):
                continue
            parts = module.split(".")
            own = parts[:2] == ["flowproto", package]  # the layer's own modules are its own
            if not own and any(part.startswith("_") for part in parts):
                found.append(f"from {module} import ...")
            for alias in node.names:
                if not own and alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"from {module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "flowproto" and any(p.startswith("_") for p in parts[1:2]):
                    found.append(f"import {alias.name}")
    return found


def test_the_checker_sees_private_imports() -> None:
    code = (
        "from flowproto._credit import SendCredit\n"
        "from .._frames import HEADER\n"
        "from flowproto.trio import _serve_connection\n"
        "import flowproto._connection\n"
        "from flowproto import Connection\n"
        "from ._stream import FlowStream\n"
    )
    assert private_imports(ast.parse(code), "cli") == [
        "from flowproto._credit import ...",
        "from flowproto._frames import ...",
        "from flowproto.trio import _serve_connection",
        "import flowproto._connection",
    ]


def test_io_layers_and_programs_import_only_public_names() -> None:
    offenders = {}
    for path in layer_modules():
        found = private_imports(ast.parse(path.read_text(encoding="utf-8")), path.parent.name)
        if found:
            offenders[f"{path.parent.name}/{path.name}"] = found
    assert offenders == {}


# --- dynamic: reads of core privates from outside the core ----------------------------------

CORE_CLASSES = (Connection, StreamRecord, SendCredit, ReceiveWindow)


def _outside_core(frame: Any) -> bool:
    name = frame.f_globals.get("__name__", "")
    # the core: flowproto and its private modules (flowproto._x), nothing in a subpackage
    return not (name == "flowproto" or (name.startswith("flowproto._") and name.count(".") == 1))


@contextmanager
def record_private_access() -> Iterator[list[str]]:
    """Record ``obj._name`` reads and writes on core objects by code outside the core."""
    seen: list[str] = []
    saved = {}
    for cls in CORE_CLASSES:
        saved[cls] = (cls.__getattribute__, cls.__setattr__)

        def getattribute(self: Any, name: str, _orig: Any = cls.__getattribute__) -> Any:
            if name[:1] == "_" and name[:2] != "__" and _outside_core(sys._getframe(1)):
                seen.append(f"{sys._getframe(1).f_globals['__name__']} reads .{name}")
            return _orig(self, name)

        def setattr_(self: Any, name: str, value: Any, _orig: Any = cls.__setattr__) -> None:
            if name[:1] == "_" and _outside_core(sys._getframe(1)):
                seen.append(f"{sys._getframe(1).f_globals['__name__']} writes .{name}")
            _orig(self, name, value)

        cls.__getattribute__ = getattribute  # type: ignore[method-assign]
        cls.__setattr__ = setattr_  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        for cls, (get, set_) in saved.items():
            cls.__getattribute__ = get  # type: ignore[method-assign]
            cls.__setattr__ = set_  # type: ignore[method-assign]


def test_the_recorder_sees_a_private_read_from_outside_the_core() -> None:
    conn = Connection(flowproto.Role.INITIATOR)
    with record_private_access() as seen:
        conn.data_to_send()  # the core reading its own privates is fine
        assert not seen
        conn._streams  # noqa: B018 - a test module is outside the core
    assert seen == ["test_private_access reads ._streams"]


@pytest.mark.trio
async def test_the_trio_layer_touches_no_core_private() -> None:
    with record_private_access() as seen:
        async with flow_pair() as (client, server):
            stream = await client.open_stream()
            peer = await server.accept_stream()
            for i in range(50):
                await stream.send({"n": i})
            await stream.send_many([{"n": i} for i in range(50, 100)])
            got = [await peer.receive() for _ in range(60)]
            got += await peer.receive_many()
            while len(got) < 100:
                got += await peer.receive_many()
            assert [m["n"] for m in got] == list(range(100))
            await client.ping()
            stream.statistics()
            peer.statistics()
            client.statistics()
            server.statistics()
            await stream.aclose()
            with pytest.raises(trio.EndOfChannel):
                await peer.receive()
            other = await client.open_stream()
            await other.send({"x": 1})
            await other.reset()
    assert seen == []
