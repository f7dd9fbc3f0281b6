"""The numbers the commands' runs share."""

from __future__ import annotations

from typing import Final

#: Generated messages start with the sender's ``time.time_ns()``, 8 bytes big-endian.
TIMESTAMP_BYTES: Final = 8
#: Most messages one unpaced ``send_many`` / ``receive_many`` call handles.
BATCH_MESSAGES: Final = 256
#: Bytes the sender reads from its input per read in ``--lines`` mode.
READ_BLOCK: Final = 1 << 20
#: Seconds a closing connection waits for open streams (only after an error or Ctrl-C:
#: normally every stream has ended by then). Short, so Ctrl-C answers promptly.
CLOSE_GRACE: Final = 0.5
