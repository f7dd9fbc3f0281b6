"""The ``flowproto`` command line.

Installed as the ``flowproto`` console script and runnable as
``python -m flowproto``.
"""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="flowproto")
def main() -> None:
    """flowproto: a credit-based flow-control protocol for message streams.

    Run 'flowproto COMMAND --help' for help on a command.
    """


@main.command(short_help="Run the demo (not implemented yet, issue #3).")
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run a demonstration exchange over the Trio layer (not implemented yet).

    \f
    Args:
        ctx: The click context, used to set the exit status.
    """
    click.echo(
        "flowproto demo: not implemented yet; the Trio layer and the demo arrive with issue #3.",
        err=True,
    )
    ctx.exit(1)
