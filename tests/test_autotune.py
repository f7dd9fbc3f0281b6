"""Auto-tuned credit, consumer feedback and the memory budget (spec §8.9, §8.10).

Everything here is deterministic: time is the ``now`` passed to the core, never a clock.
The property tests drive ``WindowTuner``, ``MemoryBudget`` and two ``Connection`` peers with
random programs and check the invariants the spec promises in every state: the window
never drops below its floor, limits never go down (nothing is revoked, spec §8.2), the
minimum-progress guarantee holds (spec §8.5 G1/G2), and a budget's committed credit never
exceeds its capacity (spec §8.9 B1-B5). The scenario tests run a simulated link
(``tests/linksim.py``) and check that the windows do what §8.9 says they are for.
"""

from __future__ import annotations

import math

import pytest
from helpers import pump
from hypothesis import given, settings
from hypothesis import strategies as st
from linksim import LinkSim

from flowproto import (
    AutoTune,
    Connection,
    CreditFrame,
    ErrorCode,
    FrameDecoder,
    GoAwayFrame,
    MemoryBudget,
    MessagesReceived,
    PongReceived,
    ReceiveWindow,
    Role,
    RttEstimator,
    Settings,
    WindowReason,
    WindowTuner,
)
from flowproto._autotune import FLOOR_MESSAGES, tuned_floor
from flowproto._connection import BUDGET_RETRY_AFTER_MS

PROPERTY = settings(max_examples=200, deadline=None)
KIB = 1024
M = 16 * KIB  # max_message_bytes in these tests
SMALL_START = Settings(
    stream_bytes=64 * KIB, stream_messages=4096, connection_bytes=64 * KIB, max_message_bytes=M
)


def frames(wire: bytes) -> list[object]:
    return list(FrameDecoder(max_frame_bytes=1 << 24).feed(wire))


# --- units ------------------------------------------------------------------------------------


def test_the_floor_holds_two_largest_messages_and_a_real_threshold() -> None:
    """spec §8.9 rule 5: F = max(2M, M + 2048); its §8.6 threshold is at least 1024 bytes."""
    for m in (0, 1, 100, 1024, 2048, 65536, 1 << 20):
        floor = tuned_floor(m)
        assert floor >= 2 * m and floor >= m + 2048
        window = ReceiveWindow(floor, FLOOR_MESSAGES, m)
        assert window.threshold_bytes >= 1024


def test_autotune_settings_are_checked() -> None:
    AutoTune().validate()
    for bad in (
        AutoTune(latency_target=-1),
        AutoTune(rate_time_constant=0),
        AutoTune(rtt_probe_interval=0),
        AutoTune(max_window_messages=1),
        AutoTune(min_epoch=math.nan),
    ):
        with pytest.raises(ValueError, match=r"spec §8\.9"):
            bad.validate()


def test_the_rtt_estimator_keeps_the_least_sample() -> None:
    rtt = RttEstimator()
    for sample in (0.1, 0.05, 0.3):
        rtt.add(sample)
    assert (rtt.latest, rtt.minimum, rtt.samples) == (0.3, 0.05, 3)
    assert rtt.smoothed is not None and 0.05 < rtt.smoothed < 0.3


def test_a_tuner_retunes_only_at_the_end_of_an_epoch() -> None:
    """spec §8.9 rule 1: the first release starts an epoch; it ends after
    max(min_epoch, rtt), with the rtt known when it began."""
    rw = ReceiveWindow(1 << 20, 4096, M)
    tuner = WindowTuner(AutoTune(), M)
    rw.receive(100 * KIB, 100, "s")
    rw.consume(KIB, 1)
    assert not tuner.on_release(rw, KIB, 1, now=10.0, rtt=0.3)  # starts the epoch
    rw.consume(KIB, 1)
    assert not tuner.on_release(rw, KIB, 1, now=10.01, rtt=0.3)  # too early
    assert not tuner.rated
    rw.consume(KIB, 1)
    tuner.on_release(rw, KIB, 1, now=10.2, rtt=0.3)  # past min_epoch, not past the rtt
    assert not tuner.rated
    rw.consume(KIB, 1)
    assert tuner.on_release(rw, KIB, 1, now=10.4, rtt=0.3)
    assert tuner.rated
    assert tuner.rate_messages == pytest.approx(3 / 0.4)
    # A consumer of 10 msg/s with 96 messages waiting: shrink toward rate x horizon.
    assert tuner.reason is WindowReason.LATENCY
    assert rw.window_messages < 4096 and rw.window_bytes < 1 << 20


