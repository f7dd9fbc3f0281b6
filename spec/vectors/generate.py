"""Write spec/vectors/*.json: the wire examples of spec §13.

Run as ``python spec/vectors/generate.py``; the output is deterministic. The bytes are built
here from the spec alone, with ``struct.pack(">IBBI", ...)`` for frame headers (spec §4.1) and
``msgpack.packb(body, use_bin_type=True)`` for control bodies (spec §4.3.1). This script must
never import flowproto: the vectors check flowproto, so they may not be made by it.

Three files:

- ``frames.json``: one valid frame per vector and its decoded meaning (spec §4, §5).
- ``invalid.json``: bytes a receiver must reject, with the error code and scope (spec §3, §4,
  §5, §6, §7, §8).
- ``conversations.json``: what two endpoints send each other, step by step, and the outcome.
  The steps are what the reference implementation sends with the given settings when driven
  by the calls listed in ``do`` (spec §6.2, §8.6, §8.7 describe its choices). Session
  conversations (1.2) span transports and fix the acceptor's tokens (spec §13.3, §15).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent

# spec §3.1
MAGIC = bytes.fromhex("89464c4f570d0a1a")
PREFACE = MAGIC + struct.pack(">H", 1)

# spec §5
TYPES = {
    "DATA": 0x0,
    "HELLO": 0x1,
    "CREDIT": 0x2,
    "BLOCKED": 0x3,
    "PING": 0x4,
    "PONG": 0x5,
    "RESET": 0x6,
    "GOAWAY": 0x7,
    "SESSION": 0x8,  # 1.2, spec §15.3: on a session transport only
    "RESUME": 0x9,
}
END_MESSAGE = 0x1
END_STREAM = 0x2

# spec §10.1
CODES = {
    "NO_ERROR": 0x0,
    "PROTOCOL_ERROR": 0x1,
    "INTERNAL_ERROR": 0x2,
    "FLOW_CONTROL_ERROR": 0x3,
    "SETTINGS_ERROR": 0x4,
    "FRAME_SIZE_ERROR": 0x5,
    "STREAM_CLOSED": 0x6,
    "REFUSED_STREAM": 0x7,
    "CANCEL": 0x8,
    "MESSAGE_TOO_LARGE": 0x9,
    "ENHANCE_YOUR_CALM": 0xA,
    "TIMEOUT": 0xB,
    "VERSION_MISMATCH": 0xC,
    "OVERLOADED": 0xD,  # 1.1
    "REJECTED": 0xE,  # 1.1
    "SESSION_UNKNOWN": 0xF,  # 1.2
    "CANNOT_REPRODUCE": 0x10,  # 1.2
}

# spec §3.2: the settings in table order, with their defaults.
DEFAULTS = {
    "stream_bytes": 4194304,
    "stream_messages": 4096,
    "connection_bytes": 16777216,
    "max_frame_bytes": 65536,
    "max_message_bytes": 1048576,
    "max_streams": 100,
    "keepalive_ms": 30000,
}

MAX_COUNTER = (1 << 62) - 1  # spec §12


def header(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    """The 10-byte frame header (spec §4.1)."""
    return struct.pack(">IBBI", length, ftype, flags, stream_id)


def pack(body: Any) -> bytes:
    """A control body with the smallest msgpack encodings (spec §4.3.1)."""
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def data(stream_id: int, payload: bytes, flags: int = END_MESSAGE) -> bytes:
    return header(len(payload), TYPES["DATA"], flags, stream_id) + payload


def control(name: str, stream_id: int, body: Any, flags: int = 0) -> bytes:
    raw = pack(body)
    return header(len(raw), TYPES[name], flags, stream_id) + raw


def control_raw(name: str, stream_id: int, raw: bytes) -> bytes:
    """A control frame around a hand-written body (for non-canonical or broken encodings)."""
    return header(len(raw), TYPES[name], 0, stream_id) + raw


def json_body(body: Any) -> Any:
    """A decoded body as JSON: a msgpack bin becomes {"bin_hex": ...} (spec §13.1)."""
    if isinstance(body, bytes):
        return {"bin_hex": body.hex()}
    if isinstance(body, dict):
        return {key: json_body(value) for key, value in body.items()}
    if isinstance(body, list):
        return [json_body(value) for value in body]
    return body


TOKEN = bytes(range(16))  # spec §15.3.1's example token


def settings(**overrides: int) -> dict[str, int]:
    """All seven settings in table order, defaults replaced by ``overrides``."""
    unknown = set(overrides) - set(DEFAULTS)
    assert not unknown, unknown
    return {key: overrides.get(key, value) for key, value in DEFAULTS.items()}


def hello(**overrides: int) -> bytes:
    """HELLO as the reference implementation sends it: all seven keys (spec §3.2)."""
    return control("HELLO", 0, settings(**overrides))


# --- frames.json -------------------------------------------------------------------------


def frame_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []

    def add(
        name: str,
        description: str,
        wire: bytes,
        meaning: dict[str, Any],
        *,
        reencoded: bytes | None = None,
        spec_example: str | None = None,
    ) -> None:
        vector: dict[str, Any] = {
            "name": name,
            "description": description,
            "hex": wire.hex(),
            "frame": meaning,
        }
        if reencoded is not None:
            assert reencoded != wire
            vector["reencoded_hex"] = reencoded.hex()
        if spec_example is not None:
            vector["spec_example"] = spec_example
        vectors.append(vector)

    def data_meaning(stream_id: int, flags: int, payload: bytes) -> dict[str, Any]:
        return {"type": "DATA", "flags": flags, "stream_id": stream_id, "data_hex": payload.hex()}

    def control_meaning(name: str, stream_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return {"type": name, "flags": 0, "stream_id": stream_id, "body": body}

    # DATA (spec §5.1, §7.1, §7.2)
    add(
        "data_end_message_hi",
        'DATA on stream 1 with END_MESSAGE and body "hi": a whole message in one frame.',
        data(1, b"hi", END_MESSAGE),
        data_meaning(1, END_MESSAGE, b"hi"),
        spec_example="§4.1",
    )
    add(
        "data_no_flags_first_fragment",
        "DATA on stream 3 without flags: the first fragment of a message still in progress.",
        data(3, b"frag", 0),
        data_meaning(3, 0, b"frag"),
    )
    add(
        "data_final_fragment_end_message",
        "DATA on stream 3 with END_MESSAGE after earlier fragments: it completes the message.",
        data(3, b"ment", END_MESSAGE),
        data_meaning(3, END_MESSAGE, b"ment"),
    )
    add(
        "data_end_message_and_end_stream",
        "DATA on stream 2 with END_MESSAGE and END_STREAM: the last message of the direction.",
        data(2, b"bye", END_MESSAGE | END_STREAM),
        data_meaning(2, END_MESSAGE | END_STREAM, b"bye"),
    )
    add(
        "data_empty_end_stream_half_close",
        "A zero-length DATA with END_STREAM only: a bare half-close, not a message.",
        data(1, b"", END_STREAM),
        data_meaning(1, END_STREAM, b""),
    )
    add(
        "data_empty_message",
        "A zero-length DATA with END_MESSAGE: an empty message.",
        data(5, b"", END_MESSAGE),
        data_meaning(5, END_MESSAGE, b""),
    )
    add(
        "data_binary_body_on_large_stream_id",
        "DATA on the largest stream id 2^31-1 with a body holding every byte value 00..ff.",
        data(0x7FFFFFFF, bytes(range(256)), END_MESSAGE),
        data_meaning(0x7FFFFFFF, END_MESSAGE, bytes(range(256))),
    )
    add(
        "data_undefined_flag_bits_ignored",
        "DATA with END_MESSAGE plus undefined flag bits 0xfc: the extra bits are ignored.",
        data(1, b"x", 0xFC | END_MESSAGE),
        data_meaning(1, 0xFC | END_MESSAGE, b"x"),
        reencoded=data(1, b"x", END_MESSAGE),
    )
    add(
        "data_reserved_stream_id_bit_masked",
        "A zero-length DATA with END_MESSAGE whose R bit is set: it is on stream 1.",
        header(0, TYPES["DATA"], END_MESSAGE, 0x80000001),
        data_meaning(1, END_MESSAGE, b""),
        reencoded=data(1, b"", END_MESSAGE),
        spec_example="§4.1",
    )

    # HELLO (spec §3.2, §5.2)
    add(
        "hello_defaults",
        "HELLO with all seven settings at their defaults, in table order, as flowproto sends it.",
        hello(),
        {**control_meaning("HELLO", 0, settings()), "settings": settings()},
        spec_example="§5.2",
    )
    add(
        "hello_empty_map_means_defaults",
        "HELLO with an empty map: every setting takes its default.",
        control("HELLO", 0, {}),
        {**control_meaning("HELLO", 0, {}), "settings": settings()},
        reencoded=hello(),
        spec_example="§5.2",
    )
    some = {"stream_messages": 16, "max_frame_bytes": 32768, "keepalive_ms": 0}
    add(
        "hello_some_settings_others_default",
        "HELLO with three settings; the four absent ones take their defaults.",
        control("HELLO", 0, some),
        {**control_meaning("HELLO", 0, some), "settings": settings(**some)},
        reencoded=hello(**some),
    )
    with_unknown = {"max_streams": 10, "x_future_setting": [1, "two"]}
    add(
        "hello_unknown_key_ignored",
        "HELLO with an unknown key (an array value): the key is ignored.",
        control("HELLO", 0, with_unknown),
        {
            **control_meaning("HELLO", 0, with_unknown),
            "settings": settings(max_streams=10),
        },
        reencoded=hello(max_streams=10),
    )
    # spec §3.2 step 1, §4.3.2 (1.1): the 64-entry limit of a HELLO counts its top-level
    # entries only; a nested map is bounded by B4 (at most 64 entries of its own).
    wide = {f"k{i:02d}": i for i in range(63)}
    wide["n"] = {f"m{i:02d}": i for i in range(64)}
    add(
        "hello_64_top_level_entries_and_a_nested_map_of_64",
        "HELLO with 64 top-level entries (all unknown keys), one of them a map of 64 entries: "
        "nested entries do not count toward the HELLO limit; every setting takes its default.",
        control("HELLO", 0, wide),
        {**control_meaning("HELLO", 0, wide), "settings": settings()},
        reencoded=hello(),
    )
    small = {
        "stream_bytes": 1024,
        "stream_messages": 1,
        "connection_bytes": 1024,
        "max_frame_bytes": 16384,
        "max_message_bytes": 1024,
        "max_streams": 0,
        "keepalive_ms": 86400000,
    }
    add(
        "hello_range_edges",
        "HELLO with each setting at an edge of its range (windows equal to max_message_bytes).",
        control("HELLO", 0, small),
        {**control_meaning("HELLO", 0, small), "settings": small},
    )

    # CREDIT (spec §5.3)
    add(
        "credit_stream_bytes_and_messages",
        "CREDIT on stream 1 raising the limits to 65536 bytes and 16 messages.",
        control("CREDIT", 1, {"bytes": 65536, "messages": 16}),
        control_meaning("CREDIT", 1, {"bytes": 65536, "messages": 16}),
        spec_example="§5.3",
    )
    opening = {"bytes": 4194304, "messages": 4096, "consumed": 0}
    add(
        "credit_stream_opening_restates_defaults",
        "The CREDIT flowproto sends to open stream 1: the default limits and consumed 0.",
        control("CREDIT", 1, opening),
        control_meaning("CREDIT", 1, opening),
        spec_example="§5.3",
    )
    replenish = {"bytes": 4194314, "messages": 4097, "consumed": 1}
    add(
        "credit_stream_with_consumed",
        "CREDIT on stream 2 after one 10-byte message was consumed, reporting consumed 1.",
        control("CREDIT", 2, replenish),
        control_meaning("CREDIT", 2, replenish),
    )
    add(
        "credit_connection_bytes_only",
        "CREDIT on stream 0 raising the connection limit to 32 MiB.",
        control("CREDIT", 0, {"bytes": 33554432}),
        control_meaning("CREDIT", 0, {"bytes": 33554432}),
        spec_example="§5.3",
    )
    add(
        "credit_connection_at_max_counter",
        "CREDIT on stream 0 with the largest allowed limit, 2^62-1 (a uint64).",
        control("CREDIT", 0, {"bytes": MAX_COUNTER}),
        control_meaning("CREDIT", 0, {"bytes": MAX_COUNTER}),
    )
    # spec §4.3.2: any key order, any integer width, any str width.
    odd_body = (
        b"\x83"
        + b"\xa8consumed"
        + b"\xcf"
        + (1).to_bytes(8, "big")
        + b"\xa8messages"
        + b"\xd1"
        + (4097).to_bytes(2, "big")
        + b"\xd9\x05bytes"
        + b"\xce"
        + (4194314).to_bytes(4, "big")
    )
    add(
        "credit_any_key_order_and_encoding_width",
        "CREDIT on stream 2 with keys in reverse order, a uint64, an int16 and a str8 key.",
        control_raw("CREDIT", 2, odd_body),
        control_meaning("CREDIT", 2, {"consumed": 1, "messages": 4097, "bytes": 4194314}),
        reencoded=control("CREDIT", 2, replenish),
    )
    # spec §5.3, §8.10: the consumer feedback keys, in key-table order after "consumed".
    feedback = {"bytes": 20480, "messages": 20, "consumed": 12, "rate": 200, "depth": 3}
    add(
        "credit_stream_with_consumer_feedback",
        "CREDIT on stream 1 from a consumer taking 200 messages/s with 3 waiting (rate, depth).",
        control("CREDIT", 1, feedback),
        control_meaning("CREDIT", 1, feedback),
        spec_example="§5.3",
    )
    idle = {"bytes": 65536, "messages": 16, "consumed": 0, "rate": 0, "depth": 0}
    add(
        "credit_stream_feedback_of_an_idle_consumer",
        "CREDIT on stream 1 whose feedback says nothing is consumed and nothing waits: rate 0.",
        control("CREDIT", 1, idle),
        control_meaning("CREDIT", 1, idle),
    )
    top = {"bytes": 65536, "messages": 16, "rate": (1 << 32) - 1, "depth": MAX_COUNTER}
    add(
        "credit_stream_feedback_at_its_maxima",
        "CREDIT on stream 1 with rate 2^32-1 (a uint32) and depth 2^62-1 (a uint64), no consumed.",
        control("CREDIT", 1, top),
        control_meaning("CREDIT", 1, top),
    )
    add(
        "credit_connection_ignores_feedback_keys",
        "Connection CREDIT carrying rate and depth: unknown keys on stream 0, ignored.",
        control("CREDIT", 0, {"bytes": 33554432, "rate": 5, "depth": 1}),
        control_meaning("CREDIT", 0, {"bytes": 33554432, "rate": 5, "depth": 1}),
        reencoded=control("CREDIT", 0, {"bytes": 33554432}),
    )

    # spec §5.3 (1.1): in a connection CREDIT, "messages" is an unknown key, whatever its value.
    add(
        "credit_connection_messages_above_max_counter_ignored",
        "Connection CREDIT carrying messages 2^62 (above MAX_COUNTER): an unknown key on "
        "stream 0, ignored whatever its value; not a FLOW_CONTROL_ERROR.",
        control("CREDIT", 0, {"bytes": 33554432, "messages": MAX_COUNTER + 1}),
        control_meaning("CREDIT", 0, {"bytes": 33554432, "messages": MAX_COUNTER + 1}),
        reencoded=control("CREDIT", 0, {"bytes": 33554432}),
    )

    # BLOCKED (spec §5.4)
    add(
        "blocked_stream_at_default_limits",
        "BLOCKED on stream 1 at the default initial limits.",
        control("BLOCKED", 1, {"bytes": 4194304, "messages": 4096}),
        control_meaning("BLOCKED", 1, {"bytes": 4194304, "messages": 4096}),
        spec_example="§5.4",
    )
    add(
        "blocked_connection",
        "BLOCKED on stream 0: blocked at the connection limit of 16 MiB.",
        control("BLOCKED", 0, {"bytes": 16777216}),
        control_meaning("BLOCKED", 0, {"bytes": 16777216}),
    )

    # PING, PONG (spec §5.5, §5.6)
    add(
        "ping_id_1",
        "PING with id 1.",
        control("PING", 0, {"id": 1}),
        control_meaning("PING", 0, {"id": 1}),
        spec_example="§5.5",
    )
    add(
        "ping_largest_id",
        "PING with the largest id, 2^64-1 (a uint64).",
        control("PING", 0, {"id": (1 << 64) - 1}),
        control_meaning("PING", 0, {"id": (1 << 64) - 1}),
    )
    add(
        "ping_undefined_flags_ignored",
        "PING with id 7 and every flag bit set: PING defines no flags, so all are ignored.",
        control("PING", 0, {"id": 7}, flags=0xFF),
        {**control_meaning("PING", 0, {"id": 7}), "flags": 0xFF},
        reencoded=control("PING", 0, {"id": 7}),
    )
    add(
        "ping_unknown_key_nested_at_max_depth",
        "PING with an unknown key holding arrays nested 7 deep: depth 8 is allowed, key ignored.",
        control_raw("PING", 0, b"\x82\xa2id\x01\xa1x" + b"\x91" * 7 + b"\x01"),
        control_meaning("PING", 0, {"id": 1, "x": [[[[[[[1]]]]]]]}),
        reencoded=control("PING", 0, {"id": 1}),
    )
    add(
        "pong_id_1",
        "PONG answering the PING with id 1.",
        control("PONG", 0, {"id": 1}),
        control_meaning("PONG", 0, {"id": 1}),
        spec_example="§5.6",
    )

    # RESET (spec §5.7)
    reset = {"code": CODES["CANCEL"], "reason": "cancelled", "consumed": 2}
    add(
        "reset_with_reason_and_consumed",
        'RESET on stream 3 with CANCEL, reason "cancelled" and 2 messages consumed.',
        control("RESET", 3, reset),
        control_meaning("RESET", 3, reset),
        spec_example="§5.7",
    )
    add(
        "reset_code_only",
        "RESET on stream 4 with MESSAGE_TOO_LARGE and no optional keys.",
        control("RESET", 4, {"code": CODES["MESSAGE_TOO_LARGE"]}),
        control_meaning("RESET", 4, {"code": CODES["MESSAGE_TOO_LARGE"]}),
    )
    add(
        "reset_unknown_code",
        "RESET on stream 1 with code 0xffffffff, not defined in v1: decoded as given.",
        control("RESET", 1, {"code": 0xFFFFFFFF, "consumed": 0}),
        control_meaning("RESET", 1, {"code": 0xFFFFFFFF, "consumed": 0}),
    )

    # GOAWAY (spec §5.8, §3.3)
    add(
        "goaway_graceful",
        "GOAWAY with NO_ERROR after processing peer streams up to 5.",
        control("GOAWAY", 0, {"last_stream": 5, "code": 0}),
        control_meaning("GOAWAY", 0, {"last_stream": 5, "code": 0}),
        spec_example="§5.8",
    )
    goaway = {"last_stream": 7, "code": CODES["PROTOCOL_ERROR"], "reason": "shutting down"}
    add(
        "goaway_with_reason",
        'GOAWAY with PROTOCOL_ERROR, last_stream 7 and reason "shutting down".',
        control("GOAWAY", 0, goaway),
        control_meaning("GOAWAY", 0, goaway),
    )
    mismatch = {
        "last_stream": 0,
        "code": CODES["VERSION_MISMATCH"],
        "reason": "peer version 2, supported 1",
        "versions": [1],
    }
    add(
        "goaway_version_mismatch",
        "GOAWAY with VERSION_MISMATCH listing the supported versions [1].",
        control("GOAWAY", 0, mismatch),
        control_meaning("GOAWAY", 0, mismatch),
        spec_example="§3.3",
    )

    # spec §5.8 (1.1): versions is missing; the receiver treats it as "no common version".
    no_versions = {
        "last_stream": 0,
        "code": CODES["VERSION_MISMATCH"],
        "reason": "peer version 1, supported 2",
    }
    add(
        "goaway_version_mismatch_without_versions",
        "GOAWAY with VERSION_MISMATCH and no versions key: valid to decode; its receiver "
        "treats it as no common version, sends nothing more, closes and reports the error.",
        control("GOAWAY", 0, no_versions),
        control_meaning("GOAWAY", 0, no_versions),
    )

    # spec §10.1, §5.8 (1.1): a refusal that processed nothing; retry after 1000 ms.
    overloaded = {
        "last_stream": 0,
        "code": CODES["OVERLOADED"],
        "reason": "memory budget exhausted",
        "retry_after_ms": 1000,
    }
    add(
        "goaway_overloaded_with_retry_after",
        "GOAWAY with OVERLOADED and retry_after_ms 1000: nothing was processed; the peer may "
        "open a new connection after about a second.",
        control("GOAWAY", 0, overloaded),
        control_meaning("GOAWAY", 0, overloaded),
    )
    # spec §5.7, §10.5 (1.1): the application accepted 3 messages, then rejected one.
    rejected = {"code": CODES["REJECTED"], "reason": "undecodable message", "consumed": 3}
    add(
        "reset_rejected_with_accepted_count",
        "RESET on stream 1 with REJECTED, consumed 3: the receiving application accepted 3 "
        "messages; the count is final even if an earlier CREDIT reported more consumed.",
        control("RESET", 1, rejected),
        control_meaning("RESET", 1, rejected),
    )

    # Sessions (1.2, spec §15). "session": true means decoded on a session transport.
    asking = {**settings(), "session": 1}
    add(
        "hello_asking_for_a_session",
        "HELLO with every setting at its default and session 1: the initiator asks for a "
        "session (spec §15.2).",
        control("HELLO", 0, asking),
        {**control_meaning("HELLO", 0, asking), "settings": settings(), "session": 1},
    )
    resuming = {**settings(), "resume_token": TOKEN}
    add(
        "hello_resuming_a_session",
        "HELLO with every setting at its default and a 16-byte resume_token (a msgpack bin): "
        "the initiator resumes that session (spec §15.2, §15.6).",
        control("HELLO", 0, resuming),
        {
            **control_meaning("HELLO", 0, json_body(resuming)),
            "settings": settings(),
            "resume_token_hex": TOKEN.hex(),
        },
    )
    grant = {"token": TOKEN, "timeout_ms": 30000}
    add(
        "session_grant",
        "SESSION with the token 00 01 .. 0f and timeout_ms 30000 (spec §15.3.1).",
        control("SESSION", 0, grant),
        {**control_meaning("SESSION", 0, json_body(grant)), "session": True},
        spec_example="§15.3.1",
    )
    resume = {"received": [3, 30], "consumed": 2, "limits": [4194304, 4096]}
    add(
        "resume_stream",
        "RESUME on stream 1: 3 whole messages of 30 bytes received, 2 consumed, limits "
        "4194304 bytes and 4096 messages, END_STREAM not received (spec §15.3.2).",
        control("RESUME", 1, resume),
        {**control_meaning("RESUME", 1, resume), "session": True},
        spec_example="§15.3.2",
    )
    ended = {
        "received": [5, 1000],
        "consumed": 4,
        "limits": [80000, 10],
        "ended": 1,
        "reset": CODES["CANCEL"],
    }
    add(
        "resume_stream_ended_and_reset",
        "RESUME on stream 2 with every key: END_STREAM received, and the stream reset with "
        "CANCEL after 4 messages were consumed (spec §15.3.2, §15.7).",
        control("RESUME", 2, ended),
        {**control_meaning("RESUME", 2, ended), "session": True},
    )
    conn_resume = {"received": 1234, "limit": 16777216, "highest": 3}
    add(
        "resume_connection",
        "Connection RESUME, the last frame of an exchange: 1234 connection bytes received, "
        "limit 16777216, highest peer stream seen 3 (spec §15.3.2).",
        control("RESUME", 0, conn_resume),
        {**control_meaning("RESUME", 0, conn_resume), "session": True},
    )
    unknown_session = {"last_stream": 0, "code": CODES["SESSION_UNKNOWN"]}
    add(
        "goaway_session_unknown",
        "GOAWAY with SESSION_UNKNOWN (0xf) and last_stream 0: the answer to a resumption of "
        "a session the acceptor does not keep (spec §15.6).",
        control("GOAWAY", 0, unknown_session),
        control_meaning("GOAWAY", 0, unknown_session),
    )
    add(
        "session_frame_on_plain_transport_ignored",
        "The SESSION of session_grant received on a transport whose initiator did not ask "
        "for a session: an unknown type there, ignored (spec §4.4, §15.3).",
        control("SESSION", 0, grant),
        {
            "type": "UNKNOWN",
            "type_code": TYPES["SESSION"],
            "flags": 0,
            "stream_id": 0,
            "body_hex": pack(grant).hex(),
        },
    )

    # Unknown types (spec §4.4)
    add(
        "unknown_type_ignored",
        "A frame of undefined type 0x2a on stream 0 with a 3-byte body: decoded, then ignored.",
        header(3, 0x2A, 0x5A, 0) + b"\x01\x02\x03",
        {
            "type": "UNKNOWN",
            "type_code": 0x2A,
            "flags": 0x5A,
            "stream_id": 0,
            "body_hex": "010203",
        },
    )
    add(
        "unknown_type_on_idle_stream_ignored",
        "A frame of undefined type 0xff on an idle stream id: its stream id is not checked.",
        header(0, 0xFF, 0, 1000),
        {"type": "UNKNOWN", "type_code": 0xFF, "flags": 0, "stream_id": 1000, "body_hex": ""},
    )
    return vectors


# --- invalid.json ---------------------------------------------------------------------------


def invalid_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []

    def add(
        name: str,
        description: str,
        wire: bytes,
        error: str,
        scope: str = "connection",
        *,
        before_hello: bool = False,
        before_preface: bool = False,
        header_only: bool = False,
        settings: dict[str, int] | None = None,
        stream_id: int | None = None,
        last_stream: int | None = None,
        session: bool = False,
        spec: str,
    ) -> None:
        assert error in CODES
        vector: dict[str, Any] = {
            "name": name,
            "description": description,
            "hex": wire.hex(),
            "error": error,
            "scope": scope,
            "spec": spec,
        }
        if before_preface:
            vector["before_preface"] = True
        if before_hello:
            vector["before_hello"] = True
        if header_only:
            vector["header_only"] = True
        if settings:
            vector["settings"] = settings
        if stream_id is not None:
            vector["stream_id"] = stream_id
        if last_stream is not None:
            assert scope == "connection"
            vector["last_stream"] = last_stream
        if session:
            vector["session"] = True
        vectors.append(vector)

    # Sessions (1.2, spec §15): the receiver implements §15, and the peer's HELLO
    # ('peer_session_hello_hex') asked for a session, so SESSION and RESUME are frames.
    add(
        "hello_resume_token_too_short",
        "HELLO whose resume_token is a bin of 8 bytes, below MIN_TOKEN_BYTES (16).",
        control("HELLO", 0, {**settings(), "resume_token": TOKEN[:8]}),
        "SETTINGS_ERROR",
        before_hello=True,
        session=True,
        spec="§15.2",
    )
    add(
        "hello_resume_token_not_bin",
        "HELLO whose resume_token is a str of 16 characters, not a bin.",
        control("HELLO", 0, {**settings(), "resume_token": "x" * 16}),
        "SETTINGS_ERROR",
        before_hello=True,
        session=True,
        spec="§15.2",
    )
    add(
        "hello_session_and_resume_token",
        "HELLO carrying both session 1 and a resume_token.",
        control("HELLO", 0, {**settings(), "session": 1, "resume_token": TOKEN}),
        "SETTINGS_ERROR",
        before_hello=True,
        session=True,
        spec="§15.2",
    )
    add(
        "hello_session_out_of_range",
        "HELLO with session 2 (the range is 0..1).",
        control("HELLO", 0, {**settings(), "session": 2}),
        "SETTINGS_ERROR",
        before_hello=True,
        session=True,
        spec="§15.2",
    )
    add(
        "session_token_too_short",
        "SESSION with an 8-byte token, sent to an acceptor (which never receives SESSION).",
        control("SESSION", 0, {"token": TOKEN[:8], "timeout_ms": 30000}),
        "PROTOCOL_ERROR",
        session=True,
        spec="§15.3.1",
    )
    add(
        "resume_stream_consumed_above_received",
        "RESUME on stream 1 reporting 4 messages consumed of 3 received.",
        control("RESUME", 1, {"received": [3, 30], "consumed": 4, "limits": [4194304, 4096]}),
        "PROTOCOL_ERROR",
        session=True,
        spec="§15.3.2",
    )
    add(
        "resume_stream_received_not_a_pair",
        "RESUME on stream 1 whose received is an array of one element.",
        control("RESUME", 1, {"received": [3], "consumed": 0, "limits": [4194304, 4096]}),
        "PROTOCOL_ERROR",
        session=True,
        spec="§15.3.2",
    )
    add(
        "resume_stream_limits_above_max_counter",
        "RESUME on stream 1 whose byte limit is 2^62, above MAX_COUNTER: the body check "
        "decides, as for CREDIT (flow control), before the frame's place is judged.",
        control("RESUME", 1, {"received": [0, 0], "consumed": 0, "limits": [1 << 62, 1]}),
        "FLOW_CONTROL_ERROR",
        session=True,
        spec="§15.3.2",
    )
    add(
        "resume_outside_an_exchange",
        "A well-formed connection RESUME on a session transport that is not resuming.",
        control("RESUME", 0, {"received": 0, "limit": 16777216, "highest": 0}),
        "PROTOCOL_ERROR",
        session=True,
        spec="§15.6",
    )

    # Preface (spec §3.1, §3.3)
    add(
        "preface_wrong_magic",
        "An HTTP request instead of the preface.",
        b"GET / HTTP/1.1\r\n",
        "PROTOCOL_ERROR",
        before_preface=True,
        spec="§3.1",
    )
    add(
        "preface_magic_wrong_at_fifth_byte",
        "Four right magic bytes then a wrong one: the error comes at once, before 10 bytes.",
        MAGIC[:4] + b"X",
        "PROTOCOL_ERROR",
        before_preface=True,
        header_only=True,
        spec="§3.1",
    )
    add(
        "preface_version_2",
        "A preface with version 2: answered by GOAWAY(VERSION_MISMATCH, versions [1]).",
        MAGIC + b"\x00\x02",
        "VERSION_MISMATCH",
        before_preface=True,
        spec="§3.3",
    )

    # Handshake order (spec §3.4, §4.2 H1)
    add(
        "first_frame_ping_not_hello",
        "The peer's first frame after its preface is a PING.",
        control("PING", 0, {"id": 1}),
        "PROTOCOL_ERROR",
        before_hello=True,
        spec="§3.4",
    )
    add(
        "pong_as_first_frame",
        "The peer's first frame after its preface is a PONG: only HELLO may come first (1.1).",
        control("PONG", 0, {"id": 1}),
        "PROTOCOL_ERROR",
        before_hello=True,
        spec="§3.4",
    )
    add(
        "first_frame_unknown_type_not_hello",
        "The peer's first frame after its preface is of an unknown type.",
        header(1, 0x2A, 0, 0) + b"\x00",
        "PROTOCOL_ERROR",
        before_hello=True,
        spec="§3.4",
    )
    add(
        "first_frame_data_header_only",
        "The header of a DATA frame as the peer's first frame: rejected before its body.",
        header(5, TYPES["DATA"], END_MESSAGE, 1),
        "PROTOCOL_ERROR",
        before_hello=True,
        header_only=True,
        spec="§4.2",
    )
    add(
        "first_frame_ping_header_only",
        "The header of a PING as the peer's first frame: rejected from the header (H1).",
        header(5, TYPES["PING"], 0, 0),
        "PROTOCOL_ERROR",
        before_hello=True,
        header_only=True,
        spec="§4.2",
    )
    add(
        "oversize_data_before_hello_is_handshake_error",
        "An oversize DATA header before HELLO: H1 comes before H2, so PROTOCOL_ERROR.",
        header(65537, TYPES["DATA"], END_MESSAGE, 1),
        "PROTOCOL_ERROR",
        before_hello=True,
        header_only=True,
        spec="§4.2",
    )
    add(
        "second_hello",
        "A second, valid HELLO.",
        hello(),
        "PROTOCOL_ERROR",
        spec="§3.4",
    )
    add(
        "second_hello_header_only",
        "The header of a second HELLO: rejected from the header (H1).",
        header(1, TYPES["HELLO"], 0, 0),
        "PROTOCOL_ERROR",
        header_only=True,
        spec="§4.2",
    )

    # HELLO settings (spec §3.2)
    add(
        "hello_max_frame_bytes_below_range",
        "HELLO with max_frame_bytes 1024, below 16384.",
        control("HELLO", 0, {"max_frame_bytes": 1024}),
        "SETTINGS_ERROR",
        before_hello=True,
        spec="§3.2",
    )
    add(
        "hello_keepalive_above_range",
        "HELLO with keepalive_ms 86400001, above one day.",
        control("HELLO", 0, {"keepalive_ms": 86400001}),
        "SETTINGS_ERROR",
        before_hello=True,
        spec="§3.2",
    )
    add(
        "hello_setting_wrong_type",
        'HELLO with keepalive_ms "30s", a str.',
        control("HELLO", 0, {"keepalive_ms": "30s"}),
        "SETTINGS_ERROR",
        before_hello=True,
        spec="§3.2",
    )
    add(
        "hello_setting_boolean",
        "HELLO with max_streams true: a boolean is not an int.",
        control("HELLO", 0, {"max_streams": True}),
        "SETTINGS_ERROR",
        before_hello=True,
        spec="§3.2",
    )
    add(
        "hello_max_message_bytes_above_default_window",
        "HELLO with max_message_bytes 8 MiB alone: the default stream_bytes is below it.",
        control("HELLO", 0, {"max_message_bytes": 8388608}),
        "SETTINGS_ERROR",
        before_hello=True,
        spec="§3.2",
    )
    add(
        "hello_more_than_64_entries",
        "HELLO whose map has 65 entries: ENHANCE_YOUR_CALM.",
        control("HELLO", 0, {f"x{i}": i for i in range(65)}),
        "ENHANCE_YOUR_CALM",
        before_hello=True,
        spec="§4.3.2",
    )

    # spec §4.3.2 (1.1): the entry count B1 is judged from the map header before the
    # entries are decoded, ahead of well-formedness (B3).
    add(
        "hello_65_entries_malformed_is_enhance_your_calm",
        "HELLO whose map16 header declares 65 entries and whose body ends after the first: "
        "B1 (entry count) is checked before B3 (well-formedness), so ENHANCE_YOUR_CALM.",
        control_raw("HELLO", 0, b"\xde\x00\x41" + pack("a") + pack(1)),
        "ENHANCE_YOUR_CALM",
        before_hello=True,
        spec="§4.3.2",
    )
    add(
        "hello_nested_map_over_64_entries_is_protocol_error",
        "HELLO with one unknown key holding a map of 65 entries: the HELLO limit counts "
        "top-level entries only; the nested map breaks B4, so PROTOCOL_ERROR.",
        control("HELLO", 0, {"x": {f"m{i:02d}": i for i in range(65)}}),
        "PROTOCOL_ERROR",
        before_hello=True,
        spec="§4.3.2",
    )

    # Frame sizes (spec §4.2 H2)
    add(
        "data_length_over_max_frame_bytes_header_only",
        "The header of a DATA frame one byte over the default max_frame_bytes; no body follows.",
        header(65537, TYPES["DATA"], END_MESSAGE, 1),
        "FRAME_SIZE_ERROR",
        header_only=True,
        spec="§4.2",
    )
    add(
        "data_length_over_own_small_max_frame_bytes_header_only",
        "The header of a 16385-byte DATA frame against max_frame_bytes 16384.",
        header(16385, TYPES["DATA"], END_MESSAGE, 1),
        "FRAME_SIZE_ERROR",
        header_only=True,
        settings={"max_frame_bytes": 16384},
        spec="§4.2",
    )
    add(
        "unknown_type_over_max_frame_bytes_header_only",
        "The header of an unknown-type frame over max_frame_bytes; no body follows.",
        header(65537, 0x2A, 0, 0),
        "FRAME_SIZE_ERROR",
        header_only=True,
        spec="§4.4",
    )
    add(
        "control_body_over_4096_header_only",
        "The header of a CREDIT whose body would be 4097 bytes; no body follows.",
        header(4097, TYPES["CREDIT"], 0, 0),
        "FRAME_SIZE_ERROR",
        header_only=True,
        spec="§4.2",
    )
    add(
        "hello_body_over_4096_header_only",
        "The header of a first HELLO whose body would be 4097 bytes.",
        header(4097, TYPES["HELLO"], 0, 0),
        "FRAME_SIZE_ERROR",
        before_hello=True,
        header_only=True,
        spec="§4.2",
    )

    # Stream ids (spec §4.5, §6.1)
    add(
        "data_on_stream_0",
        "DATA on stream 0.",
        data(0, b"x"),
        "PROTOCOL_ERROR",
        spec="§4.5",
    )
    add(
        "reset_on_stream_0",
        "RESET on stream 0.",
        control("RESET", 0, {"code": CODES["CANCEL"]}),
        "PROTOCOL_ERROR",
        spec="§4.5",
    )
    add(
        "ping_on_stream_3",
        "PING on stream 3.",
        control("PING", 3, {"id": 1}),
        "PROTOCOL_ERROR",
        spec="§4.5",
    )
    add(
        "goaway_on_stream_1",
        "GOAWAY on stream 1.",
        control("GOAWAY", 1, {"last_stream": 0, "code": 0}),
        "PROTOCOL_ERROR",
        spec="§4.5",
    )
    add(
        "data_on_idle_stream_of_receivers_parity",
        "DATA from the initiator on stream 2, an even id the acceptor never opened.",
        data(2, b"x"),
        "PROTOCOL_ERROR",
        spec="§6.1",
    )
    add(
        "credit_on_idle_stream_of_receivers_parity",
        "CREDIT from the initiator on stream 4, an even id the acceptor never opened.",
        control("CREDIT", 4, {"bytes": 1, "messages": 1}),
        "PROTOCOL_ERROR",
        spec="§6.1",
    )
    add(
        "blocked_on_idle_stream_of_receivers_parity",
        "BLOCKED from the initiator on stream 4, an even id the acceptor never opened.",
        control("BLOCKED", 4, {"bytes": 4194304, "messages": 4096}),
        "PROTOCOL_ERROR",
        spec="§6.1",
    )
    add(
        "credit_on_idle_stream_body_error_wins",
        "CREDIT on stream 4 (idle, the acceptor's parity) whose bytes is 2^62: the body is "
        "checked before the stream state, so FLOW_CONTROL_ERROR, not PROTOCOL_ERROR (1.1).",
        control("CREDIT", 4, {"bytes": MAX_COUNTER + 1, "messages": 1}),
        "FLOW_CONTROL_ERROR",
        spec="§4.2",
    )
    add(
        "reset_on_new_peer_stream_missing_code",
        "RESET on stream 5, never opened, whose body lacks code: both are PROTOCOL_ERROR; "
        "the body is checked first (1.1).",
        control("RESET", 5, {"reason": "x"}),
        "PROTOCOL_ERROR",
        spec="§4.2",
    )
    add(
        "reset_on_new_peer_stream",
        "RESET on stream 5, a stream the initiator never opened.",
        control("RESET", 5, {"code": CODES["CANCEL"]}),
        "PROTOCOL_ERROR",
        spec="§5.7",
    )

    # Control bodies (spec §4.3.2)
    add(
        "ping_body_reserved_byte_c1",
        "PING whose body is the reserved msgpack byte c1.",
        control_raw("PING", 0, b"\xc1"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_truncated",
        'PING whose body is a map promising one entry whose key "id" is cut after one byte.',
        control_raw("PING", 0, b"\x81\xa2\x69"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_empty",
        "PING with a zero-length body.",
        control_raw("PING", 0, b""),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_trailing_bytes",
        "PING whose body is a valid map followed by one more byte.",
        control_raw("PING", 0, pack({"id": 1}) + b"\x00"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_not_a_map",
        "PING whose body is the array [1].",
        control_raw("PING", 0, pack([1])),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_integer_key",
        "PING whose map has an integer key next to id.",
        control_raw("PING", 0, pack({"id": 1, 2: 3})),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "credit_body_bin_key",
        'Connection CREDIT whose key "bytes" is a bin, not a str.',
        control_raw("CREDIT", 0, pack({b"bytes": 100})),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_duplicate_key",
        'PING whose map holds the key "id" twice.',
        control_raw("PING", 0, b"\x82\xa2id\x01\xa2id\x02"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_invalid_utf8_key",
        "PING whose map has a str key that is not valid UTF-8.",
        control_raw("PING", 0, b"\x82\xa2id\x01\xa2\xff\xfe\x00"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_timestamp_ext_in_unknown_key",
        "PING with an unknown key whose value is a msgpack timestamp (ext -1).",
        control_raw("PING", 0, b"\x82\xa2id\x01\xa1t\xd6\xff\x00\x00\x00\x01"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_ext_in_unknown_key",
        "PING with an unknown key whose value is an ext of type 1.",
        control_raw("PING", 0, b"\x82\xa2id\x01\xa1e\xd4\x01\x00"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_nested_too_deep",
        "PING with an unknown key holding arrays nested 8 deep: depth 9 exceeds 8.",
        control_raw("PING", 0, b"\x82\xa2id\x01\xa1x" + b"\x91" * 8 + b"\x01"),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_body_more_than_64_entries",
        "PING whose map has 65 entries: PROTOCOL_ERROR (only HELLO gets ENHANCE_YOUR_CALM).",
        control("PING", 0, {"id": 1, **{f"x{i}": i for i in range(64)}}),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_missing_id",
        "PING with an empty map.",
        control("PING", 0, {}),
        "PROTOCOL_ERROR",
        spec="§5.5",
    )
    add(
        "ping_id_boolean",
        "PING whose id is true: a boolean is not an int.",
        control("PING", 0, {"id": True}),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "ping_id_negative",
        "PING whose id is -1.",
        control("PING", 0, {"id": -1}),
        "PROTOCOL_ERROR",
        spec="§4.3.3",
    )
    add(
        "goaway_versions_not_a_list",
        "GOAWAY whose versions is the int 1, not an array.",
        control("GOAWAY", 0, {"last_stream": 0, "code": 12, "versions": 1}),
        "PROTOCOL_ERROR",
        spec="§5.8",
    )
    add(
        "goaway_last_stream_too_large",
        "GOAWAY whose last_stream is 2^31.",
        control("GOAWAY", 0, {"last_stream": 1 << 31, "code": 0}),
        "PROTOCOL_ERROR",
        spec="§4.3.3",
    )
    add(
        "reset_reason_not_a_str",
        "RESET on stream 1 (after DATA opened it) whose reason is the int 5.",
        data(1, b"a") + control("RESET", 1, {"code": 8, "reason": 5}),
        "PROTOCOL_ERROR",
        spec="§5.7",
    )

    # CREDIT and BLOCKED bodies (spec §5.3, §5.4)
    add(
        "credit_connection_above_max_counter",
        "Connection CREDIT with bytes 2^62, one above MAX_COUNTER.",
        control("CREDIT", 0, {"bytes": MAX_COUNTER + 1}),
        "FLOW_CONTROL_ERROR",
        spec="§5.3",
    )
    add(
        "credit_stream_messages_above_max_counter",
        "Stream CREDIT opening stream 1 with messages 2^62.",
        control("CREDIT", 1, {"bytes": 1, "messages": MAX_COUNTER + 1, "consumed": 0}),
        "FLOW_CONTROL_ERROR",
        spec="§5.3",
    )
    add(
        "credit_negative_bytes",
        "Connection CREDIT with bytes -1: out of range, PROTOCOL_ERROR (not flow control).",
        control("CREDIT", 0, {"bytes": -1}),
        "PROTOCOL_ERROR",
        spec="§5.3",
    )
    add(
        "credit_bytes_wrong_type",
        'Connection CREDIT with bytes "1": a wrong type is PROTOCOL_ERROR.',
        control("CREDIT", 0, {"bytes": "1"}),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "credit_connection_missing_bytes",
        "Connection CREDIT with an empty map: bytes is required.",
        control("CREDIT", 0, {}),
        "PROTOCOL_ERROR",
        spec="§5.3",
    )
    add(
        "credit_stream_missing_messages",
        "Stream CREDIT opening stream 1 with bytes only: messages is required.",
        control("CREDIT", 1, {"bytes": 4194304}),
        "PROTOCOL_ERROR",
        spec="§5.3",
    )
    add(
        "credit_feedback_rate_negative",
        "Stream CREDIT opening stream 1 with rate -1: feedback out of range is PROTOCOL_ERROR.",
        control("CREDIT", 1, {"bytes": 4194304, "messages": 4096, "rate": -1}),
        "PROTOCOL_ERROR",
        spec="§5.3",
    )
    add(
        "credit_feedback_rate_above_u32",
        "Stream CREDIT opening stream 1 with rate 2^32, one above its range.",
        control("CREDIT", 1, {"bytes": 4194304, "messages": 4096, "rate": 1 << 32}),
        "PROTOCOL_ERROR",
        spec="§4.3.3",
    )
    add(
        "credit_feedback_depth_wrong_type",
        'Stream CREDIT opening stream 1 with depth "3": a wrong type is PROTOCOL_ERROR.',
        control("CREDIT", 1, {"bytes": 4194304, "messages": 4096, "depth": "3"}),
        "PROTOCOL_ERROR",
        spec="§5.3",
    )
    add(
        "credit_feedback_rate_a_float",
        "Stream CREDIT opening stream 1 with rate 2.5 (a float64): not an int, PROTOCOL_ERROR.",
        control("CREDIT", 1, {"bytes": 4194304, "messages": 4096, "rate": 2.5}),
        "PROTOCOL_ERROR",
        spec="§4.3.2",
    )
    add(
        "credit_consumed_more_than_sent",
        "CREDIT opening stream 1 reporting 3 messages consumed; the acceptor sent none.",
        control("CREDIT", 1, {"bytes": 4194304, "messages": 4096, "consumed": 3}),
        "PROTOCOL_ERROR",
        spec="§5.3",
    )
    add(
        "blocked_stream_missing_messages",
        "Stream BLOCKED on stream 1 with bytes only: messages is required.",
        control("BLOCKED", 1, {"bytes": 4194304}),
        "PROTOCOL_ERROR",
        spec="§5.4",
    )

    # DATA and flow control (spec §5.1, §7, §8.4)
    add(
        "data_exceeds_stream_credit_by_one_byte",
        "Two messages of 10 and 11 bytes on stream 1 against a stream limit of 20 bytes.",
        data(1, b"a" * 10) + data(1, b"b" * 11),
        "FLOW_CONTROL_ERROR",
        settings={"stream_bytes": 20, "max_message_bytes": 16},
        spec="§8.4",
    )
    add(
        "data_exceeds_stream_credit_header_only",
        "A 10-byte message, then the header of an 11-byte one, against a stream limit of 20.",
        data(1, b"a" * 10) + header(11, TYPES["DATA"], END_MESSAGE, 1),
        "FLOW_CONTROL_ERROR",
        header_only=True,
        settings={"stream_bytes": 20, "max_message_bytes": 16},
        spec="§8.4",
    )
    add(
        "data_opening_stream_past_its_credit_header_only",
        "The header of a 21-byte first DATA on stream 1 against a stream limit of 20: "
        "flow control is checked before message size.",
        header(21, TYPES["DATA"], END_MESSAGE, 1),
        "FLOW_CONTROL_ERROR",
        header_only=True,
        settings={"stream_bytes": 20, "max_message_bytes": 16},
        spec="§8.4",
    )
    add(
        "data_exceeds_connection_credit_header_only",
        "A 10-byte message on stream 1, then the header of an 11-byte one on stream 3, "
        "against a connection limit of 20.",
        data(1, b"a" * 10) + header(11, TYPES["DATA"], END_MESSAGE, 3),
        "FLOW_CONTROL_ERROR",
        header_only=True,
        settings={"connection_bytes": 20, "max_message_bytes": 16},
        spec="§8.4",
    )
    add(
        "data_opening_stream_over_stream_bytes_names_last_accepted",
        'A message "a" opens stream 1; a 17-byte first DATA on stream 3 breaks the stream '
        "limit of 16: the GOAWAY names last_stream 1, the highest stream accepted before the "
        "violating frame (1.1).",
        data(1, b"a") + data(3, b"z" * 17),
        "FLOW_CONTROL_ERROR",
        settings={"stream_bytes": 16, "max_message_bytes": 16},
        last_stream=1,
        spec="§10.2",
    )
    add(
        "data_exceeds_stream_message_limit_header_only",
        'A message "a" on stream 1, then the header of a second one, against a limit of 1 message.',
        data(1, b"a") + header(1, TYPES["DATA"], END_MESSAGE, 1),
        "FLOW_CONTROL_ERROR",
        header_only=True,
        settings={"stream_messages": 1},
        spec="§8.4",
    )
    add(
        "end_stream_inside_message",
        "A first fragment on stream 1, then a bare END_STREAM: the message is truncated.",
        data(1, b"ab", 0) + data(1, b"", END_STREAM),
        "PROTOCOL_ERROR",
        spec="§7.2",
    )
    add(
        "end_stream_inside_message_header_only",
        "A first fragment, then the header of a 3-byte END_STREAM frame without END_MESSAGE.",
        data(1, b"ab", 0) + header(3, TYPES["DATA"], END_STREAM, 1),
        "PROTOCOL_ERROR",
        header_only=True,
        spec="§5.1",
    )
    add(
        "end_stream_without_end_message_begins_truncated_message",
        "A first DATA of 2 bytes with END_STREAM and without END_MESSAGE: a truncated message.",
        data(1, b"ab", END_STREAM),
        "PROTOCOL_ERROR",
        spec="§7.2",
    )

    # Stream errors: the connection continues (spec §10.3)
    add(
        "message_too_large",
        "A 17-byte message on stream 1 against max_message_bytes 16: RESET(MESSAGE_TOO_LARGE).",
        data(1, b"m" * 17),
        "MESSAGE_TOO_LARGE",
        "stream",
        settings={"max_message_bytes": 16},
        stream_id=1,
        spec="§7.3",
    )
    add(
        "message_too_large_across_fragments",
        "Fragments of 10 and 7 bytes on stream 1 against max_message_bytes 16.",
        data(1, b"m" * 10, 0) + data(1, b"m" * 7),
        "MESSAGE_TOO_LARGE",
        "stream",
        settings={"max_message_bytes": 16},
        stream_id=1,
        spec="§7.3",
    )
    add(
        "message_too_large_header_only",
        "The header of a 17-byte DATA on stream 1 against max_message_bytes 16: "
        "RESET before the body arrives.",
        header(17, TYPES["DATA"], END_MESSAGE, 1),
        "MESSAGE_TOO_LARGE",
        "stream",
        header_only=True,
        settings={"max_message_bytes": 16},
        stream_id=1,
        spec="§7.3",
    )
    add(
        "message_too_large_second_fragment_header_only",
        "A 1024-byte first fragment on stream 1, then the header of a 1025-byte final one, "
        "against max_message_bytes 2048: RESET at header time, before the body (1.1).",
        data(1, b"f" * 1024, 0) + header(1025, TYPES["DATA"], END_MESSAGE, 1),
        "MESSAGE_TOO_LARGE",
        "stream",
        header_only=True,
        settings={"max_message_bytes": 2048},
        stream_id=1,
        spec="§7.3",
    )
    add(
        "data_after_end_stream",
        'A message "a" with END_STREAM on stream 1, then another DATA on it.',
        data(1, b"a", END_MESSAGE | END_STREAM) + data(1, b"b"),
        "STREAM_CLOSED",
        "stream",
        stream_id=1,
        spec="§7.2",
    )
    add(
        "stream_over_max_streams_refused",
        "Streams 1 and 3 opened against max_streams 1: stream 3 is refused.",
        data(1, b"a") + data(3, b"b"),
        "REFUSED_STREAM",
        "stream",
        settings={"max_streams": 1},
        stream_id=3,
        spec="§6.4",
    )
    return vectors


# --- conversations.json -------------------------------------------------------------------


def credit(stream_id: int, nbytes: int, messages: int | None = None, consumed: int | None = None):
    body: dict[str, int] = {"bytes": nbytes}
    if messages is not None:
        body["messages"] = messages
    if consumed is not None:
        body["consumed"] = consumed
    return control("CREDIT", stream_id, body)


def hello_meaning(**overrides: int) -> str:
    values = settings(**overrides)
    return "HELLO " + " ".join(f"{k}={v}" for k, v in values.items())


def conversations() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def step(
        side: str,
        frames: list[tuple[bytes, str]],
        do: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"from": side}
        if do:
            result["do"] = do
        result.update(extra)
        result["hex"] = b"".join(f for f, _ in frames).hex()
        result["meaning"] = [m for _, m in frames]
        return result

    preface = (PREFACE, "PREFACE version 1")

    # 1. The handshake: both sides send preface and HELLO at once (spec §3.1, §3.4).
    initiator = {"max_streams": 10, "keepalive_ms": 0}
    out.append(
        {
            "name": "handshake",
            "description": "Both sides send their preface and HELLO without waiting; "
            "each HELLO lists all seven settings in table order.",
            "settings": {"initiator": initiator, "acceptor": {}},
            "steps": [
                step("initiator", [preface, (hello(**initiator), hello_meaning(**initiator))]),
                step("acceptor", [preface, (hello(), hello_meaning())]),
            ],
            "expect": {
                "initiator": {"result": "ok", "handshake_complete": True, "state": "open"},
                "acceptor": {
                    "result": "ok",
                    "handshake_complete": True,
                    "state": "open",
                    "peer_settings": settings(**initiator),
                },
            },
        }
    )

    # 2. PING and PONG (spec §5.5, §5.6).
    out.append(
        {
            "name": "ping_pong",
            "description": "The initiator pings after the handshake; the acceptor answers with "
            "a PONG carrying the same id.",
            "settings": {"initiator": {}, "acceptor": {}},
            "steps": [
                step("initiator", [preface, (hello(), hello_meaning())]),
                step("acceptor", [preface, (hello(), hello_meaning())]),
                step(
                    "initiator",
                    [(control("PING", 0, {"id": 0}), "PING id=0")],
                    [{"call": "ping", "returns": 0}],
                ),
                step("acceptor", [(control("PONG", 0, {"id": 0}), "PONG id=0")]),
            ],
            "expect": {
                "initiator": {"result": "ok", "pongs": [0]},
                "acceptor": {"result": "ok", "pings": [0]},
            },
        }
    )

    # 3. Credit exhaustion and refill (spec §8.3, §8.6, §8.7).
    # The acceptor lets each stream carry 2 messages. Its replenish policy (spec §8.6):
    # W = 1024, M = 256: T = max(1, min(512, 769)) = 512; Wm = 2: Tm = 1;
    # connection Wc = 4096: Tc = max(1, min(2048, 3841)) = 2048.
    acceptor = {
        "stream_bytes": 1024,
        "stream_messages": 2,
        "connection_bytes": 4096,
        "max_message_bytes": 256,
    }
    one, two, three = b"one", b"two", b"three"
    out.append(
        {
            "name": "credit_exhaustion_and_refill",
            "description": "The acceptor allows 2 messages per stream. The initiator sends two, "
            "is blocked on the third and says so once with BLOCKED; the acceptor's application "
            "consumes both, the acceptor raises the limits with CREDIT, the third message goes "
            "out, and both sides half-close.",
            "settings": {"initiator": {}, "acceptor": acceptor},
            "steps": [
                step("initiator", [preface, (hello(), hello_meaning())]),
                step("acceptor", [preface, (hello(**acceptor), hello_meaning(**acceptor))]),
                step(
                    "initiator",
                    [
                        (
                            credit(1, 4194304, 4096, 0),
                            "CREDIT stream 1 bytes=4194304 messages=4096 consumed=0 (opens it)",
                        ),
                        (data(1, one), 'DATA stream 1 END_MESSAGE "one"'),
                        (data(1, two), 'DATA stream 1 END_MESSAGE "two"'),
                        (
                            control("BLOCKED", 1, {"bytes": 1024, "messages": 2}),
                            "BLOCKED stream 1 bytes=1024 messages=2 (sent once)",
                        ),
                    ],
                    [
                        {"call": "open_stream", "returns": 1},
                        {
                            "call": "send_message",
                            "stream_id": 1,
                            "payload_hex": one.hex(),
                            "returns": True,
                        },
                        {
                            "call": "send_message",
                            "stream_id": 1,
                            "payload_hex": two.hex(),
                            "returns": True,
                        },
                        {
                            "call": "send_message",
                            "stream_id": 1,
                            "payload_hex": three.hex(),
                            "returns": False,
                        },
                        {
                            "call": "send_message",
                            "stream_id": 1,
                            "payload_hex": three.hex(),
                            "returns": False,
                        },
                    ],
                ),
                # consumed 6 bytes, 2 messages: messages target 4 - 2 >= Tm = 1, so both
                # limits go to their targets: bytes 6 + 1024 = 1030, messages 2 + 2 = 4.
                # Connection: 6 + 4096 - 4096 = 6 < Tc: no connection CREDIT.
                step(
                    "acceptor",
                    [
                        (
                            credit(1, 1030, 4, 2),
                            "CREDIT stream 1 bytes=1030 messages=4 consumed=2",
                        )
                    ],
                    [{"call": "release", "stream_id": 1, "nbytes": 6, "nmessages": 2}],
                ),
                step(
                    "initiator",
                    [(data(1, three), 'DATA stream 1 END_MESSAGE "three"')],
                    [
                        {
                            "call": "send_message",
                            "stream_id": 1,
                            "payload_hex": three.hex(),
                            "returns": True,
                        },
                    ],
                ),
                # consumed 11 bytes, 3 messages: messages target 5 - 4 >= Tm: CREDIT with
                # bytes 11 + 1024 = 1035, messages 3 + 2 = 5; connection 11 < Tc.
                step(
                    "acceptor",
                    [
                        (
                            credit(1, 1035, 5, 3),
                            "CREDIT stream 1 bytes=1035 messages=5 consumed=3",
                        )
                    ],
                    [{"call": "release", "stream_id": 1, "nbytes": 5, "nmessages": 1}],
                ),
                step(
                    "initiator",
                    [(data(1, b"", END_STREAM), "DATA stream 1 END_STREAM (bare half-close)")],
                    [{"call": "end_stream", "stream_id": 1}],
                ),
                step(
                    "acceptor",
                    [(data(1, b"", END_STREAM), "DATA stream 1 END_STREAM (bare half-close)")],
                    [{"call": "end_stream", "stream_id": 1}],
                ),
            ],
            "expect": {
                "initiator": {
                    "result": "ok",
                    "credit_granted": [
                        {"stream_id": 1, "bytes": 1030, "messages": 4},
                        {"stream_id": 1, "bytes": 1035, "messages": 5},
                    ],
                    "streams_ended": [1],
                    "stream_states": {"1": "closed"},
                },
                "acceptor": {
                    "result": "ok",
                    "streams_opened": [1],
                    "messages": {"1": [one.hex(), two.hex(), three.hex()]},
                    "blocked_reports": [{"stream_id": 1, "bytes": 1024, "messages": 2}],
                    "streams_ended": [1],
                    "stream_states": {"1": "closed"},
                },
            },
        }
    )

    # 4. A flow-control violation (spec §8.4, §10.2).
    acceptor = {"stream_bytes": 100, "max_message_bytes": 64}
    first = b"x" * 60
    extra = b"y" * 41
    out.append(
        {
            "name": "flow_control_violation_answered_by_goaway",
            "description": "The acceptor allows 100 bytes per stream. After a 60-byte message, "
            "a misbehaving initiator sends 41 more bytes on stream 1; the acceptor answers with "
            "GOAWAY(FLOW_CONTROL_ERROR, last_stream 1) and closes.",
            "settings": {"initiator": {}, "acceptor": acceptor},
            "steps": [
                step("initiator", [preface, (hello(), hello_meaning())]),
                step("acceptor", [preface, (hello(**acceptor), hello_meaning(**acceptor))]),
                step(
                    "initiator",
                    [
                        (
                            credit(1, 4194304, 4096, 0),
                            "CREDIT stream 1 bytes=4194304 messages=4096 consumed=0 (opens it)",
                        ),
                        (data(1, first), "DATA stream 1 END_MESSAGE 60 bytes"),
                    ],
                    [
                        {"call": "open_stream", "returns": 1},
                        {
                            "call": "send_message",
                            "stream_id": 1,
                            "payload_hex": first.hex(),
                            "returns": True,
                        },
                    ],
                ),
                step(
                    "initiator",
                    [(data(1, extra), "DATA stream 1 END_MESSAGE 41 bytes: 101 > 100")],
                    raw=True,
                ),
                step(
                    "acceptor",
                    [
                        (
                            control(
                                "GOAWAY",
                                0,
                                {
                                    "last_stream": 1,
                                    "code": CODES["FLOW_CONTROL_ERROR"],
                                    "reason": "peer sent 101 bytes on stream 1 against a limit "
                                    "of 100 (spec §8.4)",
                                },
                            ),
                            "GOAWAY last_stream=1 code=FLOW_CONTROL_ERROR",
                        )
                    ],
                    reason_informative=True,
                ),
            ],
            "expect": {
                "acceptor": {
                    "result": "connection_error",
                    "code": "FLOW_CONTROL_ERROR",
                    "last_stream": 1,
                    "state": "closed",
                },
                "initiator": {
                    "result": "ok",
                    "goaway_received": {"last_stream": 1, "code": "FLOW_CONTROL_ERROR"},
                    "state": "closed",
                },
            },
        }
    )

    # 5. A reset stream reports consumed and returns connection credit (spec §5.7, §8.8).
    # Acceptor: M = 16, Wc = 64: Tc = max(1, min(32, 49)) = 32; W = 64: T = 32.
    acceptor = {"stream_bytes": 64, "connection_bytes": 64, "max_message_bytes": 16}
    msgs = [bytes([0x61 + i]) * 12 for i in range(4)]
    out.append(
        {
            "name": "stream_reset_reports_consumed",
            "description": "The initiator sends four 12-byte messages; the acceptor's "
            "application consumes one and cancels the stream. The RESET carries consumed 1, "
            "so the initiator knows exactly one message was delivered, and the 36 discarded "
            "bytes return connection credit at once.",
            "settings": {"initiator": {}, "acceptor": acceptor},
            "steps": [
                step("initiator", [preface, (hello(), hello_meaning())]),
                step("acceptor", [preface, (hello(**acceptor), hello_meaning(**acceptor))]),
                step(
                    "initiator",
                    [
                        (
                            credit(1, 4194304, 4096, 0),
                            "CREDIT stream 1 bytes=4194304 messages=4096 consumed=0 (opens it)",
                        ),
                        *[
                            (data(1, m), f"DATA stream 1 END_MESSAGE 12 bytes #{i + 1}")
                            for i, m in enumerate(msgs)
                        ],
                    ],
                    [
                        {"call": "open_stream", "returns": 1},
                        *[
                            {
                                "call": "send_message",
                                "stream_id": 1,
                                "payload_hex": m.hex(),
                                "returns": True,
                            }
                            for m in msgs
                        ],
                    ],
                ),
                # release 12: stream 12 < T, messages 1 < Tm = 2048, connection 12 < Tc.
                # The reset discards 36 held bytes: conn_consumed 48, target 112, 48 >= Tc.
                step(
                    "acceptor",
                    [
                        (
                            control(
                                "RESET",
                                1,
                                {"code": CODES["CANCEL"], "reason": "enough", "consumed": 1},
                            ),
                            'RESET stream 1 code=CANCEL reason="enough" consumed=1',
                        ),
                        (credit(0, 112), "CREDIT stream 0 bytes=112 (discarded bytes returned)"),
                    ],
                    [
                        {"call": "release", "stream_id": 1, "nbytes": 12, "nmessages": 1},
                        {
                            "call": "reset_stream",
                            "stream_id": 1,
                            "code": "CANCEL",
                            "reason": "enough",
                        },
                    ],
                ),
            ],
            "expect": {
                "initiator": {
                    "result": "ok",
                    "stream_resets": [
                        {"stream_id": 1, "code": "CANCEL", "reason": "enough", "consumed": 1}
                    ],
                    "credit_granted": [{"stream_id": 0, "bytes": 112, "messages": None}],
                    "stream_states": {"1": "closed"},
                },
                "acceptor": {
                    "result": "ok",
                    "messages": {"1": [m.hex() for m in msgs]},
                    "stream_states": {"1": "closed"},
                },
            },
        }
    )

    # 6. The final consumed report (spec §10.5): the peer ended its direction and every
    # message was consumed, so the receiver restates its limits with the final count.
    msg = b"last"
    out.append(
        {
            "name": "final_consumed_report_after_end_stream",
            "description": "The initiator sends one message with END_STREAM. When the "
            "acceptor's application has consumed it, the acceptor, still half-closed (remote), "
            "sends a stream CREDIT restating its limits with the final consumed 1, then ends "
            "its own direction.",
            "settings": {"initiator": {}, "acceptor": {}},
            "steps": [
                step("initiator", [preface, (hello(), hello_meaning())]),
                step("acceptor", [preface, (hello(), hello_meaning())]),
                step(
                    "initiator",
                    [
                        (
                            credit(1, 4194304, 4096, 0),
                            "CREDIT stream 1 bytes=4194304 messages=4096 consumed=0 (opens it)",
                        ),
                        (
                            data(1, msg, END_MESSAGE | END_STREAM),
                            'DATA stream 1 END_MESSAGE|END_STREAM "last"',
                        ),
                    ],
                    [
                        {"call": "open_stream", "returns": 1},
                        {
                            "call": "send_message",
                            "stream_id": 1,
                            "payload_hex": msg.hex(),
                            "end_stream": True,
                            "returns": True,
                        },
                    ],
                ),
                step(
                    "acceptor",
                    [
                        (
                            credit(1, 4194304, 4096, 1),
                            "CREDIT stream 1 bytes=4194304 messages=4096 consumed=1 "
                            "(final report, limits restated)",
                        ),
                        (data(1, b"", END_STREAM), "DATA stream 1 END_STREAM (bare half-close)"),
                    ],
                    [
                        {"call": "release", "stream_id": 1, "nbytes": 4, "nmessages": 1},
                        {"call": "end_stream", "stream_id": 1},
                    ],
                ),
            ],
            "expect": {
                "initiator": {
                    "result": "ok",
                    "streams_ended": [1],
                    "stream_states": {"1": "closed"},
                },
                "acceptor": {
                    "result": "ok",
                    "messages": {"1": [msg.hex()]},
                    "streams_ended": [1],
                    "stream_states": {"1": "closed"},
                },
            },
        }
    )

    # 7. Graceful shutdown (spec §10.4).
    out.append(
        {
            "name": "graceful_goaway",
            "description": "With no streams open, the initiator sends GOAWAY(NO_ERROR) and the "
            "acceptor answers with its own; both are then finished.",
            "settings": {"initiator": {}, "acceptor": {}},
            "steps": [
                step("initiator", [preface, (hello(), hello_meaning())]),
                step("acceptor", [preface, (hello(), hello_meaning())]),
                step(
                    "initiator",
                    [
                        (
                            control("GOAWAY", 0, {"last_stream": 0, "code": 0}),
                            "GOAWAY last_stream=0 code=NO_ERROR",
                        )
                    ],
                    [{"call": "close", "code": "NO_ERROR"}],
                ),
                step(
                    "acceptor",
                    [
                        (
                            control("GOAWAY", 0, {"last_stream": 0, "code": 0}),
                            "GOAWAY last_stream=0 code=NO_ERROR",
                        )
                    ],
                    [{"call": "close", "code": "NO_ERROR"}],
                ),
            ],
            "expect": {
                "initiator": {
                    "result": "ok",
                    "goaway_received": {"last_stream": 0, "code": "NO_ERROR"},
                    "state": "closing",
                    "finished": True,
                },
                "acceptor": {
                    "result": "ok",
                    "goaway_received": {"last_stream": 0, "code": "NO_ERROR"},
                    "state": "closing",
                    "finished": True,
                },
            },
        }
    )

    out += session_conversations(step, preface)
    return out


# Sessions (1.2, spec §15). The acceptor's tokens are fixed by the vector ("tokens"); a
# replay makes the acceptor issue them (spec §13.3), as spec §15.9 forbids outside tests.
TOKEN_2 = bytes(range(16, 32))
TOKEN_3 = bytes(range(32, 48))
SESSION_TIMEOUT_MS = 30000  # the reference implementation's default (spec §15.3.1)


def session_hello(**overrides: int) -> bytes:
    """HELLO with ``session`` 1 after the seven settings (spec §15.2): the initiator asks for
    a session; the acceptor offers them."""
    return control("HELLO", 0, {**settings(**overrides), "session": 1})


def resuming_hello(token: bytes, **overrides: int) -> bytes:
    """The initiator's HELLO on a new transport: ``resume_token`` after the settings (§15.2)."""
    return control("HELLO", 0, {**settings(**overrides), "resume_token": token})


