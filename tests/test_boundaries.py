"""Every boundary of the credit, limit and state logic, pinned at the exact value (#9 §3).

Each test puts a value exactly at a limit (accepted) and one past it (refused), so that
moving a comparison by one, or dropping a check, fails a test here; ``tests/mutate.py``
names the mutation each test is there for (docs/mutation.md). Most tests drive a real
:class:`Connection` with hand-made frames from a scripted peer; a few check the pure
functions of the credit arithmetic directly. The last part reads the tables of spec §3.2
and §12 out of ``spec/PROTOCOL.md`` and compares them with the code's defaults.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import pkgutil
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
from helpers import pump

import flowproto
from flowproto import (
    PREFACE,
    AutoTune,
    BlockedFrame,
    Connection,
    ConnectionClosedError,
    ConnectionState,
    CreditFrame,
    CreditGranted,
    DataFrame,
    ErrorCode,
    Event,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    Limits,
    LocalProtocolError,
    MemoryBudget,
    MessagesReceived,
    PeerBlocked,
    PingFrame,
    ReceiveWindow,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
    StreamOpened,
    StreamReset,
)

T = TypeVar("T")
SPEC = Path(__file__).resolve().parent.parent / "spec" / "PROTOCOL.md"
NOW = 0.0


# --- helpers -------------------------------------------------------------------------------


@functools.cache
def core(name: str) -> Any:
    """A name defined in flowproto, wherever it lives (modules move; names stay).

    The private modules and ``flowproto.iolayer`` are searched first; the public
    modules only if the name is in none of them (importing those is slower).
    """
    found: dict[str, Any] = {}
    modules = [
        info.name
        for info in pkgutil.walk_packages(flowproto.__path__, "flowproto.")
        if not info.name.endswith("__main__")
    ]
    private = [m for m in modules if m.rsplit(".", 1)[-1].startswith("_")]
    private.append("flowproto.iolayer")  # what both I/O layers share
    for group in (private, [m for m in modules if m not in private]):
        for module_name in group:
            module = importlib.import_module(module_name)
            if name in vars(module):
                found[module_name] = vars(module)[name]
        if found:
            break
    assert found, f"{name} is defined nowhere in flowproto"
    values = list(found.values())
    assert all(v is values[0] or v == values[0] for v in values), found
    return values[0]


def feed(conn: Connection, wire: bytes, now: float = 0.0) -> list[Event]:
    """``conn.receive_data(wire, now)``: every test's input goes through here."""
    return conn.receive_data(wire, now)


def frames_of(wire: bytes) -> list[Any]:
    """The frames of one side's output (after its preface, if it starts with one)."""
    if wire.startswith(PREFACE):
        wire = wire[len(PREFACE) :]
    decoder = FrameDecoder(16 * 1024 * 1024)
    frames = decoder.feed(wire)
    assert decoder.buffered == 0
    return frames


def of_type(items: Sequence[object], cls: type[T]) -> list[T]:
    return [x for x in items if isinstance(x, cls)]


def data(sid: int, body: bytes, *, end_message: bool = True, end_stream: bool = False) -> bytes:
    return DataFrame(sid, body, end_message, end_stream).encode()


def victim(
    settings: Settings | None = None,
    *,
    peer: Settings | None = None,
    limits: Limits | None = None,
    role: Role = Role.ACCEPTOR,
) -> Connection:
    """A connection that has seen a scripted peer's preface and HELLO; its output taken."""
    conn = Connection(role, settings or Settings(keepalive_ms=0), limits=limits)
    feed(conn, PREFACE + HelloFrame(peer or Settings(keepalive_ms=0)).encode())
    conn.data_to_send()
    return conn


def pair(
    initiator: Settings | None = None, acceptor: Settings | None = None
) -> tuple[Connection, Connection]:
    a = Connection(Role.INITIATOR, initiator or Settings(keepalive_ms=0))
    b = Connection(Role.ACCEPTOR, acceptor or Settings(keepalive_ms=0))
    pump(a, b)
    return a, b


def open_on(a: Connection, b: Connection) -> int:
    sid = a.open_stream()
    _, events = pump(a, b)
    assert StreamOpened(sid) in events
    return sid


def connection_error(conn: Connection, wire: bytes) -> int:
    """Feed ``wire``; it must fail the connection. Returns the error code."""
    with pytest.raises(RemoteProtocolError) as info:
        feed(conn, wire)
    return int(info.value.error_code)


def messages(events: Sequence[Event]) -> list[bytes]:
    out: list[bytes] = []
    for e in of_type(events, MessagesReceived):
        out.extend(e.messages)
    return out


def resets(events: Sequence[Event]) -> list[StreamReset]:
    return of_type(events, StreamReset)


# Windows small enough to count by hand: M = 100 (spec §8.6 names it M).
M = 100
SMALL = Settings(
    stream_bytes=150,
    stream_messages=4,
    connection_bytes=1000,
    max_message_bytes=M,
    max_frame_bytes=16384,
    keepalive_ms=0,
)


# --- spec §8.6: the replenish threshold, exactly W - M + 1 ----------------------------------


def test_consuming_exactly_w_minus_m_plus_1_bytes_sends_credit_so_a_largest_message_fits() -> None:
    """spec §8.5 G1, §8.6: W = 150, M = 100: after 51 bytes consumed, >= M of credit is open.

    At 50 bytes consumed the limit (150) still leaves 100 = M open, and no CREDIT goes
    (the threshold batches updates); at 51 it would leave 99, so CREDIT must go.
    """
    a, b = pair(acceptor=SMALL)
    sid = open_on(a, b)
    assert a.send_message(sid, b"x" * 51)
    _, events = pump(a, b)
    assert messages(events) == [b"x" * 51]
    assert not b.release(sid, 50, 0, now=NOW)  # 50 consumed: 100 = M still open
    assert not of_type(frames_of(b.data_to_send()), CreditFrame)
    assert b.release(sid, 1, 1, now=NOW)  # 51 consumed: the threshold
    credits = of_type(frames_of(b.data_to_send()), CreditFrame)
    assert [(c.stream_id, c.bytes_limit, c.messages_limit) for c in credits] == [(sid, 201, 5)]


def test_the_connection_threshold_is_also_w_minus_m_plus_1() -> None:
    """spec §8.5 G2, §8.6: Wc = 150, M = 100: connection CREDIT at 51 bytes consumed, not 50."""
    settings = Settings(
        stream_bytes=1000,
        stream_messages=100,
        connection_bytes=150,
        max_message_bytes=M,
        keepalive_ms=0,
    )
    a, b = pair(acceptor=settings)
    sid = open_on(a, b)
    assert a.send_messages(sid, [b"y" * 50, b"y"]) == 2
    pump(a, b)
    b.release(sid, 50, 1, now=NOW)
    assert not [c for c in of_type(frames_of(b.data_to_send()), CreditFrame) if c.stream_id == 0]
    b.release(sid, 1, 1, now=NOW)
    conn_credits = [
        c for c in of_type(frames_of(b.data_to_send()), CreditFrame) if c.stream_id == 0
    ]
    assert [c.bytes_limit for c in conn_credits] == [201]


def test_half_the_window_is_the_threshold_when_it_is_smaller() -> None:
    """spec §8.6: W = 200, M = 100: T = min(100, 101) = 100; CREDIT at 100 consumed, not 99."""
    settings = Settings(
        stream_bytes=200,
        stream_messages=100,
        connection_bytes=10_000,
        max_message_bytes=M,
        keepalive_ms=0,
    )
    a, b = pair(acceptor=settings)
    sid = open_on(a, b)
    assert a.send_messages(sid, [b"z" * 99, b"z"]) == 2
    pump(a, b)
    assert not b.release(sid, 99, 1, now=NOW)
    assert b.release(sid, 1, 1, now=NOW)


def test_half_the_message_window_is_its_threshold() -> None:
    """spec §8.6: Wm = 4: Tm = 2; a CREDIT after 2 messages consumed, not after 1."""
    a, b = pair(acceptor=SMALL)
    sid = open_on(a, b)
    assert a.send_messages(sid, [b"a", b"b"]) == 2
    pump(a, b)
    assert not b.release(sid, 1, 1, now=NOW)
    assert b.release(sid, 1, 1, now=NOW)
    (credit,) = of_type(frames_of(b.data_to_send()), CreditFrame)
    assert (credit.bytes_limit, credit.messages_limit) == (152, 6)


def test_a_window_of_one_has_a_threshold_of_one() -> None:
    """spec §8.6: T = max(1, ...): W = M = 1 sends CREDIT after each byte, never for nothing."""
    settings = Settings(
        stream_bytes=1, stream_messages=1, connection_bytes=1, max_message_bytes=1, keepalive_ms=0
    )
    a, b = pair(acceptor=settings)
    sid = open_on(a, b)
    assert b.release(sid, 0, 0, now=NOW) is False  # nothing consumed: nothing due
    assert frames_of(b.data_to_send()) == []
    assert a.send_message(sid, b"q")
    pump(a, b)
    assert b.release(sid, 1, 1, now=NOW)
    credits = of_type(frames_of(b.data_to_send()), CreditFrame)
    assert sorted((c.stream_id, c.bytes_limit) for c in credits) == [(0, 2), (sid, 2)]


def test_a_new_window_brings_its_own_threshold() -> None:
    """spec §8.6, §8.9: the thresholds are recomputed whenever the window changes."""
    rw = ReceiveWindow(150, 100, M)  # T = 51
    rw.set_window(160, 100)  # T = min(80, 61) = 61
    rw.receive(51, 1, "s")
    rw.consume(51, 1)  # target 51 + 160 = 211, 61 above the limit 150: due
    assert rw.update() == (211, 101)
    rw2 = ReceiveWindow(150, 100, M)
    rw2.set_window(160, 100)
    rw2.receive(50, 1, "s")
    rw2.consume(50, 1)  # 50 + 160 - 150 = 60 < 61: not due (it would be at T = 51)
    assert rw2.update() is None


def test_a_limit_never_goes_down_when_only_the_message_unit_is_due() -> None:
    """spec §8.2, §8.9 rule 7: a smaller byte window grants less, and revokes nothing."""
    rw = ReceiveWindow(1000, 4, M)
    rw.set_window(500, 4)
    rw.receive(2, 2, "s")
    rw.consume(2, 2)
    assert rw.update() == (1000, 6)  # bytes target 502 is below the limit: kept at 1000
    rw.set_window(500, 2)
    rw.receive(2, 1, "s")
    rw.consume(2, 1)
    rw.set_window(2000, 2)  # bytes due, message target 5 below the limit 6
    assert rw.update() == (2004, 6)


# --- spec §8.3: the batch send path never passes byte or message credit -----------------------


BATCH_M = 200
BATCH = Settings(
    stream_bytes=1000,
    stream_messages=20,
    connection_bytes=5000,
    max_message_bytes=BATCH_M,
    keepalive_ms=0,
)


def fill(total: int, count: int) -> list[bytes]:
    """``count`` messages of about equal size summing to exactly ``total`` bytes."""
    size = total // count
    return [b"f" * size] * (count - 1) + [b"f" * (total - size * (count - 1))]


