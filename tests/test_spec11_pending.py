"""Spec revision 1.1 (issue 11): the rules that need a code change, as strict xfails.

Each test states the 1.1 rule and the change it waits for; when the change lands the test
passes, ``strict=True`` turns that into a failure, and the marker is removed. The rules
1.1 states that the code already follows are in ``test_spec11.py``; the vector that waits
for code (``hello_65_entries_malformed_is_enhance_your_calm``) is a ``KNOWN_DEVIATIONS``
entry of ``test_frames.py``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from helpers import connected_pair, pump
from test_robustness import QUIET, data, frames_of, receiver, sender
from test_trio import HANG, bare_peer

from flowproto import (
    PREFACE,
    Connection,
    ConnectionState,
    CreditFrame,
    ErrorCode,
    FrameDecoder,
    MessagesReceived,
    PingFrame,
    PongFrame,
    RemoteProtocolError,
    Role,
    Settings,
    StreamEnded,
)
from flowproto._frames import HEADER
from flowproto.trio import ConnectionLostError

MIB = 1024 * 1024
#: spec §12 (1.1): frame and write timeouts are 10 s + length / MIN_FRAME_RATE.
MIN_FRAME_RATE = 16384
FRAME_TIMEOUT_BASE = 10.0
#: How often each conforming behaviour of spec §10.7.1 is repeated (issue 11: 10 000 times).
REPEATS = 10_000


# --- §10.7.1: the budget never charges funded CREDIT or an awaited PING ------------------------


def test_an_rtt_probe_that_awaits_each_pong_is_never_cut_off() -> None:
    """spec §10.7.1 (1.1): a PING that arrives after the PONG of every earlier PING was
    handed to the transport is never charged: 10 000 probes, no clock, no data."""
    conn = receiver()
    for ping_id in range(REPEATS):
        conn.receive_data(PingFrame(ping_id).encode(), 0.0)
        # The PONG is handed to the transport before the next PING arrives.
        assert conn.data_to_send() == PongFrame(ping_id).encode()
    assert conn.state is ConnectionState.OPEN
    assert conn.glitches == 0


def test_a_receiver_granting_credit_per_message_is_never_cut_off() -> None:
    """spec §10.7.1 (1.1): a receiver whose policy grants exactly what each 100-byte message
    freed (stream +100 bytes +1 message, connection +100 bytes) sends funded CREDIT only:
    10 000 messages at default settings, no glitch."""
    conn = sender(QUIET)
    stream_id = conn.open_stream()
    conn.data_to_send()
    stream_bytes, stream_messages = Settings().stream_bytes, Settings().stream_messages
    connection_bytes = Settings().connection_bytes
    for i in range(1, REPEATS + 1):
        assert conn.send_message(stream_id, b"p" * 100)
        conn.data_to_send()
        conn.receive_data(
            CreditFrame(stream_id, stream_bytes + 100 * i, stream_messages + i, i).encode()
            + CreditFrame(0, connection_bytes + 100 * i).encode(),
            0.0,
        )
    assert conn.state is ConnectionState.OPEN
    assert conn.glitches == 0


def test_a_short_first_fragment_is_charged() -> None:
    """spec §7.1, §10.7.1 (1.1): a 512-byte first fragment without END_MESSAGE is
    non-conforming and always charged, like a short continuing fragment."""
    conn = receiver()
    conn.receive_data(data(1, b"a" * 512, 0) + data(1, b"b" * 512), 0.0)
    assert conn.glitches == 1


# --- §11: the frame timeout scales with the frame's length ------------------------------------


async def _dribble(peer_send: trio.abc.SendStream, length: int, per_second: int) -> None:
    """A DATA frame of ``length`` bytes on new peer stream 2, ``per_second`` bytes a second."""
    await peer_send.send_all(HEADER.pack(length, 0, 1, 2))
    sent = 0
    while sent < length:
        chunk = min(per_second, length - sent)
        await trio.sleep(1)
        await peer_send.send_all(b"d" * chunk)
        sent += chunk


BIG = Settings(max_frame_bytes=MIB, max_message_bytes=MIB, keepalive_ms=0)


async def test_a_large_frame_at_twice_the_minimum_rate_is_not_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11 (1.1): a 1 MiB DATA frame at 32 KiB/s takes 32 s, within 10 s + 64 s."""
    with trio.fail_after(HANG):
        async with (
            bare_peer(settings=BIG, codec="raw") as (conn, peer),
            trio.open_nursery() as nursery,
        ):
            start = trio.current_time()
            nursery.start_soon(_dribble, peer.transport, MIB, 2 * MIN_FRAME_RATE)
            stream = await conn.accept_stream()
            assert await stream.receive() == b"d" * MIB
            assert trio.current_time() - start == pytest.approx(MIB / (2 * MIN_FRAME_RATE))


