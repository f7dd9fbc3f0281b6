"""Bytes <-> frame objects (spec §4, §5).

A frame is a 10-byte header (length, type, flags, stream id; spec §4.1) and a body.
DATA bodies are opaque application bytes; every other body is one msgpack map
(spec §4.3), encoded and decoded by :mod:`._body`; what each key must hold (spec §4.3.3)
is checked here, by each frame's ``parse()``.

Each frame type is one frozen dataclass named as in the spec, with ``TYPE``, an
``encode()`` and a ``parse()``; :data:`FRAME_TYPES` maps type codes to classes.
:class:`FrameDecoder` accepts chunks of any size and checks the declared length
against the limits before it buffers a single body byte (spec §4.2).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from ._body import pack_body, unpack_body
from ._errors import ErrorCode, RemoteProtocolError
from ._settings import MAX_COUNTER, Settings

__all__ = [
    "FRAME_TYPES",
    "HEADER",
    "MAGIC",
    "MAX_CONTROL_BODY",
    "MAX_COUNTER",
    "PREFACE",
    "VERSION",
    "BlockedFrame",
    "CreditFrame",
    "DataFrame",
    "Flags",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "GoAwayFrame",
    "HelloFrame",
    "PingFrame",
    "PongFrame",
    "ResetFrame",
    "ResumeFrame",
    "SessionFrame",
    "Settings",
    "UnknownFrame",
    "check_header",
    "encode_frame",
    "parse_frame",
]

# spec §3.1: 8 bytes of magic, then the version as a big-endian u16.
MAGIC: Final = b"\x89FLOW\r\n\x1a"
VERSION: Final = 1
PREFACE: Final = MAGIC + VERSION.to_bytes(2, "big")
PREFACE_SIZE: Final = len(PREFACE)

# spec §4.1: length u32 | type u8 | flags u8 | R + stream id u31, big-endian.
HEADER: Final = struct.Struct(">IBBI")
HEADER_SIZE: Final = HEADER.size
STREAM_ID_MASK: Final = 0x7FFF_FFFF
MAX_STREAM_ID: Final = STREAM_ID_MASK

# spec §12: named limits.
MAX_CONTROL_BODY: Final = 4096
MAX_REASON_BYTES: Final = 256
MAX_PING_ID: Final = (1 << 64) - 1
MAX_ERROR_CODE: Final = (1 << 32) - 1
MAX_FEEDBACK_RATE: Final = (1 << 32) - 1  # a CREDIT's "rate" (spec §5.3, §8.10)
MIN_TOKEN_BYTES: Final = 16  # spec §12, §15.2: a session token
MAX_TOKEN_BYTES: Final = 64


class FrameType(enum.IntEnum):
    """Frame type codes (spec §5)."""

    DATA = 0x0
    HELLO = 0x1
    CREDIT = 0x2
    BLOCKED = 0x3
    PING = 0x4
    PONG = 0x5
    RESET = 0x6
    GOAWAY = 0x7
    SESSION = 0x8  # spec §15.3: only on a session transport; elsewhere an unknown type
    RESUME = 0x9


class Flags(enum.IntFlag):
    """DATA frame flags (spec §5.1); no other frame type defines flags."""

    NONE = 0x0
    END_MESSAGE = 0x1
    END_STREAM = 0x2


# spec §4.5: which frames belong to the connection (stream id 0) and which to a stream.
CONNECTION_ONLY: Final = frozenset(
    {FrameType.HELLO, FrameType.PING, FrameType.PONG, FrameType.GOAWAY, FrameType.SESSION}
)
STREAM_ONLY: Final = frozenset({FrameType.DATA, FrameType.RESET})
CONTROL_TYPES: Final = frozenset(range(FrameType.HELLO, FrameType.GOAWAY + 1))
#: spec §15.3: control types too, but only on a session transport (§4.4 otherwise).
SESSION_TYPES: Final = frozenset({FrameType.SESSION, FrameType.RESUME})


def _get_int(
    body: dict[str, Any],
    key: str,
    frame_name: str,
    maximum: int,
    *,
    required: bool,
    code: ErrorCode = ErrorCode.PROTOCOL_ERROR,
    any_code: bool = False,
) -> int | None:
    value = body.get(key)
    if value is None and key not in body:
        if required:
            raise RemoteProtocolError(f"{frame_name} lacks required key {key!r} (spec §4.3)")
        return None
    if type(value) is not int or value < 0:
        raise RemoteProtocolError(
            f"{frame_name} key {key!r} must be a non-negative integer, got {value!r} (spec §4.3.3)",
            code if any_code else ErrorCode.PROTOCOL_ERROR,
        )
    if value > maximum:
        raise RemoteProtocolError(
            f"{frame_name} key {key!r} = {value} is above {maximum} (spec §4.3.3)", code
        )
    return value


def _get_token(
    body: dict[str, Any], key: str, frame_name: str, code: ErrorCode, *, required: bool = False
) -> bytes | None:
    """A session token: a msgpack bin of MIN_TOKEN_BYTES..MAX_TOKEN_BYTES (spec §15.2)."""
    if key not in body:
        if required:
            raise RemoteProtocolError(f"{frame_name} lacks required key {key!r} (spec §15.3)")
        return None
    value = body[key]
    if type(value) is not bytes or not MIN_TOKEN_BYTES <= len(value) <= MAX_TOKEN_BYTES:
        raise RemoteProtocolError(
            f"{frame_name} key {key!r} must be a bin of {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} "
            f"bytes, got {type(value).__name__} {value!r:.40} (spec §15.2)",
            code,
        )
    return value


def _get_pair(body: dict[str, Any], key: str, frame_name: str, code: ErrorCode) -> tuple[int, int]:
    """A required array of exactly two counters (spec §15.3.2)."""
    value = body.get(key)
    if key not in body:
        raise RemoteProtocolError(f"{frame_name} lacks required key {key!r} (spec §15.3.2)")
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(type(v) is int and v >= 0 for v in value)
    ):
        raise RemoteProtocolError(
            f"{frame_name} key {key!r} must be an array of two non-negative integers, got "
            f"{value!r:.60} (spec §15.3.2)"
        )
    if max(value) > MAX_COUNTER:
        raise RemoteProtocolError(
            f"{frame_name} key {key!r} holds a value above MAX_COUNTER (spec §15.3.2)", code
        )
    return value[0], value[1]


def _get_str(body: dict[str, Any], key: str, frame_name: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise RemoteProtocolError(
            f"{frame_name} key {key!r} must be a string, got {type(value).__name__} (spec §4.3)"
        )
    return value


def _truncate_reason(reason: str) -> str:
    # spec §5.7, §5.8: senders cut reasons to MAX_REASON_BYTES of UTF-8, on a character boundary.
    data = reason.encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[:MAX_REASON_BYTES].decode("utf-8", "ignore")


# --- frames (spec §5) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFrame:
    """DATA (spec §5.1): one fragment of a message on a stream."""

    TYPE: ClassVar[FrameType] = FrameType.DATA
    stream_id: int
    data: bytes
    end_message: bool = True
    end_stream: bool = False

    def encode(self) -> bytes:
        flags = (Flags.END_MESSAGE if self.end_message else 0) | (
            Flags.END_STREAM if self.end_stream else 0
        )
        return HEADER.pack(len(self.data), FrameType.DATA, flags, self.stream_id) + self.data

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> DataFrame:
        return cls(stream_id, body, bool(flags & Flags.END_MESSAGE), bool(flags & Flags.END_STREAM))


@dataclass(frozen=True, slots=True)
class HelloFrame:
    """HELLO (spec §5.2): the sender's settings; the first frame after the preface."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO
    settings: Settings = field(default_factory=Settings)
    stream_id: int = 0
    session: int | None = None  # spec §15.2: 1 = the initiator asks for a session
    resume_token: bytes | None = None  # spec §15.2: the session the initiator resumes

    def encode(self) -> bytes:
        body = self.settings.to_body()
        if self.session is not None:
            body["session"] = self.session
        if self.resume_token is not None:
            body["resume_token"] = self.resume_token
        return _control(FrameType.HELLO, 0, body)

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> HelloFrame:
        m = unpack_body(body, "HELLO")
        settings = Settings.from_body(m)
        # spec §15.2: the session keys; a bad value is a SETTINGS_ERROR like any HELLO value.
        bad = ErrorCode.SETTINGS_ERROR
        session = _get_int(m, "session", "HELLO", 1, required=False, code=bad, any_code=True)
        token = _get_token(m, "resume_token", "HELLO", bad)
        if session is not None and token is not None:
            raise RemoteProtocolError(
                "HELLO carries both 'session' and 'resume_token' (spec §15.2)", bad
            )
        return cls(settings, 0, session, token)


