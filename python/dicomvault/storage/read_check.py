"""How every read checks the bytes it decoded: `[storage] verify_reads` (DESIGN.md section 3.3).

```toml
[storage]
verify_reads = "checksum"   # default; or "hash"
```

- `"checksum"`: a read decodes the stored bytes and checks what they decode to against the
  checksum stored with them: objects compressed with the hot codec (the warm tier) or the cold
  codec (an object-store tier) carry an XXH3-64 of their original bytes, taken by the encoder
  from the bytes it compressed; a raw object (the landing tier) is its original bytes, checked
  by the blob record's CRC-32 on every read. Anything stored without such a checksum (hot
  streams and cold streams written before it existed: hot format 1, cold formats 1-3) is
  checked by BLAKE3 against the object's address, as with `"hash"`.
- `"hash"`: BLAKE3 of the decoded bytes against the object's address on every read.

Why "checksum" is the default: both catch every damaged or wrongly decoded byte, but BLAKE3 of
a 512 KiB CT slice costs ~150 µs on one core and XXH3 ~20: BLAKE3 on every read was a fifth of
the server's CPU in a CT C-GET (bench/RESULTS.md). What BLAKE3 adds is resistance to a forged
collision, and a forger who can rewrite the volumes can rewrite the index too; the BLAKE3 of
every object is still checked where an object is accepted (ingest, replication), whenever it is
compacted or moved between tiers (a decode of the copy written, before the index points at it),
and by `dicomvault verify` (the scrub), which always hashes.
"""

from __future__ import annotations

from .settings import SettingsError

KEYS = frozenset({"verify_reads"})
READ_CHECKS = ("checksum", "hash")
DEFAULT = "checksum"


def parse_verify_reads(table: object, where: str) -> str:
    """`verify_reads` of the `[storage]` table (absent: the default)."""
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: [storage] must be a table")
    value = table.get("verify_reads", DEFAULT)
    if value not in READ_CHECKS:
        allowed = ", ".join(map(repr, READ_CHECKS))
        raise SettingsError(f"{where}.verify_reads: one of {allowed}, got {value!r}")
    return str(value)
