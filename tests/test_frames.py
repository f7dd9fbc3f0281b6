"""The frame codec against spec/vectors/frames.json and spec/vectors/invalid.json (spec §13).

Every frame vector is decoded whole, byte by byte and before another frame, and encoded
back. Every invalid vector is fed to a Connection in the state it names, which must fail
with the vector's error code and say so on the wire (GOAWAY or RESET). The vectors are
built without flowproto (spec/vectors/generate.py), so these tests compare flowproto with
the spec, not with itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowproto import (
    PREFACE,
    BlockedFrame,
    Connection,
    ConnectionState,
    CreditFrame,
    DataFrame,
    ErrorCode,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    RemoteProtocolError,
    ResetFrame,
    ResumeFrame,
    Role,
    SessionFrame,
    Settings,
    StreamReset,
    UnknownFrame,
)
from flowproto._frames import encode_frame

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "spec" / "vectors"
PROTOCOL = ROOT / "spec" / "PROTOCOL.md"

FRAMES_FILE = json.loads((VECTORS / "frames.json").read_text(encoding="utf-8"))
INVALID_FILE = json.loads((VECTORS / "invalid.json").read_text(encoding="utf-8"))
FRAME_VECTORS: list[dict[str, Any]] = FRAMES_FILE["vectors"]
INVALID_VECTORS: list[dict[str, Any]] = INVALID_FILE["vectors"]

# A frame that follows each vector in the "before another frame" test: PING {"id": 9}.
NEXT_FRAME = bytes.fromhex("0000000504000000000081a2696409")

#: Invalid vectors flowproto does not pass yet, with the reason. They are strict xfails, so
#: fixing one turns its test red until its entry here is removed.
KNOWN_DEVIATIONS: dict[str, str] = {}


def _decoder(vector: dict[str, Any]) -> FrameDecoder:
    """A decoder for the vector's transport: a session transport when it says so (§15.3)."""
    return FrameDecoder(session=bool(vector["frame"].get("session")))


def _json_body(body: Any) -> Any:
    """A decoded body as the vectors write it: a bin as {"bin_hex": ...} (spec §13.1)."""
    if isinstance(body, bytes):
        return {"bin_hex": body.hex()}
    if isinstance(body, dict):
        return {key: _json_body(value) for key, value in body.items()}
    if isinstance(body, list):
        return [_json_body(value) for value in body]
    return body


def _wire(vector: dict[str, Any], key: str = "hex") -> bytes:
    return bytes.fromhex(vector[key])


def _params(vectors: list[dict[str, Any]]) -> list[Any]:
    params = []
    for vector in vectors:
        marks = []
        if vector["name"] in KNOWN_DEVIATIONS:
            marks.append(pytest.mark.xfail(reason=KNOWN_DEVIATIONS[vector["name"]], strict=True))
        params.append(pytest.param(vector, id=vector["name"], marks=marks))
    return params


def expected_frame(meaning: dict[str, Any]) -> Frame:
    """The flowproto frame object a vector's meaning describes (spec §5)."""
    kind = meaning["type"]
    sid = meaning["stream_id"]
    flags = meaning["flags"]
    if kind == "DATA":
        return DataFrame(sid, bytes.fromhex(meaning["data_hex"]), bool(flags & 1), bool(flags & 2))
    if kind == "UNKNOWN":
        return UnknownFrame(meaning["type_code"], flags, sid, bytes.fromhex(meaning["body_hex"]))
    body = meaning["body"]
    if kind == "HELLO":
        token = meaning.get("resume_token_hex")  # spec §15.2 (1.2)
        return HelloFrame(
            Settings(**meaning["settings"]),
            0,
            meaning.get("session"),
            None if token is None else bytes.fromhex(token),
        )
    if kind == "SESSION":  # spec §15.3.1 (1.2)
        return SessionFrame(bytes.fromhex(body["token"]["bin_hex"]), body["timeout_ms"])
    if kind == "RESUME":  # spec §15.3.2 (1.2)
        if sid == 0:
            return ResumeFrame(
                0, (0, body["received"]), 0, (body["limit"], 0), highest=body["highest"]
            )
        return ResumeFrame(
            sid,
            tuple(body["received"]),  # type: ignore[arg-type]
            body["consumed"],
            tuple(body["limits"]),  # type: ignore[arg-type]
            bool(body.get("ended", 0)),
            body.get("reset"),
        )
    if kind == "CREDIT":
        if sid == 0:
            return CreditFrame(0, body["bytes"])
        return CreditFrame(
            sid,
            body["bytes"],
            body["messages"],
            body.get("consumed"),
            body.get("rate"),  # spec §8.10: consumer feedback
            body.get("depth"),
        )
    if kind == "BLOCKED":
        if sid == 0:
            return BlockedFrame(0, body["bytes"])
        return BlockedFrame(sid, body["bytes"], body["messages"])
    if kind == "PING":
        return PingFrame(body["id"])
    if kind == "PONG":
        return PongFrame(body["id"])
    if kind == "RESET":
        return ResetFrame(sid, body["code"], body.get("reason", ""), body.get("consumed"))
    if kind == "GOAWAY":
        versions = body.get("versions")
        return GoAwayFrame(
            body["last_stream"],
            body["code"],
            body.get("reason", ""),
            None if versions is None else tuple(versions),
            0,
            body.get("retry_after_ms"),
        )
    raise AssertionError(f"unknown frame type {kind!r} in a vector")


