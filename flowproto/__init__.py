"""flowproto: a credit-based flow-control protocol for message streams (sans-IO core).

``import flowproto`` gives the protocol without any I/O: a :class:`Connection` that
turns received bytes into events and queues bytes to send. Trio users import
``flowproto.trio``; the wire contract is ``spec/PROTOCOL.md``.
"""

from ._autotune import (
    FLOOR_MESSAGES,
    Admission,
    AutoTune,
    MemoryBudget,
    RateEstimator,
    RttEstimator,
    WindowInfo,
    WindowReason,
    WindowTuner,
    tuned_floor,
)
from ._codecs import Codec, CodecName, MessageDecodeError, MsgpackCodec, RawCodec, get_codec
from ._connection import Connection, Role
from ._credit import ReceiveWindow, SendCredit
from ._errors import (
    ConnectionClosedError,
    ErrorCode,
    FlowProtoError,
    FrameTimeout,
    KeepaliveTimeout,
    LocalProtocolError,
    PeerTimeout,
    RemoteProtocolError,
    StreamClosedError,
)
from ._events import (
    ConnectionClosed,
    CreditGranted,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    MessagesReceived,
    PeerBlocked,
    PingReceived,
    PongReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from ._frames import (
    HEADER,
    MAGIC,
    MAX_CONTROL_BODY,
    PREFACE,
    VERSION,
    BlockedFrame,
    CreditFrame,
    DataFrame,
    Flags,
    Frame,
    FrameDecoder,
    FrameType,
    GoAwayFrame,
    HelloFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    Settings,
    UnknownFrame,
    pack_body,
)
from ._limits import FRAME_TIMEOUT, MIN_FRAME_RATE, REPORT_INTERVAL, Limits
from ._logs import RateLimitedLog
from ._pacing import Pacer
from ._settings import MAX_COUNTER
from ._state import ConnectionState, StreamState
from ._statistics import ConnectionStatistics, StreamStatistics
from ._streams import StreamRecord

__version__ = "0.1.0"

__all__ = [
    "FLOOR_MESSAGES",
    "FRAME_TIMEOUT",
    "HEADER",
    "MAGIC",
    "MAX_CONTROL_BODY",
    "MAX_COUNTER",
    "MIN_FRAME_RATE",
    "PREFACE",
    "REPORT_INTERVAL",
    "VERSION",
    "Admission",
    "AutoTune",
    "BlockedFrame",
    "Codec",
    "CodecName",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionState",
    "ConnectionStatistics",
    "CreditFrame",
    "CreditGranted",
    "DataFrame",
    "ErrorCode",
    "Event",
    "Flags",
    "FlowProtoError",
    "Frame",
    "FrameDecoder",
    "FrameTimeout",
    "FrameType",
    "GoAwayFrame",
    "GoAwayReceived",
    "HandshakeCompleted",
    "HelloFrame",
    "KeepaliveTimeout",
    "Limits",
    "LocalProtocolError",
    "MemoryBudget",
    "MessageDecodeError",
    "MessagesReceived",
    "MsgpackCodec",
    "Pacer",
    "PeerBlocked",
    "PeerTimeout",
    "PingFrame",
    "PingReceived",
    "PongFrame",
    "PongReceived",
    "RateEstimator",
    "RateLimitedLog",
    "RawCodec",
    "ReceiveWindow",
    "RemoteProtocolError",
    "ResetFrame",
    "Role",
    "RttEstimator",
    "SendCredit",
    "Settings",
    "StreamClosedError",
    "StreamEnded",
    "StreamOpened",
    "StreamRecord",
    "StreamReset",
    "StreamState",
    "StreamStatistics",
    "UnknownFrame",
    "WindowInfo",
    "WindowReason",
    "WindowTuner",
    "get_codec",
    "pack_body",
    "tuned_floor",
]
