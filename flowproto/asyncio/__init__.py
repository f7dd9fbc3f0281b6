"""The asyncio layer: flowproto for asyncio services, native on asyncio.

One :class:`FlowConnection` is the ``asyncio.Protocol`` of one transport (TCP, TLS, a
Unix socket, any connected socket) around one sans-IO :class:`flowproto.Connection`. The
event loop drives it:

- every chunk read goes to the core at once (``data_received``), and the events are
  handed out: messages to their stream's inbox, credit to blocked senders. Nothing there
  waits on the application, so CREDIT and PING are processed while nothing is being
  consumed (spec §9 R2);
- output is written by whoever queued it: a lone message at once, more queued in the same
  turn of the loop in one ``transport.write`` at its end;
  past ``MAX_SEND_BACKLOG`` unwritten bytes the transport pauses the protocol and
  ``send()`` waits (spec §10.7.2); a transport that takes nothing within the write
  allowance loses the connection (spec §11);
- one timer handle follows the core's deadline (keepalive, frame timeouts, BLOCKED
  repeats, spec §8.7, §11).

A :class:`FlowStream` behaves like a channel of messages. ``send()`` waits only for
credit (and for the transport to drain), then queues the whole message in the core
without suspending, so a cancelled ``send()`` queued all of the message or none of it.
``receive()`` waits only while the inbox is empty, then takes the next message and
releases it, which is what returns credit to the sender (spec §8.5), so a cancelled
``receive()`` consumed nothing. The inbox holds at most what we advertised, because the
core rejects anything past it (spec §8.4).

The API mirrors :mod:`flowproto.trio` in asyncio's idioms: ``async with
open_connection(host, port) as conn``, ``server = await serve(handler, port)`` (an
``asyncio.Server``-like :class:`FlowServer`), ``ssl=`` for TLS, :class:`EndOfStream` where
Trio raises ``EndOfChannel``, and a lost connection is a :class:`ConnectionLostError`
(a ``ConnectionError``). ``StreamResetError``, ``StreamLimitError`` and
``HandshakeTimeout`` are the same classes in both layers; codecs and statistics records
are shared too (``flowproto.Codec``, ``flowproto.StreamStatistics``).

Sessions (spec §15) work as in the Trio layer: ``open_connection(..., reconnect=True)`` resumes
a lost transport on a new one, ``serve(..., resume_timeout=60)`` keeps a lost client's
session and hands its new transport over; the streams only wait.

Layout: ``_connection`` (FlowConnection: state, the core's events, the public verbs),
``_protocol`` (its ``asyncio.Protocol`` side: reading, writing, timers, the end),
``_stream`` (FlowStream),
``_link`` (what the two share), ``_resume`` (sessions across transports: losing,
regaining and handing over), ``_open`` (the ``open_*`` functions and the options and
run shared with serving), ``_serve`` (``serve``, ``serve_unix``, :class:`FlowServer`),
``_errors``, ``_admission`` (memory-budget waiting, for opened and served connections).
Sizes and timeouts: :mod:`flowproto.iolayer`.
"""

from __future__ import annotations

from .. import (
    Codec,
    CodecName,
    ConnectionStatistics,
    HandshakeTimeout,
    MessageDecodeError,
    StreamClosedError,
    StreamLimitError,
    StreamResetError,
    StreamStatistics,
)
from ..iolayer import (
    CLOSE_LINGER,
    DEFAULT_CLOSE_GRACE,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    MAX_SEND_BACKLOG,
    PACING_HEADROOM,
    WRITE_CHUNK,
    YIELD_AFTER_BYTES,
)
from ..unix_sockets import DEFAULT_UNIX_MODE
from ._connection import FlowConnection
from ._errors import ConnectionLostError, EndOfStream
from ._open import open_connection, open_flow_connection, open_unix_connection
from ._serve import ConnectionEndCallback, FlowServer, StreamHandler, serve, serve_unix
from ._stream import FlowStream

__all__ = [
    "CLOSE_LINGER",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_UNIX_MODE",
    "DEFAULT_WRITE_TIMEOUT",
    "MAX_SEND_BACKLOG",
    "PACING_HEADROOM",
    "WRITE_CHUNK",
    "YIELD_AFTER_BYTES",
    "Codec",
    "CodecName",
    "ConnectionEndCallback",
    "ConnectionLostError",
    "ConnectionStatistics",
    "EndOfStream",
    "FlowConnection",
    "FlowServer",
    "FlowStream",
    "HandshakeTimeout",
    "MessageDecodeError",
    "StreamClosedError",
    "StreamHandler",
    "StreamLimitError",
    "StreamResetError",
    "StreamStatistics",
    "open_connection",
    "open_flow_connection",
    "open_unix_connection",
    "serve",
    "serve_unix",
]
