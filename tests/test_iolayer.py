"""flowproto.iolayer: what the Trio and asyncio layers share, checked without either loop.

The layers' own suites (tests/test_backends.py runs one suite on both) exercise these
through real connections; here each piece is held to its contract directly, the same for
both layers' error classes.
"""

from __future__ import annotations

import ssl
from collections import deque

import pytest
from helpers import pump

from flowproto import (
    Connection,
    ConnectionClosed,
    ErrorCode,
    GoAwayReceived,
    MsgpackCodec,
    Pacer,
    RawCodec,
    Role,
    StreamLimitError,
    StreamReset,
    iolayer,
)
from flowproto import asyncio as fa
from flowproto import trio as ft

LOST_CLASSES = [ft.ConnectionLostError, fa.ConnectionLostError]


@pytest.mark.parametrize("lost_class", LOST_CLASSES)
def test_a_goaway_error_carries_the_code_last_stream_and_retry_after(
    lost_class: type[iolayer.ConnectionLostBase],
) -> None:
    event = GoAwayReceived(
        last_stream_id=7, error_code=ErrorCode.OVERLOADED, reason="busy", retry_after_ms=1500
    )
    exc = iolayer.goaway_error(lost_class, event)
    assert type(exc) is lost_class
    assert (exc.error_code, exc.last_stream_id, exc.retry_after) == (ErrorCode.OVERLOADED, 7, 1.5)
    assert exc.retryable  # spec §10.1: OVERLOADED means nothing was processed
    assert str(exc).startswith("peer closed the connection: GOAWAY OVERLOADED")
    assert str(exc).endswith(" (busy)")


@pytest.mark.parametrize("lost_class", LOST_CLASSES)
def test_a_copy_for_a_stream_keeps_the_class_the_cause_and_names_what_was_delivered(
    lost_class: type[iolayer.ConnectionLostBase],
) -> None:
    cause = OSError("reset by peer")
    exc = lost_class("transport failed", error_code=None, last_stream_id=3)
    exc.__cause__ = cause
    copy = exc.for_stream(41)
    assert type(copy) is lost_class
    assert (copy.reason, copy.last_stream_id, copy.delivered) == ("transport failed", 3, 41)
    assert copy.__cause__ is cause
    assert exc.delivered is None  # the connection's own error is unchanged


def test_the_peer_closing_mid_frame_or_before_hello_is_said_so() -> None:
    core = Connection(Role.INITIATOR)
    assert iolayer.peer_closed_reason(ConnectionClosed(clean=False, truncated=True), core) == (
        "the peer closed the connection in the middle of a frame before its HELLO (spec §3.4)"
    )
    assert iolayer.peer_closed_reason(ConnectionClosed(clean=False, truncated=False), core) == (
        "the peer closed the connection without GOAWAY before its HELLO (spec §3.4)"
    )


def test_a_reset_error_takes_the_consumed_count_from_the_event() -> None:
    core = Connection(Role.INITIATOR)
    event = StreamReset(
        stream_id=1, error_code=ErrorCode.CANCEL, reason="x", remote=True, consumed=5
    )
    exc = iolayer.reset_error(event, core)
    assert (exc.stream_id, exc.error_code, exc.remote, exc.delivered) == (
        1,
        ErrorCode.CANCEL,
        True,
        5,
    )


@pytest.mark.parametrize("lost_class", LOST_CLASSES)
def test_no_stream_slot_refuses_after_goaway_and_without_wait(
    lost_class: type[iolayer.ConnectionLostBase],
) -> None:
    core = Connection(Role.INITIATOR)  # not OPEN yet: no handshake
    refusal = iolayer.stream_slot_refusal(lost_class, core, None, wait=True)
    assert isinstance(refusal, lost_class) and "shutting down" in str(refusal)
    goaway = GoAwayReceived(last_stream_id=5, error_code=ErrorCode.NO_ERROR, reason="")
    refusal = iolayer.stream_slot_refusal(lost_class, core, goaway, wait=True)
    assert isinstance(refusal, lost_class) and refusal.last_stream_id == 5


def test_no_stream_slot_without_wait_is_a_stream_limit_error_on_an_open_connection() -> None:
    a, b = Connection(Role.INITIATOR), Connection(Role.ACCEPTOR)
    pump(a, b)  # the handshake: preface and HELLO each way
    assert iolayer.stream_slot_refusal(fa.ConnectionLostError, a, None, wait=True) is None
    refusal = iolayer.stream_slot_refusal(fa.ConnectionLostError, a, None, wait=False)
    assert isinstance(refusal, StreamLimitError) and "spec §6.4" in str(refusal)


