"""What the I/O layers share: written once, outside ``flowproto.trio`` and ``flowproto.asyncio``.

Each I/O layer owns its sockets, tasks, timers and waiting; what is left over is the same in
both and lives here, layer-neutral and without I/O (this module imports neither trio nor
asyncio): the timeouts and sizes both layers default to, the statistics snapshots built
from the core and a layer's counters (spec §14), the errors that say how a connection or a
stream ended, and the lines of the DEBUG log (``flowproto -v``). An I/O layer of one's own
can use them too; they are public API.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

from ._autotune import RateEstimator
from ._codecs import Codec, RawCodec
from ._connection import Connection
from ._errors import ErrorCode, StreamLimitError, StreamResetError
from ._events import ConnectionClosed, GoAwayReceived, StreamReset
from ._pacing import Pacer
from ._settings import Settings
from ._state import ConnectionState
from ._statistics import ConnectionStatistics, StreamStatistics
from ._streams import Role, StreamRecord

__all__ = [
    "CLOSE_LINGER",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_WRITE_TIMEOUT",
    "MAX_SEND_BACKLOG",
    "PACING_HEADROOM",
    "WRITE_CHUNK",
    "YIELD_AFTER_BYTES",
    "ConnectionLostBase",
    "Inbox",
    "StreamCounts",
    "TrafficCounts",
    "WindowLog",
    "connection_name",
    "connection_statistics",
    "decode_batch",
    "goaway_error",
    "log_goaway",
    "log_handshake",
    "log_reset",
    "pace",
    "peer_closed_reason",
    "reset_error",
    "stream_slot_refusal",
    "stream_statistics",
    "take_held",
    "tls_reason",
]

_log = logging.getLogger("flowproto")

# --- sizes and timeouts both layers default to (spec §9-§11) ----------------------------

#: Bytes ``send()`` queues before it lets the writer (Trio) or the event loop (asyncio) run.
YIELD_AFTER_BYTES: Final = 256 * 1024
#: Seconds a new connection may take to complete TLS, the preface and HELLO exchange.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds ``aclose()`` lets open streams finish after GOAWAY before resetting them.
DEFAULT_CLOSE_GRACE: Final = 5.0
#: Seconds a closing side waits for the peer's EOF after flushing its GOAWAY (spec §10.2).
CLOSE_LINGER: Final = 1.0
#: With pacing on, a stream sends at most this many times the peer's ``rate`` (spec §8.10).
PACING_HEADROOM: Final = 1.05
#: Seconds a frame may take to arrive once its first byte has (spec §11).
DEFAULT_FRAME_TIMEOUT: Final = 10.0
#: Seconds the transport may take to take each WRITE_CHUNK of output before the peer
#: counts as gone (spec §11).
DEFAULT_WRITE_TIMEOUT: Final = 10.0
#: Bytes of progress the write timeout measures (spec §11).
WRITE_CHUNK: Final = 256 * 1024
#: Output waiting for the transport past which ``send()`` waits, whatever credit the peer
#: grants (spec §10.7.2).
MAX_SEND_BACKLOG: Final = 1024 * 1024

# --- statistics (spec §14) ---------------------------------------------------------------


class TrafficCounts(Protocol):
    """A connection's traffic as its I/O layer counts it (both layers' links have these)."""

    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    starvation_events: int


class StreamCounts(Protocol):
    """A stream's traffic and waits as its I/O layer counts them (both ``FlowStream``s)."""

    stream_id: int
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    blocked_on_peer_events: int
    starvation_events: int
    starved_seconds: float