@dataclass(frozen=True, slots=True)
class CreditFrame:
    """CREDIT (spec §5.3): raises absolute limits; stream 0 is the connection.

    ``rate`` and ``depth`` are the consumer's feedback (spec §8.10): messages consumed
    per second and messages held. They change no limit.
    """

    TYPE: ClassVar[FrameType] = FrameType.CREDIT
    stream_id: int
    bytes_limit: int | None = None
    messages_limit: int | None = None
    consumed: int | None = None
    rate: int | None = None
    depth: int | None = None
    await_start: int | None = None  # spec §15.10: the opener waits for the receiver's start

    def encode(self) -> bytes:
        body = _present(
            {
                "bytes": self.bytes_limit,
                "messages": self.messages_limit,
                "consumed": self.consumed,
                "rate": self.rate,
                "depth": self.depth,
                "await_start": self.await_start,
            }
        )
        return _control(FrameType.CREDIT, self.stream_id, body)

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> CreditFrame:
        m = unpack_body(body, "CREDIT")
        # spec §5.3: a limit above MAX_COUNTER is a flow-control error, not a framing one.
        fc = ErrorCode.FLOW_CONTROL_ERROR
        limit_bytes = _get_int(m, "bytes", "CREDIT", MAX_COUNTER, required=True, code=fc)
        if stream_id == 0:
            return cls(0, limit_bytes)
        return cls(
            stream_id,
            limit_bytes,
            _get_int(m, "messages", "CREDIT", MAX_COUNTER, required=True, code=fc),
            _get_int(m, "consumed", "CREDIT", MAX_COUNTER, required=False),
            _get_int(m, "rate", "CREDIT", MAX_FEEDBACK_RATE, required=False),  # spec §8.10
            _get_int(m, "depth", "CREDIT", MAX_COUNTER, required=False),
            _get_int(m, "await_start", "CREDIT", 1, required=False),  # spec §15.10
        )