# --- frames.json ----------------------------------------------------------------------------


def test_vector_names_are_unique_snake_case_across_files() -> None:
    """spec §13: a vector's name is unique across all files and is the test id."""
    conversations = json.loads((VECTORS / "conversations.json").read_text(encoding="utf-8"))
    names = [v["name"] for v in FRAME_VECTORS + INVALID_VECTORS + conversations["vectors"]]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name


def test_preface_constant_equals_the_vector() -> None:
    """spec §3.1: the v1 preface is 89 46 4c 4f 57 0d 0a 1a 00 01."""
    assert _wire(FRAMES_FILE["preface"]) == PREFACE
    assert PREFACE.hex() == "89464c4f570d0a1a0001"


def test_frame_vectors_cover_every_frame_type_and_data_flag_combination() -> None:
    types = {v["frame"]["type"] for v in FRAME_VECTORS}
    assert types >= {"DATA", "HELLO", "CREDIT", "BLOCKED", "PING", "PONG", "RESET", "GOAWAY"}
    assert "UNKNOWN" in types
    data_flags = {v["frame"]["flags"] & 3 for v in FRAME_VECTORS if v["frame"]["type"] == "DATA"}
    assert data_flags == {0, 1, 2, 3}


@pytest.mark.parametrize("vector", _params(FRAME_VECTORS))
def test_frame_vector_decodes_whole(vector: dict[str, Any]) -> None:
    """spec §4.1, §5: the whole frame decodes to the vector's meaning."""
    decoder = _decoder(vector)
    assert decoder.feed(_wire(vector)) == [expected_frame(vector["frame"])]
    assert decoder.buffered == 0


@pytest.mark.parametrize("vector", _params(FRAME_VECTORS))
def test_frame_vector_decodes_the_same_when_fed_byte_by_byte(vector: dict[str, Any]) -> None:
    """spec §13: a receiver decodes the same frames from input split at every byte."""
    decoder = _decoder(vector)
    wire = _wire(vector)
    frames: list[Frame] = []
    for i in range(len(wire)):
        got = decoder.feed(wire[i : i + 1])
        assert not got or i == len(wire) - 1, "a frame came out before its last byte"
        frames.extend(got)
    assert frames == [expected_frame(vector["frame"])]


@pytest.mark.parametrize("vector", _params(FRAME_VECTORS))
def test_frame_vector_decodes_before_another_frame(vector: dict[str, Any]) -> None:
    """spec §4.1: the length field alone delimits a frame; the next one follows intact."""
    frames = _decoder(vector).feed(_wire(vector) + NEXT_FRAME)
    assert frames == [expected_frame(vector["frame"]), PingFrame(9)]


@pytest.mark.parametrize("vector", _params(FRAME_VECTORS))
def test_frame_vector_meaning_encodes_to_the_canonical_bytes(vector: dict[str, Any]) -> None:
    """spec §4.3.1: every body has exactly one encoding, so encoding the meaning gives the
    vector's bytes (or its canonical form, for vectors showing other accepted encodings)."""
    canonical = _wire(vector, "reencoded_hex" if "reencoded_hex" in vector else "hex")
    (decoded,) = _decoder(vector).feed(_wire(vector))
    assert encode_frame(decoded) == canonical
    assert decoded.encode() == canonical
    assert expected_frame(vector["frame"]).encode() == canonical


