"""``flowproto receive``: a consumer server, optionally a slow one, printing statistics."""

from __future__ import annotations

import os
import signal

import click

from flowproto import AutoTune, Settings

from ._access import ReceiverAccess, UnixAddress
from ._options import (
    UNIX_LISTEN_HELP,
    Quantity,
    backend_option,
    codec_option,
    listen_address,
    observability_options,
    rate_option,
    receiver_access_options,
    window_messages_option,
)
from ._printing import human_size

_DEFAULTS = Settings()


def _output_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--output FILE`` must be creatable: a file (not a directory) in a writable directory.
    Nothing is created or truncated until a stream takes it."""
    if value is None or value == "-":
        return value
    if os.path.isdir(value):
        raise click.BadParameter(f"{value!r} is a directory (for a file per stream: --output-dir)")
    directory = os.path.dirname(value) or "."
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot create files in {directory!r}")
    return value


@click.command(short_help="Run a consumer server (optionally a slow one).")
@click.option(
    "--listen",
    metavar="[HOST:]PORT|unix:PATH",
    callback=listen_address,
    required=True,
    help="Where to listen, as HOST:PORT. PORT alone listens on 127.0.0.1 (this machine "
    "only); an empty HOST (':PORT') means every interface. Port 0 picks a free port; the "
    "bound address is printed to stderr as 'listening on HOST:PORT'." + UNIX_LISTEN_HELP,
)
@rate_option("Consume at most N messages per second (on a fixed schedule, so it does not drift).")
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="MS",
    help="Spend MS milliseconds on each message (with --rate, both apply).",
)
@click.option(
    "--window-bytes",
    type=Quantity(min=1),
    default=_DEFAULTS.stream_bytes,
    metavar="BYTES",
    help="Per-stream credit in bytes: unconsumed bytes a sender may have on a stream. "
    "The connection window is the larger of this and 16 MiB. Sizes take units: 64KiB, "
    f"4MiB, 4M (= 4,000,000).  [default: {human_size(_DEFAULTS.stream_bytes)}]",
)
@window_messages_option(
    _DEFAULTS.stream_messages,
    "Per-stream credit in messages: unconsumed messages a sender may have on a stream.",
)
@click.option(
    "--max-message",
    type=Quantity(min=1),
    metavar="BYTES",
    help="Largest message accepted; at most --window-bytes. "
    "[default: the smaller of 1 MiB and --window-bytes]",
)
@click.option(
    "--max-streams",
    type=click.IntRange(min=1, max=(1 << 31) - 1),
    default=_DEFAULTS.max_streams,
    show_default=True,
    metavar="N",
    help="Streams a sender may have open at once on one connection (spec §6.4); "
    "'send --streams' over it fails before sending anything.",
)
@click.option(
    "--output",
    metavar="FILE|-",
    callback=_output_file,
    help="Write received messages to FILE ('-': stdout). --raw writes their exact bytes, so "
    "a file sent with 'send --input' arrives byte-identical; --msgpack writes one JSON line "
    'per message (bytes as {"bytes_base64": ...}). FILE takes exactly one stream, the '
    "first: every other stream, at once or later, is refused (REFUSED_STREAM) before any of "
    "its bytes are written. FILE is written as FILE.partial and renamed to FILE when the "
    "stream ends cleanly, before the sender is told; an incomplete transfer keeps the "
    "FILE.partial name, and the summary names it. ('-' takes every stream.)",
)
@click.option(
    "--output-dir",
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, writable=True),
    help="Write each stream to its own file in DIR, named "
    "PEERHOST_PEERPORT_CONNECTION_STREAM (the connection numbered from 1 by this receiver), "
    "for many senders, each written as NAME.partial and renamed when its stream ends "
    "cleanly. A file of that name is replaced.",
)
@click.option(
    "--fsync",
    is_flag=True,
    help="Also fsync the output file (--output FILE, --output-dir) before the credit of "
    "each batch goes back, and its directory after the final rename, so what the "
    "sender sees confirmed survives a power cut, not only a killed receiver. Slower: one "
    "fsync per batch of up to 256 messages, often ten times slower or worse on a disk. "
    "(Without it, every batch is written and flushed to the OS before its credit returns.)",
)
@codec_option
@click.option(
    "--count",
    type=Quantity(min=1),
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
    type=Quantity(min=1),
    metavar="BYTES",
    help="Cap the credit that all connections grant together, in fair shares; a "
    "connection that does not fit is refused with GOAWAY (spec §8.9).",
)
@click.option(
    "--resume-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="S",
    help="Keep a sender's session S seconds after its connection is lost, so that it can "
    "reconnect and resume: nothing lost or received twice (spec §15). 0: no sessions.",
)
@receiver_access_options
@observability_options("No live statistics.")
@backend_option
def receive(
    listen: tuple[str, int] | UnixAddress,
    rate: float | None,
    delay: float,
    window_bytes: int,
    window_messages: int,
    max_message: int | None,
    max_streams: int,
    output: str | None,
    output_dir: str | None,
    fsync: bool,
    raw: bool,
    count: int | None,
    once: bool,
    latency: bool,
    latency_target: float,
    no_autotune: bool,
    memory_budget: int | None,
    resume_timeout: float,
    metrics_port: tuple[str, int] | None,
    metrics_per_connection: bool,
    json_lines: bool,
    as_json: bool,
    quiet: bool,
    access: ReceiverAccess,
    backend: str,
) -> None:
    """Accept connections and consume every stream's messages, printing statistics.

    Without --count or --once it serves until interrupted. Ctrl-C (SIGINT), SIGTERM and
    SIGHUP all stop it cleanly: streams still open are reset, the output is flushed and
    the summary printed; the exit status is 128 + the signal's number (130, 143, 129).

    Each stream is consumed until its sender ends it; then this side ends it too, which
    tells the sender that every message was consumed.
    Live statistics (throughput, buffered messages and bytes, open credit, latency) go
    to stderr once a second; the summary goes to stderr, or to stdout as JSON with
    --json.
    """
    from ._consumer import ReceiveOptions
    from ._errors import run_trio
    from ._printing import json_summary, receive_summary

    if (as_json or json_lines) and output == "-":
        raise click.UsageError("--json/--json-lines and --output - would both write to stdout")
    if output is not None and output_dir is not None:
        raise click.UsageError("--output and --output-dir: choose one")
    if no_autotune and latency_target != 100.0:
        raise click.UsageError("--latency-target tunes windows; --no-autotune keeps them fixed")
    settings = _settings(window_bytes, window_messages, max_message, max_streams)
    host, port = listen if isinstance(listen, tuple) else ("", 0)
    opts = ReceiveOptions(
        host=host or None,
        port=port,
        settings=settings,
        codec="raw" if raw else "msgpack",
        rate=rate,
        delay=delay / 1000,
        output=output,
        output_dir=output_dir,
        count=count,
        once=once,
        latency=latency,
        live=not quiet,
        autotune=None if no_autotune else AutoTune(latency_target=latency_target / 1000),
        memory_budget=memory_budget,
        metrics=metrics_port,
        metrics_per_connection=metrics_per_connection,
        json_lines=json_lines,
        fsync=fsync,
        unix_path=listen.path if isinstance(listen, UnixAddress) else None,
        access=access,
        resume_timeout=resume_timeout or None,
    )
    if backend == "asyncio":
        from ._run_asyncio import receive_asyncio, run_asyncio

        result = run_asyncio(receive_asyncio, opts)
    else:
        from ._run_receive import run_receive

        result = run_trio(run_receive, opts)
    if as_json:
        click.echo(json_summary(result))
    else:
        for line in receive_summary(result):
            click.echo(line, err=True)
    if result["interrupted"]:
        name = result["signal"] or "SIGINT"
        click.echo(f"flowproto: interrupted ({name})", err=True)
        click.get_current_context().exit(128 + signal.Signals[name].value)
    if once and result["problems"]:
        click.echo(f"flowproto: error: {result['problems'][0]}", err=True)
        click.get_current_context().exit(1)


def _settings(
    window_bytes: int, window_messages: int, max_message: int | None, max_streams: int
) -> Settings:
    """The receiver's Settings from its options; a combination spec §3.2 forbids is a
    usage error."""
    from ._consumer import receiver_settings

    if max_message is not None and max_message > window_bytes:
        raise click.BadParameter(
            f"{max_message} is over --window-bytes {window_bytes}", param_hint="--max-message"
        )
    try:
        return receiver_settings(window_bytes, window_messages, max_message, max_streams)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
