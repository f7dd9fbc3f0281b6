"""Two sans-IO Connections back to back: the spec's rules as seen across the wire.

No Trio and no clock: bytes move with ``pump`` (tests/helpers.py) or are fed by hand,
and timed work gets ``now`` explicitly. Frames the spec forbids a conforming peer to
send are crafted with the frame classes' ``encode()`` or with ``struct`` directly, and
fed to the side under test with ``receive_data``. Each test of a MUST cites its section.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence
from typing import TypeVar

import pytest
from helpers import connected_pair, messages_of, pump

from flowproto import (
    PREFACE,
    BlockedFrame,
    Connection,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionState,
    CreditFrame,
    CreditGranted,
    DataFrame,
    ErrorCode,
    Event,
    Flags,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    GoAwayReceived,
    HandshakeCompleted,
    HelloFrame,
    KeepaliveTimeout,
    LocalProtocolError,
    MessagesReceived,
    PingFrame,
    PingReceived,
    PongFrame,
    PongReceived,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
    StreamClosedError,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    UnknownFrame,
)
from flowproto._body import pack_body
from flowproto._credit import replenish_threshold
from flowproto._frames import MAGIC, MAX_COUNTER

T = TypeVar("T")
END_MESSAGE = int(Flags.END_MESSAGE)
END_STREAM = int(Flags.END_STREAM)

# Small windows that keep the numbers readable: a stream holds two largest messages,
# the connection three.
SMALL = Settings(
    stream_bytes=20_000,
    stream_messages=8,
    connection_bytes=30_000,
    max_message_bytes=10_000,
    keepalive_ms=0,
)
QUIET = Settings(keepalive_ms=0)


# --- helpers -------------------------------------------------------------------------------


def frames_of(wire: bytes) -> list[Frame]:
    """The frames in ``wire`` (one side's output), after its preface if it starts with one."""
    if wire.startswith(PREFACE):
        wire = wire[len(PREFACE) :]
    decoder = FrameDecoder(16 * 1024 * 1024)
    frames = decoder.feed(wire)
    assert decoder.buffered == 0, "output ended inside a frame"
    return frames


def sent(conn: Connection) -> list[Frame]:
    """The frames ``conn`` has queued (its output is consumed)."""
    return frames_of(conn.data_to_send())


def data(stream_id: int, body: bytes = b"", flags: int = END_MESSAGE) -> bytes:
    """A hand-made DATA frame; ``flags`` and ``stream_id`` go on the wire as given."""
    return struct.pack(">IBBI", len(body), 0, flags, stream_id) + body


def of_type(frames: Sequence[object], cls: type[T]) -> list[T]:
    """The frames (or events) of one class, in order."""
    return [f for f in frames if isinstance(f, cls)]


events_of = of_type


def pair(
    initiator: Settings | None = None,
    acceptor: Settings | None = None,
    now: float = 0.0,
    **initiator_options: float,
) -> tuple[Connection, Connection]:
    """Like ``connected_pair``, with Connection keyword options for the initiator; the
    handshake arrives at ``now``."""
    a = Connection(Role.INITIATOR, initiator, **initiator_options)
    b = Connection(Role.ACCEPTOR, acceptor)
    pump(a, b, now=now)
    assert a.handshake_complete and b.handshake_complete
    return a, b


def opened(a: Connection, b: Connection) -> int:
    """Open a stream on ``a`` and let ``b`` learn of it."""
    stream_id = a.open_stream()
    _, events_b = pump(a, b)
    assert StreamOpened(stream_id) in events_b
    return stream_id


def expect_connection_error(conn: Connection, wire: bytes, code: ErrorCode) -> GoAwayFrame:
    """Feed ``wire``; it must fail the connection with ``code`` and queue a GOAWAY last."""
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire, 0.0)
    assert info.value.error_code == code, info.value
    frames = sent(conn)
    goaway = frames[-1]
    assert isinstance(goaway, GoAwayFrame), frames
    assert goaway.code == code
    assert conn.state is ConnectionState.CLOSED
    assert conn.receive_data(data(1, b"more"), 0.0) == []  # spec §10.2: no further input
    assert conn.data_to_send() == b""  # ... and nothing sent after the GOAWAY
    return goaway


def release_all(conn: Connection, events: list[Event]) -> None:
    for e in events:
        if isinstance(e, MessagesReceived):
            conn.release(e.stream_id, e.nbytes, len(e.messages), 0.0)


# --- handshake (spec §3) ---------------------------------------------------------------------


def test_each_side_learns_the_others_settings_from_its_hello() -> None:
    """spec §3.2: HELLO carries what its sender accepts; both sides complete the handshake."""
    s_a = Settings(stream_bytes=5_000_000, max_streams=7, keepalive_ms=0)
    s_b = Settings(connection_bytes=20_000_000, max_frame_bytes=16384)
    a = Connection(Role.INITIATOR, s_a)
    b = Connection(Role.ACCEPTOR, s_b)
    assert not a.handshake_complete and not b.handshake_complete
    events_a, events_b = pump(a, b)
    assert events_a == [HandshakeCompleted(s_b)]
    assert events_b == [HandshakeCompleted(s_a)]
    assert a.peer_settings == s_b and b.peer_settings == s_a
    assert a.state is ConnectionState.OPEN and b.state is ConnectionState.OPEN


def test_each_side_sends_its_preface_and_hello_without_waiting() -> None:
    """spec §3.1: the preface and HELLO go out before anything arrives."""
    settings = Settings(max_streams=3)
    wire = Connection(Role.ACCEPTOR, settings).data_to_send()
    assert wire.startswith(PREFACE)
    assert frames_of(wire) == [HelloFrame(settings)]


def test_data_before_hello_is_a_protocol_error() -> None:
    """spec §3.4: the first frame after the preface must be HELLO."""
    b = Connection(Role.ACCEPTOR)
    b.data_to_send()
    goaway = expect_connection_error(
        b, PREFACE + DataFrame(1, b"early").encode(), ErrorCode.PROTOCOL_ERROR
    )
    assert goaway.last_stream == 0


def test_a_ping_before_hello_is_a_protocol_error_too() -> None:
    """spec §3.4: any frame type other than HELLO first is PROTOCOL_ERROR."""
    b = Connection(Role.ACCEPTOR)
    b.data_to_send()
    expect_connection_error(b, PREFACE + PingFrame(1).encode(), ErrorCode.PROTOCOL_ERROR)


def test_a_second_hello_is_a_protocol_error() -> None:
    """spec §3.4: a second HELLO is a connection error PROTOCOL_ERROR."""
    _, b = connected_pair()
    expect_connection_error(b, HelloFrame().encode(), ErrorCode.PROTOCOL_ERROR)


def test_no_stream_opens_and_no_data_goes_before_the_peers_hello() -> None:
    """spec §3.4, §6.2: before the peer's HELLO a side cannot open a stream (local error)."""
    a = Connection(Role.INITIATOR)
    assert not a.can_open_stream
    with pytest.raises(LocalProtocolError):
        a.open_stream()
    assert frames_of(a.data_to_send()) == [HelloFrame()]


def test_a_wrong_magic_byte_fails_at_once() -> None:
    """spec §3.1: the magic is checked byte by byte; no waiting for the rest of the preface."""
    b = Connection(Role.ACCEPTOR)
    b.data_to_send()
    assert b.receive_data(MAGIC[:3], 0.0) == []
    goaway = expect_connection_error(b, b"X", ErrorCode.PROTOCOL_ERROR)
    assert goaway.last_stream == 0


def test_the_preface_may_arrive_one_byte_at_a_time() -> None:
    """spec §3.1: a correct preface split anywhere is accepted."""
    a = Connection(Role.INITIATOR)
    b = Connection(Role.ACCEPTOR)
    events: list[Event] = []
    for i, byte in enumerate(a.data_to_send()):
        events += b.receive_data(bytes([byte]), 0.0)
        assert b.state is not ConnectionState.CLOSED, i
    assert events == [HandshakeCompleted(Settings())]


def test_version_mismatch_sends_goaway_naming_the_supported_versions() -> None:
    """spec §3.3: GOAWAY(VERSION_MISMATCH, last_stream 0, versions [1]) after our HELLO."""
    b = Connection(Role.ACCEPTOR)
    with pytest.raises(RemoteProtocolError) as info:
        b.receive_data(MAGIC + (2).to_bytes(2, "big") + HelloFrame().encode(), 0.0)
    assert info.value.error_code == ErrorCode.VERSION_MISMATCH
    frames = sent(b)
    assert isinstance(frames[0], HelloFrame)  # spec §3.3: our preface and HELLO went first
    goaway = frames[-1]
    assert isinstance(goaway, GoAwayFrame)
    assert goaway.code == ErrorCode.VERSION_MISMATCH
    assert goaway.last_stream == 0
    assert goaway.versions == (1,)
    assert "2" in goaway.reason and "1" in goaway.reason
    assert b.state is ConnectionState.CLOSED
    assert b.receive_data(HelloFrame().encode(), 0.0) == []  # no further byte is interpreted


# --- stream ids and opening (spec §6.1, §6.2) --------------------------------------------------


def test_initiator_opens_odd_ids_and_acceptor_even_ids_in_increasing_order() -> None:
    """spec §6.1: parity by role; each new id greater than every id opened before."""
    a, b = connected_pair()
    assert [a.open_stream() for _ in range(3)] == [1, 3, 5]
    assert [b.open_stream() for _ in range(3)] == [2, 4, 6]
    _, events_b = pump(a, b)
    assert events_of(events_b, StreamOpened) == [StreamOpened(1), StreamOpened(3), StreamOpened(5)]


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(2, b"x"),
        CreditFrame(2, 100, 1, 0),
        BlockedFrame(2, 100, 1),
        ResetFrame(2, ErrorCode.CANCEL),
    ],
    ids=["DATA", "CREDIT", "BLOCKED", "RESET"],
)
def test_a_peer_frame_on_an_idle_id_of_our_parity_is_a_protocol_error(frame: Frame) -> None:
    """spec §6.1: a stream of our parity above the highest we opened is idle: PROTOCOL_ERROR."""
    _, b = connected_pair()  # b is the acceptor: even ids are its own
    expect_connection_error(b, frame.encode(), ErrorCode.PROTOCOL_ERROR)


