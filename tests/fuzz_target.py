"""An atheris (libFuzzer) target for the frame decoder and the Connection (reliability M11, B3).

Run it for a bounded time, writing new inputs to a scratch directory and reading the
recorded seeds (libFuzzer adds new units to the *first* directory only)::

    pip install -e ".[fuzz]"
    python tests/fuzz_target.py -max_total_time=60 /tmp/corpus tests/fuzz_corpus

Regenerate the seeds (the spec's frame, invalid-input and conversation vectors, and what
every conformance case sent, recorded) with
``python tests/fuzz_target.py --write-corpus tests/fuzz_corpus``; the seeds of existing
vectors and cases come out byte-identical, so a new one only adds its files.

An input is one selector byte and then the bytes a peer sends. Selector bit 7 set: the
bytes start at the preface, so the handshake itself is fuzzed; clear: a valid preface
and HELLO are sent first, the receiver opens stream 2 and sends on it (so CREDIT, RESET
and ``consumed`` aimed at its own stream mean something), and the bytes follow. The low
7 bits set the chunk size for the split feed. For every input:

1. ``FrameDecoder`` raises nothing but ``RemoteProtocolError``, and every frame it yields
   encodes back to bytes that decode to the same frame (spec §4.3.1);
2. a ``Connection`` fed the bytes whole and one fed them in chunks give the same events
   (messages compared per stream, since batching follows the chunks), the same output
   bytes and the same error, if any (spec §4.2, §10.7.1: limits are per frame);
3. a third ``Connection`` whose application consumes every message and whose timer
   advances by 10 ms per chunk raises nothing but ``RemoteProtocolError``;
4. after a ``RemoteProtocolError`` the last frame queued is a GOAWAY with its code.

The same check runs under pytest over every seed (tests/test_fuzz_target.py), without
atheris.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowproto import (
    PREFACE,
    Connection,
    Event,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    MessagesReceived,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
)

#: The receiver under test: small windows, so flow control and its errors are reachable.
RECEIVER = Settings(
    stream_bytes=65536,
    stream_messages=16,
    connection_bytes=131072,
    max_frame_bytes=16384,
    max_message_bytes=65536,
    max_streams=8,
    keepalive_ms=1000,
)
#: The HELLO sent for the peer when the input does not start at the preface.
PEER_HELLO = PREFACE + HelloFrame(Settings(max_frame_bytes=16384)).encode()
MAX_SEED_BYTES = 16 * 1024


def _canonical(frame: Frame) -> Frame:
    """The frame a sender would make of ``frame``: reasons cut to 256 bytes (spec §4.3.1)."""
    if isinstance(frame, (GoAwayFrame, ResetFrame)) and len(frame.reason.encode()) > 256:
        reason = frame.reason.encode()[:256].decode("utf-8", "ignore")
        return dataclasses.replace(frame, reason=reason)
    return frame


def _chunks(wire: bytes, size: int) -> list[bytes]:
    return [wire[i : i + size] for i in range(0, len(wire), size)] or [b""]


class _Run:
    """One Connection fed one way; what it said and did."""

    def __init__(self, with_handshake: bool) -> None:
        self.conn = Connection(Role.ACCEPTOR, RECEIVER)
        self.events: list[Event] = []
        self.out = bytearray()
        self.error: int | None = None
        if with_handshake:
            self.feed(PEER_HELLO)
            if self.conn.can_open_stream:
                sid = self.conn.open_stream()
                self.conn.send_messages(sid, [b"a" * 100, b"", b"b" * 20000])
        self.out += self.conn.data_to_send()

    def feed(
        self,
        chunk: bytes,
        after: Callable[[list[Event]], None] | None = None,
        *,
        take_output: bool = True,
    ) -> bool:
        """Feed one chunk; False once the connection failed (spec §10.2)."""
        if self.error is not None:
            return False
        try:
            events = self.conn.receive_data(chunk, 0.0)
        except RemoteProtocolError as exc:
            self.error = int(exc.error_code)
            out = self.conn.data_to_send()
            frames = FrameDecoder(16 * 1024 * 1024).feed(out.removeprefix(PREFACE))
            assert frames and isinstance(frames[-1], GoAwayFrame), frames[-3:]
            assert frames[-1].code == exc.error_code
            self.out += out
            return False
        self.events.extend(events)
        if after is not None:
            after(events)
        if take_output:
            self.out += self.conn.data_to_send()
        return True

    def normalized(self) -> tuple[list[Any], dict[int, list[bytes]], list[Frame], int | None]:
        """Events (messages per stream), the frames sent with their reasons blanked (the
        words may quote the bytes seen so far), and the error code."""
        others: list[Any] = []
        messages: dict[int, list[bytes]] = {}
        for event in self.events:
            if isinstance(event, MessagesReceived):
                messages.setdefault(event.stream_id, []).extend(event.messages)
            else:
                others.append(event)
        sent = FrameDecoder(1 << 24).feed(bytes(self.out).removeprefix(PREFACE))
        sent = [
            dataclasses.replace(f, reason="") if isinstance(f, (GoAwayFrame, ResetFrame)) else f
            for f in sent
        ]
        return others, messages, sent, self.error


def check_one_input(data: bytes) -> None:
    """The fuzz target's check; raises AssertionError if an invariant breaks."""
    if not data:
        return
    raw_handshake = bool(data[0] & 0x80)
    size = (data[0] & 0x7F) + 1
    wire = data[1:]

    # 1. The decoder alone.
    decoder = FrameDecoder(RECEIVER.max_frame_bytes)
    frames: list[Frame] = []
    try:
        for chunk in _chunks(wire.removeprefix(PREFACE) if raw_handshake else wire, size):
            frames.extend(decoder.feed(chunk))
    except RemoteProtocolError:
        pass
    for frame in frames:
        assert FrameDecoder(1 << 24).feed(frame.encode()) == [_canonical(frame)]

    # 2. Whole and in chunks: the same events, output and error. Output is taken only at
    # the end, so PONGs go ahead of the same queued frames in both (spec §5.5).
    whole = _Run(not raw_handshake)
    whole.feed(wire, take_output=False)
    split = _Run(not raw_handshake)
    for chunk in _chunks(wire, size):
        if not split.feed(chunk, take_output=False):
            break
    for run in (whole, split):
        run.feed(b"")
        run.out += run.conn.data_to_send()
    others_w, messages_w, out_w, error_w = whole.normalized()
    others_s, messages_s, out_s, error_s = split.normalized()
    assert (error_w, out_w) == (error_s, out_s)
    if error_w is None:  # a failing call loses its own events (Connection.receive_data)
        assert (others_w, messages_w) == (others_s, messages_s)

    # 3. An application that consumes everything, with a clock.
    busy = _Run(not raw_handshake)

    def consume(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, MessagesReceived):
                busy.conn.release(event.stream_id, event.nbytes, len(event.messages), 0.0)

    now = 0.0
    for chunk in _chunks(wire, size):
        now += 0.01
        try:
            busy.conn.handle_timeout(now)
        except RemoteProtocolError:
            break
        if not busy.feed(chunk, consume):
            break
    busy.feed(b"")


