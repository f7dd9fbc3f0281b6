"""The stream state table (spec §6.3), and a Connection that keeps to it.

Every (state, input) pair is checked against the spec's prose, independently of
``TRANSITIONS``; a hypothesis walk checks that closed is final; and a hypothesis
program of local calls and peer frames (DATA with random flags, RESET, CREDIT) checks
that a Connection either moves each stream as the table says, answers a forbidden
frame as the spec asks (ignore on a closed stream, RESET for a stream error), or
raises ``RemoteProtocolError`` — and never raises anything else.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import event as note_event
from hypothesis import given, settings
from hypothesis import strategies as st

from flowproto import (
    PREFACE,
    Connection,
    CreditFrame,
    ErrorCode,
    FrameDecoder,
    HelloFrame,
    MessagesReceived,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
    StreamClosedError,
    StreamReset,
    StreamState,
)
from flowproto._frames import HEADER, FrameType
from flowproto._state import (
    RECEIVING_STATES,
    SENDING_STATES,
    TRANSITIONS,
    StreamInput,
    next_state,
)

S = StreamState
I = StreamInput  # noqa: E741 - mirrors _state.py

OPENS = {I.SEND_OPEN, I.RECV_OPEN}
RESETS = {I.SEND_RESET, I.RECV_RESET}


def spec_next_state(state: StreamState, event: StreamInput) -> StreamState | None:
    """spec §6.3 in prose, written apart from the table: where ``event`` takes ``state``.

    An idle stream can only be opened; an open one carries DATA both ways; END_STREAM
    half-closes our side (sent) or the peer's (received), and the second half closes
    it; RESET closes any stream that is not idle or closed; nothing leaves closed.
    """
    if state is S.IDLE:
        return S.OPEN if event in OPENS else None
    if state is S.CLOSED or event in OPENS:
        return None
    if event in RESETS:
        return S.CLOSED
    local_done = state is S.HALF_CLOSED_LOCAL
    remote_done = state is S.HALF_CLOSED_REMOTE
    if event in (I.SEND_DATA, I.SEND_END) and local_done:
        return None
    if event in (I.RECV_DATA, I.RECV_END) and remote_done:
        return None
    if event is I.SEND_END:
        return S.CLOSED if remote_done else S.HALF_CLOSED_LOCAL
    if event is I.RECV_END:
        return S.CLOSED if local_done else S.HALF_CLOSED_REMOTE
    return state  # DATA leaves the state as it is


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(StreamState, StreamInput)),
    ids=lambda x: x.name,
)
def test_every_state_and_input_is_in_the_table_or_forbidden(
    state: StreamState, event: StreamInput
) -> None:
    """Each (state, input) pair is a row of spec §6.3, or forbidden (next_state is None)."""
    expected = spec_next_state(state, event)
    assert next_state(state, event) is expected
    assert ((state, event) in TRANSITIONS) == (expected is not None)


def test_receiving_and_sending_states_match_the_table() -> None:
    """DATA may arrive in open and half-closed (local), and be sent in open and half-closed
    (remote) (spec §6.3); the sets are exactly the table's DATA rows."""
    assert {s for s in S if (s, I.RECV_DATA) in TRANSITIONS} == RECEIVING_STATES
    assert {s for s in S if (s, I.SEND_DATA) in TRANSITIONS} == SENDING_STATES
    assert {S.OPEN, S.HALF_CLOSED_LOCAL} == RECEIVING_STATES
    assert {S.OPEN, S.HALF_CLOSED_REMOTE} == SENDING_STATES


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(StreamInput), max_size=30))
def test_a_walk_from_open_never_leaves_closed(events: list[StreamInput]) -> None:
    """Closed is final, idle is never re-entered, half-closed never reopens (spec §6.3).

    Forbidden inputs are skipped, as a Connection refuses them.
    """
    state = S.OPEN
    for event in events:
        new = next_state(state, event)
        if new is None:
            continue
        assert new is not S.IDLE
        if state is S.CLOSED:
            raise AssertionError(f"{event} took a closed stream to {new}")
        if state in (S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_REMOTE):
            assert new in (state, S.CLOSED)
        state = new


# --- the Connection keeps to the table -------------------------------------------------

