"""The ``flowproto`` command line.

Installed as the ``flowproto`` console script and runnable as ``python -m flowproto``.
Each command turns its options into the library's own values (``Settings``, a codec),
runs one function under ``trio.run`` and prints its summary: one JSON object on stdout
with ``--json``, a few readable lines on stderr otherwise. Live statistics go to stderr
once a second. Errors the user can act on end the command with one ``flowproto: error:
...`` line and exit status 1; bad options exit with status 2.

Layout: one module per command (``demo``, ``receive``, ``send``, ``conformance``,
``bench``, ``vectors``: options, checks, one run, printing); ``_options`` (the option blocks they
share and the ``HOST:PORT`` parsers); ``_errors`` (exit codes); ``_printing`` (pure
formatters); ``_progress`` (live lines, the progress bar); ``_sender`` and ``_consumer``
(what ``send`` and ``receive`` do on each stream, written once for both backends);
``_layer`` (what those need of an event loop) with ``_layer_trio`` and ``_layer_asyncio``
(its thin parts, and each one's metrics listener); ``_run_receive``, ``_run_send`` (the
Trio runs), ``_run_asyncio`` (``--backend asyncio``), ``_run_demo``; ``_metrics``
(``--json-lines``, ``--metrics-port``); ``_output`` (where ``receive --output`` writes,
and when a message counts as delivered); ``_access`` (the values of the TLS, Unix socket
and cap options) and ``_transport`` (listeners, connecting, the sender's retries);
``_pace``, ``_latency``, ``_constants``. The commands import trio or asyncio only when
they run, so ``--help`` stays quick. Everything here uses only the public names of
``flowproto``, ``flowproto.trio`` and ``flowproto.asyncio``
(``tests/test_public_api_use.py``).
"""

from __future__ import annotations

import click

from . import bench, conformance, demo, receive, send, vectors
from ._options import verbose_option

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowproto")
@verbose_option
def main() -> None:
    """flowproto: a credit-based flow-control protocol for message streams.

    Start with 'flowproto demo'. To see backpressure between two processes, run
    'flowproto receive --listen 127.0.0.1:9000 --rate 100' in one terminal and
    'flowproto send --connect 127.0.0.1:9000 --count 1000' in another.

    Run 'flowproto COMMAND --help' for help on a command.
    """


main.add_command(demo.demo)
main.add_command(receive.receive)
main.add_command(send.send)
main.add_command(conformance.conformance)
main.add_command(bench.bench)
main.add_command(vectors.vectors)
