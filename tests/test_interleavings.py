"""Two sans-IO peers under random interleavings of sends, partial deliveries and consumption.

The main property (spec §8.3, §8.4, §9): whatever the order in which the applications
send, the transport moves bytes (any prefix, in chunks of any size) and the receiving
applications consume, no peer ever holds more than it advertised, no peer ever sees
the other break the spec, and once both applications keep consuming, every message
sent arrives exactly once, intact and in order, with no deadlock.

The second property: how the transport splits a byte stream never changes what a
receiver makes of it (spec §4.2, §7.1) — the same events (up to the batching of
messages) and the same bytes out.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from helpers import connected_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowproto import (
    PREFACE,
    BlockedFrame,
    Connection,
    ConnectionClosed,
    CreditFrame,
    CreditGranted,
    DataFrame,
    ErrorCode,
    Event,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    MessagesReceived,
    PeerBlocked,
    PingFrame,
    PongFrame,
    ResetFrame,
    Role,
    Settings,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    UnknownFrame,
)
from flowproto._state import SENDING_STATES

MAX_STREAMS_OPENED = 3  # by each side, on top of the one each opens at the start
DRAIN_ROUNDS = 500

# --- the two peers and their applications -------------------------------------------------


class Peer:
    """One Connection, its application's queues and inbox, and the bytes it has in flight."""

    def __init__(self, name: str, conn: Connection) -> None:
        self.name = name
        self.conn = conn
        self.other: Peer
        self.out = bytearray()  # sent by conn, not yet delivered to the other side
        self.queues: dict[int, list[bytes]] = defaultdict(list)  # not yet accepted by conn
        self.batch: dict[int, bool] = {}  # retry with send_messages (True) or send_message
        self.ending: set[int] = set()  # the application asked to end the stream
        self.ended: set[int] = set()  # END_STREAM queued by conn
        self.sent: dict[int, list[bytes]] = defaultdict(list)  # everything the app sent
        self.received: dict[int, list[bytes]] = defaultdict(list)  # everything delivered
        self.inbox: dict[int, list[bytes]] = defaultdict(list)  # delivered, not consumed
        self.peer_ended: set[int] = set()
        self.opened = 0
        self.seq = 0

    def flush(self) -> None:
        self.out += self.conn.data_to_send()

    def sendable(self) -> list[int]:
        """Streams the application may still send on, in id order."""
        ids = set(self.conn.stream_ids) | set(self.queues)
        return sorted(
            sid
            for sid in ids
            if self.conn.stream_state(sid) in SENDING_STATES and sid not in self.ending
        )

    def payload(self, sid: int, size: int) -> bytes:
        self.seq += 1
        return random.Random(f"{self.name}/{sid}/{self.seq}").randbytes(size)

    def send(self, sid: int, sizes: list[int], batch: bool) -> None:
        assert self.conn.peer_settings is not None
        peer_max = self.conn.peer_settings.max_message_bytes
        for size in sizes:
            message = self.payload(sid, peer_max if size < 0 else size % (peer_max + 1))
            self.queues[sid].append(message)
            self.sent[sid].append(message)
        self.batch[sid] = batch
        self.pump_queue(sid)

    def pump_queue(self, sid: int) -> None:
        """Hand the stream's queue to conn as far as credit allows (spec §8.3)."""
        queue = self.queues[sid]
        end = sid in self.ending and sid not in self.ended
        if queue and self.batch.get(sid, False):
            n = self.conn.send_messages(sid, queue, end_stream=end)
            del queue[:n]
            if end and not queue:
                self.ended.add(sid)
        else:
            while queue:
                last = end and len(queue) == 1
                if not self.conn.send_message(sid, queue[0], end_stream=last):
                    break
                del queue[0]
                if last:
                    self.ended.add(sid)
        if end and not queue and sid not in self.ended:
            self.conn.end_stream(sid)
            self.ended.add(sid)
        self.flush()

    def end(self, sid: int) -> None:
        self.ending.add(sid)
        self.pump_queue(sid)

    def open(self) -> None:
        if self.opened < MAX_STREAMS_OPENED + 1 and self.conn.can_open_stream:
            self.opened += 1
            self.conn.open_stream()
            self.flush()

    def consume(self, sid: int, count: int) -> None:
        """The application is done with the first ``count`` messages held (spec §8.5)."""
        inbox = self.inbox[sid]
        done, inbox[:count] = inbox[:count], []
        self.conn.release(sid, sum(map(len, done)), len(done), 0.0)
        self.flush()

    def consume_all(self) -> bool:
        busy = False
        for sid in sorted(self.inbox):
            if self.inbox[sid]:
                self.consume(sid, len(self.inbox[sid]))
                busy = True
        return busy

    def handle(self, events: list[Event]) -> None:
        batched: set[int] = set()
        for event in events:
            if isinstance(event, MessagesReceived):
                # One batch per stream per receive_data call (the hot path is per batch).
                assert event.stream_id not in batched
                batched.add(event.stream_id)
                assert event.nbytes == sum(map(len, event.messages))
                self.inbox[event.stream_id].extend(event.messages)
                self.received[event.stream_id].extend(event.messages)
            elif isinstance(event, CreditGranted):
                # The application retries on CreditGranted only, never on a timer.
                for sid in sorted(self.queues) if event.stream_id == 0 else [event.stream_id]:
                    self.pump_queue(sid)
            elif isinstance(event, StreamEnded):
                assert event.stream_id not in self.peer_ended
                self.peer_ended.add(event.stream_id)
            else:
                assert isinstance(event, (StreamOpened, PeerBlocked)), event
        self.flush()

    def deliver(self, nbytes: int, chunks: list[int]) -> None:
        """Move the first ``nbytes`` in flight to the other side, cut into ``chunks``."""
        data, self.out[:nbytes] = bytes(self.out[:nbytes]), b""
        pos = 0
        i = 0
        while pos < len(data):
            size = chunks[i % len(chunks)]
            i += 1
            self.other.handle(self.other.conn.receive_data(data[pos : pos + size], 0.0))
            pos += size

    def check_held(self) -> None:
        """What this side holds never passes what it advertised (spec §8.4, §8.5)."""
        local = self.conn.local_settings
        for sid in self.conn.stream_ids:
            held_bytes, held_messages = self.conn.received_held(sid)
            assert held_bytes <= local.stream_bytes, (self.name, sid, held_bytes)
            assert held_messages <= local.stream_messages, (self.name, sid, held_messages)
            assert sum(map(len, self.inbox[sid])) <= held_bytes
            assert len(self.inbox[sid]) <= held_messages
        assert self.conn.received_held(0)[0] <= local.connection_bytes


