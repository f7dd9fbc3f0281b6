"""One consumption-rate estimator (issue 10): the rates in messages and in bytes, and the
drain time, all come from the same samples, with or without auto-tuning (spec §8.9, §14).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_helpers import flow_pair

from flowproto import RateEstimator
from flowproto._autotune import RATE_PERIOD

MESSAGE = b"m" * 100  # the example: 100-byte messages consumed at 500/s
RATE = 500
SECONDS = 4


def test_the_estimator_smooths_both_units_from_the_same_samples() -> None:
    rate = RateEstimator(1.0)
    assert rate.fold(10.0) is None  # the first call only starts a period
    rate.count(1000, 10)
    assert rate.fold(10.5) == (2000.0, 20.0)
    assert rate.rated
    assert rate.bytes_per_second == 2000.0 and rate.messages_per_second == 20.0
    rate.count(0, 0)
    assert rate.fold(11.5) == (0.0, 0.0)
    assert rate.messages_per_second == pytest.approx(20.0 * 0.36787944, rel=1e-6)
    assert rate.bytes_per_second == pytest.approx(100 * rate.messages_per_second)
    assert rate.fold(11.5) is None  # no time elapsed: no sample
    assert not rate.due(11.5 + RATE_PERIOD / 2) and rate.due(11.5 + RATE_PERIOD)


@pytest.mark.trio
@pytest.mark.parametrize("autotune", [False, True])
async def test_consume_rates_agree_with_each_other_and_with_the_consumer(
    autojump_clock: trio.testing.MockClock, autotune: bool
) -> None:
    options = {} if autotune else {"autotune": False}
    async with flow_pair(client=options, server=options) as (client, server):
        stream = await client.open_stream()
        peer = await server.accept_stream()

        async def produce() -> None:
            for _ in range(RATE * SECONDS):
                await stream.send(MESSAGE)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            for _ in range(RATE * SECONDS):
                assert await peer.receive() == MESSAGE
                await trio.sleep(1 / RATE)  # a consumer of exactly 500 messages/s
        stats = peer.statistics()
    assert stats.consume_rate == pytest.approx(RATE, rel=0.05)
    # both from the same samples: bytes per second is exactly the (uniform) message size
    # on the wire times messages per second
    size = stats.bytes_received / stats.messages_received
    assert size == len(MESSAGE) + 2  # msgpack's bin 8 header
    assert stats.consume_rate_bytes == pytest.approx(size * stats.consume_rate, rel=1e-9)
    assert stats.drain_seconds == (
        stats.queue_depth_messages / stats.consume_rate if stats.queue_depth_messages else 0.0
    )
