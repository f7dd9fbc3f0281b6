"""The CLI's view of backpressure: JSON lines and Prometheus metrics (spec §14).

Both read the same snapshot: every connection's ``statistics()`` and its streams', taken
in the Trio thread, with the field names of spec §14. ``--json-lines`` prints one such
snapshot per second on stdout; ``--metrics-port`` serves it in the Prometheus text
format from a small HTTP responder running in the same Trio run (no thread, so a scrape
sees one consistent moment). ``prometheus_client`` is imported only for
``--metrics-port``; it is the optional extra ``flowproto[metrics]``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import trio

from flowproto.trio import FlowConnection, FlowStream

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


class Watched:
    """The connections (and their streams) a command exposes, with a label each."""

    def __init__(self) -> None:
        self.connections: dict[FlowConnection, str] = {}
        self.streams: dict[FlowStream, str] = {}
        self.start = trio.current_time()

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """One JSON-able snapshot: ``extra`` fields, then every connection and stream."""
        conns = []
        for conn, peer in list(self.connections.items()):
            entry: dict[str, Any] = {"peer": peer}
            entry.update(dataclasses.asdict(conn.statistics()))
            entry["streams"] = [
                dataclasses.asdict(s.statistics())
                for s in list(self.streams)
                if s.connection is conn
            ]
            conns.append(entry)
        return {
            "time": round(trio.current_time() - self.start, 3),
            **extra,
            "connections": conns,
        }


async def json_lines(snapshot: Callable[[], dict[str, Any]], interval: float = 1.0) -> None:
    """Print ``snapshot()`` as one JSON line on stdout every ``interval`` seconds."""
    tick = trio.current_time()
    while True:
        tick += interval
        await trio.sleep_until(tick)
        print(json.dumps(snapshot(), separators=(",", ":"), default=repr), flush=True)


def _families(snap: dict[str, Any]) -> Iterator[Any]:
    """Prometheus metric families for one snapshot (spec §14 names)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def family(kind: str, name: str, doc: str, labels: list[str]) -> Any:
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        return cls(name, doc, labels=labels)

    conns = snap["connections"]
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
    streams = [(c["peer"], s) for c in conns for s in c["streams"]]
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


def prometheus_text(snap: dict[str, Any]) -> tuple[bytes, str]:
    """The Prometheus text exposition of a snapshot, and its content type."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    class _Snapshot:
        def collect(self) -> Iterable[Any]:
            return _families(snap)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())  # type: ignore[arg-type, unused-ignore]
    return generate_latest(registry), CONTENT_TYPE_LATEST


async def serve_metrics(
    host: str,
    port: int,
    snapshot: Callable[[], dict[str, Any]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every HTTP request with the metrics of a fresh snapshot; reports the port."""
    prometheus_text({"connections": []})  # fail early if prometheus_client is broken

    async def answer(stream: trio.SocketStream) -> None:
        request = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                request += chunk
        body, content_type = prometheus_text(snapshot())
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        try:
            with trio.move_on_after(5):
                await stream.send_all(head + body)
        except trio.BrokenResourceError:
            pass
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    print(f"metrics on http://{host}:{bound}/metrics", file=sys.stderr, flush=True)
    task_status.started(bound)
    await trio.serve_listeners(answer, listeners)
