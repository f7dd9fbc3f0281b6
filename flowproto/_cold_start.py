"""Cold resume (spec §15.10): a stream we opened starts where its receiver says.

A receiver whose process restarted holds no session, but its application may vouch for a
position on a stream (the bytes it has durably written to a file, say). The opener marks
the CREDIT that opens the stream with ``await_start`` (``Connection.open_stream``) and
sends no DATA on it until the receiver answers: a CREDIT starts it from the beginning
(``_control.py``), a stream RESUME at the position the receiver vouches for
(``Connection.start_stream`` on the receiving side). :func:`cold_start` is the opener's
side of that RESUME: the stream's send counters start at the position, as if those
messages had been sent, received and consumed, and retention counts from there.

The RESUME arrives in one of two ways: on its own, outside an exchange
(``SessionResumption._on_resume``), or, when the transport was lost before it arrived, as
the receiver's RESUME of the stream in its exchange, which states the same position; the
opener then starts the stream from it before reconciling it (``_reconcile.py``).
"""

from __future__ import annotations

from ._events import StreamStarted
from ._frames import ResumeFrame
from ._streams import StreamRecord

__all__ = ["cold_start"]


def cold_start(st: StreamRecord, resume: ResumeFrame) -> StreamStarted:
    """spec §15.10: the receiver starts our stream at the position it vouches for.

    Returns:
        The :class:`StreamStarted` event for the application: where the stream starts.
    """
    messages, nbytes = resume.received
    st.start = None
    send = st.send
    send.sent_messages = messages
    send.sent_bytes = nbytes
    send.grant(*resume.limits)
    st.record_consumed(resume.consumed)
    if st.retained is not None:
        st.retained_base = messages
        st.retained_base_bytes = nbytes
    return StreamStarted(st.id, messages, nbytes)