def test_a_reset_on_a_new_peer_stream_id_is_a_protocol_error() -> None:
    """spec §5.7, §6.1: RESET cannot open a stream."""
    _, b = connected_pair()
    expect_connection_error(b, ResetFrame(1, ErrorCode.CANCEL).encode(), ErrorCode.PROTOCOL_ERROR)


def test_skipped_peer_ids_are_closed_and_nothing_is_allocated_for_them() -> None:
    """spec §6.1: ids passed over are closed for both endpoints; nothing is allocated."""
    _, b = connected_pair()
    assert b.receive_data(data(7, b"first"), 0.0) == [
        StreamOpened(7),
        MessagesReceived(7, [b"first"], 5),
    ]
    assert b.stream_ids == [7]
    for skipped in (1, 3, 5):
        assert b.stream_state(skipped) is StreamState.CLOSED
    assert b.stream_state(9) is StreamState.IDLE


def test_a_peer_id_not_above_the_highest_it_opened_opens_no_stream() -> None:
    """spec §6.1, §6.5: a lower (skipped) peer id is a closed stream, never a new one.

    Its DATA is counted and its connection credit returned at once; CREDIT, BLOCKED and
    RESET on it are ignored. (The spec classifies such ids as closed, so going back to
    a lower id is not itself a protocol error.)
    """
    _, b = connected_pair()
    b.receive_data(data(7, b"seven"), 0.0)
    b.release(7, 5, 1, 0.0)
    b.data_to_send()
    events = b.receive_data(
        data(3, b"late")
        + CreditFrame(5, 10**9, 10**6, 0).encode()
        + BlockedFrame(5, 1, 1).encode()
        + ResetFrame(3, ErrorCode.CANCEL).encode()
        + data(7, b"again"),
        0.0,
    )
    assert events == [MessagesReceived(7, [b"again"], 5)]
    assert b.stream_ids == [7]
    assert b.received_held(0) == (5, 0)  # the 4 bytes on stream 3 were discarded
    assert all(not isinstance(f, ResetFrame) for f in sent(b))


def test_open_stream_lets_the_peer_see_the_stream_before_any_message() -> None:
    """spec §6.2: open_stream() sends a CREDIT restating our limits, which opens the stream."""
    a, b = connected_pair(QUIET, SMALL)
    stream_id = a.open_stream()
    frames = frames_of(a.data_to_send())
    assert frames == [CreditFrame(stream_id, 4 * 1024 * 1024, 4096, 0)]
    events = b.receive_data(frames[0].encode(), 0.0)
    assert events == [StreamOpened(stream_id)]  # no CreditGranted: it raises no limit
    assert b.stream_state(stream_id) is StreamState.OPEN
    assert b.send_capacity(stream_id) == (4 * 1024 * 1024, 4096)
    assert a.send_capacity(stream_id) == (20_000, 8)


def test_either_side_may_send_first_on_a_stream() -> None:
    """spec §6.2: the stream is bidirectional once open."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    assert b.send_message(stream_id, b"from the acceptor")
    events_a, _ = pump(a, b)
    assert messages_of(events_a, stream_id) == [b"from the acceptor"]


# --- concurrency (spec §6.4) -------------------------------------------------------------------


def test_an_opener_keeps_within_the_peers_max_streams() -> None:
    """spec §6.4: an endpoint MUST NOT open more than the peer's max_streams (local error)."""
    a, _ = connected_pair(None, Settings(max_streams=2))
    a.open_stream()
    a.open_stream()
    assert not a.can_open_stream
    with pytest.raises(LocalProtocolError) as info:
        a.open_stream()
    assert info.value.error_code == ErrorCode.REFUSED_STREAM


def test_a_stream_over_max_streams_is_refused_and_the_connection_lives() -> None:
    """spec §6.4: RESET(REFUSED_STREAM, consumed 0); its DATA returns connection credit."""
    conn_window = 40_000
    settings = Settings(
        stream_bytes=40_000, connection_bytes=conn_window, max_message_bytes=10_000, max_streams=1
    )
    a, b = connected_pair(None, settings)
    first = opened(a, b)
    events = b.receive_data(
        data(3, b"x" * 9_000, 0) + data(3, b"y" * 9_000, 0) + data(3, b"z" * 9_000), 0.0
    )
    assert events == []  # no StreamOpened, no message
    frames = sent(b)
    resets = of_type(frames, ResetFrame)
    assert resets == [ResetFrame(3, ErrorCode.REFUSED_STREAM, resets[0].reason, 0)]
    assert b.stream_state(3) is StreamState.CLOSED
    assert b.received_held(0) == (0, 0)
    # spec §8.8: 27000 discarded bytes is past the connection threshold: CREDIT at once.
    threshold = replenish_threshold(conn_window, 10_000)
    assert threshold <= 27_000
    assert CreditFrame(0, conn_window + 27_000) in frames
    # The connection goes on.
    assert b.state is ConnectionState.OPEN
    assert a.send_message(first, b"still fine")
    _, events_b = pump(a, b)
    assert messages_of(events_b) == [b"still fine"]


def test_a_refused_stream_is_reported_to_its_opener_as_not_processed() -> None:
    """spec §6.4: REFUSED_STREAM means not processed; the opener sees consumed 0."""
    a = Connection(Role.INITIATOR, QUIET)
    b = Connection(Role.ACCEPTOR, Settings(max_streams=1))
    b.receive_data(a.data_to_send(), 0.0)
    # a conforming opener never exceeds max_streams, so b's HELLO reaches a with a
    # higher limit than b applies.
    b.data_to_send()
    a.receive_data(PREFACE + HelloFrame(Settings(max_streams=5)).encode(), 0.0)
    opened(a, b)
    second = a.open_stream()
    a.send_message(second, b"lost")
    events_a, events_b = pump(a, b)
    assert StreamOpened(second) not in events_b
    assert events_a == [
        StreamReset(second, ErrorCode.REFUSED_STREAM, "too many concurrent streams", True, 0)
    ]
    assert a.stream_state(second) is StreamState.CLOSED


def test_a_stream_closed_both_ways_frees_its_slot_even_with_messages_unread() -> None:
    """spec §6.4: a stream counts toward max_streams only while not closed.

    The opener's view closes no later than the receiver's, so an opener that waits for
    its stream to close may open the next one and must not be refused, even if the
    receiving application has not read the last messages of the closed stream yet.
    """
    a, b = connected_pair(None, Settings(max_streams=1))
    first = opened(a, b)
    a.send_message(first, b"last", end_stream=True)
    b.send_message(first, b"reply", end_stream=True)
    events_a, events_b = pump(a, b)
    release_all(a, events_a)
    assert messages_of(events_b) == [b"last"]  # b does not release it yet
    assert a.stream_state(first) is StreamState.CLOSED
    assert b.stream_state(first) is StreamState.CLOSED
    assert a.can_open_stream
    second = a.open_stream()
    a.send_message(second, b"next")
    events_a, events_b = pump(a, b)
    assert events_of(events_a, StreamReset) == []
    assert messages_of(events_b, second) == [b"next"]
    b.release(first, 4, 1, 0.0)  # the old message is still deliverable and releasable
    assert b.received_held(first) == (0, 0)


# --- fragmentation and END_MESSAGE (spec §7.1) ---------------------------------------------------


def test_a_message_larger_than_max_frame_bytes_arrives_whole() -> None:
    """spec §7.1: fragments of at most the peer's max_frame_bytes, the last with END_MESSAGE."""
    a, b = connected_pair(None, Settings(max_frame_bytes=16384))
    stream_id = opened(a, b)
    payload = bytes(range(256)) * 200  # 51200 bytes
    assert a.send_message(stream_id, payload)
    wire = a.data_to_send()
    frames = of_type(frames_of(wire), DataFrame)
    assert [len(f.data) for f in frames] == [16384, 16384, 16384, 2048]
    assert [f.end_message for f in frames] == [False, False, False, True]
    assert b"".join(f.data for f in frames) == payload
    events: list[Event] = []
    for i in range(0, len(wire), 1000):  # any chunking of the transport
        events += b.receive_data(wire[i : i + 1000], 0.0)
    assert events == [MessagesReceived(stream_id, [payload], len(payload))]


@pytest.mark.parametrize("read", [1 << 20, 64 * 1024 + 10, 20_000, 4096])
def test_large_fragments_are_joined_into_bytes_whatever_the_reads(read: int) -> None:
    """spec §7.1: large fragment bodies stay views of their reads until the join
    (``_inbound.VIEW_MIN_BYTES``); what is delivered is bytes, equal to what was sent,
    and a view never outlives the join."""
    a, b = connected_pair(None, Settings(max_frame_bytes=65536))
    stream_id = opened(a, b)
    payloads = [bytes([i]) * (200_000 + i) for i in range(3)]  # 4 fragments each
    for payload in payloads:
        assert a.send_message(stream_id, payload)
    wire = a.data_to_send()
    events: list[Event] = []
    for i in range(0, len(wire), read):
        events += b.receive_data(wire[i : i + read], 0.0)
    got = messages_of(events, stream_id)
    assert got == payloads
    assert all(type(m) is bytes for m in got)


