"""``flowproto bench``: the socket benchmarks, the same as ``python -m benchmarks``."""

from __future__ import annotations

import os
import sys

import click


@click.command(
    short_help="Run the socket benchmarks (from a source checkout).",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the socket benchmarks: the same as 'python -m benchmarks ARGS'.

    Sender and receiver run as separate processes over TCP on 127.0.0.1 for every
    strategy and consumer speed; 'flowproto bench --quick' is a smoke test of under a
    minute, 'flowproto bench --help' lists the options. The benchmarks are not installed
    with the package: run this from a flowproto source checkout.
    """
    sys.path.insert(0, os.getcwd())  # benchmarks/ is a top-level package of the checkout
    try:
        from benchmarks.__main__ import main as bench_main
    except ImportError:
        click.echo(
            "flowproto: error: the benchmarks are not installed with the package; run "
            "'flowproto bench' (or 'python -m benchmarks') from a flowproto source checkout",
            err=True,
        )
        click.get_current_context().exit(1)
    click.get_current_context().exit(bench_main(list(args)))