def session_grant(token: bytes) -> tuple[bytes, str]:
    body = {"token": token, "timeout_ms": SESSION_TIMEOUT_MS}
    return control("SESSION", 0, body), f"SESSION token={token.hex()} timeout_ms=30000"


def stream_resume(
    stream_id: int, received: tuple[int, int], consumed: int, limits: tuple[int, int]
) -> tuple[bytes, str]:
    body = {"received": list(received), "consumed": consumed, "limits": list(limits)}
    return (
        control("RESUME", stream_id, body),
        f"RESUME stream {stream_id} received=[{received[0]}, {received[1]}] "
        f"consumed={consumed} limits=[{limits[0]}, {limits[1]}]",
    )


def connection_resume(received: int, limit: int, highest: int) -> tuple[bytes, str]:
    body = {"received": received, "limit": limit, "highest": highest}
    return (
        control("RESUME", 0, body),
        f"RESUME stream 0 received={received} limit={limit} highest={highest} (ends the exchange)",
    )


def send(stream_id: int, payload: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "call": "send_message",
        "stream_id": stream_id,
        "payload_hex": payload.hex(),
        **extra,
        "returns": True,
    }


def session_conversations(step: Any, preface: tuple[bytes, str]) -> list[dict[str, Any]]:
    """Conversations over more than one transport (spec §13.3, §15)."""
    out: list[dict[str, Any]] = []
    # The acceptor's windows are small, so its CREDIT follows the messages (spec §8.6):
    # W = 1024, M = 256: T = 512; Wm = 4: Tm = 2; Wc = 4096: Tc = 2048.
    acceptor = {
        "stream_bytes": 1024,
        "stream_messages": 4,
        "connection_bytes": 4096,
        "max_message_bytes": 256,
    }
    initiator_hello = (session_hello(), hello_meaning() + " session=1 (asks for a session)")
    acceptor_hello = (
        session_hello(**acceptor),
        hello_meaning(**acceptor) + " session=1 (offers sessions)",
    )
    m = [b"m%d" % i for i in range(1, 7)]
    opening = [
        (
            credit(1, 4194304, 4096, 0),
            "CREDIT stream 1 bytes=4194304 messages=4096 consumed=0 (opens it)",
        ),
        (data(1, m[0]), 'DATA stream 1 END_MESSAGE "m1"'),
        (data(1, m[1]), 'DATA stream 1 END_MESSAGE "m2"'),
    ]
    # release 4 bytes, 2 messages: target_m = 2 + 4 = 6, 6 - 4 >= Tm: both limits to their
    # targets (4 + 1024 = 1028, 6); connection 4 < Tc.
    first_report = (credit(1, 1028, 6, 2), "CREDIT stream 1 bytes=1028 messages=6 consumed=2")
    # The initiator's exchange (spec §15.6, §15.7): it has received nothing on stream 1 and
    # grants its HELLO limits; the acceptor opened no stream (highest 0).
    initiator_exchange = [
        stream_resume(1, (0, 0), 0, (4194304, 4096)),
        connection_resume(0, 16777216, 0),
    ]
    reconnect = [
        preface,
        (resuming_hello(TOKEN), hello_meaning() + f" resume_token={TOKEN.hex()}"),
        *initiator_exchange,
    ]
    lost_in_flight = [data(1, m[2]), data(1, m[3]), data(1, m[4])]
    arrived = len(lost_in_flight[0]) + 11  # m3 whole, then m4's header and one body byte

    # 8. A whole resumption (spec §15.2 - §15.8).
    out.append(
        {
            "name": "session_resume_retransmits_what_was_lost",
            "description": "The initiator asks for a session and the acceptor grants one "
            "(SESSION with its token). The initiator sends m1..m5 on stream 1; the acceptor's "
            "application consumes m1 and m2. The transport is lost while m3..m5 are in "
            "flight: m3 arrives, m4 arrives in part, m5 not at all. On a new transport the "
            "initiator presents the token and its exchange; the acceptor's fresh connection "
            "reports the resumption and the session's connection adopts the transport, "
            "answering with a new token, its exchange (received [3, 6], consumed 2) and a "
            "PING. The initiator retransmits m4 and m5, each once; the PONG spends the first "
            "token. Then the stream goes on (m6 with END_STREAM, the final consumed report), "
            "and the acceptor ends its direction: END_STREAM, then the PING that confirms "
            "the close (spec §15.7: sent after the stream's last frame). Stream 1 closed at "
            "the initiator on that END_STREAM: it answers PONG and sends its own confirming "
            "PING, and each PONG lets its receiver forget stream 1. The transport is lost "
            "again; on the next one, neither exchange lists stream 1 (each side forgot it "
            "after confirming it, spec §15.7, §15.8): only the connection RESUMEs. Both sides "
            "then send a graceful GOAWAY, which ends the session.",
            "settings": {"initiator": {}, "acceptor": acceptor},
            "session": True,
            "tokens": [TOKEN.hex(), TOKEN_2.hex(), TOKEN_3.hex()],
            "steps": [
                step("initiator", [preface, initiator_hello]),
                # spec §15.2: the SESSION is the acceptor's first frame after that HELLO.
                step("acceptor", [preface, acceptor_hello, session_grant(TOKEN)]),
                step(
                    "initiator",
                    opening,
                    [{"call": "open_stream", "returns": 1}, send(1, m[0]), send(1, m[1])],
                ),
                step(
                    "acceptor",
                    [first_report],
                    [{"call": "release", "stream_id": 1, "nbytes": 4, "nmessages": 2}],
                ),
                step(
                    "initiator",
                    [
                        (lost_in_flight[0], 'DATA stream 1 END_MESSAGE "m3" (arrives)'),
                        (
                            lost_in_flight[1],
                            'DATA stream 1 END_MESSAGE "m4" (11 of 12 bytes '
                            "arrive: a partial frame, discarded, spec §15.4 step 1)",
                        ),
                        (lost_in_flight[2], 'DATA stream 1 END_MESSAGE "m5" (lost)'),
                    ],
                    [send(1, m[2]), send(1, m[3]), send(1, m[4])],
                    delivered_bytes=arrived,
                ),
                {
                    "transport": "lost",
                    "do": {
                        "initiator": [{"call": "transport_lost", "returns": True}],
                        "acceptor": [{"call": "transport_lost", "returns": True}],
                    },
                    "meaning": [
                        "both endpoints lose the transport; the session is kept (spec §15.4)"
                    ],
                },
                {
                    "transport": "new",
                    "meaning": [
                        "a new transport: the acceptor's side is a fresh connection "
                        "until it is adopted"
                    ],
                },
                # spec §15.6 (initiator) 1, 2: preface, HELLO with the token, and at once
                # its exchange: stream RESUMEs in id order, then the connection RESUME.
                step("initiator", reconnect, [{"call": "reconnect"}]),
                # The fresh connection's preface and HELLO went out first; then the session's
                # connection answers (spec §15.6 acceptor step 3): SESSION with a new token,
                # its exchange, a PING. Received: m1..m3, 6 bytes; consumed 2; the limits of
                # its CREDIT; connection limit 4096 (no connection CREDIT was due).
                step(
                    "acceptor",
                    [
                        preface,
                        acceptor_hello,
                        session_grant(TOKEN_2),
                        stream_resume(1, (3, 6), 2, (1028, 6)),
                        connection_resume(6, 4096, 1),
                        (
                            control("PING", 0, {"id": 0}),
                            "PING id=0 (its PONG spends the presented token)",
                        ),
                    ],
                    [{"call": "adopt"}],
                ),
                # spec §15.8 step 3: the acceptor holds m1..m3 and reported 2 consumed, so
                # the initiator drops m1, m2, keeps m3 (received) and sends m4, m5 again.
                # The PONG goes ahead of queued DATA (spec §5.5).
                step(
                    "initiator",
                    [
                        (control("PONG", 0, {"id": 0}), "PONG id=0"),
                        (data(1, m[3]), 'DATA stream 1 END_MESSAGE "m4" (retransmitted)'),
                        (data(1, m[4]), 'DATA stream 1 END_MESSAGE "m5" (retransmitted)'),
                    ],
                ),
                # release m3..m5: consumed 5 messages, 10 bytes: target_m 9 - 6 >= Tm.
                # The PONG arrived: only the new token resumes the session (spec §15.6).
                step(
                    "acceptor",
                    [(credit(1, 1034, 9, 5), "CREDIT stream 1 bytes=1034 messages=9 consumed=5")],
                    [
                        {"call": "accepts_token", "token_hex": TOKEN.hex(), "returns": False},
                        {"call": "accepts_token", "token_hex": TOKEN_2.hex(), "returns": True},
                        {"call": "release", "stream_id": 1, "nbytes": 6, "nmessages": 3},
                    ],
                ),
                step(
                    "initiator",
                    [
                        (
                            data(1, m[5], END_MESSAGE | END_STREAM),
                            'DATA stream 1 END_MESSAGE|END_STREAM "m6"',
                        )
                    ],
                    [send(1, m[5], end_stream=True)],
                ),
                # spec §10.5: every message of the ended direction consumed: the final report.
                step(
                    "acceptor",
                    [
                        (
                            credit(1, 1034, 9, 6),
                            "CREDIT stream 1 bytes=1034 messages=9 consumed=6 (final report)",
                        )
                    ],
                    [{"call": "release", "stream_id": 1, "nbytes": 2, "nmessages": 1}],
                ),
                # spec §15.7: stream 1 closes at the acceptor with its END_STREAM (an empty
                # DATA frame, §7.2); the PING that confirms the close goes after it, so its
                # PONG proves the initiator processed the END_STREAM. The acceptor's PING ids
                # go on from the resumption's 0.
                step(
                    "acceptor",
                    [
                        (
                            data(1, b"", END_STREAM),
                            "DATA stream 1 END_STREAM (empty; stream 1 closed at the acceptor)",
                        ),
                        (
                            control("PING", 0, {"id": 1}),
                            "PING id=1 (after the END_STREAM: its PONG confirms the close, §15.7)",
                        ),
                    ],
                    [{"call": "end_stream", "stream_id": 1}],
                ),
                # The END_STREAM closed stream 1 at the initiator too: the PONG first (§5.5),
                # then its own confirming PING (its first PING: id 0).
                step(
                    "initiator",
                    [
                        (
                            control("PONG", 0, {"id": 1}),
                            "PONG id=1 (the acceptor may now forget stream 1)",
                        ),
                        (
                            control("PING", 0, {"id": 0}),
                            "PING id=0 (stream 1 closed here on the END_STREAM: confirms it)",
                        ),
                    ],
                ),
                step(
                    "acceptor",
                    [
                        (
                            control("PONG", 0, {"id": 0}),
                            "PONG id=0 (the initiator may now forget stream 1)",
                        )
                    ],
                ),
                {
                    "transport": "lost",
                    "do": {
                        "initiator": [{"call": "transport_lost", "returns": True}],
                        "acceptor": [{"call": "transport_lost", "returns": True}],
                    },
                    "meaning": ["the transport is lost again; the session is kept (spec §15.4)"],
                },
                {
                    "transport": "new",
                    "meaning": [
                        "a third transport: the acceptor's side is a fresh connection "
                        "until it is adopted"
                    ],
                },
                # spec §15.7: each side forgot the confirmed stream 1, so its exchange is the
                # connection RESUME alone. The initiator has received no DATA byte (the
                # END_STREAM was empty) and the acceptor opened no stream.
                step(
                    "initiator",
                    [
                        preface,
                        (
                            resuming_hello(TOKEN_2),
                            hello_meaning() + f" resume_token={TOKEN_2.hex()}",
                        ),
                        connection_resume(0, 16777216, 0),
                    ],
                    [{"call": "reconnect"}],
                ),
                # The acceptor received m1..m6, 12 bytes; still no connection CREDIT was due
                # (12 < Tc), so its limit is 4096. No stream RESUME either.
                step(
                    "acceptor",
                    [
                        preface,
                        acceptor_hello,
                        session_grant(TOKEN_3),
                        connection_resume(12, 4096, 1),
                        (
                            control("PING", 0, {"id": 2}),
                            "PING id=2 (its PONG spends the presented token)",
                        ),
                    ],
                    [{"call": "adopt"}],
                ),
                step("initiator", [(control("PONG", 0, {"id": 2}), "PONG id=2")]),
                step(
                    "initiator",
                    [
                        (
                            control("GOAWAY", 0, {"last_stream": 0, "code": 0}),
                            "GOAWAY last_stream=0 code=NO_ERROR (ends the session, §15.4)",
                        )
                    ],
                    [{"call": "close", "code": "NO_ERROR"}],
                ),
                step(
                    "acceptor",
                    [
                        (
                            control("GOAWAY", 0, {"last_stream": 1, "code": 0}),
                            "GOAWAY last_stream=1 code=NO_ERROR",
                        )
                    ],
                    [{"call": "close", "code": "NO_ERROR"}],
                ),
            ],
            "expect": {
                "initiator": {
                    "result": "ok",
                    "sessions_granted": [TOKEN.hex(), TOKEN_2.hex(), TOKEN_3.hex()],
                    "sessions_resumed": [
                        {"messages": 2, "bytes": 4},
                        {"messages": 0, "bytes": 0},
                    ],
                    "credit_granted": [
                        {"stream_id": 1, "bytes": 1028, "messages": 6},
                        {"stream_id": 1, "bytes": 1034, "messages": 9},
                    ],
                    "streams_ended": [1],
                    "pings": [0, 1, 2],
                    "goaway_received": {"last_stream": 1, "code": "NO_ERROR"},
                    "resumable": False,
                    "session_token": None,
                    "stream_states": {"1": "closed"},
                    "state": "closing",
                },
                "acceptor": {
                    "result": "ok",
                    "sessions_granted": [TOKEN.hex(), TOKEN_2.hex(), TOKEN_3.hex()],
                    "resumes_requested": [TOKEN.hex(), TOKEN_2.hex()],
                    "sessions_resumed": [
                        {"messages": 0, "bytes": 0},
                        {"messages": 0, "bytes": 0},
                    ],
                    "streams_opened": [1],
                    "messages": {"1": [x.hex() for x in m]},
                    "streams_ended": [1],
                    "pings": [0],
                    "goaway_received": {"last_stream": 0, "code": "NO_ERROR"},
                    "tokens_accepted": {
                        TOKEN.hex(): False,
                        TOKEN_2.hex(): False,
                        TOKEN_3.hex(): False,
                    },
                    "resumable": False,
                    "stream_states": {"1": "closed"},
                    "state": "closing",
                },
            },
        }
    )

    # 9. A resumption refused (spec §15.6 acceptor step 1, §15.9).
    out.append(
        {
            "name": "session_resume_refused_unknown_token",
            "description": "A session is granted and the initiator sends m1..m3; the "
            "acceptor's application consumes two. The transport is lost and the acceptor "
            "restarts, forgetting its sessions. The initiator presents its token on a new "
            "transport; the token names no session the acceptor keeps, so the acceptor "
            "answers GOAWAY(SESSION_UNKNOWN, last_stream 0) after its HELLO and processes "
            "none of the initiator's RESUME frames. The initiator has lost the session: stream 1 "
            "fails, reported with the GOAWAY's code and the consumed last reported (2), the "
            "messages known delivered (spec §15.6), not as a stream 'not processed' (§10.4).",
            "settings": {"initiator": {}, "acceptor": acceptor},
            "session": True,
            "tokens": [TOKEN.hex()],
            "steps": [
                step("initiator", [preface, initiator_hello]),
                step("acceptor", [preface, acceptor_hello, session_grant(TOKEN)]),
                step(
                    "initiator",
                    [*opening, (data(1, m[2]), 'DATA stream 1 END_MESSAGE "m3"')],
                    [
                        {"call": "open_stream", "returns": 1},
                        send(1, m[0]),
                        send(1, m[1]),
                        send(1, m[2]),
                    ],
                ),
                step(
                    "acceptor",
                    [first_report],
                    [{"call": "release", "stream_id": 1, "nbytes": 4, "nmessages": 2}],
                ),
                {
                    "transport": "lost",
                    "do": {"initiator": [{"call": "transport_lost", "returns": True}]},
                    "acceptor_restarted": True,
                    "meaning": [
                        "the transport is lost and the acceptor restarts: it keeps no session"
                    ],
                },
                {
                    "transport": "new",
                    "meaning": ["a new transport to the restarted acceptor's fresh connection"],
                },
                step("initiator", reconnect, [{"call": "reconnect"}]),
                step(
                    "acceptor",
                    [
                        preface,
                        acceptor_hello,
                        (
                            control(
                                "GOAWAY",
                                0,
                                {
                                    "last_stream": 0,
                                    "code": CODES["SESSION_UNKNOWN"],
                                    "reason": "no session to resume with that token (spec §15.6)",
                                },
                            ),
                            "GOAWAY last_stream=0 code=SESSION_UNKNOWN",
                        ),
                    ],
                    [{"call": "refuse_resume"}],
                    reason_informative=True,
                ),
            ],
            "expect": {
                "initiator": {
                    "result": "ok",
                    "sessions_granted": [TOKEN.hex()],
                    "credit_granted": [{"stream_id": 1, "bytes": 1028, "messages": 6}],
                    "goaway_received": {"last_stream": 0, "code": "SESSION_UNKNOWN"},
                    # spec §15.6: every stream fails with the consumed last reported (the
                    # CREDIT's 2), not as §10.4's "not processed" for last_stream 0. The
                    # reason is the GOAWAY's informative one: not listed.
                    "stream_resets": [{"stream_id": 1, "code": "SESSION_UNKNOWN", "consumed": 2}],
                    "resumable": False,
                    "session_token": None,
                    "stream_states": {"1": "closed"},
                    "state": "closed",
                },
                "acceptor": {
                    "resumes_requested": [TOKEN.hex()],
                    "state": "closed",
                },
            },
        }
    )
    return out


