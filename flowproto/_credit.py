"""Credit arithmetic in bytes and in messages (spec §8); no frames, no I/O.

Limits are absolute (spec §8.2): a limit is the cumulative number of DATA body bytes,
or of messages begun, that the peer may have sent since the stream (or connection)
opened. Going past a limit is a counter comparison, a repeated or late CREDIT is a
``max()``, and there is no increment that can overflow.

:class:`SendCredit` is the sender's view: the peer's limits and what we have sent.
:class:`ReceiveWindow` is the receiver's view: the limits we advertised, what arrived,
what the application consumed, and the replenish policy that decides when the next
CREDIT goes out (spec §8.5, §8.6).

This is the only place a limit is checked, on both hot paths and in batch form:
:func:`send_room` and :func:`spend` for the sender, :func:`receive_room` and
:meth:`ReceiveWindow.take` for the receiver. Auto-tuning (``_autotune``) only moves
windows; nothing here reads a clock.
"""

from __future__ import annotations

from typing import Protocol

from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "CreditBudget",
    "ReceiveWindow",
    "SendCredit",
    "receive_room",
    "replenish_threshold",
    "send_room",
    "spend",
    "take_send",
]


class CreditBudget(Protocol):
    """What a receive window needs of a shared memory budget (``_autotune.MemoryBudget``)."""

    committed: int

    def clip(self, grant: int, need: int) -> int:
        """How much of a raise of ``grant`` bytes the budget allows (spec §8.9 B4)."""
        ...

    def note_peak(self) -> None:
        """Record ``committed`` if it is the most so far."""
        ...


