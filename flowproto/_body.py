"""Control-frame bodies: one msgpack map each (spec §4.3).

The msgpack options are pinned here, in :func:`pack_body` and :func:`unpack_body`, so our
bytes match ``spec/vectors``; :func:`unpack_body` enforces the structural rules B1-B4 of
spec §4.3.2 (entry count from the map header first, one well-formed object, a map with
str keys and no duplicates, bounded depth, no extension types). What each key must hold
is the frame's business (:mod:`._frames`).
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from ._errors import ErrorCode, RemoteProtocolError

__all__ = ["MAX_BODY_DEPTH", "MAX_MAP_ENTRIES", "pack_body", "unpack_body"]

# spec §4.3.2, §12: a body's map and array sizes and its nesting.
MAX_MAP_ENTRIES: Final = 64
MAX_BODY_DEPTH: Final = 8


def pack_body(body: dict[str, Any]) -> bytes:
    """Encode a control body: a map with str keys, smallest encodings (spec §4.3)."""
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed (spec §4.3.2)")


class _Pairs(list[tuple[Any, Any]]):
    """A decoded msgpack map kept as its pairs, so duplicate keys can be seen (spec §4.3.2)."""


_SCALARS: Final = (int, str, bytes, float, bool, type(None))


def _check_structure(obj: Any, depth: int, frame_name: str) -> Any:
    """Rule B4 of spec §4.3.2 over a decoded value; returns it with maps made dicts."""
    if isinstance(obj, _Pairs):
        if depth > MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:
            raise RemoteProtocolError(
                f"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds a map of more "
                f"than {MAX_MAP_ENTRIES} entries (spec §4.3.2)"
            )
        result: dict[str, Any] = {}
        for key, value in obj:
            if type(key) is not str:
                raise RemoteProtocolError(
                    f"{frame_name} body has a map key of type {type(key).__name__}, not str "
                    "(spec §4.3.2)"
                )
            if key in result:
                raise RemoteProtocolError(
                    f"{frame_name} body repeats the key {key!r} (spec §4.3.2)"
                )
            result[key] = _check_structure(value, depth + 1, frame_name)
        return result
    if isinstance(obj, list):
        if depth > MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:
            raise RemoteProtocolError(
                f"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds an array of more "
                f"than {MAX_MAP_ENTRIES} entries (spec §4.3.2)"
            )
        return [_check_structure(item, depth + 1, frame_name) for item in obj]
    if not isinstance(obj, _SCALARS):  # a timestamp or another extension type
        raise RemoteProtocolError(
            f"{frame_name} body holds a {type(obj).__name__}, which is not allowed (spec §4.3.2)"
        )
    return obj


def _declared_map_entries(body: bytes) -> int | None:
    """The entry count a body's top-level map header declares, if it starts with one."""
    if not body:
        return None
    first = body[0]
    if 0x80 <= first <= 0x8F:  # fixmap
        return first & 0x0F
    if first == 0xDE and len(body) >= 3:  # map 16
        return int.from_bytes(body[1:3], "big")
    if first == 0xDF and len(body) >= 5:  # map 32
        return int.from_bytes(body[1:5], "big")
    return None


def unpack_body(body: bytes, frame_name: str) -> dict[str, Any]:
    """Decode a control body into a dict, or raise ``RemoteProtocolError`` (spec §4.3.2).

    The body has already passed the header-time size check (at most MAX_CONTROL_BODY
    bytes), so msgpack's own length limits (which default to the body's size) bound every
    allocation. Rules B1-B4 are checked in order, B1 from the map header before anything
    is decoded; any msgpack failure becomes PROTOCOL_ERROR, so only flowproto errors escape.
    """
    declared = _declared_map_entries(body)
    if declared is not None and declared > MAX_MAP_ENTRIES:
        # B1 first (spec 1.1 §4.3.2): the entry count from the map header, before the
        # entries are decoded or the body is checked for well-formedness (B3).
        code = ErrorCode.ENHANCE_YOUR_CALM if frame_name == "HELLO" else ErrorCode.PROTOCOL_ERROR
        raise RemoteProtocolError(
            f"{frame_name} body declares {declared} entries, more than {MAX_MAP_ENTRIES} "
            "(spec §4.3.2)",
            code,
        )
    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=False,  # B4 checks keys itself, with its own error
            object_pairs_hook=_Pairs,
            ext_hook=_no_ext,
            timestamp=0,
        )
    except Exception as exc:  # msgpack raises ValueError, FormatError, StackError, ...
        raise RemoteProtocolError(
            f"{frame_name} body is not one valid msgpack object: {exc} (spec §4.3.2)"
        ) from None
    if not isinstance(obj, _Pairs):
        raise RemoteProtocolError(
            f"{frame_name} body must be a msgpack map, got {type(obj).__name__} (spec §4.3.2)"
        )
    if len(obj) > MAX_MAP_ENTRIES:
        code = ErrorCode.ENHANCE_YOUR_CALM if frame_name == "HELLO" else ErrorCode.PROTOCOL_ERROR
        raise RemoteProtocolError(
            f"{frame_name} body has {len(obj)} entries, more than {MAX_MAP_ENTRIES} (spec §4.3.2)",
            code,
        )
    result: dict[str, Any] = _check_structure(obj, 1, frame_name)
    return result