@pytest.mark.parametrize("vector", _params(FRAME_VECTORS))
def test_frame_vector_body_is_the_msgpack_map_it_states(vector: dict[str, Any]) -> None:
    """spec §13: for control frames, 'body' is the decoded map, checked here with msgpack
    itself so that the vector file is consistent without trusting flowproto."""
    meaning = vector["frame"]
    wire = _wire(vector)
    if meaning["type"] == "DATA":
        assert wire[10:] == bytes.fromhex(meaning["data_hex"])
    elif meaning["type"] != "UNKNOWN":
        assert _json_body(msgpack.unpackb(wire[10:], raw=False)) == meaning["body"]
    assert wire[5] == meaning["flags"]
    assert int.from_bytes(wire[6:10], "big") & 0x7FFF_FFFF == meaning["stream_id"]
    assert int.from_bytes(wire[:4], "big") == len(wire) - 10


def _spec_hex_examples(section: str) -> list[str]:
    """Hex byte strings written in spec section ``section`` (inline code or code blocks)."""
    text = PROTOCOL.read_text(encoding="utf-8")
    match = re.search(
        rf"^#+ {re.escape(section)} .*?$(.*?)(?=^#+ \d)", text, flags=re.MULTILINE | re.DOTALL
    )
    assert match, f"spec §{section} not found"
    body = match.group(1)
    fence = re.compile(r"^```[a-z]*\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
    found = []
    for span in re.findall(r"`([^`]+)`", fence.sub("", body)):
        tokens = span.split()
        if tokens and all(re.fullmatch(r"[0-9a-f]{2}", t) for t in tokens):
            found.append("".join(tokens))
    for block in fence.findall(body):
        hexes = []
        for line in block.splitlines():
            tokens = line.split()
            if tokens and re.fullmatch(r"[0-9a-f]{4}", tokens[0]):
                tokens = tokens[1:]  # a hexdump offset
            for token in tokens:
                if not re.fullmatch(r"[0-9a-f]{2}", token):
                    break
                hexes.append(token)
        if hexes:
            found.append("".join(hexes))
    return found


SPEC_EXAMPLES = [v for v in FRAME_VECTORS if "spec_example" in v]


@pytest.mark.skipif(not PROTOCOL.exists(), reason="spec/PROTOCOL.md is not written yet")
@pytest.mark.parametrize("vector", _params(SPEC_EXAMPLES))
def test_frame_vector_matches_the_example_in_the_spec(vector: dict[str, Any]) -> None:
    """spec §13: the vectors and the spec's worked examples show the same bytes."""
    section = vector["spec_example"].lstrip("§")
    assert vector["hex"] in _spec_hex_examples(section)


@pytest.mark.parametrize(
    "vector", _params([v for v in FRAME_VECTORS if v["frame"]["type"] == "UNKNOWN"])
)
def test_unknown_frame_type_is_ignored_by_a_connection(vector: dict[str, Any]) -> None:
    """spec §4.4: a frame of an unknown type is discarded: no event, no reply, no state."""
    conn = _receiver()
    assert conn.receive_data(_wire(vector), 0.0) == []
    assert conn.data_to_send() == b""
    assert conn.state is ConnectionState.OPEN
    assert conn.stream_ids == []


# --- invalid.json ---------------------------------------------------------------------------


def _receiver(vector: dict[str, Any] | None = None) -> Connection:
    """An acceptor in the state an invalid vector names, its own preface and HELLO sent."""
    vector = vector or {}
    session = bool(vector.get("session"))  # spec §15 (1.2): a receiver with sessions
    conn = Connection(Role.ACCEPTOR, Settings(**vector.get("settings", {})), session=session)
    conn.data_to_send()  # our own preface and HELLO
    if not vector.get("before_preface"):
        assert conn.receive_data(bytes.fromhex(INVALID_FILE["peer_preface_hex"]), 0.0) == []
        if not vector.get("before_hello"):
            hello = INVALID_FILE["peer_session_hello_hex" if session else "peer_hello_hex"]
            conn.receive_data(bytes.fromhex(hello), 0.0)
            assert conn.handshake_complete
            if session:
                (grant,) = FrameDecoder(session=True).feed(conn.data_to_send())
                assert isinstance(grant, SessionFrame)  # spec §15.2: the session is granted
    assert conn.data_to_send() == b""
    return conn


def _sent_frames(conn: Connection) -> list[Frame]:
    decoder = FrameDecoder(max_frame_bytes=1 << 24)
    frames = decoder.feed(conn.data_to_send())
    assert decoder.buffered == 0
    return frames


def _check_connection_error(conn: Connection, vector: dict[str, Any]) -> None:
    """spec §10.2: GOAWAY with the code is the last thing sent; nothing more is processed."""
    code = ErrorCode[vector["error"]]
    frames = _sent_frames(conn)
    assert frames, "no GOAWAY was queued"
    goaway = frames[-1]
    assert isinstance(goaway, GoAwayFrame)
    assert goaway.code == code
    assert goaway.reason, "the GOAWAY should say what went wrong (spec §10.2)"
    assert conn.state is ConnectionState.CLOSED
    if "last_stream" in vector:
        # spec §10.2 step 1: the highest peer stream accepted before the violating frame.
        assert goaway.last_stream == vector["last_stream"]
    if code is ErrorCode.VERSION_MISMATCH:
        # spec §3.3: last_stream 0 and the versions this endpoint supports.
        assert goaway.last_stream == 0
        assert goaway.versions == (1,)
    # spec §10.2 step 2: no further input is processed, nothing more is sent.
    assert conn.receive_data(NEXT_FRAME, 0.0) == []
    assert conn.data_to_send() == b""


def _check_stream_error(conn: Connection, vector: dict[str, Any], events: list[Any]) -> None:
    """spec §10.3: RESET with the code on the stream; the connection continues."""
    code = ErrorCode[vector["error"]]
    sid = vector["stream_id"]
    resets = [f for f in _sent_frames(conn) if isinstance(f, ResetFrame)]
    assert [(f.stream_id, f.code) for f in resets] == [(sid, code)]
    assert conn.state is ConnectionState.OPEN
    if code is not ErrorCode.REFUSED_STREAM:
        assert [
            (e.stream_id, e.error_code, e.remote) for e in events if isinstance(e, StreamReset)
        ] == [(sid, code, False)]
    if vector.get("header_only"):
        # The body was never sent: when it comes it is discarded (spec §8.8), unseen.
        missing = int.from_bytes(_wire(vector)[-10:-6], "big")
        assert conn.receive_data(bytes(missing), 0.0) == []
        assert all(isinstance(f, CreditFrame) for f in _sent_frames(conn))
    # The connection continues: it still answers a PING.
    conn.receive_data(NEXT_FRAME, 0.0)
    assert _sent_frames(conn) == [PongFrame(9)]


def test_invalid_vectors_cover_every_scope_and_header_only_case() -> None:
    scopes = {v["scope"] for v in INVALID_VECTORS}
    assert scopes == {"connection", "stream"}
    assert any(v.get("header_only") for v in INVALID_VECTORS)
    for vector in INVALID_VECTORS:
        assert vector["error"] in ErrorCode.__members__
        assert (vector["scope"] == "stream") == ("stream_id" in vector)
        if vector.get("header_only") and not vector.get("before_preface"):
            # The bytes end with a header whose body is missing entirely.
            assert int.from_bytes(_wire(vector)[-10:-6], "big") > 0, vector["name"]


@pytest.mark.parametrize("vector", _params(INVALID_VECTORS))
def test_invalid_vector_is_rejected_with_its_error_code(vector: dict[str, Any]) -> None:
    """spec §10.2, §10.3: the receiver treats the input as the vector's error.

    For ``header_only`` vectors the bytes stop before the offending frame's body, so the
    error must come from the header alone (spec §4.2, §3.1 for the preface).
    """
    conn = _receiver(vector)
    if vector["scope"] == "connection":
        with pytest.raises(RemoteProtocolError) as info:
            conn.receive_data(_wire(vector), 0.0)
        assert info.value.error_code is ErrorCode[vector["error"]], str(info.value)
        _check_connection_error(conn, vector)
    else:
        events = conn.receive_data(_wire(vector), 0.0)
        _check_stream_error(conn, vector, events)


@pytest.mark.parametrize("vector", _params(INVALID_VECTORS))
def test_invalid_vector_is_rejected_the_same_when_fed_byte_by_byte(
    vector: dict[str, Any],
) -> None:
    """spec §3.1, §4.2: checks happen as bytes arrive, whatever the chunking."""
    conn = _receiver(vector)
    wire = _wire(vector)
    events: list[Any] = []
    if vector["scope"] == "connection":
        with pytest.raises(RemoteProtocolError) as info:
            for i in range(len(wire)):
                events.extend(conn.receive_data(wire[i : i + 1], 0.0))
        assert info.value.error_code is ErrorCode[vector["error"]], str(info.value)
        _check_connection_error(conn, vector)
    else:
        for i in range(len(wire)):
            events.extend(conn.receive_data(wire[i : i + 1], 0.0))
        _check_stream_error(conn, vector, events)


# --- only flowproto errors escape -----------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=5,
)
_KNOWN_KEYS = ("id", "bytes", "messages", "consumed", "code", "reason", "last_stream", "versions")
_keys = st.sampled_from([*_KNOWN_KEYS, *Settings().to_body()])
_bodies = st.dictionaries(_keys | st.text(max_size=4), _msgpack_values, max_size=5).map(
    lambda body: msgpack.packb(body, use_bin_type=True)
) | st.binary(max_size=24)