def stream_to(acceptor: Settings) -> tuple[Connection, Connection, int]:
    a, b = pair(acceptor=acceptor)
    return a, b, open_on(a, b)


@pytest.mark.parametrize("count", [8, 10])  # the whole-batch path (>= 8) and the loop
def test_send_messages_fills_the_byte_credit_exactly_and_not_one_byte_more(count: int) -> None:
    """spec §8.3: messages summing to exactly the credit go; one byte more and the last waits."""
    a, _b, sid = stream_to(BATCH)
    exact = fill(1000, count)
    assert a.send_messages(sid, exact) == count
    _, events = pump(a, _b)
    assert len(messages(events)) == count
    a2, b2, sid2 = stream_to(BATCH)
    over = [*exact[:-1], exact[-1] + b"!"]  # 1001 bytes
    assert a2.send_messages(sid2, over) == count - 1
    assert a2.send_capacity(sid2)[0] == len(exact[-1])
    _, events = pump(a2, b2)  # the receiver accepts all of it: no FLOW_CONTROL_ERROR
    assert len(messages(events)) == count - 1


def test_send_messages_fills_the_message_credit_exactly() -> None:
    """spec §8.3: with 8 messages of credit, a batch of 8 goes whole and a batch of 9 goes 8."""
    settings = Settings(
        stream_bytes=1000,
        stream_messages=8,
        connection_bytes=5000,
        max_message_bytes=M,
        keepalive_ms=0,
    )
    a, _b, sid = stream_to(settings)
    assert a.send_messages(sid, [b"m"] * 9) == 8
    _, events = pump(a, _b)
    assert len(messages(events)) == 8
    a2, b2, sid2 = stream_to(settings)
    assert a2.send_messages(sid2, [b"m"] * 8) == 8
    _, events = pump(a2, b2)
    assert len(messages(events)) == 8


@pytest.mark.parametrize("count", [8, 10])
def test_send_messages_respects_connection_credit_below_stream_credit(count: int) -> None:
    """spec §8.3: both limits hold at once; the connection's is the smaller here."""
    settings = Settings(
        stream_bytes=5000,
        stream_messages=20,
        connection_bytes=1000,
        max_message_bytes=BATCH_M,
        keepalive_ms=0,
    )
    a, _b, sid = stream_to(settings)
    batch = fill(1000, count)
    batch[-1] += b"!"
    assert a.send_messages(sid, batch) == count - 1
    _, events = pump(a, _b)
    assert len(messages(events)) == count - 1
    assert a.connection_send_capacity == len(batch[-1]) - 1


def test_a_batch_counts_against_the_connection_credit() -> None:
    """spec §8.3: what a batch sent is spent from the connection credit as well."""
    settings = Settings(
        stream_bytes=5000,
        stream_messages=40,
        connection_bytes=5000,
        max_message_bytes=M,
        keepalive_ms=0,
    )
    for count in (3, 9):  # the loop, then the whole-batch path
        a, _b, sid = stream_to(settings)
        assert a.send_messages(sid, [b"k" * 10] * count) == count
        assert a.connection_send_capacity == 5000 - 10 * count


def test_a_batch_stops_at_a_message_over_the_peers_limit_after_sending_those_before() -> None:
    """spec §7.3: the messages before a too-large one go; the too-large one is refused alone."""
    a, _b, sid = stream_to(BATCH)
    assert a.send_messages(sid, [b"ok", b"t" * (BATCH_M + 1), b"later"]) == 1
    with pytest.raises(LocalProtocolError) as info:
        a.send_messages(sid, [b"t" * (BATCH_M + 1)])
    assert info.value.error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert a.send_messages(sid, [b"t" * BATCH_M]) == 1  # exactly M is fine


def test_a_message_of_exactly_the_peers_limit_is_sent_alone_too() -> None:
    """spec §7.3: send_message accepts M bytes and refuses M + 1."""
    a, _b, sid = stream_to(BATCH)
    assert a.send_message(sid, b"s" * BATCH_M)
    with pytest.raises(LocalProtocolError):
        a.send_message(sid, b"s" * (BATCH_M + 1))


def test_a_batch_of_messages_one_byte_over_the_peers_frame_size_is_fragmented() -> None:
    """spec §4.2, §7.1: the whole-batch path too cuts messages over max_frame_bytes."""
    peer = Settings(max_frame_bytes=16384, max_message_bytes=20_000, keepalive_ms=0)
    for size in (16384, 16385):
        a, b, sid = stream_to(peer)
        batch = [bytes([i]) * size for i in range(8)]
        assert a.send_messages(sid, batch) == 8
        _, events = pump(a, b)
        assert messages(events) == batch


def test_a_batch_cut_short_by_credit_reports_blocked() -> None:
    """spec §8.7: the message that does not fit is reported with BLOCKED."""
    a, _b, sid = stream_to(BATCH)
    assert a.send_messages(sid, [b"b" * 100] * 11) == 10
    blocked = of_type(frames_of(a.data_to_send()), BlockedFrame)
    assert [(f.stream_id, f.bytes_limit, f.messages_limit) for f in blocked] == [(sid, 1000, 20)]


@pytest.mark.parametrize("short", ["connection", "stream"])
def test_blocked_names_only_the_limit_that_is_short(short: str) -> None:
    """spec §8.7: BLOCKED names the limit the message does not fit; the other limit, which
    the message fits exactly, is not reported (one stream, 100 bytes sent, then 200 or 150)."""
    if short == "connection":
        stream_bytes, connection_bytes, size = 300, 250, 200
    else:
        stream_bytes, connection_bytes, size = 200, 250, 150
    peer = Settings(
        stream_bytes=stream_bytes,
        stream_messages=20,
        connection_bytes=connection_bytes,
        max_message_bytes=BATCH_M,
        keepalive_ms=0,
    )
    a, _b, sid = stream_to(peer)
    assert a.send_message(sid, b"s" * 100)
    a.data_to_send()
    # left: stream 200 / connection 150 (the message fits the stream exactly), or
    # stream 100 / connection 150 (it fits the connection exactly)
    assert not a.send_message(sid, b"s" * size)
    blocked = of_type(frames_of(a.data_to_send()), BlockedFrame)
    expected = (0, connection_bytes, None) if short == "connection" else (sid, stream_bytes, 20)
    assert [(f.stream_id, f.bytes_limit, f.messages_limit) for f in blocked] == [expected]


def test_send_message_fills_credit_exactly() -> None:
    """spec §8.3: the single-message path: exactly the credit goes, one byte more waits."""
    a, _b, sid = stream_to(BATCH)
    for _ in range(9):
        assert a.send_message(sid, b"p" * 100)
    assert not a.send_message(sid, b"p" * 101)
    assert a.send_message(sid, b"p" * 100)
    settings = Settings(
        stream_bytes=5000,
        stream_messages=20,
        connection_bytes=300,
        max_message_bytes=BATCH_M,
        keepalive_ms=0,
    )
    a, _b, sid = stream_to(settings)
    assert a.send_message(sid, b"p" * 100) and a.send_message(sid, b"p" * 100)
    assert not a.send_message(sid, b"p" * 101)
    assert a.send_message(sid, b"p" * 100)
    settings = Settings(
        stream_bytes=5000,
        stream_messages=2,
        connection_bytes=3000,
        max_message_bytes=M,
        keepalive_ms=0,
    )
    a, _b, sid = stream_to(settings)
    assert a.send_message(sid, b"") and a.send_message(sid, b"")
    assert not a.send_message(sid, b"")


# --- spec §8.4, §7.3: the receive path, runs of whole messages ------------------------------

RECV = Settings(
    stream_bytes=300,
    stream_messages=4,
    connection_bytes=1000,
    max_message_bytes=200,
    keepalive_ms=0,
)
RECV_CONN = Settings(
    stream_bytes=1000,
    stream_messages=100,
    connection_bytes=300,
    max_message_bytes=200,
    keepalive_ms=0,
)


@pytest.mark.parametrize("settings", [RECV, RECV_CONN], ids=["stream", "connection"])
def test_a_run_of_whole_messages_may_fill_the_limit_exactly(settings: Settings) -> None:
    """spec §8.4: 100 bytes, then one chunk of 100 + 100: exactly the 300-byte limit."""
    b = victim(settings)
    feed(b, data(1, b"o" * 100))
    events = feed(b, data(1, b"r" * 100) + data(1, b"s" * 100))
    assert messages(events) == [b"r" * 100, b"s" * 100]


@pytest.mark.parametrize("settings", [RECV, RECV_CONN], ids=["stream", "connection"])
def test_a_run_of_whole_messages_one_byte_past_the_limit_is_a_flow_control_error(
    settings: Settings,
) -> None:
    """spec §8.4: the second message of a run passes the stream or connection limit by 1."""
    b = victim(settings)
    feed(b, data(1, b"o" * 100))
    wire = data(1, b"r" * 100) + data(1, b"s" * 101)
    assert connection_error(b, wire) == ErrorCode.FLOW_CONTROL_ERROR


@pytest.mark.parametrize("settings", [RECV, RECV_CONN], ids=["stream", "connection"])
def test_the_first_message_of_a_chunk_one_byte_past_the_limit_is_a_flow_control_error(
    settings: Settings,
) -> None:
    """spec §8.4: the hot path's own check, for the first whole message of a chunk."""
    b = victim(settings)
    feed(b, data(1, b"o" * 100))
    feed(b, data(1, b"p" * 100))
    assert connection_error(b, data(1, b"q" * 101)) == ErrorCode.FLOW_CONTROL_ERROR


def test_a_run_may_use_the_message_limit_exactly_and_not_one_message_more() -> None:
    """spec §8.4: Wm = 4: one message, then a run of 3 is fine; a run of 4 is one too many."""
    b = victim(RECV)
    feed(b, data(1, b"1"))
    events = feed(b, data(1, b"2") + data(1, b"3") + data(1, b"4"))
    assert messages(events) == [b"2", b"3", b"4"]
    b = victim(RECV)
    feed(b, data(1, b"1"))
    wire = data(1, b"2") + data(1, b"3") + data(1, b"4") + data(1, b"5")
    assert connection_error(b, wire) == ErrorCode.FLOW_CONTROL_ERROR
    b = victim(RECV)  # the hot path's own check: the first message of a chunk, one too many
    feed(b, data(1, b"1"))
    feed(b, data(1, b"2") + data(1, b"3") + data(1, b"4"))
    assert connection_error(b, data(1, b"5")) == ErrorCode.FLOW_CONTROL_ERROR


