"""A conformance suite in the style of h2spec: crafted frames to a peer, its answers checked.

``flowproto conformance HOST:PORT`` runs it against a flowproto endpoint that accepts
connections (``flowproto receive`` is one; an implementation in another language is the
point). Each :class:`Case` has an id made of the spec section it checks and a number
(``4.2/1``), opens its own TCP connection, speaks the wire protocol through a
:class:`Probe` (the preface, a HELLO, then frames built by hand, some of them broken on
purpose) and checks the answer the spec requires:

- a **connection error** passes when the peer sends GOAWAY with the expected code as its
  last frame and then closes. A close without GOAWAY also passes, as in h2spec, unless
  ``strict`` is set; a GOAWAY with another code fails;
- a **stream error** passes on a RESET with the expected code on that stream, with the
  connection still answering PING;
- "ignored" input passes when the connection still answers a PING afterwards and
  nothing else was said about it;
- the budgets of spec §10.7 are optional (MAY): such a case passes when the peer either
  ends the connection with ENHANCE_YOUR_CALM or survives the flood and still answers a
  PING; ``strict`` requires ENHANCE_YOUR_CALM (the reference implementation's behaviour).

Cases marked ``timer`` wait for one of the peer's timers (handshake, frame timeout), up
to ``timer_wait`` seconds.

A **sender** peer (one that connects, as ``flowproto send`` does) is checked by
:func:`run_sender_suite` (``flowproto conformance --listen HOST:PORT``): the sender
connects once per case, and a :class:`Receiver`, the sans-IO core with small windows,
checks every frame it sends against the receiver rules while the case pokes at it
(no credit, a PING, a CREDIT over the maximum, a RESET).

Receiver cases run concurrently (each on its own connection), sender cases one after
another; results come back in case order. Only the sans-IO core and plain Trio streams
are used, so the suite tests the wire, not this implementation's Trio layer.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from ._connection import Connection, Role
from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._events import (
    Event,
    GoAwayReceived,
    MessagesReceived,
    PeerBlocked,
    PongReceived,
    StreamEnded,
)
from ._frames import (
    HEADER,
    MAGIC,
    MAX_CONTROL_BODY,
    MAX_COUNTER,
    PREFACE,
    BlockedFrame,
    CreditFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    Settings,
    UnknownFrame,
    pack_body,
)

__all__ = [
    "CASES",
    "SENDER_CASES",
    "Case",
    "CaseFailed",
    "Probe",
    "Receiver",
    "Result",
    "format_table",
    "run_sender_suite",
    "run_suite",
]

#: Seconds to wait for an answer the peer owes at once (h2spec's default is 2).
DEFAULT_TIMEOUT: Final = 2.0
#: Seconds to wait for one of the peer's timers to fire (its handshake timeout, ...).
DEFAULT_TIMER_WAIT: Final = 15.0
#: Frames sent by each flood case of spec §10.7.
FLOOD: Final = 10_000

Connect = Callable[[], Awaitable[trio.abc.Stream]]

_DATA, _HELLO, _CREDIT, _PING, _RESET, _GOAWAY = 0, 1, 2, 4, 6, 7
_END_MESSAGE, _END_STREAM = 1, 2


class CaseFailed(Exception):
    """The peer's answer is not what the spec requires; the message says what it was."""


class CaseSkipped(Exception):
    """The case cannot run against this peer's settings (for example a huge window)."""


# --- wire helpers ----------------------------------------------------------------------------


def frame(ftype: int, stream_id: int, body: bytes = b"", flags: int = 0) -> bytes:
    """A frame built by hand: ``body`` and the header fields go on the wire as given."""
    return HEADER.pack(len(body), ftype, flags, stream_id) + body


def data(stream_id: int, body: bytes = b"", flags: int = _END_MESSAGE) -> bytes:
    return frame(_DATA, stream_id, body, flags)


def ping_body(raw_value: bytes) -> bytes:
    """A PING body ``{"id": <raw_value>}`` with the value's msgpack bytes given as is."""
    return b"\x81\xa2id" + raw_value


def open_stream(stream_id: int) -> bytes:
    """The reference way to open a stream: a CREDIT restating the default limits (§6.2)."""
    defaults = Settings()
    return CreditFrame(stream_id, defaults.stream_bytes, defaults.stream_messages, 0).encode()


