"""`[storage] verify_reads`: every read checks what it decoded (storage/read_check.py).

A warm-tier object whose hot stream was damaged and whose CRCs were then made right again (what
no CRC of the stored bytes can see: a decoder fault, memory corruption, a forged stream) is
refused on read in both modes, and the scrub reports it; the other objects read bit-exact. The
same for a cold-tier object (object store, cold codec) whose stream and digests were forged, in
the format written now (its checksum catches it) and in format 3 (no checksum: BLAKE3 does)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from dicomvault import _native
from dicomvault.config import load_config
from dicomvault.engine import Engine
from dicomvault.errors import DicomVaultError
from dicomvault.index import Placement
from dicomvault.storage.settings import SettingsError, TierSpec
from dicomvault.tiering import jobs
from dicomvault.tiering.compactor import Compactor
from dv_corpus import real_file
from seaweed_server import SeaweedServer

TIERS = (TierSpec("landing", "local", "raw", path="landing"), TierSpec("warm", "local", "hot", path="warm"))
FILES = ("CT_small.dcm", "MR_small.dcm", "693_UNCR.dcm")
HEADER = 64  # core/src/store/record.rs


def records(vol: Path) -> dict[bytes, tuple[int, int]]:
    """BLAKE3 -> (payload offset, stored length) of each record of a volume file."""
    raw, out, at = vol.read_bytes(), {}, 0
    while at + HEADER <= len(raw) and raw[at:at + 4] == b"DVR1":
        digest = raw[at + 8:at + 40]
        (stored_len,) = struct.unpack_from("<Q", raw, at + 48)
        out[digest] = (at + HEADER, stored_len)
        at += (HEADER + stored_len + 7) & ~7
    return out


def rewrite(vol: Path, digest: bytes, edit: Callable[[bytearray], None], record_crc: bool = True) -> None:
    """Applies `edit` to the record's payload (a hot stream) in place; with `record_crc`, makes
    the record's CRC right again (else the damage is what bit rot on the disk looks like)."""
    payload_at, n = records(vol)[digest]
    raw = bytearray(vol.read_bytes())
    payload = raw[payload_at:payload_at + n]
    assert payload[:4] == b"DVH\x02", payload[:4]
    edit(payload)
    raw[payload_at:payload_at + n] = payload
    if record_crc:
        head = bytearray(raw[payload_at - HEADER:payload_at - 4])
        head[5] = 0  # the flags byte is outside the checksums
        crc = zlib.crc32(bytes(payload), zlib.crc32(bytes(head)))
        raw[payload_at - 4:payload_at] = struct.pack("<I", crc)
    vol.write_bytes(bytes(raw))


def damage(vol: Path, digest: bytes, where: float) -> None:
    """Flips a byte of the record's hot stream at `where` (0..1 of the sections) and makes the
    stream's CRC and the record's CRC right again."""

    def flip(payload: bytearray) -> None:
        payload[120 + int((len(payload) - 120 - 12) * where)] ^= 0x10
        payload[-4:] = struct.pack("<I", zlib.crc32(payload[:-4]))

    rewrite(vol, digest, flip)


def warm_study(data: Path) -> tuple[list, dict[str, bytes]]:
    """The real files stored and compacted to the warm tier (hot codec): their index records
    and their bytes as read back."""
    paths = [real_file(n) for n in FILES]
    with Engine(data, tiers=TIERS, min_free_bytes=0) as eng:
        assert not [r for r in eng.store_files(paths) if isinstance(r, Exception)]
        assert Compactor(eng, threads=1).run_once().report.blobs == len(paths)
        inst = sorted(eng.index.instances(), key=lambda r: r.sop_uid)
        return inst, {r.sop_uid: eng.read_file(r.sop_uid) for r in inst}


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_damaged_stream_with_right_crcs_is_refused_on_read(tmp_path: Path, where: float) -> None:
    data = tmp_path / "data"
    inst, originals = warm_study(data)
    victim = next(r for r in inst if r.sop_uid in originals and len(originals[r.sop_uid]) > 100_000)
    vol = next(v for v in (data / "blobs" / "warm").glob("vol-*.dat") if victim.hash in records(v))
    damage(vol, victim.hash, where)
    for mode in ("checksum", "hash"):
        with Engine(data, tiers=TIERS, read_only=True, verify_reads=mode) as eng:
            with pytest.raises(DicomVaultError):
                eng.read_file(victim.sop_uid)
            for r in inst:
                if r.sop_uid != victim.sop_uid:
                    assert eng.read_file(r.sop_uid) == originals[r.sop_uid]
    with Engine(data, tiers=TIERS, read_only=True) as eng:
        report = eng.verify()
    assert [h for h, _ in report.damaged] == [victim.hash.hex()]


