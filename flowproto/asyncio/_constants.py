"""The asyncio layer's sizes and timeouts (spec §9-§11); the values are the Trio layer's."""

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
    "WRITE_CHUNK",
    "YIELD_AFTER_BYTES",
]

#: Bytes ``send()`` queues without letting the event loop run; the next send yields first.
YIELD_AFTER_BYTES: Final = 256 * 1024
#: Seconds a new connection may take to complete TLS, the preface and HELLO exchange.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds ``aclose()`` lets open streams finish after GOAWAY before resetting them.
DEFAULT_CLOSE_GRACE: Final = 5.0
#: Seconds a closing side waits for the peer's EOF after flushing its GOAWAY (spec §10.2).
CLOSE_LINGER: Final = 1.0
#: With pacing on, a stream sends at most this many times the peer's ``rate`` (spec §8.10).
PACING_HEADROOM: Final = 1.05
#: Seconds a frame may take to arrive once its first byte has (spec §11).
DEFAULT_FRAME_TIMEOUT: Final = 10.0
#: Seconds the transport may take to accept each WRITE_CHUNK of what is buffered for it,
#: while it is over its high-water mark, before the peer counts as gone (spec §11).
DEFAULT_WRITE_TIMEOUT: Final = 10.0
#: Bytes of progress the write timeout measures (spec §11).
WRITE_CHUNK: Final = 256 * 1024
#: The transport's write-buffer high-water mark: past it, ``send()`` waits for the
#: transport to drain (``pause_writing``), whatever credit the peer grants (spec §10.7.2).
MAX_SEND_BACKLOG: Final = 1024 * 1024
