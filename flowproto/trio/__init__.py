"""The Trio layer: flowproto over any ``trio.abc.Stream``.

One :class:`FlowConnection` wraps one transport (TCP, TLS, a Unix socket, or a memory
stream in tests) and one sans-IO :class:`flowproto.Connection`. Three tasks run it:

- the **reader** feeds every chunk from the transport to the core and hands the events
  out: messages go to their stream's inbox, credit wakes blocked senders. It never
  waits on the application, so CREDIT and PING are processed while nothing is being
  consumed (spec §9 R2);
- the **writer** is the only task that writes to the transport: it sends everything the
  core has queued in one ``send_all``, so no partial frame is ever written and frames
  queued by many senders go out together;
- the **timer** runs the core's keepalive and BLOCKED repeats (spec §8.7, §11).

A :class:`FlowStream` behaves like a Trio channel of messages. ``send()`` waits only
for credit, then queues the whole message in the core without another await, so a
cancelled ``send()`` queued all of the message or none of it. ``receive()`` takes the
next message from the inbox and releases it, which is what returns credit to the
sender (spec §8.5). The inbox holds at most what we advertised, because the core
rejects anything past it (spec §8.4).

Messages are Python objects encoded with msgpack (``codec="msgpack"``, the default) or
raw ``bytes`` (``codec="raw"``), chosen per connection and overridable per stream.

Layout: ``_connection`` (FlowConnection: its state, the core's events, the public
verbs), ``_tasks`` (its reader, writer, timer and idle watch), ``_resume`` (sessions across
lost transports), ``_stream`` (FlowStream), ``_link`` (what a connection shares with its
streams), ``_write``, ``_serve`` (opening and serving), ``_unix``, ``_admission``,
``_errors``, ``_debug``. What both I/O layers share lives outside them: codecs and
statistics records in ``flowproto``, the rest in :mod:`flowproto.iolayer`.
"""

from __future__ import annotations

from .. import Codec, CodecName, ConnectionStatistics, StreamStatistics
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
from ._connection import FlowConnection
from ._constants import READ_SIZE
from ._errors import (
    ConnectionLostError,
    HandshakeTimeout,
    MessageDecodeError,
    StreamLimitError,
    StreamResetError,
)
from ._open import open_connection, open_flow_connection, open_unix_connection
from ._serve import (
    serve,
    serve_connection,
    serve_listeners,
    serve_transports,
    serve_unix,
)
from ._stream import FlowStream
from ._unix import DEFAULT_UNIX_MODE, UnixSocketListener, open_unix_listener

_serve_connection = serve_connection  # the old private name, kept for callers of it

__all__ = [
    "CLOSE_LINGER",
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_UNIX_MODE",
    "DEFAULT_WRITE_TIMEOUT",
    "MAX_SEND_BACKLOG",
    "PACING_HEADROOM",
    "READ_SIZE",
    "WRITE_CHUNK",
    "YIELD_AFTER_BYTES",
    "Codec",
    "CodecName",
    "ConnectionLostError",
    "ConnectionStatistics",
    "FlowConnection",
    "FlowStream",
    "HandshakeTimeout",
    "MessageDecodeError",
    "StreamLimitError",
    "StreamResetError",
    "StreamStatistics",
    "UnixSocketListener",
    "open_connection",
    "open_flow_connection",
    "open_unix_connection",
    "open_unix_listener",
    "serve",
    "serve_connection",
    "serve_listeners",
    "serve_transports",
    "serve_unix",
]
