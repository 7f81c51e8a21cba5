"""Errors of the audit trail's operations (migrations, backups); request paths never see these."""

from __future__ import annotations


class AuditError(RuntimeError):
    """An audit operation failed in a way an operator must act on (message says what to do)."""


class StoreUnavailable(AuditError):
    """PostgreSQL cannot take records now (down, unreachable, not migrated yet): spool and retry."""


class StoreRejected(AuditError):
    """PostgreSQL refused records for what they contain: retrying would fail the same way."""


def reason(exc: BaseException) -> str:
    """What went wrong, never empty: a timeout or a bare OSError has no message of its own."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return str(exc).strip() or type(exc).__name__
