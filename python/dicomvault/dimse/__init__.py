"""DIMSE services (pynetdicom): the SCP behind `dicomvault serve`. Handlers are thin: network in,
engine calls, statuses out; nothing here knows about blob files.

Modules: `server` (AE setup, lifecycle, `serve()`), `store` (C-STORE), `find` (C-FIND),
`retrieve` (C-MOVE / C-GET), `commitment` (Storage Commitment Push Model), `peers` (known AEs),
`common` (statuses, socket tuning). Our pynetdicom associations: `association` (ArchiveAE and the
association subclass, pause fix), `dul` (event-driven DUL), `encoded` (messages we encode),
`transport` (socket), `negotiation_cache`, `fastpath` (native reads); `pynetdicom_private` lists
the pynetdicom internals they rely on.
"""

from .server import DimseServer, serve

__all__ = ["DimseServer", "serve"]
