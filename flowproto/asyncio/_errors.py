"""The asyncio layer's exceptions: asyncio's idioms, carrying what the core knows.

A lost connection is a :class:`ConnectionError` (as asyncio's streams raise), a stream
the peer ended raises :class:`EndOfStream` from ``receive()``. The stream-level errors
(:class:`~flowproto.StreamResetError`, :class:`~flowproto.StreamLimitError`,
:class:`~flowproto.HandshakeTimeout`) are the very classes the Trio layer raises.
"""

from __future__ import annotations

from .. import (
    ErrorCode,
    FlowProtoError,
    HandshakeTimeout,
    MessageDecodeError,
    StreamClosedError,
    StreamLimitError,
    StreamResetError,
)

__all__ = [
    "ConnectionLostError",
    "EndOfStream",
    "HandshakeTimeout",
    "MessageDecodeError",
    "StreamClosedError",
    "StreamLimitError",
    "StreamResetError",
]


class EndOfStream(FlowProtoError):
    """``receive()`` after the peer ended the stream (END_STREAM, spec §7.2) and every
    message it sent was received; ``async for`` stops on it."""


class ConnectionLostError(FlowProtoError, ConnectionError):
    """The connection ended before this operation could complete.

    Attributes:
        error_code: the GOAWAY code that ended it (ours or the peer's), or ``None`` if the
            transport just ended.
        reason: what happened, in words.
        last_stream_id: the peer's GOAWAY last_stream, if it sent one: our streams above
            it were never processed and are safe to retry (spec §10.4).
        delivered: for a stream operation, the messages the peer reported consumed on
            that stream (spec §10.5); later messages may or may not have been.
        retry_after: with OVERLOADED, the seconds the peer asked us to wait before a new
            connection (GOAWAY ``retry_after_ms``, spec §5.8), else ``None``.
    """

    def __init__(
        self,
        reason: str,
        *,
        error_code: int | None = None,
        last_stream_id: int | None = None,
        delivered: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.delivered = delivered
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.reason

    @property
    def retryable(self) -> bool:
        """True if the peer processed nothing and a new connection may succeed later:
        GOAWAY(OVERLOADED), spec §10.1 (1.1)."""
        return self.error_code == ErrorCode.OVERLOADED

    def for_stream(self, delivered: int | None) -> ConnectionLostError:
        """A copy naming what one stream knows was delivered."""
        lost = ConnectionLostError(
            self.reason,
            error_code=self.error_code,
            last_stream_id=self.last_stream_id,
            delivered=delivered,
            retry_after=self.retry_after,
        )
        lost.__cause__ = self.__cause__
        return lost
