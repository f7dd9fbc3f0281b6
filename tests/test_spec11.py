"""Spec revision 1.1 (issue 11) against the current sans-IO core: the rules 1.1 states that
flowproto already follows, one test per rule, each naming its section.

The rules that still need a code change are strict xfails in ``test_spec11_pending.py``;
the rules shown by a vector are tested where every vector is (``test_frames.py``). Inputs
are hand-made bytes (a peer that may break the rules) or a second Connection (``pump``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import connected_pair, messages_of, pump
from test_robustness import QUIET, data, fails_with, frames_of, of_type, receiver, sender

from flowproto import (
    PREFACE,
    BlockedFrame,
    Connection,
    ConnectionState,
    CreditFrame,
    CreditGranted,
    ErrorCode,
    GoAwayFrame,
    GoAwayReceived,
    MessagesReceived,
    PeerBlocked,
    PingFrame,
    PongFrame,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
    StreamOpened,
    StreamReset,
)
from flowproto._frames import MAX_COUNTER
from flowproto._limits import GLITCH_BURST

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec" / "PROTOCOL.md"
VECTORS = ROOT / "spec" / "vectors"
FRAMES = {v["name"]: v for v in json.loads((VECTORS / "frames.json").read_text("utf-8"))["vectors"]}
END_MESSAGE = 1
KIB = 1024


def _frame_vector(name: str) -> bytes:
    return bytes.fromhex(FRAMES[name]["hex"])


def _section(number: str) -> str:
    """The text of spec section ``number`` up to the next heading of any level."""
    text = SPEC.read_text("utf-8")
    start = text.index(f" {number} ")
    start = text.rindex("\n", 0, start)
    end = text.find("\n#", start + 1)
    return text[start:end]


# --- the document -----------------------------------------------------------------------------


def test_the_spec_is_revision_1_2_of_wire_version_1_with_changes_appendices() -> None:
    """spec 1.1, 1.2: the revision note, the wire version unchanged, Appendices C and D
    listing the changes, each row citing sections that exist."""
    text = SPEC.read_text("utf-8")
    assert "Revision: **1.2**" in text
    assert "## Appendix D. Changes in 1.2" in text
    assert "The complete v1 preface is `89 46 4c 4f 57 0d 0a 1a 00 01`." in text
    appendix = text[text.index("## Appendix C. Changes in 1.1") :]
    rows = [
        line for line in appendix.splitlines() if line.startswith("| §") and "| § |" not in line
    ]
    # One row per normative change of issue 11, each citing sections that exist.
    assert len(rows) >= 17
    for row in rows:
        for ref in row.split("|")[1].replace(",", " ").split():
            if ref.startswith("§"):
                number = ref[1:].split("/")[0]
                assert (
                    f"\n## {number}. " in text
                    or f"\n### {number} " in text
                    or (f"\n#### {number} " in text)
                ), ref


def test_the_named_limits_table_defines_the_new_1_1_limits() -> None:
    """spec §12: MIN_FRAGMENT_BYTES and MIN_FRAME_RATE are named wire limits."""
    table = _section("12.")
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| name") and "---" not in line
    }
    assert rows["MIN_FRAGMENT_BYTES"].startswith("1024 bytes")
    assert rows["MIN_FRAME_RATE"].startswith("16384 bytes per second")


# --- §3.2, §4.3.2: the HELLO's 64 entries are top-level entries ------------------------------


def test_a_hello_of_64_entries_one_a_map_of_64_completes_the_handshake() -> None:
    """spec §3.2 step 1: nested entries do not count toward the HELLO limit of 64."""
    conn = Connection(Role.ACCEPTOR, QUIET)
    conn.data_to_send()
    conn.receive_data(
        PREFACE + _frame_vector("hello_64_top_level_entries_and_a_nested_map_of_64"), 0.0
    )
    assert conn.handshake_complete
    assert conn.peer_settings == Settings()
    assert conn.data_to_send() == b""


# --- §4.2: control frames on streams are judged after their body -----------------------------


def test_a_credit_header_on_an_idle_stream_is_no_error_until_its_body_arrives() -> None:
    """spec §4.2 (1.1): the stream state of CREDIT is judged after the body, never from
    the header alone; the whole frame is then PROTOCOL_ERROR (spec §6.1)."""
    conn = receiver()
    wire = CreditFrame(4, 1, 1).encode()  # stream 4: the acceptor's parity, never opened
    assert conn.receive_data(wire[:10], 0.0) == []
    assert conn.data_to_send() == b""
    assert conn.state is ConnectionState.OPEN
    fails_with(conn, wire[10:], ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "wire",
    [
        CreditFrame(4, MAX_COUNTER + 1, 1).encode(),
        CreditFrame(6, 1, MAX_COUNTER + 1).encode(),
    ],
    ids=["bytes", "messages"],
)
def test_a_credit_above_max_counter_on_an_idle_stream_is_a_flow_control_error(
    wire: bytes,
) -> None:
    """spec §4.2 (1.1): body error and stream error together: the body error wins."""
    fails_with(receiver(), wire, ErrorCode.FLOW_CONTROL_ERROR)


# --- §5.3: connection CREDIT ignores "messages" ----------------------------------------------


def test_a_connection_credit_ignores_messages_whatever_its_value() -> None:
    """spec §5.3 (1.1): ``messages`` is an unknown key on stream 0, even above MAX_COUNTER."""
    conn = sender()
    events = conn.receive_data(
        _frame_vector("credit_connection_messages_above_max_counter_ignored"), 0.0
    )
    assert events == [CreditGranted(0, 33554432, None)]
    assert conn.state is ConnectionState.OPEN
    assert conn.connection_send_capacity == 33554432


# --- §5.4: BLOCKED above the advertised limits is legal and ignored --------------------------


def test_blocked_above_the_advertised_limits_is_no_error_and_changes_nothing() -> None:
    """spec §5.4 (1.1): no error, no reply, no limit changed."""
    conn = receiver()
    conn.receive_data(data(1, b"m"), 0.0)  # opens stream 1
    conn.data_to_send()
    before = conn.receive_capacity(1)
    events = conn.receive_data(
        BlockedFrame(1, Settings().stream_bytes * 2, Settings().stream_messages * 2).encode()
        + BlockedFrame(0, Settings().connection_bytes * 2).encode(),
        0.0,
    )
    assert conn.state is ConnectionState.OPEN
    assert conn.data_to_send() == b""
    assert conn.receive_capacity(1) == before
    assert all(isinstance(e, PeerBlocked) for e in events)  # recorded at most (MAY)


# --- §5.8: VERSION_MISMATCH without versions -------------------------------------------------


def test_goaway_version_mismatch_without_versions_closes_and_reports_the_error() -> None:
    """spec §5.8 (1.1): no common version: every stream ends, nothing is sent, the error
    is reported, later input is not processed."""
    a, b = connected_pair(QUIET, QUIET)
    stream_id = a.open_stream()
    assert a.send_message(stream_id, b"x")
    pump(a, b)
    events = a.receive_data(_frame_vector("goaway_version_mismatch_without_versions"), 0.0)
    goaways = [e for e in events if isinstance(e, GoAwayReceived)]
    assert [(g.error_code, g.last_stream_id) for g in goaways] == [(ErrorCode.VERSION_MISMATCH, 0)]
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert [r.stream_id for r in resets] == [stream_id]
    assert a.state is ConnectionState.CLOSED
    assert a.data_to_send() == b""  # no GOAWAY of its own in answer
    assert a.receive_data(PingFrame(3).encode(), 0.0) == []
    assert a.data_to_send() == b""


# --- §6.4: openers expect REFUSED_STREAM -----------------------------------------------------


def test_an_opener_refused_below_max_streams_keeps_its_connection_and_may_retry() -> None:
    """spec §6.4 (1.1): REFUSED_STREAM on a stream opened within the peer's max_streams is
    a stream error; the connection lives and a new stream carries the retried message."""
    conn = sender(Settings(max_streams=100, keepalive_ms=0))
    first = conn.open_stream()
    assert conn.send_message(first, b"job")
    conn.data_to_send()
    events = conn.receive_data(ResetFrame(first, ErrorCode.REFUSED_STREAM, "busy", 0).encode(), 0.0)
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert [(r.stream_id, r.error_code, r.remote, r.consumed) for r in resets] == [
        (first, ErrorCode.REFUSED_STREAM, True, 0)
    ]
    assert conn.state is ConnectionState.OPEN
    assert conn.glitches == 0  # a RESET of a stream we opened is free (spec §10.7.1)
    retry = conn.open_stream()
    assert retry > first
    assert conn.send_message(retry, b"job")
    sent = frames_of(conn.data_to_send())
    assert [f.stream_id for f in sent if not isinstance(f, CreditFrame)] == [retry]


# --- §7.1, §10.7.1: the minimum fragment size ------------------------------------------------


def _fragmented_messages(count: int, size: int, fragment: int) -> list[bytes]:
    """``count`` messages of ``size`` bytes, each cut into ``fragment``-byte frames."""
    out = []
    for i in range(count):
        body = bytes([i % 251]) * size
        parts = [body[j : j + fragment] for j in range(0, size, fragment)]
        out.append(
            b"".join(
                data(1, part, END_MESSAGE if k == len(parts) - 1 else 0)
                for k, part in enumerate(parts)
            )
        )
    return out


def test_ten_thousand_fragments_of_min_fragment_bytes_are_never_charged() -> None:
    """spec §7.1, §10.7.1 (1.1): a sender fragmenting at MIN_FRAGMENT_BYTES (1024) is
    conforming: 10 240 fragments (ten 1 MiB messages) at default settings, no glitch."""
    conn = receiver()
    received = 0
    for wire in _fragmented_messages(10, 1024 * KIB, 1024):
        for event in conn.receive_data(wire, 0.0):
            if isinstance(event, MessagesReceived):
                received += len(event.messages)
                conn.release(1, event.nbytes, len(event.messages), 0.0)
        conn.data_to_send()
    assert received == 10
    assert conn.glitches == 0
    assert conn.state is ConnectionState.OPEN


def test_a_message_in_512_byte_fragments_is_still_cut_off() -> None:
    """spec §7.1, §10.7.1 (1.1): 512-byte non-final fragments are non-conforming and
    charged; a 1 MiB message cut so ends the connection before it completes."""
    conn = receiver()
    (wire,) = _fragmented_messages(1, 1024 * KIB, 512)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire, 0.0)
    assert info.value.error_code == ErrorCode.ENHANCE_YOUR_CALM


# --- §10.2: what a connection error names, and what its receiver still delivers ----------------


def test_a_violating_frame_that_opens_a_stream_is_not_named_by_last_stream() -> None:
    """spec §10.2 (1.1): last_stream is the highest stream accepted before the frame."""
    conn = receiver(Settings(stream_bytes=16, max_message_bytes=16, keepalive_ms=0))
    conn.receive_data(data(1, b"a") + data(3, b"b"), 0.0)
    frames = fails_with(conn, data(5, b"z" * 17), ErrorCode.FLOW_CONTROL_ERROR)
    assert isinstance(frames[-1], GoAwayFrame)
    assert frames[-1].last_stream == 3


def test_after_an_error_goaway_earlier_messages_are_delivered_and_later_bytes_ignored() -> None:
    """spec §10.2 (1.1): complete messages before the GOAWAY are delivered; every byte
    after it, in the same read, is discarded unprocessed; nothing is sent."""
    conn = receiver()
    goaway = GoAwayFrame(1, ErrorCode.INTERNAL_ERROR, "bye").encode()
    after = data(1, b"late") + data(3, b"new") + PingFrame(5).encode()
    events = conn.receive_data(data(1, b"early") + data(1, b"half", 0) + goaway + after, 0.0)
    assert messages_of(events) == [b"early"]
    assert [e.stream_id for e in events if isinstance(e, StreamOpened)] == [1]
    goaways = [e for e in events if isinstance(e, GoAwayReceived)]
    assert [g.error_code for g in goaways] == [ErrorCode.INTERNAL_ERROR]
    assert conn.state is ConnectionState.CLOSED
    assert conn.data_to_send() == b""


# --- §10.4: answering a graceful GOAWAY is optional ------------------------------------------


def test_a_graceful_goaway_needs_no_answer() -> None:
    """spec §10.4 (1.1): the core does not answer on its own; the first sender is finished
    without an answer; an answer is the application's choice (``close``)."""
    a, b = connected_pair(QUIET, QUIET)
    a.close()
    _, events = pump(a, b)
    assert [type(e) for e in events] == [GoAwayReceived]
    assert b.data_to_send() == b""
    assert a.finished and b.finished
    b.close()
    assert of_type(frames_of(b.data_to_send()), GoAwayFrame) == [GoAwayFrame(0, ErrorCode.NO_ERROR)]


