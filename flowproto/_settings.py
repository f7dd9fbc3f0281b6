"""Settings: what one endpoint accepts from its peer, and their ranges (spec §3.2)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final

from ._errors import ErrorCode, RemoteProtocolError

__all__ = ["MAX_COUNTER", "Settings"]

#: spec §4.3.3: the largest counter or limit on the wire (a u62, so sums cannot overflow).
MAX_COUNTER: Final = (1 << 62) - 1


@dataclass(frozen=True, slots=True)
class Settings:
    """What one endpoint accepts from its peer, sent in HELLO (spec §3.2).

    Every field describes what the *sender of the HELLO* will accept: the peer may send
    ``stream_bytes`` bytes and ``stream_messages`` messages on each new stream before it
    needs CREDIT, ``connection_bytes`` bytes over all streams, and so on.
    """

    stream_bytes: int = 4 * 1024 * 1024
    stream_messages: int = 4096
    connection_bytes: int = 16 * 1024 * 1024
    max_frame_bytes: int = 65536
    max_message_bytes: int = 1024 * 1024
    max_streams: int = 100
    keepalive_ms: int = 30_000

    # spec §3.2: the settings table's ranges; the lower bounds of the windows depend on
    # max_message_bytes (spec §9 R3), so they are checked in problems().
    RANGES: ClassVar[dict[str, tuple[int, int]]] = {
        "stream_bytes": (0, MAX_COUNTER),
        "stream_messages": (1, (1 << 31) - 1),
        "connection_bytes": (0, MAX_COUNTER),
        "max_frame_bytes": (16384, 16 * 1024 * 1024),
        "max_message_bytes": (0, (1 << 32) - 1),
        "max_streams": (0, (1 << 31) - 1),
        "keepalive_ms": (0, 86_400_000),
    }

    def problems(self) -> list[str]:
        """Every way these settings break spec §3.2, as sentences (empty when valid)."""
        found = []
        for name, (low, high) in self.RANGES.items():
            value = getattr(self, name)
            if type(value) is not int:
                found.append(f"{name} must be an integer, got {type(value).__name__}")
            elif not low <= value <= high:
                found.append(f"{name} = {value} is outside {low}..{high}")
        if not found:
            # spec §9 R3: every byte window holds at least one max-size message.
            for name in ("stream_bytes", "connection_bytes"):
                if getattr(self, name) < self.max_message_bytes:
                    found.append(
                        f"{name} = {getattr(self, name)} is smaller than "
                        f"max_message_bytes = {self.max_message_bytes}"
                    )
        return found

    def validate(self) -> Settings:
        """Return self, or raise ``ValueError`` naming every out-of-range setting."""
        found = self.problems()
        if found:
            raise ValueError("invalid flowproto settings: " + "; ".join(found) + " (spec §3.2)")
        return self

    def to_body(self) -> dict[str, Any]:
        """The HELLO body: every setting, in the spec's table order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Settings:
        """Settings from a HELLO body; missing keys take defaults, unknown keys are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in body:
                values[f.name] = body[f.name]
        settings = cls(**values)
        found = settings.problems()
        if found:
            raise RemoteProtocolError(
                "peer's HELLO has invalid settings: " + "; ".join(found) + " (spec §3.2)",
                ErrorCode.SETTINGS_ERROR,
            )
        return settings
