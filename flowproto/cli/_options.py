"""The options several commands share, as decorators, and the ``HOST:PORT`` parsers.

Each decorator adds its options in the order ``--help`` lists them; a command stacks
them like any click option. Nothing here imports trio, so ``--help`` stays quick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_METRICS_HELP = (
    "Serve the statistics of spec §14 in the Prometheus text format at "
    "http://HOST:PORT/metrics (PORT alone: on 127.0.0.1; 0 picks a free port, printed as "
    "'metrics on ...'). Needs the optional extra: pip install flowproto[metrics]."
)
_JSON_LINES_HELP = (
    "Print the statistics of spec §14 (every connection and stream) as one JSON object per "
    "line on stdout, once a second."
)


# --- addresses -----------------------------------------------------------------------------


def host_port(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int]:
    """``HOST:PORT`` (``[HOST]:PORT`` for IPv6); an empty HOST means every interface."""
    assert value is not None  # the options using this are required
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT, for example 127.0.0.1:9000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def optional_host_port(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """:func:`host_port` for an option that may be left out."""
    return None if value is None else host_port(ctx, param, value)


def metrics_address(
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
        from ._metrics import METRICS_HINT

        raise click.UsageError(METRICS_HINT) from None
    return (host.strip("[]") if sep and host else "127.0.0.1"), int(port_text)


def needs_host_and_port(host: str, port: int, param_hint: str | None = None) -> None:
    """A peer to connect to needs a host and a non-zero port."""
    if not host or port == 0:
        raise click.BadParameter(
            f"{host}:{port} needs a host and a non-zero port", param_hint=param_hint
        )


# --- option blocks -------------------------------------------------------------------------


def codec_option(fn: F) -> F:
    """``--raw/--msgpack``: the codec of every stream, the same on both sides."""
    return click.option(
        "--raw/--msgpack",
        default=True,
        show_default=True,
        help="Messages are raw bytes, or msgpack-encoded objects. Use the same on both sides.",
    )(fn)


def rate_option(help: str, default: float | None = None) -> Callable[[F], F]:
    """``--rate N``: messages per second (over 0), shown with its default if it has one."""
    return click.option(
        "--rate",
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=default is not None,
        metavar="N",
        help=help,
    )


def window_messages_option(default: int, help: str) -> Callable[[F], F]:
    """``--window-messages N``: the receiver's per-stream credit in messages."""
    return click.option(
        "--window-messages",
        type=click.IntRange(min=1, max=(1 << 31) - 1),
        default=default,
        show_default=True,
        metavar="N",
        help=help,
    )


def json_option(help: str) -> Callable[[F], F]:
    """``--json``: the result as one JSON object on stdout (the parameter ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def observability_options(quiet_help: str) -> Callable[[F], F]:
    """``--metrics-port``, ``--json-lines``, ``--json`` and ``--quiet``, in that order."""

    def decorate(fn: F) -> F:
        fn = click.option("--quiet", "-q", is_flag=True, help=quiet_help)(fn)
        fn = json_option("Print the summary as one JSON object.")(fn)
        fn = click.option("--json-lines", is_flag=True, help=_JSON_LINES_HELP)(fn)
        return click.option(
            "--metrics-port", metavar="[HOST:]PORT", callback=metrics_address, help=_METRICS_HELP
        )(fn)

    return decorate