def test_budget_shares_are_max_min_fair_above_the_floors() -> None:
    """spec §8.9 B3: floors first, then water-filling over what each member wants."""
    budget = MemoryBudget(1000)
    small, mid, big = (ReceiveWindow(10, 1, 0) for _ in range(3))
    budget.join(small, 10, 50)
    budget.join(mid, 10, 400)
    budget.join(big, 10, 10_000)
    assert budget.committed == 30
    assert budget.share(small) == 50  # wants less than an equal part: gets what it wants
    assert budget.share(mid) == 400
    assert budget.share(big) == 1000 - 50 - 400
    budget.set_demand(small, 10)
    assert budget.share(small) == 10 and budget.share(big) == 590
    budget.leave(mid)
    assert budget.members == 2 and budget.share(big) == 990
    budget.leave(mid)  # twice: nothing
    assert budget.committed == 20


def test_budget_admission_refuses_when_a_floor_does_not_fit() -> None:
    """spec §8.9 B2: a newcomer starts small (free / 16, at least its floor), or is refused
    when the floor does not fit."""
    budget = MemoryBudget(1600 * KIB)
    assert budget.initial_window(1 << 30, 10 * KIB) == 100 * KIB  # free / 16
    assert budget.initial_window(40 * KIB, 10 * KIB) == 40 * KIB  # what it asked for
    first = ReceiveWindow(100 * KIB, 1, 0)
    budget.join(first, 10 * KIB, 100 * KIB)
    assert budget.initial_window(1 << 30, 10 * KIB) == 1500 * KIB // 16
    assert budget.initial_window(4 * KIB, 10 * KIB) == 10 * KIB  # never below the floor
    budget.join(ReceiveWindow(1495 * KIB, 1, 0), 10 * KIB, 1495 * KIB)
    assert budget.free == 5 * KIB
    assert budget.initial_window(1 << 30, 10 * KIB) is None
    assert budget.refused == 1


def test_a_budget_cuts_a_raise_but_never_below_the_floor() -> None:
    """spec §8.9 B4/B5: a raise is cut to what is free; the floor is granted regardless."""
    budget = MemoryBudget(100 * KIB)
    other = ReceiveWindow(30 * KIB, 1, M)
    budget.join(other, tuned_floor(M), 30 * KIB)
    rw = ReceiveWindow(70 * KIB, 1000, M)
    budget.join(rw, tuned_floor(M), 1 << 30)
    rw.set_window(100 * KIB, 1000)  # its window, set before the other member joined
    rw.receive(70 * KIB, 70, "s")
    rw.consume(60 * KIB, 60)
    assert budget.committed == 40 * KIB
    assert rw.update() == (130 * KIB, 1060)  # wanted 160 KiB; 60 KiB were free
    assert budget.committed == budget.capacity == 100 * KIB
    rw.receive(60 * KIB, 60, "s")
    rw.consume(rw.held_bytes, rw.held_messages)  # everything consumed
    rw.update()
    assert rw.advertised_bytes >= rw.consumed_bytes + M  # spec §8.5 G1
    assert budget.committed <= budget.capacity
    assert budget.peak == budget.capacity


# --- properties of the tuner ----------------------------------------------------------------

tuner_ops = st.lists(
    st.tuples(
        st.sampled_from(["receive", "consume", "consume_all", "blocked"]),
        st.integers(min_value=0, max_value=200 * KIB),  # bytes
        st.integers(min_value=0, max_value=200),  # messages
        st.floats(min_value=0.0, max_value=0.3),  # seconds that pass
        st.sampled_from([0.0, 0.0005, 0.02, 0.1, 0.3]),  # the least rtt
    ),
    max_size=80,
)


