"""What the peer did, as frozen dataclasses returned by ``Connection.receive_data``.

Events are past-tense facts. Messages come in batches: one :class:`MessagesReceived`
per stream per ``receive_data`` call holds every whole message that call completed,
because per-message objects are the cost that dominates small messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._frames import Settings

__all__ = [
    "ConnectionClosed",
    "CreditGranted",
    "Event",
    "GoAwayReceived",
    "HandshakeCompleted",
    "MessagesReceived",
    "PeerBlocked",
    "PingReceived",
    "PongReceived",
    "ResumeRequested",
    "SessionGranted",
    "SessionResumed",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
    "StreamStarted",
]


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The peer's preface and HELLO arrived; ``settings`` is what it accepts (spec §3.2)."""

    settings: Settings


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (spec §6.2).

    ``await_start``: the peer waits to be told where the stream starts (spec §15.10):
    answer with ``Connection.start_stream`` before it can send anything.
    """

    stream_id: int
    await_start: bool = False


@dataclass(frozen=True, slots=True)
class MessagesReceived:
    """Whole messages that arrived on one stream, in order (spec §7.1).

    They are held against our credit until released with ``Connection.release``
    (spec §8.5): ``nbytes`` is their total size.
    """

    stream_id: int
    messages: list[bytes]
    nbytes: int


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer sent END_STREAM: it will send no more messages on this stream (spec §7.2)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream ended abruptly (spec §10.3).

    Attributes:
        stream_id: the stream.
        error_code: the RESET's code (an int: the peer may send codes this version lacks).
        reason: the RESET's reason text, if any.
        remote: True if the peer reset it, False if this side did (for example to refuse it).
        consumed: messages the peer's application had consumed on this stream, as the peer
            reported it (spec §10.5); ``None`` if it did not say.
    """

    stream_id: int
    error_code: int
    reason: str
    remote: bool
    consumed: int | None


@dataclass(frozen=True, slots=True)
class CreditGranted:
    """The peer raised a limit (spec §5.3); stream 0 is the connection."""

    stream_id: int
    bytes_limit: int
    messages_limit: int | None


@dataclass(frozen=True, slots=True)
class PeerBlocked:
    """The peer reports it has data it cannot send at these limits (spec §8.7)."""

    stream_id: int
    bytes_limit: int | None
    messages_limit: int | None


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer pinged; the PONG is already queued (spec §5.5)."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The answer to one of our PINGs (spec §5.6), and the round trip it measured.

    ``rtt`` is seconds from :meth:`Connection.ping` to the ``receive_data`` that brought
    the PONG, on the caller's clock; it is also added to ``Connection.rtt`` (spec §8.9).
    """

    ping_id: int
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer is shutting down (spec §10.4).

    Streams we opened with ids above ``last_stream_id`` were not processed and are
    already reset with REFUSED_STREAM; the others may finish if ``error_code`` is NO_ERROR.
    """

    last_stream_id: int
    error_code: int
    reason: str
    retry_after_ms: int | None = None  # with OVERLOADED: when a new connection may work


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The transport ended (``receive_data(b"")``) (spec §10.6).

    Attributes:
        clean: True if a GOAWAY preceded it and no frame was cut off.
        truncated: True if the transport ended inside a frame or a message.
    """

    clean: bool
    truncated: bool


@dataclass(frozen=True, slots=True)
class SessionGranted:
    """The connection has a session (spec §15.2, §15.3.1): ``token`` resumes it once.

    The initiator sees it when the acceptor's SESSION arrives; the acceptor when it
    queues one. Each resumption brings a new token; the old one is spent.
    """

    token: bytes
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    """On a new acceptor connection: the initiator's HELLO resumes the session of ``token``
    (spec §15.6). Nothing after that HELLO is processed until the I/O layer hands this
    connection to the session's own (``Connection.adopt``) or refuses it
    (``Connection.refuse_resume``).
    """

    token: bytes


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The receiver said where a stream opened with ``await_start`` starts (spec §15.10):
    send from message ``messages`` + 1, byte ``nbytes`` of the source on. ``(0, 0)``: from
    the beginning."""

    stream_id: int
    messages: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class SessionResumed:
    """Both exchanges are in and reconciled (spec §15.8): sending may go on.

    ``messages_retransmitted`` and ``bytes_retransmitted`` count what was queued again.
    """

    messages_retransmitted: int
    bytes_retransmitted: int


Event = (
    HandshakeCompleted
    | StreamOpened
    | MessagesReceived
    | StreamEnded
    | StreamReset
    | CreditGranted
    | PeerBlocked
    | PingReceived
    | PongReceived
    | GoAwayReceived
    | ConnectionClosed
    | SessionGranted
    | ResumeRequested
    | SessionResumed
    | StreamStarted
)
