"""The receiver cases: what a peer that accepts connections must answer (h2spec style).

Each case is registered with :func:`case` under an id made of the spec section it checks
and a number (``4.2/1``), and runs on its own connection through a :class:`Probe`.
The ORDER of :data:`CASES` is part of the contract: the fuzz corpus in
``tests/fuzz_corpus`` is recorded from these cases and each seed starts with its case's
position, so moving or inserting a case changes the seeds after it: re-record the
corpus (``python fuzz_target.py --write-corpus fuzz_corpus`` in ``tests/``).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Final

from flowproto import (
    HEADER,
    MAGIC,
    MAX_CONTROL_BODY,
    MAX_COUNTER,
    PREFACE,
    BlockedFrame,
    CreditFrame,
    DataFrame,
    ErrorCode,
    Flags,
    FrameType,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    ResumeFrame,
    SessionFrame,
    UnknownFrame,
    pack_body,
)

from ._probe import (
    Case,
    CaseFailed,
    CaseSkipped,
    Probe,
    data,
    describe,
    frame,
    open_stream,
    ping_body,
)

#: Frames sent by each flood case of spec §10.7.
FLOOD: Final = 10_000

CASES: list[Case] = []


def case(
    case_id: str, description: str, *, timer: bool = False
) -> Callable[[Callable[[Probe, float], Awaitable[str]]], Callable[[Probe, float], Awaitable[str]]]:
    def register(
        fn: Callable[[Probe, float], Awaitable[str]],
    ) -> Callable[[Probe, float], Awaitable[str]]:
        CASES.append(Case(case_id, description, fn, timer))
        return fn

    return register


async def _connection_error_after_handshake(p: Probe, wire: bytes, code: ErrorCode) -> str:
    await p.handshake()
    await p.send(wire)
    return await p.expect_connection_error(code)


# spec §3: the preface and the handshake


@case("3.1/1", "a wrong first byte of the magic is PROTOCOL_ERROR at once")
async def _(p: Probe, wait: float) -> str:
    await p.send(b"\x00")  # and nothing more: the peer must not wait for the rest
    return await p.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@case("3.1/2", "a magic wrong at its fifth byte is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(MAGIC[:4] + b"X")
    return await p.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@case("3.3/1", "version 2 is answered by GOAWAY VERSION_MISMATCH naming version 1")
async def _(p: Probe, wait: float) -> str:
    await p.send(MAGIC + b"\x00\x02" + HelloFrame().encode())
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            break
    if not isinstance(f, GoAwayFrame) or f.code != ErrorCode.VERSION_MISMATCH:
        raise CaseFailed(f"{describe(f)}, expected GOAWAY VERSION_MISMATCH")
    if f.versions is None or 1 not in f.versions or f.last_stream != 0:
        raise CaseFailed(f"GOAWAY has versions={f.versions}, last_stream={f.last_stream}")
    return "GOAWAY VERSION_MISMATCH, versions [1]"


@case("3.4/1", "a first frame other than HELLO (PING) is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, PingFrame(1).encode())
    return await p.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@case("3.4/2", "a first frame of an unknown type is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(0x20, 0, b"\x00"))
    return await p.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@case("3.4/3", "a second HELLO is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, HelloFrame().encode(), ErrorCode.PROTOCOL_ERROR
    )


@case("3.4/4", "no preface and HELLO within the handshake timeout: TIMEOUT", timer=True)
async def _(p: Probe, wait: float) -> str:
    return await p.expect_connection_error(ErrorCode.TIMEOUT, timeout=wait)


@case("3.2/1", "a HELLO setting out of range (max_frame_bytes 0) is SETTINGS_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(FrameType.HELLO, 0, pack_body({"max_frame_bytes": 0})))
    return await p.expect_connection_error(ErrorCode.SETTINGS_ERROR)


@case("3.2/2", "a HELLO setting that is not an integer is SETTINGS_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(FrameType.HELLO, 0, pack_body({"max_streams": "ten"})))
    return await p.expect_connection_error(ErrorCode.SETTINGS_ERROR)


@case("3.2/3", "max_message_bytes above the default stream window alone is SETTINGS_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(FrameType.HELLO, 0, pack_body({"max_message_bytes": 8388608})))
    return await p.expect_connection_error(ErrorCode.SETTINGS_ERROR)


@case("3.2/4", "an empty HELLO means the defaults, and unknown keys are ignored")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(FrameType.HELLO, 0, pack_body({"future_setting": [1, "x"]})))
    first = await p.next_frame()
    if not isinstance(first, HelloFrame):
        raise CaseFailed(f"the peer's first frame is {describe(first)}, not HELLO")
    return await p.expect_alive()


# spec §4: frame layout


@case("4.1/1", "the reserved bit of the stream id is ignored")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(FrameType.PING, 0x8000_0000, ping_body(b"\x07")))
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected PONG 7")
        if isinstance(f, PongFrame) and f.id == 7:
            return "PONG 7"


@case("4.2/1", "DATA longer than max_frame_bytes is FRAME_SIZE_ERROR from its header alone")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    await p.send(HEADER.pack(peer.max_frame_bytes + 1, FrameType.DATA, Flags.END_MESSAGE, 1))
    return await p.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


@case("4.2/2", "a control body over 4096 bytes is FRAME_SIZE_ERROR from its header alone")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(HEADER.pack(MAX_CONTROL_BODY + 1, FrameType.PING, 0, 0))
    return await p.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


@case("4.2/3", "an unknown frame over max_frame_bytes is FRAME_SIZE_ERROR from its header")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    await p.send(HEADER.pack(peer.max_frame_bytes + 1, 0x20, 0, 0))
    return await p.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


@case("4.2/4", "a DATA frame of exactly max_frame_bytes is accepted")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    size = peer.max_frame_bytes
    if size > min(peer.max_message_bytes, peer.stream_bytes, peer.connection_bytes):
        raise CaseSkipped(f"max_frame_bytes {size} is over the peer's message or window size")
    await p.send(open_stream(1), data(1, b"f" * size))
    return await p.expect_alive(forbid=lambda f: isinstance(f, ResetFrame))


@case("4.3.2/1", "a body holding the reserved byte c1 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, ping_body(b"\xc1")), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/2", "a body with bytes after its map is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, ping_body(b"\x01") + b"\x00"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/3", "a body that is not a map is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, b"\x91\x01"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/4", "a map with a duplicate key is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, b"\x82\xa2id\x01\xa2id\x02"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/5", "a map key that is not a str is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, b"\x82\xa2id\x01\x05\x01"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/6", "a body nested deeper than 8 levels is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    deep = b"\x82\xa2id\x01\xa1x" + b"\x91" * 8 + b"\x00"
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, deep), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/7", "a timestamp (ext -1) anywhere in a body is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    body = b"\x82\xa2id\x01\xa1t\xd6\xff\x00\x00\x00\x00"
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, body), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/8", "a str that is not valid UTF-8 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, b"\x82\xa2id\x01\xa2\xff\xfe\x01"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/9", "a HELLO with more than 64 entries is ENHANCE_YOUR_CALM")
async def _(p: Probe, wait: float) -> str:
    body = pack_body({f"k{i}": i for i in range(65)})
    await p.send(PREFACE, frame(FrameType.HELLO, 0, body))
    return await p.expect_connection_error(ErrorCode.ENHANCE_YOUR_CALM)


@case("4.3.2/10", "keys in any order and wider integer encodings are accepted")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(FrameType.PING, 0, b"\x82\xa1z\xc0\xa2id\xcf" + struct.pack(">Q", 9)))
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected PONG 9")
        if isinstance(f, PongFrame) and f.id == 9:
            return "PONG 9"


@case("4.3.3/1", "a negative PING id is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 0, ping_body(b"\xff")), ErrorCode.PROTOCOL_ERROR
    )


@case("4.4/1", "a frame of an unknown type is ignored")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(0x20, 3, b"ignore me"))
    return await p.expect_alive(forbid=lambda f: isinstance(f, ResetFrame))


@case("4.4/2", "undefined flag bits are ignored")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(FrameType.PING, 0, ping_body(b"\x08"), flags=0xFF))
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected PONG 8")
        if isinstance(f, PongFrame) and f.id == 8:
            return "PONG 8"


@case("4.5/1", "PING on a stream other than 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(FrameType.PING, 1, ping_body(b"\x01")), ErrorCode.PROTOCOL_ERROR
    )


@case("4.5/2", "DATA on stream 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(p, data(0, b"x"), ErrorCode.PROTOCOL_ERROR)


@case("4.5/3", "RESET on stream 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(FrameType.RESET, 0, pack_body({"code": 8}))
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("4.5/4", "GOAWAY on a stream other than 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(FrameType.GOAWAY, 1, pack_body({"last_stream": 0, "code": 0}))
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


# spec §5: frame definitions


@case("5.3/1", "a CREDIT limit above 2^62-1 is FLOW_CONTROL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(FrameType.CREDIT, 0, pack_body({"bytes": MAX_COUNTER + 1}))
    return await _connection_error_after_handshake(p, wire, ErrorCode.FLOW_CONTROL_ERROR)


@case("5.3/2", "a CREDIT reporting more consumed than was sent is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = open_stream(1) + CreditFrame(1, 1 << 22, 4096, 5).encode()
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("5.3/3", "a stream CREDIT without its required 'messages' is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(FrameType.CREDIT, 1, pack_body({"bytes": 1 << 22}))
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("5.4/1", "BLOCKED at the limits the peer advertised is informative only")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    blocked = BlockedFrame(1, peer.stream_bytes, peer.stream_messages).encode()
    await p.send(open_stream(1), blocked, blocked)
    return await p.expect_alive(forbid=lambda f: isinstance(f, ResetFrame))


@case("5.5/1", "PING is answered by a PONG with the same id (2^64-1)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(PingFrame((1 << 64) - 1).encode())
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected PONG")
        if isinstance(f, PongFrame):
            if f.id != (1 << 64) - 1:
                raise CaseFailed(f"PONG {f.id}, expected 2^64-1")
            return "PONG 2^64-1"


@case("5.6/1", "a PONG that matches no PING is ignored and never answered")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(PongFrame(77).encode())
    return await p.expect_alive(
        forbid=lambda f: isinstance(f, (PingFrame, PongFrame)) and f.id == 77
    )


@case("5.7/1", "RESET on an idle stream is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = ResetFrame(1, ErrorCode.CANCEL).encode()
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("5.7/2", "RESET on a closed stream is ignored, and never answered by RESET")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(open_stream(5), ResetFrame(3, ErrorCode.CANCEL).encode())
    return await p.expect_alive(forbid=lambda f: isinstance(f, (ResetFrame, GoAwayFrame)))


# spec §6: streams


@case("6.1/1", "a frame on an idle stream of the receiver's parity is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(p, data(2, b"x"), ErrorCode.PROTOCOL_ERROR)


@case("6.1/2", "a stream id below the highest opened is closed: DATA on it is dropped")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(open_stream(5), data(3, b"late"))
    return await p.expect_alive(forbid=lambda f: isinstance(f, ResetFrame))


@case("6.4/1", "the stream past max_streams is refused with REFUSED_STREAM")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    n = peer.max_streams
    if n > 1000:
        raise CaseSkipped(f"max_streams {n} is more than this case opens")
    await p.send(*(open_stream(2 * i + 1) for i in range(n + 1)))
    return await p.expect_reset(2 * n + 1, ErrorCode.REFUSED_STREAM)


# spec §7: messages


@case("7.2/1", "END_STREAM inside a message is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = data(1, b"part", 0) + data(1, b"", Flags.END_STREAM)
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("7.2/2", "DATA after the peer's END_STREAM is STREAM_CLOSED")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    # Both frames in one write, so the peer normally reads them together. If its
    # application ended the stream in between, the stream is closed and the DATA is
    # dropped (spec §6.5); that shows as its END_STREAM arriving first.
    await p.send(data(1, b"last", Flags.END_MESSAGE | Flags.END_STREAM) + data(1, b"more"))
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected RESET STREAM_CLOSED on stream 1")
        if isinstance(f, DataFrame) and f.stream_id == 1 and f.end_stream:
            await p.expect_alive(forbid=lambda f: isinstance(f, ResetFrame))
            return "the peer closed the stream first; the DATA was dropped (spec §6.5)"
        if isinstance(f, ResetFrame) and f.stream_id == 1:
            if f.code != ErrorCode.STREAM_CLOSED:
                raise CaseFailed(f"{describe(f)}, expected STREAM_CLOSED")
            await p.expect_alive()
            return "RESET STREAM_CLOSED, connection alive"


@case("7.3/1", "a message over max_message_bytes is MESSAGE_TOO_LARGE; the connection lives")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    size = peer.max_message_bytes + 1
    if size > min(peer.stream_bytes, peer.connection_bytes) or size > 16 * 1024 * 1024:
        raise CaseSkipped("the peer's windows do not hold a message one byte too large")
    chunks = []
    step = peer.max_frame_bytes
    for start in range(0, size, step):
        last = start + step >= size
        chunks.append(data(1, b"L" * min(step, size - start), Flags.END_MESSAGE if last else 0))
    await p.send(*chunks)
    return await p.expect_reset(1, ErrorCode.MESSAGE_TOO_LARGE)


# spec §8: flow control


@case("8.4/1", "one message past the stream's message limit is FLOW_CONTROL_ERROR")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    n = peer.stream_messages
    if n > 10_000:
        raise CaseSkipped(f"stream_messages {n} is more than this case sends")
    # spec §8.4: message n+1 on a stream is judged against the limit the peer advertised,
    # and §8.5 lets it raise that limit only once its application consumed something. So
    # a peer whose application consumed some of the first n before its reader reached
    # message n+1 may accept it: no error then proves nothing. The case does not depend
    # on that race: message n+1 ends our direction, and one more DATA follows, a stream
    # error STREAM_CLOSED (spec §7.2) whose RESET carries the messages consumed so far
    # (spec §5.7, a MUST in 1.1). Consumed 0 means the limit was still n when message
    # n+1 was accepted: a violation, whatever the timing. Consumed more, and the case
    # tries again on a new stream.
    seen = []
    for stream_id in (1, 3, 5):
        last = data(stream_id, b"", Flags.END_MESSAGE | Flags.END_STREAM)
        await p.send(data(stream_id) * n + last + data(stream_id, b"after END_STREAM"))
        decided, answer = await _message_limit_answer(p, stream_id, n)
        if decided:
            return answer
        seen.append(answer)
    raise CaseSkipped(
        f"on streams 1, 3 and 5 the peer's application consumed messages before its reader "
        f"reached message {n + 1} ({'; '.join(seen)}), so its limit may have risen in time "
        "(spec §8.5): the message limit could not be exceeded"
    )


async def _message_limit_answer(p: Probe, stream_id: int, n: int) -> tuple[bool, str]:
    """The peer's answer to n+1 messages, END_STREAM, then DATA on ``stream_id``: (True,
    the case's answer), or (False, what it saw) when the peer may have raised its limit."""
    raised = False  # a CREDIT on the stream raised its message limit past n
    while True:
        f = await p.next_frame(max(p.timeout, 5.0))
        if f is None or isinstance(f, GoAwayFrame):
            return True, await p.judge_ending(f, ErrorCode.FLOW_CONTROL_ERROR)
        if f.stream_id != stream_id:
            continue
        if isinstance(f, CreditFrame) and (f.messages_limit or 0) > n:
            raised = True
        elif isinstance(f, ResetFrame):
            if f.code == ErrorCode.STREAM_CLOSED and f.consumed == 0:
                raise CaseFailed(
                    f"message {n + 1} on stream {stream_id} was accepted against a limit of "
                    f"{n}: the RESET STREAM_CLOSED for the DATA after it reports 0 consumed, "
                    "so the limit had not risen (spec §8.4, §8.5)"
                )
            if f.code not in (ErrorCode.STREAM_CLOSED, ErrorCode.REFUSED_STREAM):
                raise CaseFailed(f"{describe(f)}, expected GOAWAY FLOW_CONTROL_ERROR")
            return False, f"stream {stream_id}: {describe(f)}, consumed {f.consumed}"
        elif isinstance(f, DataFrame) and f.end_stream and raised:
            # It raised the limit, consumed all and ended the stream before the DATA came,
            # which was then dropped (spec §6.5): the raise may have come in time.
            return (
                False,
                f"stream {stream_id}: its END_STREAM came first, after a CREDIT past {n} messages",
            )