@pytest.mark.parametrize(("read", "views"), [(1 << 20, False), (60_000, True)])
def test_a_fragment_under_a_quarter_of_its_read_is_copied_not_pinned(
    read: int, views: bool
) -> None:
    """The bound on views: a body is kept as a view of its read only if it is at least
    VIEW_MIN_BYTES and a quarter of that read, so views pin at most 4x what they hold."""
    from flowproto._inbound import VIEW_MIN_BYTES, DataBody, Inbound

    a, b = connected_pair(None, Settings(max_frame_bytes=VIEW_MIN_BYTES))
    stream_id = opened(a, b)
    assert a.send_message(stream_id, bytes(200_000))  # 13 fragments
    wire = a.data_to_send()
    kinds: list[bool] = []
    walk = Inbound.walk

    def spy(self: Inbound, data: bytes, pos: int, rx: object) -> Iterator[object]:
        for item in walk(self, data, pos, rx):  # type: ignore[arg-type]
            if type(item) is DataBody:
                big = len(item.body) >= VIEW_MIN_BYTES and 4 * len(item.body) >= len(data)
                assert (type(item.body) is memoryview) == big
                kinds.append(big)
            yield item

    events: list[Event] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Inbound, "walk", spy)
        for i in range(0, len(wire), read):
            events += b.receive_data(wire[i : i + read], 0.0)
    assert any(kinds) is views  # one read of it all: every fragment copied
    assert messages_of(events, stream_id) == [bytes(200_000)]


def test_fragments_of_two_streams_may_interleave() -> None:
    """spec §7.1: fragments of different streams may interleave; each stream keeps order."""
    _, b = connected_pair()
    events = b.receive_data(
        data(1, b"one-a", 0)
        + data(3, b"three-a", 0)
        + data(1, b"one-b", 0)
        + data(3, b"three-b", END_MESSAGE)
        + data(1, b"", END_MESSAGE),
        0.0,
    )
    assert messages_of(events, 1) == [b"one-aone-b"]
    assert messages_of(events, 3) == [b"three-athree-b"]


def test_an_empty_message_is_a_message() -> None:
    """spec §7.1: a zero-length DATA with END_MESSAGE is an empty message."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    assert a.send_message(stream_id, b"")
    assert a.send_capacity(stream_id)[1] == 4095  # it used one message of credit
    _, events_b = pump(a, b)
    assert messages_of(events_b) == [b""]


def test_many_messages_of_one_receive_come_in_one_batch_per_stream() -> None:
    """spec §7.1: messages are delivered whole and in order per stream."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    payloads = [str(i).encode() for i in range(50)]
    assert a.send_messages(stream_id, payloads) == 50
    events = b.receive_data(a.data_to_send(), 0.0)
    assert events == [MessagesReceived(stream_id, payloads, sum(map(len, payloads)))]


# --- END_STREAM (spec §7.2) --------------------------------------------------------------------


def test_end_stream_half_closes_each_direction_and_then_the_stream_leaves_the_table() -> None:
    """spec §7.2, §6.3: END_STREAM ends one direction; both ends close the stream."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    assert a.send_message(stream_id, b"request", end_stream=True)
    assert a.stream_state(stream_id) is StreamState.HALF_CLOSED_LOCAL
    _, events_b = pump(a, b)
    assert events_b == [MessagesReceived(stream_id, [b"request"], 7), StreamEnded(stream_id)]
    assert b.stream_state(stream_id) is StreamState.HALF_CLOSED_REMOTE
    with pytest.raises(StreamClosedError):
        a.send_message(stream_id, b"too late")  # spec §7.2: no DATA after END_STREAM
    # The other direction still works.
    assert b.send_message(stream_id, b"response")
    b.end_stream(stream_id)
    assert a.stream_ids == [stream_id]
    events_a, _ = pump(a, b)
    assert events_a == [MessagesReceived(stream_id, [b"response"], 8), StreamEnded(stream_id)]
    assert a.stream_state(stream_id) is StreamState.CLOSED
    assert b.stream_state(stream_id) is StreamState.CLOSED
    # Both leave the table once their received messages are released.
    assert a.stream_ids == [stream_id]
    a.release(stream_id, 8, 1, 0.0)
    b.release(stream_id, 7, 1, 0.0)
    assert a.stream_ids == [] and b.stream_ids == []
    assert a.stream_state(stream_id) is StreamState.CLOSED


def test_a_bare_half_close_needs_no_credit() -> None:
    """spec §7.2, §8.3 S4: END_STREAM alone uses no byte or message credit."""
    a, b = connected_pair(None, Settings(stream_messages=1, keepalive_ms=0))
    stream_id = opened(a, b)
    assert a.send_message(stream_id, b"only one")
    assert a.send_capacity(stream_id)[1] == 0
    a.end_stream(stream_id)
    _, events_b = pump(a, b)
    assert events_b == [MessagesReceived(stream_id, [b"only one"], 8), StreamEnded(stream_id)]


def test_end_stream_inside_a_message_is_a_protocol_error() -> None:
    """spec §7.2: END_STREAM that leaves a message in progress truncates it: PROTOCOL_ERROR."""
    _, b = connected_pair()
    b.receive_data(data(1, b"part", 0), 0.0)
    expect_connection_error(b, data(1, b"", END_STREAM), ErrorCode.PROTOCOL_ERROR)


def test_end_stream_on_a_frame_that_begins_an_unfinished_message_is_a_protocol_error() -> None:
    """spec §7.2: a frame with Length > 0, END_STREAM and no END_MESSAGE truncates its message."""
    _, b = connected_pair()
    expect_connection_error(b, data(1, b"half", END_STREAM), ErrorCode.PROTOCOL_ERROR)


def test_data_after_the_peers_end_stream_is_a_stream_error() -> None:
    """spec §7.2, §6.3: DATA on a half-closed (remote) stream: RESET(STREAM_CLOSED)."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    b.receive_data(data(stream_id, b"", END_STREAM), 0.0)
    b.data_to_send()
    events = b.receive_data(data(stream_id, b"extra"), 0.0)
    assert events == [
        StreamReset(stream_id, ErrorCode.STREAM_CLOSED, "DATA after END_STREAM", False, None)
    ]
    assert [type(f) for f in sent(b)] == [ResetFrame]
    assert b.received_held(0) == (0, 0)
    assert b.state is ConnectionState.OPEN


# --- message size (spec §7.3) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fragments",
    [[10_001], [6_000, 4_001], [10_000, 0, 1]],
    ids=["one frame", "two fragments", "empty fragment then one byte"],
)
def test_a_message_over_max_message_bytes_resets_the_stream(fragments: list[int]) -> None:
    """spec §7.3: stream error MESSAGE_TOO_LARGE; the connection continues."""
    settings = Settings(
        stream_bytes=100_000, connection_bytes=100_000, max_message_bytes=10_000, keepalive_ms=0
    )
    a, b = connected_pair(None, settings)
    stream_id = opened(a, b)
    wire = b"".join(
        data(stream_id, b"z" * n, END_MESSAGE if i == len(fragments) - 1 else 0)
        for i, n in enumerate(fragments)
    )
    events = b.receive_data(wire, 0.0)
    resets = events_of(events, StreamReset)
    assert len(resets) == 1
    assert resets[0].error_code == ErrorCode.MESSAGE_TOO_LARGE and not resets[0].remote
    assert events_of(events, MessagesReceived) == []
    frames = sent(b)
    reset = of_type(frames, ResetFrame)
    assert [(f.stream_id, f.code) for f in reset] == [(stream_id, ErrorCode.MESSAGE_TOO_LARGE)]
    assert b.received_held(0) == (0, 0)  # spec §8.8: the partial message was discarded
    # The sender sees the reset; the connection lives.
    events_a = a.receive_data(b"".join(f.encode() for f in frames), 0.0)
    assert events_of(events_a, StreamReset)[0].error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert a.state is ConnectionState.OPEN and b.state is ConnectionState.OPEN
    assert a.ping(0.0) is not None
    pump(a, b)


def test_a_message_of_exactly_max_message_bytes_is_accepted() -> None:
    """spec §7.3: the limit is inclusive."""
    a, b = connected_pair(None, SMALL)
    stream_id = opened(a, b)
    assert a.send_message(stream_id, b"m" * 10_000)
    _, events_b = pump(a, b)
    assert [len(m) for m in messages_of(events_b)] == [10_000]


def test_the_sender_refuses_a_message_over_the_peers_max_message_bytes() -> None:
    """spec §7.3: sending a message over the peer's max_message_bytes is a local error."""
    a, b = connected_pair(None, SMALL)
    stream_id = opened(a, b)
    with pytest.raises(LocalProtocolError) as info:
        a.send_message(stream_id, b"m" * 10_001)
    assert info.value.error_code == ErrorCode.MESSAGE_TOO_LARGE
    with pytest.raises(LocalProtocolError) as info:
        a.send_messages(stream_id, [b"m" * 10_001, b"ok"])
    assert info.value.error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert a.data_to_send() == b""  # nothing reached the wire
    # A batch stops before the oversized message.
    assert a.send_messages(stream_id, [b"ok", b"m" * 10_001, b"never"]) == 1
    _, events_b = pump(a, b)
    assert messages_of(events_b) == [b"ok"]


# --- the sender (spec §8.3, §8.7) --------------------------------------------------------------


def test_the_sender_stops_at_the_message_limit_and_reports_blocked_once() -> None:
    """spec §8.3 S1, §8.7: never past a limit; BLOCKED once per limit value."""
    a, b = connected_pair(QUIET, SMALL)
    stream_id = opened(a, b)
    for i in range(8):
        assert a.send_message(stream_id, b"%d" % i)
    assert not a.send_message(stream_id, b"ninth")
    assert not a.send_message(stream_id, b"ninth")
    assert a.send_messages(stream_id, [b"ninth", b"tenth"]) == 0
    frames = sent(a)
    assert len(of_type(frames, DataFrame)) == 8
    assert of_type(frames, BlockedFrame) == [BlockedFrame(stream_id, 20_000, 8)]
    # The receiver never sees more than it allowed.
    events = b.receive_data(b"".join(f.encode() for f in frames), 0.0)
    assert len(messages_of(events)) == 8