@dataclass(frozen=True, slots=True)
class BlockedFrame:
    """BLOCKED (spec §5.4): the sender has a message it cannot send at these limits."""

    TYPE: ClassVar[FrameType] = FrameType.BLOCKED
    stream_id: int
    bytes_limit: int | None = None
    messages_limit: int | None = None

    def encode(self) -> bytes:
        body = _present({"bytes": self.bytes_limit, "messages": self.messages_limit})
        return _control(FrameType.BLOCKED, self.stream_id, body)

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> BlockedFrame:
        m = unpack_body(body, "BLOCKED")
        limit_bytes = _get_int(m, "bytes", "BLOCKED", MAX_COUNTER, required=True)
        if stream_id == 0:
            return cls(0, limit_bytes)
        limit_messages = _get_int(m, "messages", "BLOCKED", MAX_COUNTER, required=True)
        return cls(stream_id, limit_bytes, limit_messages)


@dataclass(frozen=True, slots=True)
class PingFrame:
    """PING (spec §5.5): answered by a PONG with the same id."""

    TYPE: ClassVar[FrameType] = FrameType.PING
    id: int
    stream_id: int = 0

    def encode(self) -> bytes:
        return _control(FrameType.PING, 0, {"id": self.id})

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> PingFrame:
        ping_id = _get_int(unpack_body(body, "PING"), "id", "PING", MAX_PING_ID, required=True)
        assert ping_id is not None
        return cls(ping_id)


