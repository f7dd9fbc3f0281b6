"""Writing to the transport within the write allowance of spec §11.

Spec §11 (1.1) allows a write of n bytes ``write_timeout + n / MIN_FRAME_RATE`` seconds,
counted per ``WRITE_CHUNK`` of the whole: a peer that takes each chunk at least that fast
is never cut off, one that stops reading is, within one chunk's allowance. Both
functions return False when a chunk stalled past its allowance (half a frame may then
be out, so nothing more may be written), and raise what ``trio.SocketStream.send_all``
raises when the transport fails.
"""

from __future__ import annotations

import errno

import trio

from .. import MIN_FRAME_RATE
from ..iolayer import WRITE_CHUNK


async def write_all(transport: trio.abc.Stream, data: bytes | memoryview, timeout: float) -> bool:
    """Any transport: one ``send_all`` per ``WRITE_CHUNK``, each within its allowance."""
    send_all = transport.send_all
    if len(data) <= WRITE_CHUNK:
        with trio.move_on_after(timeout + len(data) / MIN_FRAME_RATE):
            await send_all(data)
            return True
        return False
    view = memoryview(data)
    for start in range(0, len(data), WRITE_CHUNK):
        chunk = view[start : start + WRITE_CHUNK]
        with trio.move_on_after(timeout + len(chunk) / MIN_FRAME_RATE):
            await send_all(chunk)
            continue
        return False
    return True


async def write_socket(
    sock: trio.socket.SocketType, buffers: list[bytes | memoryview], timeout: float
) -> bool:
    """A plain socket, vectored: each ``sendmsg`` takes what the kernel accepts of the
    pieces (no joined copy of large payloads, one scheduler round per call rather than per
    ``WRITE_CHUNK``). The allowance is kept chunk by chunk by moving one deadline: each
    ``WRITE_CHUNK`` of the whole gets ``timeout`` + its size / MIN_FRAME_RATE from when
    the one before it was accepted."""
    total = sum(map(len, buffers))
    pos = 0
    chunk_end = min(total, WRITE_CHUNK)
    try:
        with trio.move_on_after(timeout + chunk_end / MIN_FRAME_RATE) as scope:
            while True:
                if len(buffers) == 1:
                    sent = await sock.send(buffers[0])
                else:
                    sent = await sock.sendmsg(buffers)
                pos += sent
                if pos >= total:
                    return True
                buffers = unsent(buffers, sent)
                if pos >= chunk_end:
                    start = pos - pos % WRITE_CHUNK  # the chunk now being written
                    chunk_end = min(total, start + WRITE_CHUNK)
                    scope.deadline = (
                        trio.current_time() + timeout + (chunk_end - start) / MIN_FRAME_RATE
                    )
    except OSError as exc:  # as trio.SocketStream.send_all reports them
        if exc.errno in (errno.EBADF, errno.ENOTSOCK):
            raise trio.ClosedResourceError("this socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
    return False


def unsent(buffers: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What is left of ``buffers`` after a write took their first ``sent`` bytes."""
    i = 0
    while sent >= len(buffers[i]):
        sent -= len(buffers[i])
        i += 1
    rest = buffers[i:]
    if sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest
