"""Live statistics: lines on stderr once a second, or a progress bar on a terminal.

:func:`every_second` calls a report on an absolute schedule, so the lines do not drift;
:func:`progress_for` gives ``send`` a callback that moves a progress bar when stderr is
a terminal and the number of messages is known before sending.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import trio

#: ``progress(messages_done, line)``: one step of the progress bar.
ProgressCallback = Callable[[int, str], None]


def eprint(line: str) -> None:
    """One line to stderr, flushed (tests read the receiver's stderr line by line)."""
    print(line, file=sys.stderr, flush=True)


async def every_second(report: Callable[[float], None], start: float | None = None) -> None:
    """Call ``report(tick)`` at ``start + 1``, ``start + 2``, ... (default: from now)."""
    tick = trio.current_time() if start is None else start
    while True:
        tick += 1.0
        await trio.sleep_until(tick)
        report(tick)


def known_total(opts: Any) -> int | None:
    """How many messages ``send`` will send, if that is known before sending."""
    if opts.input is None:
        return int(opts.count) if opts.count is not None and opts.duration is None else None
    if opts.lines:
        return None
    try:
        st = os.fstat(opts.input.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    return -(-st.st_size // int(opts.chunk_size))


@contextmanager
def progress_for(opts: Any, quiet: bool) -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr for ``send``, or None (quiet, no terminal, no total)."""
    total = known_total(opts)
    if total is None or quiet or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(
        length=total, label="sending", file=sys.stderr, item_show_func=lambda s: s
    ) as bar:
        yield lambda n, line: bar.update(n, line)
