"""What the conformance cases speak through: bytes built by hand, and the two drivers.

A :class:`Probe` is one connection to a peer that accepts connections: it sends raw
bytes (a preface, a HELLO, frames built with :func:`frame` and :func:`data`, some of
them broken on purpose) and reads the peer's frames one at a time, with the ``expect_*``
checks of the answers the spec requires. A :class:`Receiver` faces a peer that
connects and sends: a sans-IO :class:`flowproto.Connection` with the small windows of
:data:`SENDER_WINDOWS` runs every byte the sender writes through the core's receiver
checks. A case that sees a wrong answer raises :class:`CaseFailed` saying what it saw.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from flowproto import (
    HEADER,
    PREFACE,
    Connection,
    CreditFrame,
    ErrorCode,
    Event,
    Flags,
    Frame,
    FrameDecoder,
    FrameType,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
)

#: Seconds to wait for an answer the peer owes at once (h2spec's default is 2).
DEFAULT_TIMEOUT: Final = 2.0
#: Seconds to wait for one of the peer's timers to fire (its handshake timeout, ...).
DEFAULT_TIMER_WAIT: Final = 15.0
#: Opens a new transport to the peer under test (one per case).
Connect = Callable[[], Awaitable[trio.abc.Stream]]


class CaseFailed(Exception):
    """The peer's answer is not what the spec requires; the message says what it was."""


class CaseSkipped(Exception):
    """The case cannot run against this peer's settings (for example a huge window)."""


# --- wire helpers ----------------------------------------------------------------------------


def frame(ftype: int, stream_id: int, body: bytes = b"", flags: int = 0) -> bytes:
    """A frame built by hand: ``body`` and the header fields go on the wire as given."""
    return HEADER.pack(len(body), ftype, flags, stream_id) + body


def data(stream_id: int, body: bytes = b"", flags: int = Flags.END_MESSAGE) -> bytes:
    """A DATA frame built by hand; by default one whole message (END_MESSAGE)."""
    return frame(FrameType.DATA, stream_id, body, flags)


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

    async def session_handshake(self, resume_token: bytes | None = None) -> HelloFrame:
        """The handshake of a session transport (spec §15.2): our HELLO asks for a session
        (or, with ``resume_token``, resumes one), and SESSION and RESUME decode as frames
        from now on. Returns the peer's HELLO (its ``session`` 1: it offers them)."""
        self._decoder.session = True
        hello = HelloFrame(
            Settings(keepalive_ms=0),
            session=None if resume_token is not None else 1,
            resume_token=resume_token,
        )
        await self.send(PREFACE, hello.encode())
        first = await self.next_frame()
        if not isinstance(first, HelloFrame):
            raise CaseFailed(f"the peer's first frame is {describe(first)}, not HELLO")
        self.peer = first.settings
        return first

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
            if f is None or isinstance(f, GoAwayFrame):
                return await self.judge_ending(f, code)

    async def judge_ending(self, f: GoAwayFrame | None, code: ErrorCode) -> str:
        """The connection is ending with ``f`` (None: it closed without GOAWAY): it must be
        GOAWAY(code), and then a close with nothing after it (spec §10.2)."""
        if f is None:
            if self.strict:
                raise CaseFailed(f"the connection closed without GOAWAY {code.name}")
            return "closed without GOAWAY"
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


# --- a case, and the driver of the sender cases ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One check: ``id`` is ``SECTION/N``; ``run`` returns what it saw, or raises."""

    id: str
    description: str
    run: Callable[[Any, float], Awaitable[str]]  # (Probe or Receiver, timer_wait)
    timer: bool = False


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
        self._flushed = False

    def advertise(self, settings: Settings) -> None:
        """Say ``settings`` in our HELLO instead of :data:`SENDER_WINDOWS` (a case that
        needs, say, a small ``max_streams``); only before the first read or flush."""
        if self._flushed or self._raw or self.events:
            raise RuntimeError("advertise() after the HELLO was sent or input was read")
        self.conn = Connection(Role.ACCEPTOR, settings)

    async def flush(self) -> None:
        self._flushed = True
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