def test_blocked_is_reported_again_at_a_new_limit() -> None:
    """spec §8.7: one BLOCKED per distinct limit value."""
    a, b = connected_pair(QUIET, Settings(stream_messages=2, keepalive_ms=0))
    stream_id = opened(a, b)
    assert a.send_messages(stream_id, [b"1", b"2", b"3"]) == 2
    events_a, events_b = pump(a, b)
    release_all(b, events_b)
    events_a, _ = pump(a, b)
    assert CreditGranted(stream_id, 4 * 1024 * 1024 + 2, 4) in events_a
    assert a.send_messages(stream_id, [b"3", b"4", b"5"]) == 2
    assert of_type(sent(a), BlockedFrame) == [BlockedFrame(stream_id, 4 * 1024 * 1024 + 2, 4)]


def test_send_messages_returns_how_many_were_queued() -> None:
    """spec §8.3 S1: a batch stops at the first message credit does not cover."""
    a, b = connected_pair(QUIET, SMALL)
    stream_id = opened(a, b)
    payloads = [b"a" * 6_000] * 5
    assert a.send_messages(stream_id, payloads) == 3  # 18000 of 20000 stream bytes
    assert a.send_capacity(stream_id) == (2_000, 5)
    assert a.send_messages(stream_id, [b"b" * 2_000, b"c"]) == 1
    assert a.send_capacity(stream_id) == (0, 4)
    _, events_b = pump(a, b)
    assert messages_of(events_b) == [b"a" * 6_000] * 3 + [b"b" * 2_000]


def test_a_message_is_never_sent_in_part_for_lack_of_stream_credit() -> None:
    """spec §8.3 S2: the first frame goes only if the stream credit covers the whole message."""
    settings = Settings(stream_bytes=40_000, max_message_bytes=40_000, max_frame_bytes=16384)
    a, b = connected_pair(QUIET, settings)
    stream_id = opened(a, b)
    assert a.send_message(stream_id, b"a" * 30_000)
    a.data_to_send()
    assert not a.send_message(stream_id, b"b" * 20_000)  # 10000 left: would fit a fragment
    frames = sent(a)
    assert of_type(frames, DataFrame) == []
    assert frames == [BlockedFrame(stream_id, 40_000, 4096)]
    assert a.send_message(stream_id, b"c" * 10_000)  # a message that fits still goes


def test_a_message_is_never_sent_in_part_for_lack_of_connection_credit() -> None:
    """spec §8.3 S2: the connection credit must cover the whole message too."""
    settings = Settings(
        stream_bytes=30_000, connection_bytes=30_000, max_message_bytes=20_000, keepalive_ms=0
    )
    a, b = connected_pair(QUIET, settings)
    first = opened(a, b)
    second = opened(a, b)
    assert a.send_message(first, b"a" * 20_000)
    a.data_to_send()
    assert a.send_capacity(second) == (10_000, 4096)
    assert not a.send_message(second, b"b" * 15_000)
    frames = sent(a)
    assert frames == [BlockedFrame(0, 30_000, None)]


# --- the receiver's checks (spec §8.4) ---------------------------------------------------------


def test_data_one_byte_past_the_stream_byte_limit_is_a_flow_control_error() -> None:
    """spec §8.4: stream_received + Length > stream_limit: FLOW_CONTROL_ERROR."""
    a, b = connected_pair(None, SMALL)
    stream_id = opened(a, b)
    b.receive_data(data(stream_id, b"x" * 10_000) + data(stream_id, b"x" * 10_000), 0.0)  # exactly
    goaway = expect_connection_error(b, data(stream_id, b"x"), ErrorCode.FLOW_CONTROL_ERROR)
    assert goaway.last_stream == stream_id


def test_data_one_message_past_the_message_limit_is_a_flow_control_error() -> None:
    """spec §8.4: a message begun past message_limit: FLOW_CONTROL_ERROR."""
    a, b = connected_pair(None, SMALL)
    stream_id = opened(a, b)
    events = b.receive_data(data(stream_id) * 8, 0.0)  # eight empty messages: exactly the limit
    assert messages_of(events) == [b""] * 8
    expect_connection_error(b, data(stream_id), ErrorCode.FLOW_CONTROL_ERROR)


def test_a_bare_half_close_at_the_message_limit_is_allowed() -> None:
    """spec §7.1, §8.4: a bare half-close begins no message and uses no message credit."""
    _, b = connected_pair(None, SMALL)
    b.receive_data(data(1) * 8, 0.0)
    assert b.receive_data(data(1, b"", END_STREAM), 0.0) == [StreamEnded(1)]


def test_a_fragment_beginning_a_message_past_the_message_limit_is_a_flow_control_error() -> None:
    """spec §8.4, §7.1: a first fragment (END_MESSAGE clear) also uses message credit."""
    _, b = connected_pair(None, SMALL)
    b.receive_data(data(1) * 8, 0.0)
    expect_connection_error(b, data(1, b"frag", 0), ErrorCode.FLOW_CONTROL_ERROR)


def test_data_one_byte_past_the_connection_limit_is_a_flow_control_error() -> None:
    """spec §8.4: conn_received + Length > conn_limit: FLOW_CONTROL_ERROR."""
    _, b = connected_pair(None, SMALL)  # streams hold 20000, the connection 30000
    b.receive_data(data(1, b"x" * 10_000) + data(1, b"x" * 10_000) + data(3, b"y" * 10_000), 0.0)
    assert b.received_held(3) == (10_000, 1)
    goaway = expect_connection_error(b, data(3, b"y"), ErrorCode.FLOW_CONTROL_ERROR)
    assert goaway.last_stream == 3


def test_data_on_a_closed_stream_still_counts_against_the_connection_limit() -> None:
    """spec §8.4 check 1 applies to every DATA frame, including discarded ones."""
    _, b = connected_pair(None, SMALL)
    b.receive_data(data(1, b"x" * 10_000) + data(1, b"x" * 10_000) + data(3, b"y" * 5_000), 0.0)
    b.reset_stream(3)  # 5000 bytes come back at once, not yet advertised
    b.data_to_send()
    b.receive_data(data(3, b"z" * 5_000), 0.0)  # in flight: discarded, but counted
    expect_connection_error(b, data(3, b"z"), ErrorCode.FLOW_CONTROL_ERROR)


def test_the_credit_check_needs_only_the_frame_header() -> None:
    """spec §4.2 H4, §8.4: the violation is found before any body byte arrives."""
    _, b = connected_pair(None, SMALL)
    b.receive_data(data(1, b"x" * 10_000) + data(1, b"x" * 10_000), 0.0)
    header = struct.pack(">IBBI", 1, 0, END_MESSAGE, 1)
    expect_connection_error(b, header, ErrorCode.FLOW_CONTROL_ERROR)


# --- absolute limits (spec §8.2, §5.3) -----------------------------------------------------------


def test_a_duplicate_or_smaller_credit_changes_nothing() -> None:
    """spec §8.2: a CREDIT value not above the current limit is ignored."""
    a, b = connected_pair(QUIET, SMALL)
    stream_id = opened(a, b)
    a.send_message(stream_id, b"x" * 1_000)
    before = a.send_capacity(stream_id)
    for frame in (
        CreditFrame(stream_id, 20_000, 8, 0),  # a duplicate of the initial limits
        CreditFrame(stream_id, 5_000, 2, 0),  # smaller: stale or reordered
        CreditFrame(0, 30_000),
        CreditFrame(0, 1),
    ):
        assert a.receive_data(frame.encode(), 0.0) == []
        assert a.send_capacity(stream_id) == before
    events = a.receive_data(CreditFrame(stream_id, 20_000, 9, 0).encode(), 0.0)
    assert events == [CreditGranted(stream_id, 20_000, 9)]  # one limit raised, one restated
    assert a.send_capacity(stream_id) == (before[0], before[1] + 1)


@pytest.mark.parametrize(
    "frame",
    [
        CreditFrame(1, MAX_COUNTER + 1, 10, 0),
        CreditFrame(1, 10**6, MAX_COUNTER + 1, 0),
        CreditFrame(0, MAX_COUNTER + 1),
    ],
    ids=["stream bytes", "stream messages", "connection bytes"],
)
def test_a_credit_above_max_counter_is_a_flow_control_error(frame: CreditFrame) -> None:
    """spec §5.3, §8.2: a limit above 2^62-1 is a connection error FLOW_CONTROL_ERROR."""
    a, b = connected_pair()
    opened(a, b)
    expect_connection_error(a, frame.encode(), ErrorCode.FLOW_CONTROL_ERROR)


