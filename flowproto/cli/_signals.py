"""The signals that stop ``send`` and ``receive`` cleanly (summary printed, exit status
128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from typing import Final

import trio

#: Ctrl-C, a service manager's SIGTERM and a closed terminal's SIGHUP.
STOP_SIGNALS: Final = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def stop_signal_receiver() -> AbstractContextManager[AsyncIterator[int] | None]:
    """``trio.open_signal_receiver`` for :data:`STOP_SIGNALS`; ``None`` off the main
    thread, where signals never arrive (tests run commands there)."""
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return trio.open_signal_receiver(*STOP_SIGNALS)


async def first_stop_signal(signals: AsyncIterator[int]) -> str:
    """The name of the first of :data:`STOP_SIGNALS` to arrive (``"SIGINT"``, ...)."""
    async for signum in signals:
        return signal.Signals(signum).name
    raise RuntimeError("the signal receiver ended")  # trio's never does


def exit_status(signal_name: str) -> int:
    """128 + the signal's number, as shells report a process a signal stopped."""
    return 128 + int(signal.Signals[signal_name])
