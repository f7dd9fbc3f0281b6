"""``--rate`` and ``--delay`` for the commands' loops, on :class:`flowproto.Pacer`.

The schedule is the library's own (one pacer for everything, ``flowproto/_pacing.py``):
event ``n`` passes no earlier than ``start + n / rate``, so the long-run rate is exact
whatever each sleep overshoots, and a loop that fell more than a second behind (idle, or
blocked on credit) restarts its schedule instead of catching up with a burst. Shared by
several tasks, a :class:`Pace` paces their total. It waits on either I/O layer's clock
(``_layer``).
"""

from __future__ import annotations

from flowproto import Pacer

from ._layer import Layer


class Pace:
    """Lets events through at ``rate`` per second (``None``: no limit), then ``delay`` s."""

    def __init__(self, rate: float | None, delay: float = 0.0, *, layer: Layer) -> None:
        self.layer = layer
        self.pacer = Pacer(rate or None)
        self.delay = delay

    @property
    def active(self) -> bool:
        """True if :meth:`wait` ever waits."""
        return self.pacer.limited or self.delay > 0

    async def wait(self) -> None:
        """Wait until the next event is due (it is booked now), then the delay."""
        layer = self.layer
        if self.pacer.limited:
            await layer.sleep_until(self.pacer.reserve(1, layer.now()))
        if self.delay > 0:
            await layer.sleep_until(layer.now() + self.delay)