def test_a_credit_of_exactly_max_counter_is_accepted() -> None:
    """spec §8.2: MAX_COUNTER itself is a valid limit."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    events = a.receive_data(
        CreditFrame(stream_id, MAX_COUNTER, MAX_COUNTER, 0).encode()
        + CreditFrame(0, MAX_COUNTER).encode(),
        0.0,
    )
    assert events == [
        CreditGranted(stream_id, MAX_COUNTER, MAX_COUNTER),
        CreditGranted(0, MAX_COUNTER, None),
    ]
    assert a.send_capacity(stream_id) == (MAX_COUNTER, MAX_COUNTER)


# --- when credit returns (spec §8.5, §8.6) --------------------------------------------------------


def test_credit_returns_on_release_not_on_receipt() -> None:
    """spec §8.5: a receiver that never releases holds the sender at exactly its window."""
    a, b = connected_pair(QUIET, SMALL)
    stream_id = opened(a, b)
    delivered: list[Event] = []
    for _ in range(20):
        a.send_messages(stream_id, [b"p" * 1_000] * 5)
        events_a, events_b = pump(a, b)
        delivered += events_b
        assert events_of(events_a, CreditGranted) == []
    assert a.send_capacity(stream_id) == (12_000, 0)  # 8 messages and 8000 bytes sent ...
    assert b.received_held(stream_id) == (8_000, 8)  # ... exactly the message window
    release_all(b, delivered)
    events_a, _ = pump(a, b)
    assert events_of(events_a, CreditGranted) != []
    bytes_left, messages_left = a.send_capacity(stream_id)
    assert bytes_left >= 10_000 and messages_left >= 1


def test_credit_returns_on_release_for_the_byte_window_too() -> None:
    """spec §8.5: the byte window is a hard limit until the application releases."""
    a, b = connected_pair(QUIET, SMALL)
    stream_id = opened(a, b)
    for _ in range(10):
        a.send_message(stream_id, b"q" * 10_000)
        pump(a, b)
    assert b.received_held(stream_id) == (20_000, 2)
    assert a.send_capacity(stream_id) == (0, 6)


@pytest.mark.parametrize(
    ("window", "max_message", "window_messages", "connection"),
    [
        (65_536, 65_536, 4096, 65_536),  # window == max_message: CREDIT after every message
        (100_000, 30_000, 3, 120_000),
        (50_000, 49_999, 1, 60_000),
        (1_000_000, 16_384, 2, 40_000),  # the connection is the tight one
        (16_384, 0, 5, 16_384),  # only empty messages
    ],
)
def test_after_releasing_everything_the_sender_can_send_one_more_largest_message(
    window: int, max_message: int, window_messages: int, connection: int
) -> None:
    """spec §8.5 G1, G2: limits ≥ consumed + max_message_bytes and ≥ consumed + 1 message."""
    settings = Settings(
        stream_bytes=window,
        stream_messages=window_messages,
        connection_bytes=connection,
        max_message_bytes=max_message,
        keepalive_ms=0,
    )
    a, b = connected_pair(QUIET, settings)
    stream_id = opened(a, b)
    sizes = [max_message, 1, max_message // 3, 0, max_message // 2 + 1, max_message - 1, 7]
    sizes = [min(max(n, 0), max_message) for n in sizes]
    total = 0
    for i in range(60):
        size = sizes[i % len(sizes)]
        while a.send_message(stream_id, b"s" * size):
            total += 1
            size = sizes[(i + total) % len(sizes)]
        _, events_b = pump(a, b)
        release_all(b, events_b)  # consume everything delivered ...
        pump(a, b)
        # ... and the credit the sender then holds admits one more message of any size.
        bytes_left, messages_left = a.send_capacity(stream_id)
        assert bytes_left >= max_message, (i, bytes_left)
        assert messages_left >= 1, i
        assert b.received_held(stream_id) == (0, 0)
    assert total >= 60


def test_credit_is_sent_in_batches_not_for_every_small_release() -> None:
    """spec §8.6: CREDIT goes out once a threshold is reached (silly-window avoidance)."""
    a, b = connected_pair(QUIET, Settings(stream_messages=16, keepalive_ms=0))
    stream_id = opened(a, b)
    assert a.send_messages(stream_id, [b"m"] * 16) == 16
    events = b.receive_data(a.data_to_send(), 0.0)
    assert messages_of(events) == [b"m"] * 16
    credits: list[Frame] = []
    for i in range(16):
        b.release(stream_id, 1, 1, 0.0)
        new = of_type(sent(b), CreditFrame)
        credits += new
        if i < 7:
            assert new == [], i  # half the message window (8) not yet reached
    assert credits == [
        CreditFrame(stream_id, 4 * 1024 * 1024 + 8, 24, 8),
        CreditFrame(stream_id, 4 * 1024 * 1024 + 16, 32, 16),
    ]


# --- discarded data (spec §8.8) ------------------------------------------------------------------


@pytest.mark.parametrize("who", ["we reset", "peer reset", "refused"])
def test_data_on_a_dead_stream_returns_connection_credit_at_once(who: str) -> None:
    """spec §8.8, §6.5: discarded DATA counts as consumed for the connection at once."""
    settings = Settings(
        stream_bytes=40_000,
        connection_bytes=40_000,
        max_message_bytes=10_000,
        max_streams=1,
        keepalive_ms=0,
    )
    a, b = connected_pair(QUIET, settings)
    stream_id = opened(a, b)
    if who == "we reset":
        b.reset_stream(stream_id)
    elif who == "peer reset":
        b.receive_data(ResetFrame(stream_id, ErrorCode.CANCEL).encode(), 0.0)
    else:
        stream_id = 3  # over max_streams 1
    b.data_to_send()
    for i in range(1, 4):  # 3 x 20000 bytes, more than the connection window of 40000
        events = b.receive_data(
            data(stream_id, b"d" * 10_000) + data(stream_id, b"d" * 10_000), 0.0
        )
        assert events_of(events, MessagesReceived) == []
        assert b.received_held(0) == (0, 0)
        # 20000 bytes is the connection threshold of this window (spec §8.6).
        assert of_type(sent(b), CreditFrame) == [CreditFrame(0, 40_000 + i * 20_000)]
    assert b.state is ConnectionState.OPEN


def test_resetting_a_stream_discards_its_unread_messages_and_returns_their_credit() -> None:
    """spec §8.8, §10.3: a reset stream's unconsumed messages return connection credit."""
    a, b = connected_pair(QUIET, SMALL)
    first = opened(a, b)
    second = opened(a, b)
    a.send_messages(first, [b"x" * 10_000, b"x" * 10_000])
    pump(a, b)
    assert a.send_capacity(second) == (10_000, 8)  # the connection holds 20000 of 30000
    b.reset_stream(first)
    events_a, _ = pump(a, b)
    assert b.received_held(0) == (0, 0)
    assert CreditGranted(0, 50_000, None) in events_a
    assert a.send_capacity(second) == (20_000, 8)


@pytest.mark.parametrize("resetter", ["receiver", "sender"])
def test_a_thousand_open_send_reset_rounds_leave_the_connection_window_whole(
    resetter: str,
) -> None:
    """spec §8.8, §9 R7 (reliability A18a): reset streams never leak connection credit."""
    window = 64 * 1024
    max_message = 16 * 1024
    settings = Settings(
        stream_bytes=1 << 20,
        connection_bytes=window,
        max_message_bytes=max_message,
        max_streams=4,
        keepalive_ms=0,
    )
    a, b = connected_pair(QUIET, settings)
    payload = b"r" * 5_000
    for i in range(1000):
        stream_id = a.open_stream()
        assert a.send_message(stream_id, payload), i
        if resetter == "sender":
            a.reset_stream(stream_id)  # the message may or may not be read: it is not
        _, events_b = pump(a, b)
        assert messages_of(events_b) == [payload]
        if resetter == "receiver":
            b.reset_stream(stream_id)  # without reading it
            pump(a, b)
        assert a.stream_ids == [] and b.stream_ids == [], i
    assert b.received_held(0) == (0, 0)
    # Every discarded byte came back: what is not re-advertised is below one threshold.
    last = a.open_stream()
    conn_credit = a.send_capacity(last)[0]
    assert conn_credit > window - replenish_threshold(window, max_message)
    assert conn_credit >= max_message


# --- RESET and delivery knowledge (spec §10.3, §10.5) ---------------------------------------------


def test_a_reset_carries_consumed_and_the_sender_sees_it() -> None:
    """spec §5.7, §10.5: the RESET's consumed is the final count of delivered messages."""
    a, b = connected_pair(QUIET, QUIET)
    stream_id = opened(a, b)
    a.send_messages(stream_id, [b"one", b"two", b"three"])
    _, events_b = pump(a, b)
    assert messages_of(events_b) == [b"one", b"two", b"three"]
    b.release(stream_id, 6, 2, 0.0)
    b.reset_stream(stream_id, ErrorCode.CANCEL, "enough")
    wire = b.data_to_send()
    assert of_type(frames_of(wire), ResetFrame) == [
        ResetFrame(stream_id, ErrorCode.CANCEL, "enough", 2)
    ]
    assert a.receive_data(wire, 0.0) == [
        StreamReset(stream_id, ErrorCode.CANCEL, "enough", True, 2)
    ]
    assert a.stream_state(stream_id) is StreamState.CLOSED
    with pytest.raises(StreamClosedError):
        a.send_message(stream_id, b"four")


def test_peer_consumed_follows_the_consumed_of_credit_frames() -> None:
    """spec §10.5: stream CREDIT carries the cumulative messages consumed."""
    a, b = connected_pair(QUIET, Settings(stream_messages=2, keepalive_ms=0))
    stream_id = opened(a, b)
    assert a.peer_consumed(stream_id) is None
    a.send_messages(stream_id, [b"one", b"two"])
    pump(a, b)
    assert a.peer_consumed(stream_id) is None  # received is not consumed
    b.release(stream_id, 3, 1, 0.0)
    pump(a, b)
    assert a.peer_consumed(stream_id) == 1
    b.release(stream_id, 3, 1, 0.0)
    pump(a, b)
    assert a.peer_consumed(stream_id) == 2
    # A stale, lower count never lowers it.
    a.receive_data(CreditFrame(stream_id, 1, 1, 1).encode(), 0.0)
    assert a.peer_consumed(stream_id) == 2


