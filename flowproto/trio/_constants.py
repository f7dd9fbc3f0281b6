"""The Trio layer's sizes and timeouts (spec §9-§11)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "CLOSE_LINGER",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_WRITE_TIMEOUT",
    "MAX_SEND_BACKLOG",
    "PACING_HEADROOM",
    "READ_SIZE",
    "WRITE_CHUNK",
    "YIELD_AFTER_BYTES",
]

#: Bytes read from the transport per ``receive_some`` call.
READ_SIZE: Final = 256 * 1024
#: Queued output after which ``send()`` yields so the writer can drain it.
YIELD_AFTER_BYTES: Final = 256 * 1024
#: Seconds a new connection may take to complete the preface and HELLO exchange.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds ``aclose()`` lets open streams finish after GOAWAY before resetting them.
DEFAULT_CLOSE_GRACE: Final = 5.0
#: Seconds a closing side waits for the peer's EOF after flushing its GOAWAY (spec §10.2).
CLOSE_LINGER: Final = 1.0
#: With pacing on, a stream sends at most this many times the peer's ``rate`` (spec §8.10).
PACING_HEADROOM: Final = 1.05
#: Seconds a frame may take to arrive once its first byte has (spec §11).
DEFAULT_FRAME_TIMEOUT: Final = 10.0
#: Seconds one write of at most WRITE_CHUNK bytes may take before the peer counts as gone.
DEFAULT_WRITE_TIMEOUT: Final = 10.0
#: Bytes per ``send_all`` call, so the write timeout measures progress (spec §11).
WRITE_CHUNK: Final = 256 * 1024
#: Queued output past which ``send()`` waits for the writer to take it (spec §10.7.2).
MAX_SEND_BACKLOG: Final = 1024 * 1024
