"""Change-feed shipping between sites, DICOM forwarding, catch-up and verification.

Modules: ``wire`` (the byte formats on the wire), ``state`` (durable per-site state in the index
meta column family: feed id, role, cursors), ``feed_api`` (what a site serves to its replicas),
``tracker`` (what the primary knows of each replica), ``client`` (HTTP(S) client of a site),
``puller`` (a replica pulling and applying), ``forward`` (the C-STORE forwarding queue),
``settings`` (the `[replication]` and `[[forward]]` configuration tables), ``commands`` (CLI).
"""

from .client import SiteClient
from .puller import Puller

__all__ = ["Puller", "SiteClient"]
