"""How a command fails: one ``flowproto: error: ...`` line and exit status 1, or 130.

The run functions raise :class:`CliError` for what the user can act on, and let the
library's own exceptions through; :func:`run_trio` runs one of them under ``trio.run``
and turns every expected failure, wherever a nursery wrapped it, into one line. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

import click
import trio

from flowproto import FlowProtoError

from ._progress import finish_live_output


class CliError(Exception):
    """An error the user can act on; printed as one line, exit status 1."""


#: What ends a command with one line on stderr and exit status 1 (never a traceback).
EXPECTED_ERRORS: Final = (
    CliError,
    OSError,
    trio.BrokenResourceError,  # includes ConnectionLostError
    FlowProtoError,  # includes StreamResetError, HandshakeTimeout, MessageDecodeError
)


def flatten(exc: BaseException) -> list[BaseException]:
    """The leaf exceptions of an exception group (nurseries wrap what they raise)."""
    subs = getattr(exc, "exceptions", None)
    if isinstance(subs, tuple) and subs and all(isinstance(e, BaseException) for e in subs):
        return [leaf for e in subs for leaf in flatten(e)]
    return [exc]


def os_reason(exc: OSError) -> str:
    """Why a socket call failed, in the operating system's words (``Connection refused``)."""
    cause = exc.__cause__
    leaf: BaseException = flatten(cause)[0] if cause is not None else exc
    if isinstance(leaf, OSError) and leaf.errno is not None and leaf.errno > 0:
        return os.strerror(leaf.errno)
    if isinstance(leaf, OSError) and leaf.strerror:
        return leaf.strerror
    return str(leaf)


def describe(exc: BaseException) -> str:
    """One line for the user."""
    if isinstance(exc, OSError) and exc.__cause__ is not None:
        return f"{exc}: {os_reason(exc)}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def run_trio(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` under ``trio.run``; expected failures become one line and exit 1,
    Ctrl-C exits 130."""
    ctx = click.get_current_context()
    try:
        return trio.run(fn, *args)
    except BaseException as exc:  # sorted out below; anything unexpected is re-raised
        finish_live_output()  # the error starts a line of its own, after the bar's last
        leaves = flatten(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            click.echo("flowproto: interrupted", err=True)
            ctx.exit(130)
        if all(isinstance(e, EXPECTED_ERRORS) for e in leaves):
            click.echo(f"flowproto: error: {describe(leaves[0])}", err=True)
            ctx.exit(1)
        raise