# --- strategies -----------------------------------------------------------------------------

max_message_sizes = st.one_of(
    st.sampled_from([0, 1, 16383, 16384, 16385, 32768, 40000]),
    st.integers(min_value=0, max_value=40000),
)


@st.composite
def small_settings(draw: st.DrawFn) -> Settings:
    """Windows of one to four max-size messages, so credit runs out often (spec §3.2, §9)."""
    mm = draw(max_message_sizes)
    return Settings(
        stream_bytes=draw(st.integers(min_value=mm, max_value=4 * mm + 16)),
        stream_messages=draw(st.integers(min_value=1, max_value=8)),
        connection_bytes=draw(st.integers(min_value=mm, max_value=4 * mm + 16)),
        max_frame_bytes=16384,  # the least allowed, so large messages are fragmented (§7.1)
        max_message_bytes=mm,
    )


sides = st.integers(min_value=0, max_value=1)
picks = st.integers(min_value=0, max_value=7)
# Sizes are taken modulo (the peer's max_message_bytes + 1); -1 is the peer's maximum.
message_sizes = st.one_of(
    st.just(-1),
    st.sampled_from([0, 1, 16384, 16385, 32769]),
    st.integers(min_value=0, max_value=40000),
)
chunk_sizes = st.sampled_from([1, 2, 9, 10, 11, 100, 4096, 16394, 16395, 1 << 20])

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("send"),
            sides,
            picks,
            st.lists(message_sizes, min_size=1, max_size=4),
            st.booleans(),
        ),
        st.tuples(
            st.just("deliver"),
            sides,
            st.one_of(
                st.integers(min_value=0, max_value=100),
                st.integers(min_value=0, max_value=60000),
                st.just(1 << 30),  # everything in flight
            ),
            st.lists(chunk_sizes, min_size=1, max_size=3),
        ),
        st.tuples(st.just("consume"), sides, picks, st.integers(min_value=1, max_value=5)),
        st.tuples(st.just("end"), sides, picks),
        st.tuples(st.just("open"), sides),
    ),
    min_size=30,
    max_size=60,
)