def test_a_session_resuming_on_a_new_transport_is_not_shutting_down() -> None:
    """spec §15.4, §15.6: from the loss until the exchange is reconciled there is no
    slot, but open_stream() waits for one rather than refusing; a GOAWAY still refuses."""
    a = Connection(Role.INITIATOR, session=True)
    b = Connection(Role.ACCEPTOR, session=True)
    pump(a, b)  # the handshake and the SESSION
    assert a.resumable and a.transport_lost()
    assert not a.can_open_stream
    assert iolayer.stream_slot_refusal(fa.ConnectionLostError, a, None, wait=True) is None
    a.reconnect(0.0)  # a new transport, its HELLO and exchange not yet answered
    assert iolayer.stream_slot_refusal(fa.ConnectionLostError, a, None, wait=True) is None
    goaway = GoAwayReceived(last_stream_id=0, error_code=ErrorCode.NO_ERROR, reason="")
    refusal = iolayer.stream_slot_refusal(fa.ConnectionLostError, a, goaway, wait=True)
    assert isinstance(refusal, fa.ConnectionLostError)


def test_the_inbox_hands_out_messages_in_order_across_the_core_batches() -> None:
    inbox = iolayer.Inbox()
    first, second = [b"a", b"b", b"c"], [b"d", b"e"]
    inbox.extend(first)
    inbox.extend([])  # an empty batch changes nothing
    inbox.extend(second)
    assert len(inbox) == 5 and inbox
    assert inbox.popleft() == b"a"
    assert inbox.take(3) == [b"b", b"c", b"d"]  # across the two batches
    assert len(inbox) == 1
    assert inbox.take(10) == [b"e"]
    assert not inbox and len(inbox) == 0
    inbox.extend(first)
    assert inbox.take(3) is first  # a whole batch is handed out as the core made it
    inbox.extend(second)
    inbox.clear()
    assert not inbox and inbox.take(5) == []


def test_take_held_releases_the_first_sizes_and_refuses_more_than_held() -> None:
    held = deque([3, 4, 5])
    assert iolayer.take_held(held, 2) == (2, 7)
    assert list(held) == [5]
    with pytest.raises(ValueError, match=r"release\(2\), but 1 messages are held"):
        iolayer.take_held(held, 2)
    assert iolayer.take_held(held, None) == (1, 5)


def test_decode_batch_returns_raw_bytes_as_they_are_and_decodes_others() -> None:
    batch = [b"1", b"[2]"]
    assert iolayer.decode_batch(RawCodec(), batch) is batch
    codec = MsgpackCodec()
    assert iolayer.decode_batch(codec, [codec.encode(1), codec.encode([2])]) == [1, [2]]


def test_pace_waits_only_while_the_peer_reports_a_queue() -> None:
    pacer = Pacer(max_lag=0.0)
    assert iolayer.pace(pacer, None, 10, 100.0) == 100.0
    assert iolayer.pace(pacer, (50, 0), 10, 100.0) == 100.0  # no standing queue
    # A queue at the peer: at most PACING_HEADROOM times its 100 msg/s (spec §8.10).
    first = iolayer.pace(pacer, (100, 20), 105, 100.0)
    second = iolayer.pace(pacer, (100, 20), 105, 100.0)
    assert first >= 100.0
    assert second - first == pytest.approx(1.0)


def test_connection_names_say_the_side_and_the_peer() -> None:
    assert iolayer.connection_name(("10.0.0.1", 80), Role.INITIATOR, "T") == (
        "connection to 10.0.0.1:80"
    )
    assert iolayer.connection_name(("::1", 80, 0, 0), Role.ACCEPTOR, "T") == (
        "connection from [::1]:80"
    )
    assert iolayer.connection_name("/tmp/s", Role.ACCEPTOR, "T") == "connection from unix:/tmp/s"
    assert iolayer.connection_name(None, Role.INITIATOR, "MemoryStream") == (
        "connection to a MemoryStream"
    )


def test_tls_reasons_are_in_words_without_the_source_line() -> None:
    err = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    assert iolayer.tls_reason(err) == "TLS: [SSL: WRONG_VERSION_NUMBER] wrong version number"
    assert iolayer.tls_reason(OSError("x")) is None
