"""The analysis results through the real app (uvicorn on a socket, httpx): the two read routes
with their agreed JSON shapes, and the flags as QIDO-RS attributes of our own (the private block
of group 0099, the severity filter, flagged=true|false, orderby=flag with paging), read back by
pydicom's DICOM JSON reader; a share link reads its study's analysis and no trends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from dv_analysis import Study, analysed_study, result
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomvault.analysis import results
from dicomvault.analysis.api import INFO, URGENT, WARNING, Flag, Result
from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions
from dicomvault.web.dicomweb import qido, qido_flags

# key -> (patient, date, highest severity or None); C and A are the same patient's
PLAN = {
    "A": ("PX", "20240110", URGENT),
    "B": ("PB", "20240301", WARNING),
    "C": ("PX", "20240401", None),
    "D": ("PD", "20230101", INFO),
    "E": ("PE", "20220101", None),
}


def _bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def studies() -> dict[str, Study]:
    return {k: analysed_study(patient_id=pid, patient_name=f"Pat^{k}", study_date=date, with_objects=k == "A")
            for k, (pid, date, _) in PLAN.items()}


@pytest.fixture
def site(tmp_path: Path, studies: dict[str, Study]) -> Iterator[Site]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        for s in studies.values():
            outcomes = eng.store_buffers([_bytes(x) for x in s.objects()])
            assert not any(isinstance(o, Exception) for o in outcomes)
        for k, s in studies.items():
            severity = PLAN[k][2]
            flags = [(f"test.{k}", severity, f"study {k} needs a look")] if severity else []
            if k == "A":  # two analyzers: the lower severity must not hide the higher one
                flags.append(("test.minor", INFO, "a minor remark"))
            results.record(eng.index, study_uid=s.study_uid, patient_id=s.patient_id, study_date=s.study_date,
                           result=result("ct-chest", s.ct_series, volume=2.0 + len(k), emphysema=5.0,
                                         flags=flags), stored=s.stored())
        s = Site(eng, SiteOptions(port=0))
        s.start()
        try:
            yield s
        finally:
            s.stop()


def _uids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["0020000D"]["Value"][0] for r in rows]


def _search(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = http.get("/dicom-web/studies", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_study_analysis_route(http: httpx.Client, studies: dict[str, Study]) -> None:
    a = studies["A"]
    r = http.get(f"/api/studies/{a.study_uid}/analysis")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["study_uid"] == a.study_uid
    assert [(f["severity"], f["reason"]) for f in out["flags"]] == [(URGENT, "study A needs a look"),
                                                                   (INFO, "a minor remark")]
    assert {(m["key"], m["value"], m["unit"], m["series_uid"]) for m in out["measurements"]} == {
        ("block_volume", 3.0, "mL", a.ct_series), ("emphysema_index", 5.0, "%", a.ct_series)}
    objects = sorted((o["sop_uid"], o["series_uid"], o["sop_class_uid"]) for o in out["objects"])
    assert objects == sorted(a.stored())
    # a study without results: empty lists; an unknown one: 404 naming it
    out = http.get(f"/api/studies/{studies['C'].study_uid}/analysis").json()
    assert out["flags"] == [] and out["measurements"] != []
    r = http.get("/api/studies/1.2.3.4.5/analysis")
    assert r.status_code == 404 and "1.2.3.4.5" in r.text


def test_patient_trends_route(http: httpx.Client, studies: dict[str, Study]) -> None:
    r = http.get("/api/patients/PX/trends")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["patient_id"] == "PX"
    vol = next(t for t in out["trends"] if t["key"] == "block_volume")
    assert [(p["study_date"], p["value"], p["study_uid"]) for p in vol["points"]] == [
        ("20240110", 3.0, studies["A"].study_uid), ("20240401", 3.0, studies["C"].study_uid)]
    assert vol["change"] == {"absolute": 0.0, "relative": 0.0, "since": "20240110"}
    assert http.get("/api/patients/PB/trends").json()["trends"][0]["change"] is None
    r = http.get("/api/patients/NOBODY/trends")
    assert r.status_code == 404 and "NOBODY" in r.text


def test_qido_rows_carry_the_flag_block(http: httpx.Client, studies: dict[str, Study]) -> None:
    rows = {r["0020000D"]["Value"][0]: r for r in _search(http)}
    a = rows[studies["A"].study_uid]
    assert a["00990010"] == {"vr": "LO", "Value": ["DICOMVAULT ANALYSIS"]}
    assert a["00991001"] == {"vr": "CS", "Value": ["URGENT"]}
    assert a["00991002"]["Value"] == ["study A needs a look", "a minor remark"]
    assert a["00991003"]["Value"] == ["test.A", "test.minor"]
    assert list(a) == sorted(a)  # still in tag order
    assert "00991001" not in rows[studies["C"].study_uid]
    # pydicom reads the block as the private creator's elements
    ds = Dataset.from_json(a)
    assert ds.private_block(0x0099, "DICOMVAULT ANALYSIS")[0x01].value == "URGENT"
    # asked for: present, and empty where nothing was flagged
    rows = {r["0020000D"]["Value"][0]: r for r in _search(http, includefield="00991001")}
    assert rows[studies["C"].study_uid]["00991001"] == {"vr": "CS"}


@pytest.fixture(params=[64, 1], ids=["chunk64", "chunk1"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Flagged studies are loaded a chunk at a time: also one by one, so pages and day
    boundaries fall inside and across chunks."""
    monkeypatch.setattr(qido_flags, "CHUNK", request.param)
    return request.param


