"""The receive fast path (``Inbound.leading_run``) decides exactly what the walk decides.

``Connection.receive_data`` takes the run of whole messages a chunk starts with before
the walk, and returns at once when that run is the whole chunk (spec §8.4). The same
random bytes, split at the same random points, go to two receivers: one as it is, one
with the fast path switched off (every chunk walked). After every chunk the events, the
error, the bytes queued, the credit counted and the timers (spec §11 keepalive receipt,
§10.7.1 glitches) must agree, with the application releasing what arrived as it goes.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any
from unittest import mock

from helpers import connected_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from flowproto import (
    Connection,
    CreditFrame,
    Event,
    FlowProtoError,
    MessagesReceived,
    PingFrame,
    Settings,
)
from flowproto._inbound import Inbound

END_MESSAGE = 0x1
END_STREAM = 0x2
MAX_FRAME = 16384

#: The receiver: small windows and messages, so every limit is reachable.
RECEIVER = Settings(
    stream_bytes=3000,
    stream_messages=12,
    connection_bytes=5000,
    max_frame_bytes=MAX_FRAME,
    max_message_bytes=1000,
    max_streams=3,
    keepalive_ms=1000,
)


def data(stream_id: int, body: bytes, flags: int = END_MESSAGE) -> bytes:
    """A hand-made DATA frame (spec §5.1), header fields as given."""
    return struct.pack(">IBBI", len(body), 0, flags, stream_id) + body


#: Whole messages on the peer's streams: the hot path.
HOT = st.builds(
    data,
    st.sampled_from([1, 1, 1, 3, 5, 7]),
    st.sampled_from([0, 1, 64, 64, 64, 300, 1500]).map(bytes),
)
#: The rest: fragments, END_STREAM, odd flags, the reserved bit, control frames.
OTHER = st.one_of(
    st.builds(
        data,
        st.sampled_from([1, 3, 1 | 0x8000_0000]),
        st.sampled_from([0, 1, 64]).map(bytes),
        st.sampled_from([0, END_MESSAGE | END_STREAM, END_MESSAGE | 0x4]),
    ),
    st.just(data(3, b"", END_STREAM)),  # a bare half-close, or END_STREAM inside a message
    st.builds(lambda i: PingFrame(i).encode(), st.integers(0, 3)),
    st.builds(lambda n: CreditFrame(0, n).encode(), st.integers(0, 1 << 20)),
)
#: Connection errors (the last frame sent, if any): DATA on stream 0, on a stream of ours
#: never opened, past max_frame_bytes.
FATAL = st.sampled_from([data(0, b"x"), data(2, b"x"), data(1, bytes(MAX_FRAME + 1))])
FRAMES = st.one_of(HOT, HOT, HOT, HOT, HOT, OTHER, OTHER)  # mostly the hot path


class Receiver:
    """A receiver whose application releases every message as soon as it arrives."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        _, self.conn = connected_pair(None, RECEIVER)
        self.error: str | None = None

    def feed(self, chunk: bytes, now: float) -> dict[str, Any]:
        conn = self.conn
        events: list[Event] = []
        if self.error is None:
            try:
                if self.fast:
                    events = conn.receive_data(chunk, now)
                else:
                    with mock.patch.object(Inbound, "leading_run", return_value=None):
                        events = conn.receive_data(chunk, now)
                for e in events:
                    if isinstance(e, MessagesReceived):
                        conn.release(e.stream_id, e.nbytes, len(e.messages), now)
            except FlowProtoError as exc:
                self.error = f"{type(exc).__name__}: {exc}"
        return state(conn, events, self.error)


def state(conn: Connection, events: list[Event], error: str | None) -> dict[str, Any]:
    """What a receiver shows after a chunk, as far as the fast path could change it."""
    streams = {
        sid: (
            r.state,
            r.recv.received_bytes,
            r.recv.received_messages,
            r.recv.consumed_messages,
            r.recv.advertised_bytes,
            r.recv.advertised_messages,
            r.partial,
        )
        for sid, r in conn._streams.items()
    }
    recv = conn._conn_recv
    return {
        "events": events,
        "error": error,
        "sent": conn.data_to_send(),
        "state": conn.state,
        "streams": streams,
        "connection": (recv.received_bytes, recv.consumed_bytes, recv.advertised_bytes),
        "glitches": conn.glitches,
        "deadline": conn.next_deadline(),
        "held": bytes(conn._inbound.buf),
    }


@settings(max_examples=1000, deadline=None)
@given(
    frames=st.lists(st.tuples(FRAMES, st.booleans()), min_size=8, max_size=40),
    last=st.none() | FATAL,
    cuts=st.lists(st.integers(0, 1 << 16), max_size=3),
)
def test_the_fast_path_and_the_walk_agree_chunk_by_chunk(
    frames: list[tuple[bytes, bool]], last: bytes | None, cuts: list[int]
) -> None:
    """Chunks end after the frames marked so (the fast path's case) and at a few random
    points (a frame held in part, then completed)."""
    if last is not None:
        frames = [*frames, (last, False)]
    wire = b"".join(f for f, _ in frames)
    points = {0, len(wire), *(c % (len(wire) + 1) for c in cuts)}
    at = 0
    for f, cut in frames:
        at += len(f)
        if cut:
            points.add(at)
    ends = sorted(points)
    fast, slow = Receiver(fast=True), Receiver(fast=False)
    opening = data(1, b"open") + data(3, b"open")  # so the first frames may be on the hot path
    chunks = [opening, *(wire[i:j] for i, j in itertools.pairwise(ends) if j > i)]
    for i, chunk in enumerate(chunks):
        now = 0.01 * (i + 1)  # a clock that moves: §11 receipt, §10.7.1 refill
        assert fast.feed(chunk, now) == slow.feed(chunk, now)


def test_a_chunk_of_whole_messages_on_one_stream_is_not_walked() -> None:
    """The common case takes the fast path: the walk is not entered at all."""
    _, b = connected_pair(None, RECEIVER)
    b.receive_data(data(1, b"open"), 0.0)  # opening a stream is the walk's
    run = b"".join(data(1, bytes([i]) * 64) for i in range(3))
    with mock.patch.object(Inbound, "walk", side_effect=AssertionError("walked")):
        events = b.receive_data(run, 1.0)
    assert events == [MessagesReceived(1, [bytes([i]) * 64 for i in range(3)], 192)]
    assert b.next_deadline() is not None and b._last_rx == 1.0  # spec §11: a receipt


def test_a_run_followed_by_other_frames_is_walked_from_where_the_run_ends() -> None:
    """A chunk that starts with a run and goes on: one batch for the stream, in order."""
    _, b = connected_pair(None, RECEIVER)
    b.receive_data(data(1, b"open"), 0.0)
    wire = data(1, b"a") + data(1, b"b") + PingFrame(1).encode() + data(1, b"c")
    wire += data(1, b"d", END_MESSAGE | END_STREAM)
    events = b.receive_data(wire, 1.0)
    names = [type(e).__name__ for e in events]
    assert names == ["MessagesReceived", "PingReceived", "StreamEnded"]
    assert events[0] == MessagesReceived(1, [b"a", b"b", b"c", b"d"], 4)
