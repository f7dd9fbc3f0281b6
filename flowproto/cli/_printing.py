"""What the commands print, as pure functions of their results (no I/O, no clock).

Summaries of ``receive`` and ``send``, the live once-a-second lines, the demo's header,
rows and verdict, the ``--json`` object, and the line ``receive --msgpack --output``
writes per message. The commands decide where each goes (stdout or stderr).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run_demo import DemoResult, DemoSample


def fmt_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as in MB/s)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_size(n: int) -> str:
    """``4194304`` -> ``"4 MiB"``, ``65536`` -> ``"64 KiB"``, ``100`` -> ``"100 B"``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def format_address(sockname: Any) -> str:
    """A socket address as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6)."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: A summary gives no rate over less time than this: 100 messages that arrive in 80 µs
#: are not "1,225,926 msg/s".
MIN_RATE_SECONDS = 0.01


def per_second(count: float, seconds: float) -> float:
    """``count`` per second, 0 over no time (for live lines: see :func:`summary_rate`)."""
    return count / seconds if seconds > 0 else 0.0


def summary_rate(count: float, seconds: float, scale: float = 1.0, digits: int = 1) -> float | None:
    """A summary's rate, ``count / seconds / scale`` rounded; None (JSON null) over less
    than :data:`MIN_RATE_SECONDS`."""
    if seconds < MIN_RATE_SECONDS:
        return None
    return round(count / seconds / scale, digits)


def _rates(result: dict[str, Any]) -> str:
    """``": 306 msg/s, 0.03 MB/s"``, or what stands in for it when there is no rate."""
    if result.get("msgs_per_s") is None:
        return " (too short for a rate)"
    return f": {result['msgs_per_s']:.0f} msg/s, {result['mb_per_s']:.2f} MB/s"


def json_summary(result: dict[str, Any]) -> str:
    """The ``--json`` summary: one JSON object on one line."""
    return json.dumps(result, separators=(", ", ": "))


# --- receive and send -----------------------------------------------------------------------


def receive_summary(result: dict[str, Any]) -> list[str]:
    """The receiver's readable summary (for stderr)."""
    lines = [
        f"received {result['messages']} messages ({result['bytes']} bytes) in "
        f"{result['seconds']:.2f} s{_rates(result)}; buffer peaked at "
        f"{result['buffered_peak_messages']} messages"
    ]
    lat = result.get("latency_ms")
    if lat:
        lines.append(f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms")
    files = result.get("output_files")
    if files:
        lines.append(
            f"output files: {files['complete']} complete, {files['incomplete']} incomplete"
        )
        for path in files["incomplete_paths"]:
            lines.append(f"incomplete: {path}")
    if result.get("warnings_suppressed"):
        lines.append(
            f"{result['warnings_suppressed']} more warnings held back (one line per peer "
            f"and kind of problem per 10 s); {result['problem_count']} problems in all"
        )
    if result.get("refused_streams"):
        lines.append(f"refused {result['refused_streams']} streams: --output FILE takes one stream")
    if result.get("resumed"):
        lines.append(
            f"senders resumed their sessions {result['resumed']} times after lost connections "
            "(spec §15); nothing was lost or received twice"
        )
    return lines


#: Failed streams given a line each; the rest are counted in one more line.
MAX_FAILED_LINES = 10


def send_summary(result: dict[str, Any]) -> str:
    """The sender's readable summary (for stderr)."""
    failed = result.get("failed_streams") or []
    return (
        f"sent {result['messages']} messages ({result['bytes']} bytes) in "
        f"{result['seconds']:.2f} s{_rates(result)}; blocked on credit "
        f"{result['seconds_blocked']:.2f} s; "
        f"the receiver confirmed {result['delivered']} consumed"
        + (f"; {len(failed)} of {result['streams']} streams failed" if failed else "")
        + _resumed(result)
    )


def _resumed(result: dict[str, Any]) -> str:
    """The sender's resumptions (spec §15), if there were any."""
    reconnects = result.get("reconnects")
    if not reconnects:
        return ""
    return (
        f"; the connection was lost and resumed {reconnects} times, "
        f"{result['messages_retransmitted']} messages sent again, "
        "none lost or received twice"
    )


def per_stream_lines(per_stream: list[dict[str, Any]]) -> list[str]:
    """What each stream sent and the receiver confirmed (at most MAX_FAILED_LINES)."""
    lines = [
        f"  stream {p['stream']}: sent {p['sent']}, confirmed {p['confirmed']}" for p in per_stream
    ]
    return _capped(lines, "  and {} more streams (--json has all)")


def failed_stream_lines(failed: list[dict[str, Any]]) -> list[str]:
    """One ``flowproto: error:`` line per failed stream (at most MAX_FAILED_LINES)."""
    lines = [f"flowproto: error: {f['error']}" for f in failed]
    return _capped(lines, "flowproto: error: and {} more streams failed (--json lists them all)")


def _capped(lines: list[str], more: str) -> list[str]:
    """The first MAX_FAILED_LINES lines, then ``more`` with how many were left out."""
    if len(lines) <= MAX_FAILED_LINES:
        return lines
    return [*lines[:MAX_FAILED_LINES], more.format(len(lines) - MAX_FAILED_LINES)]


def fmt_latency(lat: dict[str, float] | None) -> str:
    """The latency part of a live line ("" without latencies)."""
    if lat is None:
        return ""
    return f" | latency p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms max {lat['max']:.2f} ms"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"bytes_base64": base64.b64encode(bytes(obj)).decode("ascii")}
    return repr(obj)


