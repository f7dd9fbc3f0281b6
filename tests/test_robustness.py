"""Hostile peers and bad input against the sans-IO core: every input is bounded (spec §10.7).

One test per row of the reliability table (``/work/shared/reference/reliability.md``,
rows A1-A24, B1-B23, M1-M11) that the other test files do not already prove; the row id
starts each test's name. Each test states its input, the expected error code or outcome,
and a resource bound it checks: the ``tracemalloc`` peak, the CPU seconds of
``time.process_time()``, or the size of a table. docs/robustness.md maps every row to
its test, including the rows proven elsewhere and the rows that do not apply.

No clock is read by the core: the glitch budget (spec §10.7.1) refills only with the
``now`` passed to ``handle_timeout`` and with DATA consumed, so these tests set time.
"""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgpack
import msgpack.fallback
import pytest
from helpers import connected_pair, messages_of, pump

from flowproto import (
    PREFACE,
    BlockedFrame,
    Connection,
    ConnectionState,
    CreditFrame,
    DataFrame,
    ErrorCode,
    Event,
    Flags,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    Limits,
    MessagesReceived,
    PingFrame,
    PongFrame,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
    UnknownFrame,
)
from flowproto._body import unpack_body
from flowproto._frames import HEADER, MAX_CONTROL_BODY
from flowproto._limits import GLITCH_BURST, MAX_QUEUED_REPLIES

END_MESSAGE = int(Flags.END_MESSAGE)
END_STREAM = int(Flags.END_STREAM)
QUIET = Settings(keepalive_ms=0)
#: A budget too large to matter, so a test can look at one limit alone.
NO_GLITCH_BUDGET = Limits(glitch_burst=10**9)
MIB = 1024 * 1024


# --- helpers ---------------------------------------------------------------------------------


def data(stream_id: int, body: bytes = b"", flags: int = END_MESSAGE) -> bytes:
    """A hand-made DATA frame with exactly these flags."""
    return HEADER.pack(len(body), 0, flags, stream_id) + body


def frames_of(wire: bytes) -> list[Frame]:
    if wire.startswith(PREFACE):
        wire = wire[len(PREFACE) :]
    return FrameDecoder(16 * MIB).feed(wire)


def receiver(
    settings: Settings = QUIET, limits: Limits | None = None, peer: Settings = QUIET
) -> Connection:
    """An acceptor that has the initiator's preface and HELLO; its own output so far dropped."""
    conn = Connection(Role.ACCEPTOR, settings, limits=limits)
    conn.receive_data(PREFACE + HelloFrame(peer).encode(), 0.0)
    conn.data_to_send()
    return conn


def sender(peer: Settings = QUIET, limits: Limits | None = None) -> Connection:
    """An initiator that has the acceptor's preface and HELLO (with ``peer``'s settings)."""
    conn = Connection(Role.INITIATOR, QUIET, limits=limits)
    conn.receive_data(PREFACE + HelloFrame(peer).encode(), 0.0)
    conn.data_to_send()
    return conn


def fails_with(conn: Connection, wire: bytes, code: ErrorCode) -> list[Frame]:
    """Feed ``wire``: a connection error ``code``, with GOAWAY(code) the last frame queued."""
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire, 0.0)
    assert info.value.error_code == code, info.value
    frames = frames_of(conn.data_to_send())
    assert isinstance(frames[-1], GoAwayFrame), frames[-3:]
    assert frames[-1].code == code
    assert conn.state is ConnectionState.CLOSED
    return frames


def of_type(frames: list[Frame], cls: type[Frame]) -> list[Frame]:
    return [f for f in frames if isinstance(f, cls)]


def on_streams(frames: bytes, stream_ids: range) -> bytes:
    """``frames`` (whole frames) repeated once per stream id, each frame's id patched in."""
    parts = []
    pos = 0
    while pos < len(frames):
        end = pos + 10 + int.from_bytes(frames[pos : pos + 4], "big")
        parts.append((frames[pos : pos + 6], frames[pos + 10 : end]))
        pos = end
    return b"".join(
        head + sid.to_bytes(4, "big") + body for sid in stream_ids for head, body in parts
    )


