"""The CLI's view of backpressure: JSON lines and Prometheus metrics (spec §14).

Both read the same snapshot: every connection's ``statistics()`` and its streams', taken
in the event loop's thread, with the field names of spec §14. ``--json-lines`` prints one
such snapshot per second on stdout; ``--metrics-port`` serves it in the Prometheus text
format from a small HTTP responder running in the same event loop (no thread, so a scrape
sees one consistent moment). Everything here is loop-neutral: the responder's listening
is the thin part of each layer (``_layer_trio``, ``_layer_asyncio``), its answer is
:func:`metrics_reply`. ``prometheus_client`` is imported only for ``--metrics-port``; it
is the optional extra ``flowproto[metrics]``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

from flowproto import ErrorCode, MemoryBudget, StreamResetError
from flowproto.iolayer import ConnectionLostBase

if TYPE_CHECKING:
    from ._layer import Layer

#: A ``FlowConnection`` or ``FlowStream`` of either I/O layer (the same public names).
FlowConnection = Any
FlowStream = Any

#: What ``pip`` needs for ``--metrics-port``.
#: What to run when prometheus_client is missing. flowproto installs from a checkout, so
#: ``pip install flowproto[metrics]`` would look for it on PyPI; these two work.
METRICS_HINT: Final = (
    "--metrics-port needs prometheus_client: pip install 'prometheus_client>=0.17' "
    "(or, in the flowproto checkout: pip install -e '.[metrics]')"
)

#: spec §14, per stream: (field, kind, Prometheus name without ``_total``, help).
STREAM_METRICS: Final = (
    ("blocked_on_peer_seconds", "counter", "flowproto_blocked_on_peer_seconds",
     "Seconds send() waited for peer credit (the peer's consumer set the pace)"),
    ("blocked_on_peer_events", "counter", "flowproto_blocked_on_peer_events",
     "Sends that had to wait for credit"),
    ("blocked_on_app_seconds", "counter", "flowproto_blocked_on_app_seconds",
     "Seconds open for sending and not waiting for credit (this side set the pace)"),
    ("peer_consume_rate", "gauge", "flowproto_peer_consume_rate",
     "The peer's reported consumption rate, messages per second"),
    ("peer_queue_depth", "gauge", "flowproto_peer_queue_depth",
     "The peer's reported queue depth, messages"),
    ("queue_depth_messages", "gauge", "flowproto_queue_depth_messages",
     "Messages received and not yet consumed"),
    ("queue_depth_bytes", "gauge", "flowproto_queue_depth_bytes",
     "Bytes received and not yet consumed"),
    ("consume_rate", "gauge", "flowproto_consume_rate", "Messages consumed per second"),
    ("consume_rate_bytes", "gauge", "flowproto_consume_rate_bytes", "Bytes consumed per second"),
    ("drain_seconds", "gauge", "flowproto_drain_seconds",
     "Estimated seconds to drain the queue at the consumption rate"),
    ("starvation_events", "counter", "flowproto_starvation_events",
     "receive() calls that had to wait for a message"),
    ("starved_seconds", "counter", "flowproto_starved_seconds",
     "Seconds receive() waited for messages"),
    ("window_bytes", "gauge", "flowproto_window_bytes", "The stream's receive window, bytes"),
    ("window_messages", "gauge", "flowproto_window_messages",
     "The stream's receive window, messages"),
    ("window_changes", "counter", "flowproto_window_changes",
     "Times the tuner changed the window"),
)  # fmt: skip

#: The per-stream counters, kept process-wide past each stream's end.
_COUNTER_FIELDS: Final = tuple(field for field, kind, _, _ in STREAM_METRICS if kind == "counter")

#: spec §14, per connection.
CONNECTION_METRICS: Final = (
    ("rtt", "gauge", "flowproto_rtt_seconds", "The latest round-trip time measured by PING"),
    ("rtt_min", "gauge", "flowproto_rtt_min_seconds", "The least round-trip time measured"),
    ("window_bytes", "gauge", "flowproto_connection_window_bytes", "The connection window"),
    ("budget_bytes", "gauge", "flowproto_budget_bytes", "The memory budget's capacity"),
    ("budget_committed_bytes", "gauge", "flowproto_budget_committed_bytes",
     "Credit committed by every connection of the budget"),
    ("budget_share_bytes", "gauge", "flowproto_budget_share_bytes",
     "This connection's fair share of the budget"),
)  # fmt: skip


#: spec §15.11, per connection: a session's resumptions (process-wide counters, folded in
#: when a connection is forgotten) and what it retains now (gauges, summed).
SESSION_METRICS: Final = (
    ("reconnects", "counter", "flowproto_reconnects", "Lost transports resumed (sender)"),
    ("resumed_sessions", "counter", "flowproto_resumed_sessions", "Resumptions completed"),
    ("messages_retransmitted", "counter", "flowproto_messages_retransmitted",
     "Messages sent again after a resumption"),
    ("bytes_retransmitted", "counter", "flowproto_bytes_retransmitted",
     "Bytes sent again after a resumption"),
    ("retained_bytes", "gauge", "flowproto_retained_bytes",
     "Bytes kept for a resumption now (spec §15.5)"),
    ("retained_bytes_peak", "gauge", "flowproto_retained_bytes_peak",
     "The most bytes kept for a resumption at once"),
)  # fmt: skip
_SESSION_COUNTERS: Final = tuple(f for f, kind, _, _ in SESSION_METRICS if kind == "counter")

#: How the per-stream figures add up over every stream when series are not labelled
#: per connection (the default): counters and most gauges sum, the drain time is the
#: longest.
_MAX_FIELDS: Final = frozenset({"drain_seconds"})


class Watched:
    """The connections (and their streams) a command exposes, with a label each, and the
    process-wide totals that outlive them (spec §14).

    Counters of streams and connections that ended are folded into ``folded`` when they
    are forgotten, so the process-wide series never go backwards when one ends.
    """

    def __init__(
        self,
        role: str = "",
        per_connection: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role = role
        self.clock = clock  # the event loop's; the snapshot's "time" is seconds since now
        self.per_connection = per_connection  # label series by peer and stream (opt-in)
        self.connections: dict[FlowConnection, str] = {}
        self.streams: dict[FlowStream, str] = {}
        self.start = clock()
        self.folded: dict[str, float] = dict.fromkeys(_COUNTER_FIELDS + _SESSION_COUNTERS, 0.0)
        # Each live stream's counters as last seen: a closed stream may report less (its
        # tuner is gone), and a counter must not go backwards when it is folded.
        self._seen: dict[FlowStream, dict[str, float]] = {}
        self.opened = {"connections": 0, "streams": 0}
        self.closed = {"connections": 0, "streams": 0}
        self.refused = 0  # connections refused (max_connections; a budget counts its own)
        self.budget: MemoryBudget | None = None  # whose refusals count too
        self.resets: dict[str, int] = {}  # streams reset, by code name (either side)
        self.errors: dict[str, int] = {}  # connections ended by an error, by code name

    def add_connection(self, conn: FlowConnection, peer: str) -> None:
        self.connections[conn] = peer
        self.opened["connections"] += 1

    def forget_connection(self, conn: FlowConnection) -> None:
        if self.connections.pop(conn, None) is not None:
            self.closed["connections"] += 1
            stats = conn.statistics()  # spec §15.11: its resumptions go into the totals
            for field in _SESSION_COUNTERS:
                self.folded[field] += getattr(stats, field)

    def count_refused(self, reason: str = "") -> None:
        """A connection was refused before anything of it was processed."""
        self.refused += 1

    def count_failure(self, exc: BaseException) -> None:
        """A stream was reset, or a connection ended by an error: count it by its code."""
        if isinstance(exc, StreamResetError):
            self.count_reset(exc.error_code)
        elif isinstance(exc, ConnectionLostBase) and exc.error_code:
            name = _code_label(exc.error_code)
            self.errors[name] = self.errors.get(name, 0) + 1

    def count_reset(self, code: int) -> None:
        """A stream was reset with ``code`` (by this side, or seen from the peer)."""
        name = _code_label(code)
        self.resets[name] = self.resets.get(name, 0) + 1

    def add_stream(self, stream: FlowStream, peer: str) -> None:
        self.streams[stream] = peer
        self.opened["streams"] += 1

    def forget_stream(self, stream: FlowStream) -> None:
        """The stream ended: its counters go into the process-wide totals."""
        if self.streams.pop(stream, None) is None:
            return
        self.closed["streams"] += 1
        final = self._counters(stream, dataclasses.asdict(stream.statistics()))
        self._seen.pop(stream, None)
        for field in _COUNTER_FIELDS:
            self.folded[field] += final[field]

    def _counters(self, stream: FlowStream, stats: dict[str, Any]) -> dict[str, float]:
        """The stream's counters now: never below what was seen of them before."""
        seen = self._seen.get(stream, {})
        now = {f: max(float(stats.get(f) or 0.0), seen.get(f, 0.0)) for f in _COUNTER_FIELDS}
        self._seen[stream] = now
        return now

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """One JSON-able snapshot: ``extra`` fields, the process-wide ``totals``, then
        every connection and stream."""
        conns = []
        live: dict[str, float] = dict.fromkeys(_COUNTER_FIELDS + _SESSION_COUNTERS, 0.0)
        for conn, peer in list(self.connections.items()):
            entry: dict[str, Any] = {"peer": peer}
            entry.update(dataclasses.asdict(conn.statistics()))
            for field in _SESSION_COUNTERS:
                live[field] += entry[field]
            entry["streams"] = []
            for stream in [s for s in list(self.streams) if s.connection is conn]:
                stats = dataclasses.asdict(stream.statistics())
                entry["streams"].append(stats)
                for field, value in self._counters(stream, stats).items():
                    live[field] += value
            conns.append(entry)
        refused = self.refused + (self.budget.refused if self.budget is not None else 0)
        totals = {
            "connections_opened": self.opened["connections"],
            "connections_closed": self.closed["connections"],
            "connections_refused": refused,
            "streams_reset": dict(self.resets),
            "connection_errors": dict(self.errors),
            "streams_opened": self.opened["streams"],
            "streams_closed": self.closed["streams"],
            **{
                field: self.folded[field] + live[field]
                for field in _COUNTER_FIELDS + _SESSION_COUNTERS
            },
        }
        return {
            "time": round(self.clock() - self.start, 3),
            **extra,
            "totals": totals,
            "connections": conns,
        }