# --- §10.5: the final consumed report --------------------------------------------------------


def test_the_final_consumed_report_goes_out_when_the_last_message_is_consumed() -> None:
    """spec §10.5 (1.1, MUST): after the peer's END_STREAM, consuming the last message
    queues at once a stream CREDIT with the final count, limits restated."""
    a, b = connected_pair(QUIET, QUIET)
    stream_id = a.open_stream()
    for i in range(5):
        assert a.send_message(stream_id, b"m%d" % i, end_stream=i == 4)
    _, events = pump(a, b)
    assert len(messages_of(events)) == 5
    b.release(stream_id, 4, 2, 0.0)
    assert not [f for f in frames_of(b.data_to_send()) if getattr(f, "consumed", None)]
    b.release(stream_id, 6, 3, 0.0)
    wire = b.data_to_send()
    reports = of_type(frames_of(wire), CreditFrame)
    assert [(f.stream_id, f.consumed) for f in reports if f.stream_id] == [(stream_id, 5)]
    a.receive_data(wire, 0.0)
    assert a.peer_consumed(stream_id) == 5


# --- §10.7.1: the hostile forms stay charged -------------------------------------------------


def test_a_flood_of_credit_that_follows_no_consumption_is_still_cut_off() -> None:
    """spec §10.7.1 (1.1): CREDIT raising the connection limit by a byte at a time, with
    nothing sent, is not funded: the budget ends it."""
    conn = sender()
    base = Settings().connection_bytes
    wire = b"".join(CreditFrame(0, base + i).encode() for i in range(1, GLITCH_BURST + 1))
    conn.receive_data(wire, 0.0)
    fails_with(conn, CreditFrame(0, base + GLITCH_BURST + 1).encode(), ErrorCode.ENHANCE_YOUR_CALM)


