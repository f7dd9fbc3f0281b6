"""Sessions that outlive their transport (spec §15), on two sans-IO connections.

The model: an initiator A and an acceptor B with a session, several streams sending
numbered messages both ways, consumers releasing at random, and a wire that can be cut
at any byte in either direction: what was in flight past the cut is lost. After a cut A
reconnects, a fresh acceptor connection sees the resuming HELLO, and B adopts its
transport. Whatever the cuts, every message is delivered exactly once and in order, and
what a sender retains never exceeds the window its peer granted (spec §15.5).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from helpers import pump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowproto import (
    Connection,
    DataFrame,
    ErrorCode,
    Event,
    FrameDecoder,
    GoAwayReceived,
    HelloFrame,
    LocalProtocolError,
    MessagesReceived,
    PingFrame,
    RemoteProtocolError,
    ResumeFrame,
    ResumeRequested,
    Role,
    SessionFrame,
    SessionGranted,
    SessionResumed,
    SessionStore,
    Settings,
    StreamOpened,
    StreamReset,
    StreamStarted,
    StreamState,
)

# Small windows, so credit runs out and retention is bounded by something that matters;
# messages up to 40000 bytes, so some are fragmented (max_frame_bytes is 16384).
SMALL = Settings(
    stream_bytes=80_000,
    stream_messages=6,
    connection_bytes=200_000,
    max_frame_bytes=16_384,
    max_message_bytes=40_000,
    keepalive_ms=0,
)


def payload(sid: int, seq: int, size: int) -> bytes:
    head = b"%d:%d:" % (sid, seq)
    return (head + bytes([seq % 251]) * size)[: max(size, len(head))]


@dataclass
class Side:
    """One endpoint's application: what it wants to send, and what it has received."""

    conn: Connection
    pending: dict[int, list[bytes]] = field(default_factory=dict)  # not yet accepted by the core
    sent: dict[int, list[bytes]] = field(default_factory=dict)  # accepted, in order
    inbox: dict[int, list[bytes]] = field(default_factory=dict)  # received, not consumed
    delivered: dict[int, list[bytes]] = field(default_factory=dict)  # consumed, in order
    resets: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)

    def take(self, events: list[Event]) -> None:
        self.events += events
        for event in events:
            if isinstance(event, MessagesReceived):
                self.inbox.setdefault(event.stream_id, []).extend(event.messages)
            elif isinstance(event, StreamReset):
                self.resets.add(event.stream_id)
                self.inbox.pop(event.stream_id, None)
            elif isinstance(event, StreamOpened):
                self.inbox.setdefault(event.stream_id, [])

    def push(self) -> None:
        """Offer every pending message to the core, in order, as credit allows."""
        for sid, queue in self.pending.items():
            while queue and sid not in self.resets:
                if not self.conn.send_message(sid, queue[0]):
                    break
                self.sent.setdefault(sid, []).append(queue.pop(0))

    def consume(self, sid: int, count: int, now: float) -> None:
        inbox = self.inbox.get(sid, [])
        taken, inbox[:] = inbox[:count], inbox[count:]
        if taken and sid not in self.resets:
            self.delivered.setdefault(sid, []).extend(taken)
            self.conn.release(sid, sum(map(len, taken)), len(taken), now)


