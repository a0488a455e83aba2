"""FHIR searches and reads (integration/fhir/): a query string of an ImagingStudy or Patient
search, split as Starlette splits it, grouped and validated by fhir.params and run against a real
index holding pydicom's test files; or a resource id read.

Input: `ImagingStudy`, `Patient`, `read ImagingStudy` or `read Patient` LF the query string (or
the id). Allowed outcomes: a page or a resource, or the archive's typed errors (400, 404)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

from dicomvault.errors import DicomVaultError
from dicomvault.integration.fhir import params, search

from .archive import archive

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
# The parameter forms of tests/test_fuzz_python_parsers.py and of the FHIR tests.
QUERIES = (
    ("ImagingStudy", "patient.identifier=%7C1CT1&started=ge2004-01-01&started=lt2005&_count=5"),
    ("ImagingStudy", f"identifier=urn:dicom:uid%7Curn:oid:{CT_STUDY}&_offset=0&_format=json"),
    ("ImagingStudy", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203%7CACSN%7CA1"
                     "&accession=A%5C,B&modality=http://dicom.nema.org/resources/ontology/DCM%7CCT,MR"),
    ("ImagingStudy", "patient=Patient/1CT1&subject=x&_id=1.2.3"),
    ("Patient", "identifier=%7C1CT1&name=CompressedSamples,x&family=Comp&given=ct"),
    ("Patient", "birthdate=le2000-02-29&gender=male,unknown&_id=1CT1&_count=0"),
    ("read ImagingStudy", "FHIR-2d1.2-20x"),
    ("read Patient", "1CT1"),
)
SEARCHES = {"ImagingStudy": (search.IMAGING_STUDY_PARAMS, search.search_imaging_studies),
            "Patient": (search.PATIENT_PARAMS, search.search_patients)}
READS = {"read ImagingStudy": search.read_imaging_study, "read Patient": search.read_patient}


def seeds() -> Iterator[bytes]:
    for head, rest in QUERIES:
        yield f"{head}\n{rest}".encode("latin-1")


def one_input(data: bytes) -> None:
    head, _, rest = data.decode("latin-1").partition("\n")
    index = archive().index
    try:
        if head in READS:
            READS[head](index, rest)
        elif head in SEARCHES:
            allowed, run = SEARCHES[head]
            run(index, params.group(parse_qsl(rest, keep_blank_values=True), allowed, head))
    except DicomVaultError:
        pass
