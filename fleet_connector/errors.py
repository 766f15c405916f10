"""The error codes a requester can see, and the exception that carries one to the reply."""

from __future__ import annotations

import enum
import json


class ErrorCode(enum.StrEnum):
    """Machine-readable reasons a request was not carried out."""

    INVALID_REQUEST = "INVALID_REQUEST"
    """The payload is not what the topic expects (not a manifest, not a list of masks, ...)."""
    ACCESS_DENIED = "ACCESS_DENIED"
    """Ankaios refused the request under the connector's controlInterfaceAccess rules."""
    REJECTED = "REJECTED"
    """Ankaios refused the request for another reason; its message is passed on."""
    TIMEOUT = "TIMEOUT"
    """Ankaios did not answer in time; the request may still take effect."""
    UNAVAILABLE = "UNAVAILABLE"
    """The control interface is not connected (agent restarting, connector shutting down)."""
    BUSY = "BUSY"
    """The connector's request queue is full; retry later."""
    POLICY_DENIED = "POLICY_DENIED"
    """The connector's own policy refused the request before it reached Ankaios."""
    EXPIRED = "EXPIRED"
    """The request's MQTT message expiry passed before it could be carried out."""
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    """A signature is missing where REQUIRE_SIGNED asks for one, or does not hold."""
    NO_JOURNAL = "NO_JOURNAL"
    """Rollback and history need the journal; the connector keeps none (no STATE_DIR)."""
    STORAGE_ERROR = "STORAGE_ERROR"
    """STATE_DIR cannot be written (a full disk, read-only); the change was not carried out."""
    REPLY_TOO_LARGE = "REPLY_TOO_LARGE"
    """The reply would be larger than the broker takes (MAX_MESSAGE_SIZE); ask for less."""
    RENDER_LIMIT = "RENDER_LIMIT"
    """Rendering the templates needs more work or output than the connector allows."""
    INTERNAL = "INTERNAL"
    """A defect in the connector; the message says what happened."""


class StorageError(Exception):
    """The state directory cannot be opened or written (read-only, full, gone)."""


class RequestError(Exception):
    """A request failed in a way the requester is told about."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_json(self) -> str:
        return json.dumps({"error": {"code": str(self.code), "message": self.message}})
