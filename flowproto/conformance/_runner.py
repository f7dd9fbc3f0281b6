"""Running the cases and reporting them: the table, the JSON report, the exit status.

Receiver cases run concurrently (each on its own connection), sender cases one after
another; results come back in case order. A case that hangs past its bound fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from ._cases import CASES
from ._probe import (
    DEFAULT_TIMEOUT,
    DEFAULT_TIMER_WAIT,
    Case,
    CaseFailed,
    CaseSkipped,
    Connect,
    Probe,
    Receiver,
)
from ._sender_cases import SENDER_CASES


@dataclass(frozen=True, slots=True)
class Result:
    """How one case went: ``outcome`` is ``pass``, ``FAIL`` or ``skip``."""

    case: Case
    outcome: str
    detail: str
    seconds: float


async def _run_case(
    c: Case,
    connect: Connect,
    timeout: float,
    timer_wait: float,
    strict: bool,
    driver: Callable[[trio.abc.Stream, float, bool], Any] = Probe,
) -> Result:
    start = trio.current_time()
    try:
        transport = await connect()
    except OSError as exc:
        return Result(c, "FAIL", f"cannot connect: {exc}", 0.0)
    probe = driver(transport, timeout, strict)
    try:
        with trio.fail_after(timer_wait + 4 * timeout + 10):
            detail = await c.run(probe, timer_wait)
        outcome = "pass"
    except CaseFailed as exc:
        outcome, detail = "FAIL", str(exc)
    except CaseSkipped as exc:
        outcome, detail = "skip", str(exc)
    except trio.TooSlowError:
        outcome, detail = "FAIL", "the case did not finish (hung)"
    finally:
        await trio.aclose_forcefully(transport)
    return Result(c, outcome, detail, trio.current_time() - start)


def _selected(case_id: str, select: Sequence[str]) -> bool:
    """``4.3`` selects 4.3/1 and 4.3.2/1; ``4.3/1`` selects only that case."""
    if not select:
        return True
    section = case_id.split("/")[0]
    return any(case_id == s or section == s or section.startswith(s + ".") for s in select)


async def run_suite(
    connect: Connect,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    timer_wait: float = DEFAULT_TIMER_WAIT,
    strict: bool = False,
    select: Sequence[str] = (),
    timers: bool = True,
    concurrency: int = 8,
) -> list[Result]:
    """Run the cases against the peer ``connect()`` reaches; results in case order.

    Args:
        connect: opens a new transport to the peer under test (one per case).
        timeout: seconds to wait for an answer owed at once.
        timer_wait: seconds to wait for a timer of the peer's (timer cases).
        strict: require GOAWAY before every close, and ENHANCE_YOUR_CALM for floods.
        select: run only cases whose id starts with one of these (``"4.3"``, ``"7.2/1"``).
        timers: run the timer cases too.
        concurrency: cases running at once, each on its own connection.
    """
    chosen = [c for c in CASES if _selected(c.id, select) and (timers or not c.timer)]
    results: list[Result | None] = [None] * len(chosen)
    limiter = trio.CapacityLimiter(concurrency)

    async def one(index: int, c: Case) -> None:
        async with limiter:
            results[index] = await _run_case(c, connect, timeout, timer_wait, strict)

    async with trio.open_nursery() as nursery:
        # Timer cases first: they wait longest, so they overlap the quick ones.
        order = sorted(range(len(chosen)), key=lambda i: not chosen[i].timer)
        for index in order:
            nursery.start_soon(one, index, chosen[index])
    return [r for r in results if r is not None]


async def run_sender_suite(
    accept: Connect,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    timer_wait: float = DEFAULT_TIMER_WAIT,
    strict: bool = False,
    select: Sequence[str] = (),
    on_wait: Callable[[Case], None] | None = None,
) -> list[Result]:
    """Run the sender cases in order, each on the next connection ``accept()`` returns.

    The peer under test connects once per case (``flowproto send`` does, run once per
    case); a :class:`Receiver` checks everything it sends. ``timer_wait`` bounds how long
    a case reads a sender's stream.
    """
    results = []
    for c in SENDER_CASES:
        if _selected(c.id, select):
            if on_wait is not None:
                on_wait(c)
            results.append(await _run_case(c, accept, timeout, timer_wait, strict, Receiver))
    return results


def format_table(results: Sequence[Result], target: str) -> str:
    """The pass/fail table: one line per case, then the totals."""
    width = max([len(r.case.id) for r in results] + [2])
    desc = max([len(r.case.description) for r in results] + [4])
    lines = [
        f"flowproto conformance: {len(results)} cases against {target}",
        "",
        f"  {'id':<{width}}  result  {'case':<{desc}}  answer",
    ]
    for r in results:
        lines.append(
            f"  {r.case.id:<{width}}  {r.outcome:<6}  {r.case.description:<{desc}}  {r.detail}"
        )
    counts = {o: sum(r.outcome == o for r in results) for o in ("pass", "FAIL", "skip")}
    lines += ["", f"{counts['pass']} passed, {counts['FAIL']} failed, {counts['skip']} skipped"]
    return "\n".join(lines)


async def run_listening(
    host: str | None, port: int, say: Callable[[str], None], **kwargs: Any
) -> list[Result]:
    """:func:`run_sender_suite` on a TCP listener; ``say`` gets progress lines."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        for listener in listeners:
            address = listener.socket.getsockname()
            say(f"listening on {address[0]}:{address[1]}")

        async def accept() -> trio.abc.Stream:
            stream: trio.abc.Stream = await listeners[0].accept()
            return stream

        def waiting(c: Case) -> None:
            say(f"case {c.id}: waiting for the sender to connect")

        return await run_sender_suite(accept, on_wait=waiting, **kwargs)
    finally:
        for listener in listeners:
            await listener.aclose()


async def run_against(host: str, port: int, **kwargs: Any) -> list[Result]:
    """:func:`run_suite` against ``host:port`` over TCP; keywords are run_suite's."""

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    return await run_suite(connect, **kwargs)


def report(results: Sequence[Result], target: str) -> dict[str, Any]:
    """The results as one JSON-able object (``flowproto conformance --json``)."""
    return {
        "target": target,
        "passed": sum(r.outcome == "pass" for r in results),
        "failed": sum(r.outcome == "FAIL" for r in results),
        "skipped": sum(r.outcome == "skip" for r in results),
        "cases": [
            {
                "id": r.case.id,
                "description": r.case.description,
                "result": r.outcome,
                "answer": r.detail,
                "seconds": round(r.seconds, 3),
            }
            for r in results
        ],
    }


def exit_status(results: Sequence[Result]) -> int:
    """0 if no case failed, 1 otherwise (skipped cases do not fail a run)."""
    return 1 if any(r.outcome == "FAIL" for r in results) else 0