class Link:
    """A and B over a wire that can be cut at any byte (spec §15.4)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.a = Side(Connection(Role.INITIATOR, SMALL, session=True))
        self.b = Side(Connection(Role.ACCEPTOR, SMALL, session=True))
        self.fresh: Connection | None = None  # a new acceptor connection before adopting
        self.to_b = bytearray()
        self.to_a = bytearray()
        self.cuts = 0
        self.peak_check()

    # --- the wire ----------------------------------------------------------------------

    def collect(self) -> None:
        self.to_b += self.a.conn.data_to_send()
        self.to_a += self.b.conn.data_to_send() if self.fresh is None else b""
        self.a.push()
        self.b.push()
        self.to_b += self.a.conn.data_to_send()
        if self.fresh is None:
            self.to_a += self.b.conn.data_to_send()

    def deliver(self, to_b: int, to_a: int) -> None:
        """Deliver up to this many bytes each way."""
        self.now += 0.01
        self.collect()
        chunk, self.to_b[:] = bytes(self.to_b[:to_b]), self.to_b[to_b:]
        if chunk:
            self.feed_b(chunk)
        chunk, self.to_a[:] = bytes(self.to_a[:to_a]), self.to_a[to_a:]
        if chunk:
            self.a.take(self.a.conn.receive_data(chunk, self.now))
        self.collect()
        self.peak_check()

    def feed_b(self, chunk: bytes) -> None:
        if self.fresh is None:
            self.b.take(self.b.conn.receive_data(chunk, self.now))
            return
        events = self.fresh.receive_data(chunk, self.now)
        requested = [e for e in events if isinstance(e, ResumeRequested)]
        if requested:
            assert self.b.conn.accepts_token(requested[0].token)
            self.b.take(self.b.conn.adopt(self.fresh, self.now))
            self.fresh = None

    def cut(self, keep_b: int, keep_a: int) -> None:
        """Deliver a prefix of what is in flight each way, lose the rest, reconnect."""
        self.collect()
        self.deliver(min(keep_b, len(self.to_b)), min(keep_a, len(self.to_a)))
        self.to_b.clear()
        self.to_a.clear()
        assert self.a.conn.transport_lost()
        if self.fresh is None:
            assert self.b.conn.transport_lost()
        self.fresh = Connection(Role.ACCEPTOR, SMALL, session=True)
        self.a.conn.reconnect(self.now)
        self.cuts += 1

    def settle(self, rounds: int = 2000) -> None:
        """Deliver everything, both ways, until quiet."""
        for _ in range(rounds):
            self.collect()
            if not self.to_b and not self.to_a:
                return
            self.deliver(len(self.to_b), len(self.to_a))
        raise AssertionError("the link did not settle")

    # --- the invariant of spec §15.5 ---------------------------------------------------

    def peak_check(self) -> None:
        for side in (self.a, self.b):
            for sid in side.sent:
                messages, nbytes = side.conn.retained_on(sid)
                assert nbytes <= SMALL.stream_bytes, (sid, nbytes)
                assert messages <= SMALL.stream_messages, (sid, messages)


def establish(seed: int) -> Link:
    link = Link(seed)
    link.settle()
    assert link.a.conn.session_token is not None
    assert link.b.conn.session_token == link.a.conn.session_token
    return link


def open_streams(link: Link, a_streams: int, b_streams: int) -> list[int]:
    ids = [link.a.conn.open_stream() for _ in range(a_streams)]
    ids += [link.b.conn.open_stream() for _ in range(b_streams)]
    link.settle()
    return ids


def check_exactly_once(link: Link) -> None:
    for sender, receiver in ((link.a, link.b), (link.b, link.a)):
        for sid, sent in sender.sent.items():
            got = receiver.delivered.get(sid, [])
            if sid in sender.resets or sid in receiver.resets:
                assert got == sent[: len(got)], sid  # a prefix: nothing twice, none skipped
            else:
                assert got == sent, (sid, len(got), len(sent))


def drain(link: Link) -> None:
    """No more cuts: deliver and consume until every pending message is delivered."""
    for _ in range(500):
        link.settle()
        busy = False
        for side in (link.a, link.b):
            for sid in list(side.inbox):
                if side.inbox[sid]:
                    side.consume(sid, len(side.inbox[sid]), link.now)
                    busy = True
            if any(q for s, q in side.pending.items() if s not in side.resets):
                busy = True
        if not busy:
            link.settle()
            return
    raise AssertionError("messages left undelivered")


# --- the property -------------------------------------------------------------------------

SENDING = {StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE}

operation = st.one_of(
    st.tuples(st.just("send"), st.booleans(), st.integers(0, 7), st.integers(0, 40_000)),
    st.tuples(st.just("consume"), st.booleans(), st.integers(0, 7), st.integers(1, 4)),
    st.tuples(st.just("deliver"), st.integers(0, 70_000), st.just(0), st.integers(0, 70_000)),
    st.tuples(st.just("cut"), st.integers(0, 70_000), st.just(0), st.integers(0, 70_000)),
    st.tuples(st.just("open"), st.booleans(), st.just(0), st.just(0)),
    st.tuples(st.just("end"), st.booleans(), st.integers(0, 7), st.just(0)),
    st.tuples(st.just("reset"), st.booleans(), st.integers(0, 7), st.just(0)),
)


def apply(link: Link, streams: list[int], op: tuple[str, int, int, int], seq: int) -> None:
    """One step of the application or of the wire."""
    kind, x, index, n = op
    side = link.a if x else link.b
    sid = streams[index % len(streams)]
    if kind == "send":
        if (
            sid not in side.resets
            and sid not in side.ended
            and side.conn.stream_state(sid) in SENDING
        ):
            side.pending.setdefault(sid, []).append(payload(sid, seq, n))
            link.collect()
    elif kind == "consume":
        side.consume(sid, n, link.now)
    elif kind == "deliver":
        link.deliver(x, n)
    elif kind == "cut":
        link.cut(x, n)
    elif kind == "open":
        if side.conn.can_open_stream and not side.conn.suspended:
            streams.append(side.conn.open_stream())
    elif kind == "end":
        if (
            sid not in side.ended
            and sid not in side.resets
            and not side.pending.get(sid)
            and side.conn.stream_state(sid) in SENDING
        ):
            side.conn.end_stream(sid)
            side.ended.add(sid)
    elif sid not in side.resets and side.conn.stream_state(sid) in SENDING | {
        StreamState.HALF_CLOSED_LOCAL
    }:
        side.conn.reset_stream(sid, ErrorCode.CANCEL)
        side.resets.add(sid)
        side.inbox.pop(sid, None)
        side.pending.pop(sid, None)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    ops=st.lists(operation, min_size=10, max_size=120),
    seed=st.integers(0, 2**16),
)
def test_cuts_at_any_byte_lose_nothing_and_duplicate_nothing(
    ops: list[tuple[str, int, int, int]], seed: int
) -> None:
    """spec §15.8: several streams both ways, opened, ended and reset at random, and the
    transport cut at random byte offsets in either direction, resumed each time: every
    message arrives exactly once and in order (a prefix, on a reset stream), and no
    sender ever retains more than the window its peer granted (checked at every step)."""
    link = establish(seed)
    streams = open_streams(link, 2, 1)
    for seq, op in enumerate(ops):
        apply(link, streams, op, seq)
    drain(link)
    check_exactly_once(link)
    assert link.a.conn.resumable and link.b.conn.resumable


def test_a_close_is_confirmed_only_by_a_ping_after_its_end_stream_was_sent_again() -> None:
    """spec §15.7 (found by the property above): the acceptor's PING that retires a token
    goes out before reconciling resends an END_STREAM, so its PONG must not confirm the
    stream; the next cut would otherwise find the stream forgotten at one end only."""
    ops = [
        ("open", 0, 0, 0),
        ("end", 1, 0, 0),  # the initiator ends stream 1
        ("send", 0, 0, 0),
        ("send", 0, 0, 0),
        ("cut", 10, 0, 0),  # the acceptor gets the END_STREAM; its messages are lost
        ("end", 0, 0, 0),  # it ends its side while reconnecting: closed there
        ("deliver", 176, 0, 0),
        ("deliver", 0, 0, 454),
        ("cut", 197, 0, 0),
    ]
    link = establish(0)
    streams = open_streams(link, 2, 1)
    for seq, op in enumerate(ops):
        apply(link, streams, op, seq)
    drain(link)
    check_exactly_once(link)


def test_thousands_of_random_cuts_lose_nothing() -> None:
    """The same model, driven by a seeded generator over many long runs (several
    thousand cuts in all), so the search is not limited to what hypothesis shrinks."""
    rng = random.Random(14)
    cuts = retransmitted = 0
    kinds = (
        ["send"] * 6 + ["consume"] * 4 + ["deliver"] * 4 + ["cut"] * 2 + ["open", "end", "reset"]
    )
    for seed in range(300):
        link = establish(seed)
        streams = open_streams(link, 2, 1)
        for seq in range(rng.randint(20, 150)):
            kind = rng.choice(kinds)
            size = rng.choice([0, 10, 1000, rng.randint(0, 40_000)])
            big = rng.randint(0, 70_000)
            if kind in ("deliver", "cut"):
                op = (kind, big, 0, rng.randint(0, 70_000))
            else:
                op = (kind, rng.randint(0, 1), rng.randint(0, 7), size if kind == "send" else 4)
            apply(link, streams, op, seq)
        drain(link)
        check_exactly_once(link)
        cuts += link.cuts
        retransmitted += link.a.conn.session_counts[2] + link.b.conn.session_counts[2]
    assert cuts > 2000 and retransmitted > 500  # the runs did exercise resumption


# --- examples, each a rule of spec §15 ---------------------------------------------------------


def test_the_acceptor_grants_a_session_asked_for_in_the_initiators_hello() -> None:
    """spec §15.2: HELLO `session` 1 is answered by SESSION, the acceptor's first frame
    after it processed that HELLO; the initiator then holds the token."""
    a = Connection(Role.INITIATOR, session=True)
    b = Connection(Role.ACCEPTOR, session=True)
    (hello,) = FrameDecoder().feed(a.data_to_send()[10:])
    assert isinstance(hello, HelloFrame) and hello.session == 1
    b_start = b.data_to_send()  # b's preface and HELLO, sent before it heard from a
    granted = [e for e in b.receive_data(hello_wire(hello), 0.0) if isinstance(e, SessionGranted)]
    assert len(granted) == 1 and len(granted[0].token) == 16
    after_hello = b.data_to_send()
    (session,) = FrameDecoder(session=True).feed(after_hello)
    assert isinstance(session, SessionFrame) and session.token == granted[0].token
    a.receive_data(b_start + after_hello, 0.0)
    assert a.session_token == granted[0].token and a.resumable


def hello_wire(hello: HelloFrame) -> bytes:
    return b"\x89FLOW\r\n\x1a\x00\x01" + hello.encode()


def test_a_session_is_granted_and_both_ends_know_the_token() -> None:
    """spec §15.2, §15.3.1: the initiator learns the token the acceptor issued."""
    link = establish(1)
    assert link.a.conn.resumable and link.b.conn.resumable
    assert [e for e in link.a.events if isinstance(e, SessionGranted)]


def test_without_session_on_either_side_nothing_is_retained() -> None:
    """spec §15.2: an acceptor that does not offer sessions says so by its HELLO (no
    `session` 1): the initiator knows at once that it has none, and retains nothing."""
    a = Connection(Role.INITIATOR, SMALL, session=True)
    b = Connection(Role.ACCEPTOR, SMALL)  # sessions off
    pump(a, b)
    assert a.session_token is None and not a.resumable and not a.session_pending
    sid = a.open_stream()
    assert a.send_message(sid, b"x" * 100)
    pump(a, b)
    assert a.retained == (0, 0)
    assert not a.transport_lost()


def test_an_acceptor_offering_sessions_says_so_in_its_hello() -> None:
    """spec §15.2: `session` 1 in the acceptor's HELLO; its SESSION follows."""
    a = Connection(Role.INITIATOR, session=True)
    b = Connection(Role.ACCEPTOR, session=True)
    (hello,) = FrameDecoder().feed(b.data_to_send()[10:])
    assert isinstance(hello, HelloFrame) and hello.session == 1
    a.receive_data(hello_wire(hello), 0.0)
    assert a.session_pending  # offered; the SESSION is next


