"""Replay spec/vectors/conversations.json byte for byte (spec §13).

Two Connections are built with each conversation's settings. For every step, the sending
side makes the calls listed in ``do`` and what its ``data_to_send()`` returns must equal
the step's bytes exactly; those bytes then go to the other side. Replies (PONG, CREDIT,
GOAWAY) therefore have to come out of the receiving side by itself, in the next step from
it. ``raw`` steps come from a misbehaving peer and are only fed in. At the end nothing may be
left unsent, and the outcome must match ``expect``. The conversation bytes are built
without flowproto (spec/vectors/generate.py).

Session conversations (spec §13.3, §15) span transports. The acceptor issues the vector's
``tokens`` (``Connection(token_factory=...)``), and the replay plays the acceptor's I/O
layer: a :class:`SessionStore` registers each token granted, a ``transport`` step loses the
transport or starts a new one (a fresh acceptor connection), and ``adopt`` hands the new
transport from the fresh connection to the session's connection found by the token.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from flowproto import (
    PREFACE,
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
    ResumeRequested,
    Role,
    SessionGranted,
    SessionResumed,
    SessionStore,
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
        self.settings = {side: Settings(**conversation["settings"][side]) for side in SIDES}
        self.session: bool = conversation.get("session", False)
        # spec §13.3: the acceptor issues exactly the vector's tokens, in order.
        self.tokens = [bytes.fromhex(t) for t in conversation.get("tokens", [])]
        self.store: SessionStore[None] = SessionStore()
        self.conns: dict[str, Connection | None] = {
            "initiator": Connection(Role.INITIATOR, self.settings["initiator"], **self._kw()),
            "acceptor": self._acceptor(),
        }
        self.events: dict[str, list[Event]] = {side: [] for side in SIDES}
        self.errors: dict[str, RemoteProtocolError | None] = {side: None for side in SIDES}
        self.sent: dict[str, bytearray] = {side: bytearray() for side in SIDES}

    def _kw(self) -> dict[str, Any]:
        return {"session": True} if self.session else {}

    def _issue_token(self) -> bytes:
        assert self.tokens, "the acceptor issued more tokens than the vector lists"
        return self.tokens.pop(0)

    def _acceptor(self) -> Connection:
        if not self.session:
            return Connection(Role.ACCEPTOR, self.settings["acceptor"])
        return Connection(
            Role.ACCEPTOR, self.settings["acceptor"], session=True, token_factory=self._issue_token
        )

    def conn(self, side: str) -> Connection:
        conn = self.conns[side]
        assert conn is not None, f"no {side} connection: its process restarted"
        return conn

    def take(self, side: str, events: list[Event]) -> None:
        """Record ``side``'s events; as the acceptor's I/O layer, register each token."""
        self.events[side].extend(events)
        if side == "acceptor":
            for event in events:
                if isinstance(event, SessionGranted):
                    assert self.store.add(self.conn(side), None, event.token)

    def transport(self, step: dict[str, Any]) -> None:
        """A ``transport`` step (spec §13.3): the transport is lost, or a new one starts."""
        if step["transport"] == "lost":
            for side, calls in step.get("do", {}).items():
                for call in calls:
                    self.call(side, call)
            if step.get("acceptor_restarted"):
                self.conns["acceptor"] = None  # its sessions are gone with its process
                self.store = SessionStore()
        else:
            assert step["transport"] == "new", step
            self.conns["acceptor"] = self._acceptor()  # its preface and HELLO are queued
            self.sent = {side: bytearray() for side in SIDES}

    def _requested(self) -> bytes:
        requested = [e for e in self.events["acceptor"] if isinstance(e, ResumeRequested)]
        assert requested, "the acceptor's fresh connection reported no ResumeRequested"
        return requested[-1].token

    def call(self, side: str, call: dict[str, Any]) -> None:
        """One of the verbs a step lists in ``do``, on ``side``'s connection."""
        conn = self.conn(side)
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
        elif verb == "transport_lost":
            result = conn.transport_lost()
        elif verb == "reconnect":
            result = conn.reconnect(0.0)
        elif verb == "accepts_token":
            result = conn.accepts_token(bytes.fromhex(call["token_hex"]))
        elif verb == "adopt":
            # spec §15.6 step 1: the store finds the session by the token presented.
            found = self.store.find(self._requested())
            assert found is not None, "adopt: the presented token names no session"
            session_conn = found[0]
            self.conns[side] = session_conn
            result = None
            self.take(side, session_conn.adopt(conn, 0.0))
        elif verb == "refuse_resume":
            assert self.store.find(self._requested()) is None, "the token names a session"
            result = conn.refuse_resume()
        else:
            raise AssertionError(f"unknown call {verb!r} in a conversation vector")
        if "returns" in call:
            assert result == call["returns"], f"{side}.{verb} returned {result!r}"

    def deliver(self, side: str, wire: bytes, *, bytewise: bool) -> None:
        """Feed ``wire`` to ``side``, whole or one byte at a time."""
        conn = self.conn(side)
        chunks = [wire[i : i + 1] for i in range(len(wire))] if bytewise else [wire]
        try:
            for chunk in chunks:
                self.take(side, conn.receive_data(chunk, 0.0))
        except RemoteProtocolError as exc:
            self.errors[side] = exc