@pytest.mark.parametrize("position", ["first", "in a run"])
def test_a_message_over_max_message_bytes_resets_the_stream_wherever_it_is(position: str) -> None:
    """spec §7.3: a whole message of M + 1 bytes is a stream error; M bytes are fine."""
    settings = Settings(
        stream_bytes=5000,
        stream_messages=100,
        connection_bytes=5000,
        max_message_bytes=200,
        keepalive_ms=0,
    )
    b = victim(settings)
    feed(b, data(1, b"o"))
    before = data(1, b"m" * 200) if position == "in a run" else b""
    events = feed(b, before + data(1, b"L" * 201) + data(1, b"after"))
    assert messages(events) == ([b"m" * 200] if before else [])
    (reset,) = resets(events)
    assert (reset.stream_id, reset.error_code, reset.remote) == (
        1,
        ErrorCode.MESSAGE_TOO_LARGE,
        False,
    )
    out = of_type(frames_of(b.data_to_send()), ResetFrame)
    assert [(f.stream_id, f.code) for f in out] == [(1, ErrorCode.MESSAGE_TOO_LARGE)]


def test_a_frame_cut_by_the_end_of_a_chunk_inside_a_run_arrives_whole() -> None:
    """spec §4.2: a run stops at a frame whose body has not all arrived."""
    b = victim(RECV)
    feed(b, data(1, b"o"))
    wire = data(1, b"a" * 10) + data(1, b"b" * 10)
    events = feed(b, wire[:-5])
    assert messages(events) == [b"a" * 10]
    assert messages(feed(b, wire[-5:])) == [b"b" * 10]


def test_a_run_never_takes_a_frame_of_another_stream_or_a_fragment() -> None:
    """spec §7.1: each message goes to its own stream; a fragment is not a whole message."""
    b = victim(RECV)
    feed(b, data(1, b"o") + data(3, b"o"))
    wire = data(1, b"x") + data(3, b"y") + data(1, b"frag", end_message=False) + data(1, b"ment")
    events = feed(b, wire)
    got = {e.stream_id: e.messages for e in of_type(events, MessagesReceived)}
    assert got == {1: [b"x", b"fragment"], 3: [b"y"]}


def test_a_frame_over_max_frame_bytes_inside_a_run_is_a_frame_size_error() -> None:
    """spec §4.2, §4.5: a DATA frame of max_frame_bytes is fine anywhere in a run of whole
    messages; one byte more is FRAME_SIZE_ERROR there too, even within max_message_bytes."""
    settings = Settings(
        stream_bytes=100_000,
        stream_messages=100,
        connection_bytes=100_000,
        max_frame_bytes=16384,
        max_message_bytes=20_000,
        keepalive_ms=0,
    )
    b = victim(settings)
    feed(b, data(1, b"o"))
    events = feed(b, data(1, b"a") + data(1, b"m" * 16384))
    assert messages(events) == [b"a", b"m" * 16384]
    wire = data(1, b"a") + data(1, b"M" * 16385)
    assert connection_error(b, wire) == ErrorCode.FRAME_SIZE_ERROR


# --- spec §7.3: fragments summing past max_message_bytes ----------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["whole", "header first"])
@pytest.mark.parametrize("last", [50, 51])
def test_fragments_may_sum_to_max_message_bytes_and_not_one_byte_more(
    split: bool, last: int
) -> None:
    """spec §7.3: 150 + 50 = M is a message; 150 + 51 resets the stream, even from the header."""
    b = victim(RECV)
    feed(b, data(1, b"a" * 150, end_message=False))
    final = data(1, b"b" * last)
    if split:
        events = feed(b, final[:10])  # the header alone decides (spec §4.2)
        if last == 51:
            assert [r.error_code for r in resets(events)] == [ErrorCode.MESSAGE_TOO_LARGE]
            return
        assert events == []
        final = final[10:]
    events = feed(b, final)
    if last == 50:
        assert messages(events) == [b"a" * 150 + b"b" * 50]
        assert resets(events) == []
    else:
        assert [r.error_code for r in resets(events)] == [ErrorCode.MESSAGE_TOO_LARGE]
        assert messages(events) == []


def test_a_new_stream_may_begin_with_exactly_its_byte_limit_and_max_message_bytes() -> None:
    """spec §8.4, §7.3: a first frame of stream_bytes = M bytes is fine; one more is not."""
    settings = Settings(
        stream_bytes=300,
        stream_messages=4,
        connection_bytes=1000,
        max_message_bytes=300,
        keepalive_ms=0,
    )
    b = victim(settings)
    assert messages(feed(b, data(1, b"x" * 300))) == [b"x" * 300]
    b = victim(settings)
    assert connection_error(b, data(1, b"x" * 301, end_message=False)) == (
        ErrorCode.FLOW_CONTROL_ERROR
    )
    settings = Settings(
        stream_bytes=400,
        stream_messages=4,
        connection_bytes=1000,
        max_message_bytes=300,
        keepalive_ms=0,
    )
    b = victim(settings)
    events = feed(b, data(1, b"x" * 301))
    assert [r.error_code for r in resets(events)] == [ErrorCode.MESSAGE_TOO_LARGE]


def test_a_message_of_exactly_two_frames_arrives_whole() -> None:
    """spec §7.1: the fragment that reaches the message's end carries END_MESSAGE."""
    big = Settings(max_message_bytes=65536, keepalive_ms=0)
    a, b = pair(big, big)
    sid = open_on(a, b)
    payload = bytes(range(256)) * 128  # 2 x 16384 = 2 x the peer's max_frame_bytes below
    a2, b2 = pair(big, Settings(max_frame_bytes=16384, max_message_bytes=65536, keepalive_ms=0))
    sid = open_on(a2, b2)
    assert a2.send_message(sid, payload)
    _, events = pump(a2, b2)
    assert messages(events) == [payload]
    assert a2.send_messages(sid, [payload, b"z"]) == 2
    _, events = pump(a2, b2)
    assert messages(events) == [payload, b"z"]
    del a, b


# --- spec §6.4: max_streams exactly at the limit ------------------------------------------


def test_the_peer_may_open_exactly_max_streams_and_the_next_is_refused() -> None:
    """spec §6.4: with max_streams = 3, streams 1, 3, 5 open; 7 is refused, the connection lives."""
    b = victim(Settings(max_streams=3, keepalive_ms=0))
    events = feed(b, data(1, b"a") + data(3, b"b") + data(5, b"c"))
    assert of_type(events, StreamOpened) == [StreamOpened(1), StreamOpened(3), StreamOpened(5)]
    assert b.data_to_send() == b""
    events = feed(b, data(7, b"d"))
    assert of_type(events, StreamOpened) == []
    out = of_type(frames_of(b.data_to_send()), ResetFrame)
    assert [(f.stream_id, f.code) for f in out] == [(7, ErrorCode.REFUSED_STREAM)]


def test_a_refused_stream_is_refused_even_when_its_first_frame_breaks_a_stream_rule() -> None:
    """spec §6.4: past max_streams the stream is refused first; its stream limits never apply."""
    settings = Settings(
        stream_bytes=300,
        stream_messages=4,
        connection_bytes=5000,
        max_message_bytes=300,
        max_streams=1,
        keepalive_ms=0,
    )
    b = victim(settings)
    feed(b, data(1, b"a"))
    feed(b, data(3, b"x" * 301))  # over stream_bytes, but the stream is refused anyway
    out = of_type(frames_of(b.data_to_send()), ResetFrame)
    assert [(f.stream_id, f.code) for f in out] == [(3, ErrorCode.REFUSED_STREAM)]


def test_this_side_opens_exactly_the_peers_max_streams() -> None:
    """spec §6.4: with the peer's max_streams = 2, two streams open and a third is refused."""
    a = victim(peer=Settings(max_streams=2, keepalive_ms=0), role=Role.INITIATOR)
    a.open_stream()
    assert a.can_open_stream
    a.open_stream()
    assert not a.can_open_stream
    with pytest.raises(LocalProtocolError) as info:
        a.open_stream()
    assert info.value.error_code == ErrorCode.REFUSED_STREAM


# --- spec §5.3, §5.7, §10.5: CREDIT limits and "consumed" --------------------------------

MAX_COUNTER = (1 << 62) - 1  # spec §12; the table test below checks the code agrees


def sender_with_stream() -> tuple[Connection, int]:
    """This side (the initiator) with stream 1 open; the scripted peer is the acceptor."""
    a = victim(role=Role.INITIATOR)
    sid = a.open_stream()
    a.data_to_send()
    return a, sid


@pytest.mark.parametrize("key", ["bytes", "messages"])
def test_a_credit_limit_of_max_counter_is_accepted_and_one_more_is_a_flow_control_error(
    key: str,
) -> None:
    """spec §5.3: a limit above MAX_COUNTER is FLOW_CONTROL_ERROR; MAX_COUNTER itself is fine."""
    for value, ok in ((MAX_COUNTER, True), (MAX_COUNTER + 1, False)):
        a, sid = sender_with_stream()
        limits = {"bytes": 1 << 30, "messages": 1 << 20, key: value}
        frame = CreditFrame(sid, limits["bytes"], limits["messages"])
        if ok:
            events = feed(a, frame.encode())
            assert of_type(events, CreditGranted)
        else:
            assert connection_error(a, frame.encode()) == ErrorCode.FLOW_CONTROL_ERROR


def test_a_negative_credit_limit_is_a_protocol_error() -> None:
    """spec §4.3.3: counters are non-negative integers."""
    a, sid = sender_with_stream()
    assert connection_error(a, CreditFrame(sid, -1, 10).encode()) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("frame_type", ["RESET", "REJECTED", "CREDIT"])
def test_consumed_may_equal_the_messages_sent_and_not_one_more(frame_type: str) -> None:
    """spec §5.3, §5.7: a peer cannot have consumed (or accepted) a message never sent."""
    for consumed, ok in ((3, True), (4, False)):
        a, sid = sender_with_stream()
        assert a.send_messages(sid, [b"1", b"2", b"3"]) == 3
        if frame_type == "RESET":
            wire = ResetFrame(sid, ErrorCode.CANCEL, "", consumed).encode()
        elif frame_type == "REJECTED":
            wire = ResetFrame(sid, ErrorCode.REJECTED, "", consumed).encode()
        else:
            wire = CreditFrame(sid, 1 << 30, 1 << 20, consumed).encode()
        if ok:
            feed(a, wire)
            if frame_type == "CREDIT":
                assert a.peer_consumed(sid) == 3
        else:
            assert connection_error(a, wire) == ErrorCode.PROTOCOL_ERROR


def test_consumed_never_goes_down() -> None:
    """spec §10.5: a smaller "consumed" than one already reported changes nothing."""
    a, sid = sender_with_stream()
    assert a.send_messages(sid, [b"1", b"2", b"3"]) == 3
    feed(a, CreditFrame(sid, 1 << 30, 1 << 20, 3).encode())
    feed(a, CreditFrame(sid, 1 << 30, 1 << 20, 2).encode())
    assert a.peer_consumed(sid) == 3


# --- spec §10.7.1: the glitch budget at its 1024-byte bounds --------------------------------

PEER = Settings(keepalive_ms=0)  # stream_bytes 4 MiB: its replenish threshold is far above 1024


