"""An acceptor's sessions, found by token (spec §15.6, §15.9): bounded, hashed, and a
budget of failed resumptions per peer address. Sans-IO: the caller passes ``now``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "FAILED_RESUME_WINDOW",
    "MAX_FAILED_RESUMES",
    "MAX_FAILING_PEERS",
    "SessionStore",
    "token_key",
]

#: spec §12, §15.9: failed resumptions a peer address may make per window before it is
#: answered ENHANCE_YOUR_CALM without a lookup; the window, in seconds.
MAX_FAILED_RESUMES: Final = 10
FAILED_RESUME_WINDOW: Final = 60.0
#: Peer addresses whose failures a store remembers at once (the oldest goes first).
MAX_FAILING_PEERS: Final = 1024


S = TypeVar("S")


class SessionStore(Generic[S]):
    """An acceptor's sessions without a transport, found by token (spec §15.6, §15.9).

    Sessions are looked up by a hash of the token, then the token is compared in
    constant time by the connection (``accepts_token``). At most ``max_sessions`` are
    kept; each is forgotten at its deadline. The I/O layer stores whatever it keeps per
    session (``S``: its connection object, say) with the session's ``Connection``.
    """

    def __init__(self, max_sessions: int = 1024) -> None:
        self.max_sessions = max_sessions
        self._by_hash: dict[bytes, tuple[Connection, S]] = {}
        self._deadline: dict[int, float] = {}  # id(connection) -> when it is forgotten
        # spec §15.9: failed resumptions by peer address: (window start, count)
        self._failures: dict[str, tuple[float, int]] = {}

    def over_budget(self, peer: str, now: float) -> bool:
        """Whether ``peer`` made MAX_FAILED_RESUMES failed resumptions within the window
        (spec §15.9): answer it ENHANCE_YOUR_CALM, without looking its token up."""
        entry = self._failures.get(peer)
        return (
            entry is not None
            and now - entry[0] < FAILED_RESUME_WINDOW
            and entry[1] >= MAX_FAILED_RESUMES
        )

    def failed(self, peer: str, now: float) -> None:
        """Count a resumption from ``peer`` that named no session (spec §15.9)."""
        start, count = self._failures.pop(peer, (now, 0))
        if now - start >= FAILED_RESUME_WINDOW:
            start, count = now, 0
        self._failures[peer] = (start, count + 1)  # re-inserted: the newest
        while len(self._failures) > MAX_FAILING_PEERS:
            del self._failures[next(iter(self._failures))]  # bounded: the oldest goes

    def __len__(self) -> int:
        return len({id(c) for c, _ in self._by_hash.values()})

    def add(self, conn: Connection, value: S, token: bytes) -> bool:
        """Register ``token`` of ``conn`` (each :class:`SessionGranted`). False if full."""
        if conn not in self and len(self) >= self.max_sessions:
            return False
        for key, (other, _) in list(self._by_hash.items()):
            if other is conn and not other.accepts_token_hash(key):
                del self._by_hash[key]
        self._by_hash[token_key(token)] = (conn, value)
        return True

    def __contains__(self, conn: object) -> bool:
        return any(c is conn for c, _ in self._by_hash.values())

    def find(self, token: bytes) -> tuple[Connection, S] | None:
        """The session ``token`` resumes now, or None (spec §15.6 step 1)."""
        entry = self._by_hash.get(token_key(token))
        if entry is None or not entry[0].accepts_token(token):
            return None
        return entry

    def lost(self, conn: Connection, deadline: float) -> None:
        """``conn``'s transport is gone: forget it at ``deadline`` unless resumed."""
        self._deadline[id(conn)] = deadline

    def resumed(self, conn: Connection) -> None:
        """``conn`` has a transport again: no deadline."""
        self._deadline.pop(id(conn), None)

    def discard(self, conn: Connection) -> None:
        """Forget ``conn`` (closed, or expired)."""
        for key, (other, _) in list(self._by_hash.items()):
            if other is conn:
                del self._by_hash[key]
        self._deadline.pop(id(conn), None)

    def next_deadline(self) -> float | None:
        return min(self._deadline.values(), default=None)

    def expire(self, now: float) -> Iterator[tuple[Connection, S]]:
        """Forget, and yield, every session whose deadline has passed."""
        due = {key for key, deadline in self._deadline.items() if deadline <= now}
        if not due:
            return
        for conn, value in list({id(c): (c, v) for c, v in self._by_hash.values()}.values()):
            if id(conn) in due:
                self.discard(conn)
                yield conn, value


def token_key(token: bytes) -> bytes:
    """What a store looks a token up by: its SHA-256, never the token itself (§15.9)."""
    return hashlib.sha256(token).digest()