@dataclass(frozen=True, slots=True)
class PongFrame:
    """PONG (spec §5.6): the answer to a PING; never answered itself."""

    TYPE: ClassVar[FrameType] = FrameType.PONG
    id: int
    stream_id: int = 0

    def encode(self) -> bytes:
        return _control(FrameType.PONG, 0, {"id": self.id})

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> PongFrame:
        ping_id = _get_int(unpack_body(body, "PONG"), "id", "PONG", MAX_PING_ID, required=True)
        assert ping_id is not None
        return cls(ping_id)


@dataclass(frozen=True, slots=True)
class ResetFrame:
    """RESET (spec §5.7): ends one stream at once, with an error code."""

    TYPE: ClassVar[FrameType] = FrameType.RESET
    stream_id: int
    code: int
    reason: str = ""
    consumed: int | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"code": self.code}
        if self.reason:
            body["reason"] = _truncate_reason(self.reason)
        if self.consumed is not None:
            body["consumed"] = self.consumed
        return _control(FrameType.RESET, self.stream_id, body)

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> ResetFrame:
        m = unpack_body(body, "RESET")
        code = _get_int(m, "code", "RESET", MAX_ERROR_CODE, required=True)
        assert code is not None
        consumed = _get_int(m, "consumed", "RESET", MAX_COUNTER, required=False)
        return cls(stream_id, code, _get_str(m, "reason", "RESET"), consumed)


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    """GOAWAY (spec §5.8): no new streams; streams above ``last_stream`` were not processed."""

    TYPE: ClassVar[FrameType] = FrameType.GOAWAY
    last_stream: int
    code: int
    reason: str = ""
    versions: tuple[int, ...] | None = None
    stream_id: int = 0
    retry_after_ms: int | None = None  # spec 1.1 §5.8: with OVERLOADED

    def encode(self) -> bytes:
        body: dict[str, Any] = {"last_stream": self.last_stream, "code": self.code}
        if self.reason:
            body["reason"] = _truncate_reason(self.reason)
        if self.versions is not None:
            body["versions"] = list(self.versions)
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        return _control(FrameType.GOAWAY, 0, body)

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> GoAwayFrame:
        m = unpack_body(body, "GOAWAY")
        last = _get_int(m, "last_stream", "GOAWAY", MAX_STREAM_ID, required=True)
        code = _get_int(m, "code", "GOAWAY", MAX_ERROR_CODE, required=True)
        assert last is not None and code is not None
        versions = m.get("versions")
        if "versions" in m:
            if not isinstance(versions, list) or not all(
                type(v) is int and 0 <= v <= 0xFFFF for v in versions
            ):
                raise RemoteProtocolError("GOAWAY 'versions' must be a list of u16 (spec §5.8)")
            versions = tuple(versions)
        retry = _get_int(m, "retry_after_ms", "GOAWAY", MAX_ERROR_CODE, required=False)
        return cls(last, code, _get_str(m, "reason", "GOAWAY"), versions, 0, retry)


@dataclass(frozen=True, slots=True)
class SessionFrame:
    """SESSION (spec §15.3.1): the acceptor's token for the next resumption of a session."""

    TYPE: ClassVar[FrameType] = FrameType.SESSION
    token: bytes
    timeout_ms: int
    stream_id: int = 0

    def encode(self) -> bytes:
        return _control(FrameType.SESSION, 0, {"token": self.token, "timeout_ms": self.timeout_ms})

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> SessionFrame:
        m = unpack_body(body, "SESSION")
        token = _get_token(m, "token", "SESSION", ErrorCode.PROTOCOL_ERROR, required=True)
        timeout = _get_int(m, "timeout_ms", "SESSION", MAX_ERROR_CODE, required=True)
        assert token is not None and timeout is not None
        return cls(token, timeout)


