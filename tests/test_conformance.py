"""The conformance suite (``flowproto conformance``) against our own peers, and against
peers that break the spec, so that a pass means something.

In process, each case's connection is a memory stream to a ``serve()`` connection under
``autojump_clock`` (the timer cases take virtual seconds). Over TCP, the suite runs as
``python -m flowproto conformance`` against a ``python -m flowproto receive`` subprocess
on 127.0.0.1, without the timer cases (CI runs those, .ci/run).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from click.testing import CliRunner
from test_cli import ENV, FLOWPROTO, Receiver, receiver, run_flowproto

from flowproto import DataFrame, FlowProtoError, Frame, Limits, Settings
from flowproto.cli import main
from flowproto.conformance import (
    CASES,
    SENDER_CASES,
    Result,
    format_table,
    run_sender_suite,
    run_suite,
)
from flowproto.trio import FlowStream, serve_connection

if sys.version_info < (3, 11):  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "PROTOCOL.md"


async def consume_all(stream: FlowStream) -> None:
    async for _ in stream:
        pass


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[Callable[[], Any]]:
    """A connect() for run_suite: each call is a new serve() connection in this process,
    with ``options`` for open_flow_connection, whose handler consumes every message."""
    async with trio.open_nursery() as nursery:

        async def connect() -> trio.abc.Stream:
            a, b = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_connection, b, consume_all, {"codec": "raw", **options})
            return a

        yield connect
        nursery.cancel_scope.cancel()


def outcomes(results: list[Result]) -> dict[str, str]:
    return {r.case.id: r.outcome for r in results}


def test_case_ids_name_spec_sections_and_are_unique() -> None:
    """Each id is SECTION/N, the section exists in spec/PROTOCOL.md, no id repeats (in
    the receiver cases, and in the sender cases)."""
    from test_layering import spec_sections

    sections = spec_sections(SPEC.read_text(encoding="utf-8"))
    assert len(CASES) >= 50
    for cases in (CASES, SENDER_CASES):
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids))
        for case_id in ids:
            section, number = case_id.split("/")
            assert section in sections, case_id
            assert number.isdigit(), case_id


async def test_every_case_passes_strictly_against_serve(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Against our own serve(): every case passes, floods end in ENHANCE_YOUR_CALM."""
    async with served(resume_timeout=10.0) as connect:  # sessions on: the 15.x cases run
        results = await run_suite(connect, strict=True)
    failed = [(r.case.id, r.detail) for r in results if r.outcome != "pass"]
    assert failed == []
    assert len(results) == len(CASES)
    floods = [r for r in results if r.case.id.startswith("10.7/")]
    assert floods and all("ENHANCE_YOUR_CALM" in r.detail for r in floods)
    table = format_table(results, "serve()")
    assert f"{len(CASES)} passed, 0 failed, 0 skipped" in table


