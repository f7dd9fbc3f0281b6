"""The socket benchmarks of flowproto, installed with the package: ``flowproto bench``.

Every scenario runs a sender and a receiver as separate processes over TCP on
127.0.0.1, bounded in time and message count; ``flowproto bench --quick`` is a smoke
test of invariants only (under a minute), ``flowproto bench --help`` lists the options.
``pip install "flowproto[bench]"`` adds matplotlib (the plots) and pyzmq (the zmq
strategy). The modules, in the order a run meets them:

- :mod:`.command`: the command line (:func:`main`);
- :mod:`.plan`: strategies, scenarios and the plans that order them;
- :mod:`.harness`: runs a scenario's process pair, checks its invariants;
- :mod:`.peers` (with :mod:`.peers_common`, :mod:`.peers_flowproto`,
  :mod:`.peers_framing`, :mod:`.peers_raw`, :mod:`.peers_zmq`): the sender and receiver
  programs;
- :mod:`.scenarios` (with :mod:`.peers_rtt`, :mod:`.peers_idle`, :mod:`.peers_copy`):
  issue #13's groups: latency, connection setup, idle memory, the CLI file copy and
  streams scaling;
- :mod:`.workload`: messages, their checks, pacing schedules, memory samples;
- :mod:`.report` (with :mod:`.report_scenarios`) and :mod:`.plots`: medians, paired
  ratios, targets, tables, plots;
- :mod:`.adaptive` (with :mod:`.adaptive_peers`, :mod:`.adaptive_report`,
  :mod:`.relay`): the adaptive-credit scenarios of issue #6;
- :mod:`.netns`, :mod:`.procs`: network namespaces, and how peer processes start.

A source checkout's top-level ``benchmarks/`` holds the study scripts and results;
``python -m benchmarks`` there is this same command.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str = "flowproto bench") -> int:
    """Run ``flowproto bench`` with the arguments ``argv``; returns the exit status."""
    from .command import main as run  # imports trio and the harness only when run

    return run(argv, prog)
