"""Timed work (spec §8.7, §8.9, §11): keepalive, BLOCKED repeats, round trips and the
connection window's auto-tuning, all on the caller's clock (``now``).
"""

from __future__ import annotations

from ._autotune import (
    WindowReason,
    tuned_floor,
)
from ._errors import FrameTimeout, KeepaliveTimeout, PeerTimeout
from ._frames import (
    MAX_FEEDBACK_RATE,
)
from ._limits import MIN_FRAME_RATE
from ._parts import ConnectionParts
from ._state import (
    CONNECTION_CLOSED,
    CONNECTION_OPEN,
    CONNECTION_RESUMING,
    RECEIVING_STATES,
)
from ._streams import StreamRecord

__all__ = ["ConnectionTimers"]


class ConnectionTimers(ConnectionParts):
    """The connection's timers and its auto-tuning glue."""

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` next has work, on the caller's clock, or ``None``."""
        state = self.state
        if state is CONNECTION_CLOSED:
            self.leave_budget()  # spec §8.9 B1: a closed connection holds no more credit
            return None  # handle_timeout does nothing then: a deadline would spin the caller
        if state is CONNECTION_RESUMING:
            return None  # spec §15.4: no transport, no timers; the I/O layer's deadline
        # The earliest of the deadlines below (called after every read and write: kept lean,
        # so no call for the frame timeout unless a frame has begun).
        frame = deadline = None if self._frame_started is None else self._frame_deadline()
        if self._keepalive_ping is not None:
            ping = self._ping_deadline(frame)
            if deadline is None or ping < deadline:
                deadline = ping
        else:
            keepalive = self.local_settings.keepalive_ms
            if keepalive:
                idle = self._last_rx + keepalive / 1000
                if deadline is None or idle < deadline:
                    deadline = idle
        if self._output.blocked:
            blocked = self._output.blocked_deadline(self.blocked_interval)
            if blocked is not None and (deadline is None or blocked < deadline):
                deadline = blocked
        if self._probe_due():
            probe = self._next_probe
            if deadline is None or probe < deadline:
                deadline = probe
        return deadline

    def handle_timeout(self, now: float) -> None:
        """Do timed work due at ``now``: keepalive PING and its timeout, BLOCKED repeats.

        It also refills the glitch budget (spec §10.7.1) by the time since the last call,
        so call it after each ``receive_data`` as well as at :meth:`next_deadline`.

        Raises:
            KeepaliveTimeout: a keepalive PING went unanswered for ``ping_timeout`` with
                nothing else received; GOAWAY(TIMEOUT) is queued and the connection closed.
                With a resumable session (spec §15.4) the transport is lost instead: the
                state is then RESUMING, and nothing is queued.
        """
        if self.state is CONNECTION_CLOSED:
            self.leave_budget()  # spec §8.9 B1
            return
        if self.state is CONNECTION_RESUMING:
            return  # spec §15.4
        self._glitch_budget.tick(now)  # spec §10.7.1: the glitch budget refills with time
        self._note_receipt(now)
        inbound = self._inbound
        frame = self._frame_deadline()
        if frame is not None and now >= frame:
            length = inbound.partial_frame_length
            exc: PeerTimeout = FrameTimeout(
                f"a {'frame' if length is None else f'{length}-byte frame'} from the peer did "
                f"not arrive whole by {frame - (self._frame_started or 0.0):.1f} s after its "
                "first byte (spec §11)"
            )
            if not self.transport_lost():  # spec §15.4: a session outlives it
                self._fail(exc)
            raise exc
        keepalive = self.local_settings.keepalive_ms / 1000
        # Each test is the same sum as in next_deadline(): ``now - t >= d`` can be false at
        # ``now == t + d`` in floating point, and a timer waking at the deadline would spin.
        if self._keepalive_ping is not None:
            if now >= self._ping_deadline(frame):
                exc = KeepaliveTimeout(
                    f"no frame from the peer for {now - self._last_rx:.1f} s, and no answer to "
                    f"a PING for {self.ping_timeout:.1f} s (spec §11)"
                )
                if not self.transport_lost():  # spec §15.4: a session outlives it
                    self._fail(exc)
                raise exc
        elif keepalive and now >= self._last_rx + keepalive:
            self._keepalive_ping = self.ping(now)
            self._keepalive_sent_at = now
        self._output.repeat_blocked(now, self.blocked_interval)  # spec §8.7
        if self.autotune is not None:
            self._tune_timers(now)

    def leave_budget(self) -> None:
        """Stop counting this connection against its memory budget (spec §8.9 B1).

        Done by itself once the connection is closed and ``handle_timeout`` or
        ``next_deadline`` runs; calling it again does nothing.
        """
        if self.budget is not None:
            self.budget.leave(self._conn_recv)

    def _frame_deadline(self) -> float | None:
        """spec §11 (1.1): first byte + frame_timeout + length / MIN_FRAME_RATE."""
        started = self._frame_started
        if started is None or not self._inbound.buf:
            return None
        length = self._inbound.partial_frame_length or 0
        return started + self.frame_timeout + length / MIN_FRAME_RATE

    def _ping_deadline(self, frame: float | None) -> float:
        """The keepalive PING's deadline; never before a frame in progress's (spec §11)."""
        deadline = self._keepalive_sent_at + self.ping_timeout
        return deadline if frame is None else max(deadline, frame)

    def _feedback(self, st: StreamRecord) -> tuple[int | None, int | None]:
        # spec §8.10: the consumer's smoothed rate and its queue, once a rate is measured.
        tuner = st.tuner
        assert tuner is not None and self.autotune is not None
        if not (tuner.rated and self.autotune.feedback):
            return None, None
        rate = min(int(tuner.rate_messages + 0.5), MAX_FEEDBACK_RATE)
        return rate, st.recv.received_messages - st.recv.consumed_messages

    def _tune(self, now: float) -> None:
        # spec §8.9 rule 8 for the connection, at most once per min_epoch.
        self._consuming = True
        cfg = self.autotune
        self._conn_next_tune = now + (cfg.min_epoch if cfg is not None else 0.0)
        self._tune_connection()

    def _tune_connection(self) -> None:
        # spec §8.9 rule 8: the connection window is what its streams want, within the
        # cap and the budget's fair share (B3), never below the floor.
        ls = self.local_settings
        floor = tuned_floor(ls.max_message_bytes)
        cfg = self.autotune
        if cfg is not None:
            want = sum(
                s.recv.window_bytes for s in self._streams.values() if s.state in RECEIVING_STATES
            )
            cap = cfg.max_window_bytes
        else:
            want = cap = self._budget_demand  # static windows: what the settings asked for
        window = max(floor, min(want, cap))
        reason = WindowReason.CAP if want > cap else None
        budget = self.budget
        if budget is not None:
            budget.set_demand(self._conn_recv, window)
            share = budget.share(self._conn_recv)
            if share < window:
                window, reason = max(floor, share), WindowReason.BUDGET
        rw = self._conn_recv
        if window == rw.window_bytes:
            return
        if reason is None:
            if window == floor:
                reason = WindowReason.FLOOR
            else:
                reason = WindowReason.GROW if window > rw.window_bytes else WindowReason.LATENCY
        rw.set_window(window, rw.window_messages)  # limits never go down (spec §8.2)
        self._conn_reason = reason
        self._conn_changes += 1

    def _probe_due(self) -> bool:
        # spec §8.9: the tuner measures the round trip while streams are open.
        return (
            self.autotune is not None
            and self._probe is None
            and self._consuming
            and bool(self._streams)
            and self.peer_settings is not None
            and self.state is CONNECTION_OPEN
        )

    def _note_receipt(self, now: float) -> None:
        """What arrived at ``now``: whole frames (spec §11 keepalive), a frame begun."""
        inbound = self._inbound
        if not inbound.buf:
            self._frame_started = None
        elif self._frame_started is None or inbound.activity:
            self._frame_started = now  # spec §11: a frame (or the preface) has begun
        if inbound.activity:
            inbound.activity = False
            self._last_rx = now
            self._keepalive_ping = None  # spec §11: any frame shows the peer is alive

    def _tune_timers(self, now: float) -> None:
        cfg = self.autotune
        if cfg is None:
            return
        probe = self._probe
        if probe is not None and probe not in self._pings:
            self._probe = None  # forgotten (spec §11 keeps at most 16 PINGs)
        if self._probe_due() and now >= self._next_probe:
            self._probe = self.ping(now)
            self._next_probe = now + cfg.rtt_probe_interval
