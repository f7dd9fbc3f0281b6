"""``flowproto bench``: the socket benchmarks (``flowproto.bench``), one function call."""

from __future__ import annotations

import click


@click.command(
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
