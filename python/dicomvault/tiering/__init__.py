"""Moving blobs between tiers (DESIGN section 4): the background compactor (landing → warm),
crash-safe moves (copy, read back and verify, index switch, free), the policies and the
resumable jobs that apply them, promotion, reclaim, and the `tier` commands. The tiers
themselves and their backends are declared in `storage/`."""