# --- output -----------------------------------------------------------------------------------


def write(name: str, document: Any) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    (HERE / name).write_text(text, encoding="utf-8")


def main() -> None:
    frames = frame_vectors()
    invalid = invalid_vectors()
    convs = conversations()
    names = [v["name"] for v in frames + invalid + convs]
    assert len(names) == len(set(names)), "vector names must be unique across files"
    write(
        "frames.json",
        {
            "description": "Valid frames and their meaning (spec §4, §5, §13). 'hex' is one "
            "whole frame; 'frame' is what a receiver decodes from it; 'reencoded_hex', when "
            "present, is what a sender produces for that meaning (the canonical encoding of "
            "spec §4.3.1, with every HELLO setting listed as the reference implementation "
            "sends it); otherwise re-encoding gives 'hex' exactly. In a 'body', a msgpack bin "
            "is written {\"bin_hex\": ...}. 'session': true (1.2) marks a frame decoded on a "
            "session transport (spec §15.3); elsewhere its type is unknown (spec §4.4).",
            "preface": {"hex": PREFACE.hex()},
            "vectors": frames,
        },
    )
    write(
        "invalid.json",
        {
            "description": "Input a receiver must reject (spec §13). The receiver is an "
            "acceptor with default settings, or with 'settings' when given. Unless "
            "'before_preface' or 'before_hello' is true, it has already received the peer's "
            "valid preface and HELLO ('peer_hello_hex'); with 'before_hello' only the preface; "
            "with 'before_preface' nothing. 'scope' connection: the receiver sends GOAWAY with "
            "'error' and closes; scope stream: it sends RESET with 'error' on 'stream_id' and "
            "the connection continues. 'header_only': the bytes end before the body of the "
            "offending frame, so the error must be found from its header alone. 'session' "
            "(1.2, spec §15): the receiver implements sessions, and the peer's HELLO is "
            "'peer_session_hello_hex', which asks for one.",
            "peer_preface_hex": PREFACE.hex(),
            "peer_hello_hex": hello().hex(),
            "peer_session_hello_hex": control("HELLO", 0, {**settings(), "session": 1}).hex(),
            "vectors": invalid,
        },
    )
    write(
        "conversations.json",
        {
            "description": "Short conversations between two endpoints built with the given "
            "settings (overrides of the HELLO defaults). Each step is what one side sends; "
            "'do' lists the calls made on that side just before (the preface and HELLO are "
            "sent at construction); a step with 'raw' is sent by a misbehaving peer and is not "
            "what a conforming endpoint would produce. 'reason_informative': the reason text in "
            "that step is the implementation's own wording and is not compared. 'session' "
            "(1.2, spec §13.3, §15): both endpoints use sessions, the acceptor issues the "
            "listed 'tokens' in order, a step with 'transport' loses the transport ('lost', "
            "with the calls that handle it) or starts a new one ('new': the acceptor's side is "
            "a fresh connection until 'adopt'), and 'delivered_bytes' says how much of a step "
            "arrived before its transport was lost.",
            "vectors": convs,
        },
    )


if __name__ == "__main__":
    main()
