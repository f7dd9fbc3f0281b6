"""``flowproto demo``: backpressure shown in one process, a fast sender and a slow receiver."""

from __future__ import annotations

from functools import partial

import click

from ._options import rate_option, window_messages_option

#: Bytes per demo message.
DEMO_MESSAGE_BYTES = 100


@click.command(short_help="Show backpressure: a fast sender, a slow receiver, one process.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=4.0,
    show_default=True,
    metavar="S",
    help="Seconds the sender sends for.",
)
@rate_option("Messages per second the receiver consumes.", default=200.0)
@window_messages_option(
    16, "The receiver's per-stream credit: unconsumed messages it lets the sender have."
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
    from ._errors import run_trio
    from ._printing import demo_header, demo_row, demo_verdict
    from ._run_demo import DemoSample, run_demo

    size = DEMO_MESSAGE_BYTES

    def on_start(address: str) -> None:
        click.echo(demo_header(address, rate, window_messages, size, duration))

    def on_sample(sample: DemoSample) -> None:
        click.echo(demo_row(sample, window_messages))

    run = partial(
        run_demo, duration, rate, window_messages, size=size, on_start=on_start, on_sample=on_sample
    )
    result = run_trio(run)
    click.echo(demo_verdict(result))
    if not result.ok:
        click.get_current_context().exit(1)
