"""Browser sessions: an API token entered once on the login page becomes a cookie.

The cookie holds a random session id; the database holds only its SHA-256, the hash of the
token it was made from and the session's CSRF token. A session is only as good as its
token: looking one up joins the tokens table, so revoking the token (``fleet-server tokens
revoke``) ends every session made from it, on every server. Sessions live in the database,
not in one server's memory, so they survive restarts and work behind several servers.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from fleet_server.auth import Identity, Role
from fleet_server.auth.tokens import hash_token
from fleet_server.db import Database

COOKIE = "fleet_session"
LIFETIME = 12 * 3600.0
"""A working day: then the token is asked for again."""
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class Session:
    identity: Identity
    csrf_token: str
    expires_at: float


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def create(db: Database, token: str, now: float | None = None) -> tuple[str, Session] | None:
    """A new session for a valid token: (the cookie's value, the session); None otherwise."""
    now = time.time() if now is None else now
    session_id = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    token_hash = hash_token(token)
    with db.transaction() as tx:
        row = tx.execute(
            "SELECT name, role FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (token_hash,),
        ).fetchone()
        if row is None:
            return None
        # Expired sessions go whenever someone logs in: no timer needed.
        tx.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,))
        tx.execute(
            "INSERT INTO web_sessions (id_hash, token_hash, csrf_token, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (_id_hash(session_id), token_hash, csrf_token, now, now + LIFETIME),
        )
    identity = Identity(row[0], Role.parse(row[1]))
    return session_id, Session(identity, csrf_token, now + LIFETIME)


def lookup(db: Database, session_id: str, now: float | None = None) -> Session | None:
    """The live session of this cookie value, its token still valid; else None."""
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        return None
    now = time.time() if now is None else now
    with db.transaction(write=False) as tx:
        row = tx.execute(
            "SELECT t.name, t.role, s.csrf_token, s.expires_at FROM web_sessions s "
            "JOIN tokens t ON t.token_hash = s.token_hash "
            "WHERE s.id_hash = ? AND s.expires_at > ? AND t.revoked_at IS NULL",
            (_id_hash(session_id), now),
        ).fetchone()
    if row is None:
        return None
    return Session(Identity(row[0], Role.parse(row[1])), row[2], float(row[3]))


def end(db: Database, session_id: str) -> None:
    with db.transaction() as tx:
        tx.execute("DELETE FROM web_sessions WHERE id_hash = ?", (_id_hash(session_id),))