def test_a_burst_of_pings_that_outruns_its_pongs_is_still_cut_off() -> None:
    """spec §10.7.1 (1.1): PINGs arriving while earlier PONGs are unsent are charged."""
    conn = receiver()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(PingFrame(1).encode() * (GLITCH_BURST + 2), 0.0)
    assert info.value.error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert len(of_type(frames_of(conn.data_to_send()), PongFrame)) <= GLITCH_BURST + 1


def test_the_spec_sections_cited_here_exist() -> None:
    """Each section this file cites is in PROTOCOL.md (spec §13)."""
    cited = ["3.2", "4.2", "4.3.2", "5.3", "5.4", "5.8", "6.4", "7.1", "10.2", "10.4", "10.5"]
    cited += ["10.7.1", "12."]
    for number in cited:
        assert _section(number)


# --- §11 (1.1): the core times a frame in progress by its length ------------------------------


def test_the_core_times_a_frame_from_its_first_byte_scaled_by_its_length() -> None:
    """spec §11 (1.1): first byte + 10 s + L / 16384; unknown L (half a header): 10 s."""
    from flowproto import MIN_FRAME_RATE, FrameTimeout

    conn = receiver()
    conn.handle_timeout(100.0)
    assert conn.next_deadline() is None  # keepalive off, nothing held
    frame = data(1, b"x" * 65536)
    conn.receive_data(frame[:5], 101.0)  # half a header: its length is not known yet
    assert conn.next_deadline() == 111.0
    conn.receive_data(frame[5:1000], 102.0)  # the header is in: 10 s + 65536 / 16384 from 101
    conn.handle_timeout(102.0)
    assert conn.next_deadline() == 101.0 + 10.0 + 65536 / MIN_FRAME_RATE
    conn.handle_timeout(114.9)  # bytes arriving do not restart it; not due yet
    with pytest.raises(FrameTimeout):
        conn.handle_timeout(115.0)
    assert conn.state is ConnectionState.CLOSED
    assert of_type(frames_of(conn.data_to_send()), GoAwayFrame)[0].code == ErrorCode.TIMEOUT


def test_a_completed_frame_ends_its_timer_and_the_next_starts_its_own() -> None:
    conn = receiver()
    first, second = data(1, b"a" * 100), data(1, b"b" * 100)
    conn.receive_data(first + second[:20], 5.0)  # the second frame began with this receipt
    assert conn.next_deadline() == 5.0 + 10.0 + 100 / 16384
    conn.receive_data(second[20:], 6.0)
    assert conn.next_deadline() is None
