"""Runs of equal DATA frames: the receiver's column check (``_inbound.RUN_MIN``) decides
exactly what the frame-by-frame path decides (spec §4.2, §5.1, §8.4).

The same crafted bytes go to two fresh receivers: one gets them in one read (runs of
eight or more equal frames are checked by columns), the other one frame per read (never
a run). Messages per stream, the other events and any connection error must agree,
whatever interrupts the run and wherever credit runs out.
"""

from __future__ import annotations

import struct
from typing import Any

from helpers import connected_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from flowproto import (
    ErrorCode,
    Event,
    MessagesReceived,
    RemoteProtocolError,
    Settings,
)
from flowproto._inbound import RUN_MIN

END_MESSAGE = 0x1
END_STREAM = 0x2


def frame(stream_id: int, body: bytes, flags: int = END_MESSAGE) -> bytes:
    """A hand-made DATA frame (spec §5.1), header fields as given."""
    return struct.pack(">IBBI", len(body), 0, flags, stream_id) + body


def outcome(window: int, frames: list[bytes], one_read: bool) -> dict[str, Any]:
    """What a fresh receiver with a ``window``-message stream window makes of ``frames``."""
    _, b = connected_pair(None, Settings(stream_messages=window, keepalive_ms=0))
    events: list[Event] = []
    error: ErrorCode | None = None
    reads = [b"".join(frames)] if one_read else frames
    try:
        for chunk in reads:
            events += b.receive_data(chunk, 0.0)
    except RemoteProtocolError as exc:
        error = exc.error_code
    messages: dict[int, list[bytes]] = {}
    others = []
    for e in events:
        if isinstance(e, MessagesReceived):
            messages.setdefault(e.stream_id, []).extend(e.messages)
        else:
            others.append(e)
    return {"messages": messages, "others": others, "error": error, "sent": b.data_to_send()}


ODD = ["size", "stream", "flags", "reserved bit", "end stream", "type"]


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 3 * RUN_MIN + 20),
    size=st.sampled_from([0, 1, 16, 64, 100]),
    odd_at=st.none() | st.integers(0, 3 * RUN_MIN + 20),
    odd=st.sampled_from(ODD),
    window=st.integers(1, 3 * RUN_MIN + 30),
)
def test_a_run_in_one_read_is_decided_as_frame_by_frame(
    count: int, size: int, odd_at: int | None, odd: str, window: int
) -> None:
    body = bytes(range(size))
    frames = [frame(1, body) for _ in range(count)]
    if odd_at is not None and odd_at < count:
        frames[odd_at] = {
            "size": frame(1, body + b"+"),
            "stream": frame(3, body),
            "flags": frame(1, body, 0x1 | 0x4),  # an unknown flag bit
            "reserved bit": frame(1 | 0x8000_0000, body),
            "end stream": frame(1, body, END_MESSAGE | END_STREAM),
            "type": struct.pack(">IBBI", 8, 3, 0, 0) + bytes(8),  # PING
        }[odd]
    whole = outcome(window, frames, one_read=True)
    by_frame = outcome(window, frames, one_read=False)
    assert whole["error"] == by_frame["error"]
    if whole["error"] is None:  # a failed read reports no events: then only the error
        assert whole == by_frame


def test_a_long_run_is_delivered_whole_and_in_order() -> None:
    """The column check's own case: 1,000 equal 64-byte messages in one read."""
    bodies = [i.to_bytes(8, "big") * 8 for i in range(1000)]
    result = outcome(4096, [frame(1, b) for b in bodies], one_read=True)
    assert result["error"] is None
    assert result["messages"] == {1: bodies}


def test_a_run_past_the_window_is_a_flow_control_error() -> None:
    """spec §8.4: the run's check stops at the window; the message past it fails the
    connection exactly as it does when it comes alone."""
    frames = [frame(1, bytes(64)) for _ in range(5 * RUN_MIN + 1)]
    result = outcome(5 * RUN_MIN, frames, one_read=True)
    assert result["error"] == ErrorCode.FLOW_CONTROL_ERROR
    alone = outcome(5 * RUN_MIN, frames, one_read=False)
    assert alone["error"] == ErrorCode.FLOW_CONTROL_ERROR
    assert alone["messages"] == {1: frames[:-1] and [bytes(64)] * 5 * RUN_MIN}
    # and within the window the run is taken whole
    assert outcome(5 * RUN_MIN, frames[:-1], one_read=True)["messages"] == alone["messages"]