def test_a_plain_connection_ignores_session_frame_types() -> None:
    """spec §4.4, §15.3: SESSION and RESUME are unknown types off a session transport."""
    a = Connection(Role.INITIATOR)
    b = Connection(Role.ACCEPTOR)
    pump(a, b)
    wire = SessionFrame(b"t" * 16, 1000).encode() + ResumeFrame(1, (0, 0)).encode()
    assert b.receive_data(wire, 0.0) == []


def test_a_stale_token_is_refused_with_session_unknown_and_disturbs_nothing() -> None:
    """spec §15.6, §15.9: a guessed or spent token gets GOAWAY(SESSION_UNKNOWN)."""
    link = establish(2)
    sid = open_streams(link, 1, 0)[0]
    link.a.pending[sid] = [b"one", b"two"]
    link.settle()
    thief = Connection(Role.INITIATOR, SMALL, session=True)
    thief.transport_lost()  # no session: nothing to lose
    fresh = Connection(Role.ACCEPTOR, SMALL, session=True)
    guess = HelloFrame(SMALL, resume_token=b"\x00" * 16).encode()
    events = fresh.receive_data(b"\x89FLOW\r\n\x1a\x00\x01" + guess, 0.0)
    (requested,) = [e for e in events if isinstance(e, ResumeRequested)]
    assert not link.b.conn.accepts_token(requested.token)
    fresh.refuse_resume()
    out = fresh.data_to_send()
    goaway = [f for f in FrameDecoder().feed(out[10:]) if f.TYPE == 0x7]  # type: ignore[union-attr]
    assert goaway and goaway[0].code == ErrorCode.SESSION_UNKNOWN  # type: ignore[union-attr]
    # the session's own connection is undisturbed
    link.b.consume(sid, 2, link.now)
    link.settle()
    check_exactly_once(link)
    assert link.b.delivered[sid] == [b"one", b"two"]