@st.composite
def _frames(draw: st.DrawFn) -> bytes:
    """Frames with plausible headers and msgpack-ish bodies, to reach past the header checks."""
    body = draw(_bodies)
    ftype = draw(st.integers(0, 9))
    flags = draw(st.sampled_from([0, 1, 2, 3, 0xFF]))
    sid = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 0x80000001, 0x7FFFFFFF]))
    length = len(body) if draw(st.booleans()) else draw(st.integers(0, 70000))
    return length.to_bytes(4, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + body


_inputs = st.lists(_frames(), max_size=4).map(b"".join) | st.binary(max_size=64)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the positions ``cuts`` (taken modulo its length), in order."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def _feed_in_chunks(conn: Connection, data: bytes, cuts: list[int]) -> None:
    try:
        for chunk in _chunks(data, cuts):
            conn.receive_data(chunk, 0.0)
        conn.receive_data(b"", 0.0)
    except RemoteProtocolError as exc:
        frames = _sent_frames(conn)
        assert frames and isinstance(frames[-1], GoAwayFrame)
        assert frames[-1].code == exc.error_code


@FUZZ
@given(data=_inputs, cuts=st.lists(st.integers(0, 1 << 16), max_size=4))
def test_random_input_after_the_handshake_raises_only_remote_protocol_errors(
    data: bytes, cuts: list[int]
) -> None:
    """Whatever the peer sends, the only exception is RemoteProtocolError, with a GOAWAY."""
    _feed_in_chunks(_receiver(), data, cuts)


@FUZZ
@given(data=_inputs, cuts=st.lists(st.integers(0, 1 << 16), max_size=4))
def test_random_input_after_the_preface_raises_only_remote_protocol_errors(
    data: bytes, cuts: list[int]
) -> None:
    _feed_in_chunks(_receiver({"before_hello": True}), data, cuts)


@FUZZ
@given(data=st.binary(max_size=40), cuts=st.lists(st.integers(0, 64), max_size=3))
def test_random_input_instead_of_the_preface_raises_only_remote_protocol_errors(
    data: bytes, cuts: list[int]
) -> None:
    _feed_in_chunks(_receiver({"before_preface": True}), PREFACE[: len(data) % 11] + data, cuts)


def _canonical(frame: Frame) -> Frame:
    """The frame a sender would make of ``frame``: reasons cut to 256 bytes (spec §4.3.1)."""
    if isinstance(frame, (GoAwayFrame, ResetFrame)) and len(frame.reason.encode()) > 256:
        reason = frame.reason.encode()[:256].decode("utf-8", "ignore")
        return dataclasses.replace(frame, reason=reason)
    return frame


@FUZZ
@given(data=_inputs, cuts=st.lists(st.integers(0, 1 << 16), max_size=4))
def test_frame_decoder_raises_only_remote_protocol_errors(data: bytes, cuts: list[int]) -> None:
    """Only RemoteProtocolError escapes the decoder, and every frame it yields encodes again
    to bytes that decode to the same frame (spec §4.3.1: one canonical encoding)."""
    decoder = FrameDecoder()
    frames: list[Frame] = []
    try:
        for chunk in _chunks(data, cuts):
            frames.extend(decoder.feed(chunk))
    except RemoteProtocolError:
        pass
    for frame in frames:
        assert FrameDecoder(max_frame_bytes=1 << 24).feed(frame.encode()) == [_canonical(frame)]
