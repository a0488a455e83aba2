"""The audit trail: the hash-chained local log (`log`), what DIMSE traffic adds to it (`dimse`),
and its delivery to an audit repository: DICOM audit messages (`atna`) over syslog (`syslog`),
read behind the writers (`tail`) by a sender thread in `serve` (`sender`, configured by
`settings`)."""

from __future__ import annotations

from .log import AuditLog, build_event

__all__ = ["AuditLog", "build_event"]
