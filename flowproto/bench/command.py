"""``flowproto bench`` (also ``python -m benchmarks`` in a checkout): the socket benchmarks.

Every scenario runs a sender and a receiver as separate processes over TCP on 127.0.0.1
(or, with ``--netns RATE``, between two network namespaces joined by a rate-limited veth
pair), bounded in time and message count. Results go to ``--out``: ``results.json``,
``results.md`` and PNG plots (with matplotlib). ``--quick`` runs a subset in well under
a minute and exits with status 1 if any run breaks an invariant (every message
accounted for, each stream's sequence exactly 0..n-1 with intact payloads; flowproto's
receiver never holding more than the largest window it granted); it prints and judges
no timing. Without ``--quick`` the speed-bar targets are printed, each the median of
the ratios of runs paired by repeat.

Examples::

    flowproto bench --quick
    flowproto bench --out bench-results/full           # every scenario, ~25 min
    flowproto bench --group consumer --strategy flowproto --strategy unbounded
    flowproto bench --group latency --quick             # one issue #13 group, smoke test
    flowproto bench --netns 200mbit --group consumer   # as root

These are the scenarios of issue #4 and the groups of issue #13 (``latency``, ``setup``,
``idle-memory``, ``cli-copy``, ``streams-scaling``: :mod:`flowproto.bench.scenarios`),
speed targets stated against the ``raw`` strategy, and issue #15's asyncio pair
(``flowproto-asyncio`` against ``raw-asyncio``, and both on uvloop where it is
installed); ``--quick`` adds one adaptive-credit scenario of
:mod:`flowproto.bench.adaptive` (issue #6).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from . import plan as plans
from . import report
from .adaptive import main as adaptive_main
from .harness import invariant_problems, machine, run_plan
from .netns import Link, NetnsUnavailable, veth_pair
from .plan import STRATEGIES
from .scenarios import scenario_problems


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None, prog: str = "flowproto bench") -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--quick", action="store_true", help="a smoke-test subset (< 1 minute)")
    p.add_argument(
        "--group",
        action="append",
        choices=list(plans.GROUPS),
        help="only these scenario groups (repeatable)",
    )
    p.add_argument(
        "--strategy",
        action="append",
        choices=[*STRATEGIES, "nc"],
        help="only these strategies (repeatable; nc: the cli-copy group's netcat)",
    )
    p.add_argument("--size", action="append", type=int, help="only these message sizes")
    p.add_argument("--repeats", type=int, default=3, help="throughput runs per scenario")
    p.add_argument("--out", type=Path, default=None, help="output directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--check", action="store_true", help="exit 1 if an invariant is broken")
    p.add_argument(
        "--netns",
        metavar="RATE",
        help="run between two network namespaces over a veth link shaped to RATE (tc "
        "syntax, e.g. 200mbit); needs root, skipped with a message otherwise",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        type=Path,
        help="write results.md and the plots again from a results.json (or .json.gz) into "
        "--out (default: next to it), running nothing",
    )
    return p.parse_args(argv)


@contextlib.contextmanager
def _no_link() -> Iterator[None]:
    yield None


def main(argv: Sequence[str] | None = None, prog: str = "flowproto bench") -> int:
    """Run the benchmarks as the command line ``argv`` says; the exit status.

    ``prog`` names the command in its help and in the results' ``command`` line.
    """
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parse_args(argv, prog)
    if args.render:
        return render(args.render, args.out, plots=not args.no_plots)
    plan = plans.quick_plan() if args.quick else plans.full_plan(args.repeats)
    plan = plans.select(plan, args.group, args.strategy)
    if args.size:
        plan.runs = [r for r in plan.runs if r.size in args.size]
    if args.list:
        for run in plan.runs:
            print(run.key + (f" (repeat {run.repeat})" if run.repeat else ""))
        return 0
    if not plan.runs:
        say("no scenario matches")
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    out = args.out or Path("bench-results", time.strftime("%Y%m%d-%H%M%S"))
    link_cm: AbstractContextManager[Link | None] = (
        veth_pair(args.netns) if args.netns else _no_link()
    )
    try:
        with link_cm as link:
            if link is not None:
                say(f"network namespaces: receiver at {link.receiver_host}, link {link.rate}")
            say(f"{len(plan.runs)} runs; results in {out}/")
            records = run_plan(plan, link, say)
    except NetnsUnavailable as exc:
        say(f"skipping: --netns is not possible here: {exc}")
        return 0
    meta = {
        "started": started,
        "command": shlex.join([*shlex.split(prog), *argv]),
        "machine": machine(),
        "link": f"veth between namespaces, tc tbf {args.netns}" if args.netns else None,
        "quick": args.quick,
        "repeats": plan.repeats,
    }
    report.write_results(out, records, meta, plots=not args.no_plots, say=say)
    say(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return judge(records, out, quick=args.quick, check=args.check or args.quick)


def render(saved_json: Path, out: Path | None, plots: bool) -> int:
    """``--render``: results.md and the plots again from a results.json(.gz), running nothing."""
    raw = saved_json.read_bytes()
    saved = json.loads(gzip.decompress(raw) if saved_json.suffix == ".gz" else raw)
    out = out or saved_json.parent
    report.write_results(out, saved["runs"], saved["meta"], plots=plots, say=say, json_too=False)
    say(f"wrote {out / 'results.md'}")
    return 0


def record_problems(record: dict[str, Any]) -> list[str]:
    """What a run broke of its invariants, whichever group it belongs to."""
    if record["run"]["group"] in plans.SCENARIO_GROUPS:
        return scenario_problems(record)
    return invariant_problems(record)


def judge(records: list[dict[str, Any]], out: Path, quick: bool, check: bool) -> int:
    """Say the speed bar's verdicts (not with ``quick``), run ``quick``'s adaptive scenario,
    and with ``check`` fail on any broken invariant; the exit status."""
    if not quick:  # --quick is a smoke test of invariants: it judges no timing
        for t in report.targets(records):
            if t["ratio"] is not None:
                verdict = "met" if t["met"] else "MISSED"
                say(f"  {verdict:6} {t['ratio']:6.2f} (goal {t['goal']}) {t['target']}")
    if quick:
        # Issue #6: one adaptive-credit scenario (spec §8.9) as a smoke test, invariants only.
        say("adaptive credit: python -m flowproto.bench.adaptive --quick")
        if adaptive_main(["--quick", "--out", str(out / "adaptive"), "--no-plots"]) != 0:
            say("adaptive credit: an invariant broke (see above)")
            return 1
    if check:
        problems = [p for r in records for p in record_problems(r)]
        if problems:
            say(f"{len(problems)} invariant(s) broken:")
            for p in problems:
                say(f"  {p}")
            return 1
        say(f"invariants hold in all {len(records)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
