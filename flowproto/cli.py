"""The ``flowproto`` command line.

Installed as the ``flowproto`` console script and runnable as ``python -m flowproto``.
Each command turns its options into the library's own values (``Settings``, a codec),
runs one function of ``_cli_run`` under ``trio.run`` and prints its summary: one JSON
object on stdout with ``--json``, a few readable lines on stderr otherwise. Live
statistics go to stderr once a second. Errors the user can act on end the command with
one ``flowproto: error: ...`` line and exit status 1; bad options exit with status 2.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import click

from ._autotune import AutoTune
from ._frames import Settings

_DEFAULTS = Settings()


def _host_port(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int]:
    """``HOST:PORT`` (``[HOST]:PORT`` for IPv6); an empty HOST means every interface."""
    assert value is not None  # the options using this are required
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT, for example 127.0.0.1:9000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` under ``trio.run``; expected failures become one line and exit 1."""
    import trio

    from ._cli_run import EXPECTED_ERRORS, describe, flatten

    ctx = click.get_current_context()
    try:
        return trio.run(fn, *args)
    except BaseException as exc:  # sorted out below; anything unexpected is re-raised
        leaves = flatten(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            click.echo("flowproto: interrupted", err=True)
            ctx.exit(130)
        if all(isinstance(e, EXPECTED_ERRORS) for e in leaves):
            click.echo(f"flowproto: error: {describe(leaves[0])}", err=True)
            ctx.exit(1)
        raise


def _print_json(result: dict[str, Any]) -> None:
    click.echo(json.dumps(result, separators=(", ", ": ")))


def _metrics_address(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """``PORT`` (on 127.0.0.1) or ``HOST:PORT`` for --metrics-port; checks the extra."""
    if value is None:
        return None
    host, sep, port_text = value.rpartition(":")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(f"{value!r} is not PORT or HOST:PORT")
    try:
        import prometheus_client  # noqa: F401  (optional: the flowproto[metrics] extra)
    except ImportError:
        from ._cli_metrics import METRICS_HINT

        raise click.UsageError(METRICS_HINT) from None
    return (host.strip("[]") if sep and host else "127.0.0.1"), int(port_text)


_METRICS_HELP = (
    "Serve the statistics of spec §14 in the Prometheus text format at "
    "http://HOST:PORT/metrics (PORT alone: on 127.0.0.1; 0 picks a free port, printed as "
    "'metrics on ...'). Needs the optional extra: pip install flowproto[metrics]."
)
_JSON_LINES_HELP = (
    "Print the statistics of spec §14 (every connection and stream) as one JSON object per "
    "line on stdout, once a second."
)


@click.group()
@click.version_option(package_name="flowproto")
def main() -> None:
    """flowproto: a credit-based flow-control protocol for message streams.

    Start with 'flowproto demo'. To see backpressure between two processes, run
    'flowproto receive --listen 127.0.0.1:9000 --rate 100' in one terminal and
    'flowproto send --connect 127.0.0.1:9000 --count 1000' in another.

    Run 'flowproto COMMAND --help' for help on a command.
    """


# --- demo --------------------------------------------------------------------------------


@main.command(short_help="Show backpressure: a fast sender, a slow receiver, one process.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=4.0,
    show_default=True,
    metavar="S",
    help="Seconds the sender sends for.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=200.0,
    show_default=True,
    metavar="N",
    help="Messages per second the receiver consumes.",
)
@click.option(
    "--window-messages",
    type=click.IntRange(min=1, max=(1 << 31) - 1),
    default=16,
    show_default=True,
    metavar="N",
    help="The receiver's per-stream credit: unconsumed messages it lets the sender have.",
)
def demo(duration: float, rate: float, window_messages: int) -> None:
    """Run a fast sender and a slow receiver over loopback TCP, in this process.

    The sender sends 100-byte messages as fast as its credit allows; the receiver
    consumes RATE of them a second and grants credit for at most WINDOW-MESSAGES
    unconsumed messages. Once a second a line shows what was sent and received, the
    receiver's buffer and the time the sender has spent blocked on credit. At the end
    the verdict checks that nothing was lost and that the receiver never held more
    than its window. Exit status 0 if those held, 1 if not.
    """
    from ._cli_run import run_demo

    r = _run(run_demo, duration, rate, window_messages)
    lost = r.sent - r.received
    if not r.ok:
        click.echo(
            f"FAILED: sent {r.sent}, received {r.received}, lost {lost}, confirmed {r.delivered};"
            f" receiver buffer peaked at {r.peak_buffered} (window {r.window})"
        )
        click.get_current_context().exit(1)
    if r.seconds_blocked > 0:
        how = "backpressure worked"
    else:
        how = "the receiver kept up, so credit never ran out (try a lower --rate)"
    click.echo(
        f"\nsent {r.sent}, received {r.received}, lost {lost}; receiver buffer peaked at"
        f" {r.peak_buffered} ≤ window {r.window}; sender spent {r.seconds_blocked:.1f} s"
        f" blocked on credit — {how}"
    )


# --- receive -----------------------------------------------------------------------------


@main.command(short_help="Run a consumer server (optionally a slow one).")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    callback=_host_port,
    required=True,
    help="Where to listen, as HOST:PORT. Port 0 picks a free port; the bound address is "
    "printed to stderr as 'listening on HOST:PORT'. An empty HOST means every interface.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Consume at most N messages per second (on a fixed schedule, so it does not drift).",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="MS",
    help="Spend MS milliseconds on each message (with --rate, both apply).",
)
@click.option(
    "--window-bytes",
    type=click.IntRange(min=1),
    default=_DEFAULTS.stream_bytes,
    show_default=True,
    metavar="BYTES",
    help="Per-stream credit in bytes: unconsumed bytes a sender may have on a stream. "
    "The connection window is the larger of this and 16 MiB.",
)
@click.option(
    "--window-messages",
    type=click.IntRange(min=1, max=(1 << 31) - 1),
    default=_DEFAULTS.stream_messages,
    show_default=True,
    metavar="N",
    help="Per-stream credit in messages: unconsumed messages a sender may have on a stream.",
)
@click.option(
    "--max-message",
    type=click.IntRange(min=1),
    metavar="BYTES",
    help="Largest message accepted; at most --window-bytes. "
    "[default: the smaller of 1 MiB and --window-bytes]",
)
@click.option(
    "--output",
    type=click.File("wb", lazy=False),
    metavar="FILE|-",
    help="Write received messages to FILE ('-': stdout). --raw writes their exact bytes, so "
    "a file sent with 'send --input' arrives byte-identical; --msgpack writes one JSON line "
    'per message (bytes as {"bytes_base64": ...}).',
)
@click.option(
    "--raw/--msgpack",
    default=True,
    show_default=True,
    help="Messages are raw bytes, or msgpack-encoded objects. Use the same on both sides.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N messages; streams still sending are reset. (With several streams, "
    "what the others were already taking is processed too, so a few more may be counted.)",
)
@click.option("--once", is_flag=True, help="Stop when the first connection ends.")
@click.option(
    "--latency",
    is_flag=True,
    help="Report latency, reading each message's first 8 bytes as the sender's time.time_ns() "
    "(big-endian), as messages generated by 'flowproto send --size/--count' carry.",
)
@click.option(
    "--latency-target",
    type=click.FloatRange(min=0),
    default=100.0,
    show_default=True,
    metavar="MS",
    help="Auto-tuning: how long a message may wait for the consumer. Each window follows "
    "the consumer's rate times (round trip + MS), grows toward the bandwidth-delay product "
    "when the sender waits on credit, and starts at --window-bytes/--window-messages "
    "(spec §8.9).",
)
@click.option(
    "--no-autotune",
    is_flag=True,
    help="Keep --window-bytes and --window-messages fixed (spec §8.6) instead of tuning them.",
)
@click.option(
    "--memory-budget",
    type=click.IntRange(min=1),
    metavar="BYTES",
    help="Cap the credit that all connections grant together, in fair shares; a "
    "connection that does not fit is refused with GOAWAY (spec §8.9).",
)
@click.option(
    "--metrics-port", metavar="[HOST:]PORT", callback=_metrics_address, help=_METRICS_HELP
)
@click.option("--json-lines", is_flag=True, help=_JSON_LINES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No live statistics.")
def receive(
    listen: tuple[str, int],
    rate: float | None,
    delay: float,
    window_bytes: int,
    window_messages: int,
    max_message: int | None,
    output: BinaryIO | None,
    raw: bool,
    count: int | None,
    once: bool,
    latency: bool,
    latency_target: float,
    no_autotune: bool,
    memory_budget: int | None,
    metrics_port: tuple[str, int] | None,
    json_lines: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Accept connections and consume every stream's messages, printing statistics.

    Without --count or --once it serves until interrupted (Ctrl-C, which still prints
    the summary; exit status 130). Each stream is consumed until its sender ends it;
    then this side ends it too, which tells the sender that every message was consumed.
    Live statistics (throughput, buffered messages and bytes, open credit, latency) go
    to stderr once a second; the summary goes to stderr, or to stdout as JSON with
    --json.
    """
    from ._cli_run import ReceiveOptions, receiver_settings, run_receive

    if (as_json or json_lines) and output is not None and _is_stdout(output):
        raise click.UsageError("--json/--json-lines and --output - would both write to stdout")
    if no_autotune and latency_target != 100.0:
        raise click.UsageError("--latency-target tunes windows; --no-autotune keeps them fixed")
    if max_message is not None and max_message > window_bytes:
        raise click.BadParameter(
            f"{max_message} is over --window-bytes {window_bytes}", param_hint="--max-message"
        )
    try:
        settings = receiver_settings(window_bytes, window_messages, max_message)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    host, port = listen
    opts = ReceiveOptions(
        host=host or None,
        port=port,
        settings=settings,
        codec="raw" if raw else "msgpack",
        rate=rate,
        delay=delay / 1000,
        output=output,
        count=count,
        once=once,
        latency=latency,
        live=not quiet,
        autotune=None if no_autotune else AutoTune(latency_target=latency_target / 1000),
        memory_budget=memory_budget,
        metrics=metrics_port,
        json_lines=json_lines,
    )
    result = _run(run_receive, opts)
    if as_json:
        _print_json(result)
    else:
        _print_receive_summary(result)
    if result["interrupted"]:
        click.echo("flowproto: interrupted", err=True)
        click.get_current_context().exit(130)


def _print_receive_summary(result: dict[str, Any]) -> None:
    click.echo(
        f"received {result['messages']} messages ({result['bytes']} bytes) in "
        f"{result['seconds']:.2f} s: {result['msgs_per_s']:.0f} msg/s, "
        f"{result['mb_per_s']:.2f} MB/s; buffer peaked at {result['buffered_peak_messages']} "
        f"messages",
        err=True,
    )
    lat = result.get("latency_ms")
    if lat:
        click.echo(
            f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms", err=True
        )


def _is_stdout(f: BinaryIO) -> bool:
    return f is sys.stdout.buffer or getattr(f, "name", None) in ("<stdout>", "-")


# --- send --------------------------------------------------------------------------------


@main.command(short_help="Send a file, stdin or generated messages to a receiver.")
@click.option(
    "--connect",
    metavar="HOST:PORT",
    callback=_host_port,
    required=True,
    help="The receiver's address, as HOST:PORT.",
)
@click.option(
    "--input",
    "source",
    type=click.File("rb"),
    metavar="FILE|-",
    help="Send FILE ('-': stdin) in chunks of --chunk-size bytes, or one message per line "
    "with --lines.",
)
@click.option(
    "--lines",
    is_flag=True,
    help="With --input: one message per line (--raw keeps the line ending, so the "
    "receiver's --output is byte-identical; --msgpack sends each line as a string).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=65536,
    show_default=True,
    metavar="BYTES",
    help="With --input: the size of each message.",
)
@click.option(
    "--size",
    type=click.IntRange(min=8),
    metavar="BYTES",
    help="Generate messages of BYTES bytes, each starting with its send time "
    "(8-byte big-endian time.time_ns(), for 'receive --latency').  [default: 100]",
)
@click.option(
    "--count", type=click.IntRange(min=1), metavar="N", help="Generate N messages in all."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Generate messages for S seconds (with --count: whichever ends first).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Send at most N messages per second in all (on a fixed schedule).",
)
@click.option(
    "--streams",
    type=click.IntRange(min=1, max=1000),
    default=1,
    show_default=True,
    metavar="N",
    help="Generated messages are shared out over N streams of one connection.",
)
@click.option(
    "--raw/--msgpack",
    default=True,
    show_default=True,
    help="Messages are raw bytes, or msgpack-encoded objects. Use the same on both sides.",
)
@click.option(
    "--pace",
    is_flag=True,
    help="Pace each stream from the receiver's feedback while its consumer is the "
    "bottleneck: at most 5% above the rate it reports (spec §8.10).",
)
@click.option(
    "--metrics-port", metavar="[HOST:]PORT", callback=_metrics_address, help=_METRICS_HELP
)
@click.option("--json-lines", is_flag=True, help=_JSON_LINES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No live statistics and no progress bar.")
def send(
    connect: tuple[str, int],
    source: BinaryIO | None,
    lines: bool,
    chunk_size: int,
    size: int | None,
    count: int | None,
    duration: float | None,
    rate: float | None,
    streams: int,
    raw: bool,
    pace: bool,
    metrics_port: tuple[str, int] | None,
    json_lines: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Connect to a receiver, send messages, and wait until it has consumed them all.

    The messages come from --input, or are generated with --size and --count or
    --duration. When they are all sent the streams are closed and the sender waits for
    the receiver to end its side, which it does after consuming everything; the
    summary's 'delivered' is the number of messages the receiver confirmed consumed
    (exit status 1 if that is not all of them). Live statistics go to stderr once a
    second, as a progress bar when stderr is a terminal and the total is known.

    Summary fields: messages, bytes, seconds, msgs_per_s, mb_per_s (10^6 bytes),
    seconds_blocked (waiting for credit, summed over streams), delivered, streams.
    """
    from ._cli_run import SendOptions, run_send

    host, port = connect
    if not host or port == 0:
        raise click.BadParameter(
            f"{host}:{port} needs a host and a non-zero port", param_hint="--connect"
        )
    if source is not None:
        if size is not None or count is not None or duration is not None:
            raise click.UsageError("--input cannot be combined with --size, --count or --duration")
        if streams > 1:
            raise click.UsageError("--input is sent on one stream; drop --streams")
    else:
        if lines:
            raise click.UsageError("--lines needs --input")
        if count is None and duration is None:
            raise click.UsageError("say what to send: --input FILE, --count N or --duration S")
    opts = SendOptions(
        host=host,
        port=port,
        codec="raw" if raw else "msgpack",
        streams=streams,
        input=source,
        lines=lines,
        chunk_size=chunk_size,
        size=size if size is not None else 100,
        count=count,
        duration=duration,
        rate=rate,
        live=not quiet,
        pacing=pace,
        metrics=metrics_port,
        json_lines=json_lines,
    )
    total = _known_total(opts)
    if total is None or quiet or not sys.stderr.isatty():
        result = _run(run_send, opts, None)
    else:
        with click.progressbar(
            length=total, label="sending", file=sys.stderr, item_show_func=lambda s: s
        ) as bar:
            result = _run(run_send, opts, lambda n, line: bar.update(n, line))
    if as_json:
        _print_json(result)
        return
    click.echo(
        f"sent {result['messages']} messages ({result['bytes']} bytes) in "
        f"{result['seconds']:.2f} s: {result['msgs_per_s']:.0f} msg/s, "
        f"{result['mb_per_s']:.2f} MB/s; blocked on credit {result['seconds_blocked']:.2f} s; "
        f"the receiver confirmed {result['delivered']} consumed",
        err=True,
    )


def _known_total(opts: Any) -> int | None:
    """How many messages will be sent, if that is known before sending."""
    if opts.input is None:
        return int(opts.count) if opts.count is not None and opts.duration is None else None
    if opts.lines:
        return None
    try:
        st = os.fstat(opts.input.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    return -(-st.st_size // int(opts.chunk_size))


# --- conformance -------------------------------------------------------------------------


def _optional_host_port(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    return None if value is None else _host_port(ctx, param, value)


@main.command(short_help="Check a flowproto peer against the spec (h2spec-style cases).")
@click.argument("target", metavar="HOST:PORT", required=False, callback=_optional_host_port)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    callback=_optional_host_port,
    help="Check a sender instead: listen here and run one case per connection it makes "
    "(run 'flowproto send --connect ...' once per case). Port 0 picks a free port, "
    "printed to stderr as 'listening on HOST:PORT'.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    metavar="S",
    help="Seconds to wait for an answer the peer owes at once.",
)
@click.option(
    "--timer-wait",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    metavar="S",
    help="Seconds to wait for one of the peer's timers (handshake and frame timeouts).",
)
@click.option("--no-timers", is_flag=True, help="Skip the cases that wait for the peer's timers.")
@click.option(
    "--strict",
    is_flag=True,
    help="Require GOAWAY before every close, and ENHANCE_YOUR_CALM for every flood (the "
    "reference implementation's budgets, spec §10.7).",
)
@click.option(
    "--only",
    "select",
    multiple=True,
    metavar="ID",
    help="Run only the cases of a spec section or with this id (4.3, 7.2/1); repeatable.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=64),
    default=8,
    show_default=True,
    metavar="N",
    help="Cases run at once, each on its own connection.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def conformance(
    target: tuple[str, int] | None,
    listen: tuple[str, int] | None,
    timeout: float,
    timer_wait: float,
    no_timers: bool,
    strict: bool,
    select: tuple[str, ...],
    concurrency: int,
    as_json: bool,
) -> None:
    """Send crafted frames to the flowproto peer at HOST:PORT and check its answers.

    Each case opens its own connection, sends a preface and HELLO (or breaks them on
    purpose), then frames built by hand, and checks the answer the spec requires: the
    right GOAWAY code and a close, the right RESET with the connection still alive, or a
    PING still answered after input that must be ignored. Case ids are spec sections
    (4.2/1 checks spec §4.2). The peer must accept connections, as 'flowproto receive'
    does. With --listen instead of HOST:PORT, the peer under test is a sender that
    connects once per case, as 'flowproto send' does. Prints a pass/fail table; exit
    status 0 if no case failed, 1 otherwise.
    """
    from .conformance import format_table, run_against, run_listening

    if (target is None) == (listen is None):
        raise click.UsageError("give the peer's HOST:PORT, or --listen HOST:PORT for a sender")
    if target is not None:
        host, port = target
        if not host or port == 0:
            raise click.BadParameter(f"{host}:{port} needs a host and a non-zero port")
        results = _run(
            functools.partial(
                run_against,
                host,
                port,
                timeout=timeout,
                timer_wait=timer_wait,
                strict=strict,
                select=select,
                timers=not no_timers,
                concurrency=concurrency,
            )
        )
    else:
        assert listen is not None
        host, port = listen
        results = _run(
            functools.partial(
                run_listening,
                host or None,
                port,
                lambda line: click.echo(line, err=True),
                timeout=timeout,
                timer_wait=timer_wait,
                strict=strict,
                select=select,
            )
        )
    if not results:
        raise click.BadParameter(f"no case matches {', '.join(select)}", param_hint="--only")
    if as_json:
        _print_json(
            {
                "target": f"{host}:{port}",
                "passed": sum(r.outcome == "pass" for r in results),
                "failed": sum(r.outcome == "FAIL" for r in results),
                "skipped": sum(r.outcome == "skip" for r in results),
                "cases": [
                    {
                        "id": r.case.id,
                        "description": r.case.description,
                        "result": r.outcome,
                        "answer": r.detail,
                        "seconds": round(r.seconds, 3),
                    }
                    for r in results
                ],
            }
        )
    else:
        label = f"{host}:{port}" if target is not None else f"the sender (--listen {host}:{port})"
        click.echo(format_table(results, label))
    if any(r.outcome == "FAIL" for r in results):
        click.get_current_context().exit(1)


# --- bench --------------------------------------------------------------------------------


@main.command(
    short_help="Run the socket benchmarks.",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the socket benchmarks (flowproto.bench; the bench extra adds plots and zmq).

    Sender and receiver run as separate processes over TCP on 127.0.0.1 for every
    strategy and consumer speed; 'flowproto bench --quick' is a smoke test of under a
    minute, 'flowproto bench --help' lists the options.
    """
    from flowproto.bench import main as bench_main

    click.get_current_context().exit(bench_main(list(args)))
