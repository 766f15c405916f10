"""Who may do what: bearer tokens, each with one role (viewer < operator < admin)."""

from fleet_server.auth.tokens import (
    ROLES,
    Identity,
    Role,
    TokenError,
    TokenInfo,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
)

__all__ = [
    "ROLES",
    "Identity",
    "Role",
    "TokenError",
    "TokenInfo",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
]