def connection_statistics(
    core: Connection,
    traffic: TrafficCounts,
    *,
    streams: int,
    blocked_seconds: float,
    rtt: float | None,
    stream_limit_seconds: float,
) -> ConnectionStatistics:
    """A snapshot of a connection: the core's credit and windows, the layer's counts.

    Args:
        core: the connection's sans-IO core.
        traffic: the layer's counts of messages and bytes each way.
        streams: the streams the layer holds open.
        blocked_seconds: seconds streams spent waiting for credit, the waits in progress
            included.
        rtt: the last measured round trip, or ``None``.
        stream_limit_seconds: seconds ``open_stream`` waited for a stream slot.
    """
    held, _ = core.received_held(0)
    info = core.window_info(0)
    budget = core.budget
    reconnects, resumed, retransmitted, retransmitted_bytes = core.session_counts
    return ConnectionStatistics(
        state=core.state.value,
        streams=streams,
        send_credit_bytes=core.connection_send_capacity,
        buffered_bytes=held,
        receive_window_bytes=core.local_settings.connection_bytes,
        messages_sent=traffic.messages_sent,
        bytes_sent=traffic.bytes_sent,
        messages_received=traffic.messages_received,
        bytes_received=traffic.bytes_received,
        seconds_blocked=blocked_seconds,
        rtt=rtt,
        glitches=core.glitches,
        blocked_on_peer_seconds=blocked_seconds,  # spec §14 from here on
        starvation_events=traffic.starvation_events,
        rtt_min=core.rtt.minimum,
        window_bytes=info.window_bytes if info is not None else 0,
        window_reason=info.reason.value if info is not None else "static",
        budget_bytes=budget.capacity if budget is not None else None,
        budget_committed_bytes=budget.committed if budget is not None else None,
        budget_share_bytes=core.budget_share,
        blocked_on_stream_limit_seconds=stream_limit_seconds,
        reconnects=reconnects,
        resumed_sessions=resumed,
        messages_retransmitted=retransmitted,
        bytes_retransmitted=retransmitted_bytes,
        retained_bytes=core.retained[1],
        retained_bytes_peak=core.retained_peak_bytes,
    )


def stream_statistics(
    core: Connection,
    stream: StreamCounts,
    *,
    record: StreamRecord | None,
    rate: RateEstimator,
    buffered_messages: int,
    buffered_bytes: int,
    blocked_seconds: float,
    sending_seconds: float,
) -> StreamStatistics:
    """A snapshot of one stream: the core's credit and window, the layer's counts.

    Args:
        core: the connection's sans-IO core.
        stream: the layer's counts for the stream.
        record: the core's record of the stream (it outlives the stream's entry in the
            core's table, spec §10.5), or ``None``.
        rate: the stream's one consumption-rate estimator (spec §8.9 rule 2).
        buffered_messages, buffered_bytes: what waits in the stream's inbox.
        blocked_seconds: seconds ``send()`` waited for credit, a wait in progress included.
        sending_seconds: seconds from opening the stream until it was closed for sending
            (or until now).
    """
    stream_id = stream.stream_id
    send_bytes, send_messages = core.send_capacity(stream_id)
    recv_bytes, recv_messages = core.receive_capacity(stream_id)
    messages_rate = rate.messages_per_second  # both rates from the same samples
    info = core.window_info(stream_id)
    feedback = record.feedback if record is not None else core.peer_feedback(stream_id)
    peak = record.recv.held_peak() if record is not None else core.received_peak(stream_id)
    delivered = record.peer_consumed if record is not None else core.peer_consumed(stream_id)
    depth = buffered_messages
    return StreamStatistics(
        stream_id=stream_id,
        state=core.stream_state(stream_id).value,
        send_credit_bytes=send_bytes,
        send_credit_messages=send_messages,
        receive_credit_bytes=recv_bytes,
        receive_credit_messages=recv_messages,
        buffered_messages=depth,
        buffered_bytes=buffered_bytes,
        messages_sent=stream.messages_sent,
        bytes_sent=stream.bytes_sent,
        messages_received=stream.messages_received,
        bytes_received=stream.bytes_received,
        delivered=delivered,
        messages_in_flight=stream.messages_sent - (delivered or 0),
        seconds_blocked=blocked_seconds,
        consume_rate=messages_rate,
        blocked_on_peer_seconds=blocked_seconds,  # spec §14 from here on
        blocked_on_peer_events=stream.blocked_on_peer_events,
        blocked_on_app_seconds=max(0.0, sending_seconds - blocked_seconds),
        peer_consume_rate=feedback[0] if feedback is not None else None,
        peer_queue_depth=feedback[1] if feedback is not None else None,
        queue_depth_messages=depth,
        queue_depth_bytes=buffered_bytes,
        consume_rate_bytes=rate.bytes_per_second,
        drain_seconds=(depth / messages_rate if messages_rate > 0 else (None if depth else 0.0)),
        starvation_events=stream.starvation_events,
        starved_seconds=stream.starved_seconds,
        window_bytes=info.window_bytes if info is not None else 0,
        window_messages=info.window_messages if info is not None else 0,
        window_reason=info.reason.value if info is not None else "static",
        window_changes=info.changes if info is not None else 0,
        peak_buffered_messages=peak[1],
        peak_buffered_bytes=peak[0],
    )


