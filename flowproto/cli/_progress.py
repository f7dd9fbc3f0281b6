"""Live statistics: lines on stderr once a second, or a progress bar on a terminal.

:func:`every_second` calls a report on an absolute schedule, so the lines do not drift;
:func:`progress_for` gives ``send`` a callback that moves a progress bar when stderr is
a terminal and the number of messages is known before sending.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ._layer import Layer

#: ``progress(messages_done, line)``: one step of the progress bar.
ProgressCallback = Callable[[int, str], None]


def eprint(line: str) -> None:
    """One line to stderr, flushed (tests read the receiver's stderr line by line). A
    progress bar being drawn is ended first, so the line starts a line of its own."""
    if _BARS:
        _BARS[-1].end_line()
    print(line, file=sys.stderr, flush=True)


async def every_second(
    layer: Layer, report: Callable[[float], None], start: float | None = None
) -> None:
    """Call ``report(tick)`` at ``start + 1``, ``start + 2``, ... (default: from now), on
    ``layer``'s clock."""
    tick = layer.now() if start is None else start
    while True:
        tick += 1.0
        await layer.sleep_until(tick)
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


class LiveBar:
    """``send``'s progress bar: drawn at its first step (so only once connected), fitted
    to the terminal's width, and ended before any other output (:func:`eprint`,
    :meth:`end_line`). click draws it; nothing here moves the cursor by hand."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._bar: Any = None
        self._width = 0  # the terminal's columns when the bar was drawn

    def step(self, done: int, line: str) -> None:
        """``done`` more messages consumed; ``line`` is the live statistics line."""
        if self._bar is None:
            columns = shutil.get_terminal_size((80, 24)).columns
            self._width = columns
            bar_width = max(10, min(30, columns // 4))
            # "sending  [####]  100%  00:00:00  " is about bar_width + 30 columns.
            room = max(0, columns - bar_width - 31)
            self._bar = click.progressbar(
                length=self.total,
                label="sending",
                file=sys.stderr,
                width=bar_width,
                item_show_func=lambda s: _fit(s, room) if s else s,
            )
            self._bar.__enter__()
        self._bar.update(done, line)

    def end_line(self) -> None:
        """Leave the bar's line, so what follows starts on a line of its own."""
        if self._bar is not None:
            click.echo(file=sys.stderr)

    def finish(self) -> None:
        """Draw the bar's last state and end its line."""
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.__exit__(None, None, None)


def _fit(text: str, room: int) -> str:
    """``text`` cut to ``room`` columns (with an ellipsis when cut)."""
    return text if len(text) <= room else text[: max(0, room - 1)] + "…"


#: The bars being drawn (at most one): :func:`eprint` ends its line first.
_BARS: list[LiveBar] = []


def finish_live_output() -> None:
    """Finish any progress bar now: an error or a summary is about to be printed."""
    for bar in list(_BARS):
        bar.finish()


@contextmanager
def progress_for(opts: Any, quiet: bool) -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr for ``send``, or None (quiet, no terminal, no total).

    The bar is ended when the block exits, before the summary or an error is printed.
    """
    total = known_total(opts)
    if total is None or quiet or not sys.stderr.isatty():
        yield None
        return
    bar = LiveBar(total)
    _BARS.append(bar)
    try:
        yield bar.step
    finally:
        _BARS.remove(bar)
        bar.finish()
