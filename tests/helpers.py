"""Test helpers: two sans-IO connections wired back to back."""

from __future__ import annotations

from flowproto import Connection, Event, MessagesReceived, Role, Settings


def pump(
    a: Connection, b: Connection, *, max_rounds: int = 1000, now: float = 0.0
) -> tuple[list[Event], list[Event]]:
    """Move ``data_to_send()`` between ``a`` and ``b`` until both are quiet, at ``now``.

    Returns the events each side saw, in order: (a's events, b's events).
    """
    events_a: list[Event] = []
    events_b: list[Event] = []
    for _ in range(max_rounds):
        to_b = a.data_to_send()
        to_a = b.data_to_send()
        if not to_a and not to_b:
            return events_a, events_b
        if to_b:
            events_b.extend(b.receive_data(to_b, now))
        if to_a:
            events_a.extend(a.receive_data(to_a, now))
    raise AssertionError("connections did not go quiet")


def connected_pair(
    initiator_settings: Settings | None = None, acceptor_settings: Settings | None = None
) -> tuple[Connection, Connection]:
    """An initiator and an acceptor that have finished the handshake."""
    a = Connection(Role.INITIATOR, initiator_settings)
    b = Connection(Role.ACCEPTOR, acceptor_settings)
    pump(a, b)
    assert a.handshake_complete and b.handshake_complete
    return a, b


def messages_of(events: list[Event], stream_id: int | None = None) -> list[bytes]:
    """Every message in ``events`` (optionally of one stream), in order."""
    out: list[bytes] = []
    for e in events:
        if isinstance(e, MessagesReceived) and (stream_id is None or e.stream_id == stream_id):
            out.extend(e.messages)
    return out
