"""Bearer tokens: random, shown once, stored only as their SHA-256.

A token is ``fst_`` and 32 random bytes in URL-safe base64; SHA-256 (no salt, no slow hash)
is enough for 256 random bits and lets a lookup be one indexed query. Names identify tokens
to people (``tokens list``, ``revoke``) and are the actor in the audit trail.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fleet_server.db import Database
from fleet_server.db.database import Transaction

PREFIX = "fst_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# Longer bearer values are refused before hashing: nothing we issue is near this.
MAX_TOKEN_LENGTH = 256


class Role(enum.IntEnum):
    """Each role may do what the ones below it may."""

    VIEWER = 1
    """reads the inventory, the audit trail"""
    OPERATOR = 2
    """also sends requests to cars, changes labels, runs rollouts"""
    ADMIN = 3
    """also manages tokens"""

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise TokenError(f"unknown role {text!r}: viewer, operator or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


ROLES = tuple(r.label for r in Role)


class TokenError(Exception):
    """A token cannot be created or revoked as asked; the message is one line."""


@dataclass(frozen=True)
class Identity:
    """Who sent an API request."""

    name: str
    role: Role

    def allows(self, needed: Role) -> bool:
        return self.role >= needed


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: Role
    created_at: str
    revoked_at: str | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TokenError(
            f"invalid token name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def create_token(tx: Transaction, name: str, role: Role) -> str:
    """A new token for ``name``; the only time its value is known. A revoked name may be reused."""
    check_name(name)
    token = PREFIX + secrets.token_urlsafe(32)
    row = tx.execute("SELECT revoked_at FROM tokens WHERE name = ?", (name,)).fetchone()
    if row is not None and row[0] is None:
        raise TokenError(f"a token named {name!r} exists; revoke it first")
    now = _now()
    tx.execute("DELETE FROM tokens WHERE name = ?", (name,))
    tx.execute(
        "INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
        (name, role.label, hash_token(token), now),
    )
    return token


def revoke_token(tx: Transaction, name: str) -> None:
    row = tx.execute("SELECT revoked_at FROM tokens WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise TokenError(f"no token named {name!r}")
    if row[0] is not None:
        raise TokenError(f"the token {name!r} was revoked at {row[0]}")
    tx.execute("UPDATE tokens SET revoked_at = ? WHERE name = ?", (_now(), name))


def list_tokens(db: Database) -> list[TokenInfo]:
    with db.transaction(write=False) as tx:
        rows = tx.execute(
            "SELECT name, role, created_at, revoked_at FROM tokens ORDER BY name"
        ).fetchall()
    return [TokenInfo(r[0], Role.parse(r[1]), r[2], r[3]) for r in rows]


def authenticate(db: Database, token: str) -> Identity | None:
    """The identity of a token that exists and is not revoked; else None."""
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    with db.transaction(write=False) as tx:
        row = tx.execute(
            "SELECT name, role FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (hash_token(token),),
        ).fetchone()
    if row is None:
        return None
    return Identity(row[0], Role.parse(row[1]))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