def test_an_initiator_told_session_unknown_reports_what_was_delivered() -> None:
    """spec §15.6: SESSION_UNKNOWN fails every stream with the consumed count known."""
    link = establish(3)
    sid = open_streams(link, 1, 0)[0]
    link.a.pending[sid] = [b"a", b"b", b"c", b"d"]
    link.settle()
    link.b.consume(sid, 3, link.now)  # half the 6-message window: a CREDIT reports it
    link.settle()
    assert link.a.conn.peer_consumed(sid) == 3
    link.cut(0, 0)
    # the acceptor restarted: it knows no session
    stranger = Connection(Role.ACCEPTOR, SMALL, session=True)
    events = stranger.receive_data(link.a.conn.data_to_send(), link.now)
    assert any(isinstance(e, ResumeRequested) for e in events)
    stranger.refuse_resume()
    events_a = link.a.conn.receive_data(stranger.data_to_send(), link.now)
    (goaway,) = [e for e in events_a if isinstance(e, GoAwayReceived)]
    assert goaway.error_code == ErrorCode.SESSION_UNKNOWN
    (reset,) = [e for e in events_a if isinstance(e, StreamReset)]
    # Not §10.4's "not processed" (REFUSED_STREAM, 0) for last_stream 0: the session's
    # earlier transport delivered 3, and that is what the application is told.
    assert (reset.stream_id, reset.error_code, reset.consumed) == (
        sid,
        ErrorCode.SESSION_UNKNOWN,
        3,
    )