@PROPERTY
@given(
    start=st.tuples(
        st.integers(min_value=M, max_value=1 << 20), st.integers(min_value=1, max_value=4096)
    ),
    latency=st.sampled_from([0.0, 0.01, 0.1, 1.0]),
    cap=st.tuples(
        st.integers(min_value=1, max_value=4 << 20), st.integers(min_value=2, max_value=5000)
    ),
    ops=tuner_ops,
)
def test_the_tuner_keeps_its_bounds_revokes_nothing_and_keeps_min_progress(
    start: tuple[int, int],
    latency: float,
    cap: tuple[int, int],
    ops: list[tuple[str, int, int, float, float]],
) -> None:
    """spec §8.9 rules 5 and 7, §8.2, §8.5: in every state of the tuner.

    After each retune the window is within its floor and cap (the cap never below the
    floor); limits only rise; and since the thresholds follow the window, the limits
    stay at least one largest message and one message ahead of consumption at all times.
    """
    config = AutoTune(latency_target=latency, max_window_bytes=cap[0], max_window_messages=cap[1])
    rw = ReceiveWindow(start[0], start[1], M)
    tuner = WindowTuner(config, M)
    now = 0.0
    advertised = (rw.advertised_bytes, rw.advertised_messages)
    for op, nbytes, nmessages, elapsed, rtt in ops:
        now += elapsed
        if op == "receive":
            nbytes = min(nbytes, rw.advertised_bytes - rw.received_bytes)
            nmessages = min(nmessages, rw.advertised_messages - rw.received_messages)
            rw.receive(nbytes, nmessages, "stream 1")
            continue
        if op == "blocked":
            tuner.blocked = True
            continue
        if op == "consume":
            nbytes, nmessages = min(nbytes, rw.held_bytes), min(nmessages, rw.held_messages)
            rw.consume(nbytes, nmessages)
        else:
            nmessages = rw.held_messages
            nbytes = rw.consume_all()
        changed = tuner.on_release(rw, nbytes, nmessages, now, rtt)
        rw.update()
        if changed or tuner.changes:
            low = tuned_floor(M)
            assert min(low, max(cap[0], low)) <= rw.window_bytes <= max(cap[0], low)
            assert FLOOR_MESSAGES <= rw.window_messages <= max(cap[1], FLOOR_MESSAGES)
        assert rw.advertised_bytes >= advertised[0]
        assert rw.advertised_messages >= advertised[1]
        advertised = (rw.advertised_bytes, rw.advertised_messages)
        assert rw.advertised_bytes >= rw.consumed_bytes + M  # spec §8.5, stronger form
        assert rw.advertised_messages >= rw.consumed_messages + 1


# --- properties of the budget ---------------------------------------------------------------

budget_ops = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "receive", "consume", "retune", "update"]),
        st.integers(min_value=0, max_value=7),  # which member
        st.integers(min_value=0, max_value=300 * KIB),
        st.integers(min_value=0, max_value=1 << 21),  # a demand
    ),
    max_size=120,
)


@PROPERTY
@given(capacity=st.integers(min_value=2 * KIB, max_value=2 << 20), ops=budget_ops)
def test_a_memory_budget_is_never_exceeded(
    capacity: int, ops: list[tuple[str, int, int, int]]
) -> None:
    """spec §8.9 B1-B5: committed == sum of (limit - consumed), and never above capacity.

    Members are admitted only as B2 allows; each retune sets a window from the member's
    fair share (rule 8); raises go through the budget (B4). The floor of spec §8.5 is
    kept for every member all along.
    """
    m = KIB
    floor = tuned_floor(m)
    budget = MemoryBudget(capacity)
    members: dict[int, ReceiveWindow] = {}
    for op, index, amount, demand in ops:
        rw = members.get(index)
        if op == "join" and rw is None:
            start = budget.initial_window(demand or 1, floor)
            if start is None:
                continue
            rw = members[index] = ReceiveWindow(start, 1 << 20, m)
            budget.join(rw, floor, demand)
        elif rw is None:
            continue
        elif op == "leave":
            budget.leave(rw)
            del members[index]
        elif op == "receive":
            rw.receive(min(amount, rw.advertised_bytes - rw.received_bytes), 0, "c")
        elif op == "consume":
            rw.consume(min(amount, rw.held_bytes), 0)
            rw.update()
        elif op == "retune":
            budget.set_demand(rw, max(floor, demand))
            rw.set_window(max(floor, min(demand, budget.share(rw))), rw.window_messages)
        else:
            rw.update()
        assert budget.committed == sum(
            r.advertised_bytes - r.consumed_bytes for r in members.values()
        )
        assert budget.committed <= capacity
        assert budget.peak <= capacity
        for r in members.values():
            assert r.advertised_bytes >= r.consumed_bytes + m  # spec §8.5 G2


# --- two connections, random programs -------------------------------------------------------

conn_ops = st.lists(
    st.tuples(
        st.sampled_from(["send", "release", "release_all", "tick", "ping"]),
        st.integers(min_value=0, max_value=40),
        st.integers(min_value=1, max_value=M),
        st.floats(min_value=0.0, max_value=0.2),
    ),
    max_size=60,
)


@PROPERTY
@given(ops=conn_ops, budget=st.booleans())
def test_tuned_connections_revoke_nothing_and_always_leave_room_for_a_message(
    ops: list[tuple[str, int, int, float]], budget: bool
) -> None:
    """spec §8.2, §8.5, §8.9: the sender's limits never go down; the windows keep the floor;
    once everything sent was consumed the sender can send one more largest message."""
    acceptor_settings = Settings(
        stream_bytes=64 * KIB, stream_messages=64, connection_bytes=64 * KIB, max_message_bytes=M
    )
    shared = MemoryBudget(256 * KIB) if budget else None
    a = Connection(Role.INITIATOR, Settings(keepalive_ms=0))
    b = Connection(
        Role.ACCEPTOR, acceptor_settings, autotune=AutoTune(min_epoch=0.01), budget=shared
    )
    pump(a, b)
    sid = a.open_stream()
    now = 0.0
    held: list[int] = []
    seen = (0, 0, 0)
    floor = tuned_floor(M)
    for op, count, size, elapsed in ops:
        now += elapsed
        if op == "send":
            a.send_messages(sid, [bytes(size)] * count)
        elif op in ("release", "release_all") and held:
            n = len(held) if op == "release_all" else min(count, len(held))
            b.release(sid, sum(held[:n]), n, now=now)
            del held[:n]
        elif op == "tick":
            b.handle_timeout(now)
            a.handle_timeout(now)
        elif op == "ping":
            b.ping(now)
        _, events_b = pump(a, b)
        for event in events_b:
            if isinstance(event, MessagesReceived):
                held.extend(len(m) for m in event.messages)
        credit = a._streams[sid].send if sid in a._streams else None
        if credit is not None:
            assert credit.limit_messages is not None
            current = (credit.limit_bytes, credit.limit_messages, a._conn_send.limit_bytes)
            assert all(x >= y for x, y in zip(current, seen, strict=True))  # never revoked
            seen = current
        info = b.window_info(sid)
        if info is not None and info.changes:
            assert info.window_bytes >= floor and info.window_messages >= FLOOR_MESSAGES
        if shared is not None:
            assert shared.committed <= shared.capacity
    b.release(sid, sum(held), len(held), now=now + 1)
    pump(a, b)
    bytes_left, messages_left = a.send_capacity(sid)
    assert bytes_left >= M and messages_left >= 1  # spec §8.5 G1, G2 via §9.1


# --- the core's RTT, probes and feedback ----------------------------------------------------


def test_ping_measures_the_round_trip_at_the_receive_data_that_brings_the_pong() -> None:
    """One round-trip estimator (issue 10): the core times each PONG on arrival, puts the
    sample in PongReceived and in ``rtt`` (spec §8.9)."""
    a = Connection(Role.INITIATOR, Settings(keepalive_ms=0))
    b = Connection(Role.ACCEPTOR, Settings(keepalive_ms=0))
    pump(a, b)
    ping_id = a.ping(5.0)
    b.receive_data(a.data_to_send(), 5.1)
    assert a.rtt.samples == 0
    events = a.receive_data(b.data_to_send(), 5.25)
    pongs = [e for e in events if isinstance(e, PongReceived)]
    assert [p.ping_id for p in pongs] == [ping_id]
    assert pongs[0].rtt == pytest.approx(0.25)
    assert a.rtt.samples == 1
    assert a.rtt.latest == pytest.approx(0.25) and a.rtt.minimum == pytest.approx(0.25)


def consuming_pair() -> tuple[Connection, Connection]:
    """A plain initiator and a tuned acceptor that has consumed one message on stream 1."""
    a = Connection(Role.INITIATOR, Settings(keepalive_ms=0))
    b = Connection(Role.ACCEPTOR, Settings(keepalive_ms=0), autotune=AutoTune())
    pump(a, b)
    assert b.next_deadline() is None  # no stream: no probe
    sid = a.open_stream()
    a.send_message(sid, b"m")
    pump(a, b)
    assert b.next_deadline() is None  # nothing consumed yet: no probe
    b.release(sid, 1, 1, now=99.0)
    return a, b


