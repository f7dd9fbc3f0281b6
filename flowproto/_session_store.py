"""An acceptor's sessions, found by token (spec §15.6, §15.9): bounded, hashed, and a
budget of failed resumptions per peer address. Sans-IO: the caller passes ``now``."""

from __future__ import annotations

import hashlib
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
    """An acceptor's sessions, found by token (spec §15.6, §15.9).

    Sessions are looked up by a hash of the token, then the token is compared in
    constant time by the connection (``accepts_token``). At most ``max_sessions`` are
    kept; the I/O layer forgets each (``discard``) when its connection ends, which its
    resume timeout bounds. The I/O layer stores whatever it keeps per session (``S``:
    its connection object, say) with the session's ``Connection``.
    """

    def __init__(self, max_sessions: int = 1024) -> None:
        self.max_sessions = max_sessions
        self._by_hash: dict[bytes, Connection] = {}  # token_key -> its session
        self._sessions: dict[Connection, tuple[S, set[bytes]]] = {}  # -> value, its keys
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
        return len(self._sessions)

    def __contains__(self, conn: object) -> bool:
        return conn in self._sessions

    def add(self, conn: Connection, value: S, token: bytes) -> bool:
        """Register ``token`` of ``conn`` (each :class:`SessionGranted`). False if full.

        Keys of ``conn`` whose tokens it no longer accepts (spent, spec §15.6) go."""
        entry = self._sessions.get(conn)
        if entry is None:
            if len(self._sessions) >= self.max_sessions:
                return False
            entry = (value, set())
            self._sessions[conn] = entry
        keys = entry[1]
        for key in [k for k in keys if not conn.accepts_token_hash(k)]:
            keys.discard(key)
            del self._by_hash[key]
        key = token_key(token)
        keys.add(key)
        self._by_hash[key] = conn
        return True

    def find(self, token: bytes) -> tuple[Connection, S] | None:
        """The session ``token`` resumes now, or None (spec §15.6 step 1)."""
        conn = self._by_hash.get(token_key(token))
        if conn is None or not conn.accepts_token(token):
            return None
        return conn, self._sessions[conn][0]

    def discard(self, conn: Connection) -> None:
        """Forget ``conn`` (its connection ended, or its session expired)."""
        entry = self._sessions.pop(conn, None)
        for key in entry[1] if entry is not None else ():
            del self._by_hash[key]


def token_key(token: bytes) -> bytes:
    """What a store looks a token up by: its SHA-256, never the token itself (§15.9)."""
    return hashlib.sha256(token).digest()
