"""The options several commands share, as decorators, and the ``HOST:PORT`` parsers.

Each decorator adds its options in the order ``--help`` lists them; a command stacks
them like any click option. Nothing here imports trio, so ``--help`` stays quick.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from ._access import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_RETRY_FOR,
    AccessError,
    ReceiverAccess,
    SenderAccess,
    UnixAddress,
    client_tls,
    default_max_connections,
    server_tls,
)

F = TypeVar("F", bound=Callable[..., Any])

#: Unit suffixes of :class:`Quantity`: SI (powers of 1000) and IEC (powers of 1024).
UNITS: dict[str, int] = {
    "": 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_QUANTITY = re.compile(r"\s*(\d[\d_]*)(?:\.(\d+))?\s*(?:([kKMGT])([iI]?))?[bB]?\s*")


def parse_quantity(text: str) -> int | None:
    """``"4MiB"`` -> 4194304, ``"10k"`` -> 10000, ``"1.5K"`` -> 1500; None if not one.

    A whole number of units: k (or K), M, G, T are powers of 1000 and Ki, Mi, Gi, Ti
    powers of 1024, as in iperf3 and pv; a trailing B (bytes) is allowed and means nothing.
    """
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    whole, fraction, prefix, binary = match.groups()
    multiplier = UNITS[(prefix or "").upper() + ("i" if binary else "")]
    scaled = int(fraction or "0") * multiplier
    scale: int = 10 ** len(fraction or "")
    if scaled % scale:
        return None  # not a whole number (of bytes, of messages)
    return int(whole.replace("_", "")) * multiplier + scaled // scale


class Quantity(click.IntRange):
    """An integer option that takes units: ``--window-bytes 4MiB``, ``--count 10k``."""

    name = "quantity"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            parsed = parse_quantity(value)
            if parsed is None:
                self.fail(
                    f"{value!r} is not a whole number with an optional unit "
                    "(k, M, G: 1000s; Ki, Mi, Gi: 1024s; e.g. 64KiB, 4M, 10k)",
                    param,
                    ctx,
                )
            value = parsed
        return super().convert(value, param, ctx)


_METRICS_HELP = (
    "Serve the statistics of spec §14 in the Prometheus text format at "
    "http://HOST:PORT/metrics (PORT alone: on 127.0.0.1; 0 picks a free port, printed as "
    "'metrics on ...'). Needs prometheus_client: pip install 'prometheus_client>=0.17' (or "
    "in the flowproto checkout: pip install -e '.[metrics]')."
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


def listen_address(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | UnixAddress:
    """``HOST:PORT`` (see :func:`host_port`), ``PORT`` alone (127.0.0.1) or ``unix:PATH``."""
    assert value is not None  # the options using this are required
    if value.isdigit():  # a bare port: loopback, never every interface by accident
        return host_port(ctx, param, f"127.0.0.1:{value}")
    if value.startswith("unix:"):
        if not value[5:]:
            raise click.BadParameter("unix:PATH needs a path, for example unix:/tmp/fp.sock")
        return UnixAddress(value[5:])
    return host_port(ctx, param, value)


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
        type=Quantity(min=1, max=(1 << 31) - 1),
        default=default,
        show_default=True,
        metavar="N",
        help=help,
    )


def json_option(help: str) -> Callable[[F], F]:
    """``--json``: the result as one JSON object on stdout (the parameter ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


class VerboseHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Where ``-v`` sends the library's log records: stderr, one line each."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("flowproto: %(levelname)s: %(message)s"))


def _log_verbosely(ctx: click.Context, param: click.Parameter, value: int) -> None:
    # -v: the library's DEBUG log (the "flowproto" logger) to stderr, one line a record.
    if not value:
        return
    logger = logging.getLogger("flowproto")
    logger.setLevel(logging.DEBUG)
    if not any(isinstance(h, VerboseHandler) for h in logger.handlers):
        logger.addHandler(VerboseHandler())


#: ``-v/--verbose``, on the ``flowproto`` group and on each command that connects.
verbose_option = click.option(
    "-v",
    "--verbose",
    count=True,
    expose_value=False,
    is_eager=True,
    callback=_log_verbosely,
    help="Log each connection's lifecycle to stderr: handshake, window changes, resets, "
    "GOAWAY and how it ended (the library logs them at DEBUG under the 'flowproto' "
    "logger, for applications' own logging too).",
)


def observability_options(quiet_help: str) -> Callable[[F], F]:
    """``--metrics-port``, ``--json-lines``, ``--json``, ``--quiet`` and ``--verbose``."""

    def decorate(fn: F) -> F:
        fn = verbose_option(fn)
        fn = click.option("--quiet", "-q", is_flag=True, help=quiet_help)(fn)
        fn = json_option("Print the summary as one JSON object.")(fn)
        fn = click.option("--json-lines", is_flag=True, help=_JSON_LINES_HELP)(fn)
        fn = click.option(
            "--metrics-per-connection",
            is_flag=True,
            help="With --metrics-port, serve each connection's and stream's series too, "
            "labelled by peer and stream (a new series per connection; off by default, so "
            "the number of series stays bounded).",
        )(fn)
        return click.option(
            "--metrics-port", metavar="[HOST:]PORT", callback=metrics_address, help=_METRICS_HELP
        )(fn)

    return decorate


# --- who may connect (issue 12) ------------------------------------------------------------

UNIX_LISTEN_HELP = (
    " unix:PATH listens on a Unix socket instead: the file is created with permissions 0600 "
    "(only this user may connect, whatever the umask), a stale socket there is replaced but "
    "nothing else is, and the file is removed at exit."
)
UNIX_CONNECT_HELP = " unix:PATH connects to a receiver's Unix socket."


def _bundle(names: tuple[str, ...], make: Callable[..., Any], into: str) -> Callable[[F], F]:
    """A decorator that hands the command one parameter ``into`` = ``make(**values)`` in
    place of the options ``names`` (so a command gains one parameter, not six)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            try:
                kwargs[into] = make(**values)
            except AccessError as exc:
                raise click.UsageError(str(exc)) from None
            return fn(*args, **kwargs)

        return cast(F, command)

    return decorate


def _receiver_access(
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    max_connections: int | None,
    idle_timeout: float,
    handshake_timeout: float,
) -> ReceiverAccess:
    if tls_cert is None and (tls_key is not None or tls_client_ca is not None):
        option = "--tls-key" if tls_key is not None else "--tls-client-ca"
        raise click.UsageError(f"{option} needs --tls-cert (the receiver's certificate)")
    return ReceiverAccess(
        ssl_context=server_tls(tls_cert, tls_key, tls_client_ca) if tls_cert else None,
        mutual=tls_client_ca is not None,
        max_connections=max_connections
        if max_connections is not None
        else default_max_connections(),
        idle_timeout=idle_timeout or None,
        handshake_timeout=handshake_timeout,
    )


def receiver_access_options(fn: F) -> F:
    """``--tls-cert``, ``--tls-key``, ``--tls-client-ca``, ``--max-connections``,
    ``--idle-timeout``, ``--handshake-timeout``: one parameter ``access`` (a
    :class:`ReceiverAccess`)."""
    names = (
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "max_connections",
        "idle_timeout",
        "handshake_timeout",
    )
    fn = _bundle(names, _receiver_access, "access")(fn)
    file = click.Path(exists=True, dir_okay=False)
    options = [
        click.option(
            "--tls-cert",
            type=file,
            metavar="FILE",
            help="Serve TLS with this certificate chain (PEM; the key too, unless --tls-key).",
        ),
        click.option(
            "--tls-key", type=file, metavar="FILE", help="The private key of --tls-cert (PEM)."
        ),
        click.option(
            "--tls-client-ca",
            type=file,
            metavar="FILE",
            help="Mutual TLS: require a client certificate signed by a CA in FILE (PEM); a "
            "sender without one is refused in the TLS handshake, before any of its data is "
            "read. Needs --tls-cert.",
        ),
        click.option(
            "--max-connections",
            type=click.IntRange(min=1),
            metavar="N",
            help="Connections served at once; one more is refused with GOAWAY(OVERLOADED) "
            "(the sender retries). [default: (soft RLIMIT_NOFILE - 64) // 2, "
            f"here {default_max_connections()}: a descriptor per connection and one for "
            "its files, 64 kept back]",
        ),
        click.option(
            "--idle-timeout",
            type=click.FloatRange(min=0),
            default=DEFAULT_IDLE_TIMEOUT,
            show_default=True,
            metavar="S",
            help="Close a connection that has had no stream for S seconds (GOAWAY TIMEOUT, "
            "spec §11); 0: never.",
        ),
        click.option(
            "--handshake-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_HANDSHAKE_TIMEOUT,
            show_default=True,
            metavar="S",
            help="Seconds a new connection has for its TLS and flowproto handshakes.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _sender_access(
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_server_name: str | None,
    retry_for: float,
) -> SenderAccess:
    if tls_key is not None and tls_cert is None:
        raise click.UsageError("--tls-key needs --tls-cert (the sender's certificate)")
    use_tls = tls or any(v is not None for v in (tls_ca, tls_cert, tls_server_name))
    return SenderAccess(
        ssl_context=client_tls(tls_ca, tls_cert, tls_key) if use_tls else None,
        server_hostname=tls_server_name,
        retry_for=retry_for,
    )


def sender_access_options(fn: F) -> F:
    """``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-server-name``,
    ``--retry-for``: one parameter ``access`` (a :class:`SenderAccess`)."""
    names = ("tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name", "retry_for")
    fn = _bundle(names, _sender_access, "access")(fn)
    file = click.Path(exists=True, dir_okay=False)
    options = [
        click.option(
            "--tls",
            is_flag=True,
            help="Connect with TLS, trusting the system's CAs (any --tls-* option implies it).",
        ),
        click.option(
            "--tls-ca",
            type=file,
            metavar="FILE",
            help="Connect with TLS and trust only the CA certificates in FILE (PEM).",
        ),
        click.option(
            "--tls-cert",
            type=file,
            metavar="FILE",
            help="Present this client certificate (PEM; the key too, unless --tls-key), for "
            "a receiver with --tls-client-ca.",
        ),
        click.option(
            "--tls-key", type=file, metavar="FILE", help="The private key of --tls-cert (PEM)."
        ),
        click.option(
            "--tls-server-name",
            metavar="NAME",
            help="The name the receiver's certificate must carry. [default: the HOST of "
            "--connect; needed with unix:PATH]",
        ),
        click.option(
            "--retry-for",
            type=click.FloatRange(min=0),
            default=DEFAULT_RETRY_FOR,
            show_default=True,
            metavar="S",
            help="While the receiver refuses the connection as overloaded (GOAWAY "
            "OVERLOADED: its connection cap or memory budget is full), retry for up to S "
            "seconds, with jittered exponential backoff and at least its retry_after; one "
            "line per retry. 0: do not retry.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def backend_option(fn: F) -> F:
    """``--backend trio|asyncio``: which I/O layer runs the command."""
    return click.option(
        "--backend",
        type=click.Choice(["trio", "asyncio"]),
        default="trio",
        show_default=True,
        help="The I/O layer: flowproto.trio, or flowproto.asyncio (the same options, "
        "lost connections resumed and a restarted receiver's --output FILE.partial "
        "continued included; either side may run on either).",
    )(fn)