def test_a_credit_raising_a_stream_byte_limit_by_1024_is_free_and_by_1023_a_glitch() -> None:
    """spec §10.7.1: a CREDIT that raises only a byte limit by less than 1024 is a glitch."""
    a, sid = sender_with_stream()
    limit = PEER.stream_bytes
    feed(a, CreditFrame(sid, limit + 1024, PEER.stream_messages).encode())
    assert a.glitches == 0
    feed(a, CreditFrame(sid, limit + 1024 + 1023, PEER.stream_messages).encode())
    assert a.glitches == 1


def test_a_credit_raising_the_connection_limit_by_1024_is_free_and_by_1023_a_glitch() -> None:
    """spec §10.7.1: the same bound for the connection's limit."""
    a, _ = sender_with_stream()
    limit = PEER.connection_bytes
    feed(a, CreditFrame(0, limit + 1024).encode())
    assert a.glitches == 0
    feed(a, CreditFrame(0, limit + 1024 + 1023).encode())
    assert a.glitches == 1


def test_the_free_credit_step_is_lowered_to_the_peers_own_replenish_threshold() -> None:
    """spec §10.7.1, §8.6: a peer with W = 1500, M = 1000 raises by T = 501 at most at once."""
    peer = Settings(
        stream_bytes=1500, connection_bytes=1500, max_message_bytes=1000, keepalive_ms=0
    )
    a = victim(peer=peer, role=Role.INITIATOR)
    sid = a.open_stream()
    feed(a, CreditFrame(sid, 1500 + 501, peer.stream_messages).encode())
    feed(a, CreditFrame(0, 1500 + 501).encode())
    assert a.glitches == 0
    feed(a, CreditFrame(sid, 1500 + 501 + 500, peer.stream_messages).encode())
    assert a.glitches == 1


def test_a_credit_reporting_more_consumed_or_opening_a_stream_is_progress() -> None:
    """spec §10.7.1: CREDIT that raises only "consumed", or opens a stream, is not a glitch."""
    a, sid = sender_with_stream()
    assert a.send_message(sid, b"m")
    feed(a, CreditFrame(sid, PEER.stream_bytes, PEER.stream_messages, 1).encode())
    assert a.glitches == 0
    # A CREDIT restating the initial limits (no "consumed") opens the peer's stream 2.
    events = feed(a, CreditFrame(2, PEER.stream_bytes, PEER.stream_messages).encode())
    assert StreamOpened(2) in events
    assert a.glitches == 0
    feed(a, CreditFrame(sid, PEER.stream_bytes, PEER.stream_messages, 1).encode())
    assert a.glitches == 1  # the same again: nothing new


def test_credits_raising_exactly_the_bytes_sent_are_funded_and_one_byte_more_is_not() -> None:
    """spec §10.7.1 (1.1): small CREDITs are never charged while the sum of their raises is
    at most the bytes sent and their number at most the messages begun; past that, charged."""
    a, sid = sender_with_stream()
    assert a.send_messages(sid, [b"m" * 70, b"m" * 30]) == 2  # 100 bytes, 2 messages
    limit = PEER.stream_bytes
    for raise_by in (60, 40):  # 100 bytes in 2 CREDITs: exactly what was sent
        limit += raise_by
        feed(a, CreditFrame(sid, limit, PEER.stream_messages).encode())  # no "consumed"
    assert a.glitches == 0
    feed(a, CreditFrame(sid, limit + 1, PEER.stream_messages).encode())
    assert a.glitches == 1  # a third: more CREDITs than messages, and 101 bytes
    conn_limit = PEER.connection_bytes + 100  # the connection's own sums: 100 bytes at once
    feed(a, CreditFrame(0, conn_limit).encode())
    assert a.glitches == 1
    feed(a, CreditFrame(0, conn_limit + 1).encode())
    assert a.glitches == 2


def test_a_non_final_fragment_of_1024_bytes_is_free_and_of_1023_a_glitch() -> None:
    """spec §7.1, §10.7.1 (1.1): every non-final DATA fragment under 1024 bytes is a
    glitch, the first of a message too; 1024 is free."""
    b = victim(Settings(max_message_bytes=1 << 16, keepalive_ms=0))
    feed(b, data(1, b"a" * 1024, end_message=False))  # begins a message
    feed(b, data(1, b"b" * 1024, end_message=False))
    assert b.glitches == 0
    feed(b, data(1, b"c" * 1023, end_message=False))
    assert b.glitches == 1
    feed(b, data(3, b"d" * 1023, end_message=False))  # a short first fragment
    assert b.glitches == 2


def unknown_frame() -> bytes:
    return flowproto.UnknownFrame(0x20, 0, 0, b"").encode()


def test_the_glitch_budget_allows_exactly_its_burst() -> None:
    """spec §10.7.1: with a burst of 3, three glitches pass and the fourth is ENHANCE_YOUR_CALM."""
    b = victim(limits=Limits(glitch_burst=3))
    feed(b, unknown_frame() * 3)
    assert b.glitches == 3
    assert connection_error(b, unknown_frame()) == ErrorCode.ENHANCE_YOUR_CALM


def test_consumed_data_refills_the_budget_but_never_past_its_burst() -> None:
    """spec §10.7.1: +1 token per glitch_refill_bytes consumed, capped at the burst."""
    b = victim(limits=Limits(glitch_burst=2, glitch_refill_bytes=100))
    feed(b, data(1, b"x" * 100))
    feed(b, unknown_frame() * 2)  # the budget is empty now
    b.release(1, 100, 1, now=NOW)  # ... and one token back
    feed(b, unknown_frame())
    assert connection_error(b, unknown_frame()) == ErrorCode.ENHANCE_YOUR_CALM
    b = victim(limits=Limits(glitch_burst=2, glitch_refill_bytes=1))
    feed(b, data(1, b"x" * 100))
    b.release(1, 100, 1, now=NOW)  # 100 tokens' worth, but the burst is 2
    feed(b, unknown_frame() * 2)
    assert connection_error(b, unknown_frame()) == ErrorCode.ENHANCE_YOUR_CALM


def test_time_refills_the_budget_but_never_past_its_burst() -> None:
    """spec §10.7.1: +glitch_refill_per_second tokens per second, capped at the burst."""
    b = victim(limits=Limits(glitch_burst=2, glitch_refill_per_second=100.0))
    b.handle_timeout(0.0)
    b.handle_timeout(100.0)  # 10000 tokens' worth, but the burst is 2
    feed(b, unknown_frame() * 2)
    assert connection_error(b, unknown_frame()) == ErrorCode.ENHANCE_YOUR_CALM


def test_a_stream_error_the_peer_causes_costs_a_glitch() -> None:
    """spec §10.7.1: each RESET the peer makes us send spends a token."""
    settings = Settings(max_message_bytes=100, keepalive_ms=0)
    b = victim(settings, limits=Limits(glitch_burst=1))
    feed(b, data(1, b"x" * 101))  # MESSAGE_TOO_LARGE: the one token
    assert connection_error(b, data(3, b"x" * 101)) == ErrorCode.ENHANCE_YOUR_CALM


def test_blocked_at_the_advertised_limits_is_free_and_above_them_a_glitch() -> None:
    """spec §10.7.1: a sender can be blocked only at limits we advertised."""
    b = victim(RECV)
    feed(b, data(1, b"x"))
    events = feed(b, BlockedFrame(1, 300, 4).encode())
    assert of_type(events, PeerBlocked) and b.glitches == 0
    feed(b, BlockedFrame(1, 301, 4).encode())
    assert b.glitches == 1
    feed(b, BlockedFrame(1, 300, 5).encode())
    assert b.glitches == 2


def test_the_first_goaway_is_free_and_a_repeated_one_a_glitch() -> None:
    """spec §10.7.1: one GOAWAY is how a connection ends; repeats cost a token."""
    b = victim()
    feed(b, GoAwayFrame(0, ErrorCode.NO_ERROR).encode())
    assert b.glitches == 0
    feed(b, GoAwayFrame(0, ErrorCode.NO_ERROR).encode())
    assert b.glitches == 1


# --- spec §10.7: queued replies, exactly at the limit --------------------------------------


def test_exactly_max_queued_replies_may_wait_and_one_more_is_enhance_your_calm() -> None:
    """spec §10.7: three PONGs may wait unread with a limit of 3; a fourth is too many."""
    b = victim(limits=Limits(max_queued_replies=3))
    feed(b, PingFrame(1).encode() * 3)
    feed(b, CreditFrame(0, PEER.connection_bytes + 4096).encode())  # no reply: fine
    assert connection_error(b, PingFrame(4).encode()) == ErrorCode.ENHANCE_YOUR_CALM


# --- spec §10.2, §10.4: GOAWAY and close ---------------------------------------------------


def test_an_error_goaway_ends_every_open_stream_with_its_code() -> None:
    """spec §10.2: each stream, ours and the peer's, gets a StreamReset with the GOAWAY's code."""
    a = victim(role=Role.INITIATOR)
    ours = [a.open_stream(), a.open_stream()]
    feed(a, data(2, b"peer's"))
    events = feed(a, GoAwayFrame(3, ErrorCode.INTERNAL_ERROR, "bye").encode())
    got = sorted((r.stream_id, r.error_code, r.remote) for r in resets(events))
    assert got == [(sid, ErrorCode.INTERNAL_ERROR, True) for sid in sorted([*ours, 2])]


def test_a_graceful_goaway_refuses_only_our_streams_above_last_stream() -> None:
    """spec §10.4: streams at or below last_stream go on; those above were not processed."""
    a = victim(role=Role.INITIATOR)
    first, second = a.open_stream(), a.open_stream()
    events = feed(a, GoAwayFrame(first, ErrorCode.NO_ERROR).encode())
    assert [(r.stream_id, r.error_code) for r in resets(events)] == [
        (second, ErrorCode.REFUSED_STREAM)
    ]
    assert a.send_message(first, b"still open")


def test_a_repeated_close_never_raises_last_stream() -> None:
    """spec §10.4: a second GOAWAY names no stream above the first one's last_stream."""
    b = victim()
    feed(b, data(1, b"a"))
    b.close()
    (first,) = of_type(frames_of(b.data_to_send()), GoAwayFrame)
    feed(b, data(3, b"after the goaway"))  # not processed
    b.close(ErrorCode.INTERNAL_ERROR)
    (second,) = of_type(frames_of(b.data_to_send()), GoAwayFrame)
    assert (first.last_stream, second.last_stream) == (1, 1)


def test_a_reset_on_an_idle_stream_of_ours_is_an_error_even_after_our_goaway() -> None:
    """spec §5.7, §10.4: after our GOAWAY a RESET on an idle peer id above its last_stream
    is ignored; on an idle id of our own parity it is still PROTOCOL_ERROR."""
    b = victim()  # the acceptor: its own ids are even
    b.close()  # GOAWAY with last_stream 0
    feed(b, ResetFrame(3, ErrorCode.CANCEL, "", 0).encode())  # the peer's, not processed
    assert connection_error(b, ResetFrame(2, ErrorCode.CANCEL, "", 0).encode()) == (
        ErrorCode.PROTOCOL_ERROR
    )


# --- spec §8.4, §8.5: ReceiveWindow's own arithmetic -----------------------------------------


def test_a_receive_window_takes_exactly_its_limits_and_not_one_more() -> None:
    """spec §8.4: arrivals up to the limit in each unit are counted; past it is an error."""
    rw = ReceiveWindow(150, 4, M)
    rw.receive(150, 4, "s")
    assert (rw.held_bytes, rw.held_messages) == (150, 4)
    for nbytes, nmessages in ((1, 0), (0, 1)):
        with pytest.raises(RemoteProtocolError) as info:
            rw.receive(nbytes, nmessages, "s")
        assert info.value.error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_a_receive_window_releases_exactly_what_it_holds_and_not_one_more() -> None:
    """spec §8.5: releasing more bytes or more messages than held is the application's error."""
    for nbytes, nmessages in ((11, 2), (10, 3)):
        rw = ReceiveWindow(150, 4, M)
        rw.receive(10, 2, "s")
        with pytest.raises(LocalProtocolError):
            rw.consume(nbytes, nmessages)
    rw.consume(10, 2)
    assert (rw.held_bytes, rw.held_messages) == (0, 0)


def test_the_held_peak_is_the_most_ever_held_and_includes_what_is_held_now() -> None:
    """The peak of received - consumed, recorded where it changes (see held_peak)."""
    rw = ReceiveWindow(300, 4, M)
    rw.receive(100, 2, "s")
    assert rw.held_peak() == (100, 2)
    rw.consume(60, 1)
    rw.receive(10, 1, "s")
    assert rw.held_peak() == (100, 2)
    rw.receive(140 - 50, 1, "s")  # 140 held now
    assert rw.held_peak() == (140, 3)
    rw.consume_all()
    assert (rw.held_bytes, rw.held_messages) == (0, 0)
    assert rw.held_peak() == (140, 3)


# --- spec §8.9: the memory budget ------------------------------------------------------------


def member(window: int = 1000) -> ReceiveWindow:
    return ReceiveWindow(window, 10, M)


def test_fair_shares_divide_the_surplus_among_those_still_wanting() -> None:
    """spec §8.9 B3: floors first, then water-filling: 700 over three is 233, 233, 234."""
    budget = MemoryBudget(1000)
    ms = [member(100) for _ in range(3)]
    for m in ms:
        budget.join(m, 100, 10_000)
    assert [budget.share(m) for m in ms] == [333, 333, 334]


def test_a_member_wanting_little_leaves_the_rest_to_the_others() -> None:
    """spec §8.9 B3: max-min fair: the smallest want is met first, the rest split evenly."""
    budget = MemoryBudget(1000)
    small, big1, big2 = member(100), member(100), member(100)
    budget.join(big1, 100, 10_000)
    budget.join(small, 100, 150)
    budget.join(big2, 100, 10_000)
    assert [budget.share(m) for m in (small, big1, big2)] == [150, 425, 425]


def test_a_newcomer_is_admitted_when_the_free_budget_is_exactly_its_floor() -> None:
    """spec §8.9 B2: admitted if free covers the floor, with at least the floor."""
    budget = MemoryBudget(2000)
    assert budget.initial_window(1 << 20, 2000) == 2000
    assert budget.initial_window(1 << 20, 2001) is None
    assert budget.refused == 1
    budget = MemoryBudget(16_000)
    assert budget.initial_window(1 << 20, 2000) == 2000  # free // 16 = 1000 is below the floor
    assert budget.initial_window(1 << 20, 1) == 1000  # free // 16
    assert budget.initial_window(500, 1) == 500


def test_a_budget_counts_commitments_exactly() -> None:
    """spec §8.9 B1: a member commits limit - consumed; consuming frees, leaving returns it."""
    budget = MemoryBudget(10_000)
    rw = member(1000)
    rw.receive(300, 1, "s")
    rw.consume(300, 1)
    budget.join(rw, 100, 1000)
    assert (budget.committed, budget.peak) == (700, 700)
    rw.receive(200, 1, "s")
    rw.consume(200, 1)
    assert budget.committed == 500
    assert rw.update() == (1500, 12)  # 500 consumed + 1000 - 1000 >= T = 500
    assert (budget.committed, budget.peak) == (1000, 1000)
    budget.leave(rw)
    assert (budget.committed, budget.peak) == (0, 1000)


def test_a_budget_needs_at_least_one_byte() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(0)
    assert MemoryBudget(1).capacity == 1


def test_a_clipped_raise_is_the_free_budget_but_never_below_the_need() -> None:
    """spec §8.9 B4: max(need, min(raise, free))."""
    budget = MemoryBudget(1000)
    budget.committed = 900
    assert budget.clip(500, 0) == 100
    assert budget.clip(500, 200) == 200


def squeezed(consumed: int, free: int) -> ReceiveWindow:
    """A 300-byte window (T = 150, M = 100) in a budget with ``free`` bytes left after it."""
    budget = MemoryBudget(10_000)
    rw = ReceiveWindow(300, 100, M)
    budget.join(rw, 100, 300)
    rw.receive(consumed, 1, "s")
    rw.consume(consumed, 1)
    budget.committed = budget.capacity - free  # the others took the rest
    return rw


def test_a_squeezed_window_still_grants_exactly_the_minimum_progress() -> None:
    """spec §8.9 B4, §8.5 G1: with no free budget, the raise is what M needs, to the byte."""
    rw = squeezed(250, 0)  # limit 300 - consumed 250 = 50 open: 50 short of M
    assert rw.update() == (350, 101)
    assert rw.advertised_bytes - rw.consumed_bytes == M


def test_a_squeezed_raise_below_the_threshold_waits_unless_needed() -> None:
    """spec §8.6, §8.9 B4: a cut raise below T is not sent when M is already open..."""
    assert squeezed(200, 0).update() is None  # exactly M open: need = 0
    assert squeezed(200, 149).update() is None  # 149 < T = 150
    assert squeezed(200, 150).update() == (450, 101)  # ... and at T it is sent


# --- spec §8.9: the tuner's comparisons at equality ---------------------------------------


def test_bounded_counts_a_value_at_a_bound_as_held_there() -> None:
    """spec §8.9 rule 5: at the floor (or cap) the window is held there, and says so."""
    bounded = core("_bounded")
    assert bounded(2.0, 2, 10) == (2, True, False)
    assert bounded(10.0, 2, 10) == (10, False, True)
    assert bounded(2.49, 2, 10) == (2, True, False)
    assert bounded(2.5, 2, 10) == (3, False, False)  # rounded half up
    assert bounded(9.0, 8, 4) == (8, False, True)  # a cap below the floor: the floor wins


def tuner_at(rw: ReceiveWindow, *, min_epoch: float = 0.05) -> Any:
    tuner = flowproto.WindowTuner(AutoTune(min_epoch=min_epoch), M)
    tuner.on_release(rw, 0, 0, 0.0, 0.0)  # the first release starts the first epoch
    return tuner


def test_the_standing_queue_is_the_first_lowest_point_of_an_epoch() -> None:
    """spec §8.9 rule 1: Qm is the least held after a release, Qb the bytes at that moment."""
    rw = ReceiveWindow(10_000, 100, M)
    rw.receive(300, 3, "s")
    rw.consume(100, 1)
    tuner = tuner_at(rw)
    assert (tuner.queue_messages, tuner.queue_bytes) == (2, 200)
    rw.receive(50, 1, "s")
    rw.consume(10, 1)  # 2 messages held again, 240 bytes: not a new low
    tuner.on_release(rw, 10, 1, 0.01, 0.0)
    assert (tuner.queue_messages, tuner.queue_bytes) == (2, 200)
    rw.consume(200, 1)
    tuner.on_release(rw, 200, 1, 0.02, 0.0)
    assert (tuner.queue_messages, tuner.queue_bytes) == (1, 40)


def test_an_epoch_ends_at_exactly_max_of_min_epoch_and_rtt() -> None:
    """spec §8.9 rule 1: the first release at or after start + max(min_epoch, rtt)."""
    rw = ReceiveWindow(10_000, 100, M)
    tuner = tuner_at(rw, min_epoch=0.5)
    tuner.on_release(rw, 0, 0, 0.25, 0.0)
    assert tuner.rate.since == 0.0  # the epoch's start: its rate sample runs from there
    tuner.on_release(rw, 0, 0, 0.5, 0.0)
    assert tuner.rate.since == 0.5  # a new epoch began
    tuner = flowproto.WindowTuner(AutoTune(min_epoch=0.5), M)
    tuner.on_release(rw, 0, 0, 0.0, 1.0)  # rtt 1.0 > min_epoch
    tuner.on_release(rw, 0, 0, 0.75, 1.0)
    assert tuner.rate.since == 0.0


def test_the_rtt_minimum_is_the_least_sample() -> None:
    """spec §8.9 rule 2: the least RTT, since queueing only inflates samples."""
    rtt = flowproto.RttEstimator()
    for sample in (0.3, 0.1, 0.2):
        rtt.add(sample)
    assert (rtt.minimum, rtt.latest, rtt.samples) == (0.1, 0.2, 3)


def test_the_horizon_is_at_least_two_round_trips() -> None:
    """spec §8.9 rule 3: H = max(rtt + L, 2 rtt): with rtt 0.5 s and L 0.1 s, H = 1 s."""
    rw = ReceiveWindow(10_000, 100, M)
    tuner = flowproto.WindowTuner(AutoTune(latency_target=0.1), M)
    rw.receive(10_000, 10, "s")
    tuner.on_release(rw, 0, 0, 0.0, 0.5)  # the first epoch starts; 10 messages queued
    rw.consume(9000, 9)
    assert tuner.on_release(rw, 9000, 9, 1.0, 0.5)  # 9000 B/s, a message still queued
    shrink = 1 - math.exp(-1.0 / 0.25)  # rule 6 toward the target 9000 B/s x 1 s
    assert rw.window_bytes == round(10_000 - (10_000 - 9000) * shrink)
    assert tuner.reason is flowproto.WindowReason.LATENCY  # messages are not at their floor


def test_in_flight_plus_queued_at_exactly_two_thirds_of_usable_credit_is_credit_limited() -> None:
    """spec §8.9 rule 4: ``sb rtt + Qb >= 2/3 (W - T)`` counts at equality: 1000 = 2/3 x 1500."""
    rw = ReceiveWindow(3000, 100, M)  # T = 1500
    tuner = flowproto.WindowTuner(AutoTune(), M)
    rw.receive(1000, 1, "s")
    tuner.on_release(rw, 0, 0, 0.0, 0.0)
    rw.consume(0, 1)  # the queue empties of messages; its 1000 bytes stay counted in Qb
    changed = tuner.on_release(rw, 0, 1, 1.0, 0.0)
    # Credit-limited and keeping up (rule 4): the target is at least the window, kept.
    assert not changed
    assert rw.window_bytes == 3000


def test_a_change_of_exactly_a_sixteenth_of_the_window_is_made() -> None:
    """spec §8.9 rule 6: only changes *smaller* than 1/16 of the window are skipped."""
    rw = ReceiveWindow(3200, 100, M)
    tuner = flowproto.WindowTuner(AutoTune(latency_target=1.0, min_epoch=1.0), M)
    tuner.on_release(rw, 0, 0, 0.0, 0.0)
    rw.receive(3200, 1, "s")
    rw.consume(3200, 1)
    tuner.on_release(rw, 3200, 1, 0.5, 0.0)
    assert rw.update() is not None
    rw.receive(200, 1, "s")
    rw.consume(200, 1)
    assert tuner.on_release(rw, 200, 1, 1.0, 0.0)  # 3400 B/s x H = 1 s: 200 = 3200 / 16 more
    assert rw.window_bytes == 3400


def test_the_floor_is_the_reason_only_when_both_units_are_held_at_it() -> None:
    """spec §8.9 rule 5: FLOOR when bytes and messages are both at their floors."""
    for consumed_messages, reason in ((50, "LATENCY"), (1, "FLOOR")):
        rw = ReceiveWindow(10_000, 100, M)
        tuner = flowproto.WindowTuner(AutoTune(), M)
        rw.receive(100, consumed_messages, "s")
        tuner.on_release(rw, 0, 0, 0.0, 0.0)
        rw.consume(100, consumed_messages)
        assert tuner.on_release(rw, 100, consumed_messages, 1.0, 0.0)
        assert rw.window_bytes == flowproto.WindowTuner(AutoTune(), M).floor_bytes
        assert tuner.reason is getattr(flowproto.WindowReason, reason), consumed_messages


# --- spec §8.9 rule 8: the connection window ---------------------------------------------


def tuned(budget: MemoryBudget | None = None) -> Connection:
    conn = Connection(Role.ACCEPTOR, Settings(keepalive_ms=0), autotune=AutoTune(), budget=budget)
    feed(conn, PREFACE + HelloFrame(PEER).encode())
    conn.data_to_send()
    return conn


def test_the_connection_window_is_held_at_its_floor_when_no_stream_wants_more() -> None:
    """spec §8.9 rules 5, 8: no receiving stream: the floor, not zero; the reason is FLOOR
    (the budget's share equals the window, so the budget is not what holds it)."""
    floor = core("tuned_floor")(Settings().max_message_bytes)
    for budget in (None, MemoryBudget(1 << 30)):
        b = tuned(budget)
        feed(b, data(1, b"x" * 10) + data(1, b"", end_message=False, end_stream=True))
        b.end_stream(1)  # closed both ways, its message still held
        b.release(1, 10, 1, now=1.0)
        info = b.window_info(0)
        assert info is not None
        assert (info.window_bytes, info.reason) == (floor, flowproto.WindowReason.FLOOR)


def test_the_connection_window_is_retuned_at_exactly_min_epoch_later() -> None:
    """spec §8.9 rule 8: at most once per min_epoch, and again at exactly min_epoch."""
    b = tuned()
    feed(b, data(1, b"x" * 10) + data(1, b"", end_message=False, end_stream=True))
    b.end_stream(1)
    b.release(1, 10, 1, now=1.0)  # no stream receiving: the floor
    feed(b, data(3, b"y" * 10))  # a new stream wants its window
    b.release(3, 10, 1, now=1.0 + AutoTune().min_epoch)
    info = b.window_info(0)
    assert info is not None
    assert info.window_bytes == Settings().stream_bytes


def test_the_round_trip_probe_goes_at_exactly_its_time() -> None:
    """spec §8.9: once the application consumes, a PING measures the round trip, due at 0."""
    b = tuned()
    feed(b, data(1, b"a") + data(1, b"b"))
    b.release(1, 1, 1, now=0.0)
    b.data_to_send()
    b.handle_timeout(0.0)
    assert of_type(frames_of(b.data_to_send()), PingFrame)


# --- spec §4.3.2: body rules at the boundary -----------------------------------------------


def control(ftype: int, body: Any, sid: int = 0) -> bytes:
    raw = msgpack.packb(body, use_bin_type=True)
    return len(raw).to_bytes(4, "big") + bytes([ftype, 0]) + sid.to_bytes(4, "big") + raw


PING = 4


def ping_with(extra: dict[str, Any]) -> bytes:
    return control(PING, {"id": 7, **extra})


def nested(kind: str, levels: int) -> Any:
    """A value for a key of the top-level map (level 1) whose innermost container is at
    level ``levels``: ``levels - 1`` nested maps or arrays."""
    value: Any = 0
    for _ in range(levels - 1):
        value = {"k": value} if kind == "map" else [value]
    return value


def test_a_body_of_exactly_64_entries_is_accepted_and_65_refused() -> None:
    """spec §4.3.2 B4: at most MAX_MAP_ENTRIES entries in the top-level map."""
    b = victim()
    events = feed(b, ping_with({f"x{i}": i for i in range(63)}))
    assert [e.ping_id for e in of_type(events, flowproto.PingReceived)] == [7]
    b = victim()
    assert connection_error(b, ping_with({f"x{i}": i for i in range(64)})) == (
        ErrorCode.PROTOCOL_ERROR
    )


def test_a_hello_of_65_entries_is_enhance_your_calm() -> None:
    """spec §3.2 step 1: more than 64 entries in a HELLO is ENHANCE_YOUR_CALM."""
    body = {**Settings().to_body(), **{f"x{i}": 0 for i in range(65 - 7)}}
    conn = Connection(Role.ACCEPTOR)
    with pytest.raises(RemoteProtocolError) as info:
        feed(conn, PREFACE + control(1, body))
    assert info.value.error_code == ErrorCode.ENHANCE_YOUR_CALM
    body = {**Settings().to_body(), **{f"x{i}": 0 for i in range(64 - 7)}}
    conn = Connection(Role.ACCEPTOR)
    feed(conn, PREFACE + control(1, body))
    assert conn.handshake_complete


@pytest.mark.parametrize("kind", ["map", "array"])
def test_nested_containers_of_exactly_64_entries_are_accepted_and_65_refused(kind: str) -> None:
    """spec §4.3.2 B4: the entry limit holds for every nested map and array too."""
    for n, ok in ((64, True), (65, False)):
        value = {f"k{i}": i for i in range(n)} if kind == "map" else list(range(n))
        b = victim()
        if ok:
            assert of_type(feed(b, ping_with({"x": value})), flowproto.PingReceived)
        else:
            assert connection_error(b, ping_with({"x": value})) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("kind", ["map", "array"])
def test_a_body_8_levels_deep_is_accepted_and_9_refused(kind: str) -> None:
    """spec §4.3.2 B4: MAX_BODY_DEPTH = 8 levels, the top-level map being level 1."""
    b = victim()
    assert of_type(feed(b, ping_with({"x": nested(kind, 8)})), flowproto.PingReceived)
    b = victim()
    assert connection_error(b, ping_with({"x": nested(kind, 9)})) == ErrorCode.PROTOCOL_ERROR


def test_map_keys_must_be_distinct_strings() -> None:
    """spec §4.3.2 B4: a non-string key or a repeated key is PROTOCOL_ERROR."""
    assert connection_error(victim(), ping_with({"x": {1: 2}})) == ErrorCode.PROTOCOL_ERROR
    raw = b"\x82\xa2id\x01\xa2id\x02"  # {"id": 1, "id": 2}
    wire = len(raw).to_bytes(4, "big") + bytes([PING, 0]) + bytes(4) + raw
    assert connection_error(victim(), wire) == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("versions, ok", [([0, 65535], True), ([65536], False), ([-1], False)])
def test_goaway_versions_are_u16(versions: list[int], ok: bool) -> None:
    """spec §5.8, §12 MAX_VERSION = 65535."""
    wire = control(7, {"last_stream": 0, "code": 0, "versions": versions})
    if ok:
        (frame,) = FrameDecoder().feed(wire)
        assert frame.versions == tuple(versions)
    else:
        with pytest.raises(RemoteProtocolError):
            FrameDecoder().feed(wire)


def test_goaway_last_stream_is_a_stream_id() -> None:
    """spec §5.8: last_stream is at most MAX_STREAM_ID = 2^31 - 1."""
    (frame,) = FrameDecoder().feed(control(7, {"last_stream": (1 << 31) - 1, "code": 0}))
    assert frame.last_stream == (1 << 31) - 1
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(control(7, {"last_stream": 1 << 31, "code": 0}))


def test_a_credit_rate_is_a_u32() -> None:
    """spec §5.3, §8.10: "rate" is at most 2^32 - 1."""
    body = {"bytes": 10, "messages": 10, "rate": (1 << 32) - 1}
    (frame,) = FrameDecoder().feed(control(2, body, sid=1))
    assert frame.rate == (1 << 32) - 1
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(control(2, {**body, "rate": 1 << 32}, sid=1))


def padded_ping(size: int) -> bytes:
    """A PING whose body is exactly ``size`` bytes."""
    overhead = len(ping_with({"p": ""})) - 10
    for pad in range(size - overhead - 4, size - overhead + 1):
        wire = ping_with({"p": "x" * pad})
        if len(wire) - 10 == size:
            return wire
    raise AssertionError(size)


def test_a_control_body_of_exactly_4096_bytes_is_accepted_and_4097_a_frame_size_error() -> None:
    """spec §4.2: MAX_CONTROL_BODY = 4096."""
    assert of_type(feed(victim(), padded_ping(4096)), flowproto.PingReceived)
    assert connection_error(victim(), padded_ping(4097)) == ErrorCode.FRAME_SIZE_ERROR


def test_a_frame_of_exactly_max_frame_bytes_is_accepted_and_one_more_a_frame_size_error() -> None:
    """spec §4.2: DATA and unknown frame types alike."""
    settings = Settings(max_frame_bytes=16384, max_message_bytes=1 << 20, keepalive_ms=0)
    assert messages(feed(victim(settings), data(1, b"d" * 16384))) == [b"d" * 16384]
    assert connection_error(victim(settings), data(1, b"d" * 16385)) == ErrorCode.FRAME_SIZE_ERROR
    unknown = flowproto.UnknownFrame(0x20, 0, 0, b"u" * 16384).encode()
    assert feed(victim(settings), unknown) == []
    unknown = flowproto.UnknownFrame(0x20, 0, 0, b"u" * 16385).encode()
    assert connection_error(victim(settings), unknown) == ErrorCode.FRAME_SIZE_ERROR
    assert len(FrameDecoder(16384).feed(data(1, b"d" * 16384))) == 1
    with pytest.raises(RemoteProtocolError):
        FrameDecoder(16384).feed(data(1, b"d" * 16385))


def test_the_decoder_returns_a_frame_as_soon_as_its_last_byte_arrives() -> None:
    """spec §4.1: a frame is whole at exactly header + length bytes, an empty one at 10."""
    decoder = FrameDecoder()
    assert decoder.feed(data(1, b"")) == [DataFrame(1, b"")]
    wire = data(1, b"abc")
    assert decoder.feed(wire[:-1]) == []
    assert decoder.feed(wire[-1:]) == [DataFrame(1, b"abc")]
    assert decoder.buffered == 0


def test_reasons_are_cut_to_256_bytes() -> None:
    """spec §5.7, §5.8: senders truncate reasons to MAX_REASON_BYTES of UTF-8."""
    for frame in (ResetFrame(1, 8, "r" * 300), GoAwayFrame(0, 0, "g" * 300)):
        (parsed,) = FrameDecoder().feed(frame.encode())
        assert parsed.reason == frame.reason[:256]
    (parsed,) = FrameDecoder().feed(ResetFrame(1, 8, "r" * 256).encode())
    assert parsed.reason == "r" * 256


# --- spec §3.2, §9 R3: settings at their bounds ----------------------------------------------


def test_max_frame_bytes_is_16384_at_least() -> None:
    """spec §3.2: max_frame_bytes in 16384 .. 16777216."""
    assert Settings(max_frame_bytes=16384).problems() == []
    assert Settings(max_frame_bytes=16383).problems() != []
    assert Settings(max_frame_bytes=16777216).problems() == []
    assert Settings(max_frame_bytes=16777217).problems() != []


@pytest.mark.parametrize("window", ["stream_bytes", "connection_bytes"])
def test_each_byte_window_holds_at_least_one_largest_message(window: str) -> None:
    """spec §9 R3: stream_bytes and connection_bytes are at least max_message_bytes."""
    assert Settings(max_message_bytes=5000, **{window: 5000}).problems() == []
    assert Settings(max_message_bytes=5000, **{window: 4999}).problems() != []
    with pytest.raises(RemoteProtocolError) as info:
        Settings.from_body({"max_message_bytes": 5000, window: 4999})
    assert info.value.error_code == ErrorCode.SETTINGS_ERROR


@pytest.mark.parametrize("value", [True, 1.0, "1"])
def test_a_setting_must_be_an_integer(value: Any) -> None:
    """spec §3.2 step 2: each known key present has an integer value."""
    with pytest.raises(RemoteProtocolError) as info:
        Settings.from_body({"max_streams": value})
    assert info.value.error_code == ErrorCode.SETTINGS_ERROR


def test_limits_are_at_least_one_except_the_refill_rate() -> None:
    """spec §10.7: Limits.validate refuses zero (or a bool) where a count is needed."""
    assert Limits(max_queued_replies=1, glitch_refill_per_second=0.0).validate()
    for bad in (
        {"max_queued_replies": 0},
        {"glitch_burst": True},
        {"glitch_refill_per_second": -1},
    ):
        with pytest.raises(ValueError):
            Limits(**bad).validate()


# --- timers at their exact deadlines (spec §8.7, §11) ----------------------------------------


def test_keepalive_pings_at_exactly_the_interval_and_fails_at_exactly_the_timeout() -> None:
    """spec §11: due at ``last_rx + keepalive`` and at ``ping_sent + ping_timeout``, inclusive."""
    conn = Connection(Role.ACCEPTOR, Settings(keepalive_ms=1000), ping_timeout=2.0)
    feed(conn, PREFACE + HelloFrame(PEER).encode(), 10.0)  # the HELLO arrives at 10 s
    conn.data_to_send()
    conn.handle_timeout(10.0)
    assert conn.next_deadline() == 11.0
    conn.handle_timeout(11.0)
    assert of_type(frames_of(conn.data_to_send()), PingFrame)
    assert conn.next_deadline() == 13.0
    with pytest.raises(flowproto.KeepaliveTimeout):
        conn.handle_timeout(13.0)


HEADER_BYTES = len(DataFrame(1, b"").encode())


def test_a_frame_is_due_whole_at_exactly_10_s_plus_its_length_over_min_frame_rate() -> None:
    """spec §11 (1.1): first byte at t, length L: due by t + 10 s + L / MIN_FRAME_RATE,
    inclusive; L counts as soon as the whole header is in, the header alone too."""
    rate = core("MIN_FRAME_RATE")
    b = victim()
    feed(b, data(1, b"x" * rate)[:HEADER_BYTES], 100.0)  # exactly the header: L = rate
    assert b.next_deadline() == 100.0 + 10.0 + 1.0
    b.handle_timeout(110.5)  # past 10 s, within 10 s + L / rate
    with pytest.raises(flowproto.FrameTimeout):
        b.handle_timeout(111.0)


def test_a_frame_begun_with_the_end_of_another_is_timed_from_that_receipt() -> None:
    """spec §11 (1.1): each frame has its own timer, from the receipt that brought its
    first byte, even when that receipt also completed the frame before it."""
    rate = core("MIN_FRAME_RATE")
    b = victim()
    first, second = data(1, b"a" * 100), data(1, b"b" * 100)
    feed(b, first[:20], 5.0)
    assert b.next_deadline() == 5.0 + 10.0 + 100 / rate
    feed(b, first[20:] + second[:20], 6.0)
    assert b.next_deadline() == 6.0 + 10.0 + 100 / rate


def test_the_ping_timeout_waits_for_a_frame_in_progress() -> None:
    """spec §11 (1.1): the keepalive PING's timeout does not expire before the deadline of
    a frame partly received; the frame's own timeout ends the connection then."""
    conn = Connection(Role.ACCEPTOR, Settings(keepalive_ms=1000), ping_timeout=2.0)
    feed(conn, PREFACE + HelloFrame(PEER).encode(), 10.0)
    conn.data_to_send()
    conn.handle_timeout(11.0)  # the keepalive PING: unanswered, due at 13 s
    assert of_type(frames_of(conn.data_to_send()), PingFrame)
    feed(conn, data(1, b"x" * 65536)[:1000], 12.0)  # a frame begins: due at 12 + 10 + 4
    assert conn.next_deadline() == 26.0
    conn.handle_timeout(13.0)
    with pytest.raises(flowproto.FrameTimeout):
        conn.handle_timeout(26.0)


def test_blocked_repeats_at_exactly_the_blocked_interval() -> None:
    """spec §8.7: a repeat is due at ``last sent + blocked_interval``, inclusive."""
    peer = Settings(
        stream_bytes=100, stream_messages=1, connection_bytes=1000, max_message_bytes=100
    )
    a = Connection(Role.INITIATOR, Settings(keepalive_ms=0), blocked_interval=2.0)
    feed(a, PREFACE + HelloFrame(peer).encode())
    sid = a.open_stream()
    assert a.send_message(sid, b"1") and not a.send_message(sid, b"2")
    a.data_to_send()
    a.handle_timeout(5.0)  # the BLOCKED just sent is timed from here
    a.handle_timeout(7.0)
    assert of_type(frames_of(a.data_to_send()), BlockedFrame)


def test_a_pong_never_goes_ahead_of_our_own_preface_and_hello() -> None:
    """spec §3.1, §5.5: PONG jumps queued DATA, but the preface and HELLO come first."""
    conn = Connection(Role.ACCEPTOR, Settings(keepalive_ms=0))
    feed(conn, PREFACE + HelloFrame(PEER).encode() + PingFrame(5).encode())
    wire = conn.data_to_send()
    assert wire.startswith(PREFACE)
    frames = frames_of(wire)
    assert isinstance(frames[0], HelloFrame)
    assert frames[1] == flowproto.PongFrame(5)


def test_a_preface_arriving_exactly_whole_is_taken_at_once() -> None:
    """spec §3.1: after exactly the 10 preface bytes, the connection waits for HELLO."""
    conn = Connection(Role.ACCEPTOR)
    feed(conn, PREFACE)
    assert conn.state is flowproto.ConnectionState.HELLO


def test_the_final_consumed_report_goes_once_and_only_when_everything_is_consumed() -> None:
    """spec §10.5: after END_STREAM, one CREDIT with the final count once all are consumed."""
    b = victim()
    feed(b, data(1, b"a") + data(1, b"b") + data(1, b"", end_message=False, end_stream=True))
    assert not b.release(1, 1, 1, now=NOW)
    assert not of_type(frames_of(b.data_to_send()), CreditFrame)  # one message still held
    b.release(1, 1, 1, now=NOW)
    assert [c.consumed for c in of_type(frames_of(b.data_to_send()), CreditFrame)] == [2]
    b.release(1, 0, 0, now=NOW)
    assert of_type(frames_of(b.data_to_send()), CreditFrame) == []
    b = victim()
    feed(b, data(1, b"", end_message=False, end_stream=True))  # nothing to report
    assert of_type(frames_of(b.data_to_send()), CreditFrame) == []


def test_the_count_consumed_so_far_goes_before_our_end_stream_only_when_it_is_news() -> None:
    """spec §10.5 (1.1): ending a stream the peer ended, with messages still unconsumed,
    reports the count consumed so far just before END_STREAM, unless the peer has it."""
    wire = data(1, b"a") + data(1, b"b") + data(1, b"", end_message=False, end_stream=True)
    b = victim()
    feed(b, wire)
    b.end_stream(1)  # nothing consumed yet: 0 is what the peer already knows
    assert of_type(frames_of(b.data_to_send()), CreditFrame) == []
    b = victim()
    feed(b, wire)
    b.release(1, 1, 1, now=NOW)
    b.data_to_send()
    b.end_stream(1)
    frames = frames_of(b.data_to_send())
    assert [(type(f), getattr(f, "consumed", None)) for f in frames] == [
        (CreditFrame, 1),
        (DataFrame, None),
    ]


# --- spec §12 and §3.2: the tables of the spec are the code's defaults ----------------------


def spec_section(number: str) -> str:
    """The text of spec section ``number`` (for example "12." or "3.2")."""
    text = SPEC.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(number)} .*$", text, re.MULTILINE)
    assert match, number
    end = re.search(r"^#+ ", text[match.end() :], re.MULTILINE)
    return text[match.end() : match.end() + end.start() if end else len(text)]