LOCAL = Settings(
    stream_bytes=1000,
    stream_messages=8,
    connection_bytes=3000,
    max_frame_bytes=16384,
    max_message_bytes=100,
)
PEER = Settings(max_frame_bytes=16384)
STREAM_IDS = range(1, 13)  # the peer (initiator) opens odd ids; the Connection even ones

# A stream is picked by number: mostly a stream that is not idle, or the peer's next id;
# one pick in ten is any id, idle ones of either parity included.
picks = st.integers(min_value=0, max_value=110)


def pick_stream(conn: Connection, pick: int, kind: str) -> int:
    """The stream that ``pick`` names in the Connection's present state."""
    candidates = [sid for sid in STREAM_IDS if conn.stream_state(sid) is not S.IDLE]
    if kind != "recv_reset":  # a RESET on an idle stream ends the walk (spec §5.7)
        candidates += [
            sid for sid in STREAM_IDS if sid % 2 == 1 and conn.stream_state(sid) is S.IDLE
        ][:1]
    if pick >= 100 or not candidates:
        return STREAM_IDS[pick % len(STREAM_IDS)]
    return candidates[pick % len(candidates)]


actions = st.lists(
    st.one_of(
        st.tuples(st.just("open")),
        st.tuples(st.just("send"), picks, st.booleans()),
        st.tuples(st.just("end"), picks),
        st.tuples(st.just("reset"), picks),
        st.tuples(st.just("release"), picks),
        st.tuples(
            st.just("recv_data"),
            picks,
            st.integers(min_value=0, max_value=255),  # undefined bits are ignored (§4.1)
            st.integers(min_value=0, max_value=120),
        ),
        st.tuples(
            st.just("recv_reset"),
            picks,
            st.integers(min_value=0, max_value=12),
        ),
        st.tuples(
            st.just("recv_credit"),
            picks,
            st.integers(min_value=0, max_value=3000),
            st.integers(min_value=0, max_value=20),
        ),
    ),
    max_size=40,
)


def table_move(state: StreamState, event: StreamInput) -> StreamState:
    """Where the table takes ``state`` on ``event``, which it must allow."""
    new = next_state(state, event)
    assert new is not None, f"{event} in {state} is forbidden"
    return new


def table_walk(state: StreamState, events: list[StreamInput]) -> tuple[StreamState, bool]:
    """Apply ``events`` by the table: (where it stops, whether every step was allowed)."""
    for event in events:
        new = next_state(state, event)
        if new is None:
            return state, False
        state = new
    return state, True


def frame_inputs(kind: str, pre: StreamState, flags: int) -> list[StreamInput]:
    """The stream inputs of spec §6.3 that a received frame stands for."""
    opening = [I.RECV_OPEN] if pre is S.IDLE else []
    if kind == "recv_data":
        return [*opening, I.RECV_DATA] + ([I.RECV_END] if flags & 0x2 else [])
    if kind == "recv_reset":
        return [I.RECV_RESET]
    return opening  # CREDIT opens an idle stream and changes nothing else


def wire_frame(action: tuple[Any, ...]) -> bytes:
    kind, sid = action[0], action[1]
    if kind == "recv_data":
        flags, size = int(action[2]), int(action[3])
        return HEADER.pack(size, FrameType.DATA, flags, sid) + bytes([sid]) * size
    if kind == "recv_reset":
        return ResetFrame(sid, action[2], "test").encode()
    return CreditFrame(sid, action[2], action[3]).encode()