OPEN = CreditFrame(1, 1000, 10, 0).encode()  # a CREDIT that opens a peer stream (spec §6.2)
CANCEL = ResetFrame(1, ErrorCode.CANCEL).encode()


@contextmanager
def bounded(*, peak_bytes: int, cpu_seconds: float) -> Iterator[None]:
    """The block allocates at most ``peak_bytes`` at its peak and uses ``cpu_seconds``."""
    tracemalloc.start()
    start_cpu = time.process_time()
    try:
        yield
    finally:
        cpu = time.process_time() - start_cpu
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= peak_bytes, f"peak {peak} bytes > {peak_bytes}"
    assert cpu <= cpu_seconds, f"{cpu:.2f} CPU s > {cpu_seconds}"


# --- the glitch budget (spec §10.7.1) ----------------------------------------------------------


def test_the_glitch_budget_allows_a_burst_then_refills_with_time_and_with_consumed_data() -> None:
    """spec §10.7.1: 1000 glitches pass, the 1001st fails; time and progress refill it."""
    conn = receiver()
    conn.handle_timeout(0.0)
    unknown = UnknownFrame(0x42, 0, 0, b"").encode()
    conn.receive_data(unknown * GLITCH_BURST, 0.0)
    assert conn.glitches == GLITCH_BURST
    conn.handle_timeout(1.0)  # one second: 100 tokens back
    conn.receive_data(unknown * 100, 0.0)
    # Progress pays too: 100 KiB of DATA consumed is worth 100 tokens.
    stream_id = 1
    for _ in range(100):
        for event in conn.receive_data(data(stream_id, b"x" * 1024), 0.0):
            if isinstance(event, MessagesReceived):
                conn.release(stream_id, event.nbytes, len(event.messages), 0.0)
    conn.receive_data(unknown * 100, 0.0)
    assert conn.glitches == GLITCH_BURST + 200
    fails_with(conn, unknown, ErrorCode.ENHANCE_YOUR_CALM)


def test_the_budget_never_holds_more_than_its_burst() -> None:
    """spec §10.7.1: an hour of quiet does not bank more than 1000 glitches."""
    conn = receiver()
    conn.handle_timeout(0.0)
    conn.handle_timeout(3600.0)
    unknown = UnknownFrame(0x42, 0, 0, b"").encode()
    conn.receive_data(unknown * GLITCH_BURST, 0.0)
    fails_with(conn, unknown, ErrorCode.ENHANCE_YOUR_CALM)


def test_glitches_are_counted_per_frame_however_the_bytes_are_split() -> None:
    """spec §10.7.1, reliability A11: nghttp2 #2817 counted per read, not per frame."""
    wire = data(1, b"start", 0) + data(1, b"", 0) * GLITCH_BURST + data(1, b"", 0)
    whole = receiver()
    with pytest.raises(RemoteProtocolError):
        whole.receive_data(wire, 0.0)
    split = receiver()
    with pytest.raises(RemoteProtocolError):
        for i in range(len(wire)):
            split.receive_data(wire[i : i + 1], 0.0)
    assert whole.glitches == split.glitches == GLITCH_BURST + 1
    assert whole.data_to_send() == split.data_to_send()


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="glitch_burst"):
        Limits(glitch_burst=0).validate()
    with pytest.raises(ValueError, match="max_queued_replies"):
        Connection(Role.ACCEPTOR, limits=Limits(max_queued_replies=-1))
    assert Limits(glitch_refill_per_second=0).validate().glitch_refill_per_second == 0


# --- A-rows: floods and non-productive frames ---------------------------------------------------


def test_a1_tiny_credit_increments_spend_the_budget() -> None:
    """A1 Data Dribble: CREDIT raising a byte limit by 1 (and nothing else) is a glitch."""
    conn = sender(Settings(keepalive_ms=0, stream_messages=10**6))
    stream_id = conn.open_stream()
    conn.data_to_send()
    limit = Settings().stream_bytes
    wire = b"".join(
        CreditFrame(stream_id, limit + i, 10**6).encode() for i in range(1, GLITCH_BURST + 1)
    )
    conn.receive_data(wire, 0.0)
    fails_with(
        conn,
        CreditFrame(stream_id, limit + GLITCH_BURST + 1, 10**6).encode(),
        ErrorCode.ENHANCE_YOUR_CALM,
    )