def describe(f: Frame | None) -> str:
    if f is None:
        return "the connection closed"
    if isinstance(f, GoAwayFrame):
        return f"GOAWAY {ErrorCode.describe(f.code)}"
    if isinstance(f, ResetFrame):
        return f"RESET {ErrorCode.describe(f.code)} on stream {f.stream_id}"
    return type(f).__name__.removesuffix("Frame").upper()


class Probe:
    """One connection to the peer under test, driven frame by frame.

    Attributes:
        peer: the settings of the peer's HELLO, once :meth:`handshake` has read it.
    """

    def __init__(self, transport: trio.abc.Stream, timeout: float, strict: bool) -> None:
        self.transport = transport
        self.timeout = timeout
        self.strict = strict
        self.peer = Settings()
        self._buffer = bytearray()
        self._decoder = FrameDecoder(16 * 1024 * 1024)
        self._frames: list[Frame] = []
        self._preface_read = False
        self._eof = False
        self._ping_ids = itertools.count(0x5EED_0000)

    async def send(self, *chunks: bytes) -> None:
        """Write bytes; a peer that closed meanwhile is not an error here (what it sent
        before closing is still read)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.transport.send_all(b"".join(chunks))

    async def _fill(self) -> bool:
        """Read once into the frame queue; False at the end of the connection."""
        if self._eof:
            return False
        try:
            chunk = await self.transport.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            chunk = b""
        if not chunk:
            self._eof = True
            if self._buffer and not self._preface_read:
                raise CaseFailed("the peer closed the connection inside its preface")
            return False
        if not self._preface_read:
            self._buffer += chunk
            have = bytes(self._buffer[: len(PREFACE)])
            if have != PREFACE[: len(have)]:
                raise CaseFailed(f"the peer did not send the flowproto v1 preface: {have!r}")
            if len(have) < len(PREFACE):
                return True
            self._preface_read = True
            chunk = bytes(self._buffer[len(PREFACE) :])
            self._buffer.clear()
        try:
            self._frames.extend(self._decoder.feed(bytes(chunk)))
        except RemoteProtocolError as exc:
            raise CaseFailed(f"the peer sent a frame that breaks the spec: {exc}") from None
        return True

    async def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The peer's next frame, or None when the connection has ended.

        Raises:
            CaseFailed: nothing arrived within ``timeout`` (default: the probe's).
        """
        with trio.move_on_after(self.timeout if timeout is None else timeout):
            while not self._frames:
                if not await self._fill():
                    return None
            return self._frames.pop(0)
        raise CaseFailed(f"no answer within {self.timeout if timeout is None else timeout} s")

    async def handshake(self, settings: Settings | None = None) -> Settings:
        """Send the preface and a HELLO, and read the peer's HELLO (spec §3.1, §3.4)."""
        await self.send(PREFACE, HelloFrame(settings or Settings(keepalive_ms=0)).encode())
        first = await self.next_frame()
        if not isinstance(first, HelloFrame):
            raise CaseFailed(f"the peer's first frame is {describe(first)}, not HELLO")
        self.peer = first.settings
        return first.settings

    async def expect_connection_error(self, code: ErrorCode, timeout: float | None = None) -> str:
        """The peer must end the connection with GOAWAY(code), then close (spec §10.2)."""
        while True:
            f = await self.next_frame(timeout)
            if f is None:
                if self.strict:
                    raise CaseFailed(f"the connection closed without GOAWAY {code.name}")
                return "closed without GOAWAY"
            if isinstance(f, GoAwayFrame):
                break
        if f.code != code:
            raise CaseFailed(f"{describe(f)} ({f.reason}), expected GOAWAY {code.name}")
        after = await self.next_frame(max(self.timeout, 1.5))
        if after is not None:
            raise CaseFailed(f"{describe(after)} after GOAWAY {code.name} (spec §10.2)")
        return f"GOAWAY {code.name}, closed"

    async def expect_reset(self, stream_id: int, code: ErrorCode) -> str:
        """The peer must reset the stream with ``code`` and keep the connection (spec §10.3)."""
        while True:
            f = await self.next_frame()
            if f is None or isinstance(f, GoAwayFrame):
                raise CaseFailed(f"{describe(f)}, expected RESET {code.name} on stream {stream_id}")
            if isinstance(f, ResetFrame) and f.stream_id == stream_id:
                if f.code != code:
                    raise CaseFailed(f"{describe(f)}, expected {code.name}")
                break
        await self.expect_alive()
        return f"RESET {code.name}, connection alive"

    async def expect_alive(self, *, forbid: Callable[[Frame], bool] | None = None) -> str:
        """The peer must answer a PING (spec §5.5); frames before the PONG are checked
        against ``forbid``."""
        ping_id = next(self._ping_ids)
        await self.send(PingFrame(ping_id).encode())
        while True:
            f = await self.next_frame()
            if f is None or isinstance(f, GoAwayFrame):
                raise CaseFailed(f"{describe(f)} instead of an answer to PING")
            if forbid is not None and forbid(f):
                raise CaseFailed(f"unexpected {describe(f)}")
            if isinstance(f, PongFrame) and f.id == ping_id:
                return "connection alive (PING answered)"

    async def expect_budget(self) -> str:
        """spec §10.7 (MAY): ENHANCE_YOUR_CALM, or a peer that survived and answers PING."""
        while True:
            try:
                f = await self.next_frame(max(self.timeout, 5.0))
            except CaseFailed:
                f = None
                break
            if f is None or isinstance(f, GoAwayFrame):
                break
        if isinstance(f, GoAwayFrame):
            if f.code != ErrorCode.ENHANCE_YOUR_CALM:
                raise CaseFailed(f"{describe(f)}, expected ENHANCE_YOUR_CALM or no error")
            return "budget exceeded: GOAWAY ENHANCE_YOUR_CALM"
        if self.strict:
            raise CaseFailed("the flood did not end in GOAWAY ENHANCE_YOUR_CALM")
        if f is None and self._eof:
            return "closed without GOAWAY"
        await self.expect_alive()
        return "survived the flood (PING answered)"

    async def expect_close(self, timeout: float) -> str:
        """The peer must close the connection within ``timeout`` (GOAWAY NO_ERROR allowed)."""
        while True:
            f = await self.next_frame(timeout)
            if f is None:
                return "closed"
            if isinstance(f, GoAwayFrame) and f.code != ErrorCode.NO_ERROR:
                raise CaseFailed(f"{describe(f)}, expected a graceful close")


