"""Returning credit (spec §8.5, §8.6, §10.5): what the application consumed goes back to
the peer as CREDIT, by the replenish policy, and the consumption feeds the tuner (§8.9).

:meth:`CreditReturn.release` is the verb the application calls once it is done with
messages; the connection's credit follows every stream's, and a stream the peer ended
gets its final report once everything on it was consumed.
"""

from __future__ import annotations

from ._frames import CreditFrame
from ._limits import REPORT_INTERVAL
from ._parts import ConnectionParts
from ._state import CONNECTION_CLOSED, RECEIVING_STATES, StreamState
from ._streams import StreamRecord

__all__ = ["CreditReturn"]


class CreditReturn(ConnectionParts):
    """The release verb and the CREDIT it queues."""

    def release(self, stream_id: int, nbytes: int, nmessages: int, now: float) -> bool:
        """The application consumed this much of the stream: credit may go back (spec §8.5).

        Queues CREDIT frames when the replenish policy says so (spec §8.6). Releasing on
        a stream that was reset does nothing: its data was released when it was reset.
        ``now`` is the caller's clock, in seconds: the stream's consumption rate is kept
        from it, and with auto-tuning (or a memory budget) the windows follow it (§8.9).

        Returns:
            True if a CREDIT for the stream was queued: the peer may be waiting for it, so
            send ``data_to_send()`` soon.

        Raises:
            LocalProtocolError: releasing more than was received and not yet released.
        """
        st = self._streams.get(stream_id)
        if st is None:
            return False
        credit = False
        rw = st.recv
        rw.consume(nbytes, nmessages)
        self._conn_recv.consume(nbytes, 0)
        tuner = st.tuner  # spec §8.9: rules 1-7 count each release batch...
        if tuner is not None:
            tuner.on_release(rw, nbytes, nmessages, now, self._rtt_floor)
        else:
            estimator = st.rate  # the consumption rate, for statistics (spec §14)
            estimator.count(nbytes, nmessages)
            if estimator.due(now):
                estimator.fold(now)
        if now >= self._conn_next_tune and (tuner is not None or self.budget is not None):
            self._tune(now)  # ...and rule 8 runs at most once per min_epoch
        if self.state is CONNECTION_CLOSED:
            pass  # spec §10.2: nothing is sent after a connection error
        elif st.state in RECEIVING_STATES:
            # spec §8.6 step 3: by the thresholds, or as a consumption report once
            # REPORT_INTERVAL has passed since the stream's last CREDIT (a funded CREDIT).
            if st.reported_at is None:
                st.reported_at = now
            report = (
                now - st.reported_at >= REPORT_INTERVAL
                and rw.consumed_messages > st.reported_consumed
            )
            update = rw.update(report)
            if update is not None:
                rate, depth = self._feedback(st) if tuner is not None else (None, None)
                self._output.queue(
                    CreditFrame(stream_id, update[0], update[1], rw.consumed_messages, rate, depth)
                )
                st.reported_consumed = rw.consumed_messages
                st.reported_at = now
                self._output.replies += 1  # spec §10.7: CREDIT answers the peer's data
                credit = True
        else:
            self._final_report(st)
        self._update_connection_credit()
        self._maybe_forget(st)
        return credit

    def _final_report(self, st: StreamRecord) -> None:
        # spec §10.5 "Final report": the peer ended the stream and every message was
        # consumed; tell it the final count (limits restated) if it does not know it yet.
        rw = st.recv
        if (
            st.state is StreamState.HALF_CLOSED_REMOTE
            and rw.held_messages == 0
            and rw.consumed_messages > st.reported_consumed
        ):
            self._output.queue(
                CreditFrame(
                    st.id, rw.advertised_bytes, rw.advertised_messages, rw.consumed_messages
                )
            )
            st.reported_consumed = rw.consumed_messages
            self._output.replies += 1  # spec §10.7

    def _update_connection_credit(self) -> None:
        if self.state is CONNECTION_CLOSED:
            return
        update = self._conn_recv.update()
        if update is not None:
            self._output.queue(CreditFrame(0, update[0]))
            self._output.replies += 1  # spec §10.7
