"""The sender cases: what a peer that connects and sends must do (``--listen``).

The sender under test connects once per case; a :class:`Receiver` (the sans-IO core
with the small windows of :data:`SENDER_WINDOWS`) checks every frame it sends against
the receiver rules while the case pokes at it: no credit, a PING, a CREDIT over the
maximum, a RESET.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import trio

from flowproto import (
    MAX_COUNTER,
    DataFrame,
    ErrorCode,
    FrameType,
    GoAwayReceived,
    LocalProtocolError,
    MessagesReceived,
    PeerBlocked,
    PongReceived,
    ResetFrame,
    StreamEnded,
    pack_body,
)

from ._probe import SENDER_WINDOWS, Case, CaseFailed, Receiver, describe, frame

SenderRun = Callable[[Receiver, float], Awaitable[str]]
SENDER_CASES: list[Case] = []


def sender_case(case_id: str, description: str) -> Callable[[SenderRun], SenderRun]:
    def register(fn: SenderRun) -> SenderRun:
        SENDER_CASES.append(Case(case_id, description, fn))
        return fn

    return register


@sender_case("3.1/1", "the sender sends its preface and HELLO without waiting for ours")
async def _(r: Receiver, wait: float) -> str:
    with trio.move_on_after(r.timeout):
        while not r.conn.handshake_complete:
            await r.step(flush=False)  # nothing from us yet
            if r.eof:
                raise CaseFailed("the sender closed the connection before its HELLO")
        await r.flush()
        return "preface and HELLO first"
    raise CaseFailed(f"no preface and HELLO within {r.timeout} s of connecting")


@sender_case("8.3/1", "the sender keeps within credit, sends messages whole, frames small")
async def _(r: Receiver, wait: float) -> str:
    await r.flush()
    received = 0
    with trio.move_on_after(wait):
        while not r.eof:
            for event in await r.step():
                if isinstance(event, MessagesReceived):
                    received += len(event.messages)
                    r.conn.release(
                        event.stream_id, event.nbytes, len(event.messages), trio.current_time()
                    )
                elif isinstance(event, StreamEnded):
                    with contextlib.suppress(LocalProtocolError):
                        r.conn.end_stream(event.stream_id)  # all consumed: the clean end
            await r.flush()
    if not received:
        raise CaseFailed("the sender sent no message")
    data_frames = sum(isinstance(f, DataFrame) for f in r.frames)
    return f"{received} messages in {data_frames} DATA frames, all within credit"


@sender_case("8.7/1", "a sender out of credit says BLOCKED at the limits it has (SHOULD)")
async def _(r: Receiver, wait: float) -> str:
    await r.flush()
    await r.until(lambda: bool(r.of(PeerBlocked)), "BLOCKED", timeout=max(r.timeout, 5.0))
    blocked = r.of(PeerBlocked)[0]
    if blocked.stream_id and (blocked.bytes_limit, blocked.messages_limit) != (
        SENDER_WINDOWS.stream_bytes,
        SENDER_WINDOWS.stream_messages,
    ):
        raise CaseFailed(f"BLOCKED at {blocked}, not at the limits we advertised")
    return f"BLOCKED on stream {blocked.stream_id}"


@sender_case("5.5/1", "the sender answers PING with PONG")
async def _(r: Receiver, wait: float) -> str:
    await r.flush()
    await r.until(lambda: r.conn.handshake_complete, "HELLO")
    ping_id = r.conn.ping(trio.current_time())
    await r.flush()
    await r.until(lambda: any(e.ping_id == ping_id for e in r.of(PongReceived)), "PONG")
    return f"PONG {ping_id}"


@sender_case("5.3/1", "a CREDIT limit above 2^62-1 is FLOW_CONTROL_ERROR at the sender too")
async def _(r: Receiver, wait: float) -> str:
    await r.flush()
    await r.until(lambda: r.conn.handshake_complete, "HELLO")
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await r.transport.send_all(
            frame(FrameType.CREDIT, 0, pack_body({"bytes": MAX_COUNTER + 1}))
        )
    with trio.move_on_after(r.timeout):
        while not r.eof and not r.of(GoAwayReceived):
            await r.step(flush=False)
    goaways = r.of(GoAwayReceived)
    if goaways:
        code = goaways[-1].error_code
        if code != ErrorCode.FLOW_CONTROL_ERROR:
            raise CaseFailed(f"GOAWAY {ErrorCode.describe(code)}, expected FLOW_CONTROL_ERROR")
        return "GOAWAY FLOW_CONTROL_ERROR"
    if r.eof and not r.strict:
        return "closed without GOAWAY"
    raise CaseFailed("no GOAWAY FLOW_CONTROL_ERROR")


@sender_case("10.3/1", "a stream reset by the receiver is never answered with RESET")
async def _(r: Receiver, wait: float) -> str:
    await r.flush()
    await r.until(lambda: bool(r.of(MessagesReceived)), "a message")
    sid = r.of(MessagesReceived)[0].stream_id
    r.conn.reset_stream(sid, ErrorCode.CANCEL, "conformance: reset by the receiver")
    await r.flush()
    ping_id = r.conn.ping(trio.current_time())
    await r.flush()
    with trio.move_on_after(r.timeout):
        while not r.eof and not any(e.ping_id == ping_id for e in r.of(PongReceived)):
            await r.step()
    answered = [f for f in r.frames if isinstance(f, ResetFrame) and f.stream_id == sid]
    if answered:
        raise CaseFailed(f"the sender answered our RESET with {describe(answered[0])}")
    return "no RESET in reply"