def test_an_autotuned_connection_probes_the_round_trip_while_streams_are_open() -> None:
    """spec §8.9: a PING once the application consumes, then every rtt_probe_interval."""
    a, b = consuming_pair()
    assert b.next_deadline() == 0.0
    b.handle_timeout(100.0)
    wire = b.data_to_send()
    assert [type(f).__name__ for f in frames(wire)] == ["PingFrame"]
    assert b.next_deadline() is None  # one probe at a time
    a.receive_data(wire, 100.2)
    pump(a, b, now=100.5)  # the PONG arrives at 100.5: timed on arrival
    b.handle_timeout(100.5)  # and the next probe is scheduled
    assert b.rtt.latest == pytest.approx(0.5)
    assert b.next_deadline() == pytest.approx(101.0)


def test_probes_repeat_and_feed_the_least_rtt() -> None:
    a, b = consuming_pair()
    for start, rtt in ((10.0, 0.2), (11.0, 0.05), (12.0, 0.1)):
        b.handle_timeout(start)
        pump(a, b, now=start + rtt)
        b.handle_timeout(start + rtt)
        assert b.next_deadline() == pytest.approx(start + 1.0)
    assert b.rtt.samples == 3
    assert b.rtt.minimum == pytest.approx(0.05)
    assert b.rtt.latest == pytest.approx(0.1)


def test_feedback_rides_on_the_credit_of_a_tuned_receiver_and_is_recorded() -> None:
    """spec §8.10: rate and depth in stream CREDIT once a rate is measured; never alone."""
    a = Connection(Role.INITIATOR, Settings(keepalive_ms=0))
    small = Settings(stream_bytes=64 * KIB, stream_messages=8, max_message_bytes=M)
    b = Connection(Role.ACCEPTOR, small, autotune=AutoTune(latency_target=1.0))
    pump(a, b)
    sid = a.open_stream()
    assert a.send_messages(sid, [b"x" * 100] * 8) == 8
    pump(a, b)
    credits: list[CreditFrame] = []
    for i in range(8):
        b.release(sid, 100, 1, now=float(i))  # one message a second
        credits += [f for f in frames(b.data_to_send()) if isinstance(f, CreditFrame)]
    stream_credits = [c for c in credits if c.stream_id == sid]
    assert stream_credits, "a window of 8 messages is refilled every 4"
    last = stream_credits[-1]
    assert last.consumed is not None
    assert last.rate == 1 and last.depth == 8 - last.consumed
    a.receive_data(last.encode(), 0.0)
    assert a.peer_feedback(sid) == (1, last.depth)
    assert all(c.rate is None and c.depth is None for c in credits if c.stream_id == 0)


def test_a_static_receiver_sends_no_feedback_and_keeps_its_windows() -> None:
    """spec §8.6, §13.3: without auto-tuning nothing changes; the vectors rely on it."""
    a = Connection(Role.INITIATOR, Settings(keepalive_ms=0))
    small = Settings(stream_bytes=64 * KIB, stream_messages=8, max_message_bytes=M)
    b = Connection(Role.ACCEPTOR, small)
    pump(a, b)
    sid = a.open_stream()
    a.send_messages(sid, [b"x" * 100] * 8)
    pump(a, b)
    for i in range(8):
        b.release(sid, 100, 1, now=float(i))
    for f in frames(b.data_to_send()):
        assert not isinstance(f, CreditFrame) or (f.rate is None and f.depth is None)
    info = b.window_info(sid)
    assert info is not None
    assert (info.window_bytes, info.window_messages, info.reason, info.changes) == (
        64 * KIB,
        8,
        WindowReason.STATIC,
        0,
    )