def test_a1_credit_that_raises_enough_or_reports_consumption_is_free() -> None:
    """A1: the reference receiver's CREDIT always reports consumption or raises a lot."""
    conn = sender(QUIET)
    stream_id = conn.open_stream()
    assert conn.send_messages(stream_id, [b"m"] * 100) == 100
    conn.data_to_send()
    limit = Settings().stream_bytes
    for consumed in range(1, 101):  # one byte more each time, but `consumed` rises
        conn.receive_data(CreditFrame(stream_id, limit + consumed, 4096, consumed).encode(), 0.0)
    conn.receive_data(
        CreditFrame(stream_id, limit + 10_000, 4096, 100).encode(), 0.0
    )  # +9900 bytes
    conn.receive_data(CreditFrame(stream_id, limit + 10_000, 4097, 100).encode(), 0.0)  # +1 message
    conn.receive_data(CreditFrame(0, Settings().connection_bytes + MIB).encode(), 0.0)
    assert conn.glitches == 0


def test_a1_a_sender_never_dribbles_a_message_out_in_pieces() -> None:
    """A1, spec §8.3 S2: with credit growing by one byte, nothing goes until all of it fits."""
    conn = sender(QUIET, limits=NO_GLITCH_BUDGET)
    stream_id = conn.open_stream()
    conn.data_to_send()
    consumed_limit = Settings().stream_bytes
    # Use the whole stream window, then ask for one byte more than the credit left.
    assert conn.send_messages(stream_id, [b"x" * 1024] * (consumed_limit // 1024)) > 0
    conn.data_to_send()
    payload = b"y" * 500
    sent = []
    for i in range(1, 501):
        conn.receive_data(CreditFrame(stream_id, consumed_limit + i, 10**6, None).encode(), 0.0)
        sent.append(conn.send_message(stream_id, payload))
        frames = frames_of(conn.data_to_send())
        assert not of_type(frames, DataFrame) or i == 500, i
    assert sent == [False] * 499 + [True]


def test_a2_a_ping_flood_from_a_peer_that_does_not_read_is_cut_off() -> None:
    """A2 Ping Flood: 10 000 PINGs, nothing read: closed past 1000 queued PONGs, <1 MiB."""
    conn = receiver(limits=NO_GLITCH_BUDGET)
    wire = PingFrame(7).encode() * 10_000
    with bounded(peak_bytes=MIB, cpu_seconds=2.0):
        frames = fails_with(conn, wire, ErrorCode.ENHANCE_YOUR_CALM)
    assert len(of_type(frames, PongFrame)) == MAX_QUEUED_REPLIES + 1  # the one past ends it


def test_a2_a_ping_storm_from_a_peer_that_reads_spends_the_budget() -> None:
    """A2, spec §10.7.1: PINGs beyond the refill rate fail with ENHANCE_YOUR_CALM."""
    conn = receiver()
    conn.handle_timeout(0.0)
    now = 0.0
    ping = PingFrame(1).encode()
    # 50 a second for 100 s: half the refill rate, never a problem.
    for _ in range(100):
        now += 1.0
        conn.handle_timeout(now)
        conn.receive_data(ping * 50, now)
        conn.data_to_send()
    assert conn.state is ConnectionState.OPEN
    # 300 a second: the budget drains by 200 a second and runs out in about 5 s.
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(100):
            now += 1.0
            conn.handle_timeout(now)
            conn.receive_data(ping * 300, now)
            conn.data_to_send()
    assert info.value.error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert 104 <= now <= 107


def test_a4_a_reset_flood_stays_within_the_reply_queue() -> None:
    """A4 Reset Flood: 5000 refused opens from a peer that reads nothing: at most 1000
    RESETs are queued, then the connection closes (spec §10.7)."""
    conn = receiver(Settings(max_streams=1, keepalive_ms=0), limits=NO_GLITCH_BUDGET)
    wire = on_streams(OPEN, range(1, 10_002, 2))
    with bounded(peak_bytes=2 * MIB, cpu_seconds=2.0):
        frames = fails_with(conn, wire, ErrorCode.ENHANCE_YOUR_CALM)
    resets = of_type(frames, ResetFrame)
    assert len(resets) == MAX_QUEUED_REPLIES + 1
    assert {f.code for f in resets} == {ErrorCode.REFUSED_STREAM}


def test_a4_refused_opens_spend_the_glitch_budget_even_when_read() -> None:
    """A4, A12: over-limit opens are resets we are made to send (spec §10.7.1)."""
    conn = receiver(Settings(max_streams=2, keepalive_ms=0))
    conn.receive_data(on_streams(OPEN, range(1, 5, 2)), 0.0)
    for sid in range(5, 5 + 2 * GLITCH_BURST, 2):
        conn.receive_data(on_streams(OPEN, range(sid, sid + 1)), 0.0)
        conn.data_to_send()  # the peer reads: the reply queue never fills
    assert conn.stream_ids == [1, 3]  # the connection lives, refusals allocate nothing
    last = 5 + 2 * GLITCH_BURST
    fails_with(conn, on_streams(OPEN, range(last, last + 1)), ErrorCode.ENHANCE_YOUR_CALM)


def test_a6_a_hello_of_ten_thousand_empty_keys_is_rejected_from_its_header() -> None:
    """A6: 10 000 entries cannot fit a control body; FRAME_SIZE_ERROR before the body."""
    body = b"\xde" + struct.pack(">H", 10_000) + b"\xa0\xc0" * 10_000
    conn = Connection(Role.ACCEPTOR, QUIET)
    conn.data_to_send()
    header = HEADER.pack(len(body), 1, 0, 0)
    assert len(body) > MAX_CONTROL_BODY
    fails_with(conn, PREFACE + header, ErrorCode.FRAME_SIZE_ERROR)


def test_a8_a_million_empty_data_frames_end_in_enhance_your_calm_quickly() -> None:
    """A8 Empty Frames Flood: 1 M zero-length DATA without flags: ENHANCE_YOUR_CALM at the
    1001st, within 2 CPU seconds and 1 MiB beyond the input itself."""
    conn = receiver()
    wire = data(1, b"x", 0) + data(1, b"", 0) * 1_000_000
    with bounded(peak_bytes=MIB, cpu_seconds=2.0):
        fails_with(conn, wire, ErrorCode.ENHANCE_YOUR_CALM)
    assert conn.glitches == GLITCH_BURST + 1


def test_a8_empty_messages_and_a_bare_half_close_stay_legal() -> None:
    """A8, spec §7.1, §7.2: an empty DATA *with* END_MESSAGE or END_STREAM is progress."""
    conn = receiver(Settings(stream_messages=4096, keepalive_ms=0))
    events: list[Event] = []
    for _ in range(4):
        events += conn.receive_data(data(1, b"", END_MESSAGE) * 1000, 0.0)
        for e in events:
            if isinstance(e, MessagesReceived):
                conn.release(1, 0, len(e.messages), 0.0)
        events.clear()
    conn.receive_data(data(1, b"", END_STREAM), 0.0)
    assert conn.glitches == 0


def test_a9_rapid_reset_ends_in_enhance_your_calm() -> None:
    """A9 Rapid Reset: OPEN+RESET 100 000 times: ENHANCE_YOUR_CALM once 1000 resets are
    spent, within 2 CPU seconds; the stream table never holds more than one stream."""
    conn = receiver()
    pairs = on_streams(OPEN + CANCEL, range(1, 200_000, 2))
    with bounded(peak_bytes=2 * MIB, cpu_seconds=2.0):
        fails_with(conn, pairs, ErrorCode.ENHANCE_YOUR_CALM)
    assert conn.glitches == GLITCH_BURST + 1
    assert len(conn.stream_ids) <= 1  # the stream whose RESET broke the budget


def test_a9_a_stream_the_peer_resets_after_using_it_costs_little() -> None:
    """A9: a request whose data was consumed pays for its own RESET (1 KiB per token)."""
    conn = receiver()
    for sid in range(1, 2 * 3000, 2):
        for event in conn.receive_data(data(sid, b"r" * 2048), 0.0):
            if isinstance(event, MessagesReceived):
                conn.release(sid, event.nbytes, len(event.messages), 0.0)
        conn.receive_data(ResetFrame(sid, ErrorCode.CANCEL).encode(), 0.0)
        conn.data_to_send()
    assert conn.glitches == 3000
    assert conn.state is ConnectionState.OPEN


def test_a10_made_you_reset_spends_the_same_budget() -> None:
    """A10 MadeYouReset: DATA after END_STREAM forces a STREAM_CLOSED RESET each time;
    those resets spend the budget and end in ENHANCE_YOUR_CALM."""
    conn = receiver(Settings(max_streams=10_000, keepalive_ms=0))
    resets = 0
    with pytest.raises(RemoteProtocolError) as info:
        for sid in range(1, 2 * 5000, 2):
            conn.receive_data(data(sid, b"m", END_MESSAGE | END_STREAM) + data(sid, b"!"), 0.0)
            resets += len(of_type(frames_of(conn.data_to_send()), ResetFrame))
    assert info.value.error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert GLITCH_BURST <= resets <= GLITCH_BURST + 5  # each discard pays back 2/1024 token


def test_a11_a_message_of_endless_tiny_fragments_is_cut_off() -> None:
    """A11 (CONTINUATION flood's counterpart): a message may span frames, but non-final
    fragments shorter than 1024 bytes are glitches; the 1001st ends the connection.
    The message's total is still capped by max_message_bytes (spec §7.3)."""
    conn = receiver()
    # spec 1.1 §7.1: the short first fragment is a glitch too
    wire = data(1, b"head", 0) + data(1, b"t", 0) * (GLITCH_BURST - 1)
    with bounded(peak_bytes=MIB, cpu_seconds=1.0):
        assert not messages_of(conn.receive_data(wire, 0.0))
    fails_with(conn, data(1, b"t", 0), ErrorCode.ENHANCE_YOUR_CALM)


def test_a11_fragments_of_a_conforming_sender_are_free() -> None:
    """A11, spec §7.1: the reference sender cuts at max_frame_bytes: no glitch at all."""
    a, b = connected_pair(QUIET, Settings(max_frame_bytes=16384, keepalive_ms=0))
    stream_id = a.open_stream()
    assert a.send_message(stream_id, b"z" * 1_000_000)
    _, events = pump(a, b)
    assert messages_of(events) == [b"z" * 1_000_000]
    assert b.glitches == 0


def test_a12_a_jump_to_the_last_stream_id_allocates_no_more_than_the_next_id() -> None:
    """A12, B12 (spec §6.1): skipped ids are closed and nothing is allocated for them."""

    def traced_open(next_id: int) -> int:
        conn = receiver(Settings(max_streams=3, keepalive_ms=0))
        conn.receive_data(on_streams(OPEN, range(1, 2)), 0.0)  # warm up: a first stream
        tracemalloc.start()
        conn.receive_data(on_streams(OPEN, range(next_id, next_id + 1)), 0.0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert conn.stream_ids == [1, next_id]
        conn.receive_data(data(next_id, b"", END_STREAM), 0.0)
        assert conn.state is ConnectionState.OPEN
        return peak

    assert traced_open(2**31 - 1) <= traced_open(3) + 4096


def test_a13_filling_every_window_holds_at_most_the_connection_window() -> None:
    """A13: the peer fills its windows on max_streams streams while nothing is consumed:
    what we hold stays at the connection window (tracemalloc), one byte more is
    FLOW_CONTROL_ERROR (spec §8.4)."""
    window = 256 * 1024
    settings = Settings(
        stream_bytes=64 * 1024,
        stream_messages=100,
        connection_bytes=window,
        max_message_bytes=16 * 1024,
        max_streams=10,
        keepalive_ms=0,
    )
    peer, conn = connected_pair(QUIET, settings)
    streams = [peer.open_stream() for _ in range(10)]
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for round_ in range(100):
        for sid in streams:
            if peer.send_message(sid, bytes([round_]) * 16 * 1024):
                pump(peer, conn)
    held, _ = conn.received_held(0)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held == window
    assert current - before <= window + 64 * 1024
    assert peak - before <= window + 256 * 1024
    fails_with(conn, data(streams[0], b"!"), ErrorCode.FLOW_CONTROL_ERROR)


def test_a14_a_flood_of_unknown_frames_ends_in_enhance_your_calm() -> None:
    """A14: 100 000 unknown-type frames: ENHANCE_YOUR_CALM at the 1001st, < 1 CPU s."""
    conn = receiver()
    wire = UnknownFrame(0xEE, 0, 5, b"\x00" * 8).encode() * 100_000
    with bounded(peak_bytes=MIB, cpu_seconds=1.0):
        fails_with(conn, wire, ErrorCode.ENHANCE_YOUR_CALM)


def test_a14_the_other_frames_that_change_nothing_spend_the_budget() -> None:
    """spec §10.7.1: unmatched PONG, CREDIT/BLOCKED/RESET on closed streams, repeated
    GOAWAY, a BLOCKED at limits never advertised; BLOCKED repeats at real limits are free."""
    conn = receiver()
    conn.receive_data(data(1, b"x", END_MESSAGE | END_STREAM), 0.0)
    conn.reset_stream(1)
    conn.data_to_send()
    free = [
        BlockedFrame(0, Settings().connection_bytes).encode(),
        CreditFrame(3, 10, 10, 0).encode(),  # opens stream 3
        BlockedFrame(3, Settings().stream_bytes, Settings().stream_messages).encode() * 10,
        GoAwayFrame(99, 0).encode(),
    ]
    conn.receive_data(b"".join(free), 0.0)
    assert conn.glitches == 0
    costly = [
        PongFrame(12345).encode(),
        CreditFrame(1, 10**9, 10**6, 0).encode(),
        BlockedFrame(1, 10, 10).encode(),
        ResetFrame(1, ErrorCode.CANCEL).encode(),
        data(1, b"", END_MESSAGE),
        BlockedFrame(3, 2**40, 1).encode(),
        GoAwayFrame(99, 0).encode(),
    ]
    for i, frame in enumerate(costly, 1):
        conn.receive_data(frame, 0.0)
        assert conn.glitches == i, frames_of(frame)


def test_a14_realistic_heavy_load_never_trips_the_budget() -> None:
    """A14: 100 000 messages planned over 1000 streams (100 at a time) opened and closed,
    sizes from 0 to 40 KiB (fragmented past max_frame_bytes), windows small enough that
    senders block and send BLOCKED, keepalive PINGs, ten RTT PINGs a second, and one
    stream in twenty cancelled midway: no connection error, glitches only for the RESETs
    and PINGs and far below the refill rate, within 20 CPU seconds."""
    rng = random.Random(5)
    settings = Settings(
        stream_bytes=128 * 1024,
        stream_messages=64,
        connection_bytes=1024 * 1024,
        max_frame_bytes=16384,
        max_message_bytes=64 * 1024,
        max_streams=100,
        keepalive_ms=1000,
    )
    a, b = connected_pair(settings, settings)
    plans: dict[int, list[bytes]] = {}  # messages still to send, per stream
    cancel_after: dict[int, int] = {}
    opened = sent = received = cancelled = pings = 0
    now = 0.0
    start_cpu = time.process_time()

    def consume(conn: Connection, events: list[Event]) -> int:
        count = 0
        for e in events:
            if isinstance(e, MessagesReceived):
                conn.release(e.stream_id, e.nbytes, len(e.messages), 0.0)
                count += len(e.messages)
        return count

    for _ in range(50_000):
        if opened == 1000 and not plans and not a.stream_ids and not b.stream_ids:
            break
        now += 0.01
        while opened < 1000 and len(plans) < 100 and a.can_open_stream:
            sid = a.open_stream()
            opened += 1
            sizes = [rng.choice((0, 10, 100, 1000, 40_000)) for _ in range(100)]
            plans[sid] = [bytes([sid & 0xFF]) * n for n in sizes]
            if rng.random() < 0.05:
                cancel_after[sid] = rng.randrange(100)
        for sid, plan in list(plans.items()):
            n = a.send_messages(sid, plan)
            sent += n
            del plan[:n]
            if sid in cancel_after and 100 - len(plan) >= cancel_after[sid]:
                a.reset_stream(sid)  # the application gives up on the stream
                del plans[sid]
                cancelled += 1
            elif not plan:
                a.end_stream(sid)
                del plans[sid]
        if rng.random() < 0.1:
            a.ping(now)
            pings += 1
        for _ in range(3):
            for conn in (a, b):
                conn.handle_timeout(now)
            to_b, to_a = a.data_to_send(), b.data_to_send()
            if to_b:
                received += consume(b, b.receive_data(to_b, now))
            if to_a:
                consume(a, a.receive_data(to_a, now))
        for sid in b.stream_ids:  # the server ends each stream its client has ended
            if b.stream_state(sid).name == "HALF_CLOSED_REMOTE":
                b.end_stream(sid)
    else:
        pytest.fail("the load did not finish")
    assert opened == 1000
    assert 30 <= cancelled <= 70
    assert sent >= 95_000
    assert sent - 100 * cancelled <= received <= sent
    assert a.state is ConnectionState.OPEN and b.state is ConnectionState.OPEN
    assert a.glitches == 0
    # One per RESET received (spec §10.7.1); the PINGs are free, each arriving after the
    # PONG of the one before went out (spec 1.1). Far below the refill of 100 a second.
    assert pings > 0
    assert b.glitches == cancelled
    assert b.glitches / now < 20
    assert time.process_time() - start_cpu < 20


def test_a19_a_hundred_thousand_refusals_leave_no_state_behind() -> None:
    """A19: 100 000 refused opens (budget raised to allow them): the stream table holds
    max_streams entries at most and memory stays flat."""
    conn = receiver(Settings(max_streams=1, keepalive_ms=0), limits=NO_GLITCH_BUDGET)
    conn.receive_data(OPEN, 0.0)
    batch = 1000
    for start in range(3, 3 + 2 * 100_000, 2 * batch):
        if start == 3 + 2 * 90_000:
            tracemalloc.start()  # the last 10 000, traced (tracing slows the loop tenfold)
        conn.receive_data(on_streams(OPEN, range(start, start + 2 * batch, 2)), 0.0)
        conn.data_to_send()
        assert len(conn.stream_ids) <= 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < MIB
    assert conn.glitches == 100_000


# --- B- and M-rows: the decoders -------------------------------------------------------------


def test_b3_a_truncating_frame_on_a_new_stream_fails_the_same_however_it_is_split() -> None:
    """B3 (found by fuzzing): END_STREAM without END_MESSAGE opening stream 13355979 with a
    body is PROTOCOL_ERROR (spec §7.2). Whole, the stream used to be opened first, so the
    GOAWAY named it; cut after the header, it was checked first. Now both say
    last_stream 1, from the header-time order of spec §4.2."""
    wire = data(1, b"ab", 0) + data(0xCBCBCB, b"\xcb" * 3, END_STREAM)
    goaways = []
    for cut in (len(wire), len(wire) - 1, 15, 1):
        conn = receiver()
        with pytest.raises(RemoteProtocolError) as info:
            for start in range(0, len(wire), cut):
                conn.receive_data(wire[start : start + cut], 0.0)
        assert info.value.error_code == ErrorCode.PROTOCOL_ERROR
        goaways.append(frames_of(conn.data_to_send())[-1])
    assert {g.last_stream for g in goaways if isinstance(g, GoAwayFrame)} == {1}


def test_b6_a_data_frame_of_exactly_max_frame_bytes_is_accepted() -> None:
    """B6 (h2spec 4.2/1): the smallest allowed max_frame_bytes, 16384, filled exactly."""
    conn = receiver(Settings(max_frame_bytes=16384, keepalive_ms=0))
    events = conn.receive_data(data(1, b"f" * 16384), 0.0)
    assert messages_of(events) == [b"f" * 16384]


def test_b23_a_short_goaway_is_a_protocol_error() -> None:
    """B23: a GOAWAY without its required ``code`` (spec §5.8) is PROTOCOL_ERROR."""
    short = HEADER.pack(14, 7, 0, 0) + b"\x81\xablast_stream\x00"
    fails_with(receiver(), short, ErrorCode.PROTOCOL_ERROR)


def nested_arrays(depth: int) -> bytes:
    """A PING body whose unknown key holds arrays nested ``depth`` deep."""
    return b"\x82\xa2id\x01\xa1x" + b"\x91" * depth + b"\x00"


@pytest.mark.parametrize("unpackb", [msgpack.unpackb, msgpack.fallback.unpackb])
@pytest.mark.parametrize(
    "body",
    [
        nested_arrays(1025),  # M4: past msgpack's own stack of 1024
        nested_arrays(8),  # M4: past MAX_BODY_DEPTH (the top map is level 1)
        b"\x81\xa1x\xdd\x02\xfa\xf0\x80",  # M5: an array of 50 M items in 8 bytes
        b"\x81\xa1x\xc6\x00\x10\x00\x00",  # M5: a bin32 of 1 MiB, declared
        b"\x81\xa1x\xdb\xff\xff\xff\xff",  # M5: a str32 of 4 GiB, declared
        b"\x81\xa2id",  # M3: truncated
        b"\x81\xa2id\x01\x00",  # M2: trailing bytes
        b"\x81\xa2id\xc1",  # M1: reserved byte
        b"\x81\xa2id\xd6\xff\x00\x00\x00\x00",  # M8: a timestamp
        b"\x81\xa2\xff\xfe\x01",  # M6: invalid UTF-8 in a key
        b"\x81\x01\x01",  # M7: a non-str key
        b"\x81\xa2id\xca\x7f\xc0\x00\x00",  # M9: NaN where an int belongs
    ],
    ids=[
        "m4_depth_1025",
        "m4_depth_9",
        "m5_array32",
        "m5_bin32",
        "m5_str32",
        "m3_truncated",
        "m2_trailing",
        "m1_c1",
        "m8_timestamp",
        "m6_utf8",
        "m7_int_key",
        "m9_nan",
    ],
)
def test_m_rows_bad_bodies_are_protocol_errors_with_either_msgpack(
    body: bytes, unpackb: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """M1-M9, M11: the C extension and the pure-Python fallback (MSGPACK_PUREPYTHON) both
    give PROTOCOL_ERROR, nothing else escapes, and nothing allocates past the body's size."""
    monkeypatch.setattr(msgpack, "unpackb", unpackb)
    assert len(body) <= MAX_CONTROL_BODY
    assert unpack_body(b"\x81\xa2id\x01", "PING") == {"id": 1}
    tracemalloc.start()
    with pytest.raises(RemoteProtocolError) as info:
        PingFrame.parse(0, 0, body)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.value.error_code == ErrorCode.PROTOCOL_ERROR
    assert peak < 512 * 1024


def test_m10_no_streaming_unpacker_is_ever_used() -> None:
    """M10: bodies are decoded with one unpackb per frame, never an Unpacker that could be
    reused after an error; msgpack >= 1.2.1 is required (GHSA-6v7p-g79w-8964)."""
    from pathlib import Path

    import flowproto

    package = Path(flowproto.__file__).parent
    for path in package.glob("_*.py"):
        assert "Unpacker" not in path.read_text(encoding="utf-8"), path
    assert tuple(msgpack.version) >= (1, 2, 1)
    pyproject = (package.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '"msgpack>=1.2.1"' in pyproject


# --- docs/robustness.md ------------------------------------------------------------------------


def test_the_robustness_doc_maps_every_row_to_tests_that_exist() -> None:
    """docs/robustness.md names every row (A1-A24, B1-B23, M1-M11), and every test it
    names exists in tests/."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "robustness.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| ([ABM]\d+(?:–M\d+)?) \|", doc, re.MULTILINE))
    expected = {f"A{i}" for i in range(1, 25)} | {f"B{i}" for i in range(1, 24)}
    assert expected <= rows, sorted(expected - rows)
    assert {"M1–M9", "M10", "M11"} <= rows
    defined = set()
    for path in (root / "tests").glob("*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text("utf-8"), re.M))
    named = set(re.findall(r"\b(test_\w+)\b(?!\*|\.py)", doc))
    patterns = {n for n in re.findall(r"\b(test_[\w*]+)", doc) if "*" in n}
    assert named - defined - {p.split("*")[0] for p in patterns} == set()
    for pattern in patterns:
        regex = re.compile(pattern.replace("*", r"\w*") + "$")
        assert any(regex.match(name) for name in defined), pattern
