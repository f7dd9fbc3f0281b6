"""The Trio layer's exceptions: Trio's own types, carrying what the core knows."""

from __future__ import annotations

import sys

import trio

if sys.version_info < (3, 11):  # trio depends on the backport there
    pass  # type: ignore[import-not-found, unused-ignore]

from .. import (
    ErrorCode,
    HandshakeTimeout,
    MessageDecodeError,
    StreamLimitError,
    StreamResetError,
)

__all__ = [
    "ConnectionLostError",
    "HandshakeTimeout",
    "MessageDecodeError",
    "StreamLimitError",
    "StreamResetError",
]


class ConnectionLostError(trio.BrokenResourceError):
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
        handed_over: on a server, this connection's peer resumed a session (spec §15.6):
            its transport now carries that session's connection, which goes on. Not a
            failure.
    """

    def __init__(
        self,
        reason: str,
        *,
        error_code: int | None = None,
        last_stream_id: int | None = None,
        delivered: int | None = None,
        retry_after: float | None = None,
        handed_over: bool = False,
    ) -> None:
        super().__init__(reason)
        self.handed_over = handed_over
        self.reason = reason
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.delivered = delivered
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """True if the peer processed nothing and a new connection may succeed later:
        GOAWAY(OVERLOADED), spec §10.1 (1.1)."""
        return self.error_code == ErrorCode.OVERLOADED

    def for_stream(self, delivered: int | None) -> ConnectionLostError:
        """A copy naming what one stream knows was delivered."""
        return ConnectionLostError(
            self.reason,
            error_code=self.error_code,
            last_stream_id=self.last_stream_id,
            delivered=delivered,
            retry_after=self.retry_after,
        )
