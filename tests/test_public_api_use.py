"""The programs use flowproto only through its public API (issue 10, STYLE.md).

Every module of the packages in :data:`PACKAGES` is parsed, and the test fails on

1. an underscore attribute of anything but ``self`` or ``cls``: ``conn._core``, and
   ``getattr(conn, "_core")`` (also ``setattr``/``hasattr``/``delattr``);
2. an import of a private flowproto module from outside the package itself:
   ``import flowproto._frames``, ``from .._credit import ...``, ``from
   flowproto.trio._stream import ...``;
3. an import of a private name from another module: ``from flowproto.trio import
   _serve_connection`` (a package's own private modules, ``from ._probe import Probe``,
   are its own business; a private name is private to its module, even in the package).

Dunder names (``__version__``, ``obj.__class__``) are not private. A program that needs a
private has found a missing public name: add it to the layer below (in ``__all__``).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import flowproto

FLOWPROTO = Path(flowproto.__file__).resolve().parent
#: The packages held to the public API; flowproto/trio joins later.
PACKAGES = ("asyncio", "cli", "conformance")
#: Built-ins that read or write an attribute named by a string.
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def is_private(name: str) -> bool:
    """``_x`` is private; ``__x__`` (a dunder) and ``x`` are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` names, for a module of ``flowproto.<package>``."""
    if not node.level:
        return node.module or ""
    base = ["flowproto", package][: max(0, 3 - node.level)]
    return ".".join(base + ([node.module] if node.module else []))


def _private_module(module: str, package: str) -> bool:
    """A flowproto module with a private part, outside ``flowproto.<package>``."""
    parts = module.split(".")
    if parts[0] != "flowproto" or parts[:2] == ["flowproto", package]:
        return False
    return any(is_private(part) for part in parts[1:])


def _import_violations(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    found = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if _private_module(alias.name, package):
                found.append(f"imports private module {alias.name}")
        return found
    module = _absolute(node, package)
    if module.split(".")[0] != "flowproto":
        return found
    if _private_module(module, package):
        found.append(f"imports from private module {module}")
    for alias in node.names:
        if not is_private(alias.name):
            continue
        if module == f"flowproto.{package}":  # from . import _errors: a module of its own
            continue
        found.append(f"imports private name {alias.name} from {module}")
    return found


def violations(source: str, package: str) -> list[str]:
    """Every use of a private of another module in ``source``, a module of
    ``flowproto.<package>``, as ``"line N: what"``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend((node.lineno, text) for text in _import_violations(node, package))
        elif isinstance(node, ast.Attribute):
            if is_private(node.attr) and not _is_self(node.value):
                found.append((node.lineno, f"uses {ast.unparse(node)}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
            and not _is_self(node.args[0])
        ):
            found.append((node.lineno, f"uses {ast.unparse(node)}"))
    return [f"line {line}: {text}" for line, text in sorted(found)]


def package_violations(directory: Path, package: str) -> dict[str, list[str]]:
    """:func:`violations` for every module of a package directory, by file name."""
    modules = sorted(directory.glob("*.py"))
    assert modules, f"no modules in {directory}"
    result = {}
    for path in modules:
        found = violations(path.read_text(encoding="utf-8"), package)
        if found:
            result[path.name] = found
    return result


# --- the packages ----------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_the_package_uses_only_public_names_of_flowproto(package: str) -> None:
    assert package_violations(FLOWPROTO / package, package) == {}


def test_a_planted_violation_in_a_copy_of_the_cli_is_found(tmp_path: Path) -> None:
    copy = tmp_path / "cli"
    shutil.copytree(FLOWPROTO / "cli", copy)
    assert package_violations(copy, "cli") == {}
    module = copy / "_run_send.py"
    module.write_text(
        module.read_text(encoding="utf-8") + "\n\ndef peek(conn):\n    return conn._core\n",
        encoding="utf-8",
    )
    found = package_violations(copy, "cli")
    assert list(found) == ["_run_send.py"]
    assert found["_run_send.py"][0].endswith("uses conn._core")


# --- the checker ---------------------------------------------------------------------------


def test_the_checker_sees_private_attributes_of_other_objects() -> None:
    source = (
        "class A:\n"
        "    def f(self, conn):\n"
        "        self._x = conn._core\n"  # self is fine, conn is not
        "        cls._y = 1\n"
        "        conn.__class__, conn.public\n"
        "        return getattr(conn, '_lost'), getattr(self, '_mine')\n"
        "setattr(obj, '_state', 1)\n"
        "hasattr(obj, '__len__'), getattr(obj, name)\n"
        "stream.connection._core._streams\n"
    )
    assert violations(source, "cli") == [
        "line 3: uses conn._core",
        "line 6: uses getattr(conn, '_lost')",
        "line 7: uses setattr(obj, '_state', 1)",
        "line 9: uses stream.connection._core",
        "line 9: uses stream.connection._core._streams",
    ]


def test_the_checker_sees_private_modules_and_names_imported() -> None:
    source = (
        "import flowproto._frames\n"
        "import flowproto.trio._stream as s\n"
        "import flowproto.cli._errors\n"  # its own module
        "from flowproto._credit import SendCredit\n"
        "from .._frames import HEADER\n"
        "from ..trio._serve import serve\n"
        "from flowproto.trio import _serve_connection, serve_connection\n"
        "from flowproto import _version, __version__, Connection\n"
        "from ._errors import CliError, _helper\n"  # own module: the name is still private
        "from . import _errors, demo\n"  # own modules
        "from .. import _frames\n"
        "import trio._core\n"  # not flowproto: not this test's business
        "from flowproto.cli._options import host_port\n"
    )
    assert violations(source, "cli") == [
        "line 1: imports private module flowproto._frames",
        "line 2: imports private module flowproto.trio._stream",
        "line 4: imports from private module flowproto._credit",
        "line 5: imports from private module flowproto._frames",
        "line 6: imports from private module flowproto.trio._serve",
        "line 7: imports private name _serve_connection from flowproto.trio",
        "line 8: imports private name _version from flowproto",
        "line 9: imports private name _helper from flowproto.cli._errors",
        "line 11: imports private name _frames from flowproto",
    ]


def test_the_checker_resolves_relative_imports_against_the_package() -> None:
    # In flowproto/conformance, ``from ._probe import`` is its own; from the CLI it is not.
    assert violations("from flowproto.conformance._probe import Probe\n", "conformance") == []
    assert violations("from flowproto.conformance._probe import Probe\n", "cli") == [
        "line 1: imports from private module flowproto.conformance._probe"
    ]
    assert violations("from ...x import y\n", "cli") == []  # outside flowproto