def test_qido_flag_filters(http: httpx.Client, studies: dict[str, Study], chunk: int) -> None:
    uid = {k: s.study_uid for k, s in studies.items()}
    newest_first = ["C", "B", "A", "D", "E"]
    assert _uids(_search(http)) == [uid[k] for k in newest_first]
    assert _uids(_search(http, **{"00991001": "urgent"})) == [uid["A"]]
    assert _uids(_search(http, **{"00991001": "URGENT,info"})) == [uid["A"], uid["D"]]
    assert _uids(_search(http, flagged="true")) == [uid["B"], uid["A"], uid["D"]]
    assert _uids(_search(http, flagged="false")) == [uid["C"], uid["E"]]
    # with the standard keys
    assert _uids(_search(http, PatientID="PX", flagged="true")) == [uid["A"]]
    assert _uids(_search(http, PatientID="PX", flagged="false")) == [uid["C"]]
    assert _uids(_search(http, StudyDate="20240101-", flagged="true")) == [uid["B"], uid["A"]]


def test_qido_orderby_flag_pages(http: httpx.Client, studies: dict[str, Study], chunk: int) -> None:
    uid = {k: s.study_uid for k, s in studies.items()}
    expected = [uid[k] for k in ("A", "B", "D", "C", "E")]  # urgent, warning, info, then newest first
    assert _uids(_search(http, orderby="flag")) == expected
    pages = [_uids(_search(http, orderby="flag", limit=2, offset=o)) for o in (0, 2, 4)]
    assert pages == [expected[0:2], expected[2:4], expected[4:]]
    r = http.get("/dicom-web/studies", params={"orderby": "flag", "limit": 2})
    assert "Warning" in r.headers  # more matched than returned
    assert _uids(_search(http, orderby="flag", flagged="true", limit=1, offset=1)) == [uid["B"]]
    assert _uids(_search(http, flagged="true", limit=2, offset=1)) == [uid["A"], uid["D"]]
    assert _uids(_search(http, orderby="flag", PatientID="PX")) == [uid["A"], uid["C"]]


@pytest.mark.parametrize(("params", "named"), [
    ({"00991001": "critical"}, "critical"),
    ({"flagged": "yes"}, "flagged"),
    ({"orderby": "StudyDate"}, "orderby"),
    ({"flagged": "false", "00991001": "urgent"}, "flagged=false"),
    ({"00991002": "x"}, "00991002"),
])
def test_qido_flag_parameters_refused(http: httpx.Client, params: dict[str, str], named: str) -> None:
    r = http.get("/dicom-web/studies", params=params)
    assert r.status_code == 400 and named in r.text, r.text


def test_flags_are_study_attributes_only(http: httpx.Client, studies: dict[str, Study]) -> None:
    r = http.get("/dicom-web/series", params={"flagged": "true"})
    assert r.status_code == 400 and "/studies" in r.text
    r = http.get(f"/dicom-web/studies/{studies['A'].study_uid}/series", params={"includefield": "all"})
    assert r.status_code == 200, r.text