async def json_lines(
    layer: Layer, snapshot: Callable[[], dict[str, Any]], interval: float = 1.0
) -> None:
    """Print ``snapshot()`` as one JSON line on stdout every ``interval`` seconds."""
    tick = layer.now()
    while True:
        tick += interval
        await layer.sleep_until(tick)
        print(json.dumps(snapshot(), separators=(",", ":"), default=repr), flush=True)


def _families(snap: dict[str, Any], per_connection: bool = False) -> Iterator[Any]:
    """Prometheus metric families for one snapshot (spec §14 names).

    Always: ``flowproto_info``, the process-wide counters (messages and bytes, connections
    and streams opened and closed, and every per-stream counter summed over all streams
    ever, which never go backwards) and gauges summed over what is open now, none of them
    labelled by peer. With ``per_connection`` the per-connection and per-stream series
    come instead of the sums, labelled ``peer`` (and ``stream``): a new series for every
    connection, which is why it is opt-in.
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def family(kind: str, name: str, doc: str, labels: list[str] | None = None) -> Any:
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        return cls(name, doc, labels=labels or [])

    info = GaugeMetricFamily(
        "flowproto_info", "flowproto's version and this process's role", labels=["version", "role"]
    )
    info.add_metric([_version(), str(snap.get("role", ""))], 1.0)
    yield info
    direction = "sent" if snap.get("role") == "send" else "received"
    totals = snap.get("totals", {})
    for unit, doc in (("messages", "Messages"), ("bytes", "Bytes")):
        fam = family("counter", f"flowproto_{unit}", f"{doc} sent or received (consumed)",
                     ["direction"])  # fmt: skip
        fam.add_metric([direction], float(snap.get(unit, 0)))
        yield fam
    for what, event in (
        ("connections", "opened"), ("connections", "closed"), ("connections", "refused"),
        ("streams", "opened"), ("streams", "closed"),
    ):  # fmt: skip
        fam = family("counter", f"flowproto_{what}_{event}", f"{what.capitalize()} {event}")
        fam.add_metric([], float(totals.get(f"{what}_{event}", 0)))
        yield fam
    for key, name, doc in (
        ("streams_reset", "flowproto_streams_reset", "Streams reset, by error code (spec §10.1)"),
        ("connection_errors", "flowproto_connection_errors",
         "Connections ended by an error, by error code (spec §10.1)"),
    ):  # fmt: skip
        fam = family("counter", name, doc, ["code"])
        for code, count in sorted(totals.get(key, {}).items()):
            fam.add_metric([code], float(count))
        yield fam
    conns = snap["connections"]
    streams = [(c["peer"], s) for c in conns for s in c["streams"]]
    open_now = family("gauge", "flowproto_open_connections", "Connections open now")
    open_now.add_metric([], float(len(conns)))
    yield open_now
    open_streams = family("gauge", "flowproto_open_streams", "Streams open now")
    open_streams.add_metric([], float(len(streams)))
    yield open_streams
    for field, kind, name, doc in SESSION_METRICS:  # spec §15.11, never labelled by peer
        fam = family(kind, name, doc)
        if kind == "counter":
            fam.add_metric([], float(totals.get(field, 0.0)))
        else:
            fam.add_metric([], float(sum(c.get(field) or 0 for c in conns)))
        yield fam
    if not per_connection:
        for field, kind, name, doc in STREAM_METRICS:
            fam = family(kind, name, doc + " (all streams)")
            if kind == "counter":
                fam.add_metric([], float(totals.get(field, 0.0)))
            else:
                values = [float(s[field]) for _, s in streams if s.get(field) is not None]
                combine = max if field in _MAX_FIELDS else sum
                fam.add_metric([], combine(values) if values else 0.0)
            yield fam
        return
    for field, kind, name, doc in CONNECTION_METRICS:
        fam = family(kind, name, doc, ["peer"])
        for c in conns:
            if c.get(field) is not None:
                fam.add_metric([c["peer"]], float(c[field]))
        yield fam
    conn_reason = GaugeMetricFamily(
        "flowproto_connection_window_reason", "Why the connection window last changed",
        labels=["peer", "reason"],
    )  # fmt: skip
    for c in conns:
        conn_reason.add_metric([c["peer"], c["window_reason"]], 1.0)
    yield conn_reason
    for field, kind, name, doc in STREAM_METRICS:
        fam = family(kind, name, doc, ["peer", "stream"])
        for peer, s in streams:
            if s.get(field) is not None:
                fam.add_metric([peer, str(s["stream_id"])], float(s[field]))
        yield fam
    reason = GaugeMetricFamily(
        "flowproto_window_reason", "Why the stream window last changed",
        labels=["peer", "stream", "reason"],
    )  # fmt: skip
    for peer, s in streams:
        reason.add_metric([peer, str(s["stream_id"]), s["window_reason"]], 1.0)
    yield reason


def _code_label(code: int) -> str:
    """An error code as a label: its name, or UNKNOWN without the number (a peer's codes
    must not make the label set unbounded)."""
    return ErrorCode.describe(code).partition("(")[0]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowproto")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def prometheus_text(snap: dict[str, Any], per_connection: bool = False) -> tuple[bytes, str]:
    """The Prometheus text exposition of a snapshot, and its content type."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    class _Snapshot:
        def collect(self) -> Iterable[Any]:
            return _families(snap, per_connection)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())  # type: ignore[arg-type, unused-ignore]
    return generate_latest(registry), CONTENT_TYPE_LATEST


#: A scrape's request: at most this many bytes are read, within this many seconds.
REQUEST_LIMIT: Final = 8192
REQUEST_SECONDS: Final = 5.0


def metrics_reply(
    request: bytes, snapshot: Callable[[], dict[str, Any]], per_connection: bool = False
) -> bytes:
    """The whole HTTP response to ``request``: the metrics of a fresh snapshot for ``GET
    /metrics`` (headers only for HEAD), 404 for any other path, 405 for another method."""
    method, _, rest = request.partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        status, body, content_type = "405 Method Not Allowed", b"GET only\n", "text/plain"
    elif path != b"/metrics":
        status, body, content_type = "404 Not Found", b"see /metrics\n", "text/plain"
    else:
        status = "200 OK"
        body, content_type = prometheus_text(snapshot(), per_connection)
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    return head if method == b"HEAD" else head + body


def announce_metrics(host: str, port: int) -> None:
    """The line that says where the metrics are (tests read it)."""
    print(f"metrics on http://{host}:{port}/metrics", file=sys.stderr, flush=True)
