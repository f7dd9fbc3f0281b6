"""The output queue: frames waiting for ``data_to_send()``, urgent PONGs, DATA framing and
fragments, the BLOCKED reports of spec §8.7, and the bound on replies the peer makes us
queue (spec §10.7). Nothing here decides whether a frame may be sent; it only queues.
"""

from __future__ import annotations

from typing import Final

from ._errors import ErrorCode, RemoteProtocolError
from ._frames import HEADER, PREFACE, BlockedFrame, Flags, Frame, FrameType, HelloFrame, Settings

__all__ = ["Outbound"]

_DATA: Final = int(FrameType.DATA)
_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_END_STREAM: Final = int(Flags.END_STREAM)
_pack_header = HEADER.pack


class _Blocked:
    """A BLOCKED we reported: the limits it named and when it was last sent (spec §8.7)."""

    __slots__ = ("limits", "sent_at")

    def __init__(self, limits: tuple[int, int | None]) -> None:
        self.limits = limits
        self.sent_at: float | None = None  # set by the first repeat_blocked() after it


class Outbound:
    """Bytes queued to send, in order, and the BLOCKED reports still standing.

    ``out`` holds encoded frames (bytes or memoryviews of the application's bytes, which
    cannot change before :meth:`data_to_send` joins them). ``replies`` counts frames
    queued in answer to the peer since the output was last taken (spec §10.7).
    """

    __slots__ = ("blocked", "max_replies", "out", "preface_queued", "replies", "urgent")

    def __init__(
        self, settings: Settings, max_replies: int, hello: HelloFrame | None = None
    ) -> None:
        hello = hello if hello is not None else HelloFrame(settings)
        self.out: list[bytes | memoryview] = [PREFACE, hello.encode()]
        self.urgent: list[bytes] = []  # PONG goes ahead of queued DATA (spec §5.5)
        self.preface_queued = True
        self.replies = 0
        self.max_replies = max_replies
        self.blocked: dict[int, _Blocked] = {}  # stream id (0 = connection) -> last report

    def restart(self, hello: HelloFrame | None) -> None:
        """A new transport (spec §15.4, §15.6): drop everything queued for the old one,
        and queue the preface and ``hello`` if given. The lists are cleared in place: the
        send hot path holds ``out``."""
        self.out.clear()
        self.urgent.clear()
        self.blocked.clear()
        self.replies = 0
        self.preface_queued = hello is not None
        if hello is not None:
            self.out += (PREFACE, hello.encode())

    def data_to_send(self) -> bytes:
        """Everything queued so far, possibly ``b""``; the queue is then empty."""
        out = self._ordered()
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def buffers_to_send(self, max_buffers: int) -> list[bytes | memoryview]:
        """What :meth:`data_to_send` would join, as the pieces themselves when there are
        at most ``max_buffers`` of them (for a vectored write), else joined into one."""
        out = self._ordered()
        if len(out) > max_buffers:
            data: list[bytes | memoryview] = [b"".join(out)]
            out.clear()
            return data
        pieces = out[:]  # ``out`` itself stays: the send hot path holds it
        out.clear()
        return pieces

    def _ordered(self) -> list[bytes | memoryview]:
        # Urgent frames go ahead of queued DATA; the reply count starts again.
        out = self.out
        if self.urgent:
            at = 2 if self.preface_queued else 0  # never ahead of our preface and HELLO
            out[at:at] = self.urgent
            self.urgent.clear()
        if out:
            self.preface_queued = False
            self.replies = 0
        return out

    @property
    def has_data(self) -> bool:
        return bool(self.out or self.urgent)

    def queue(self, frame: Frame) -> None:
        self.out.append(frame.encode())

    def queue_urgent(self, frame: Frame) -> None:
        """Queue ahead of DATA already queued (PONG, spec §5.5)."""
        self.urgent.append(frame.encode())

    # --- the reply bound (spec §10.7) ----------------------------------------------------

    @property
    def too_many_replies(self) -> bool:
        return self.replies > self.max_replies

    def count_reply(self) -> None:
        """One more frame queued because the peer asked; past the bound is a peer error.

        A peer that keeps asking without reading what we send is cut off, never
        buffered for (spec §10.7).
        """
        self.replies += 1
        if self.replies > self.max_replies:
            raise self.reply_error()

    def reply_error(self) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"peer made this side queue more than {self.max_replies} control "
            "frames (PONG, RESET, CREDIT, BLOCKED) that it has not read (spec §10.7)",
            ErrorCode.ENHANCE_YOUR_CALM,
        )

    # --- DATA (spec §5.1, §7) ------------------------------------------------------------

    def message(self, sid: int, payload: bytes, max_frame: int, end_stream: bool) -> None:
        """One whole message: a frame, or fragments when over ``max_frame`` (spec §7.1)."""
        n = len(payload)
        if n <= max_frame:
            flags = _END_MESSAGE | _END_STREAM if end_stream else _END_MESSAGE
            self.out.append(_pack_header(n, _DATA, flags, sid))
            self.out.append(payload)
        else:
            self.fragments(sid, payload, max_frame, end_stream)

    def whole_messages(self, sid: int, payloads: list[bytes], lengths: list[int]) -> None:
        """A run of messages that each fit one frame, queued in one step (the batch path)."""
        frames: list[bytes | memoryview] = [b""] * (2 * len(payloads))
        first = lengths[0]
        if lengths.count(first) == len(lengths):  # one size (common): one header for all
            frames[0::2] = [_pack_header(first, _DATA, _END_MESSAGE, sid)] * len(lengths)
        else:
            frames[0::2] = [_pack_header(n, _DATA, _END_MESSAGE, sid) for n in lengths]
        frames[1::2] = payloads
        self.out += frames

    def fragments(self, sid: int, payload: bytes, max_frame: int, end_stream: bool) -> None:
        # spec §7.1: fragments in order, the last with END_MESSAGE.
        n = len(payload)
        view = memoryview(payload)
        out = self.out
        for start in range(0, n, max_frame):
            chunk = view[start : start + max_frame]
            last = start + max_frame >= n
            flags = (_END_MESSAGE | (_END_STREAM if end_stream else 0)) if last else 0
            out.append(_pack_header(len(chunk), _DATA, flags, sid))
            # bytes cannot change before data_to_send() joins them: no copy needed here
            out.append(chunk if type(payload) is bytes else bytes(chunk))

    def end_stream(self, sid: int) -> None:
        """END_STREAM on an empty DATA frame (spec §7.2)."""
        self.out.append(_pack_header(0, _DATA, _END_STREAM, sid))

    # --- BLOCKED (spec §8.7) -------------------------------------------------------------

    def note_blocked(self, key: int, limits: tuple[int, int | None]) -> None:
        """BLOCKED once per limit value (stream ``key``, 0 = the connection)."""
        entry = self.blocked.get(key)
        if entry is None or entry.limits != limits:
            self.blocked[key] = _Blocked(limits)
            self.out.append(BlockedFrame(key, limits[0], limits[1]).encode())
            self.replies += 1  # spec §10.7: new limits from the peer, a new BLOCKED

    def unblock(self, key: int) -> None:
        """Credit arrived, or we may no longer send: no more BLOCKED for ``key``."""
        self.blocked.pop(key, None)

    def blocked_deadline(self, interval: float) -> float | None:
        """When the next BLOCKED repeat is due; 0.0 for one not yet timed."""
        deadlines = [
            0.0 if entry.sent_at is None else entry.sent_at + interval
            for entry in self.blocked.values()
        ]
        return min(deadlines) if deadlines else None

    def repeat_blocked(self, now: float, interval: float) -> None:
        """Repeat each standing BLOCKED every ``interval`` seconds (spec §8.7)."""
        for key, entry in self.blocked.items():
            if entry.sent_at is None:
                entry.sent_at = now
            elif now >= entry.sent_at + interval:
                entry.sent_at = now
                self.out.append(BlockedFrame(key, entry.limits[0], entry.limits[1]).encode())
