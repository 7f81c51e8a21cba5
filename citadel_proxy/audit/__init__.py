"""The audit trail: every exchange recorded in PostgreSQL, through a durable spool when it is down.

Names are imported on first use (PEP 562): the config schema imports `audit.options`, and an eager
import of the service here would import the config schema back before it exists.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AuditError": "citadel_proxy.audit.errors",
    "AuditRecord": "citadel_proxy.audit.records",
    "new_id": "citadel_proxy.audit.records",
    "AuditOptions": "citadel_proxy.audit.options",
    "open_audit": "citadel_proxy.audit.service",
    "AuditMetrics": "citadel_proxy.audit.sink",
    "AuditSink": "citadel_proxy.audit.sink",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
