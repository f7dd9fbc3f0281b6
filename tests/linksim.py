"""A deterministic link between two sans-IO connections, on a simulated clock.

Nothing here reads a clock: time is a number that :meth:`LinkSim.run` advances in fixed
steps, and every call that needs time gets it as ``now`` (spec §8.9). Each direction of
the link delays bytes by ``delay`` seconds and, optionally, serializes them at ``rate``
bytes per second in 16 KiB packets, like a bottleneck link with an unbounded queue.

One stream, from a greedy sender (the initiator, which always has messages to send) to a
consumer (the acceptor) that takes at most ``consumer(now)`` messages per second (``None``:
everything that arrived). Samples of the receiver's window and queue are kept for tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flowproto import AutoTune, Connection, MemoryBudget, MessagesReceived, Role, Settings

PACKET = 16384


class Pipe:
    """One direction of the link: delay, and an optional rate in bytes per second."""

    def __init__(self, delay: float, rate: float | None) -> None:
        self.delay = delay
        self.rate = rate
        self.packets: deque[tuple[float, bytes]] = deque()
        self.free_at = 0.0

    def put(self, now: float, data: bytes) -> None:
        for start in range(0, len(data), PACKET):
            packet = data[start : start + PACKET]
            begin = max(now, self.free_at)
            self.free_at = begin + (len(packet) / self.rate if self.rate else 0.0)
            self.packets.append((self.free_at + self.delay, packet))

    def take(self, now: float) -> bytes:
        out = []
        while self.packets and self.packets[0][0] <= now:
            out.append(self.packets.popleft()[1])
        return b"".join(out)


@dataclass
class Sample:
    time: float
    consumed_bytes: int
    window_bytes: int
    window_messages: int
    reason: str
    queued: int
    connection_window: int


@dataclass
class LinkSim:
    """Run with :meth:`run`; then read ``samples``, ``latencies`` and the counters."""

    settings: Settings
    autotune: AutoTune | None = field(default_factory=AutoTune)
    delay: float = 0.0005
    rate: float | None = None
    size: int = 1024
    consumer: Callable[[float], float | None] = lambda now: None
    budget: MemoryBudget | None = None
    step: float = 0.001
    sample_every: float = 0.1

    def __post_init__(self) -> None:
        self.sender = Connection(Role.INITIATOR, Settings(keepalive_ms=0))
        self.receiver = Connection(
            Role.ACCEPTOR, self.settings, autotune=self.autotune, budget=self.budget
        )
        self.forward = Pipe(self.delay, self.rate)
        self.backward = Pipe(self.delay, self.rate)
        self.now = 0.0
        self.stream_id: int | None = None
        self.inbox: deque[tuple[float, int]] = deque()  # (arrival time, bytes)
        self.consumed = 0
        self.consumed_bytes = 0
        self.tokens = 0.0
        self.latencies: list[float] = []
        self.samples: list[Sample] = []
        self.limits_seen: list[tuple[int, int]] = []  # the sender's view of the limits
        self._next_sample = 0.0

    def run(self, seconds: float, check: Callable[[LinkSim], None] | None = None) -> None:
        end = self.now + seconds
        payload = bytes(self.size)
        while self.now < end:
            now = self.now
            a, b = self.sender, self.receiver
            if a.handshake_complete and self.stream_id is None:
                self.stream_id = a.open_stream()
            sid = self.stream_id
            if sid is not None:
                while a.send_messages(sid, [payload] * 32) == 32 and len(a._out) < 512:
                    pass
                st = a._streams[sid].send
                self.limits_seen.append((st.limit_bytes, st.limit_messages or 0))
            self.forward.put(now, a.data_to_send())
            data = self.forward.take(now)
            if data:
                for event in b.receive_data(data, now):
                    if isinstance(event, MessagesReceived):
                        self.inbox.extend((now, len(m)) for m in event.messages)
                b.handle_timeout(now)
            self._consume(now)
            deadline = b.next_deadline()
            if deadline is not None and deadline <= now:
                b.handle_timeout(now)
            self.backward.put(now, b.data_to_send())
            data = self.backward.take(now)
            if data:
                a.receive_data(data, now)
                a.handle_timeout(now)
            if now >= self._next_sample and sid is not None:
                self._sample(now, sid)
            if check is not None:
                check(self)
            self.now = round(now + self.step, 9)

    def _consume(self, now: float) -> None:
        sid = self.stream_id
        if sid is None:
            return
        rate = self.consumer(now)
        n = nbytes = 0
        inbox = self.inbox
        if rate is None:
            limit = len(inbox)
        else:
            self.tokens = min(self.tokens + rate * self.step, max(1.0, 2 * rate * self.step))
            limit = min(len(inbox), int(self.tokens))
            self.tokens -= limit
        for _ in range(limit):
            arrived, size = inbox.popleft()
            n += 1
            nbytes += size
            self.latencies.append(now - arrived)
        if n:
            self.receiver.release(sid, nbytes, n, now=now)
            self.consumed += n
            self.consumed_bytes += nbytes

    def _sample(self, now: float, sid: int) -> None:
        info = self.receiver.window_info(sid)
        conn = self.receiver.window_info(0)
        if info is None or conn is None:
            return  # the stream has not reached the receiver yet
        self.samples.append(
            Sample(
                now,
                self.consumed_bytes,
                info.window_bytes,
                info.window_messages,
                info.reason.value,
                len(self.inbox),
                conn.window_bytes,
            )
        )
        self._next_sample += self.sample_every

    def throughput(self, start: float, end: float) -> float:
        """Bytes consumed per second between two sample times."""
        first = next(s for s in self.samples if s.time >= start)
        last = [s for s in self.samples if s.time <= end][-1]
        return (last.consumed_bytes - first.consumed_bytes) / (last.time - first.time)