def test_local_reads_leave_the_stream_crc_to_the_record_crc(tmp_path: Path) -> None:
    """A warm read checks the stored bytes once, with the record CRC: bit rot anywhere in a hot
    stream is refused by it (named in the error), and a stream whose only fault is its own CRC,
    under a right record CRC, reads bit-exact there, while a decode of the same bytes from
    elsewhere (`_native.decode`, as for an object store's copy) still checks that CRC."""
    data = tmp_path / "data"
    inst, originals = warm_study(data)
    vols = list((data / "blobs" / "warm").glob("vol-*.dat"))
    # Damaged once the store is open: at open, the active volume's tail is checked as a
    # possibly torn write and a bad record there dropped, which is not this read-time check.
    with Engine(data, tiers=TIERS, read_only=True) as eng:
        for r, where in zip(inst, (0.0, 0.5, 0.99), strict=True):
            vol = next(v for v in vols if r.hash in records(v))

            def rot(payload: bytearray, where: float = where) -> None:
                payload[int((len(payload) - 1) * where)] ^= 0x04

            rewrite(vol, r.hash, rot, record_crc=False)
            with pytest.raises(DicomVaultError, match="record crc mismatch"):
                eng.read_file(r.sop_uid)

    data = tmp_path / "data2"
    inst, originals = warm_study(data)
    vols = list((data / "blobs" / "warm").glob("vol-*.dat"))
    streams = {}
    for r in inst:
        vol = next(v for v in vols if r.hash in records(v))

        def stale_crc(payload: bytearray) -> None:
            payload[-1] ^= 0x01

        rewrite(vol, r.hash, stale_crc)
        payload_at, n = records(vol)[r.hash]
        streams[r.sop_uid] = vol.read_bytes()[payload_at:payload_at + n]
    for mode in ("checksum", "hash"):
        with Engine(data, tiers=TIERS, read_only=True, verify_reads=mode) as eng:
            for r in inst:
                assert eng.read_file(r.sop_uid) == originals[r.sop_uid]
    for r in inst:
        # logical length: the record header's, 8 bytes at offset 40
        vol = next(v for v in vols if r.hash in records(v))
        payload_at, _ = records(vol)[r.hash]
        (logical_len,) = struct.unpack_from("<Q", vol.read_bytes(), payload_at - HEADER + 40)
        with pytest.raises(DicomVaultError, match="checksum mismatch"):
            _native.decode(1, streams[r.sop_uid], logical_len)


def test_verify_reads_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "dv.toml"
    assert load_config(None).verify_reads == "checksum"
    cfg.write_text('[storage]\nverify_reads = "hash"\nreserve_min = "1MB"\n')
    c = load_config(cfg)
    assert (c.verify_reads, c.reserve.floor) == ("hash", 1_000_000)
    for bad in ('verify_reads = "none"', "verify_reads = 1", 'verify = "hash"'):
        cfg.write_text(f"[storage]\n{bad}\n")
        with pytest.raises(SettingsError, match="verify"):
            load_config(cfg)
    with pytest.raises(DicomVaultError), Engine(tmp_path / "d", verify_reads="sometimes"):
        pass


COLD_FIXED_HEADER = 86  # core/src/codec/cold.rs FIXED_HEADER_V2; its last field: raw-bit stream length
COLD_CHECK = 8  # formats 4 to 6: the XXH3-64 of the logical bytes, before the CRC


