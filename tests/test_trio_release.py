"""``receive_many(release=False)`` and ``FlowStream.release()``: credit after the work.

An application that must finish with a message (write it to disk) before the sender may
count it delivered takes it held, and releases it afterwards (spec §8.5, §10.5).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_helpers import flow_pair

from flowproto import ErrorCode, Settings
from flowproto.trio import StreamResetError

HANG = 30
WINDOW = Settings(stream_messages=4, keepalive_ms=0)


async def test_held_messages_return_no_credit_until_released(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §8.5: credit returns on consumption, and a held message is not consumed yet:
    the sender stays blocked, and is told nothing delivered, until release()."""
    with trio.fail_after(HANG):
        async with flow_pair(server={"settings": WINDOW}, client={"codec": "raw"}) as (c, s):
            out = await c.open_stream()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(out.send_many, [b"m%d" % i for i in range(8)])
                inbound = await s.accept_stream()
                inbound.codec = out.codec
                batch = await inbound.receive_many(10, release=False)
                assert batch == [b"m0", b"m1", b"m2", b"m3"]
                await trio.testing.wait_all_tasks_blocked()
                assert out.messages_sent == 4  # the window is still full
                assert out.statistics().delivered in (None, 0)
                assert inbound.messages_received == 0
                inbound.release(3)
                await trio.testing.wait_all_tasks_blocked()
                assert out.statistics().delivered == 3
                assert out.messages_sent == 4 + 3  # three came back, one is still held
                with pytest.raises(ValueError, match=r"release\(5\), but 1 messages are held"):
                    inbound.release(5)
                inbound.release()
                assert inbound.messages_received == 4
                assert inbound.bytes_received == 8
                rest: list[bytes] = []
                while len(rest) < 4:
                    rest += await inbound.receive_many(10)
                assert rest == [b"m4", b"m5", b"m6", b"m7"]


async def test_a_reset_drops_held_messages_and_release_then_does_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §5.7: a RESET carries what was consumed; held messages were not."""
    with trio.fail_after(HANG):
        async with flow_pair(server={"settings": WINDOW}, client={"codec": "raw"}) as (c, s):
            out = await c.open_stream()
            await out.send_many([b"a", b"b", b"c"])
            inbound = await s.accept_stream()
            await inbound.receive_many(10, release=False)
            inbound.release(1)
            await inbound.reset(ErrorCode.CANCEL, "stop")
            inbound.release()  # nothing held any more: no error, no credit
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(StreamResetError) as info:
                await out.send(b"d")
            assert info.value.delivered == 1
            assert inbound.messages_received == 1
