"""Replay spec/vectors/conversations.json byte for byte (spec §13).

Two Connections are built with each conversation's settings. For every step, the sending
side makes the calls listed in ``do`` and what its ``data_to_send()`` returns must equal
the step's bytes exactly; those bytes then go to the other side. Replies (PONG, CREDIT,
GOAWAY) therefore have to come out of the receiving side by itself, in the next step from
it. ``raw`` steps come from a misbehaving peer and are only fed in. At the end nothing may be
left unsent, and the outcome must match ``expect``. The conversation bytes are built
without flowproto (spec/vectors/generate.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from flowproto import (
    Connection,
    CreditGranted,
    ErrorCode,
    Event,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    GoAwayReceived,
    MessagesReceived,
    PeerBlocked,
    PingReceived,
    PongReceived,
    RemoteProtocolError,
    ResetFrame,
    Role,
    Settings,
    StreamEnded,
    StreamOpened,
    StreamReset,
)

VECTORS = Path(__file__).resolve().parents[1] / "spec" / "vectors"
CONVERSATIONS: list[dict[str, Any]] = json.loads(
    (VECTORS / "conversations.json").read_text(encoding="utf-8")
)["vectors"]
SIDES = ("initiator", "acceptor")
OTHER = {"initiator": "acceptor", "acceptor": "initiator"}


class Replay:
    """Two connections, what each received as events, and what each sent."""

    def __init__(self, conversation: dict[str, Any]) -> None:
        overrides = conversation["settings"]
        self.conns = {
            "initiator": Connection(Role.INITIATOR, Settings(**overrides["initiator"])),
            "acceptor": Connection(Role.ACCEPTOR, Settings(**overrides["acceptor"])),
        }
        self.events: dict[str, list[Event]] = {side: [] for side in SIDES}
        self.errors: dict[str, RemoteProtocolError | None] = {side: None for side in SIDES}
        self.sent: dict[str, bytearray] = {side: bytearray() for side in SIDES}

    def call(self, side: str, call: dict[str, Any]) -> None:
        """One of the verbs a step lists in ``do``, on ``side``'s connection."""
        conn = self.conns[side]
        verb = call["call"]
        if verb == "open_stream":
            result: Any = conn.open_stream()
        elif verb == "send_message":
            result = conn.send_message(
                call["stream_id"],
                bytes.fromhex(call["payload_hex"]),
                end_stream=call.get("end_stream", False),
            )
        elif verb == "release":
            result = conn.release(call["stream_id"], call["nbytes"], call["nmessages"], 0.0)
        elif verb == "end_stream":
            result = conn.end_stream(call["stream_id"])
        elif verb == "reset_stream":
            result = conn.reset_stream(
                call["stream_id"], ErrorCode[call["code"]], call.get("reason", "")
            )
        elif verb == "ping":
            result = conn.ping(0.0)
        elif verb == "close":
            result = conn.close(ErrorCode[call["code"]], call.get("reason", ""))
        else:
            raise AssertionError(f"unknown call {verb!r} in a conversation vector")
        if "returns" in call:
            assert result == call["returns"], f"{side}.{verb} returned {result!r}"

    def deliver(self, side: str, wire: bytes, *, bytewise: bool) -> None:
        """Feed ``wire`` to ``side``, whole or one byte at a time."""
        conn = self.conns[side]
        chunks = [wire[i : i + 1] for i in range(len(wire))] if bytewise else [wire]
        try:
            for chunk in chunks:
                self.events[side].extend(conn.receive_data(chunk, 0.0))
        except RemoteProtocolError as exc:
            self.errors[side] = exc


def _decode(wire: bytes) -> list[Frame]:
    decoder = FrameDecoder(max_frame_bytes=1 << 24)
    frames = decoder.feed(wire)
    assert decoder.buffered == 0
    return frames


def _without_reason(frames: list[Frame]) -> list[Frame]:
    return [
        dataclasses.replace(f, reason="") if isinstance(f, (GoAwayFrame, ResetFrame)) else f
        for f in frames
    ]


def _assert_same_wire(sent: bytes, step: dict[str, Any], index: int) -> None:
    expected = bytes.fromhex(step["hex"])
    if step.get("reason_informative"):
        # The reason text is the implementation's wording (spec §10.2): compare the frames
        # with it blanked, and the canonical encoding of what was sent.
        assert _without_reason(_decode(sent)) == _without_reason(_decode(expected)), (
            f"step {index}: {step['meaning']}"
        )
        assert b"".join(f.encode() for f in _decode(sent)) == sent
    else:
        assert sent.hex() == expected.hex(), f"step {index} from {step['from']}: {step['meaning']}"


