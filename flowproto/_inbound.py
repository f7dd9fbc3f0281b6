"""Bytes in: the preface, frame headers, runs of whole messages, and frames out (spec §3.1, §4).

:class:`Inbound` holds the bytes of a frame whose rest has not arrived and walks each
chunk. Runs of whole messages on open streams (the hot path, spec §8.4) it checks from
their headers against credit from :func:`receive_room` and counts itself, collecting
them into one :class:`MessagesReceived` per stream per chunk (:class:`Received`).
Everything else it hands back, in order, as items for the connection to act on:
:class:`DataHeader` (a DATA header that needs the connection's checks before its body
is buffered, spec §8.4), :class:`DataBody` (a DATA frame off the hot path) or a parsed
control frame. It reads no clock and never calls into the connection; the connection
tells it what changed (``awaiting_hello``, ``stop()``) between items.

:meth:`Inbound.leading_run` is the walk's first step on its own: the run of whole
messages a chunk starts with. The connection calls it first, and when that run is the
whole chunk, as it mostly is with small messages, no walk (no generator, no
:class:`Received`) is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, NamedTuple

from ._credit import ReceiveWindow, receive_room
from ._errors import ErrorCode, RemoteProtocolError
from ._events import Event, MessagesReceived, StreamEnded
from ._frames import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    PREFACE_SIZE,
    STREAM_ID_MASK,
    VERSION,
    Flags,
    Frame,
    FrameType,
    check_header,
    parse_frame,
)
from ._settings import Settings
from ._state import RECEIVING_STATES
from ._streams import StreamRecord

__all__ = ["DataBody", "DataHeader", "Inbound", "Item", "Received"]

_DATA: Final = int(FrameType.DATA)
_HELLO: Final = int(FrameType.HELLO)
_END_MESSAGE: Final = int(Flags.END_MESSAGE)
_END_STREAM: Final = int(Flags.END_STREAM)
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack

_PLACEHOLDER: Final = StreamEnded(0)  # a slot in the event list that flush() fills


class DataHeader(NamedTuple):
    """A DATA header to check before its body is buffered (spec §8.4): over a limit,
    opening or fragmenting a stream, or its frame not yet complete."""

    stream_id: int
    length: int
    flags: int


class DataBody(NamedTuple):
    """A whole DATA frame off the hot path (spec §5.1); a large body is a view of the
    (immutable) read it arrived in (see :data:`VIEW_MIN_BYTES`)."""

    stream_id: int
    flags: int
    body: bytes | memoryview


#: Whole messages of one size in a row from which :meth:`Inbound._whole_messages` checks
#: their headers by columns rather than one by one.
RUN_MIN: Final = 8

#: A DATA body at least this large, and at least a quarter of the read it came in, is
#: handed on as a view of that read rather than copied out of it.
VIEW_MIN_BYTES: Final = 16 * 1024


Item = DataHeader | DataBody | Frame


class _Batch:
    """Messages completed on one stream during one chunk."""

    __slots__ = ("index", "messages", "nbytes")

    def __init__(self, index: int, messages: list[bytes], nbytes: int) -> None:
        self.index = index  # where its MessagesReceived goes in the event list
        self.messages = messages
        self.nbytes = nbytes


class Received:
    """The events of one ``receive_data`` call, with one batch of messages per stream.

    A stream's batch keeps its place in ``events`` (where its first message arrived);
    :meth:`flush` ends it, so later events on that stream come after its messages.
    """

    __slots__ = ("events", "pending")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.pending: dict[int, _Batch] = {}

    def message(self, sid: int, message: bytes) -> None:
        self.messages(sid, [message], len(message))

    def messages(self, sid: int, messages: list[bytes], nbytes: int) -> None:
        """Add ``messages`` (``nbytes`` in all, the list then owned here) to the batch."""
        batch = self.pending.get(sid)
        if batch is None:
            self.pending[sid] = _Batch(len(self.events), messages, nbytes)
            self.events.append(_PLACEHOLDER)  # replaced by flush()
        else:
            batch.messages += messages
            batch.nbytes += nbytes

    def flush(self, sid: int) -> None:
        batch = self.pending.pop(sid, None)
        if batch is not None:
            self.events[batch.index] = MessagesReceived(sid, batch.messages, batch.nbytes)

    def flush_all(self) -> list[Event]:
        if self.pending:
            for sid in list(self.pending):
                self.flush(sid)
        return self.events


class Inbound:
    """The receiving side of the wire: held bytes, the preface, and the frame walk.

    Args:
        streams: the stream table's records (read, and credit counted, on the hot path).
        conn: the connection's receive window (spec §8.4).
        settings: what this side accepts (max_frame_bytes, max_message_bytes).
    """

    __slots__ = (
        "activity",
        "awaiting_hello",
        "buf",
        "conn",
        "hold_data",
        "max_frame",
        "max_message",
        "max_whole",
        "need",
        "paused",
        "preface_done",
        "session",
        "stopped",
        "streams",
    )

    def __init__(
        self, streams: dict[int, StreamRecord], conn: ReceiveWindow, settings: Settings
    ) -> None:
        self.streams = streams
        self.conn = conn
        self.max_frame = settings.max_frame_bytes
        self.max_message = settings.max_message_bytes
        # the largest DATA body that can be a whole message on the hot path (spec §8.4)
        self.max_whole = min(self.max_frame, self.max_message)
        self.buf = bytearray()
        self.need = 0  # bytes buf must reach before parsing can make progress
        self.preface_done = False
        self.awaiting_hello = True  # the connection clears it once HELLO is processed
        # DATA is walked as a frame object, not on the hot path, until HELLO (and, when
        # resuming, the peer's exchange, spec §15.6) is processed: the connection judges it.
        self.hold_data = True
        self.session = False  # a session transport: SESSION and RESUME are frames (§15.3)
        self.stopped = False  # the connection closed: the rest of the chunk is dropped
        self.paused = False  # stopped, but the rest is kept for another connection (§15.6)
        self.activity = True  # whole frames arrived since the connection last looked (§11)

    def stop(self) -> None:
        self.stopped = True

    def pause(self) -> None:
        """Stop walking, but keep every byte after the current frame (spec §15.6)."""
        self.stopped = True
        self.paused = True

    @property
    def partial_frame_length(self) -> int | None:
        """The declared length of the frame partly held, once its header is in (§11)."""
        if self.preface_done and len(self.buf) >= HEADER_SIZE:
            return self.need - HEADER_SIZE
        return None

    @property
    def truncated(self) -> bool:
        """Bytes held of a preface or frame whose rest never came."""
        return bool(self.buf)

    def chunks(self, data: bytes) -> Iterator[tuple[bytes, int]]:
        """The byte strings to walk for a new chunk, each with where to start.

        A frame cut by the end of the last chunk is completed alone and the rest of this
        chunk walked in place, so each byte is copied once, into its message.
        """
        buf = self.buf
        if not buf:
            yield data, 0
            return
        if self.preface_done and len(buf) >= HEADER_SIZE:
            start = self.need - len(buf)
            if len(data) < start:
                buf += data
                return
            head = b"".join((buf, memoryview(data)[:start]))
            buf.clear()
            yield head, 0
            yield data, start
            return
        buf += data
        if len(buf) < self.need and self.preface_done:
            return
        joined = bytes(buf)
        buf.clear()
        yield joined, 0

    def preface(self, data: bytes, pos: int) -> int:
        """Check the preface (spec §3.1, §3.3); returns where frames start, or holds it."""
        # spec §3.1: check the magic byte by byte as it arrives.
        data = data[pos:]
        have = len(data)
        if data[: len(MAGIC)] != MAGIC[:have]:
            raise RemoteProtocolError(
                f"the peer did not send the flowproto preface (got {bytes(data[: len(MAGIC)])!r}) "
                "(spec §3.1)"
            )
        if have < PREFACE_SIZE:
            self.buf += data
            self.need = PREFACE_SIZE
            return -1
        version = int.from_bytes(data[len(MAGIC) : PREFACE_SIZE], "big")
        if version != VERSION:
            raise RemoteProtocolError(
                f"the peer speaks flowproto version {version}; this endpoint speaks version "
                f"{VERSION} (spec §3.3)",
                ErrorCode.VERSION_MISMATCH,
            )
        self.preface_done = True
        return pos + PREFACE_SIZE

    def walk(self, data: bytes, pos: int, rx: Received) -> Iterator[Item]:
        """Process the whole frames of ``data`` from ``pos``; keep the rest for later.

        Whole messages on the hot path go into ``rx``; every other frame is yielded, and
        the connection acts on it before the walk goes on.
        """
        n = len(data)
        max_frame = self.max_frame
        while n - pos >= HEADER_SIZE:
            length, ftype, flags, sid = _unpack_header(data, pos)
            end = pos + HEADER_SIZE + length
            if ftype == _DATA and not self.hold_data:
                sid &= STREAM_ID_MASK
                st = self._whole_message_stream(length, flags, sid)
                if st is not None:
                    taken, messages, nbytes = self._whole_messages(data, pos, length, st)
                    if taken > pos:  # the hot path
                        rx.messages(sid, messages, nbytes)
                        pos = taken
                        continue
                    if taken == pos:
                        break  # its body has not all arrived
                    yield DataHeader(sid, length, flags)  # raises, or resets the stream
                elif end > n:
                    # Opening, fragmenting, ending or closed: the connection decides,
                    # from the header now and from the body once it is here.
                    yield DataHeader(sid, length, flags)
                    break
                if end > n:
                    break
                if length >= VIEW_MIN_BYTES and 4 * length >= n:
                    # A large body (a fragment, mostly) stays a view of the read until its
                    # message is joined: one copy instead of two. Only when it is at least
                    # a quarter of that read, so views pin at most 4x the bytes they hold.
                    body: bytes | memoryview = memoryview(data)[pos + HEADER_SIZE : end]
                else:
                    body = data[pos + HEADER_SIZE : end]
                yield DataBody(sid, flags, body)
                pos = end
                continue
            sid &= STREAM_ID_MASK
            if (ftype == _HELLO) != self.awaiting_hello:
                # spec §4.2 H1, §3.4: decided from the header, before its size (H2).
                raise RemoteProtocolError(
                    "a second HELLO (spec §3.4)"
                    if ftype == _HELLO
                    else f"the first frame after the preface must be HELLO, got type {ftype} "
                    "(spec §3.4)"
                )
            check_header(length, ftype, sid, max_frame, self.session)
            if end > n:
                break
            frame = parse_frame(ftype, flags, sid, data[pos + HEADER_SIZE : end], self.session)
            pos = end
            yield frame
            if self.stopped:
                break
        self._keep(data, n if self.stopped and not self.paused else pos)

    def leading_run(self, data: bytes) -> tuple[int, list[bytes], int, int] | None:
        """The walk's first step, for a chunk that starts with a frame (nothing held).

        If the chunk starts with a whole message on the hot path, takes it and the run
        that follows on its stream as :meth:`walk` would (the same methods, the same
        checks, spec §8.4) and returns (stream id, messages, their bytes, where the walk
        goes on); the connection skips the walk when that is the chunk's end, as it
        mostly is. Otherwise returns None, having taken nothing: the walk decides.
        """
        if (
            self.buf
            or self.hold_data
            or self.stopped
            or not self.preface_done
            or len(data) < HEADER_SIZE
        ):
            return None
        length, ftype, flags, sid = _unpack_header(data, 0)
        if ftype != _DATA or HEADER_SIZE + length > len(data):
            return None  # not DATA, or not all here yet: the walk holds it
        sid &= STREAM_ID_MASK
        st = self._whole_message_stream(length, flags, sid)
        if st is None:
            return None
        taken, messages, nbytes = self._whole_messages(data, 0, length, st)
        if taken <= 0:
            return None  # over a limit (-1): the walk sees it again, and acts on it
        if taken == len(data):
            self._keep(data, taken)  # nothing to keep; whole frames arrived (§11)
        return sid, messages, nbytes, taken

    def _whole_message_stream(self, length: int, flags: int, sid: int) -> StreamRecord | None:
        """The stream of a DATA frame that is a whole message on the hot path, or None.

        Its header is checked first (spec §4.2, §4.5); the hot path is a stream that is
        receiving, with no message in part, and a frame with END_MESSAGE alone.
        """
        if length > self.max_frame or not sid:
            check_header(length, _DATA, sid, self.max_frame)
        st = self.streams.get(sid)
        if (
            st is not None
            and st.partial is None
            and st.state in RECEIVING_STATES
            and flags & (_END_MESSAGE | _END_STREAM) == _END_MESSAGE
        ):
            return st
        return None

    def _whole_messages(
        self, data: bytes, pos: int, length: int, st: StreamRecord
    ) -> tuple[int, list[bytes], int]:
        """Take the whole message at ``pos`` and the run of them that follows on its stream.

        Returns where the walk goes on, the messages taken and their bytes; where is
        ``pos`` itself if the frame is not complete yet, ``-1`` if the frame is over the
        stream's room or max_message_bytes, for the connection to decide (spec §7.3,
        §8.4); nothing is taken then. Past the connection's room it raises.
        """
        n = len(data)
        end = pos + HEADER_SIZE + length
        rw = st.recv
        conn = self.conn
        room_bytes, room_messages = receive_room(rw, conn)  # spec §8.4
        if length > room_bytes or not room_messages or length > self.max_message:
            if (
                rw.received_bytes + length <= rw.advertised_bytes
                and room_messages
                and length <= self.max_message
            ):
                conn.receive(length, 0, "the connection")  # short there only: raises
            return -1, [], 0
        if end > n:
            return pos, [], 0
        sid = st.id
        messages = [data[pos + HEADER_SIZE : end]]
        pos = end
        # The frames that follow, while each is a whole message on the same stream: the
        # same checks, against the room counted down here (spec §8.4).
        max_whole = self.max_whole
        nbytes = length
        count = 1
        if length and n - pos >= RUN_MIN * (HEADER_SIZE + length) and length <= max_whole:
            # A run of frames like this one (same stream, size and flags; common with
            # fixed-size records) is checked by columns: each of the header's bytes,
            # across the run, in one comparison. The same rules as the loop below.
            stride = HEADER_SIZE + length
            k = min((n - pos) // stride, room_messages - 1, (room_bytes - length) // length)
            if k >= RUN_MIN:
                header = data[pos - stride : pos - length]  # the first message's
                stop = pos + k * stride
                if header == _pack_header(length, _DATA, _END_MESSAGE, sid) and all(
                    data[pos + j : stop : stride] == header[j : j + 1] * k
                    for j in range(HEADER_SIZE)
                ):
                    body = range(pos + HEADER_SIZE, stop, stride)
                    messages += [data[p : p + length] for p in body]
                    nbytes += k * length
                    count += k
                    pos = stop
        while n - pos >= HEADER_SIZE and count < room_messages:
            length, ftype, flags, next_sid = _unpack_header(data, pos)
            end = pos + HEADER_SIZE + length
            if (
                next_sid != sid
                or ftype != _DATA
                or flags != _END_MESSAGE
                or end > n
                or length > max_whole
                or nbytes + length > room_bytes
            ):
                break  # walk() takes it from here
            messages.append(data[pos + HEADER_SIZE : end])
            nbytes += length
            count += 1
            pos = end
        rw.take(nbytes, count)
        conn.take(nbytes, 0)
        return pos, messages, nbytes

    def _keep(self, data: bytes, pos: int) -> None:
        """Hold the bytes of ``data`` from ``pos`` until the rest of their frame comes."""
        n = len(data)
        if pos < n:
            self.buf += memoryview(data)[pos:]
            if n - pos >= HEADER_SIZE:
                self.need = HEADER_SIZE + _unpack_header(data, pos)[0]
            else:
                self.need = HEADER_SIZE
        else:
            self.need = 0
        if pos:
            self.activity = True  # spec §11: only whole frames count as activity
