"""``flowproto conformance``: crafted frames to a peer, its answers checked (h2spec style)."""

from __future__ import annotations

from functools import partial

import click

from ._options import json_option, needs_host_and_port, optional_host_port


@click.command(short_help="Check a flowproto peer against the spec (h2spec-style cases).")
@click.argument("target", metavar="HOST:PORT", required=False, callback=optional_host_port)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    callback=optional_host_port,
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
@json_option("Print the results as one JSON object.")
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
    from flowproto.conformance import (
        exit_status,
        format_table,
        report,
        run_against,
        run_listening,
    )

    from ._errors import run_trio
    from ._printing import json_summary

    if (target is None) == (listen is None):
        raise click.UsageError("give the peer's HOST:PORT, or --listen HOST:PORT for a sender")
    common = {"timeout": timeout, "timer_wait": timer_wait, "strict": strict, "select": select}
    if target is not None:
        host, port = target
        needs_host_and_port(host, port)
        run = partial(
            run_against, host, port, timers=not no_timers, concurrency=concurrency, **common
        )
        label = f"{host}:{port}"
    else:
        assert listen is not None
        host, port = listen
        say = partial(click.echo, err=True)
        run = partial(run_listening, host or None, port, say, **common)
        label = f"the sender (--listen {host}:{port})"
    results = run_trio(run)
    if not results:
        raise click.BadParameter(f"no case matches {', '.join(select)}", param_hint="--only")
    if as_json:
        click.echo(json_summary(report(results, f"{host}:{port}")))
    else:
        click.echo(format_table(results, label))
    click.get_current_context().exit(exit_status(results))
