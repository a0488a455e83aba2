"""The audit trail: who logged in, who shared what and who used the link (`log`)."""

from __future__ import annotations

from .log import AuditLog, build_event

__all__ = ["AuditLog", "build_event"]
