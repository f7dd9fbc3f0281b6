"""The asyncio layer's exceptions: asyncio's idioms, carrying what the core knows.

A lost connection is a :class:`ConnectionError` (as asyncio's streams raise), a stream
the peer ended raises :class:`EndOfStream` from ``receive()``. The stream-level errors
(:class:`~flowproto.StreamResetError`, :class:`~flowproto.StreamLimitError`,
:class:`~flowproto.HandshakeTimeout`) are the very classes the Trio layer raises.
"""

from __future__ import annotations

from .. import (
    FlowProtoError,
    HandshakeTimeout,
    MessageDecodeError,
    StreamClosedError,
    StreamLimitError,
    StreamResetError,
)
from ..iolayer import ConnectionLostBase

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


class ConnectionLostError(ConnectionLostBase, FlowProtoError, ConnectionError):
    """The connection ended before this operation could complete.

    Attributes (see :class:`flowproto.iolayer.ConnectionLostBase`): ``error_code``,
    ``reason``, ``last_stream_id``, ``delivered``, ``retry_after``, ``handed_over``, and
    ``retryable`` (GOAWAY OVERLOADED: the peer processed nothing, try later).
    """