def _decode(wire: bytes) -> list[Frame]:
    """The frames of ``wire``, after the preface if it starts with one (spec §3.1)."""
    decoder = FrameDecoder(max_frame_bytes=1 << 24)
    frames = decoder.feed(wire.removeprefix(PREFACE))
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
        assert b"".join(f.encode() for f in _decode(sent)) == sent.removeprefix(PREFACE)
    else:
        assert sent.hex() == expected.hex(), f"step {index} from {step['from']}: {step['meaning']}"


def replay(conversation: dict[str, Any], *, bytewise: bool = False) -> Replay:
    r = Replay(conversation)
    for index, step in enumerate(conversation["steps"]):
        if "transport" in step:
            r.transport(step)
            continue
        side = step["from"]
        wire = bytes.fromhex(step["hex"])
        if not step.get("raw"):
            for call in step.get("do", []):
                r.call(side, call)
            sent = r.conn(side).data_to_send()
            _assert_same_wire(sent, step, index)
            wire = sent
        r.sent[side] += wire
        # spec §13.3: with delivered_bytes, the rest is lost with the transport.
        r.deliver(OTHER[side], wire[: step.get("delivered_bytes", len(wire))], bytewise=bytewise)
    for side in SIDES:
        assert r.conn(side).data_to_send() == b"", f"{side} queued bytes no step shows"
    return r


def _messages(events: list[Event]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        if isinstance(e, MessagesReceived):
            out.setdefault(str(e.stream_id), []).extend(m.hex() for m in e.messages)
    return out


def check_expect(r: Replay, side: str, expect: dict[str, Any]) -> None:
    """Compare one side's outcome with the vector's ``expect`` entry for it."""
    conn = r.conn(side)
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
            goaways = [f for f in _decode(bytes(r.sent[side])) if isinstance(f, GoAwayFrame)]
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
            # spec §13.3: an entry without "reason" does not check it (an informative one).
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
            assert len(got) == len(want), got
            assert [{k: g[k] for k in w} for g, w in zip(got, want, strict=True)] == want
        elif key == "goaway_received":
            got = [e for e in events if isinstance(e, GoAwayReceived)]
            assert got, f"{side} received no GOAWAY"
            assert got[-1].last_stream_id == want["last_stream"]
            assert ErrorCode.describe(got[-1].error_code) == want["code"]
        elif key == "stream_states":
            for sid, state in want.items():
                assert conn.stream_state(int(sid)).value == state, f"stream {sid}"
        elif key == "sessions_granted":
            assert [e.token.hex() for e in events if isinstance(e, SessionGranted)] == want
        elif key == "resumes_requested":
            assert [e.token.hex() for e in events if isinstance(e, ResumeRequested)] == want
        elif key == "sessions_resumed":
            got = [
                {"messages": e.messages_retransmitted, "bytes": e.bytes_retransmitted}
                for e in events
                if isinstance(e, SessionResumed)
            ]
            assert got == want
        elif key == "session_token":
            token = conn.session_token
            assert (None if token is None else token.hex()) == want
        elif key == "resumable":
            assert conn.resumable is want
        elif key == "tokens_accepted":
            got = {token: conn.accepts_token(bytes.fromhex(token)) for token in want}
            assert got == want
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
        "session_resume_retransmits_what_was_lost",
        "session_resume_refused_unknown_token",
    } <= names
    for conversation in CONVERSATIONS:
        steps = conversation["steps"]
        # spec §3.1: each side starts with its preface and HELLO, unprompted.
        assert [s["from"] for s in steps[:2]] == ["initiator", "acceptor"]
        for step in steps[:2]:
            assert step["hex"].startswith("89464c4f570d0a1a0001")
            assert "do" not in step
        # spec §13.3 (1.2): a new transport starts with the initiator's reconnect, and the
        # acceptor's first step on it starts with the fresh connection's preface and HELLO.
        for index, step in enumerate(steps):
            if step.get("transport") == "new":
                first, second = steps[index + 1 : index + 3]
                assert first["from"] == "initiator" and first["do"] == [{"call": "reconnect"}]
                assert second["from"] == "acceptor"
                assert second["hex"].startswith("89464c4f570d0a1a0001")
