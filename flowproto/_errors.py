"""The exception tree and the spec's error codes (spec §10.1).

Every protocol error carries the :class:`ErrorCode` that the spec assigns to it, so the
layer above can put it in a GOAWAY or RESET without a lookup table of its own.
``RemoteProtocolError`` means the peer broke the spec; ``LocalProtocolError`` means this
side asked for something the spec forbids (such as sending past credit).
"""

from __future__ import annotations

import enum

__all__ = [
    "ConnectionClosedError",
    "ErrorCode",
    "FlowProtoError",
    "FrameTimeout",
    "HandshakeTimeout",
    "KeepaliveTimeout",
    "LocalProtocolError",
    "PeerTimeout",
    "RemoteProtocolError",
    "StreamClosedError",
    "StreamLimitError",
    "StreamResetError",
]


class ErrorCode(enum.IntEnum):
    """Error codes carried by RESET and GOAWAY (spec §10.1)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_ERROR = 0x4
    FRAME_SIZE_ERROR = 0x5
    STREAM_CLOSED = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    MESSAGE_TOO_LARGE = 0x9
    ENHANCE_YOUR_CALM = 0xA
    TIMEOUT = 0xB
    VERSION_MISMATCH = 0xC
    OVERLOADED = 0xD  # spec 1.1: refused for now, nothing processed, retry later (GOAWAY)
    REJECTED = 0xE  # spec 1.1: the application refused a message (RESET, §5.7)
    SESSION_UNKNOWN = 0xF  # spec 1.2 §15.6: no such session to resume (GOAWAY)
    CANNOT_REPRODUCE = 0x10  # spec 1.2 §15.10: a cold resume the sender cannot serve (RESET)

    @classmethod
    def describe(cls, code: int) -> str:
        """The code's name, or ``UNKNOWN(0x..)`` for a code this version does not define."""
        try:
            return cls(code).name
        except ValueError:
            return f"UNKNOWN(0x{code:x})"


#: Codes whose scope is one stream (spec §10.3); every other code ends the connection.
STREAM_SCOPED_CODES = frozenset(
    {
        ErrorCode.STREAM_CLOSED,
        ErrorCode.REFUSED_STREAM,
        ErrorCode.CANCEL,
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.REJECTED,
    }
)


class FlowProtoError(Exception):
    """Base class of every exception flowproto raises on purpose."""


class RemoteProtocolError(FlowProtoError):
    """The peer broke the spec.

    Attributes:
        error_code: the spec's code for the violation; the GOAWAY this side sent carries it.
    """

    def __init__(self, message: str, error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.error_code = error_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, {self.error_code.name})"


class LocalProtocolError(FlowProtoError):
    """This side asked for something the spec forbids (for example sending past credit).

    Attributes:
        error_code: the code a peer would use if it saw us do it.
    """

    def __init__(self, message: str, error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamClosedError(LocalProtocolError):
    """The stream cannot carry what was asked: it is closed, reset, or ended in that direction."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.STREAM_CLOSED)


class ConnectionClosedError(LocalProtocolError):
    """The connection is closed (after GOAWAY, an error, or the transport's end)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.PROTOCOL_ERROR)


class PeerTimeout(RemoteProtocolError):
    """The peer let a timer of spec §11 run out; GOAWAY(TIMEOUT) is queued, the connection
    closed. Raised by ``Connection.handle_timeout``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.TIMEOUT)


class KeepaliveTimeout(PeerTimeout):
    """The peer answered no keepalive PING in time (spec §11); the connection is closed."""


class FrameTimeout(PeerTimeout):
    """A frame begun by the peer did not arrive whole within its frame timeout (spec §11)."""


# --- what the I/O layers raise (shared by the Trio and asyncio layers) ------------------


class StreamLimitError(FlowProtoError):
    """``open_stream(wait=False)``: the peer's max_streams are all in use (spec §6.4)."""


class StreamResetError(FlowProtoError):
    """The stream was reset (spec §10.3); no more messages either way.

    Attributes:
        error_code: the RESET's code.
        reason: its reason text.
        remote: True if the peer reset it.
        delivered: messages the peer reported consumed on this stream (spec §10.5).
        retryable: True if the peer never processed the stream (REFUSED_STREAM).
    """

    def __init__(
        self, stream_id: int, error_code: int, reason: str, remote: bool, delivered: int | None
    ) -> None:
        who = "the peer" if remote else "this side"
        super().__init__(
            f"stream {stream_id} was reset by {who}: {ErrorCode.describe(error_code)}"
            + (f" ({reason})" if reason else "")
        )
        self.stream_id = stream_id
        self.error_code = error_code
        self.reason = reason
        self.remote = remote
        self.delivered = delivered
        self.retryable = error_code == ErrorCode.REFUSED_STREAM


class HandshakeTimeout(FlowProtoError, TimeoutError):
    """The peer did not complete the preface and HELLO exchange in time (spec §3.4)."""
