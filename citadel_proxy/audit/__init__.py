"""The audit trail: every exchange recorded in PostgreSQL (or SQLite, the embedded default), through a
durable spool when the store cannot take it."""

from citadel_proxy.audit.errors import AuditError
from citadel_proxy.audit.records import AuditRecord, new_id
from citadel_proxy.audit.service import open_audit
from citadel_proxy.audit.sink import AuditMetrics, AuditSink
from citadel_proxy.config.schema import AuditOptions

__all__ = ["AuditError", "AuditMetrics", "AuditOptions", "AuditRecord", "AuditSink", "new_id", "open_audit"]