# spec §10: endings and budgets


@case("10.4/1", "after the peer's GOAWAY and with no stream open, the connection closes")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(GoAwayFrame(0, ErrorCode.NO_ERROR).encode())
    return await p.expect_close(max(p.timeout, 5.0))


@case("10.5/1", "the receiver reports every consumed message (the final report)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(data(1, b"a"), data(1, b"b"), data(1, b"c", Flags.END_MESSAGE | Flags.END_STREAM))
    while True:
        f = await p.next_frame(max(p.timeout, 5.0))
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)} before the peer reported 3 consumed on stream 1")
        if isinstance(f, (CreditFrame, ResetFrame)) and f.stream_id == 1 and f.consumed == 3:
            return f"{describe(f)} with consumed 3"


async def _flood(p: Probe, wire: bytes) -> str:
    await p.send(wire)
    return await p.expect_budget()


@case("10.7/1", f"a flood of {FLOOD} PINGs (MAY: ENHANCE_YOUR_CALM)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    return await _flood(p, PingFrame(1).encode() * FLOOD)


@case("10.7/2", f"a flood of {FLOOD} unknown frames (MAY: ENHANCE_YOUR_CALM)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    return await _flood(p, UnknownFrame(0x20, 0, 0, b"").encode() * FLOOD)


@case("10.7/3", f"a message of {FLOOD} empty fragments (MAY: ENHANCE_YOUR_CALM)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    return await _flood(p, data(1, b"x", 0) + data(1, b"", 0) * FLOOD)


@case("10.7/4", f"{FLOOD // 2} streams opened and reset at once (MAY: ENHANCE_YOUR_CALM)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    cancel = pack_body({"code": int(ErrorCode.CANCEL)})
    wire = b"".join(
        open_stream(s) + frame(FrameType.RESET, s, cancel) for s in range(1, FLOOD + 1, 2)
    )
    return await _flood(p, wire)


@case("10.7/5", f"{FLOOD} CREDIT frames that raise nothing (MAY: ENHANCE_YOUR_CALM)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    return await _flood(p, open_stream(1) + open_stream(1) * FLOOD)


@case("10.7/6", f"{FLOOD // 2} opens past max_streams (MAY: ENHANCE_YOUR_CALM)")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    if peer.max_streams > 1000:
        raise CaseSkipped(f"max_streams {peer.max_streams} is more than this case opens")
    count = peer.max_streams + FLOOD // 2
    return await _flood(p, b"".join(open_stream(2 * i + 1) for i in range(count)))


# spec §11: timers


@case("11/1", "half a frame header, then silence: TIMEOUT at the frame timeout", timer=True)
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(HEADER.pack(100, FrameType.DATA, 0, 1)[:5])
    return await p.expect_connection_error(ErrorCode.TIMEOUT, timeout=wait)


# spec 1.1 (issue 11): the answers the revision made observable. Appended after the
# others, so the recorded fuzz seeds keep their positions.


@case("3.4/5", "a PONG as the first frame is PROTOCOL_ERROR (1.1: only HELLO may be first)")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, PongFrame(1).encode())
    return await p.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@case("4.3.2/11", "a HELLO declaring 65 entries, then malformed: ENHANCE_YOUR_CALM (1.1: B1 first)")
async def _(p: Probe, wait: float) -> str:
    # map 16 with 65 entries, then a byte msgpack never uses: B1 is judged from the header
    await p.send(PREFACE, frame(FrameType.HELLO, 0, b"\xde\x00\x41\xc1"))
    return await p.expect_connection_error(ErrorCode.ENHANCE_YOUR_CALM)


@case("5.3/5", "a connection CREDIT's messages key is ignored, even above 2^62-1 (1.1)")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    body = pack_body({"bytes": peer.connection_bytes, "messages": MAX_COUNTER + 1})
    await p.send(frame(FrameType.CREDIT, 0, body))
    return await p.expect_alive()


@case("5.4/3", "a BLOCKED above the limits advertised is legal and ignored (1.1)")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    await p.send(open_stream(1))
    huge = BlockedFrame(1, peer.stream_bytes + 10**6, peer.stream_messages + 1000).encode()
    await p.send(huge, BlockedFrame(0, peer.connection_bytes + 10**6).encode())
    return await p.expect_alive(forbid=lambda f: isinstance(f, ResetFrame))


@case("5.8/2", "GOAWAY VERSION_MISMATCH without versions: closed, never answered (1.1)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(GoAwayFrame(0, ErrorCode.VERSION_MISMATCH, "no common version").encode())
    while True:
        f = await p.next_frame(max(p.timeout, 5.0))
        if f is None:
            return "closed without a GOAWAY of its own"
        if isinstance(f, GoAwayFrame):
            raise CaseFailed(f"answered with {describe(f)}; spec §5.8 forbids any answer")


# spec 1.2 (issue 14): sessions. Appended after the others, so the recorded fuzz seeds keep
# their positions. A peer that offers no sessions skips the cases that need one.


@case("15.3/1", "SESSION and RESUME off a session transport are unknown types, ignored (1.2)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(SessionFrame(bytes(16), 30_000).encode(), ResumeFrame(0, (0, 0)).encode())
    return await p.expect_alive()


async def _offered(p: Probe, resume_token: bytes | None = None) -> None:
    hello = await p.session_handshake(resume_token)
    if hello.resume_token is not None:
        raise CaseFailed("the peer's HELLO carries a resume_token: only an initiator's may")
    if hello.session != 1:
        raise CaseSkipped("the peer's HELLO offers no sessions (spec §15.2)")


@case("15.2/1", "asked for a session, a peer that offers them answers with SESSION first (1.2)")
async def _(p: Probe, wait: float) -> str:
    await _offered(p)
    while True:
        f = await p.next_frame()
        if isinstance(f, (PingFrame, PongFrame)):
            continue
        if not isinstance(f, SessionFrame):
            raise CaseFailed(f"{describe(f)} where SESSION must come first (spec §15.2)")
        if not 16 <= len(f.token) <= 64:
            raise CaseFailed(f"a {len(f.token)}-byte token (spec §15.3.1: 16 to 64)")
        return f"SESSION with a {len(f.token)}-byte token, {f.timeout_ms} ms"


@case("15.6/1", "resuming with a token the peer never issued: GOAWAY SESSION_UNKNOWN (1.2)")
async def _(p: Probe, wait: float) -> str:
    await _offered(p, resume_token=bytes(range(100, 116)))
    return await p.expect_connection_error(ErrorCode.SESSION_UNKNOWN)


@case("15.6/2", "a RESUME outside a resumption's exchange is PROTOCOL_ERROR (1.2)")
async def _(p: Probe, wait: float) -> str:
    await _offered(p)
    await p.send(ResumeFrame(0, (0, 0), limits=(p.peer.connection_bytes, 0)).encode())
    return await p.expect_connection_error(ErrorCode.PROTOCOL_ERROR)
