"""Statistics records of streams and connections (spec §14), shared by every I/O layer.

Plain frozen dataclasses: an I/O layer fills them from the core's public queries and
its own counters; exporters (the CLI's JSON lines and Prometheus endpoint) read them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionStatistics", "StreamStatistics"]


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """A snapshot of one stream (field names are what the CLI and benchmarks print).

    Attributes:
        stream_id: the stream.
        state: its state (spec §6.3).
        send_credit_bytes: bytes we may send now (least of stream and connection credit).
        send_credit_messages: messages we may send now.
        receive_credit_bytes: bytes the peer may still send us before it needs CREDIT.
        receive_credit_messages: messages the peer may still send us.
        buffered_messages: messages received and not yet consumed (the inbox depth).
        buffered_bytes: their bytes.
        messages_sent: messages queued for the peer.
        bytes_sent: their bytes.
        messages_received: messages consumed by the application.
        bytes_received: their bytes.
        delivered: messages the peer reported consumed (spec §10.5).
        messages_in_flight: messages sent and not yet reported consumed: on the wire, or
            buffered at the peer, or consumed since its last report.
        seconds_blocked: total seconds ``send()`` waited for credit.
        consume_rate: messages consumed per second, smoothed (EMA over about a second).

    The fields below are the statistics names of spec §14.

    Attributes:
        blocked_on_peer_seconds: ``seconds_blocked``: the peer's consumer set the pace.
        blocked_on_peer_events: how many times a send had to wait for credit.
        blocked_on_app_seconds: seconds the stream was open for sending and not waiting
            for credit: this side's application (or machine) set the pace.
        peer_consume_rate / peer_queue_depth: the peer's latest feedback (spec §8.10).
        queue_depth_messages / queue_depth_bytes: received and not yet consumed.
        consume_rate_bytes: bytes consumed per second, smoothed.
        drain_seconds: ``queue_depth_messages / consume_rate``; ``None`` if the rate is 0.
        starvation_events: ``receive()`` calls that had to wait for a message.
        starved_seconds: the time they waited.
        window_bytes / window_messages: the receive window now (spec §8.9).
        window_reason: why it last changed (``static`` without auto-tuning).
        window_changes: how often the tuner changed it.
        peak_buffered_messages / peak_buffered_bytes: the most held at once for the
            application (received, not yet consumed, including a message still arriving
            in fragments). Kept by the core where credit is checked, not sampled, so it
            is exact: it never exceeds the largest window advertised (spec §8.4).
    """

    stream_id: int
    state: str
    send_credit_bytes: int
    send_credit_messages: int
    receive_credit_bytes: int
    receive_credit_messages: int
    buffered_messages: int
    buffered_bytes: int
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    delivered: int | None
    messages_in_flight: int
    seconds_blocked: float
    consume_rate: float
    blocked_on_peer_seconds: float = 0.0
    blocked_on_peer_events: int = 0
    blocked_on_app_seconds: float = 0.0
    peer_consume_rate: int | None = None
    peer_queue_depth: int | None = None
    queue_depth_messages: int = 0
    queue_depth_bytes: int = 0
    consume_rate_bytes: float = 0.0
    drain_seconds: float | None = 0.0
    starvation_events: int = 0
    starved_seconds: float = 0.0
    window_bytes: int = 0
    window_messages: int = 0
    window_reason: str = "static"
    window_changes: int = 0
    peak_buffered_messages: int = 0
    peak_buffered_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of a connection: totals over its streams, and the link.

    Attributes:
        state: the connection's state.
        streams: streams open now.
        send_credit_bytes: connection bytes we may send now.
        buffered_bytes: bytes received and not yet consumed, over all streams.
        receive_window_bytes: the connection window we advertise (the most we buffer).
        messages_sent / bytes_sent / messages_received / bytes_received: totals.
        seconds_blocked: total seconds senders waited for credit.
        rtt: the last round-trip time measured by PING, in seconds, or ``None``.
        glitches: frames the peer sent that cost work without progress (spec §10.7.1).
        blocked_on_peer_seconds: ``seconds_blocked`` (spec §14).
        starvation_events: ``receive()`` calls that had to wait, over all streams.
        rtt_min: the least round-trip time measured (the tuner's, spec §8.9), or ``None``.
        window_bytes: the connection window now; ``window_reason``: why (spec §8.9).
        budget_bytes / budget_committed_bytes / budget_share_bytes: the memory budget's
            capacity, what all its connections committed, and this connection's fair
            share; ``None`` without a budget.
        reconnects / resumed_sessions / messages_retransmitted / bytes_retransmitted /
            retained_bytes / retained_bytes_peak: a session's resumptions (spec §15.11):
            transports the initiator resumed, resumptions completed, what was sent again,
            and what is kept for a resumption now and at most (spec §15.5).
    """

    state: str
    streams: int
    send_credit_bytes: int
    buffered_bytes: int
    receive_window_bytes: int
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    seconds_blocked: float
    rtt: float | None
    glitches: int = 0
    blocked_on_peer_seconds: float = 0.0
    starvation_events: int = 0
    rtt_min: float | None = None
    window_bytes: int = 0
    window_reason: str = "static"
    budget_bytes: int | None = None
    budget_committed_bytes: int | None = None
    budget_share_bytes: int | None = None
    blocked_on_stream_limit_seconds: float = 0.0
    # spec §15.11: sessions
    reconnects: int = 0
    resumed_sessions: int = 0
    messages_retransmitted: int = 0
    bytes_retransmitted: int = 0
    retained_bytes: int = 0
    retained_bytes_peak: int = 0