@settings(max_examples=300, deadline=None)
@given(actions)
def test_connection_moves_streams_by_the_table_or_raises_remote_protocol_error(
    program: list[tuple[Any, ...]],
) -> None:
    """A Connection enforces spec §6.3 for every frame the peer may send in every state.

    After each peer frame one of these holds: the stream moved as the table says; the
    frame was forbidden on a closed stream and ignored (spec §6.5); the frame broke a
    per-stream rule and the stream was RESET with STREAM_CLOSED or MESSAGE_TOO_LARGE
    (spec §6.5, §7.3); or ``RemoteProtocolError`` was raised (a connection error, after
    which the walk ends). A frame on an idle stream of our parity, or a RESET on an idle
    stream, is always a connection error (spec §6.1, §5.7). Local calls succeed exactly
    when the table allows them, else raise ``StreamClosedError``. Only the stream named
    changes, except that opening a peer stream closes the idle peer ids below it (§6.1).
    """
    conn = Connection(Role.ACCEPTOR, LOCAL)
    decoder = FrameDecoder(PEER.max_frame_bytes)
    conn.data_to_send()  # our preface and HELLO: not looked at
    conn.receive_data(PREFACE + HelloFrame(PEER).encode(), 0.0)
    held: dict[int, list[int]] = {}  # whole messages delivered and not yet released
    for action in program:
        kind = action[0]
        if len(action) > 1:
            action = (kind, pick_stream(conn, action[1], kind), *action[2:])
        before = {sid: conn.stream_state(sid) for sid in STREAM_IDS}
        if kind == "open":
            expected = dict(before)
            if conn.can_open_stream and conn.stream_state(STREAM_IDS[-1]) is S.IDLE:
                sid = conn.open_stream()
                assert before[sid] is S.IDLE
                expected[sid] = table_move(S.IDLE, I.SEND_OPEN)
        elif kind in ("send", "end"):
            sid = action[1]
            pre = before[sid]
            end = kind == "end" or action[2]
            expected = dict(before)
            if pre in SENDING_STATES:
                if kind == "end":
                    conn.end_stream(sid)
                    sent = True
                else:
                    sent = conn.send_message(sid, b"m", end_stream=end)
                if sent and end:
                    expected[sid] = table_move(pre, I.SEND_END)
            else:
                with pytest.raises(StreamClosedError):
                    if kind == "end":
                        conn.end_stream(sid)
                    else:
                        conn.send_message(sid, b"m", end_stream=end)
        elif kind == "reset":
            sid = action[1]
            conn.reset_stream(sid)
            expected = dict(before)
            if before[sid] not in (S.IDLE, S.CLOSED):
                expected[sid] = table_move(before[sid], I.SEND_RESET)
            held.pop(sid, None)
        elif kind == "release":
            sid = action[1]
            sizes = held.pop(sid, [])
            conn.release(sid, sum(sizes), len(sizes), 0.0)
            expected = dict(before)
        else:
            sid = action[1]
            pre = before[sid]
            flags = action[2] if kind == "recv_data" else 0
            try:
                events = conn.receive_data(wire_frame(action), 0.0)
            except RemoteProtocolError as exc:
                note_event(f"{kind} on {pre.name}: {exc.error_code.name}")
                return  # a connection error: the Connection is closed, the walk ends
            ours_idle = pre is S.IDLE and sid % 2 == 0
            assert not ours_idle, f"{kind} on our idle stream {sid} was accepted (spec §6.1)"
            assert not (kind == "recv_reset" and pre is S.IDLE), "RESET on idle (spec §5.7)"
            for event in events:
                if isinstance(event, MessagesReceived):
                    held.setdefault(sid, []).extend(len(m) for m in event.messages)
                elif isinstance(event, StreamReset):
                    held.pop(sid, None)
            resets = [
                f
                for f in decoder.feed(conn.data_to_send())
                if isinstance(f, ResetFrame) and f.stream_id == sid
            ]
            post = conn.stream_state(sid)
            reached, allowed = table_walk(pre, frame_inputs(kind, pre, flags))
            note_event(f"{kind} on {pre.name}: " + ("reset" if resets else post.name))
            if resets:
                # A stream error: only DATA causes one, and RESET closes the stream.
                assert kind == "recv_data"
                assert [f.code for f in resets] in (
                    [ErrorCode.STREAM_CLOSED],
                    [ErrorCode.MESSAGE_TOO_LARGE],
                )
                # The stream error is found before END_STREAM is applied (spec §5.1): the
                # RESET leaves the state the stream had on receiving the DATA.
                base = table_move(S.IDLE, I.RECV_OPEN) if pre is S.IDLE else pre
                assert next_state(base, I.SEND_RESET) is S.CLOSED
                assert post is S.CLOSED
            elif allowed:
                assert post is reached, f"{kind} flags={flags:#x} on {pre}: {post}, not {reached}"
            else:
                assert pre is S.CLOSED and post is S.CLOSED, f"{kind} on {pre} gave {post}"
            expected = dict(before)
            expected[sid] = post
            if pre is S.IDLE:
                for other in STREAM_IDS:
                    if other % 2 == 1 and other < sid and before[other] is S.IDLE:
                        expected[other] = S.CLOSED  # spec §6.1: skipped ids are closed
        decoder.feed(conn.data_to_send())
        after = {sid: conn.stream_state(sid) for sid in STREAM_IDS}
        assert after == expected, f"after {action}"