class SendCredit:
    """What the peer still lets us send (spec §8.3). Both units hold at once.

    For the connection only bytes are counted; ``limit_messages`` stays ``None``.
    """

    __slots__ = (
        "funded_bytes",
        "funded_count",
        "funded_messages",
        "limit_bytes",
        "limit_messages",
        "sent_bytes",
        "sent_messages",
    )

    def __init__(self, limit_bytes: int, limit_messages: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.limit_messages = limit_messages
        self.sent_bytes = 0
        self.sent_messages = 0  # messages begun (for the connection: on all its streams)
        # spec §10.7.1: the raises of the CREDITs accepted as funded, and their number
        self.funded_bytes = 0
        self.funded_messages = 0
        self.funded_count = 0

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

    def funded(self, raised_bytes: int, raised_messages: int) -> bool:
        """Whether a CREDIT that raised the limits by this much is *funded* (spec §10.7.1).

        Funded: with its raises added, the raises of every CREDIT accepted as funded stay
        within what was sent (bytes, and messages for a stream) and their number within
        the messages begun. Every CREDIT that follows real consumption passes, so it is
        never charged to the glitch budget; an accepted one is counted here.
        """
        if raised_bytes <= 0 and raised_messages <= 0:
            return False
        if (
            self.funded_bytes + raised_bytes > self.sent_bytes
            or self.funded_messages + raised_messages > self.sent_messages
            or self.funded_count + 1 > self.sent_messages
        ):
            return False
        self.funded_bytes += raised_bytes
        self.funded_messages += raised_messages
        self.funded_count += 1
        return True

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


def send_room(stream: SendCredit, conn: SendCredit) -> tuple[int, int]:
    """(bytes, messages) the stream's and the connection's limits both let us send now.

    The sender's check in batch form (spec §8.3): a run of messages fits if its bytes and
    its count are within these; :func:`spend` then counts it.
    """
    messages = stream.limit_messages
    assert messages is not None  # a stream counts messages; only the connection does not
    return (
        min(stream.limit_bytes - stream.sent_bytes, conn.limit_bytes - conn.sent_bytes),
        messages - stream.sent_messages,
    )


def spend(stream: SendCredit, conn: SendCredit, nbytes: int, nmessages: int) -> None:
    """Count ``nmessages`` messages of ``nbytes`` in all against both limits (spec §8.3).

    Raises:
        LocalProtocolError: FLOW_CONTROL_ERROR if either limit would be passed; nothing
            is counted then.
    """
    if conn.sent_bytes + nbytes > conn.limit_bytes:
        raise LocalProtocolError(
            f"sending {nbytes} bytes against {conn.bytes_left} bytes of connection credit "
            "(spec §8.3)",
            ErrorCode.FLOW_CONTROL_ERROR,
        )
    stream.spend(nbytes, nmessages)
    conn.sent_bytes += nbytes
    conn.sent_messages += nmessages


def take_send(stream: SendCredit, conn: SendCredit, nbytes: int) -> bool:
    """Count one ``nbytes`` message if both limits allow it (spec §8.3); else count nothing.

    The single-message form of :func:`send_room` and :func:`spend` in one step.
    """
    sent = stream.sent_bytes + nbytes
    conn_sent = conn.sent_bytes + nbytes
    if (
        sent > stream.limit_bytes
        or conn_sent > conn.limit_bytes
        or stream.sent_messages >= stream.limit_messages  # type: ignore[operator]
    ):
        return False
    stream.sent_bytes = sent
    stream.sent_messages += 1
    conn.sent_bytes = conn_sent
    conn.sent_messages += 1
    return True


def receive_room(stream: ReceiveWindow, conn: ReceiveWindow) -> tuple[int, int]:
    """(bytes, messages) the peer may still send on the stream: the receiver's check in
    batch form (spec §8.4). A run of whole messages within both is counted with
    :meth:`ReceiveWindow.take`; anything past either goes to :meth:`ReceiveWindow.receive`,
    which raises FLOW_CONTROL_ERROR with the numbers.
    """
    return (
        min(
            stream.advertised_bytes - stream.received_bytes,
            conn.advertised_bytes - conn.received_bytes,
        ),
        stream.advertised_messages - stream.received_messages,
    )


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
        "budget",
        "consumed_bytes",
        "consumed_messages",
        "min_progress_bytes",
        "peak_bytes",
        "peak_messages",
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
        # The most held at once before the last consumption; see held_peak().
        self.peak_bytes = 0
        self.peak_messages = 0
        self.threshold_bytes = replenish_threshold(window_bytes, min_progress_bytes)
        self.threshold_messages = replenish_threshold(window_messages, 1)
        self.budget: CreditBudget | None = None  # set by MemoryBudget.join (spec §8.9)

    def set_window(self, window_bytes: int, window_messages: int) -> None:
        """Change the window; only later targets move, limits never go down (spec §8.9).

        Any window of at least ``min_progress_bytes`` bytes and 1 message keeps the
        guarantee of spec §8.5, because the thresholds are recomputed from it.
        """
        self.window_bytes = window_bytes
        self.window_messages = window_messages
        self.threshold_bytes = replenish_threshold(window_bytes, self.min_progress_bytes)
        self.threshold_messages = replenish_threshold(window_messages, 1)

    @property
    def held_bytes(self) -> int:
        """Bytes received and not yet consumed."""
        return self.received_bytes - self.consumed_bytes

    @property
    def held_messages(self) -> int:
        """Messages begun and not yet consumed."""
        return self.received_messages - self.consumed_messages

    def held_peak(self) -> tuple[int, int]:
        """The most (bytes, messages) ever held at once: received and not yet consumed.

        Exact, not sampled: what is held grows only as data is accepted (against the
        limits, spec §8.4) and shrinks only in :meth:`consume` (:meth:`consume_all` too
        calls it), which records it just before it shrinks; so its peak is the larger of
        those records and what is held now. It never exceeds the largest window advertised.
        """
        return (
            max(self.peak_bytes, self.received_bytes - self.consumed_bytes),
            max(self.peak_messages, self.received_messages - self.consumed_messages),
        )

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

    def take(self, nbytes: int, nmessages: int) -> None:
        """Count data already checked against :func:`receive_room` (the hot path, spec §8.4)."""
        self.received_bytes += nbytes
        self.received_messages += nmessages

    def consume(self, nbytes: int, nmessages: int) -> None:
        """The application is done with this much (spec §8.5); it may now be re-granted."""
        held_bytes = self.received_bytes - self.consumed_bytes
        held_messages = self.received_messages - self.consumed_messages
        if nbytes > held_bytes or nmessages > held_messages:
            raise LocalProtocolError(
                f"releasing {nbytes} bytes / {nmessages} messages but only {held_bytes} "
                f"bytes / {held_messages} messages are held (spec §8.5)"
            )
        # What is held is about to shrink: its peak so far (see held_peak()).
        if held_bytes > self.peak_bytes:
            self.peak_bytes = held_bytes
        if held_messages > self.peak_messages:
            self.peak_messages = held_messages
        self.consumed_bytes += nbytes
        self.consumed_messages += nmessages
        if self.budget is not None:
            self.budget.committed -= nbytes  # spec §8.9 B1: consumed credit is free again

    def consume_all(self) -> int:
        """Treat everything held as consumed (discarded data, spec §8.8); returns the bytes."""
        nbytes = self.received_bytes - self.consumed_bytes
        self.consume(nbytes, self.received_messages - self.consumed_messages)
        return nbytes

    def update(self, report: bool = False) -> tuple[int, int] | None:
        """The limits to advertise now, or ``None`` if no CREDIT is due (spec §8.6).

        1. The target is ``consumed + window`` in each unit.
        2. A unit is due when its target is at least its threshold above the advertised
           limit; with ``report`` (a consumption report is due, spec §8.6 step 3), when
           it is above the advertised limit at all.
        3. If any unit is due, both limits are raised to their targets and returned.
        4. A report with neither target above its limit (a tuned window shrinking) raises
           the message limit by 1: funded (spec §10.7.1), since ``report`` means at least
           one message was consumed since the last CREDIT, and the room it leaves the
           peer does not grow, since that message was consumed.
        """
        target_bytes = self.consumed_bytes + self.window_bytes
        target_messages = self.consumed_messages + self.window_messages
        least_bytes = 1 if report else self.threshold_bytes
        least_messages = 1 if report else self.threshold_messages
        if (
            target_bytes - self.advertised_bytes >= least_bytes
            or target_messages - self.advertised_messages >= least_messages
        ) and self._raise_to(target_bytes, target_messages):
            return self.advertised_bytes, self.advertised_messages
        if report:
            self.advertised_messages += 1
            return self.advertised_bytes, self.advertised_messages
        return None

    def _raise_to(self, target_bytes: int, target_messages: int) -> bool:
        """Raise the advertised limits to the targets, the bytes within the budget (spec
        §8.9 B4); False (nothing raised) rather than send a sliver of bytes alone."""
        if self.budget is not None and target_bytes > self.advertised_bytes:
            # spec §8.9 B4: the shared budget may grant less, never below the floor.
            need = self.consumed_bytes + self.min_progress_bytes - self.advertised_bytes
            grant = self.budget.clip(target_bytes - self.advertised_bytes, need)
            if grant < self.threshold_bytes and need <= 0:
                if target_messages - self.advertised_messages < self.threshold_messages:
                    return False  # wait for room rather than send a sliver (spec §8.6)
                grant = 0
            self.budget.committed += grant
            self.budget.note_peak()
            target_bytes = self.advertised_bytes + grant
        self.advertised_bytes = max(self.advertised_bytes, target_bytes)
        self.advertised_messages = max(self.advertised_messages, target_messages)
        return True
