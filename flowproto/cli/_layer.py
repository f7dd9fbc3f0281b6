"""What the commands' loop-neutral parts need of an I/O layer, and nothing more.

Pacing (``_pace``), the live lines (``_progress``), ``--json-lines`` (``_metrics``), the
output's fsync (``_output``), the sender (``_sender``) and the consumer (``_consumer``) are
written once against :class:`Layer`: a clock, sleeping until a moment, a thread for a
blocking call, a deadline around some work, and the exception that ends a stream. The
thin parts that implement it are ``_layer_trio`` (``flowproto.trio``) and
``_layer_asyncio`` (``flowproto.asyncio``); only the run that uses one imports it, so
``--help`` loads neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Layer(Protocol):
    """An event loop and the flowproto layer that runs on it."""

    @property
    def name(self) -> str:
        """``"trio"`` or ``"asyncio"``, as ``--backend`` names it."""

    @property
    def end_of_stream(self) -> type[Exception]:
        """What ``receive_many()`` raises once the peer ended the stream and all was taken."""

    def now(self) -> float:
        """The loop's clock, in seconds."""

    async def sleep_until(self, deadline: float) -> None:
        """Wait until ``now()`` reaches ``deadline``."""

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, so a blocking call does not stop the loop."""

    async def until(self, deadline: float, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work()``, cancelled at ``deadline``; False if the deadline stopped it."""
