"""The stream state table (spec §6.3).

``TRANSITIONS`` maps (where a stream is, what happened) to where it goes. A missing
pair is forbidden: that is how the spec's MUST NOTs become code. Received frames that
are not in the table are the peer's error; sends that are not in it are ours.
The connection has a state of its own, :class:`ConnectionState`.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "CONNECTION_CLOSED",
    "CONNECTION_OPEN",
    "CONNECTION_RESUMING",
    "RECEIVING_STATES",
    "SENDING_STATES",
    "STREAM_CLOSED",
    "TRANSITIONS",
    "ConnectionState",
    "StreamInput",
    "StreamState",
    "next_state",
]


class StreamState(enum.Enum):
    """Stream states as one endpoint sees them (spec §6.3)."""

    __hash__ = object.__hash__  # members are singletons: the C hash, not Enum's

    IDLE = "idle"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"  # we sent END_STREAM
    HALF_CLOSED_REMOTE = "half-closed (remote)"  # we received END_STREAM
    CLOSED = "closed"


class StreamInput(enum.Enum):
    """What can happen to a stream (spec §6.3)."""

    __hash__ = object.__hash__  # members are singletons: the C hash, not Enum's

    SEND_OPEN = "send first frame"  # we open the stream (DATA or CREDIT)
    RECV_OPEN = "receive first frame"  # the peer opens it
    SEND_DATA = "send DATA"
    RECV_DATA = "receive DATA"
    SEND_END = "send END_STREAM"
    RECV_END = "receive END_STREAM"
    SEND_RESET = "send RESET"
    RECV_RESET = "receive RESET"


S = StreamState
I = StreamInput  # noqa: E741 - a table reads better with short names

TRANSITIONS: Final[dict[tuple[StreamState, StreamInput], StreamState]] = {
    (S.IDLE, I.SEND_OPEN): S.OPEN,
    (S.IDLE, I.RECV_OPEN): S.OPEN,
    (S.OPEN, I.SEND_DATA): S.OPEN,
    (S.OPEN, I.RECV_DATA): S.OPEN,
    (S.OPEN, I.SEND_END): S.HALF_CLOSED_LOCAL,
    (S.OPEN, I.RECV_END): S.HALF_CLOSED_REMOTE,
    (S.OPEN, I.SEND_RESET): S.CLOSED,
    (S.OPEN, I.RECV_RESET): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, I.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_END): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, I.SEND_RESET): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, I.RECV_RESET): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.SEND_END): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.SEND_RESET): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.RECV_RESET): S.CLOSED,
}

#: States in which DATA from the peer is allowed, derived from the table.
RECEIVING_STATES: Final = frozenset(s for (s, i) in TRANSITIONS if i is I.RECV_DATA)
#: States in which we may send DATA, derived from the table.
SENDING_STATES: Final = frozenset(s for (s, i) in TRANSITIONS if i is I.SEND_DATA)


def next_state(state: StreamState, event: StreamInput) -> StreamState | None:
    """Where ``event`` takes a stream in ``state``, or ``None`` if the spec forbids it."""
    return TRANSITIONS.get((state, event))


class ConnectionState(enum.Enum):
    """Where the connection is (spec §3, §10.4)."""

    __hash__ = object.__hash__  # members are singletons: the C hash, not Enum's

    PREFACE = "awaiting preface"  # the peer's preface is not complete yet
    HELLO = "awaiting HELLO"  # preface done, the peer's HELLO not yet seen
    OPEN = "open"
    CLOSING = "closing"  # GOAWAY sent or received: no new streams, open ones finish
    CLOSED = "closed"  # after a connection error or the transport's end: nothing more
    RESUMING = "resuming"  # spec §15.4: a session whose transport was lost, waiting for one


class ConnectionInput(enum.Enum):
    """What moves the connection (spec §3, §10)."""

    __hash__ = object.__hash__  # members are singletons: the C hash, not Enum's

    RECV_PREFACE = "receive preface"
    RECV_HELLO = "receive HELLO"
    GRACEFUL_GOAWAY = "send or receive GOAWAY(NO_ERROR)"
    ERROR = "connection error, error GOAWAY, or the transport's end"
    LOSE_TRANSPORT = "lose the transport of a resumable session"  # spec §15.4
    NEW_TRANSPORT = "reconnect on a new transport"  # spec §15.6, the initiator
    ADOPT_TRANSPORT = "take over a resuming transport"  # spec §15.6, the acceptor


C = ConnectionState
CI = ConnectionInput

# The members the hot paths compare with, read once here: on CPython 3.11 reading a
# member from its Enum class costs about 65 ns, a module constant about 5.
CONNECTION_OPEN: Final = ConnectionState.OPEN
CONNECTION_CLOSED: Final = ConnectionState.CLOSED
CONNECTION_RESUMING: Final = ConnectionState.RESUMING
STREAM_CLOSED: Final = StreamState.CLOSED

#: (where the connection is, what happened) -> where it goes; a missing pair leaves it
#: where it is (a graceful GOAWAY while closing, say). ERROR closes from anywhere.
CONNECTION_TRANSITIONS: Final[dict[tuple[ConnectionState, ConnectionInput], ConnectionState]] = {
    (C.PREFACE, CI.RECV_PREFACE): C.HELLO,  # spec §3.1
    (C.HELLO, CI.RECV_HELLO): C.OPEN,  # spec §3.4
    (C.OPEN, CI.GRACEFUL_GOAWAY): C.CLOSING,  # spec §10.4
    # spec §15.4, §15.6: a session outlives its transport; a loss during a resumption
    # (before the peer's HELLO, or in the exchange) leaves it resumable as well.
    **{(state, CI.LOSE_TRANSPORT): C.RESUMING for state in (C.PREFACE, C.HELLO, C.OPEN)},
    (C.RESUMING, CI.NEW_TRANSPORT): C.PREFACE,
    (C.RESUMING, CI.ADOPT_TRANSPORT): C.OPEN,
    **{(state, CI.ERROR): C.CLOSED for state in ConnectionState},  # spec §10.2, §10.6
}


def next_connection_state(state: ConnectionState, event: ConnectionInput) -> ConnectionState:
    """Where ``event`` takes the connection from ``state`` (spec §3, §10)."""
    return CONNECTION_TRANSITIONS.get((state, event), state)
