"""Rejected is not delivered; overloaded is retryable (spec 1.1 §5.7, §5.8, §10.1, §10.5)."""

from __future__ import annotations

import sys

import pytest
from helpers import connected_pair, pump

from flowproto import (
    Connection,
    ErrorCode,
    GoAwayReceived,
    MemoryBudget,
    Role,
    Settings,
    StreamReset,
)

if sys.version_info < (3, 11):  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

QUIET = Settings(keepalive_ms=0)


def test_a_rejected_reset_reports_the_accepted_count_below_what_credit_said() -> None:
    """The receiver consumed 5 (its CREDITs said so), its application accepted 3 and
    rejected the 4th: the sender takes 3 as the final delivered count."""
    a, b = connected_pair(QUIET, QUIET)
    sid = a.open_stream()
    for _ in range(5):
        assert a.send_message(sid, b"m")
    pump(a, b)
    b.release(sid, 5, 5, 0.0)
    b.reset_stream(sid, ErrorCode.REJECTED, "undecodable message", accepted=3)
    events_a, _ = pump(a, b)
    resets = [e for e in events_a if isinstance(e, StreamReset)]
    assert [(r.error_code, r.consumed) for r in resets] == [(ErrorCode.REJECTED, 3)]


def test_the_sender_keeps_the_accepted_count_even_after_a_higher_consumed() -> None:
    a, b = connected_pair(QUIET, Settings(keepalive_ms=0, stream_messages=4))
    sid = a.open_stream()
    for _ in range(4):
        assert a.send_message(sid, b"m")
    pump(a, b)
    b.release(sid, 4, 4, 0.0)  # the replenish CREDIT reports consumed 4
    pump(a, b)
    assert a.peer_consumed(sid) == 4
    record = a.stream_record(sid)
    b.reset_stream(sid, ErrorCode.REJECTED, accepted=2)
    pump(a, b)
    assert record is not None and record.peer_consumed == 2  # final, and lower (spec §5.7)


def test_accepted_cannot_exceed_what_was_consumed() -> None:
    a, b = connected_pair(QUIET, QUIET)
    sid = a.open_stream()
    a.send_message(sid, b"m")
    pump(a, b)
    b.release(sid, 1, 1, 0.0)
    with pytest.raises(ValueError, match="2 messages accepted"):
        b.reset_stream(sid, ErrorCode.REJECTED, accepted=2)


def test_a_rejected_count_above_what_was_sent_is_a_protocol_error() -> None:
    from flowproto import RemoteProtocolError, ResetFrame

    a, b = connected_pair(QUIET, QUIET)
    sid = a.open_stream()
    a.send_message(sid, b"m")
    pump(a, b)
    with pytest.raises(RemoteProtocolError, match="2 messages accepted"):
        a.receive_data(ResetFrame(sid, ErrorCode.REJECTED, "", 2).encode(), 0.0)


def test_a_budget_refusal_is_overloaded_with_a_retry_time() -> None:
    budget = MemoryBudget(1)  # not even the floor of a window fits
    refused = Connection(Role.ACCEPTOR, QUIET, budget=budget)
    client = Connection(Role.INITIATOR, QUIET)
    events, _ = pump(client, refused)
    goaways = [e for e in events if isinstance(e, GoAwayReceived)]
    assert [(g.error_code, g.retry_after_ms) for g in goaways] == [(ErrorCode.OVERLOADED, 1000)]


# --- the Trio layer ------------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_rejecting_receiver_tells_the_sender_how_many_were_accepted() -> None:
    import trio
    from trio_helpers import flow_pair

    from flowproto.trio import StreamResetError

    async with flow_pair() as (client, server):
        stream = await client.open_stream()
        for i in range(5):
            await stream.send(i)
        peer = await server.accept_stream()
        assert [await peer.receive() for _ in range(4)] == [0, 1, 2, 3]
        await peer.reject("4th message refused")  # accepted: the 3 before it
        with pytest.raises(StreamResetError) as info:
            with trio.fail_after(5):
                while True:
                    await stream.send(99)
                    await client.ping()
    assert info.value.error_code == ErrorCode.REJECTED
    assert info.value.delivered == 3


@pytest.mark.trio
async def test_a_connection_the_budget_refuses_is_lost_as_retryable() -> None:
    import trio
    from trio_helpers import flow_pair

    from flowproto.trio import ConnectionLostError

    def flatten(exc: BaseException) -> list[BaseException]:
        if isinstance(exc, BaseExceptionGroup):
            return [leaf for inner in exc.exceptions for leaf in flatten(inner)]
        return [exc]

    with pytest.raises(BaseException) as info:
        with trio.fail_after(5):
            async with flow_pair(server={"memory_budget": MemoryBudget(1)}) as (client, _):
                await client.ping()
    lost = [e for e in flatten(info.value) if isinstance(e, ConnectionLostError)]
    # the client's: the peer said OVERLOADED and when to retry
    told = [e for e in lost if e.reason.startswith("peer closed")]
    assert told, lost
    assert all(e.retryable and e.retry_after == 1.0 for e in told)
    assert {e.error_code for e in told} == {ErrorCode.OVERLOADED}
