"""``send`` after its receiver restarted and lost the session (spec §15.10): the new
connection is tried again, with backoff, until the receiver is back or
``--reconnect-timeout`` passes; the first connection is never retried this way.

:class:`Restarts` waits only through its layer, so a virtual clock drives it here: no
socket, no real waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from flowproto.cli._errors import CliError
from flowproto.cli._sender import MAX_RESTARTS, RESTART_BACKOFF, Restarts, Sender, SendOptions


class VirtualLayer:
    """The part of a :class:`~flowproto.cli._layer.Layer` that Restarts uses: a clock
    that moves only when something sleeps."""

    def __init__(self) -> None:
        self.time = 100.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        self.sleeps.append(deadline - self.time)
        self.time = max(self.time, deadline)


@dataclass
class Ended:
    """What Restarts reads of a connection's Sender once its sending ended."""

    restart: bool = True  # the receiver lost the session
    signal: int | None = None  # the user stopped the run


def restarts(layer: VirtualLayer, reconnect_timeout: float = 5.0) -> Restarts:
    opts = SendOptions("127.0.0.1", 1, "raw", reconnect_timeout=reconnect_timeout)
    return Restarts(opts, cast(Any, layer))


def ended(**kwargs: Any) -> Sender:
    return cast(Sender, Ended(**kwargs))


def refused_until(layer: VirtualLayer, attempts: int) -> tuple[list[float], Any]:
    """A connect() refused ``attempts - 1`` times, then connected; the times it ran."""
    times: list[float] = []

    async def connect() -> str:
        times.append(layer.time)
        if len(times) < attempts:
            raise CliError("connection refused")
        return "connected"

    return times, connect


async def test_a_restart_connects_again_with_growing_waits_until_the_receiver_is_back() -> None:
    layer = VirtualLayer()
    r = restarts(layer)
    assert r.again(ended())
    assert r.count == 1
    times, connect = refused_until(layer, 5)
    assert await r.connect(connect) == "connected"
    assert len(times) == 5
    # RESTART_BACKOFF: each wait doubles from initial_delay, scaled by 1 ± jitter.
    nominal = [RESTART_BACKOFF.initial_delay * 2**k for k in range(4)]
    low, high = 1 - RESTART_BACKOFF.jitter, 1 + RESTART_BACKOFF.jitter
    for wait, base in zip(layer.sleeps, nominal, strict=True):
        assert base * low <= wait <= base * high


async def test_a_restart_gives_up_once_the_reconnect_timeout_would_pass() -> None:
    layer = VirtualLayer()
    r = restarts(layer, reconnect_timeout=3.0)
    assert r.again(ended())
    deadline = layer.time + 3.0
    times, connect = refused_until(layer, 10**6)  # never back
    with pytest.raises(CliError, match="refused"):
        await r.connect(connect)
    assert times[-1] < deadline  # no attempt after the deadline...
    assert layer.time < deadline  # ...and no wait past it
    assert len(times) >= 4  # 0.05 + 0.1 + 0.2 + 0.4 s (± half) fit in 3 s


async def test_the_first_connection_is_not_retried() -> None:
    layer = VirtualLayer()
    r = restarts(layer)
    times, connect = refused_until(layer, 2)
    with pytest.raises(CliError):
        await r.connect(connect)
    assert len(times) == 1
    assert layer.sleeps == []


@pytest.mark.parametrize(
    ("sender", "why"),
    [
        (Ended(restart=False), "the session was not lost"),
        (Ended(signal=2), "the user stopped the run"),
    ],
)
def test_no_new_connection_unless_the_receiver_lost_the_session(sender: Ended, why: str) -> None:
    r = restarts(VirtualLayer())
    assert not r.again(cast(Sender, sender)), why
    assert r.count == 0


def test_restarts_are_bounded() -> None:
    r = restarts(VirtualLayer())
    while r.again(ended()):
        pass
    assert r.count == MAX_RESTARTS  # a receiver that keeps restarting ends the run
