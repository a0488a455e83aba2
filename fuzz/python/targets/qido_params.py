"""QIDO-RS parameters (web/dicomweb/qido.py): a query string, split as Starlette splits it, turned
into our query model by parse_qido and run against a real index holding pydicom's test files
(the matching rules of index/query.py see every value that validation let through).

Input: `<resource> [<study UID> [<series UID>]]` LF `<query string>`. Allowed outcomes: a
result page, or RequestError (400)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

from dicomvault.errors import RequestError
from dicomvault.web.dicomweb.qido import QidoResult, parse_qido, search
from dicomvault.web.dicomweb.routes import check_uid

from .archive import archive

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
# Query strings of tests/web/test_qido.py, test_dicomweb_e2e.py and what OHIF sends.
QUERIES = (
    ("studies", "PatientID=P*&StudyDate=20040101-20041231&ModalitiesInStudy=CT&limit=10&offset=5"),
    ("studies", "fuzzymatching=true&PatientName=doe&includefield=00100010,PatientAge"),
    ("studies", "00081030=CHEST*&StudyTime=080000-120000&00080020=-20240101"),
    ("studies", f"0020000D={CT_STUDY}%5C1.2.3&fuzzymatching=false&includefield=00081030,00080060"
                "&limit=101&offset=0"),
    ("series", "RequestAttributesSequence.ScheduledProcedureStepID=&StudyInstanceUID=1.2%5C1.3,1.4"
               "&StudyInstanceUID=1.5&Modality=CT,MR&limit=0&accept=application/dicom%2Bjson"
               "&includefield=all&fuzzymatching=TRUE&PatientName=doe"),
    ("series", "StudyDate=20200101-20190101"), ("series", "StudyTime=noon"),
    ("series", "PatientName=a&PatientName=b"), ("series", "PatientName.FamilyName=X"),
    (f"series {CT_STUDY}", "Modality=CT&SeriesNumber=1"),
    (f"instances {CT_STUDY} {CT_SERIES}", "InstanceNumber=1&includefield=Rows"),
    ("instances", "limit=2&SOPClassUID=1.2.840.10008.5.1.4.1.1.2&StudyDate=20040119"),
    ("instances", "AccessionNumber=?*&PatientBirthDate=19000101-&StudyDate=2004.01.19"),
    ("studies", "PatientName=%C3%A9*&PatientSex=M&charset=utf-8&offset=100001"),
)


def seeds() -> Iterator[bytes]:
    for head, query in QUERIES:
        yield f"{head}\n{query}".encode("latin-1")


def one_input(data: bytes) -> None:
    head, _, query = data.decode("latin-1").partition("\n")
    resource, study, series = (head.split(" ", 2) + [None, None])[:3]
    # Starlette's QueryParams: parse_qsl of the raw query string, blank values kept.
    params = parse_qsl(query, keep_blank_values=True)
    try:
        # The route checks the path's UIDs before the parameters (routes._uids).
        study = check_uid(study, "study UID") if study else None
        series = check_uid(series, "series UID") if series else None
        q = parse_qido(resource or "", params, study_uid=study, series_uid=series)
        result = search(archive().index, q, max_results=50, base_url="http://fuzz/dicom-web")
    except RequestError:
        return
    if not isinstance(result, QidoResult):
        raise AssertionError(f"parse_qido/search returned {result!r}")