def forge_cold(stored: bytes, version: int, flip: int | None = None) -> bytes:
    """A format-4, -5 or -6 cold stream as format `version` (its own, or 3 from format 4: without its
    checksum), with bit `flip` of the second half of its raw-bit stream flipped (the low bits of
    samples: a change that the stream's own checks may not see); its CRC right."""
    assert stored[:3] == b"DVC" and stored[3] in (4, 5, 6), stored[:4]
    assert version in (3, stored[3]), (version, stored[3])
    body = bytearray(stored[:-4 - COLD_CHECK])
    (raw_len,) = struct.unpack_from("<Q", stored, COLD_FIXED_HEADER - 8)
    if flip is not None:
        body[len(body) - raw_len // 2 + flip // 8] ^= 1 << flip % 8
    if version == stored[3]:
        body += stored[-4 - COLD_CHECK:-4]
    else:
        body[3] = version
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def silent_damage(codec: int, stored: bytes, logical_len: int) -> int:
    """The first bit of `forge_cold` whose flip a stream without a checksum decodes, to other
    bytes, without an error."""
    want = _native.decode(codec, stored, logical_len)
    v4 = _native.cold_encode_version(want, 4)
    for flip in range(256):
        try:
            got = _native.decode(codec, forge_cold(v4, 3, flip), logical_len)
        except DicomVaultError:
            continue
        if got != want:
            return flip
    raise AssertionError("no damage that decodes")


@pytest.mark.parametrize(
    ("version", "damaged"), [(6, True), (5, True), (5, False), (4, True), (3, True), (3, False)]
)
def test_a_forged_cold_stream_is_refused_on_read(
    tmp_path: Path, seaweed: SeaweedServer, version: int, damaged: bool
) -> None:
    data = tmp_path / "data"
    cold = TierSpec("cold", "s3", "cold", endpoint=seaweed.endpoint, bucket=f"t-rc-{version}-{damaged:d}",
                    access_key=seaweed.access_key, secret_key=seaweed.secret_key)
    tiers = (*TIERS, cold)
    paths = [real_file(n) for n in FILES]
    with Engine(data, tiers=tiers, min_free_bytes=0) as eng:
        assert not [r for r in eng.store_files(paths) if isinstance(r, Exception)]
        Compactor(eng, threads=1).run_once()
        inst = sorted(eng.index.instances(), key=lambda r: r.sop_uid)
        originals = {r.sop_uid: eng.read_file(r.sop_uid) for r in inst}
        for study in {r.study_uid for r in inst}:
            jobs.move_study(eng, study, "cold")
        victim = max(inst, key=lambda r: len(originals[r.sop_uid]))
        blob = eng.index.blob(victim.hash)
        assert (blob.tier, blob.codec) == ("cold", _native.CODEC_COLD)
        store = eng.remote("cold").store
        pack = bytearray(store.get(blob.pack_key))
        stored = bytes(pack[blob.pack_offset:blob.pack_offset + blob.stored_len])
        assert stored[:4] == b"DVC\x06", stored[:4]
        flip = silent_damage(blob.codec, stored, blob.logical_len) if damaged else None
        if version < 6:
            # As archives written in format 5 or 4 hold it (format 3: forged from 4).
            stored = _native.cold_encode_version(
                _native.decode(blob.codec, stored, blob.logical_len), max(version, 4)
            )
        forged = forge_cold(stored, version, flip)
        # In place of the blob's bytes in its pack, its placement's length and digest made right.
        pack[blob.pack_offset:blob.pack_offset + len(forged)] = forged
        store.put(blob.pack_key, bytes(pack))
        assert eng.index.set_placements([Placement(
            victim.hash, "cold", "cold", blob.codec, len(forged), blob.pack_key, blob.pack_offset,
            _native.blake3(forged),
        )]) == [victim.hash]
    for mode in ("checksum", "hash"):
        with Engine(data, tiers=tiers, read_only=True, verify_reads=mode) as eng:
            if damaged:
                with pytest.raises(DicomVaultError):
                    eng.read_file(victim.sop_uid)
            for r in inst:
                if r.sop_uid != victim.sop_uid or not damaged:
                    assert eng.read_file(r.sop_uid) == originals[r.sop_uid]
