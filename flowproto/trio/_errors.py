"""The Trio layer's exceptions: Trio's own types, carrying what the core knows."""

from __future__ import annotations

import trio

from .. import (
    HandshakeTimeout,
    MessageDecodeError,
    StreamLimitError,
    StreamResetError,
)
from ..iolayer import ConnectionLostBase

__all__ = [
    "ConnectionLostError",
    "HandshakeTimeout",
    "MessageDecodeError",
    "StreamLimitError",
    "StreamResetError",
]


class ConnectionLostError(ConnectionLostBase, trio.BrokenResourceError):
    """The connection ended before this operation could complete.

    Attributes (see :class:`flowproto.iolayer.ConnectionLostBase`): ``error_code``,
    ``reason``, ``last_stream_id``, ``delivered``, ``retry_after``, ``handed_over``, and
    ``retryable`` (GOAWAY OVERLOADED: the peer processed nothing, try later).
    """
