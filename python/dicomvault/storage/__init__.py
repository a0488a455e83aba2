"""Where blobs can live besides the native store's local volumes, and how tiers are declared:
the tier settings and the data directory's stored layout, the S3-compatible object store
client, packs, and the cold tier built on them. The engine reads through these; moving blobs
between tiers (compactor, policies, jobs) is `tiering/`, which sits above the engine."""