def test_the_final_consumed_count_is_reported_after_the_peer_ends_its_direction() -> None:
    """spec §10.5 (final report): once every message of a half-closed (remote) stream is
    consumed, a stream CREDIT carries the final consumed count, limits restated."""
    a, b = connected_pair(QUIET, QUIET)
    stream_id = opened(a, b)
    a.send_messages(stream_id, [b"one", b"two"], end_stream=True)
    pump(a, b)
    assert b.stream_state(stream_id) is StreamState.HALF_CLOSED_REMOTE
    b.release(stream_id, 3, 1, 0.0)
    assert of_type(sent(b), CreditFrame) == []  # far below the replenish threshold
    b.release(stream_id, 3, 1, 0.0)
    wire = b.data_to_send()
    assert of_type(frames_of(wire), CreditFrame) == [
        CreditFrame(stream_id, 4 * 1024 * 1024, 4096, 2)
    ]
    assert a.receive_data(wire, 0.0) == []  # it raises no limit
    assert a.peer_consumed(stream_id) == 2


def test_release_on_a_reset_stream_does_nothing() -> None:
    """spec §5.7, §8.8: a reset stream's messages were already discarded with their credit."""
    a, b = connected_pair(QUIET, QUIET)
    stream_id = opened(a, b)
    a.send_messages(stream_id, [b"one", b"two"])
    a.reset_stream(stream_id)
    _, events_b = pump(a, b)
    assert events_b == [
        MessagesReceived(stream_id, [b"one", b"two"], 6),
        StreamReset(stream_id, ErrorCode.CANCEL, "", True, 0),
    ]
    assert b.received_held(0) == (0, 0)
    b.release(stream_id, 6, 2, 0.0)
    assert b.received_held(0) == (0, 0)
    assert b.data_to_send() == b""


def test_releasing_more_than_is_held_is_a_local_error() -> None:
    """spec §8.5: only what arrived and is not yet consumed can be released."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    a.send_message(stream_id, b"abc")
    pump(a, b)
    with pytest.raises(LocalProtocolError):
        b.release(stream_id, 4, 1, 0.0)
    with pytest.raises(LocalProtocolError):
        b.release(stream_id, 3, 2, 0.0)
    assert b.received_held(stream_id) == (3, 1)
    b.release(stream_id, 3, 1, 0.0)
    assert b.received_held(stream_id) == (0, 0)


# --- PING and PONG (spec §5.5, §5.6) -----------------------------------------------------------


def test_a_ping_is_answered_with_a_pong_of_the_same_id() -> None:
    """spec §5.5: every PING is answered by a PONG carrying the same id."""
    a, b = connected_pair()
    ping_id = a.ping(0.0)
    events_a, events_b = pump(a, b)
    assert events_b == [PingReceived(ping_id)]
    assert [(e.ping_id, e.rtt) for e in events_a] == [(ping_id, 0.0)]
    big = 2**64 - 1
    assert a.receive_data(PingFrame(big).encode(), 0.0) == [PingReceived(big)]
    assert sent(a) == [PongFrame(big)]


def test_a_pong_goes_ahead_of_data_already_queued() -> None:
    """spec §5.5: the PONG is sent promptly, ahead of any DATA the receiver has queued."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    a.send_message(stream_id, b"queued before the PING arrived")
    a.receive_data(PingFrame(5).encode(), 0.0)
    frames = sent(a)
    assert frames[0] == PongFrame(5)
    assert isinstance(frames[1], DataFrame)


def test_a_pong_matching_no_ping_is_ignored() -> None:
    """spec §5.6: an unmatched PONG is ignored, and no endpoint replies to a PONG."""
    a, b = connected_pair()
    assert a.receive_data(PongFrame(12345).encode(), 0.0) == []
    assert a.data_to_send() == b""
    ping_id = a.ping(0.0)
    pump(a, b)
    assert a.receive_data(PongFrame(ping_id).encode(), 0.0) == []  # already answered once


def test_only_a_bounded_number_of_pings_are_tracked() -> None:
    """spec §5.6: PONGs for PINGs no longer outstanding are ignored (bounded tracking)."""
    from flowproto._connection import MAX_OUTSTANDING_PINGS

    a, b = connected_pair()
    ids = [a.ping(0.0) for _ in range(MAX_OUTSTANDING_PINGS + 1)]
    events_a, events_b = pump(a, b)
    assert len(events_of(events_b, PingReceived)) == len(ids)  # every PING answered
    assert [e.ping_id for e in events_a] == ids[1:]  # the oldest was forgotten
    assert all(isinstance(e, PongReceived) for e in events_a)


# --- GOAWAY (spec §10.4) --------------------------------------------------------------------------


def test_after_receiving_goaway_no_stream_opens_and_streams_above_last_are_refused() -> None:
    """spec §10.4: the GOAWAY's receiver opens no stream; its streams above last_stream
    were not processed and end with REFUSED_STREAM, locally and without a RESET."""
    a, b = connected_pair(QUIET, QUIET)
    kept = opened(a, b)
    lost = a.open_stream()
    a.send_message(lost, b"never processed")
    b.close()
    events = a.receive_data(b.data_to_send(), 0.0)
    assert events == [
        GoAwayReceived(kept, ErrorCode.NO_ERROR, ""),
        StreamReset(lost, ErrorCode.REFUSED_STREAM, "not processed (GOAWAY)", True, 0),
    ]
    assert not a.can_open_stream
    with pytest.raises(ConnectionClosedError):
        a.open_stream()
    assert of_type(sent(a), ResetFrame) == []
    assert a.stream_state(lost) is StreamState.CLOSED


def test_after_sending_goaway_new_peer_streams_above_last_are_ignored() -> None:
    """spec §10.4: frames on them are handled as for a closed stream, credit returned."""
    a, b = connected_pair(QUIET, QUIET)
    kept = opened(a, b)
    late = a.open_stream()  # a has not seen b's GOAWAY yet
    assert a.send_message(late, b"x" * 5_000)
    assert a.send_message(kept, b"ok")
    b.close()
    assert not b.can_open_stream
    b.data_to_send()  # the GOAWAY is in flight to a
    events = b.receive_data(a.data_to_send() + BlockedFrame(late, 1, 1).encode(), 0.0)
    assert events == [MessagesReceived(kept, [b"ok"], 2)]  # no StreamOpened(late)
    assert b.received_held(0) == (2, 0)  # the 5000 bytes were discarded
    assert of_type(sent(b), ResetFrame) == []  # no RESET for an ignored stream
    assert b.stream_ids == [kept]


def test_a_reset_on_a_new_peer_stream_above_our_goaway_is_ignored() -> None:
    """spec §5.7, §10.4: after our GOAWAY, such a RESET is a closed-stream frame, not an error."""
    a, b = connected_pair()
    b.close()
    pump(a, b)
    assert b.receive_data(ResetFrame(5, ErrorCode.CANCEL).encode(), 0.0) == []
    assert b.state is ConnectionState.CLOSING