async def test_a_peer_without_budgets_passes_unless_strict(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §10.7 budgets are MAY: surviving a flood passes, except in strict mode."""
    lax = Limits(glitch_burst=10**9, max_queued_replies=10**9)
    async with served(limits=lax) as connect:
        relaxed = await run_suite(connect, select=["10.7/1", "10.7/5"])
        strict = await run_suite(connect, select=["10.7/1", "10.7/5"], strict=True)
    assert set(outcomes(relaxed).values()) == {"pass"}
    assert all("survived" in r.detail for r in relaxed)
    assert set(outcomes(strict).values()) == {"FAIL"}


async def test_a_peer_that_is_not_flowproto_fails_every_case(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An echo server is no flowproto peer: no case passes."""

    async def echo(stream: trio.abc.Stream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some():
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass  # the probe hung up

    async with trio.open_nursery() as nursery:

        async def connect() -> trio.abc.Stream:
            a, b = trio.testing.memory_stream_pair()
            nursery.start_soon(echo, b)
            return a

        results = await run_suite(connect, timeout=1.0, timer_wait=2.0)
        nursery.cancel_scope.cancel()
    assert {r.outcome for r in results} == {"FAIL"}


async def test_a_peer_that_answers_with_the_wrong_code_fails_that_case(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that calls a FRAME_SIZE_ERROR a PROTOCOL_ERROR fails the 4.2 cases only."""
    import flowproto._frames as frames
    from flowproto import ErrorCode, RemoteProtocolError

    original = frames.check_header

    def wrong(
        length: int, ftype: int, stream_id: int, max_frame_bytes: int, session: bool = False
    ) -> None:
        try:
            original(length, ftype, stream_id, max_frame_bytes, session)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), ErrorCode.PROTOCOL_ERROR) from None

    monkeypatch.setattr("flowproto._inbound.check_header", wrong)
    async with served() as connect:
        results = await run_suite(connect, select=["4.2", "4.5"], strict=True)
    assert outcomes(results) == {
        "4.2/1": "FAIL",
        "4.2/2": "FAIL",
        "4.2/3": "FAIL",
        "4.2/4": "pass",
        "4.5/1": "pass",
        "4.5/2": "pass",
        "4.5/3": "pass",
        "4.5/4": "pass",
    }
    detail = next(r.detail for r in results if r.case.id == "4.2/1")
    assert "GOAWAY PROTOCOL_ERROR" in detail and "expected GOAWAY FRAME_SIZE_ERROR" in detail


async def test_cases_that_cannot_run_are_skipped(autojump_clock: trio.testing.MockClock) -> None:
    """A peer with max_streams above what a case opens: that case says so and skips."""
    async with served(settings=Settings(max_streams=5000, stream_messages=50_000)) as connect:
        results = await run_suite(connect, select=["6.4", "8.4", "10.7/6"])
    assert outcomes(results) == {"6.4/1": "skip", "8.4/1": "skip", "10.7/6": "skip"}


class Relay(trio.abc.Stream):
    """A transport that passes everything through ``inner``; tests override a direction."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_8_4_1_fails_a_peer_that_accepts_messages_past_the_limit_it_advertised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer whose HELLO says stream_messages 4096 and whose core holds 8192: it accepts
    message 4097, and its RESET STREAM_CLOSED for the DATA after says 0 consumed, which
    proves the limit had not risen (spec §8.4, §8.5), whatever the timing."""
    from flowproto import HelloFrame

    enforced, advertised = Settings(stream_messages=8192), Settings(stream_messages=4096)

    class Lying(Relay):  # the probe's side: the peer's HELLO as it would say it
        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            data = await self.inner.receive_some(max_bytes)
            return bytes(data).replace(
                HelloFrame(enforced).encode(), HelloFrame(advertised).encode(), 1
            )

    async with trio.open_nursery() as nursery:

        async def connect() -> trio.abc.Stream:
            a, b = trio.testing.memory_stream_pair()
            options = {"codec": "raw", "settings": enforced}
            nursery.start_soon(serve_connection, b, consume_all, options)
            return Lying(a)

        results = await run_suite(connect, select=["8.4/1"], strict=True)
        nursery.cancel_scope.cancel()
    assert [(r.outcome, r.detail) for r in results] == [
        (
            "FAIL",
            "message 4097 on stream 1 was accepted against a limit of 4096: the RESET "
            "STREAM_CLOSED for the DATA after it reports 0 consumed, so the limit had not "
            "risen (spec §8.4, §8.5)",
        )
    ]


async def test_8_4_1_never_fails_a_peer_whose_application_consumes_before_its_reader_is_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The race of the old case: a peer that reads 10 bytes at a time and lets its
    application consume (and grant, stream_messages 1) between reads legally accepts
    message 2. The case cannot exceed that peer's limit; it says so and skips."""

    class Trickle(Relay):  # the peer's side: small reads, the application runs between
        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            await trio.sleep(0.001)
            return await self.inner.receive_some(10)

    async with trio.open_nursery() as nursery:

        async def connect() -> trio.abc.Stream:
            a, b = trio.testing.memory_stream_pair()
            options = {"codec": "raw", "settings": Settings(stream_messages=1)}
            nursery.start_soon(
                serve_connection, Trickle(b), consume_all, {**options, "autotune": False}
            )
            return a

        results = await run_suite(connect, select=["8.4/1"], strict=True)
        nursery.cancel_scope.cancel()
    assert [r.outcome for r in results] == ["skip"]
    assert results[0].detail.startswith(
        "on streams 1, 3 and 5 the peer's application consumed messages before its reader "
        "reached message 2 (stream 1: "
    )


def test_the_command_checks_its_arguments() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["conformance", "nonsense"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["conformance", "127.0.0.1:0"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["conformance"])
    assert result.exit_code == 2 and "--listen" in result.output
    result = runner.invoke(main, ["conformance", "--help"])
    assert result.exit_code == 0 and "HOST:PORT" in result.output


def test_the_command_passes_against_a_flowproto_receive_process(tmp_path: Path) -> None:
    """CI's run, minus the timers: `flowproto conformance` against `flowproto receive`."""
    with receiver("--quiet", cwd=tmp_path) as r:
        proc = run_flowproto("conformance", f"127.0.0.1:{r.port}", "--strict", "--no-timers")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"\n(\d+) passed, 0 failed, 0 skipped", proc.stdout)
        assert "  3.1/1 " in proc.stdout and "  10.7/1 " in proc.stdout
        proc = run_flowproto("conformance", f"127.0.0.1:{r.port}", "--only", "5.5", "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["failed"] == 0
        assert [c["id"] for c in report["cases"]] == ["5.5/1"]
        assert report["cases"][0]["answer"] == "PONG 2^64-1"


def test_the_command_fails_against_a_port_where_nothing_listens() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        proc = run_flowproto("conformance", f"127.0.0.1:{port}", "--only", "5.5")
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "cannot connect" in proc.stdout


# --- a sender peer -------------------------------------------------------------------------------


#: What a sender's connection may end with in a case (a reset, a GOAWAY, a lost transport):
#: the case judges the wire, so these end the sender quietly. Nothing else is swallowed.
SENDER_ENDINGS = (FlowProtoError, trio.BrokenResourceError, trio.ClosedResourceError)


async def flowproto_sender(stream: trio.abc.Stream, streams: int = 1) -> None:
    """What `flowproto send --count 100 --streams N` does, over one transport.

    Each producer opens its own stream (waiting for a slot, spec §6.4) and sends its share;
    one that cannot open after a GOAWAY (spec §10.4) gives up while the others finish.
    The errors of SENDER_ENDINGS end it quietly, from wherever they come. With several
    tasks they arrive in exception groups, and when the suite cancels its nursery while
    the sender's connection is failing, a ConnectionLostError comes in one group with the
    Cancelled: a BaseExceptionGroup, which ``contextlib.suppress(Exception)`` lets through.
    So the group is split (``except*``, written for Python 3.10 too): the endings are
    dropped, the Cancelled goes on up to the nursery that cancelled, anything else fails.
    """
    from flowproto.trio import ConnectionLostError, FlowConnection, open_flow_connection

    async def produce(conn: FlowConnection, count: int) -> None:
        try:
            out = await conn.open_stream()
        except ConnectionLostError:
            return  # GOAWAY: no new stream (spec §10.4)
        for _ in range(count):
            await out.send(bytes(100))
        await out.aclose()
        async for _ in out:
            pass

    try:
        async with open_flow_connection(stream, codec="raw") as conn, trio.open_nursery() as n:
            for i in range(streams):
                n.start_soon(produce, conn, 100 // streams + (i < 100 % streams))
    except BaseException as exc:
        if isinstance(exc, BaseExceptionGroup):
            rest = exc.split(SENDER_ENDINGS)[1]
            if rest is not None:
                raise rest  # noqa: B904 - the rest of the same group, not a new error
        elif not isinstance(exc, SENDER_ENDINGS):
            raise


def run_against_sender(
    sender: Callable[[trio.abc.Stream], Awaitable[None]], **options: Any
) -> list[Result]:
    """run_sender_suite(**options) against ``sender`` (one per case, in process, under a
    MockClock); the suite's nursery is cancelled as soon as the last case is judged."""

    async def main() -> list[Result]:
        async with trio.open_nursery() as nursery:

            async def accept() -> trio.abc.Stream:
                a, b = trio.testing.memory_stream_pair()
                nursery.start_soon(sender, b)
                return a

            results = await run_sender_suite(accept, **options)
            nursery.cancel_scope.cancel()
        return results

    results: list[Result] = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return results


@pytest.mark.parametrize("streams", [1, 3])
def test_every_sender_case_passes_strictly_against_our_sender(streams: int) -> None:
    results = run_against_sender(partial(flowproto_sender, streams=streams), strict=True)
    assert [(r.case.id, r.outcome, r.detail) for r in results] == [
        (c.id, "pass", r.detail) for c, r in zip(SENDER_CASES, results, strict=True)
    ]
    assert len(results) >= 8
    details = {r.case.id: r.detail for r in results}
    if streams == 3:  # spec §6.4: the third stream waited for one of the first two
        assert details["6.4/1"].startswith("3 streams, at most 2 open at once (max_streams 2)")
    else:
        assert details["6.4/1"].startswith("1 stream, at most 1 open at once")
    # spec §10.4: no new stream after GOAWAY, and the open one finished
    assert details["10.4/1"].startswith(
        "no stream opened after GOAWAY (last_stream 1); stream 1 ended normally"
    )


@pytest.mark.parametrize("case_id", [c.id for c in SENDER_CASES])
@pytest.mark.parametrize("streams", [1, 3])
def test_our_sender_ends_quietly_when_cancelled_right_after_a_case(
    case_id: str, streams: int
) -> None:
    """Each case on its own, the sender cancelled at once, while its connection is failing
    (the probe closed the transport): what it raised then came in a BaseExceptionGroup with
    the Cancelled, which ``contextlib.suppress(Exception)`` let out of the sender."""
    results = run_against_sender(
        partial(flowproto_sender, streams=streams), strict=True, select=[case_id]
    )
    assert [(r.case.id, r.outcome) for r in results] == [(case_id, "pass")]


async def test_a_sender_that_ignores_credit_fails(autojump_clock: trio.testing.MockClock) -> None:
    """Five messages against a window of four: the reference receiver names the rule."""
    from flowproto import PREFACE, HelloFrame, Settings
    from flowproto.conformance import SENDER_WINDOWS

    async def greedy(stream: trio.abc.Stream) -> None:
        wire = PREFACE + HelloFrame(Settings()).encode()
        wire += b"".join(
            DataFrame(1, b"m").encode() for _ in range(SENDER_WINDOWS.stream_messages + 1)
        )
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(wire)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:

        async def accept() -> trio.abc.Stream:
            a, b = trio.testing.memory_stream_pair()
            nursery.start_soon(greedy, b)
            return a

        results = await run_sender_suite(accept, select=["8.3"])
        nursery.cancel_scope.cancel()
    assert [r.outcome for r in results] == ["FAIL"]
    assert "FLOW_CONTROL" in results[0].detail or "against a limit of 4" in results[0].detail


def test_a_sender_that_opens_past_max_streams_fails() -> None:
    """Three streams opened at once against our max_streams of 2 (spec §6.4)."""
    from flowproto import PREFACE, HelloFrame
    from flowproto.conformance import open_stream

    async def crowding(stream: trio.abc.Stream) -> None:
        wire = PREFACE + HelloFrame(Settings()).encode()
        wire += open_stream(1) + open_stream(3) + open_stream(5)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(wire)
            await trio.sleep_forever()

    results = run_against_sender(crowding, select=["6.4/1"])
    assert [(r.case.id, r.outcome, r.detail) for r in results] == [
        (
            "6.4/1",
            "FAIL",
            "the sender opened stream 5 while 2 of its streams were open; we advertised "
            "max_streams 2 (spec §6.4)",
        )
    ]


async def frames_until(stream: trio.abc.Stream, done: Callable[[list[Frame]], bool]) -> None:
    """Read a receiver's preface and frames until ``done(frames so far)``."""
    from flowproto import PREFACE, FrameDecoder

    raw, frames, decoder = b"", [], FrameDecoder(1 << 24)
    while not done(frames):
        chunk = await stream.receive_some()
        assert chunk, "the receiver closed the connection"
        if len(raw) < len(PREFACE):
            raw += chunk
            chunk = raw[len(PREFACE) :]
        frames += decoder.feed(bytes(chunk))


def test_a_sender_that_opens_a_stream_after_goaway_fails() -> None:
    """A sender that opens stream 3 once it has our GOAWAY and stream 1 closed (spec
    §10.4): no §6.4 excuse, a slot was free; the case names the GOAWAY."""
    from flowproto import PREFACE, GoAwayFrame, HelloFrame

    async def heedless(stream: trio.abc.Stream) -> None:
        one = DataFrame(1, b"m", end_message=True, end_stream=True)
        await stream.send_all(PREFACE + HelloFrame(Settings()).encode() + one.encode())

        def goaway_and_stream_1_closed(frames: list[Frame]) -> bool:
            return any(isinstance(f, GoAwayFrame) for f in frames) and any(
                isinstance(f, DataFrame) and f.stream_id == 1 and f.end_stream for f in frames
            )

        with contextlib.suppress(trio.BrokenResourceError):
            await frames_until(stream, goaway_and_stream_1_closed)
            await stream.send_all(DataFrame(3, b"late").encode())
            await trio.sleep_forever()

    results = run_against_sender(heedless, select=["10.4/1"])
    assert [(r.case.id, r.outcome, r.detail) for r in results] == [
        (
            "10.4/1",
            "FAIL",
            "the sender opened stream 3 after our GOAWAY with last_stream 1 (spec §10.4)",
        )
    ]


def check_senders(
    tmp_path: Path, *send_args: str, only: tuple[str, ...] = ()
) -> tuple[int, str, list[subprocess.CompletedProcess[str]]]:
    """`flowproto conformance --listen --strict` (and ``--only`` each of ``only``), with one
    `flowproto send --connect ... *send_args` after another until it exits: its exit
    status and stdout, and the send runs, the n-th facing the n-th case."""
    selected = [arg for case_id in only for arg in ("--only", case_id)]
    proc = subprocess.Popen(
        [*FLOWPROTO, "conformance", "--listen", "127.0.0.1:0", "--strict", *selected],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        env=ENV,
        cwd=tmp_path,
    )
    listener = Receiver(proc)  # reads "listening on HOST:PORT" from stderr
    sends = []
    try:
        port = listener.wait_for_port()
        for _ in range(2 * len(SENDER_CASES)):
            if proc.poll() is not None:
                break
            sends.append(run_flowproto("send", "--connect", f"127.0.0.1:{port}", *send_args))
        status, stdout, stderr = listener.finish()
    finally:
        listener.close()
    assert status == 0, stdout + stderr
    return status, stdout, sends


def test_the_command_checks_flowproto_send_processes_with_listen(tmp_path: Path) -> None:
    """CI's sender run: `flowproto conformance --listen`, one `flowproto send --streams 3`
    per case (more streams than 6.4/1 and 10.4/1 allow at once)."""
    _, stdout, _ = check_senders(tmp_path, "--count", "100", "--streams", "3", "-q")
    assert f"{len(SENDER_CASES)} passed, 0 failed" in stdout
    assert "3 streams, at most 2 open at once (max_streams 2); 100 messages" in stdout
    assert "no stream opened after GOAWAY (last_stream 1); stream 1 ended normally" in stdout


def test_flowproto_send_opens_streams_as_slots_free_and_none_after_goaway(
    tmp_path: Path,
) -> None:
    """`flowproto send --streams 3` against max_streams 2 (spec §6.4): the third stream
    opens when one of the first two ends, and every message is confirmed (it used to open
    all three before sending, and waited forever for the third). Against max_streams 1 and
    a GOAWAY (spec §10.4): stream 1 finishes, the other two never open, exit status 1."""
    args = ("--count", "100", "--streams", "3", "-q")
    _, stdout, sends = check_senders(tmp_path, *args, only=("6.4/1", "10.4/1"))
    assert "2 passed, 0 failed" in stdout
    within, after_goaway = sends[:2]
    assert within.returncode == 0, within.stderr
    assert "the receiver confirmed 100 consumed" in within.stderr
    assert after_goaway.returncode == 1
    assert after_goaway.stderr.strip().endswith(
        "shutting down (GOAWAY); open a new connection: 2 of 3 streams never opened "
        "(66 messages not sent)"
    ), after_goaway.stderr