@pytest.mark.parametrize("with_message", [False, True], ids=["end_stream", "last-message"])
def test_the_confirming_ping_follows_the_frame_that_closes_the_stream(with_message: bool) -> None:
    """spec §15.7: a PING confirms a closed stream only if it was sent after the stream's
    last frame; a PONG of a PING sent ahead of the END_STREAM would let this side forget a
    stream whose END_STREAM the peer may never get (then spec §15.8 step 4 fails)."""
    link = establish(6)
    sid = open_streams(link, 1, 0)[0]
    link.a.conn.send_message(sid, b"last", end_stream=True)  # half-closed (local) at A
    link.settle()
    link.b.consume(sid, 1, link.now)
    link.collect()
    link.to_a.clear()  # B's CREDIT has gone; now B closes its end
    b = link.b.conn
    if with_message:
        assert b.send_message(sid, b"reply", end_stream=True)
    else:
        b.end_stream(sid)
    frames = FrameDecoder(SMALL.max_frame_bytes, session=True).feed(b.data_to_send())
    kinds = [
        "END" if isinstance(f, DataFrame) and f.end_stream else type(f).__name__ for f in frames
    ]
    assert "PingFrame" in kinds and "END" in kinds, kinds
    assert kinds.index("END") < kinds.index("PingFrame"), kinds