# --- cases -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One check: ``id`` is ``SECTION/N``; ``run`` returns what it saw, or raises."""

    id: str
    description: str
    run: Callable[[Any, float], Awaitable[str]]  # (Probe or Receiver, timer_wait)
    timer: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """How one case went: ``outcome`` is ``pass``, ``FAIL`` or ``skip``."""

    case: Case
    outcome: str
    detail: str
    seconds: float


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
    await p.send(PREFACE, frame(_HELLO, 0, pack_body({"max_frame_bytes": 0})))
    return await p.expect_connection_error(ErrorCode.SETTINGS_ERROR)


@case("3.2/2", "a HELLO setting that is not an integer is SETTINGS_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(_HELLO, 0, pack_body({"max_streams": "ten"})))
    return await p.expect_connection_error(ErrorCode.SETTINGS_ERROR)


@case("3.2/3", "max_message_bytes above the default stream window alone is SETTINGS_ERROR")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(_HELLO, 0, pack_body({"max_message_bytes": 8388608})))
    return await p.expect_connection_error(ErrorCode.SETTINGS_ERROR)


@case("3.2/4", "an empty HELLO means the defaults, and unknown keys are ignored")
async def _(p: Probe, wait: float) -> str:
    await p.send(PREFACE, frame(_HELLO, 0, pack_body({"future_setting": [1, "x"]})))
    first = await p.next_frame()
    if not isinstance(first, HelloFrame):
        raise CaseFailed(f"the peer's first frame is {describe(first)}, not HELLO")
    return await p.expect_alive()


# spec §4: frame layout


@case("4.1/1", "the reserved bit of the stream id is ignored")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(_PING, 0x8000_0000, ping_body(b"\x07")))
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected PONG 7")
        if isinstance(f, PongFrame) and f.id == 7:
            return "PONG 7"


@case("4.2/1", "DATA longer than max_frame_bytes is FRAME_SIZE_ERROR from its header alone")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    await p.send(HEADER.pack(peer.max_frame_bytes + 1, _DATA, _END_MESSAGE, 1))
    return await p.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


