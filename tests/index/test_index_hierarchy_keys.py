"""The hierarchy index keys' last component, read without decoding the others."""

from __future__ import annotations

from dicomvault.index import keys, secondary


def test_sop_from_hierarchy_key_reads_the_last_component() -> None:
    """Instance numbers whose bytes look like a terminator (00 00 00 01) and UIDs with an escaped
    NUL come out right."""
    for number in (0, 1, 256, 0x00010001, 0xFFFFFFFF):
        for sop in ("1.2.840.1", "a\x00b", "x"):
            k = (bytes([0x21]) + keys.encode("1.2.3") + keys.encode("4.5") + number.to_bytes(4, "big")
                 + keys.encode(sop))
            assert secondary.sop_from_hierarchy_key(k) == sop