def drain(peers: list[Peer]) -> None:
    """Deliver and consume everything until quiet; queued messages must all get through (§9)."""
    for _ in range(DRAIN_ROUNDS):
        busy = False
        for peer in peers:
            if peer.out:
                peer.deliver(len(peer.out), [len(peer.out)])
                busy = True
        for peer in peers:
            busy = peer.consume_all() or busy
        if not busy:
            stuck = {p.name: {s: len(q) for s, q in p.queues.items() if q} for p in peers}
            assert not any(stuck.values()), f"deadlock: nothing in flight, still queued {stuck}"
            return
    raise AssertionError(f"not quiet after {DRAIN_ROUNDS} rounds of delivering and consuming")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initiator=small_settings(), acceptor=small_settings(), program=steps)
def test_random_interleavings_keep_credit_and_deliver_everything_in_order(
    initiator: Settings, acceptor: Settings, program: list[tuple[Any, ...]]
) -> None:
    """Credit holds at every step and every message arrives once, in order (spec §8.3, §8.4, §9).

    Both peers open streams and send on their own streams and the other's; the
    transport delivers random prefixes in random chunks (one byte included); the
    applications consume at random and end streams. At every step each side holds no
    more than it advertised per stream (bytes and messages) and per connection, and
    no RemoteProtocolError is raised. Then a drain that only delivers, consumes and
    retries on CreditGranted must end with every queue empty (no deadlock, spec §9),
    and each stream's received messages equal exactly what was sent on it.
    """
    conn_a, conn_b = connected_pair(initiator, acceptor)
    peers = [Peer("initiator", conn_a), Peer("acceptor", conn_b)]
    peers[0].other, peers[1].other = peers[1], peers[0]
    for peer in peers:
        peer.open()
    for step in program:
        kind, peer = step[0], peers[step[1]]
        if kind == "send":
            sendable = peer.sendable()
            if sendable:
                peer.send(sendable[step[2] % len(sendable)], step[3], step[4])
        elif kind == "deliver":
            peer.deliver(step[2], step[3])
        elif kind == "consume":
            held = sorted(sid for sid, inbox in peer.inbox.items() if inbox)
            if held:
                peer.consume(held[step[2] % len(held)], step[3])
        elif kind == "end":
            sendable = peer.sendable()
            if sendable:
                peer.end(sendable[step[2] % len(sendable)])
        else:
            peer.open()
        for p in peers:
            p.check_held()

    drain(peers)

    for peer in peers:
        other = peer.other
        for sid in set(peer.sent) | set(other.received):
            assert other.received[sid] == peer.sent[sid], f"{peer.name} on stream {sid}"
        assert other.peer_ended == peer.ended
        assert peer.conn.received_held(0) == (0, 0)
        for sid in peer.ended & peer.peer_ended:
            # spec §6.3, §6.4: ended both ways and all released: closed and forgotten.
            assert peer.conn.stream_state(sid) is StreamState.CLOSED
            assert sid not in peer.conn.stream_ids


# --- how bytes are split does not matter ----------------------------------------------------

RECEIVER = Settings(max_frame_bytes=16384, max_message_bytes=40000)

CONVERSATION_KINDS = (
    "open",
    "data",
    "end",
    "reset",
    "ping",
    "pong",
    "credit",
    "blocked",
    "unknown",
)
conversation_steps = st.lists(
    st.tuples(
        st.one_of(st.just("data"), st.sampled_from(CONVERSATION_KINDS)),  # DATA half the time
        st.integers(min_value=0, max_value=7),
        st.one_of(
            st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=16384)
        ),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=50,
)