@case("4.2/2", "a control body over 4096 bytes is FRAME_SIZE_ERROR from its header alone")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(HEADER.pack(MAX_CONTROL_BODY + 1, _PING, 0, 0))
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
        p, frame(_PING, 0, ping_body(b"\xc1")), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/2", "a body with bytes after its map is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, ping_body(b"\x01") + b"\x00"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/3", "a body that is not a map is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, b"\x91\x01"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/4", "a map with a duplicate key is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, b"\x82\xa2id\x01\xa2id\x02"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/5", "a map key that is not a str is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, b"\x82\xa2id\x01\x05\x01"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/6", "a body nested deeper than 8 levels is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    deep = b"\x82\xa2id\x01\xa1x" + b"\x91" * 8 + b"\x00"
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, deep), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/7", "a timestamp (ext -1) anywhere in a body is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    body = b"\x82\xa2id\x01\xa1t\xd6\xff\x00\x00\x00\x00"
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, body), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/8", "a str that is not valid UTF-8 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, b"\x82\xa2id\x01\xa2\xff\xfe\x01"), ErrorCode.PROTOCOL_ERROR
    )


@case("4.3.2/9", "a HELLO with more than 64 entries is ENHANCE_YOUR_CALM")
async def _(p: Probe, wait: float) -> str:
    body = pack_body({f"k{i}": i for i in range(65)})
    await p.send(PREFACE, frame(_HELLO, 0, body))
    return await p.expect_connection_error(ErrorCode.ENHANCE_YOUR_CALM)


@case("4.3.2/10", "keys in any order and wider integer encodings are accepted")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(_PING, 0, b"\x82\xa1z\xc0\xa2id\xcf" + struct.pack(">Q", 9)))
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected PONG 9")
        if isinstance(f, PongFrame) and f.id == 9:
            return "PONG 9"


@case("4.3.3/1", "a negative PING id is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(_PING, 0, ping_body(b"\xff")), ErrorCode.PROTOCOL_ERROR
    )


@case("4.4/1", "a frame of an unknown type is ignored")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(0x20, 3, b"ignore me"))
    return await p.expect_alive(forbid=lambda f: isinstance(f, ResetFrame))


@case("4.4/2", "undefined flag bits are ignored")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(frame(_PING, 0, ping_body(b"\x08"), flags=0xFF))
    while True:
        f = await p.next_frame()
        if f is None or isinstance(f, GoAwayFrame):
            raise CaseFailed(f"{describe(f)}, expected PONG 8")
        if isinstance(f, PongFrame) and f.id == 8:
            return "PONG 8"


@case("4.5/1", "PING on a stream other than 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(
        p, frame(_PING, 1, ping_body(b"\x01")), ErrorCode.PROTOCOL_ERROR
    )


