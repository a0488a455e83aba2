"""Tiered placement (DESIGN section 4). So far the cold tier's object-store backend: an S3 client
that fails fast (objectstore.py) and packs of many blobs per object read by ranged GETs
(packs.py); tier configuration, policies, the compactor and the migrator jobs build on them."""
