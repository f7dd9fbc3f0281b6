"""``flowproto send``: a file, stdin or generated messages to a receiver."""

from __future__ import annotations

from typing import BinaryIO

import click

from ._access import SenderAccess, UnixAddress
from ._options import (
    UNIX_CONNECT_HELP,
    Quantity,
    backend_option,
    codec_option,
    listen_address,
    needs_host_and_port,
    observability_options,
    rate_option,
    sender_access_options,
)
from ._printing import human_size


@click.command(short_help="Send a file, stdin or generated messages to a receiver.")
@click.option(
    "--connect",
    metavar="[HOST:]PORT|unix:PATH",
    callback=listen_address,
    required=True,
    help="The receiver's address, as HOST:PORT; PORT alone is 127.0.0.1:PORT." + UNIX_CONNECT_HELP,
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
    type=Quantity(min=1),
    default=65536,
    metavar="BYTES",
    help="With --input: the size of each message (units: 64KiB, 1MiB, 10k).  "
    f"[default: {human_size(65536)}]",
)
@click.option(
    "--size",
    type=Quantity(min=8),
    metavar="BYTES",
    help="Generate messages of BYTES bytes, each starting with its send time "
    "(8-byte big-endian time.time_ns(), for 'receive --latency').  [default: 100]",
)
@click.option("--count", type=Quantity(min=1), metavar="N", help="Generate N messages in all.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Generate messages for S seconds (with --count: whichever ends first).",
)
@rate_option("Send at most N messages per second in all (on a fixed schedule).")
@click.option(
    "--streams",
    type=click.IntRange(min=1, max=1000),
    default=1,
    show_default=True,
    metavar="N",
    help="Generated messages are shared out over N streams of one connection; at most "
    "the receiver's max_streams are open at once, the rest open as those finish.",
)
@codec_option
@click.option(
    "--pace",
    is_flag=True,
    help="Pace each stream from the receiver's feedback while its consumer is the "
    "bottleneck: at most 5% above the rate it reports (spec §8.10).",
)
@click.option(
    "--reconnect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="S",
    help="When the connection is lost, connect again for up to S seconds and resume: "
    "nothing is lost or sent twice (spec §15).",
)
@click.option(
    "--no-reconnect",
    is_flag=True,
    help="Fail at once when the connection is lost (and keep nothing for a resumption).",
)
@sender_access_options
@observability_options("No live statistics and no progress bar.")
@backend_option
def send(
    connect: tuple[str, int] | UnixAddress,
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
    reconnect_timeout: float,
    no_reconnect: bool,
    metrics_port: tuple[str, int] | None,
    metrics_per_connection: bool,
    json_lines: bool,
    as_json: bool,
    quiet: bool,
    access: SenderAccess,
    backend: str,
) -> None:
    """Connect to a receiver, send messages, and wait until it has consumed them all.

    The messages come from --input, or are generated with --size and --count or
    --duration. When they are all sent the streams are closed and the sender waits for
    the receiver to end its side, which it does after consuming everything; the
    summary's 'delivered' is the number of messages the receiver confirmed consumed.
    A stream the receiver resets (or rejects) fails alone: the others go on, and the
    command then exits with status 1, one 'flowproto: error:' line per failed stream
    naming it and what was confirmed on it ('failed_streams' with --json).

    Live statistics go to stderr once a second, as a progress bar when stderr is a
    terminal and the total is known.

    Ctrl-C, SIGTERM or SIGHUP stop the sending: the streams are reset, the summary says
    what each stream sent and the receiver confirmed, and the exit status is 130, 143 or
    129.

    Summary fields: messages, bytes, seconds, msgs_per_s, mb_per_s (10^6 bytes; null
    over less than 10 ms),
    seconds_blocked (waiting for credit, summed over streams), delivered, streams,
    failed_streams (stream, sent, delivered, error), per_stream (stream, sent,
    confirmed), interrupted, signal; with a session: reconnects, messages_retransmitted,
    bytes_retransmitted, retained_bytes_peak.
    """
    from ._errors import run_trio
    from ._printing import failed_stream_lines, json_summary, per_stream_lines, send_summary
    from ._progress import progress_for
    from ._sender import SendOptions
    from ._signals import exit_status

    if isinstance(connect, UnixAddress):
        host, port = "", 0
        if access.ssl_context is not None and access.server_hostname is None:
            raise click.UsageError("TLS over unix:PATH needs --tls-server-name")
    else:
        host, port = connect
        needs_host_and_port(host, port, "--connect")
    _check_what_to_send(source, lines, size, count, duration, streams)
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
        metrics_per_connection=metrics_per_connection,
        json_lines=json_lines,
        unix_path=connect.path if isinstance(connect, UnixAddress) else None,
        access=access,
        reconnect_timeout=None if no_reconnect else reconnect_timeout,
    )
    with progress_for(opts, quiet) as progress:
        if backend == "asyncio":
            from ._run_asyncio import run_asyncio, send_asyncio

            result = run_asyncio(send_asyncio, opts, progress)
        else:
            from ._run_send import run_send

            result = run_trio(run_send, opts, progress)
    if as_json:
        click.echo(json_summary(result))
    else:
        click.echo(send_summary(result), err=True)
        if result["interrupted"]:
            for line in per_stream_lines(result["per_stream"]):
                click.echo(line, err=True)
    if result["interrupted"]:
        name = result["signal"]
        click.echo(f"flowproto: interrupted ({name})", err=True)
        click.get_current_context().exit(exit_status(name))
    if result["failed_streams"]:
        for line in failed_stream_lines(result["failed_streams"]):
            click.echo(line, err=True)
        click.get_current_context().exit(1)


def _check_what_to_send(
    source: BinaryIO | None,
    lines: bool,
    size: int | None,
    count: int | None,
    duration: float | None,
    streams: int,
) -> None:
    """--input, or generated messages (--count or --duration), not a mix."""
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