@case("4.5/2", "DATA on stream 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    return await _connection_error_after_handshake(p, data(0, b"x"), ErrorCode.PROTOCOL_ERROR)


@case("4.5/3", "RESET on stream 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(_RESET, 0, pack_body({"code": 8}))
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("4.5/4", "GOAWAY on a stream other than 0 is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(_GOAWAY, 1, pack_body({"last_stream": 0, "code": 0}))
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


# spec §5: frame definitions


@case("5.3/1", "a CREDIT limit above 2^62-1 is FLOW_CONTROL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(_CREDIT, 0, pack_body({"bytes": MAX_COUNTER + 1}))
    return await _connection_error_after_handshake(p, wire, ErrorCode.FLOW_CONTROL_ERROR)


@case("5.3/2", "a CREDIT reporting more consumed than was sent is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = open_stream(1) + CreditFrame(1, 1 << 22, 4096, 5).encode()
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("5.3/3", "a stream CREDIT without its required 'messages' is PROTOCOL_ERROR")
async def _(p: Probe, wait: float) -> str:
    wire = frame(_CREDIT, 1, pack_body({"bytes": 1 << 22}))
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
    wire = data(1, b"part", 0) + data(1, b"", _END_STREAM)
    return await _connection_error_after_handshake(p, wire, ErrorCode.PROTOCOL_ERROR)


@case("7.2/2", "DATA after the peer's END_STREAM is STREAM_CLOSED")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    # Both frames in one write, so the peer normally reads them together. If its
    # application ended the stream in between, the stream is closed and the DATA is
    # dropped (spec §6.5); that shows as its END_STREAM arriving first.
    await p.send(data(1, b"last", _END_MESSAGE | _END_STREAM) + data(1, b"more"))
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
        chunks.append(data(1, b"L" * min(step, size - start), _END_MESSAGE if last else 0))
    await p.send(*chunks)
    return await p.expect_reset(1, ErrorCode.MESSAGE_TOO_LARGE)


# spec §8: flow control


@case("8.4/1", "one message past the stream's message limit is FLOW_CONTROL_ERROR")
async def _(p: Probe, wait: float) -> str:
    peer = await p.handshake()
    n = peer.stream_messages
    if n > 10_000:
        raise CaseSkipped(f"stream_messages {n} is more than this case sends")
    # One write of empty messages: the peer checks them before its application can
    # consume any (spec §8.4 checks against the limits it advertised).
    await p.send(data(1) * (n + 1))
    return await p.expect_connection_error(ErrorCode.FLOW_CONTROL_ERROR)


# spec §10: endings and budgets


@case("10.4/1", "after the peer's GOAWAY and with no stream open, the connection closes")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(GoAwayFrame(0, ErrorCode.NO_ERROR).encode())
    return await p.expect_close(max(p.timeout, 5.0))


@case("10.5/1", "the receiver reports every consumed message (the final report)")
async def _(p: Probe, wait: float) -> str:
    await p.handshake()
    await p.send(data(1, b"a"), data(1, b"b"), data(1, b"c", _END_MESSAGE | _END_STREAM))
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
    wire = b"".join(open_stream(s) + frame(_RESET, s, cancel) for s in range(1, FLOOD + 1, 2))
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
    await p.send(HEADER.pack(100, _DATA, 0, 1)[:5])
    return await p.expect_connection_error(ErrorCode.TIMEOUT, timeout=wait)


# --- cases for a sender peer (one that connects, as `flowproto send` does) ----------------------

#: What the probe advertises to a sender under test: small windows, so credit runs out soon.
SENDER_WINDOWS: Final = Settings(
    stream_bytes=32768,
    stream_messages=4,
    connection_bytes=65536,
    max_frame_bytes=16384,
    max_message_bytes=32768,
    keepalive_ms=0,
)


class Receiver:
    """The reference receiver (a sans-IO ``Connection``) facing a sender under test.

    Every byte the sender writes goes through the core's receiver checks (credit, message
    size, frame size, stream rules), so a sender that breaks one fails the case with the
    core's own sentence; ``frames`` also keeps the raw frames it sent.
    """

    def __init__(self, transport: trio.abc.Stream, timeout: float, strict: bool) -> None:
        self.transport = transport
        self.timeout = timeout
        self.strict = strict
        self.conn = Connection(Role.ACCEPTOR, SENDER_WINDOWS)
        self.events: list[Event] = []
        self.frames: list[Frame] = []
        self.eof = False
        self._raw = bytearray()
        self._decoder = FrameDecoder(16 * 1024 * 1024)

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.transport.send_all(data)

    async def step(self, *, flush: bool = True) -> list[Event]:
        """Read once and check it; the events it gave. Raises CaseFailed on a violation."""
        try:
            data = await self.transport.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        self.eof = not data
        self._tee(data)
        try:
            events = self.conn.receive_data(bytes(data), trio.current_time())
        except RemoteProtocolError as exc:
            await self.flush()
            raise CaseFailed(f"the sender broke the spec: {exc}") from None
        self.events.extend(events)
        if flush:
            await self.flush()
        return events

    def _tee(self, data: bytes | bytearray) -> None:
        self._raw += data
        if len(self._raw) >= len(PREFACE) and self._raw.startswith(PREFACE):
            with contextlib.suppress(RemoteProtocolError):
                self.frames.extend(self._decoder.feed(bytes(self._raw[len(PREFACE) :])))
            self._raw = self._raw[: len(PREFACE)]

    async def until(
        self, done: Callable[[], bool], what: str, timeout: float | None = None
    ) -> None:
        wait = self.timeout if timeout is None else timeout
        with trio.move_on_after(wait):
            while not done():
                if self.eof:
                    raise CaseFailed(f"the sender closed the connection before {what}")
                await self.step()
            return
        raise CaseFailed(f"no {what} within {wait} s")

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


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
        await r.transport.send_all(frame(_CREDIT, 0, pack_body({"bytes": MAX_COUNTER + 1})))
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


# --- running ---------------------------------------------------------------------------------


async def _run_case(
    c: Case,
    connect: Connect,
    timeout: float,
    timer_wait: float,
    strict: bool,
    driver: Callable[[trio.abc.Stream, float, bool], Any] = Probe,
) -> Result:
    start = trio.current_time()
    try:
        transport = await connect()
    except OSError as exc:
        return Result(c, "FAIL", f"cannot connect: {exc}", 0.0)
    probe = driver(transport, timeout, strict)
    try:
        with trio.fail_after(timer_wait + 4 * timeout + 10):
            detail = await c.run(probe, timer_wait)
        outcome = "pass"
    except CaseFailed as exc:
        outcome, detail = "FAIL", str(exc)
    except CaseSkipped as exc:
        outcome, detail = "skip", str(exc)
    except trio.TooSlowError:
        outcome, detail = "FAIL", "the case did not finish (hung)"
    finally:
        await trio.aclose_forcefully(transport)
    return Result(c, outcome, detail, trio.current_time() - start)


def _selected(case_id: str, select: Sequence[str]) -> bool:
    """``4.3`` selects 4.3/1 and 4.3.2/1; ``4.3/1`` selects only that case."""
    if not select:
        return True
    section = case_id.split("/")[0]
    return any(case_id == s or section == s or section.startswith(s + ".") for s in select)


async def run_suite(
    connect: Connect,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    timer_wait: float = DEFAULT_TIMER_WAIT,
    strict: bool = False,
    select: Sequence[str] = (),
    timers: bool = True,
    concurrency: int = 8,
) -> list[Result]:
    """Run the cases against the peer ``connect()`` reaches; results in case order.

    Args:
        connect: opens a new transport to the peer under test (one per case).
        timeout: seconds to wait for an answer owed at once.
        timer_wait: seconds to wait for a timer of the peer's (timer cases).
        strict: require GOAWAY before every close, and ENHANCE_YOUR_CALM for floods.
        select: run only cases whose id starts with one of these (``"4.3"``, ``"7.2/1"``).
        timers: run the timer cases too.
        concurrency: cases running at once, each on its own connection.
    """
    chosen = [c for c in CASES if _selected(c.id, select) and (timers or not c.timer)]
    results: list[Result | None] = [None] * len(chosen)
    limiter = trio.CapacityLimiter(concurrency)

    async def one(index: int, c: Case) -> None:
        async with limiter:
            results[index] = await _run_case(c, connect, timeout, timer_wait, strict)

    async with trio.open_nursery() as nursery:
        # Timer cases first: they wait longest, so they overlap the quick ones.
        order = sorted(range(len(chosen)), key=lambda i: not chosen[i].timer)
        for index in order:
            nursery.start_soon(one, index, chosen[index])
    return [r for r in results if r is not None]


async def run_sender_suite(
    accept: Connect,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    timer_wait: float = DEFAULT_TIMER_WAIT,
    strict: bool = False,
    select: Sequence[str] = (),
    on_wait: Callable[[Case], None] | None = None,
) -> list[Result]:
    """Run the sender cases in order, each on the next connection ``accept()`` returns.

    The peer under test connects once per case (``flowproto send`` does, run once per
    case); a :class:`Receiver` checks everything it sends. ``timer_wait`` bounds how long
    a case reads a sender's stream.
    """
    results = []
    for c in SENDER_CASES:
        if _selected(c.id, select):
            if on_wait is not None:
                on_wait(c)
            results.append(await _run_case(c, accept, timeout, timer_wait, strict, Receiver))
    return results


def format_table(results: Sequence[Result], target: str) -> str:
    """The pass/fail table: one line per case, then the totals."""
    width = max([len(r.case.id) for r in results] + [2])
    desc = max([len(r.case.description) for r in results] + [4])
    lines = [
        f"flowproto conformance: {len(results)} cases against {target}",
        "",
        f"  {'id':<{width}}  result  {'case':<{desc}}  answer",
    ]
    for r in results:
        lines.append(
            f"  {r.case.id:<{width}}  {r.outcome:<6}  {r.case.description:<{desc}}  {r.detail}"
        )
    counts = {o: sum(r.outcome == o for r in results) for o in ("pass", "FAIL", "skip")}
    lines += ["", f"{counts['pass']} passed, {counts['FAIL']} failed, {counts['skip']} skipped"]
    return "\n".join(lines)


async def run_listening(
    host: str | None, port: int, say: Callable[[str], None], **kwargs: Any
) -> list[Result]:
    """:func:`run_sender_suite` on a TCP listener; ``say`` gets progress lines."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        for listener in listeners:
            address = listener.socket.getsockname()
            say(f"listening on {address[0]}:{address[1]}")

        async def accept() -> trio.abc.Stream:
            stream: trio.abc.Stream = await listeners[0].accept()
            return stream

        def waiting(c: Case) -> None:
            say(f"case {c.id}: waiting for the sender to connect")

        return await run_sender_suite(accept, on_wait=waiting, **kwargs)
    finally:
        for listener in listeners:
            await listener.aclose()


async def run_against(host: str, port: int, **kwargs: Any) -> list[Result]:
    """:func:`run_suite` against ``host:port`` over TCP; keywords are run_suite's."""

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    return await run_suite(connect, **kwargs)