def build_conversation(program: list[tuple[str, int, int, int]]) -> bytes:
    """A valid initiator-to-acceptor byte stream made from ``program``.

    Streams open in increasing id order, sometimes skipping ids (spec §6.1), by CREDIT or
    by DATA. Messages are fragmented at random sizes, fragments of different streams
    interleave (spec §7.1), and no message passes RECEIVER's max_message_bytes. It ends
    with GOAWAY. Everything fits the receiver's initial windows, so it needs no CREDIT.
    """
    frames = [PREFACE, HelloFrame(Settings()).encode()]
    next_id = 1
    streams: dict[int, int | None] = {}  # open stream -> bytes of its message in progress
    counter = 0
    for kind, pick, size, flags in program:
        live = sorted(streams)
        if kind == "open" or (kind == "data" and not live):
            sid = next_id + 2 * (pick // 6)  # mostly the next id, sometimes skipping some
            next_id = sid + 2
            streams[sid] = None
            if kind == "open":
                frames.append(CreditFrame(sid, 1 << 20, 100, 0).encode())
                continue
            live = [sid]
        if kind == "data":
            sid = live[pick % len(live)]
            done = streams[sid] or 0
            size = min(size, RECEIVER.max_message_bytes - done)
            end_message = bool(flags & 1) or done + size == RECEIVER.max_message_bytes
            end_stream = end_message and bool(flags & 2)
            counter += 1
            body = (counter.to_bytes(2, "big") * size)[:size]
            frames.append(DataFrame(sid, body, end_message, end_stream).encode())
            streams[sid] = None if end_message else done + size
            if end_stream:
                del streams[sid]
        elif kind == "end" and live:
            sid = live[pick % len(live)]
            if streams[sid] is None:
                frames.append(DataFrame(sid, b"", False, True).encode())
                del streams[sid]
        elif kind == "reset" and live:
            sid = live[pick % len(live)]
            # "consumed" may not pass what the receiver sent on the stream: nothing (spec §5.7).
            frames.append(ResetFrame(sid, ErrorCode.CANCEL, "gone", 0 if flags else None).encode())
            del streams[sid]
        elif kind == "ping":
            frames.append(PingFrame(size).encode())
        elif kind == "pong":
            frames.append(PongFrame(size).encode())  # answers nothing: ignored (spec §5.6)
        elif kind in ("credit", "blocked"):
            sid = live[pick % len(live)] if live and flags else 0
            if kind == "credit":
                frame: Any = CreditFrame(sid, (1 << 22) + size, None if sid == 0 else 4090 + pick)
            else:
                frame = BlockedFrame(sid, size, None if sid == 0 else pick)
            frames.append(frame.encode())
        elif kind == "unknown":
            # spec §4.4: an unknown type is ignored, whatever its flags and stream.
            frames.append(UnknownFrame(0x20 + pick, flags, pick, bytes(size % 50)).encode())
    for sid, in_progress in streams.items():
        if in_progress is not None:  # finish every message, or the end would be truncated
            frames.append(DataFrame(sid, b"end", True, False).encode())
    frames.append(GoAwayFrame(0, ErrorCode.NO_ERROR, "done").encode())
    return b"".join(frames)


def feed(conn: Connection, data: bytes, cuts: list[int], events: list[Event]) -> None:
    """Feed ``data`` to ``conn`` in chunks of the sizes in ``cuts`` (cycled)."""
    pos = 0
    i = 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        i += 1
        got = conn.receive_data(data[pos : pos + size], 0.0)
        batched = [e.stream_id for e in got if isinstance(e, MessagesReceived)]
        assert len(batched) == len(set(batched)), "one MessagesReceived per stream per call"
        events += got
        pos += size


def replay(
    wire: bytes, cuts: list[int], prologue: Callable[[Connection], None] | None = None
) -> tuple[Any, bytes]:
    """Feed ``wire`` to a fresh acceptor in chunks of the sizes in ``cuts``, then EOF.

    ``prologue``, if given, runs right after the peer's preface and HELLO (which are fed
    first), for what the acceptor itself sent in the recorded conversation.

    Returns the events, normalised so batching does not matter, and the bytes it sent:
    each stream's messages in order, between its StreamOpened and its StreamEnded or
    StreamReset (spec §7.1: fragments of one stream are in order), and every event that
    is not a message as one sequence (frames are processed in order). A batch goes where
    its first message arrived, so messages are not ordered against other streams' events
    or against CreditGranted.
    """
    conn = Connection(Role.ACCEPTOR, RECEIVER)
    events: list[Event] = []
    if prologue is not None:
        hello = len(PREFACE + HelloFrame(RECORDING_INITIATOR).encode())
        feed(conn, wire[:hello], cuts, events)
        prologue(conn)
        wire = wire[hello:]
    feed(conn, wire, cuts, events)
    events += conn.receive_data(b"", 0.0)
    # spec §10.6: not truncated; "clean" also depends on streams left open, which varies.
    assert isinstance(events[-1], ConnectionClosed) and not events[-1].truncated
    per_stream: dict[int, list[Any]] = defaultdict(list)
    others: list[Event] = []
    for event in events:
        if isinstance(event, MessagesReceived):
            assert event.nbytes == sum(map(len, event.messages))
            per_stream[event.stream_id] += [("message", m) for m in event.messages]
        else:
            others.append(event)
            if isinstance(event, (StreamOpened, StreamEnded, StreamReset)):
                per_stream[event.stream_id].append(event)
    return (dict(per_stream), others), conn.data_to_send()


cut_lists = st.lists(st.integers(min_value=1, max_value=20000), min_size=1, max_size=8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    program=conversation_steps, cuts=cut_lists, small=st.lists(chunk_sizes, min_size=1, max_size=5)
)
def test_how_bytes_are_split_does_not_change_events_or_output(
    program: list[tuple[str, int, int, int]], cuts: list[int], small: list[int]
) -> None:
    """The same conversation whole, byte by byte and in random chunks gives the same result.

    spec §4.2, §7.1: a receiver parses frames out of any split of the byte stream; the
    conversation has several streams, interleaved fragments, CREDIT, BLOCKED, PING, an
    unmatched PONG, RESET, END_STREAM, an unknown frame type and GOAWAY.
    """
    wire = build_conversation(program)
    whole = replay(wire, [len(wire)])
    assert replay(wire, [1]) == whole
    assert replay(wire, cuts) == whole
    assert replay(wire, small) == whole


RECORDING_INITIATOR = Settings(
    stream_bytes=50000,
    stream_messages=4,
    connection_bytes=100000,
    max_frame_bytes=16384,
    max_message_bytes=40000,
)
ACCEPTOR_MESSAGES = [b"p" * 30000, b"q" * 15000]


def acceptor_prologue(conn: Connection) -> None:
    """What the recorded acceptor did right after the handshake: open stream 2, send on it."""
    assert conn.open_stream() == 2
    assert conn.send_messages(2, ACCEPTOR_MESSAGES) == len(ACCEPTOR_MESSAGES)


def recorded_conversation() -> bytes:
    """Everything a real initiator sent in a conversation with a real acceptor.

    The acceptor sends a 16 KiB max_frame_bytes (so the initiator fragments its
    40000-byte messages) and opens stream 2 at once, sending two messages; the
    initiator consumes them and answers with a CREDIT carrying ``consumed`` (spec §5.3,
    §10.5) and a message on stream 2, opens three streams of its own, pings, ends two,
    resets one holding a message, and goes away. The acceptor consumes nothing, so its
    replayed copy needs no CREDIT to stay in step.
    """
    a, b = connected_pair(RECORDING_INITIATOR, RECEIVER)
    wire = bytearray(PREFACE + HelloFrame(RECORDING_INITIATOR).encode())
    acceptor_prologue(b)

    def move() -> None:
        for _ in range(100):
            to_b = a.data_to_send()
            wire.extend(to_b)
            if to_b:
                b.receive_data(to_b, 0.0)
            to_a = b.data_to_send()
            if not to_a and not to_b:
                return
            for event in a.receive_data(to_a, 0.0) if to_a else []:
                if isinstance(event, MessagesReceived):
                    a.release(event.stream_id, event.nbytes, len(event.messages), 0.0)
        raise AssertionError("not quiet")

    s1, s3, s5 = a.open_stream(), a.open_stream(), a.open_stream()
    assert a.send_messages(s1, [b"x" * 40000, b"", b"y" * 100]) == 3
    assert a.send_message(s3, b"z" * 20000)
    a.ping(0.0)
    move()
    assert a.send_message(2, b"reply")
    assert a.send_message(s5, b"w" * 16385, end_stream=True)
    assert a.send_message(s1, b"last")
    a.reset_stream(s3)
    move()
    a.end_stream(s1)
    a.close()
    move()
    frames = FrameDecoder(RECEIVER.max_frame_bytes).feed(bytes(wire[len(PREFACE) :]))
    assert any(isinstance(f, CreditFrame) and f.stream_id == 2 and f.consumed == 2 for f in frames)
    assert sum(isinstance(f, DataFrame) and not f.end_message for f in frames) >= 3
    return bytes(wire)


RECORDED = recorded_conversation()


def test_a_recorded_conversation_whole_equals_byte_by_byte() -> None:
    """A real peer's byte stream gives the same events and output however it is cut (§4.2)."""
    whole = replay(RECORDED, [len(RECORDED)], acceptor_prologue)
    assert replay(RECORDED, [1], acceptor_prologue) == whole


@settings(max_examples=50, deadline=None)
@given(cuts=cut_lists)
def test_a_recorded_conversation_in_random_chunks_equals_whole(cuts: list[int]) -> None:
    """As above, for random chunk sizes (spec §4.2, §7.1)."""
    whole = replay(RECORDED, [len(RECORDED)], acceptor_prologue)
    assert replay(RECORDED, cuts, acceptor_prologue) == whole