async def test_a_large_frame_below_the_minimum_rate_is_cut_off_at_its_scaled_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11 (1.1): the same frame at 4 KiB/s is cut off 10 s + 64 s after its first
    byte, with GOAWAY(TIMEOUT)."""
    with trio.fail_after(HANG):
        async with (
            bare_peer(settings=BIG, codec="raw") as (conn, peer),
            trio.open_nursery() as nursery,
        ):
            start = trio.current_time()
            nursery.start_soon(_dribble, peer.transport, MIB, MIN_FRAME_RATE // 4)
            with pytest.raises(ConnectionLostError) as info:
                await conn.accept_stream()
            assert info.value.error_code == ErrorCode.TIMEOUT
            assert trio.current_time() - start == pytest.approx(
                FRAME_TIMEOUT_BASE + MIB / MIN_FRAME_RATE
            )
            nursery.cancel_scope.cancel()


async def test_a_keepalive_ping_waits_for_a_large_frame_in_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11 (1.1): keepalive on (1 s), a 1 MiB frame at 32 KiB/s: the PONG can only
    follow the frame, so neither the frame timeout (74 s) nor the ping timeout ends it."""
    settings = Settings(max_frame_bytes=MIB, max_message_bytes=MIB, keepalive_ms=1000)
    with trio.fail_after(HANG):
        async with (
            bare_peer(settings=settings, codec="raw") as (conn, peer),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_dribble, peer.transport, MIB, 2 * MIN_FRAME_RATE)
            stream = await conn.accept_stream()
            assert await stream.receive() == b"d" * MIB
            nursery.start_soon(peer.read_forever)  # the PING is answered, late
            await trio.sleep(5)
            assert conn.statistics().state == "open"
            nursery.cancel_scope.cancel()


async def test_a_peer_reading_at_the_minimum_rate_does_not_time_out_a_large_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """spec §11 (1.1): a 240 KiB message to a peer that reads 16 KiB a second takes 15 s;
    the write of about 240 KiB is allowed 10 s + 15 s."""
    payload = b"w" * (240 * 1024)
    with trio.fail_after(HANG):
        async with bare_peer(settings=QUIET, codec="raw", lockstep=True) as (conn, peer):
            stream = await conn.open_stream()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send, payload)
                messages: list[bytes] = []
                while not messages:
                    await trio.sleep(1)
                    chunk = await peer.transport.receive_some(MIN_FRAME_RATE)
                    assert chunk, "the transport ended first"
                    for event in peer.conn.receive_data(chunk, 0.0):
                        if isinstance(event, MessagesReceived):
                            messages.extend(event.messages)
            assert messages == [payload]
            assert conn.close_reason is None


# --- §10.5: a sender without the final report says "unconfirmed", not "failed" --------------


def test_ending_a_stream_with_unconsumed_messages_reports_the_count_first() -> None:
    """spec §10.5 (1.1): the stream closes at both ends with its END_STREAM, so the count
    consumed so far (1 of 3) goes out just before it; no report is possible after."""
    a, b = connected_pair(QUIET, QUIET)
    stream_id = a.open_stream()
    for i in range(3):
        assert a.send_message(stream_id, b"x", end_stream=i == 2)
    pump(a, b)
    b.release(stream_id, 1, 1, 0.0)
    b.end_stream(stream_id)
    frames = frames_of(b.data_to_send())
    assert [type(f).__name__ for f in frames] == ["CreditFrame", "DataFrame"]
    assert isinstance(frames[0], CreditFrame) and frames[0].consumed == 1


async def _receiver_without_final_report(transport: trio.SocketStream) -> None:
    """A receiver that consumes every message but drops its stream CREDITs (the final
    `consumed` report of spec §10.5 among them), then ends its own direction."""
    core = Connection(Role.ACCEPTOR, QUIET)
    decoder = FrameDecoder(16 * MIB)

    async def flush() -> None:
        out = core.data_to_send()
        if out.startswith(PREFACE):
            await transport.send_all(PREFACE)
            out = out[len(PREFACE) :]
        kept = [f for f in decoder.feed(out) if not (isinstance(f, CreditFrame) and f.stream_id)]
        if kept:
            await transport.send_all(b"".join(f.encode() for f in kept))

    await flush()
    while True:
        chunk = await transport.receive_some()
        try:
            events = core.receive_data(chunk, 0.0)
        except RemoteProtocolError:
            return
        for event in events:
            if isinstance(event, MessagesReceived):
                core.release(event.stream_id, event.nbytes, len(event.messages), 0.0)
            elif isinstance(event, StreamEnded):
                core.end_stream(event.stream_id)
        await flush()
        if not chunk:
            return


async def test_the_cli_sender_reports_a_missing_final_report_as_unconfirmed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """spec §10.5 (1.1): the stream ended normally, the receiver never reported its final
    count: the sender says "unconfirmed: 0 of 100 confirmed" and the transfer succeeds."""
    from flowproto.cli._run_send import SendOptions, run_send

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, _receiver_without_final_report, listeners)
            opts = SendOptions(host="127.0.0.1", port=port, codec="raw", count=100, live=False)
            result = await run_send(opts, None)
            nursery.cancel_scope.cancel()
    assert result["messages"] == 100
    assert result["delivered"] == 0
    assert "unconfirmed: 0 of 100 confirmed" in capsys.readouterr().err