def replay(conversation: dict[str, Any], *, bytewise: bool = False) -> Replay:
    r = Replay(conversation)
    for index, step in enumerate(conversation["steps"]):
        side = step["from"]
        wire = bytes.fromhex(step["hex"])
        if not step.get("raw"):
            for call in step.get("do", []):
                r.call(side, call)
            sent = r.conns[side].data_to_send()
            _assert_same_wire(sent, step, index)
            wire = sent
        r.sent[side] += wire
        r.deliver(OTHER[side], wire, bytewise=bytewise)
    for side in SIDES:
        assert r.conns[side].data_to_send() == b"", f"{side} queued bytes no step shows"
    return r


def _messages(events: list[Event]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        if isinstance(e, MessagesReceived):
            out.setdefault(str(e.stream_id), []).extend(m.hex() for m in e.messages)
    return out


def check_expect(r: Replay, side: str, expect: dict[str, Any]) -> None:
    """Compare one side's outcome with the vector's ``expect`` entry for it."""
    conn = r.conns[side]
    events = r.events[side]
    error = r.errors[side]
    for key, want in expect.items():
        if key == "result":
            if want == "ok":
                assert error is None, f"{side} failed: {error!r}"
            else:
                assert want == "connection_error" and error is not None, f"{side} did not fail"
        elif key == "code":
            assert error is not None and error.error_code.name == want, repr(error)
        elif key == "last_stream":
            goaways = [f for f in _decode(bytes(r.sent[side])[10:]) if isinstance(f, GoAwayFrame)]
            assert goaways and goaways[-1].last_stream == want
        elif key == "handshake_complete":
            assert conn.handshake_complete is want
        elif key == "state":
            assert conn.state.name.lower() == want
        elif key == "finished":
            assert conn.finished is want
        elif key == "peer_settings":
            assert conn.peer_settings == Settings(**want)
        elif key == "messages":
            assert _messages(events) == want
        elif key == "pings":
            assert [e.ping_id for e in events if isinstance(e, PingReceived)] == want
        elif key == "pongs":
            assert [e.ping_id for e in events if isinstance(e, PongReceived)] == want
        elif key == "streams_opened":
            assert [e.stream_id for e in events if isinstance(e, StreamOpened)] == want
        elif key == "streams_ended":
            assert [e.stream_id for e in events if isinstance(e, StreamEnded)] == want
        elif key == "blocked_reports":
            got = [
                {"stream_id": e.stream_id, "bytes": e.bytes_limit, "messages": e.messages_limit}
                for e in events
                if isinstance(e, PeerBlocked)
            ]
            assert got == want
        elif key == "credit_granted":
            got = [
                {"stream_id": e.stream_id, "bytes": e.bytes_limit, "messages": e.messages_limit}
                for e in events
                if isinstance(e, CreditGranted)
            ]
            assert got == want
        elif key == "stream_resets":
            got = [
                {
                    "stream_id": e.stream_id,
                    "code": ErrorCode.describe(e.error_code),
                    "reason": e.reason,
                    "consumed": e.consumed,
                }
                for e in events
                if isinstance(e, StreamReset) and e.remote
            ]
            assert got == want
        elif key == "goaway_received":
            got = [e for e in events if isinstance(e, GoAwayReceived)]
            assert got, f"{side} received no GOAWAY"
            assert got[-1].last_stream_id == want["last_stream"]
            assert ErrorCode.describe(got[-1].error_code) == want["code"]
        elif key == "stream_states":
            for sid, state in want.items():
                assert conn.stream_state(int(sid)).value == state, f"stream {sid}"
        else:
            raise AssertionError(f"unknown expect key {key!r}: teach the test about it")


PARAMS = [pytest.param(c, id=c["name"]) for c in CONVERSATIONS]


@pytest.mark.parametrize("conversation", PARAMS)
def test_conversation_is_sent_byte_for_byte_and_ends_as_expected(
    conversation: dict[str, Any],
) -> None:
    """spec §13: an endpoint built with the vector's settings sends exactly its bytes."""
    r = replay(conversation)
    for side in SIDES:
        check_expect(r, side, conversation["expect"].get(side, {}))


@pytest.mark.parametrize("conversation", PARAMS)
def test_conversation_is_the_same_when_every_byte_arrives_alone(
    conversation: dict[str, Any],
) -> None:
    """spec §4.1: the bytes an endpoint sends do not depend on how its input was chunked."""
    r = replay(conversation, bytewise=True)
    for side in SIDES:
        check_expect(r, side, conversation["expect"].get(side, {}))


def test_conversations_cover_the_required_scenarios() -> None:
    names = {c["name"] for c in CONVERSATIONS}
    assert {
        "handshake",
        "credit_exhaustion_and_refill",
        "flow_control_violation_answered_by_goaway",
        "stream_reset_reports_consumed",
    } <= names
    for conversation in CONVERSATIONS:
        steps = conversation["steps"]
        # spec §3.1: each side starts with its preface and HELLO, unprompted.
        assert [s["from"] for s in steps[:2]] == ["initiator", "acceptor"]
        for step in steps[:2]:
            assert step["hex"].startswith("89464c4f570d0a1a0001")
            assert "do" not in step
