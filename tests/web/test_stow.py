"""STOW-RS semantics on real images into a real Engine: status codes (PS3.18 Table 10.5.3-1),
the response dataset (checked by pydicom's DICOM JSON reader), refused parts that must not be
stored, spooled parts, the replica and full-disk cases. Expected UIDs come from pydicom."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomvault.engine import Engine, StoreOutcome
from dicomvault.errors import (
    ConflictError,
    PayloadTooLargeError,
    RequestError,
    StorageFullError,
    UnsupportedMediaTypeError,
)
from dicomvault.replication import state
from dicomvault.web.dicomweb.multipart import (
    Part,
    multipart_content_type,
    multipart_stream,
    new_boundary,
    read_parts,
)
from dicomvault.web.dicomweb.stow import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    SOP_CLASS_MISMATCH,
    STUDY_MISMATCH,
    StowResult,
    check_length,
    check_request_type,
    response_json,
    store_part_stream,
    store_parts,
    store_stream,
)
from dv_corpus import corpus_files

BASE = "http://archive.example/dicom-web"
# One study of four instances (pydicom's SC_rgb family) and single instances of other studies.
SAME_STUDY = [
    "SC_rgb_dcmtk_ebcr_dcmd.dcm",
    "SC_rgb_dcmtk_ebcyn1_dcmd.dcm",
    "SC_rgb_dcmtk_ebcys4_dcmd.dcm",
    "SC_rgb_small_odd.dcm",
]
OTHERS = ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "rtplan.dcm", "emri_small_RLE.dcm", "liver.dcm"]


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    by_name = {p.name: p for p in corpus_files()}
    return {name: by_name[name] for name in [*SAME_STUDY, *OTHERS, "empty_charset_LEI.dcm"]}


def _uids(path: Path) -> tuple[str, str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID


def _part(data: bytes, ctype: str = "application/dicom", index: int = 0) -> Part:
    return Part({"content-type": ctype}, ctype, len(data), data=data, index=index)


def _parts(paths: Iterable[Path]) -> list[Part]:
    return [_part(p.read_bytes(), index=i) for i, p in enumerate(paths)]


def _seq(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return body.get(tag, {}).get("Value", [])


def _referenced(result: StowResult) -> list[tuple[str, str, str]]:
    ds = pydicom.Dataset.from_json(result.body)  # the body must be valid DICOM JSON
    return [
        (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID, item.RetrieveURL)
        for item in ds.get("ReferencedSOPSequence", [])
    ]


def _failed(result: StowResult) -> list[tuple[str, int]]:
    ds = pydicom.Dataset.from_json(result.body)
    return [
        (item.get("ReferencedSOPInstanceUID", ""), item.FailureReason)
        for item in ds.get("FailedSOPSequence", [])
    ]


def test_all_stored_is_200_with_references_and_bit_exact(engine: Engine, files: dict[str, Path]) -> None:
    paths = [files[n] for n in [*SAME_STUDY, *OTHERS]]
    result = store_parts(engine, _parts(paths), None, base_url=BASE + "/")
    assert result.status == 200
    expected = []
    for p in paths:
        study, series, sop, cls = _uids(p)
        expected.append((cls, sop, f"{BASE}/studies/{study}/series/{series}/instances/{sop}"))
        assert engine.read_file(sop) == p.read_bytes()  # durable and bit-exact
    assert _referenced(result) == expected
    assert "00081198" not in result.body  # no FailedSOPSequence when nothing failed
    # several studies: the top-level RetrieveURL is present (Type 2) but empty
    assert result.body["00081190"] == {"vr": "UR"}
    assert pydicom.Dataset.from_json(response_json(result).decode()).RetrieveURL in (None, "")


def test_study_url_and_wrong_study_refused_not_stored(engine: Engine, files: dict[str, Path]) -> None:
    study = _uids(files[SAME_STUDY[0]])[0]
    intruder = files["CT_small.dcm"]
    parts = _parts([files[n] for n in SAME_STUDY[:2]] + [intruder] + [files[SAME_STUDY[2]]])
    result = store_parts(engine, parts, study, base_url=BASE, batch_parts=2)
    assert result.status == 202
    assert result.body["00081190"]["Value"] == [f"{BASE}/studies/{study}"]
    assert [sop for _, sop, _ in _referenced(result)] == [_uids(files[n])[2] for n in SAME_STUDY[:3]]
    intruder_sop = _uids(intruder)[2]
    assert _failed(result) == [(intruder_sop, STUDY_MISMATCH)]
    assert engine.instance(intruder_sop) is None
    assert result.failures == (f"instance {intruder_sop} is of study {_uids(intruder)[0]}, not {study}",)
    assert {r.sop_uid for r in engine.index.instances_of("study", _uids(intruder)[0])} == set()


def test_only_wrong_study_is_409(engine: Engine, files: dict[str, Path]) -> None:
    result = store_parts(
        engine, _parts([files["CT_small.dcm"], files["rtplan.dcm"]]), "1.2.3.4", base_url=BASE
    )
    assert result.status == 409
    assert [reason for _, reason in _failed(result)] == [STUDY_MISMATCH, STUDY_MISMATCH]
    assert "00081199" not in result.body
    assert engine.stats()["objects"] == 0


def test_non_dicom_and_incomplete_parts_fail_alone(engine: Engine, files: dict[str, Path]) -> None:
    good = files["CT_small.dcm"]
    parts = [
        _part(b"this is not DICOM at all" * 10, index=0),
        _part(good.read_bytes(), index=1),
        _part(files["empty_charset_LEI.dcm"].read_bytes(), index=2),  # real file without study UID
        _part(b"%PDF-1.4 ...", "application/pdf", index=3),
        _part(good.read_bytes()[:1500], index=4),  # truncated upload of a real file
    ]
    result = store_parts(engine, parts, None, base_url=BASE)
    assert result.status == 202
    assert [sop for _, sop, _ in _referenced(result)] == [_uids(good)[2]]
    assert sorted(reason for _, reason in _failed(result)) == sorted(
        [CANNOT_UNDERSTAND, SOP_CLASS_MISMATCH, CANNOT_UNDERSTAND, CANNOT_UNDERSTAND]
    )
    assert engine.stats()["objects"] == 1


def test_nothing_dicom_is_415_and_nothing_is_400(engine: Engine) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="application/pdf"):
        store_parts(engine, [_part(b"%PDF", "application/pdf")], None, base_url=BASE)
    with pytest.raises(RequestError, match="no instance"):
        store_parts(engine, [], None, base_url=BASE)


def test_request_type_check() -> None:
    check_request_type('multipart/related; type="application/dicom"; boundary=x')
    check_request_type("multipart/related; boundary=x")  # `type` omitted by some clients
    for bad in ('multipart/related; type="application/dicom+json"; boundary=x', "application/dicom", None):
        with pytest.raises(UnsupportedMediaTypeError):
            check_request_type(bad)


def test_replica_refuses(engine: Engine, files: dict[str, Path]) -> None:
    state.set_role(engine.index, state.REPLICA)
    parts = _parts([files["CT_small.dcm"]])
    with pytest.raises(ConflictError, match="replica"):
        store_parts(engine, parts, None, base_url=BASE)
    assert engine.stats()["objects"] == 0


class _FullAfter:
    """An engine whose disk fills after `room` instances: the batch that crosses it is refused
    as a whole (as the native store does before any record) and later ones per slot."""

    def __init__(self, engine: Engine, room: int) -> None:
        self._engine = engine
        self.room = room
        self.index = engine.index
        self.ensure_writable = engine.ensure_writable

    def store_buffers(self, buffers: Sequence[bytes]) -> list[StoreOutcome | Exception]:
        if self.room <= 0:
            return [StorageFullError("disk full: 0 bytes free") for _ in buffers]
        if len(buffers) > self.room:
            raise StorageFullError("disk full: 12 bytes free")
        self.room -= len(buffers)
        return self._engine.store_buffers(buffers)

    def instance(self, sop: str) -> Any:
        return self._engine.instance(sop)


def test_full_disk_is_a700_never_400(engine: Engine, files: dict[str, Path]) -> None:
    paths = [files[n] for n in SAME_STUDY]
    full = _FullAfter(engine, room=2)
    result = store_parts(full, _parts(paths), None, base_url=BASE, batch_parts=2)  # type: ignore[arg-type]
    assert result.status == 202
    assert [reason for _, reason in _failed(result)] == [OUT_OF_RESOURCES, OUT_OF_RESOURCES]
    assert [sop for _, sop, _ in _referenced(result)] == [_uids(p)[2] for p in paths[:2]]
    # the refused ones are named by their UIDs and were not stored
    assert [sop for sop, _ in _failed(result)] == [_uids(p)[2] for p in paths[2:]]
    assert all(engine.instance(_uids(p)[2]) is None for p in paths[2:])
    result = store_parts(_FullAfter(engine, room=0), _parts(paths[2:]), None, base_url=BASE)  # type: ignore[arg-type]
    # nothing stored because the disk is full: 507 (retry later), not 409 (the data is wrong)
    assert result.status == 507
    assert {reason for _, reason in _failed(result)} == {OUT_OF_RESOURCES}


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_streamed_request_with_spooled_parts(engine: Engine, files: dict[str, Path], tmp_path: Path) -> None:
    """The whole path a route takes: body chunks -> read_parts (big parts spooled) -> store_stream
    in batches, with a wrong-study part checked from its spool file."""
    study = _uids(files[SAME_STUDY[0]])[0]
    names = [*SAME_STUDY, "liver.dcm"]
    boundary = new_boundary()
    body = b"".join(multipart_stream([("application/dicom", files[n].read_bytes()) for n in names], boundary))
    spool = tmp_path / "spool"
    spool.mkdir()

    async def run() -> StowResult:
        parts = read_parts(
            _chunks(body, 10_000),
            multipart_content_type("application/dicom", boundary),
            spool_dir=str(spool),
            max_body=1 << 30,
            memory_part_limit=20_000,  # the SC_rgb files (31 kB) and liver (100 kB) are spooled
        )
        return await store_part_stream(engine, parts, study, base_url=BASE, batch_parts=2)

    result = asyncio.run(run())
    assert result.status == 202
    assert [sop for _, sop, _ in _referenced(result)] == [_uids(files[n])[2] for n in SAME_STUDY]
    assert _failed(result) == [(_uids(files["liver.dcm"])[2], STUDY_MISMATCH)]
    for n in SAME_STUDY:
        assert engine.read_file(_uids(files[n])[2]) == files[n].read_bytes()
    assert list(spool.iterdir()) == []  # every spool file removed once stored or refused


def test_streamed_request_framing_error_propagates_and_cleans(
    engine: Engine, files: dict[str, Path], tmp_path: Path
) -> None:
    boundary = new_boundary()
    body = b"".join(multipart_stream([("application/dicom", files["liver.dcm"].read_bytes())], boundary))
    spool = tmp_path / "spool"
    spool.mkdir()

    def run(data: bytes, content_type: str, max_body: int = 1 << 30) -> StowResult:
        return asyncio.run(
            store_stream(
                engine,
                _chunks(data, 4096),
                content_type,
                study_uid=None,
                base_url=BASE,
                spool_dir=str(spool),
                max_body=max_body,
                memory_part_limit=1000,
            )
        )

    ct = multipart_content_type("application/dicom", boundary)
    with pytest.raises(RequestError, match="closing delimiter"):
        run(body[: len(body) - 30], ct)
    with pytest.raises(PayloadTooLargeError):
        run(body, ct, max_body=50_000)
    with pytest.raises(UnsupportedMediaTypeError):
        run(body, multipart_content_type("application/dicom+json", boundary))
    assert list(spool.iterdir()) == []
    assert engine.stats()["objects"] == 0
    result = run(body, ct)
    assert result.status == 200
    assert (
        pydicom.Dataset.from_json(result.json_bytes().decode())
        .ReferencedSOPSequence[0]
        .ReferencedSOPInstanceUID
        == (_uids(files["liver.dcm"])[2])
    )
    state.set_role(engine.index, state.REPLICA)
    with pytest.raises(ConflictError):
        run(body, ct)


def test_check_length() -> None:
    check_length(None, 10)
    check_length("", 10)
    check_length(10, 10)
    check_length("7", 10)
    with pytest.raises(PayloadTooLargeError, match="11 bytes exceeds the limit of 10"):
        check_length(11, 10)
    with pytest.raises(RequestError, match="not a number"):
        check_length("ten", 10)


def test_spooled_part_with_an_unknown_vr_is_one_failure(engine: Engine, tmp_path: Path) -> None:
    """Found by fuzz/python/targets/stow_store.py: a spooled part of the study the URL names, whose
    SOP Instance UID has a VR pydicom does not know, failed the whole request (NotImplementedError,
    HTTP 500) instead of being that part's failure."""
    regressions = Path(__file__).resolve().parents[2] / "fuzz/python/regressions/stow_store"
    regression = regressions / "crash-137b5d9d9cbf4c76132140c97905d09e0dd0dc72"
    content_type, _, body = regression.read_bytes().partition(b"\n")
    assert body[530:532] == b"\x55\xb7"  # the VR of (0008,0018) in the CT's copy
    spool = tmp_path / "spool"
    spool.mkdir()
    result = asyncio.run(store_stream(
        engine, _chunks(body, 1 + len(body) // 3), content_type.decode("latin-1"),
        study_uid="1.3.6.1.4.1.5962.1.2.1.20040119072730.12322", base_url=BASE, spool_dir=str(spool),
        max_body=1 << 20, memory_part_limit=4096))
    mr = "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"  # the second part: a mutated MR_small
    assert (result.status, _failed(result)) == (409, [("", CANNOT_UNDERSTAND), (mr, CANNOT_UNDERSTAND)])
    assert list(spool.iterdir()) == []


def test_spooled_part_with_a_bad_meta_group_length(engine: Engine, tmp_path: Path) -> None:
    """Found by fuzz/python/targets/stow_store.py: a spooled part whose (0002,0000) value has a
    length no UL can have made pydicom raise BytesLengthException out of the identification, a 500;
    the body is also truncated, which is what the client must hear (400)."""
    regressions = Path(__file__).resolve().parents[2] / "fuzz/python/regressions/stow_store"
    regression = regressions / "crash-7caa9721cb3ff60f18c2483578125c140e2cb4f8"
    content_type, _, body = regression.read_bytes().partition(b"\n")
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(RequestError, match="before its closing delimiter"):
        asyncio.run(store_stream(
            engine, _chunks(body, 1 + len(body) // 3), content_type.decode("latin-1"),
            study_uid="1.3.6.1.4.1.5962.1.2.1.20040119072730.12322", base_url=BASE, spool_dir=str(spool),
            max_body=1 << 20, memory_part_limit=4096))
    assert list(spool.iterdir()) == []
