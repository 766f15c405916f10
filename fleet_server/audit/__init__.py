"""The audit trail: append-only, hash-chained, exported per car."""

from fleet_server.audit.chain import AuditEntry, Verification, append, entries, verify

__all__ = ["AuditEntry", "Verification", "append", "entries", "verify"]