def test_streams_at_or_below_last_stream_finish_after_a_graceful_goaway() -> None:
    """spec §10.4: with NO_ERROR, streams at or below last_stream continue to their end."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    b.close()
    pump(a, b)
    assert a.state is ConnectionState.CLOSING and b.state is ConnectionState.CLOSING
    assert not a.finished
    assert a.send_message(stream_id, b"request", end_stream=True)
    _, events_b = pump(a, b)
    release_all(b, events_b)
    assert b.send_message(stream_id, b"response", end_stream=True)
    events_a, _ = pump(a, b)
    assert messages_of(events_a) == [b"response"]
    release_all(a, events_a)
    assert a.finished and b.finished


def test_a_goaway_with_an_error_code_closes_the_connection() -> None:
    """spec §10.2, §10.4: with an error code the connection ends at once."""
    a, b = connected_pair()
    opened(a, b)
    b.close(ErrorCode.INTERNAL_ERROR, "shutting down hard")
    assert b.state is ConnectionState.CLOSED
    events = a.receive_data(b.data_to_send(), 0.0)
    assert events[0] == GoAwayReceived(1, ErrorCode.INTERNAL_ERROR, "shutting down hard")
    assert a.state is ConnectionState.CLOSED
    assert a.receive_data(PingFrame(1).encode(), 0.0) == []
    with pytest.raises(ConnectionClosedError):
        a.open_stream()
    with pytest.raises(ConnectionClosedError):
        a.ping(0.0)


def test_the_code_of_the_latest_goaway_applies() -> None:
    """spec §10.4: a GOAWAY with an error code after a graceful one closes the connection."""
    a, b = connected_pair()
    b.close()
    pump(a, b)
    assert a.state is ConnectionState.CLOSING
    events = a.receive_data(GoAwayFrame(0, ErrorCode.INTERNAL_ERROR).encode(), 0.0)
    assert events == [GoAwayReceived(0, ErrorCode.INTERNAL_ERROR, "")]
    assert a.state is ConnectionState.CLOSED


def test_a_goaway_sender_never_raises_last_stream() -> None:
    """spec §10.4: a later GOAWAY MUST NOT carry a higher last_stream."""
    a, b = connected_pair()
    opened(a, b)
    b.close()
    b.receive_data(data(3, b"late") + data(5, b"later"), 0.0)  # above last_stream: ignored
    b.close()
    goaways = of_type(sent(b), GoAwayFrame)
    assert [g.last_stream for g in goaways] == [1, 1]


def test_a_goaway_receiver_keeps_the_lowest_last_stream() -> None:
    """spec §5.8, §10.4: a higher last_stream in a later GOAWAY is ignored, not an error."""
    a, b = connected_pair()
    ids = [a.open_stream() for _ in range(4)]  # 1, 3, 5, 7
    pump(a, b)
    events = a.receive_data(GoAwayFrame(5, ErrorCode.NO_ERROR).encode(), 0.0)
    assert events_of(events, StreamReset) == [
        StreamReset(7, ErrorCode.REFUSED_STREAM, "not processed (GOAWAY)", True, 0)
    ]
    events = a.receive_data(GoAwayFrame(7, ErrorCode.NO_ERROR).encode(), 0.0)
    assert events == [GoAwayReceived(5, ErrorCode.NO_ERROR, "")]
    events = a.receive_data(GoAwayFrame(1, ErrorCode.NO_ERROR).encode(), 0.0)
    assert events_of(events, GoAwayReceived) == [GoAwayReceived(1, ErrorCode.NO_ERROR, "")]
    assert [e.stream_id for e in events_of(events, StreamReset)] == [3, 5]
    assert a.stream_ids == [ids[0]]


# --- the transport's end (spec §10.6) ------------------------------------------------------------


def test_eof_after_a_goaway_is_a_clean_end() -> None:
    """spec §10.6: EOF at a frame boundary after a GOAWAY, with no stream left, is normal."""
    a, b = connected_pair()
    b.close()
    pump(a, b)
    assert a.receive_data(b"", 0.0) == [ConnectionClosed(clean=True, truncated=False)]
    assert a.state is ConnectionState.CLOSED


def test_eof_without_a_goaway_is_a_lost_connection() -> None:
    """spec §10.6: EOF at a frame boundary without GOAWAY: the connection was lost."""
    a, b = connected_pair()
    opened(a, b)
    assert b.receive_data(b"", 0.0) == [ConnectionClosed(clean=False, truncated=False)]


def test_eof_inside_a_frame_is_truncation() -> None:
    """spec §10.6: EOF inside a frame: truncated; the partial frame is never acted on."""
    a, b = connected_pair()
    stream_id = opened(a, b)
    a.send_message(stream_id, b"cut short")
    wire = a.data_to_send()
    assert b.receive_data(wire[:-3], 0.0) == []
    assert b.receive_data(b"", 0.0) == [ConnectionClosed(clean=False, truncated=True)]


def test_eof_inside_a_message_is_truncation_and_the_part_is_not_delivered() -> None:
    """spec §10.6, §7.1: a partial message is never delivered."""
    a, b = connected_pair()
    stream_id = opened(b, a)
    a.receive_data(data(stream_id, b"first half", 0), 0.0)
    b.close()
    events_a, _ = pump(a, b)
    assert events_a == [GoAwayReceived(0, ErrorCode.NO_ERROR, "")]
    assert a.receive_data(b"", 0.0) == [ConnectionClosed(clean=False, truncated=True)]


def test_eof_inside_the_preface_is_truncation() -> None:
    """spec §10.6: EOF inside the preface is truncation."""
    b = Connection(Role.ACCEPTOR)
    assert b.receive_data(PREFACE[:4], 0.0) == []
    assert b.receive_data(b"", 0.0) == [ConnectionClosed(clean=False, truncated=True)]


# --- keepalive (spec §11) ------------------------------------------------------------------------


def keepalive_pair(now: float = 100.0) -> tuple[Connection, Connection]:
    """Keepalive 1 s and ping timeout 5 s on the initiator; the handshake arrives at ``now``."""
    return pair(Settings(keepalive_ms=1000), QUIET, now, ping_timeout=5.0)


def test_keepalive_pings_after_the_interval_of_silence() -> None:
    """spec §11: with keepalive_ms > 0, a PING goes out when nothing arrived for that long."""
    a, _ = keepalive_pair()
    a.handle_timeout(100.0)
    assert a.next_deadline() == 101.0
    a.handle_timeout(100.999)
    assert a.data_to_send() == b""
    a.handle_timeout(101.0)
    frames = sent(a)
    assert len(frames) == 1 and isinstance(frames[0], PingFrame)
    assert a.next_deadline() == 106.0  # now the ping timeout runs
    for now in (102.0, 103.0, 105.9):  # at most one keepalive PING outstanding
        a.handle_timeout(now)
        assert a.data_to_send() == b""


def test_keepalive_times_out_when_no_frame_arrives_after_the_ping() -> None:
    """spec §11: no frame within the ping timeout: connection error TIMEOUT."""
    a, _ = keepalive_pair()
    a.handle_timeout(100.0)
    a.handle_timeout(101.0)
    a.data_to_send()
    with pytest.raises(KeepaliveTimeout) as info:
        a.handle_timeout(106.0)
    assert info.value.error_code == ErrorCode.TIMEOUT
    frames = sent(a)
    assert isinstance(frames[-1], GoAwayFrame) and frames[-1].code == ErrorCode.TIMEOUT
    assert a.state is ConnectionState.CLOSED
    assert a.next_deadline() is None


def test_any_frame_that_arrives_resets_the_keepalive() -> None:
    """spec §11: a frame of any type shows the peer is alive, not only the PONG."""
    a, _ = keepalive_pair()
    a.handle_timeout(100.0)
    a.handle_timeout(101.0)  # PING sent
    a.data_to_send()
    a.receive_data(PingFrame(77).encode(), 104.0)  # not the PONG: b's own PING
    a.handle_timeout(104.0)
    assert a.next_deadline() == 105.0  # back to the keepalive interval
    a.handle_timeout(106.0)  # no timeout; a fresh keepalive PING instead
    assert of_type(sent(a), PingFrame) != []
    a.handle_timeout(110.9)  # the new PING's timeout runs from 106
    assert a.receive_data(PongFrame(12345).encode(), 110.9) == []  # even an unmatched PONG counts
    a.handle_timeout(111.0)
    assert a.state is ConnectionState.OPEN
    assert a.next_deadline() == pytest.approx(111.9)  # 1 s after the PONG arrived


def test_the_pong_answers_the_keepalive() -> None:
    """spec §11: a PONG for the keepalive PING clears it."""
    a, b = keepalive_pair(now=0.0)
    a.handle_timeout(0.0)
    a.handle_timeout(1.0)
    events_a, events_b = pump(a, b, now=1.5)
    assert len(events_of(events_b, PingReceived)) == 1
    assert len(events_of(events_a, PongReceived)) == 1
    a.handle_timeout(1.5)
    assert a.next_deadline() == 2.5
    a.handle_timeout(100.0)  # silence since 1.5: a new PING, not a timeout
    assert of_type(sent(a), PingFrame) != []
    assert a.state is ConnectionState.OPEN


def test_keepalive_zero_sends_no_pings_and_sets_no_deadline() -> None:
    """spec §11: keepalive_ms 0 means no keepalive PINGs (PINGs are still answered)."""
    a, b = connected_pair(QUIET, QUIET)
    assert a.next_deadline() is None
    a.handle_timeout(1e9)
    assert a.data_to_send() == b""
    b.ping(0.0)
    _, events_b = pump(a, b)
    assert len(events_of(events_b, PongReceived)) == 1


# --- BLOCKED repeats (spec §8.7) ------------------------------------------------------------------


def blocked_sender(interval: float = 1.0) -> tuple[Connection, Connection, int, list[Event]]:
    """A sender blocked on a stream of message window 1; b got (and holds) the first message."""
    a, b = pair(QUIET, Settings(stream_messages=1, keepalive_ms=0), blocked_interval=interval)
    stream_id = opened(a, b)
    assert a.send_message(stream_id, b"first")
    assert not a.send_message(stream_id, b"second")
    wire = a.data_to_send()
    assert of_type(frames_of(wire), BlockedFrame) == [BlockedFrame(stream_id, 4 * 1024 * 1024, 1)]
    events_b = b.receive_data(wire, 0.0)
    assert messages_of(events_b) == [b"first"]
    return a, b, stream_id, events_b


def test_blocked_repeats_no_more_often_than_the_blocked_interval() -> None:
    """spec §8.7, §9 R6: BLOCKED repeats while blocked, at most once per interval."""
    a, _b, _stream_id, _events_b = blocked_sender()
    assert a.next_deadline() == 0.0  # the repeat timer starts at the next tick
    a.handle_timeout(10.0)
    assert a.data_to_send() == b""
    repeats = []
    for tick in range(1, 101):  # 10.0 .. 20.0 in steps of 0.1
        now = 10.0 + tick / 10
        a.handle_timeout(now)
        if of_type(sent(a), BlockedFrame):
            repeats.append(now)
        deadline = a.next_deadline()
        assert deadline is not None and deadline <= now + 1.0 + 1e-9
    assert 9 <= len(repeats) <= 10
    assert all(t2 - t1 >= 1.0 - 1e-9 for t1, t2 in itertools.pairwise(repeats))


def test_blocked_stops_when_the_credit_arrives() -> None:
    """spec §8.7: BLOCKED is repeated only while the sender stays blocked at those limits."""
    a, b, _stream_id, events_b = blocked_sender()
    a.handle_timeout(0.0)
    release_all(b, events_b)
    events_a, _ = pump(a, b)
    assert events_of(events_a, CreditGranted) != []
    a.handle_timeout(5.0)  # the application has not retried yet, but it is no longer blocked
    assert of_type(sent(a), BlockedFrame) == []


def test_no_blocked_is_sent_on_a_half_closed_local_stream() -> None:
    """spec §8.7: BLOCKED is never sent on a stream in half-closed (local) or closed state."""
    a, _b, stream_id, _events_b = blocked_sender()
    a.handle_timeout(0.0)
    a.end_stream(stream_id)
    a.data_to_send()
    a.handle_timeout(5.0)
    assert of_type(sent(a), BlockedFrame) == []


def test_a_closed_connection_has_no_deadline() -> None:
    """spec §10.2: after a connection error nothing more is sent, so nothing is due."""
    a, b, _stream_id, _events_b = blocked_sender()
    b.close(ErrorCode.INTERNAL_ERROR)
    pump(a, b)
    assert a.state is ConnectionState.CLOSED
    assert a.next_deadline() is None


# --- unknown frames, flags, reserved bits (spec §4.4) -------------------------------------------


def test_unknown_frame_types_are_ignored() -> None:
    """spec §4.4: a frame of an unknown type is discarded; its stream id is not checked."""
    _, b = connected_pair()
    wire = b"".join(
        UnknownFrame(code, 0xFF, sid, b"whatever").encode()
        for code, sid in ((0x08, 0), (0x42, 1), (0xFF, 2), (0x99, 0x7FFF_FFFF))
    )
    assert b.receive_data(wire, 0.0) == []
    assert b.data_to_send() == b""
    assert b.stream_ids == []
    assert b.stream_state(1) is StreamState.IDLE  # it opened no stream


def test_an_unknown_frame_over_max_frame_bytes_is_a_frame_size_error() -> None:
    """spec §4.4: unknown frames are ignored only after the size check of §4.2."""
    _, b = connected_pair()
    header = struct.pack(">IBBI", 65_537, 0x42, 0, 0)
    expect_connection_error(b, header, ErrorCode.FRAME_SIZE_ERROR)


def test_undefined_flags_and_the_reserved_bit_are_ignored() -> None:
    """spec §4.1, §4.4: undefined flag bits and the R bit are ignored on receipt."""
    _, b = connected_pair()
    r_bit = 0x8000_0000
    body = pack_body({"bytes": 5_000_000, "messages": 5000, "consumed": 0})
    wire = (
        data(1 | r_bit, b"hello", 0xFC | END_MESSAGE)
        + data(1 | r_bit, b"wor", 0xF0)
        + data(1, b"ld", 0x80 | END_MESSAGE)
        + struct.pack(">IBBI", len(body), 0x2, 0xFF, 1 | r_bit)
        + body
    )
    events = b.receive_data(wire, 0.0)
    assert events == [
        StreamOpened(1),
        MessagesReceived(1, [b"hello", b"world"], 10),
        CreditGranted(1, 5_000_000, 5000),
    ]
    ping = PingFrame(9).encode()
    ping = ping[:5] + b"\xff\x80" + ping[7:]  # flags 0xff, R bit set on stream 0
    assert b.receive_data(ping, 0.0) == [PingReceived(9)]
    assert sent(b) == [PongFrame(9)]


# --- deadlock freedom (spec §9) ------------------------------------------------------------------


def test_control_frames_are_processed_while_the_application_consumes_nothing() -> None:
    """spec §9 R1, R2: with every window full, CREDIT and PING still pass both ways."""
    tight = Settings(stream_messages=2, keepalive_ms=0)
    a, b = connected_pair(tight, tight)
    stream_id = opened(a, b)
    held_by_a: list[Event] = []
    # Both directions of the stream fill up; neither application reads.
    for _ in range(3):
        a.send_messages(stream_id, [b"to b"] * 3)
        b.send_messages(stream_id, [b"to a"] * 3)
        events_a, _ = pump(a, b)
        held_by_a += events_a
    assert a.send_capacity(stream_id)[1] == 0 and b.send_capacity(stream_id)[1] == 0
    # PING passes while nothing is consumed.
    ping_id = b.ping(0.0)
    events_a, events_b = pump(a, b)
    assert [(type(e), e.ping_id) for e in events_b] == [(PongReceived, ping_id)]
    # a's application consumes: b, whose own application consumes nothing, still gets credit.
    release_all(a, held_by_a)
    _, events_b = pump(a, b)
    assert events_of(events_b, CreditGranted) != []
    assert b.send_capacity(stream_id)[1] == 2
    assert b.send_message(stream_id, b"unblocked")


# --- the batch receive path: runs of frames in one chunk, frames cut between chunks -----------


def test_a_run_of_messages_past_the_message_limit_in_one_chunk_is_a_flow_control_error() -> None:
    """spec §8.4: checked per frame, also inside a run of whole messages on one stream."""
    _, b = connected_pair(None, SMALL)
    expect_connection_error(b, data(1) * 9, ErrorCode.FLOW_CONTROL_ERROR)


def test_a_run_of_messages_past_the_stream_byte_limit_in_one_chunk_is_a_flow_control_error() -> (
    None
):
    """spec §8.4: the third 10,000-byte message of one chunk passes the 20,000-byte limit."""
    _, b = connected_pair(None, SMALL)
    expect_connection_error(b, data(1, b"x" * 10_000) * 3, ErrorCode.FLOW_CONTROL_ERROR)


def test_a_run_of_messages_past_the_connection_limit_in_one_chunk_is_a_flow_control_error() -> None:
    """spec §8.4: 20,000 bytes on stream 1, then 10,001 on stream 3 pass the 30,000 limit."""
    _, b = connected_pair(None, SMALL)
    b.receive_data(data(1, b"x" * 10_000) * 2, 0.0)
    wire = data(3, b"y" * 10_000) + data(3, b"z")
    expect_connection_error(b, wire, ErrorCode.FLOW_CONTROL_ERROR)


def test_a_run_stops_at_the_credit_and_the_rest_arrives_after_the_release() -> None:
    """spec §8.4, §8.5: exactly the limit in one chunk, then more once credit went back."""
    a, b = connected_pair(None, SMALL)
    stream_id = opened(a, b)
    assert b.receive_data(data(stream_id, b"m") * 8, 0.0) == [
        MessagesReceived(stream_id, [b"m"] * 8, 8)
    ]
    b.release(stream_id, 8, 8, 0.0)  # the CREDIT goes out; the peer may send 8 more
    assert of_type(sent(b), CreditFrame)
    events = b.receive_data(data(stream_id, b"n") * 8, 0.0)
    assert events == [MessagesReceived(stream_id, [b"n"] * 8, 8)]


def test_any_chunking_gives_the_same_messages_and_one_batch_per_stream_per_call() -> None:
    """spec §4.1: frames cut anywhere between reads, whole messages and fragments alike."""
    roomy = Settings(max_frame_bytes=16_384, keepalive_ms=0)
    sizes = [0, 1, 7, 100, 5_000, 16_384, 40_000, 3] * 3
    for chunk_size in (1, 9, 10, 11, 1000, 16_394, 65_536, 1 << 20):
        a, b = connected_pair(roomy, roomy)
        streams = [a.open_stream() for _ in range(3)]
        expected: dict[int, list[bytes]] = {s: [] for s in streams}
        for i, size in enumerate(sizes):
            payload = bytes([i]) * size
            assert a.send_message(streams[i % 3], payload)
            expected[streams[i % 3]].append(payload)
        wire = a.data_to_send()
        got: dict[int, list[bytes]] = {s: [] for s in streams}
        for start in range(0, len(wire), chunk_size):
            events = b.receive_data(wire[start : start + chunk_size], 0.0)
            batches = [e.stream_id for e in events if isinstance(e, MessagesReceived)]
            assert len(batches) == len(set(batches))
            for e in events:
                if isinstance(e, MessagesReceived):
                    got[e.stream_id].extend(e.messages)
                    b.release(e.stream_id, e.nbytes, len(e.messages), 0.0)
        assert got == expected, chunk_size
        assert b.partial_input == 0


@pytest.mark.parametrize("max_buffers", [1, 4, 64, 1000])
def test_buffers_to_send_are_the_bytes_of_data_to_send_in_pieces(max_buffers: int) -> None:
    """Connection.buffers_to_send: the same bytes as data_to_send, in order, in at most
    ``max_buffers`` pieces (one joined piece past that); the queue is then empty."""
    twins = [pair(), pair()]
    for a, b in twins:
        stream_id = opened(a, b)
        a.send_message(stream_id, bytes(100_000))  # fragments: views of the payload
        a.send_messages(stream_id, [b"m%d" % i for i in range(20)])
        a.ping(0.0)  # a control frame
    pieces = twins[0][0].buffers_to_send(max_buffers)
    assert b"".join(pieces) == twins[1][0].data_to_send()
    assert 1 <= len(pieces) <= max_buffers
    assert twins[0][0].buffers_to_send(max_buffers) == []
    assert not twins[0][0].has_data_to_send


@pytest.mark.parametrize("tuned", [False, True], ids=["static", "tuned"])
def test_a_slow_consumer_reports_its_consumption_at_least_once_per_report_interval(
    tuned: bool,
) -> None:
    """spec §8.6 step 3: below the thresholds a stream still sends a CREDIT once
    REPORT_INTERVAL has passed since its last one and something was consumed: the sender
    learns what was consumed (its 'delivered') at least once a second, also while a tuned
    window shrinks (then only the message limit goes up, by 1). Each such CREDIT is
    funded (§10.7.1): it raises the limits by no more than what was consumed since."""
    from flowproto import REPORT_INTERVAL, AutoTune

    settings = Settings(stream_messages=4096, keepalive_ms=0)
    a = Connection(Role.INITIATOR, Settings(keepalive_ms=0))
    b = Connection(Role.ACCEPTOR, settings, autotune=AutoTune() if tuned else None)
    pump(a, b)
    stream_id = opened(a, b)
    assert a.send_messages(stream_id, [b"m"] * 100) == 100
    events = b.receive_data(a.data_to_send(), 0.0)
    assert len(messages_of(events, stream_id)) == 100
    reports: list[tuple[float, CreditFrame]] = []
    now = 0.0
    for _ in range(40):  # one message every 0.3 s: far below the 2048-message threshold
        now += 0.3
        b.release(stream_id, 1, 1, now)
        reports += [(now, f) for f in of_type(frames_of(b.data_to_send()), CreditFrame)]
    times = [t for t, _ in reports]
    assert len(times) >= 8  # 40 releases over 12 s
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) <= REPORT_INTERVAL + 0.3
    consumed = [f.consumed for _, f in reports]
    assert consumed == sorted(consumed) and consumed[-1] >= 37
    previous = (4096, 0, 4096 * 0 + settings.stream_bytes)  # the HELLO's limits
    for _, f in reports:
        assert f.messages_limit is not None and f.consumed is not None
        assert f.bytes_limit is not None
        assert f.messages_limit - previous[0] <= f.consumed - previous[1]  # funded
        assert f.bytes_limit - previous[2] <= f.consumed - previous[1]  # 1-byte messages
        previous = (f.messages_limit, f.consumed, f.bytes_limit)
