"""Message codecs: how application objects become message bytes and back.

Shared by every I/O layer: ``"msgpack"`` (the default: any msgpack-able object) and
``"raw"`` (``bytes`` as they are), or any object with ``encode``/``decode``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

import msgpack

from ._errors import FlowProtoError

__all__ = ["Codec", "CodecName", "MessageDecodeError", "MsgpackCodec", "RawCodec", "get_codec"]

CodecName = Literal["msgpack", "raw"]


class Codec(Protocol):
    """How application objects become message bytes and back."""

    name: str

    def encode(self, message: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class MessageDecodeError(FlowProtoError, ValueError):
    """A received message could not be decoded by the stream's codec.

    The message was consumed (its credit went back); ``data`` holds its raw bytes.
    """

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


class RawCodec:
    name = "raw"

    def encode(self, message: Any) -> bytes:
        if not isinstance(message, (bytes, bytearray, memoryview)):
            raise TypeError(f"raw streams carry bytes, not {type(message).__name__}")
        return bytes(message)

    def decode(self, data: bytes) -> Any:
        return data


class MsgpackCodec:
    name = "msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, message: Any) -> bytes:
        data: bytes = self._packer.pack(message)
        return data

    def decode(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:
            raise MessageDecodeError(f"message is not valid msgpack: {exc}", data) from None


_CODECS: Final[dict[str, Callable[[], Codec]]] = {"raw": RawCodec, "msgpack": MsgpackCodec}


def get_codec(codec: CodecName | Codec) -> Codec:
    """A codec by name (a new instance), or the codec object given."""
    if isinstance(codec, str):
        try:
            return _CODECS[codec]()
        except KeyError:
            raise ValueError(f"unknown codec {codec!r}; use 'msgpack' or 'raw'") from None
    return codec