def table(section: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the table whose first header cell is ``first_header``, by first cell."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in section.splitlines():
        if not line.startswith("|"):
            if inside:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_header:
            inside = True
        elif inside and not set(cells[0]) <= {"-"}:
            rows[cells[0].strip("`")] = cells[1:]
    assert rows, first_header
    return rows


def spec_number(text: str) -> int:
    """The first number of a cell: ``2^62-1``, ``4096 bytes``, ``1 MiB``, ``256 KiB``..."""
    text = text.strip().strip("`")
    power = re.match(r"2\^(\d+)\s*-\s*1", text)
    if power:
        return (1 << int(power.group(1))) - 1
    power = re.match(r"2\^(\d+)", text)
    if power:
        return 1 << int(power.group(1))
    number = re.match(r"(\d+)\s*(MiB|KiB)?", text)
    assert number, text
    scale = {"MiB": 1 << 20, "KiB": 1 << 10, None: 1}[number.group(2)]
    return int(number.group(1)) * scale


def numbers(text: str) -> list[int]:
    return [
        spec_number(part) for part in re.findall(r"2\^\d+(?:\s*-\s*1)?|\d+(?:\s*[MK]iB)?", text)
    ]


def test_the_wire_constants_are_the_named_limits_of_spec_section_12() -> None:
    """spec §12: each wire constant is defined once, with the table's value."""
    rows = table(spec_section("12."), "name")
    assert bytes.fromhex(rows["MAGIC"][0].strip("`").replace(" ", "")) == core("MAGIC")
    assert spec_number(rows["VERSION"][0]) == flowproto.VERSION
    assert spec_number(rows["PREFACE_BYTES"][0]) == len(PREFACE)
    assert spec_number(rows["FRAME_HEADER_BYTES"][0]) == len(DataFrame(1, b"").encode())
    for name in (
        "MAX_CONTROL_BODY",
        "MAX_MAP_ENTRIES",
        "MAX_BODY_DEPTH",
        "MAX_REASON_BYTES",
        "MAX_COUNTER",
        "MAX_STREAM_ID",
        "MAX_PING_ID",
        "MAX_ERROR_CODE",
    ):
        assert core(name) == spec_number(rows[name][0]), name
    assert spec_number(rows["MAX_VERSION"][0]) == 0xFFFF  # GOAWAY versions: see above
    low, high = numbers(rows["MIN_MAX_FRAME_BYTES / MAX_MAX_FRAME_BYTES"][0])
    assert Settings(max_frame_bytes=low).problems() == []
    assert Settings(max_frame_bytes=low - 1).problems() != []
    assert Settings(max_frame_bytes=high).problems() == []
    assert Settings(max_frame_bytes=high + 1).problems() != []
    # 1.1: the least non-final fragment and the least rate a frame or a write must keep
    assert spec_number(rows["MIN_FRAGMENT_BYTES"][0]) == Limits().min_fragment_bytes
    assert spec_number(rows["MIN_FRAME_RATE"][0]) == core("MIN_FRAME_RATE")
    # 1.2: session tokens (spec §15.2)
    tokens = numbers(rows["MIN_TOKEN_BYTES / MAX_TOKEN_BYTES"][0])[:2]
    assert tokens == [core("MIN_TOKEN_BYTES"), core("MAX_TOKEN_BYTES")]
    checked = {
        "MIN_TOKEN_BYTES / MAX_TOKEN_BYTES",
        "MIN_FRAGMENT_BYTES",
        "MIN_FRAME_RATE",
        "MAGIC",
        "VERSION",
        "PREFACE_BYTES",
        "FRAME_HEADER_BYTES",
        "MAX_CONTROL_BODY",
        "MAX_MAP_ENTRIES",
        "MAX_BODY_DEPTH",
        "MAX_REASON_BYTES",
        "MAX_COUNTER",
        "MAX_STREAM_ID",
        "MAX_PING_ID",
        "MAX_ERROR_CODE",
        "MAX_VERSION",
        "MIN_MAX_FRAME_BYTES / MAX_MAX_FRAME_BYTES",
        "setting defaults and ranges",  # the next test
    }
    assert set(rows) == checked, "a row of spec §12 that no test compares with the code"


def test_the_reference_values_are_those_of_spec_section_12() -> None:
    """spec §12 (informative): the reference implementation's defaults, row by row."""
    section = spec_section("12.")
    rows = table(section[section.index("Reference implementation values") :], "name")
    value = {name: cells[0] for name, cells in rows.items()}
    connection_defaults = inspect.signature(Connection).parameters
    limits, tune = Limits(), AutoTune()
    seconds = {
        "handshake timeout": core("DEFAULT_HANDSHAKE_TIMEOUT"),
        "ping timeout": connection_defaults["ping_timeout"].default,
        "blocked interval": connection_defaults["blocked_interval"].default,
        "latency target (auto-tuning)": tune.latency_target,
        "tuning epoch, at least": tune.min_epoch,
        "RTT probe interval (auto-tuning)": tune.rtt_probe_interval,
        "consumption report interval": core("REPORT_INTERVAL"),
    }
    for name, code in seconds.items():
        assert math.isclose(spec_number(value[name]) / 1000, code), name
    assert spec_number(value["queued control frames"]) == limits.max_queued_replies
    assert numbers(value["glitch budget"]) == [
        limits.glitch_burst,
        limits.glitch_refill_per_second,
        1,
        limits.glitch_refill_bytes,
    ]
    step = spec_number(value["smallest free unfunded CREDIT raise"])
    assert step == limits.min_credit_step
    # 1.1: 10 s + length / MIN_FRAME_RATE, for a frame and for each write
    frame_timeout = numbers(value["frame timeout"])[0] / 1000
    assert frame_timeout == core("FRAME_TIMEOUT") == core("DEFAULT_FRAME_TIMEOUT")  # core, Trio
    assert connection_defaults["frame_timeout"].default == frame_timeout
    assert spec_number(value["queued output before `send()` waits"]) == core("MAX_SEND_BACKLOG")
    timeout_ms, chunk = numbers(value["write timeout"])[:2]
    assert (timeout_ms / 1000, chunk) == (core("DEFAULT_WRITE_TIMEOUT"), core("WRITE_CHUNK"))
    assert numbers(value["linger after an error GOAWAY"]) == [core("CLOSE_LINGER") * 1000]
    assert numbers(value["largest tuned window"]) == [
        tune.max_window_bytes,
        tune.max_window_messages,
    ]
    step_bytes, floor_messages = numbers(value["tuned window floor"])[-2:]
    for m in (0, 1000, 2047, 2048, 2049, 1 << 20):
        assert flowproto.WindowTuner(tune, m).floor_bytes == max(2 * m, m + step_bytes), m
    assert core("FLOOR_MESSAGES") == floor_messages
    (headroom,) = numbers(value["pacing headroom (pacing off by default)"])
    assert math.isclose(core("PACING_HEADROOM"), 1 + headroom / 100)
    # 1.2: sessions (spec §15.3.1, §15.7)
    timeout_ms = spec_number(value["session timeout (`timeout_ms` of SESSION)"])
    assert timeout_ms / 1000 == connection_defaults["session_timeout"].default
    records = numbers(value["unconfirmed closed-stream records kept per session, at most"])
    assert records == [core("MAX_UNCONFIRMED_RECORDS")]
    seconds["session timeout (`timeout_ms` of SESSION)"] = timeout_ms / 1000
    failures, window_ms = numbers(value["failed resumptions per peer address"])[:2]
    assert failures == core("MAX_FAILED_RESUMES")
    assert window_ms / 1000 == core("FAILED_RESUME_WINDOW")
    not_constants = {"stream handlers running at once"}  # max_streams itself (spec §6.4)
    assert set(rows) == {*seconds, *not_constants} | {
        "queued control frames",
        "glitch budget",
        "smallest free unfunded CREDIT raise",
        "frame timeout",
        "queued output before `send()` waits",
        "write timeout",
        "linger after an error GOAWAY",
        "largest tuned window",
        "tuned window floor",
        "pacing headroom (pacing off by default)",
        "unconfirmed closed-stream records kept per session, at most",
        "failed resumptions per peer address",
    }, "a row of spec §12 that no test compares with the code"


def test_the_settings_defaults_and_ranges_are_the_table_of_spec_section_3_2() -> None:
    """spec §3.2: every setting's default, and its range: each bound in, one past it out."""
    rows = table(spec_section("3.2"), "key")
    assert list(rows) == [f.name for f in dataclasses_fields(Settings)]  # and in table order
    defaults = Settings()
    huge = {"stream_bytes": MAX_COUNTER, "connection_bytes": MAX_COUNTER}
    for key, (_, default, bounds) in rows.items():
        assert getattr(defaults, key) == spec_number(default), key
        low_text, high_text = (part.strip() for part in bounds.split(".."))
        high = spec_number(high_text)
        if low_text == "`max_message_bytes`":
            low = defaults.max_message_bytes
        else:
            low = spec_number(low_text)
        for value, ok in ((low, True), (low - 1, False), (high, True), (high + 1, False)):
            settings = Settings(**{**huge, key: value})
            assert (settings.problems() == []) == ok, (key, value)


def dataclasses_fields(cls: type) -> Sequence[Any]:
    import dataclasses

    return dataclasses.fields(cls)


# --- spec §10.2: nothing is sent after a connection error ------------------------------------

HELD = Settings(
    stream_bytes=1000,
    stream_messages=10,
    connection_bytes=1000,
    max_message_bytes=1000,
    keepalive_ms=0,
)


def test_nothing_is_queued_after_an_error_goaway_is_received() -> None:
    """spec §10.2: the receiver of an error GOAWAY sends nothing further, not even the
    connection CREDIT that discarding the streams' held data would return."""
    b = victim(HELD)
    feed(b, data(1, b"x" * 600))  # held: its discard is over the 500-byte threshold
    events = feed(b, GoAwayFrame(1, ErrorCode.INTERNAL_ERROR).encode())
    assert [r.stream_id for r in resets(events)] == [1]
    assert b.data_to_send() == b""


def test_a_release_after_a_connection_error_queues_nothing() -> None:
    """spec §10.2: after our GOAWAY with an error code, nothing more goes out."""
    b = victim(HELD)
    feed(b, data(1, b"x" * 600))
    assert connection_error(b, data(0, b"stream 0")) == ErrorCode.PROTOCOL_ERROR
    (goaway,) = frames_of(b.data_to_send())
    assert isinstance(goaway, GoAwayFrame)
    assert b.release(1, 600, 1, now=NOW) is False
    assert b.data_to_send() == b""


def test_eof_after_a_goaway_is_clean_only_with_no_stream_open() -> None:
    """spec §10.6: the normal end is EOF after a GOAWAY with no stream open."""
    b = victim()
    feed(b, data(1, b"x"))
    feed(b, GoAwayFrame(0, ErrorCode.NO_ERROR).encode())
    (closed,) = feed(b, b"")
    assert (closed.clean, closed.truncated) == (False, False)
    b = victim()
    feed(b, GoAwayFrame(0, ErrorCode.NO_ERROR).encode())
    (closed,) = feed(b, b"")
    assert (closed.clean, closed.truncated) == (True, False)
    b = victim()
    b.close()  # a GOAWAY either way will do: here ours
    (closed,) = feed(b, b"")
    assert (closed.clean, closed.truncated) == (True, False)


# --- spec §10.2 step 2: nothing is sent after an error GOAWAY ---------------------------


@pytest.mark.parametrize("how", ["ours", "peer's"])
def test_nothing_is_queued_after_an_error_goaway(how: str) -> None:
    a, b = pair()
    sid = open_on(a, b)
    a.data_to_send()
    if how == "ours":
        a.close(ErrorCode.PROTOCOL_ERROR, "test")
        assert [type(f) for f in frames_of(a.data_to_send())] == [GoAwayFrame]
    else:
        b.close(ErrorCode.PROTOCOL_ERROR, "test")
        feed(a, b.data_to_send())
        a.data_to_send()
    assert a.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosedError):
        a.send_message(sid, b"late")
    with pytest.raises(ConnectionClosedError):
        a.send_messages(sid, [b"late", b"later"])
    with pytest.raises(ConnectionClosedError):
        a.end_stream(sid)
    a.reset_stream(sid, ErrorCode.CANCEL)
    assert not a.release(sid, 0, 0, 0.0)
    a.handle_timeout(1000.0)
    assert a.data_to_send() == b""