# --- receiving in batches ---------------------------------------------------------------


class Inbox:
    """A stream's received messages, kept as the batches the core reported them in.

    Taking a batch of messages is a list slice, not one ``popleft`` per message: at
    64-byte messages a read brings thousands, and ``receive_many`` takes them a
    thousand at a time. The lists are the core's own (one per ``MessagesReceived``,
    never touched by it again), so a batch taken whole is handed out as it is.
    """

    __slots__ = ("_batches", "_head", "count")

    def __init__(self) -> None:
        self._batches: deque[list[bytes]] = deque()
        self._head = 0  # messages of the first batch already taken
        #: How many messages it holds (read it: only the methods change it). Testing it
        #: on the hot path costs no call, unlike ``len()`` or ``bool()``.
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def extend(self, messages: list[bytes]) -> None:
        """Messages arrived, in order; the inbox keeps the list itself."""
        if messages:
            self._batches.append(messages)
            self.count += len(messages)

    def popleft(self) -> bytes:
        """The first message (the inbox must not be empty)."""
        batch = self._batches[0]
        head = self._head
        message = batch[head]
        head += 1
        if head == len(batch):
            self._batches.popleft()
            head = 0
        self._head = head
        self.count -= 1
        return message

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` first messages, in order."""
        batches = self._batches
        taken: list[bytes] = []
        want = min(limit, self.count)
        while want > 0:
            batch = batches[0]
            head = self._head
            left = len(batch) - head
            if left <= want:
                piece = batch if head == 0 else batch[head:]
                batches.popleft()
                self._head = 0
            else:
                left = want
                piece = batch[head : head + want]
                self._head = head + want
            if taken:
                taken += piece
            else:
                taken = piece
            want -= left
            self.count -= left
        return taken

    def clear(self) -> None:
        """Drop every message (the stream was reset)."""
        self._batches.clear()
        self._head = 0
        self.count = 0


def decode_batch(codec: Codec, batch: list[bytes]) -> list[Any]:
    """The messages of a batch, decoded (raw bytes are returned as they are)."""
    if type(codec) is RawCodec:
        return batch
    decode = codec.decode
    return [decode(d) for d in batch]


def take_held(held: deque[int], count: int | None) -> tuple[int, int]:
    """Take the first ``count`` of the sizes held by ``receive_many(release=False)``
    (``None``: all): how many, and their bytes, whose credit may now go back (§8.5).

    Raises:
        ValueError: ``count`` is more than the messages held.
    """
    if count is None:
        count = len(held)
    if not 0 <= count <= len(held):
        raise ValueError(f"release({count}), but {len(held)} messages are held")
    return count, sum(held.popleft() for _ in range(count))


# --- pacing (spec §8.10) -----------------------------------------------------------------


def pace(
    pacer: Pacer, feedback: tuple[int | None, int | None] | None, count: int, now: float
) -> float:
    """When ``count`` more messages may go: ``now``, or a later time to wait until.

    While the peer reports a standing queue (spec §8.10), a stream sends at most
    ``PACING_HEADROOM`` times its consumer's rate; with no queue, or no feedback, it is
    not paced at all.

    Args:
        pacer: the stream's one pacer.
        feedback: the peer's last (consumption rate, queue depth) for the stream.
        count: the messages about to be sent.
        now: the layer's clock.
    """
    if feedback is None or not feedback[0] or not feedback[1]:
        pacer.set_rate(None, now)
        return now
    pacer.set_rate(PACING_HEADROOM * feedback[0], now)
    return max(now, pacer.reserve(count, now))


# --- how a connection or a stream ended ---------------------------------------------------

#: A layer's ConnectionLostError.
LostT = TypeVar("LostT", bound="ConnectionLostBase")


class ConnectionLostBase(Exception):
    """What both layers' ``ConnectionLostError`` carry; each adds its own base class
    (``trio.BrokenResourceError``; ``ConnectionError`` for asyncio).

    Attributes:
        error_code: the GOAWAY code that ended it (ours or the peer's), or ``None`` if the
            transport just ended.
        reason: what happened, in words.
        last_stream_id: the peer's GOAWAY last_stream, if it sent one: our streams above
            it were never processed and are safe to retry (spec §10.4).
        delivered: for a stream operation, the messages the peer reported consumed on
            that stream (spec §10.5); later messages may or may not have been.
        retry_after: with OVERLOADED, the seconds the peer asked us to wait before a new
            connection (GOAWAY ``retry_after_ms``, spec §5.8), else ``None``.
        handed_over: on a server, this connection's peer resumed a session (spec §15.6):
            its transport now carries that session's connection, which goes on. Not a
            failure.
    """

    def __init__(
        self,
        reason: str,
        *,
        error_code: int | None = None,
        last_stream_id: int | None = None,
        delivered: int | None = None,
        retry_after: float | None = None,
        handed_over: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.delivered = delivered
        self.retry_after = retry_after
        self.handed_over = handed_over

    def __str__(self) -> str:
        return self.reason

    @property
    def retryable(self) -> bool:
        """True if the peer processed nothing and a new connection may succeed later:
        GOAWAY(OVERLOADED), spec §10.1 (1.1)."""
        return self.error_code == ErrorCode.OVERLOADED

    def for_stream(self: LostT, delivered: int | None) -> LostT:
        """A copy naming what one stream knows was delivered (the same cause)."""
        lost = type(self)(
            self.reason,
            error_code=self.error_code,
            last_stream_id=self.last_stream_id,
            delivered=delivered,
            retry_after=self.retry_after,
        )
        lost.__cause__ = self.__cause__
        return lost


def goaway_error(lost_class: Callable[..., LostT], goaway: GoAwayReceived) -> LostT:
    """The error for a connection the peer closed with GOAWAY (spec §10.2, §10.4)."""
    return lost_class(
        f"peer closed the connection: GOAWAY {ErrorCode.describe(goaway.error_code)}"
        + (f" ({goaway.reason})" if goaway.reason else ""),
        error_code=goaway.error_code,
        last_stream_id=goaway.last_stream_id,
        retry_after=None if goaway.retry_after_ms is None else goaway.retry_after_ms / 1000,
    )


def peer_closed_reason(event: ConnectionClosed, core: Connection) -> str:
    """Why a connection whose peer closed the transport without a clean GOAWAY ended."""
    what = "in the middle of a frame" if event.truncated else "without GOAWAY"
    if core.peer_settings is None:
        what += " before its HELLO (spec §3.4)"  # a refusal: TLS, not flowproto, ...
    return f"the peer closed the connection {what}"


def reset_error(event: StreamReset, core: Connection) -> StreamResetError:
    """The error a reset stream raises, with what the peer reported consumed (§10.5)."""
    consumed = event.consumed
    if consumed is None:
        consumed = core.peer_consumed(event.stream_id)
    return StreamResetError(event.stream_id, event.error_code, event.reason, event.remote, consumed)


def stream_slot_refusal(
    lost_class: Callable[..., LostT],
    core: Connection,
    goaway: GoAwayReceived | None,
    *,
    wait: bool,
) -> Exception | None:
    """Why ``open_stream`` cannot wait for a stream slot, or ``None`` if it may.

    A connection shutting down (GOAWAY either way) never frees one for a new stream (spec
    §10.4); with ``wait=False``, every slot in use is a :class:`StreamLimitError` (§6.4).
    A session resuming on a new transport is not shutting down: its streams may be
    opened once it is reconciled (spec §15.4, §15.6).
    """
    state = core.state
    resuming = core.suspended and state is not ConnectionState.CLOSING
    if goaway is not None or (state is not ConnectionState.OPEN and not resuming):
        return lost_class(
            "the connection is shutting down (GOAWAY); open a new connection",
            error_code=goaway.error_code if goaway else ErrorCode.NO_ERROR,
            last_stream_id=goaway.last_stream_id if goaway else None,
        )
    if not wait:
        peer = core.peer_settings
        limit = peer.max_streams if peer is not None else 0
        return StreamLimitError(
            f"the peer allows {limit} concurrent streams, all in use (spec §6.4)"
        )
    return None


#: The " (_ssl.c:1006)" at the end of an ssl.SSLError's text.
_SSL_SOURCE: Final = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def tls_reason(exc: BaseException) -> str | None:
    """A TLS failure in words ("TLS: certificate verify failed: ..."), or ``None``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "TLS: " + _SSL_SOURCE.sub("", str(exc.strerror or exc))
    return None


# --- the DEBUG log (flowproto -v) --------------------------------------------------------


def connection_name(peer: object, role: Role, transport_type: str) -> str:
    """How the debug log names a connection: by its peer's socket address where it has one.

    Args:
        peer: the peer's address (a tuple for IP, a str for a Unix socket), or ``None``.
        role: this side's role.
        transport_type: the transport's type name, for a transport without an address.
    """
    side = "to" if role is Role.INITIATOR else "from"
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
        return f"connection {side} {host}:{peer[1]}"
    if isinstance(peer, str) and peer:
        return f"connection {side} unix:{peer}"
    return f"connection {side} a {transport_type}"


def log_handshake(name: str, peer: Settings) -> None:
    """Log (DEBUG) what the peer's HELLO grants."""
    _log.debug(
        "%s: handshake complete; the peer grants %d bytes / %d messages a stream, "
        "%d bytes on the connection, messages up to %d bytes, %d streams",
        name, peer.stream_bytes, peer.stream_messages, peer.connection_bytes,
        peer.max_message_bytes, peer.max_streams,
    )  # fmt: skip


def log_reset(name: str, event: StreamReset) -> None:
    """Log (DEBUG) a stream reset, by either side."""
    _log.debug(
        "%s: stream %d reset by %s: %s %s (consumed %s)",
        name, event.stream_id, "the peer" if event.remote else "this side",
        ErrorCode.describe(event.error_code), event.reason or "-", event.consumed,
    )  # fmt: skip


def log_goaway(name: str, event: GoAwayReceived) -> None:
    """Log (DEBUG) the peer's GOAWAY."""
    _log.debug(
        "%s: GOAWAY from the peer: %s, last stream %d%s",
        name, ErrorCode.describe(event.error_code), event.last_stream_id,
        f": {event.reason}" if event.reason else "",
    )  # fmt: skip


class WindowLog:
    """Logs (DEBUG) the connection's receive window each time its tuner changes it (§8.9)."""

    __slots__ = ("_logged",)

    def __init__(self) -> None:
        self._logged = (0, 0)

    def check(self, name: str, core: Connection) -> None:
        """Log the window if it changed since the last check (the first is not logged)."""
        info = core.window_info(0)
        if info is not None and (info.window_bytes, info.changes) != self._logged:
            if self._logged != (0, 0):
                _log.debug(
                    "%s: connection window now %d bytes (%s)",
                    name, info.window_bytes, info.reason.value,
                )  # fmt: skip
            self._logged = (info.window_bytes, info.changes)
