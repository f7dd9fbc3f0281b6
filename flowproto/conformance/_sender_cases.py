"""The sender cases: what a peer that connects and sends must do (``--listen``).

The sender under test connects once per case; a :class:`Receiver` (the sans-IO core
with the small windows of :data:`SENDER_WINDOWS`) checks every frame it sends against
the receiver rules while the case pokes at it: no credit, a PING, a CREDIT over the
maximum, a RESET, a small ``max_streams``, a GOAWAY. The cases run in the order of
:data:`SENDER_CASES`; new ones go at its end.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

import trio

from flowproto import (
    MAX_COUNTER,
    BlockedFrame,
    CreditFrame,
    DataFrame,
    ErrorCode,
    Event,
    FrameType,
    GoAwayReceived,
    LocalProtocolError,
    MessagesReceived,
    PeerBlocked,
    PongReceived,
    ResetFrame,
    StreamEnded,
    StreamReset,
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


# --- the sender's streams, and cases on opening them (spec §6.4, §10.4) ----------------------


class _SenderStreams:
    """The sender's streams as this receiver sees them, frame by frame in wire order.

    A stream counts from the first DATA, CREDIT or BLOCKED the sender sends with a new id
    (spec §6.2) until it is closed in our view: END_STREAM both ways, or a RESET either way
    (spec §6.3). Our view of a stream closes no later than the sender's (spec §6.4: we send
    our END_STREAM before the sender can receive it), so a new stream that arrives while
    ``limit`` of its streams are open in our view was opened past ``max_streams`` in the
    sender's own count too: a violation, never a race.
    """

    def __init__(self, r: Receiver, limit: int) -> None:
        self.r = r
        self.limit = limit
        self.open: dict[int, set[str]] = {}  # stream id -> the sides that ended it
        self.opened: list[int] = []
        self.peak = 0
        self._read = 0  # frames of r.frames already seen

    def read(self) -> list[int]:
        """Take in the frames the sender sent since the last call; the streams they opened.

        Raises:
            CaseFailed: a stream opened while ``limit`` were open (spec §6.4).
        """
        new: list[int] = []
        for f in self.r.frames[self._read :]:
            sid = f.stream_id
            if sid == 0 or sid % 2 == 0:
                continue  # the connection, or a stream of ours
            highest = self.opened[-1] if self.opened else 0
            if isinstance(f, (DataFrame, CreditFrame, BlockedFrame)) and sid > highest:
                if len(self.open) >= self.limit:  # spec §6.4
                    raise CaseFailed(
                        f"the sender opened stream {sid} while {len(self.open)} of its streams "
                        f"were open; we advertised max_streams {self.limit} (spec §6.4)"
                    )
                self.open[sid] = set()
                self.opened.append(sid)
                new.append(sid)
                self.peak = max(self.peak, len(self.open))
            if isinstance(f, ResetFrame):
                self.open.pop(sid, None)
            elif isinstance(f, DataFrame) and f.end_stream:
                self._ended(sid, "sender")
        self._read = len(self.r.frames)
        return new

    def _ended(self, sid: int, side: str) -> None:
        sides = self.open.get(sid)
        if sides is not None:
            sides.add(side)
            if len(sides) == 2:
                del self.open[sid]  # END_STREAM both ways: closed (spec §6.3)

    def consume(self, events: Sequence[Event]) -> int:
        """Consume every message at once, end each stream the sender ended once it is all
        consumed (the clean end, spec §10.5), drop streams reset by the sender; returns
        the number of messages."""
        received = 0
        for event in events:
            if isinstance(event, MessagesReceived):
                received += len(event.messages)
                self.r.conn.release(
                    event.stream_id, event.nbytes, len(event.messages), trio.current_time()
                )
            elif isinstance(event, StreamEnded):
                with contextlib.suppress(LocalProtocolError):
                    self.r.conn.end_stream(event.stream_id)
                    self._ended(event.stream_id, "receiver")
            elif isinstance(event, StreamReset):
                self.open.pop(event.stream_id, None)
        return received


@sender_case("6.4/1", "the sender never has more streams open than our max_streams (2)")
async def _(r: Receiver, wait: float) -> str:
    # spec §6.4: "An endpoint MUST NOT open a stream when the number of streams it opened
    # that are not closed in its own view equals or exceeds the peer's max_streams." A
    # sender with more streams to send than that waits for one to close, or gives up.
    limit = 2
    r.advertise(dataclasses.replace(SENDER_WINDOWS, max_streams=limit))
    await r.flush()
    streams = _SenderStreams(r, limit)
    received = 0
    with trio.move_on_after(wait):
        while not r.eof:
            events = await r.step(flush=False)
            streams.read()
            received += streams.consume(events)
            await r.flush()
    if not streams.opened:
        raise CaseFailed("the sender opened no stream")
    n = len(streams.opened)
    return (
        f"{n} stream{'s' if n != 1 else ''}, at most {streams.peak} open at once "
        f"(max_streams {limit}); {received} messages"
    )


@sender_case("10.4/1", "after our graceful GOAWAY the sender opens no stream; open ones finish")
async def _(r: Receiver, wait: float) -> str:
    # spec §10.4: the receiver of a GOAWAY "MUST NOT open new streams", and with NO_ERROR
    # "continues its streams at or below last_stream to their normal end". With max_streams
    # 1 and the GOAWAY sent as soon as the sender's first stream opens (we consume nothing
    # and end no stream before it), the sender has no free slot until it has received the
    # GOAWAY: any stream it opens after its first breaks §10.4 (or §6.4), whatever the
    # timing. A sender with more to send than one stream gives that up; one stream finishes.
    r.advertise(dataclasses.replace(SENDER_WINDOWS, max_streams=1))
    await r.flush()
    streams = _SenderStreams(r, 1)
    await r.until(lambda: bool(streams.read() or streams.opened), "frames opening a stream")
    last = streams.opened[0]
    r.conn.close()  # GOAWAY(last_stream = the one stream accepted, NO_ERROR)
    await r.flush()
    before = streams.consume(r.events)  # what came with the stream, before the GOAWAY
    received = before
    await r.flush()
    with trio.move_on_after(wait):
        while not r.eof:
            events = await r.step(flush=False)
            for sid in streams.read():
                raise CaseFailed(
                    f"the sender opened stream {sid} after our GOAWAY with last_stream "
                    f"{last} (spec §10.4)"
                )
            received += streams.consume(events)
            await r.flush()
    ended = any(e.stream_id == last for e in r.of(StreamEnded))
    return (
        f"no stream opened after GOAWAY (last_stream {last}); stream {last} "
        f"{'ended normally' if ended else 'did not end'}, {received - before} messages "
        "after the GOAWAY"
    )