def json_line(message: Any) -> bytes:
    """One received msgpack message as a JSON line (``receive --msgpack --output``)."""
    try:
        text = json.dumps(message, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):  # e.g. bytes used as a map key
        text = json.dumps({"repr": repr(message)})
    return text.encode("utf-8") + b"\n"


# --- demo -----------------------------------------------------------------------------------


def demo_header(address: str, rate: float, window: int, size: int, duration: float) -> str:
    """What the demo shows, and the heading of its table."""
    return (
        f"flowproto demo: a fast sender and a slow receiver, one connection ({address})\n"
        f"  receiver: consumes {rate:g} messages/s; its credit (window) lets the sender\n"
        f"            have at most {window} messages it has not consumed yet\n"
        f"  sender:   sends {size}-byte messages as fast as its credit allows, "
        f"for {duration:g} s\n\n"
        f"  {'time':>5}  {'sent':>6}  {'received':>8}  {'receiver buffer':>15}"
        f"  {'sender blocked on credit':>24}"
    )


def demo_row(sample: DemoSample, window: int) -> str:
    """One row of the demo's table."""
    return (
        f"  {sample.elapsed:3.0f} s  {sample.sent:6}  {sample.received:8}"
        f"  {f'{sample.buffered} of {window}':>15}"
        f"  {f'{sample.seconds_blocked:.2f} s':>24}"
    )


def demo_verdict(r: DemoResult) -> str:
    """The line that says whether the demo held: nothing lost, the buffer within the window."""
    lost = r.sent - r.received
    if not r.ok:
        return (
            f"FAILED: sent {r.sent}, received {r.received}, lost {lost}, confirmed {r.delivered};"
            f" receiver buffer peaked at {r.peak_buffered} (window {r.window})"
        )
    if r.seconds_blocked > 0:
        how = "backpressure worked"
    else:
        how = "the receiver kept up, so credit never ran out (try a lower --rate)"
    return (
        f"\nsent {r.sent}, received {r.received}, lost {lost}; receiver buffer peaked at"
        f" {r.peak_buffered} ≤ window {r.window}; sender spent {r.seconds_blocked:.1f} s"
        f" blocked on credit — {how}"
    )