@dataclass(frozen=True, slots=True)
class ResumeFrame:
    """RESUME (spec §15.3.2): what its sender holds of a stream, or of the connection.

    On a stream: ``received`` is ``(messages, bytes)`` of whole messages received,
    ``consumed`` the messages consumed, ``limits`` ``(bytes, messages)`` granted,
    ``ended`` whether the peer's END_STREAM arrived, ``reset`` the code if the stream was
    reset. On stream 0 (the last frame of an exchange): ``received`` is ``(0, bytes)``
    of the connection, ``limits`` ``(bytes, 0)``, and ``highest`` the highest stream id
    the peer opened that its sender has seen.
    """

    TYPE: ClassVar[FrameType] = FrameType.RESUME
    stream_id: int
    received: tuple[int, int]
    consumed: int = 0
    limits: tuple[int, int] = (0, 0)
    ended: bool = False
    reset: int | None = None
    highest: int = 0

    def encode(self) -> bytes:
        if self.stream_id == 0:
            body: dict[str, Any] = {
                "received": self.received[1],
                "limit": self.limits[0],
                "highest": self.highest,
            }
        else:
            body = {
                "received": list(self.received),
                "consumed": self.consumed,
                "limits": list(self.limits),
            }
            if self.ended:
                body["ended"] = 1
            if self.reset is not None:
                body["reset"] = self.reset
        return _control(FrameType.RESUME, self.stream_id, body)

    @classmethod
    def parse(cls, flags: int, stream_id: int, body: bytes) -> ResumeFrame:
        m = unpack_body(body, "RESUME")
        fc = ErrorCode.FLOW_CONTROL_ERROR
        if stream_id == 0:
            received = _get_int(m, "received", "RESUME", MAX_COUNTER, required=True)
            limit = _get_int(m, "limit", "RESUME", MAX_COUNTER, required=True, code=fc)
            highest = _get_int(m, "highest", "RESUME", MAX_STREAM_ID, required=True)
            assert received is not None and limit is not None and highest is not None
            return cls(0, (0, received), 0, (limit, 0), False, None, highest)
        got = _get_pair(m, "received", "RESUME", ErrorCode.PROTOCOL_ERROR)
        consumed = _get_int(m, "consumed", "RESUME", MAX_COUNTER, required=True)
        limits = _get_pair(m, "limits", "RESUME", fc)
        ended = _get_int(m, "ended", "RESUME", 1, required=False)
        reset = _get_int(m, "reset", "RESUME", MAX_ERROR_CODE, required=False)
        assert consumed is not None
        if consumed > got[0]:
            raise RemoteProtocolError(
                f"RESUME on stream {stream_id} reports {consumed} messages consumed of "
                f"{got[0]} received (spec §15.3.2)"
            )
        return cls(stream_id, got, consumed, limits, bool(ended), reset)


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame of a type this version does not define; ignored on receipt (spec §4.4)."""

    type: int
    flags: int
    stream_id: int
    body: bytes

    def encode(self) -> bytes:
        return HEADER.pack(len(self.body), self.type, self.flags, self.stream_id) + self.body


Frame = (
    DataFrame
    | HelloFrame
    | CreditFrame
    | BlockedFrame
    | PingFrame
    | PongFrame
    | ResetFrame
    | GoAwayFrame
    | SessionFrame
    | ResumeFrame
    | UnknownFrame
)

FRAME_TYPES: Final[dict[int, Any]] = {
    cls.TYPE: cls
    for cls in (
        DataFrame,
        HelloFrame,
        CreditFrame,
        BlockedFrame,
        PingFrame,
        PongFrame,
        ResetFrame,
        GoAwayFrame,
    )
}
#: spec §15.3: the frames parsed as such only on a session transport.
SESSION_FRAME_TYPES: Final[dict[int, Any]] = {cls.TYPE: cls for cls in (SessionFrame, ResumeFrame)}


def _present(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def _control(ftype: FrameType, stream_id: int, body: dict[str, Any]) -> bytes:
    data = pack_body(body)
    return HEADER.pack(len(data), ftype, 0, stream_id) + data


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of one frame (header and body)."""
    return frame.encode()


