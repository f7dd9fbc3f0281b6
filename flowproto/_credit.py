"""Credit arithmetic in bytes and in messages (spec §8); no frames, no I/O.

Limits are absolute (spec §8.2): a limit is the cumulative number of DATA body bytes,
or of messages begun, that the peer may have sent since the stream (or connection)
opened. Going past a limit is a counter comparison, a repeated or late CREDIT is a
``max()``, and there is no increment that can overflow.

:class:`SendCredit` is the sender's view: the peer's limits and what we have sent.
:class:`ReceiveWindow` is the receiver's view: the limits we advertised, what arrived,
what the application consumed, and the replenish policy that decides when the next
CREDIT goes out (spec §8.5, §8.6).
"""

from __future__ import annotations

from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = ["ReceiveWindow", "SendCredit", "replenish_threshold"]


class SendCredit:
    """What the peer still lets us send (spec §8.3). Both units hold at once.

    For the connection only bytes are counted; ``limit_messages`` stays ``None``.
    """

    __slots__ = ("limit_bytes", "limit_messages", "sent_bytes", "sent_messages")

    def __init__(self, limit_bytes: int, limit_messages: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.limit_messages = limit_messages
        self.sent_bytes = 0
        self.sent_messages = 0

    @property
    def bytes_left(self) -> int:
        return self.limit_bytes - self.sent_bytes

    @property
    def messages_left(self) -> int | None:
        if self.limit_messages is None:
            return None
        return self.limit_messages - self.sent_messages

    def grant(self, limit_bytes: int | None, limit_messages: int | None = None) -> bool:
        """Apply a CREDIT; a limit not above the current one is ignored (spec §8.2).

        Returns:
            Whether any limit rose.
        """
        raised = False
        if limit_bytes is not None and limit_bytes > self.limit_bytes:
            self.limit_bytes = limit_bytes
            raised = True
        if (
            limit_messages is not None
            and self.limit_messages is not None
            and limit_messages > self.limit_messages
        ):
            self.limit_messages = limit_messages
            raised = True
        return raised

    def spend(self, nbytes: int, nmessages: int) -> None:
        """Count data we are about to send; refuse to go past a limit (spec §8.3)."""
        if self.sent_bytes + nbytes > self.limit_bytes:
            raise LocalProtocolError(
                f"sending {nbytes} bytes against {self.bytes_left} bytes of credit (spec §8.3)",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        if self.limit_messages is not None and self.sent_messages + nmessages > self.limit_messages:
            raise LocalProtocolError(
                f"sending {nmessages} messages against {self.messages_left} messages of credit "
                "(spec §8.3)",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.sent_bytes += nbytes
        self.sent_messages += nmessages


def replenish_threshold(window: int, min_progress: int) -> int:
    """How far the limit may lag its target before a CREDIT is due (spec §8.6 step 2).

    Half the window batches updates (silly-window avoidance); lagging by no more than
    ``window - min_progress`` keeps the min-progress guarantee of spec §8.5: after
    everything delivered is consumed, at least ``min_progress`` of credit is open.
    """
    return max(1, min(window // 2, window - min_progress + 1))


class ReceiveWindow:
    """What we let the peer send, what arrived, and what was consumed (spec §8.4-§8.6).

    ``received - consumed`` is what we hold for the application; the limits we
    advertise never exceed ``consumed + window``, so that is also bounded by the window.
    For the connection only bytes are counted; the message fields stay unused.
    """

    __slots__ = (
        "advertised_bytes",
        "advertised_messages",
        "consumed_bytes",
        "consumed_messages",
        "min_progress_bytes",
        "received_bytes",
        "received_messages",
        "threshold_bytes",
        "threshold_messages",
        "window_bytes",
        "window_messages",
    )

    def __init__(self, window_bytes: int, window_messages: int, min_progress_bytes: int) -> None:
        self.window_bytes = window_bytes
        self.window_messages = window_messages
        self.min_progress_bytes = min_progress_bytes
        self.advertised_bytes = window_bytes
        self.advertised_messages = window_messages
        self.received_bytes = 0
        self.received_messages = 0
        self.consumed_bytes = 0
        self.consumed_messages = 0
        self.threshold_bytes = replenish_threshold(window_bytes, min_progress_bytes)
        self.threshold_messages = replenish_threshold(window_messages, 1)

    @property
    def held_bytes(self) -> int:
        """Bytes received and not yet consumed."""
        return self.received_bytes - self.consumed_bytes

    @property
    def held_messages(self) -> int:
        """Messages begun and not yet consumed."""
        return self.received_messages - self.consumed_messages

    def receive(self, nbytes: int, nmessages: int, what: str) -> None:
        """Count arriving data; past a limit is FLOW_CONTROL_ERROR (spec §8.4)."""
        if self.received_bytes + nbytes > self.advertised_bytes:
            raise RemoteProtocolError(
                f"peer sent {self.received_bytes + nbytes} bytes on {what} against a limit of "
                f"{self.advertised_bytes} (spec §8.4)",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        if self.received_messages + nmessages > self.advertised_messages:
            raise RemoteProtocolError(
                f"peer began message {self.received_messages + nmessages} on {what} against a "
                f"limit of {self.advertised_messages} messages (spec §8.4)",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.received_bytes += nbytes
        self.received_messages += nmessages

    def consume(self, nbytes: int, nmessages: int) -> None:
        """The application is done with this much (spec §8.5); it may now be re-granted."""
        if nbytes > self.held_bytes or nmessages > self.held_messages:
            raise LocalProtocolError(
                f"releasing {nbytes} bytes / {nmessages} messages but only {self.held_bytes} "
                f"bytes / {self.held_messages} messages are held (spec §8.5)"
            )
        self.consumed_bytes += nbytes
        self.consumed_messages += nmessages

    def consume_all(self) -> int:
        """Treat everything held as consumed (discarded data, spec §8.8); returns the bytes."""
        nbytes = self.held_bytes
        self.consumed_bytes = self.received_bytes
        self.consumed_messages = self.received_messages
        return nbytes

    def update(self) -> tuple[int, int] | None:
        """The limits to advertise now, or ``None`` if no CREDIT is due (spec §8.6).

        1. The target is ``consumed + window`` in each unit.
        2. A unit is due when its target is at least its threshold above the advertised limit.
        3. If any unit is due, both limits are raised to their targets and returned.
        """
        target_bytes = self.consumed_bytes + self.window_bytes
        target_messages = self.consumed_messages + self.window_messages
        if (
            target_bytes - self.advertised_bytes >= self.threshold_bytes
            or target_messages - self.advertised_messages >= self.threshold_messages
        ):
            self.advertised_bytes = max(self.advertised_bytes, target_bytes)
            self.advertised_messages = max(self.advertised_messages, target_messages)
            return self.advertised_bytes, self.advertised_messages
        return None
