"""Disaster recovery: backup, restore, promote, failback, status, scrub-and-heal.

Modules: ``backup`` (consistent backup and restore), ``heal`` (fetch missing or corrupt blobs from
another site), ``failover`` (promote, failback), ``status`` (replica lag = RPO now),
``commands`` (CLI), ``admin`` (the same operations on a running server over HTTP).
"""

from .backup import BackupReport, backup, restore
from .heal import HealReport, heal

__all__ = ["BackupReport", "HealReport", "backup", "heal", "restore"]