def check_header(
    length: int, ftype: int, stream_id: int, max_frame_bytes: int, session: bool = False
) -> None:
    """Reject a frame from its header alone, before its body is buffered (spec §4.2, §4.5).

    ``session``: this is a session transport, where SESSION and RESUME are control
    frames (spec §15.3); elsewhere they are unknown types (spec §4.4).

    Raises:
        RemoteProtocolError: FRAME_SIZE_ERROR for a body over the limit of its type,
            PROTOCOL_ERROR for a stream id of the wrong kind.
    """
    if ftype in CONTROL_TYPES or (session and ftype in SESSION_TYPES):
        if length > MAX_CONTROL_BODY:
            raise RemoteProtocolError(
                f"{FrameType(ftype).name} frame declares a {length}-byte body, over the "
                f"{MAX_CONTROL_BODY}-byte control-frame limit (spec §4.2)",
                ErrorCode.FRAME_SIZE_ERROR,
            )
        if ftype in CONNECTION_ONLY and stream_id != 0:
            raise RemoteProtocolError(
                f"{FrameType(ftype).name} frame on stream {stream_id}; it belongs to stream 0 "
                "(spec §4.5)"
            )
    elif length > max_frame_bytes:
        # DATA and unknown types alike (spec §4.2).
        raise RemoteProtocolError(
            f"frame of type {ftype} declares a {length}-byte body, over max_frame_bytes = "
            f"{max_frame_bytes} (spec §4.2)",
            ErrorCode.FRAME_SIZE_ERROR,
        )
    if ftype in STREAM_ONLY and stream_id == 0:
        raise RemoteProtocolError(
            f"{FrameType(ftype).name} frame on stream 0; it needs a stream (spec §4.5)"
        )


def parse_frame(
    ftype: int, flags: int, stream_id: int, body: bytes, session: bool = False
) -> Frame:
    """One frame object from a checked header and its whole body (spec §5, §15.3)."""
    cls = FRAME_TYPES.get(ftype)
    if cls is None and session:
        cls = SESSION_FRAME_TYPES.get(ftype)
    if cls is None:
        return UnknownFrame(ftype, flags, stream_id, body)
    frame: Frame = cls.parse(flags, stream_id, body)
    return frame


class FrameDecoder:
    """Turn chunks of any size into whole frames, checking limits at header time.

    The decoder buffers at most one header plus one body of an allowed size, so its
    memory is bounded by ``max(max_frame_bytes, MAX_CONTROL_BODY) + HEADER_SIZE``.
    After it raises, it must not be used again.
    """

    def __init__(self, max_frame_bytes: int = 65536, *, session: bool = False) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.session = session  # decode SESSION and RESUME too (a session transport, §15.3)
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes and return every frame they complete, in order."""
        self._buffer += data
        buf = self._buffer
        frames: list[Frame] = []
        pos = 0
        while len(buf) - pos >= HEADER_SIZE:
            length, ftype, flags, stream_id = HEADER.unpack_from(buf, pos)
            stream_id &= STREAM_ID_MASK
            check_header(length, ftype, stream_id, self.max_frame_bytes, self.session)
            end = pos + HEADER_SIZE + length
            if end > len(buf):
                break
            body = bytes(buf[pos + HEADER_SIZE : end])
            frames.append(parse_frame(ftype, flags, stream_id, body, self.session))
            pos = end
        del buf[:pos]
        return frames