# --- the seed corpus ------------------------------------------------------------------------------


def record_seeds() -> dict[str, bytes]:
    """Inputs recorded from the vectors and real conversations: name -> input (selector
    byte first). Conformance seeds start with their case's position in CASES."""
    import json

    import trio
    import trio.testing

    seeds: dict[str, bytes] = {}
    root = Path(__file__).resolve().parent.parent

    # The spec's conversations: what each initiator sent, preface included.
    vectors = json.loads((root / "spec/vectors/conversations.json").read_text("utf-8"))
    for vector in vectors["vectors"]:
        if vector.get("session"):
            continue  # several transports (spec §13.3, 1.2): not one input to the target
        wire = b"".join(
            bytes.fromhex(step["hex"]) for step in vector["steps"] if step["from"] == "initiator"
        )
        seeds[f"conversation-{vector['name']}"] = bytes([0x80 | 63]) + wire
    # The spec's frames, one each, after a valid preface and HELLO (spec §13.1).
    frames = json.loads((root / "spec/vectors/frames.json").read_text("utf-8"))
    for vector in frames["vectors"]:
        seeds[f"frame-{vector['name']}"] = bytes([7]) + bytes.fromhex(vector["hex"])
    # The spec's invalid inputs (spec §13.2): after a valid preface and HELLO, or, for the
    # handshake's own, from the first byte (the preface first unless before_preface).
    invalid = json.loads((root / "spec/vectors/invalid.json").read_text("utf-8"))
    for vector in invalid["vectors"]:
        wire = bytes.fromhex(vector["hex"])
        if vector.get("before_preface"):
            seeds[f"invalid-{vector['name']}"] = bytes([0x80 | 7]) + wire
        elif vector.get("before_hello"):
            seeds[f"invalid-{vector['name']}"] = bytes([0x80 | 7]) + PREFACE + wire
        else:
            seeds[f"invalid-{vector['name']}"] = bytes([7]) + wire

    # Every conformance case, as the probe sent it to a served connection.
    from flowproto.conformance import run_suite
    from flowproto.trio import FlowStream, serve_connection

    class Recording(trio.abc.Stream):
        def __init__(self, inner: trio.abc.Stream, log: bytearray) -> None:
            self.inner, self.log = inner, log

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            self.log += data
            await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await self.inner.wait_send_all_might_not_block()

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            return await self.inner.receive_some(max_bytes)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def handler(stream: FlowStream) -> None:
        async for _ in stream:
            pass

    async def main() -> None:
        from flowproto.conformance import CASES

        async with trio.open_nursery() as nursery:
            for index, case in enumerate(CASES):
                log = bytearray()

                async def connect(log: bytearray = log) -> trio.abc.Stream:
                    a, b = trio.testing.memory_stream_pair()
                    nursery.start_soon(serve_connection, b, handler, {"codec": "raw"})
                    return Recording(a, log)

                await run_suite(connect, select=[case.id])
                name = "conformance-" + case.id.replace("/", "-")
                seeds[name] = bytes([0x80 | (index % 64)]) + bytes(log)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return {name: seed[:MAX_SEED_BYTES] for name, seed in seeds.items()}


def write_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for name, seed in sorted(record_seeds().items()):
        (directory / name).write_bytes(seed)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--write-corpus":
        write_corpus(Path(argv[2]))
        return
    import gc
    import types

    import atheris  # the "fuzz" extra; imported here so pytest can run the check without it

    # Coverage feedback from flowproto's own code only: instrument_all() would take
    # seconds to instrument trio, msgpack's fallback and the standard library too.
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and (obj.__module__ or "").startswith("flowproto"):
            atheris.instrument_func(obj)
    atheris.Setup(argv, check_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