def test_a_new_run_changes_qido_at_once(site: Site, http: httpx.Client, studies: dict[str, Study]) -> None:
    b = studies["B"]
    results.record(site.engine.index, study_uid=b.study_uid, patient_id=b.patient_id, study_date=b.study_date,
                   result=result("ct-chest", b.ct_series, volume=1.0,
                                 flags=[("test.worse", URGENT, "now urgent")]), stored=[])
    assert _uids(_search(http, **{"00991001": "urgent"})) == [b.study_uid, studies["A"].study_uid]
    row = next(r for r in _search(http) if r["0020000D"]["Value"][0] == b.study_uid)
    assert row["00991002"]["Value"] == ["now urgent"]


def test_share_link_reads_its_studys_analysis_only(site: Site, http: httpx.Client,
                                                   studies: dict[str, Study]) -> None:
    site.users.add("wendy", "writer")
    a, b = studies["A"], studies["B"]
    r = http.post("/api/shares", json={"study": a.study_uid},
                  headers={"Authorization": f"Bearer {site.users.issue_token('wendy')}"})
    assert r.status_code == 201, r.text
    h = {"Authorization": f"Bearer {r.json()['token']}"}
    assert http.get(f"/api/studies/{a.study_uid}/analysis", headers=h).status_code == 200
    assert http.get(f"/api/studies/{b.study_uid}/analysis", headers=h).status_code == 403
    assert http.get("/api/patients/PX/trends", headers=h).status_code == 403
    assert http.get("/api/patients/PX/trends").status_code == 401  # anonymous ends with the first user


class CountingIndex:
    """The real index, with the study records its finds return counted."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self.loaded = 0

    def find(self, *args: Any, **kw: Any) -> Iterator[dict[str, str]]:
        for row in self._index.find(*args, **kw):
            self.loaded += 1
            yield row

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def _tiny_study(i: int) -> tuple[bytes, Dataset]:
    """A study of one pixel-less instance, dated 2020-01-01 + i days."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.PatientName = f"T{i}", f"Tiny^{i}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate = (date(2020, 1, 1) + timedelta(days=i)).strftime("%Y%m%d")
    ds.StudyTime, ds.Modality = "120000", "OT"
    return _bytes(ds), ds


def test_a_flagged_page_loads_about_a_page_of_records(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qido_flags, "CHUNK", 4)
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        made = [_tiny_study(i) for i in range(60)]
        eng.store_buffers([b for b, _ in made])
        for i, (_, ds) in enumerate(made[:40]):  # 40 flagged, 20 not
            severity = URGENT if i % 2 else WARNING
            results.record(eng.index, study_uid=ds.StudyInstanceUID, patient_id=ds.PatientID,
                           study_date=ds.StudyDate, stored=[],
                           result=Result("q", flags=[Flag("q.x", "why", severity)]))
        newest_flagged = [str(ds.StudyInstanceUID) for _, ds in reversed(made[:40])]
        for params, expected in (
            ([("flagged", "true"), ("limit", "5")], newest_flagged[:5]),
            ([("orderby", "flag"), ("limit", "5")], [u for u in newest_flagged if u in
                                                     results.flagged_studies(eng.index, [URGENT])][:5]),
            ([("00991001", "warning"), ("limit", "3"), ("offset", "2")],
             [u for u in newest_flagged if u in results.flagged_studies(eng.index, [WARNING])][2:5]),
        ):
            counting = CountingIndex(eng.index)
            got = qido.search(counting, qido.parse_qido("studies", params))
            assert _uids(got.items) == expected, params
            assert got.truncated
            # the page, one more to know there is more, rounded up to whole chunks: not all 40
            assert counting.loaded <= 12, (params, counting.loaded)


def test_reads_are_audited(site: Site, http: httpx.Client, studies: dict[str, Study]) -> None:
    site.users.add("rita", "reader")
    rita = {"Authorization": f"Bearer {site.users.issue_token('rita')}"}
    a = studies["A"]
    assert http.get(f"/api/studies/{a.study_uid}/analysis", headers=rita).status_code == 200
    assert http.get("/api/patients/PX/trends", headers=rita).status_code == 200
    site.stop()  # writes the bursts still counted
    site.stop = lambda: None  # type: ignore[method-assign]  # the fixture's stop is done
    path = site.engine.data_dir / "audit" / "audit.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    (read,) = [r for r in recs if r["event"] == "instances-accessed"]
    assert (read["user"], read["study"], read["patient"], read["detail"]["kinds"]) == (
        "rita", a.study_uid, "PX", {"analysis": 1})
    (query,) = [r for r in recs if r["event"] == "query"]
    assert (query["user"], query["patient"], query["detail"]["protocol"], query["detail"]["matches"]) == (
        "rita", "PX", "HTTP /api/patients/trends", 2)