def test_a_connection_the_budget_cannot_admit_says_goaway_overloaded() -> None:
    """spec §8.9 B2, §10.1 (1.1): preface, HELLO, then GOAWAY(OVERLOADED, last_stream 0,
    retry_after_ms): nothing was processed and a later try may fit."""
    budget = MemoryBudget(3 * M)
    first = Connection(Role.ACCEPTOR, Settings(max_message_bytes=M), budget=budget)
    assert first.local_settings.connection_bytes == tuned_floor(M)  # free / 2, at least F
    refused = Connection(Role.ACCEPTOR, Settings(max_message_bytes=M), budget=budget)
    wire = refused.data_to_send()
    goaway = [f for f in frames(wire[10:]) if isinstance(f, GoAwayFrame)]
    assert len(goaway) == 1
    assert goaway[0].code == ErrorCode.OVERLOADED and goaway[0].last_stream == 0
    assert goaway[0].retry_after_ms == BUDGET_RETRY_AFTER_MS
    assert budget.members == 1 and budget.refused == 1
    first.close(ErrorCode.INTERNAL_ERROR)
    assert first.next_deadline() is None
    assert budget.members == 0 and budget.committed == 0  # left on its own once closed


# --- scenarios on a simulated link ----------------------------------------------------------


@pytest.mark.parametrize("rtt", [0.02, 0.1])
def test_a_window_grows_to_fill_a_long_link(rtt: float) -> None:
    """spec §8.9 rule 4: from 64 KiB, credit-limited on a 20 MB/s link, the window grows
    until the link is full; a static 64 KiB window stays near window / RTT."""
    link = 20e6
    tuned = LinkSim(SMALL_START, delay=rtt / 2, rate=link, size=16 * KIB)
    tuned.run(4.0)
    assert tuned.throughput(2.5, 4.0) >= 0.9 * link
    assert any(s.reason == "grow" for s in tuned.samples)
    static = LinkSim(SMALL_START, autotune=None, delay=rtt / 2, rate=link, size=16 * KIB)
    static.run(2.0)
    assert static.throughput(1.0, 2.0) <= 64 * KIB / rtt


def test_a_slow_consumer_gets_its_rate_times_the_latency_target() -> None:
    """spec §8.9 rule 3: a consumer of 2000 msg/s with a 100 ms target gets a window near
    2000 x (rtt + 0.1 s) messages; queueing stays near 100 ms and throughput at its rate.
    A static 4 MiB window lets seconds of messages queue."""
    tuned = LinkSim(SMALL_START, consumer=lambda now: 2000.0)
    tuned.run(6.0)
    late = [s for s in tuned.samples if s.time >= 3.0]
    assert all(150 <= s.window_messages <= 260 for s in late), [s.window_messages for s in late]
    assert all(s.reason == "latency" for s in late)
    waits = sorted(tuned.latencies[len(tuned.latencies) // 2 :])
    assert waits[int(0.99 * len(waits))] <= 0.15
    assert tuned.consumed / 6.0 >= 0.95 * 2000
    static = LinkSim(
        Settings(stream_bytes=4 << 20, stream_messages=4096, max_message_bytes=M),
        autotune=None,
        consumer=lambda now: 2000.0,
    )
    static.run(4.0)
    assert max(static.latencies) > 1.0


def test_the_window_follows_a_consumer_that_slows_down_tenfold() -> None:
    """spec §8.9 rules 2, 3, 6: from 5000 to 500 msg/s, the window follows within 3 s."""
    sim = LinkSim(SMALL_START, consumer=lambda now: 5000.0 if now < 5 else 500.0)
    sim.run(9.0)
    before = [s.window_messages for s in sim.samples if 3.5 <= s.time < 5]
    after = [s.window_messages for s in sim.samples if s.time >= 8]
    assert min(before) >= 400  # about 5000 x 0.1
    assert max(after) <= 100  # about 500 x 0.1, well within 3 s
    assert max(after) < min(before) / 4


def test_a_stalled_consumer_holds_no_more_than_what_was_granted() -> None:
    """spec §8.9 rule 7: when the consumer stops, nothing more is granted; limits stay."""

    def consumer(now: float) -> float:
        return 2000.0 if now < 2 or now >= 4 else 0.0

    sim = LinkSim(SMALL_START, consumer=consumer)
    granted: list[int] = []

    def check(s: LinkSim) -> None:
        if s.stream_id is not None and 2.5 <= s.now < 4:
            granted.append(s.receiver._streams[s.stream_id].recv.advertised_bytes)

    sim.run(6.0, check)
    assert len(set(granted)) == 1  # frozen while the consumer stalled
    assert sim.consumed >= 0.9 * 2000 * 4