def test_a_resumption_retransmits_exactly_what_was_lost() -> None:
    """spec §15.8 step 3: the peer's position decides what is sent again."""
    link = establish(4)
    sid = open_streams(link, 1, 0)[0]
    link.a.pending[sid] = [payload(sid, i, 3000) for i in range(4)]
    link.collect()
    in_flight = len(link.to_b)
    link.cut(in_flight // 2, 0)  # about half of it arrived
    link.settle()
    resumed = [e for e in link.a.events if isinstance(e, SessionResumed)]
    assert len(resumed) == 1 and 0 < resumed[0].messages_retransmitted <= 4
    drain(link)
    check_exactly_once(link)
    assert link.a.conn.session_counts[:2] == (1, 1)


def test_a_message_cut_in_its_fragments_is_received_whole_once() -> None:
    """spec §15.4 step 2: a partial message is rolled back and sent again whole."""
    link = establish(5)
    sid = open_streams(link, 1, 0)[0]
    big = payload(sid, 1, 40_000)  # three fragments
    link.a.pending[sid] = [big]
    link.collect()
    link.cut(20_000, 0)  # the first fragment and part of the second
    drain(link)
    assert link.b.delivered[sid] == [big]


def test_end_stream_lost_in_the_cut_is_sent_again() -> None:
    """spec §15.8 step 3.4: END_STREAM the peer did not receive goes again."""
    link = establish(6)
    sid = open_streams(link, 1, 0)[0]
    assert link.a.conn.send_message(sid, b"last", end_stream=True)
    link.collect()
    link.cut(0, 0)
    drain(link)
    assert link.b.delivered[sid] == [b"last"]
    assert link.b.conn.stream_state(sid).value == "half-closed (remote)"


def test_a_stream_opened_during_the_cut_is_opened_by_the_exchange() -> None:
    """spec §15.8 steps 4 and 5: a stream the peer never saw starts from zero."""
    link = establish(7)
    link.cut(0, 0)
    sid = link.a.conn.open_stream() if link.a.conn.can_open_stream else None
    assert sid is None  # not while reconnecting: the acceptor's HELLO has not come
    link.settle()
    sid = link.a.conn.open_stream()
    link.a.pending[sid] = [b"x" * 10]
    link.collect()
    link.cut(0, 0)  # the stream's opening CREDIT and its message are lost
    drain(link)
    assert link.b.delivered[sid] == [b"x" * 10]


def test_retained_messages_go_once_the_peer_reports_them_consumed() -> None:
    """spec §15.5: retention ends at the peer's reported consumption."""
    link = establish(8)
    sid = open_streams(link, 1, 0)[0]
    link.a.pending[sid] = [b"m" * 1000 for _ in range(4)]
    link.settle()
    assert link.a.conn.retained_on(sid) == (4, 4000)
    link.b.consume(sid, 4, link.now)
    link.settle()
    assert link.a.conn.retained_on(sid)[0] < 4  # a CREDIT carried `consumed`
    assert link.a.conn.retained_peak_bytes == 4000


def test_a_closed_stream_is_forgotten_once_a_pong_confirms_it() -> None:
    """spec §15.7: records of closed streams stay until the PONG of a later PING."""
    link = establish(9)
    sid = open_streams(link, 1, 0)[0]
    link.a.conn.end_stream(sid)
    link.b.conn.end_stream(sid)
    link.settle()
    assert sid not in link.a.conn.stream_ids
    assert sid not in link.b.conn.stream_ids


def test_a_stream_one_side_confirmed_and_forgot_is_forgotten_at_both_without_a_glitch() -> None:
    """spec §15.7, §15.8 steps 4 and 5, §10.7.1: B forgets the closed stream once A's PONG
    confirms it; A's own confirmation (B's PONG) is lost with the transport, so A lists the
    stream in its exchange. B ignores that RESUME, never charging it as a glitch (it is
    legal), and A forgets the stream by step 4."""
    link = establish(13)
    sid = open_streams(link, 1, 0)[0]
    a, b = link.a.conn, link.b.conn
    a.send_message(sid, b"last", end_stream=True)
    link.settle()
    link.b.consume(sid, 1, link.now)
    b.end_stream(sid)  # B's END_STREAM, then its confirming PING
    link.deliver(len(link.to_b), 0)
    link.deliver(0, len(link.to_a))  # A closes, answers the PING, sends its own PING
    link.deliver(len(link.to_b), 0)  # B's PING answered: B forgets the stream
    assert sid not in b.stream_ids and sid in a.stream_ids
    glitches = b.glitches
    link.cut(0, 0)  # B's PONG of A's PING is lost
    sent_by_a = bytearray()
    for _ in range(100):  # settle, keeping what A sends on the new transport
        link.collect()
        if not link.to_b and not link.to_a:
            break
        sent_by_a += link.to_b
        link.deliver(len(link.to_b), len(link.to_a))
    assert sid not in a.stream_ids and sid not in b.stream_ids
    assert b.glitches == glitches
    assert a.session_counts[1] == 1  # resumed once
    # A sends no confirming PING for the stream it forgot by step 4 (nothing to confirm)
    frames = FrameDecoder(SMALL.max_frame_bytes, session=True).feed(bytes(sent_by_a[10:]))
    assert not [f for f in frames if isinstance(f, PingFrame)], frames


def test_reconnect_is_refused_once_a_close_ended_the_session() -> None:
    """spec §15.4: a GOAWAY (here our own close() between transports) ends the session;
    reconnect() then refuses instead of starting an exchange the core would fail."""
    link = establish(14)
    a = link.a.conn
    assert a.transport_lost()
    a.close()
    assert not a.resumable
    with pytest.raises(LocalProtocolError, match="still resumable"):
        a.reconnect(link.now)


def test_a_goaway_ends_the_session() -> None:
    """spec §15.4: after a GOAWAY the transport's end is handled as without a session."""
    link = establish(10)
    link.a.conn.close()
    link.settle()
    assert not link.a.conn.resumable and not link.b.conn.resumable
    assert not link.a.conn.transport_lost()


def test_a_resume_frame_outside_an_exchange_is_a_protocol_error() -> None:
    """spec §15.6: RESUME only in an exchange."""
    link = establish(11)
    with pytest.raises(RemoteProtocolError) as info:
        link.b.conn.receive_data(ResumeFrame(0, (0, 0)).encode(), 0.0)
    assert info.value.error_code == ErrorCode.PROTOCOL_ERROR


def test_the_session_store_finds_a_session_by_token_only() -> None:
    """spec §15.9: sessions looked up by a hash of the token, compared in constant time."""
    link = establish(12)
    store: SessionStore[str] = SessionStore(max_sessions=1)
    token = link.b.conn.session_token
    assert token is not None
    assert store.add(link.b.conn, "b", token)
    assert store.find(token) == (link.b.conn, "b")
    assert store.find(b"\x00" * 16) is None
    other = establish(13)
    other_token = other.b.conn.session_token
    assert other_token is not None
    assert not store.add(other.b.conn, "other", other_token)  # full
    store.discard(link.b.conn)  # its connection ended: the session is forgotten
    assert len(store) == 0 and link.b.conn not in store
    assert store.add(other.b.conn, "other", other_token)  # room again
    assert store.find(token) is None


# --- cold resume (spec §15.10) --------------------------------------------------------------


def test_a_stream_opened_with_await_start_starts_where_the_receiver_says() -> None:
    """spec §15.10: the receiver vouches for a position; both ends count from there."""
    link = establish(20)
    a, b = link.a.conn, link.b.conn
    sid = a.open_stream(await_start=True)
    assert not a.send_message(sid, b"too early")  # nothing before the start
    link.collect()
    link.deliver(len(link.to_b), 0)
    opened = [e for e in link.b.events if isinstance(e, StreamOpened) and e.stream_id == sid]
    assert opened == [StreamOpened(sid, True)]
    b.start_stream(sid, 3, 300)  # it holds 3 messages, 300 bytes
    link.settle()
    assert [e for e in link.a.events if isinstance(e, StreamStarted)] == [
        StreamStarted(sid, 3, 300)
    ]
    assert a.peer_consumed(sid) == 3  # known delivered: what the receiver vouched for
    link.a.pending[sid] = [b"fourth", b"fifth"]
    link.b.inbox.setdefault(sid, [])
    drain(link)
    assert link.b.delivered[sid] == [b"fourth", b"fifth"]
    assert b.receive_capacity(sid)[0] > 0
    assert a.peer_consumed(sid) in (3, 5)


def test_a_start_from_the_beginning_is_a_credit() -> None:
    """spec §15.10: start_stream() with no position answers with CREDIT: (0, 0)."""
    link = establish(21)
    sid = link.a.conn.open_stream(await_start=True)
    link.settle()
    link.b.conn.start_stream(sid)
    link.settle()
    assert StreamStarted(sid, 0, 0) in link.a.events
    link.a.pending[sid] = [b"first"]
    drain(link)
    assert link.b.delivered[sid] == [b"first"]


def test_await_start_needs_a_session() -> None:
    """spec §15.10: without a session the peer may not understand the answer."""
    a = Connection(Role.INITIATOR)
    b = Connection(Role.ACCEPTOR)
    pump(a, b)
    with pytest.raises(LocalProtocolError):
        a.open_stream(await_start=True)


def test_a_start_lost_in_a_cut_comes_back_in_the_exchange() -> None:
    """spec §15.8, §15.10: the receiver's RESUME in the exchange carries its start."""
    link = establish(22)
    sid = link.a.conn.open_stream(await_start=True)
    link.settle()
    link.b.conn.start_stream(sid, 2, 20)
    link.cut(0, 0)  # the answer is lost
    link.settle()
    assert StreamStarted(sid, 2, 20) in link.a.events
    link.a.pending[sid] = [b"third"]
    drain(link)
    assert link.b.delivered[sid] == [b"third"]


def test_a_spent_token_resumes_nothing_once_the_new_one_is_known_to_have_arrived() -> None:
    """spec §15.6, §15.9: after a resumption the presented token stays valid only until
    the PONG of the acceptor's PING after its SESSION; then only the new one works."""
    link = establish(23)
    old = link.a.conn.session_token
    assert old is not None
    link.cut(0, 0)
    link.settle()
    new = link.a.conn.session_token
    assert new is not None and new != old
    assert link.b.conn.accepts_token(new)
    assert not link.b.conn.accepts_token(old)


def test_a_token_factory_chooses_the_tokens_an_acceptor_issues() -> None:
    """spec §15.3.1, §13.3: the tokens of the grant and of each resumption come from the
    acceptor's ``token_factory`` (the conversation vectors replay fixed tokens); without
    one they are 16 random bytes (spec §15.9)."""
    tokens = [bytes(range(16)), bytes(range(16, 48))]
    made = iter(tokens)
    a = Connection(Role.INITIATOR, SMALL, session=True)
    b = Connection(Role.ACCEPTOR, SMALL, session=True, token_factory=lambda: next(made))
    pump(a, b)
    assert a.session_token == b.session_token == tokens[0]
    assert a.transport_lost() and b.transport_lost()
    a.reconnect(0.0)
    fresh = Connection(Role.ACCEPTOR, SMALL, session=True)
    (requested,) = [
        e for e in fresh.receive_data(a.data_to_send(), 0.0) if isinstance(e, ResumeRequested)
    ]
    assert requested.token == tokens[0]
    b.adopt(fresh, 0.0)
    pump(a, b)
    assert a.session_token == b.session_token == tokens[1]
    randoms = [Connection(Role.ACCEPTOR, SMALL, session=True) for _ in range(2)]
    for acceptor in randoms:
        pump(Connection(Role.INITIATOR, SMALL, session=True), acceptor)
    first, second = (acceptor.session_token for acceptor in randoms)
    assert first is not None and len(first) == 16 and first != second


@pytest.mark.parametrize("bad", [b"short", bytes(65), bytearray(16)])
def test_a_token_factory_must_make_tokens_of_16_to_64_bytes(bad: bytes) -> None:
    """spec §15.3.1: a SESSION carries a bin of 16 to 64 bytes; we never send another."""
    a = Connection(Role.INITIATOR, SMALL, session=True)
    b = Connection(Role.ACCEPTOR, SMALL, session=True, token_factory=lambda: bad)
    with pytest.raises(LocalProtocolError, match="16 to 64"):
        b.receive_data(a.data_to_send(), 0.0)


def test_the_store_answers_an_address_past_its_failed_resumptions_without_a_lookup() -> None:
    """spec §15.9: MAX_FAILED_RESUMES per FAILED_RESUME_WINDOW per address; the count
    starts again after the window, and the addresses remembered are bounded."""
    from flowproto._session_store import (
        FAILED_RESUME_WINDOW,
        MAX_FAILED_RESUMES,
        MAX_FAILING_PEERS,
    )

    store: SessionStore[str] = SessionStore()
    for _ in range(MAX_FAILED_RESUMES - 1):
        store.failed("10.0.0.1", 0.0)
    assert not store.over_budget("10.0.0.1", 1.0)
    store.failed("10.0.0.1", 1.0)
    assert store.over_budget("10.0.0.1", 2.0)
    assert not store.over_budget("10.0.0.2", 2.0)  # per address
    assert not store.over_budget("10.0.0.1", FAILED_RESUME_WINDOW + 0.5)  # a new window
    for i in range(MAX_FAILING_PEERS + 10):
        store.failed(f"10.1.{i // 256}.{i % 256}", 3.0)
    assert len(store._failures) == MAX_FAILING_PEERS  # bounded: the oldest went first
