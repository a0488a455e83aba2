"""Fuzz smoke of the Python-side parsers of outside input (issue 14, item 6): the STOW-RS
multipart reader, QIDO-RS parameters, FHIR search parameters and ids (issue 15), and the TOML
configuration. Each takes valid input mutated the way libFuzzer starts (bit flips, edge bytes,
cuts, duplicated and dropped runs) plus random chunkings, with a fixed seed, and may only ever
refuse with one of our own errors: anything else (IndexError, UnicodeDecodeError, KeyError...)
is a crash a client could trigger."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from pydicom.data import get_testdata_file

from dicomvault.config import load_config
from dicomvault.engine import Engine
from dicomvault.errors import DicomVaultError
from dicomvault.integration.fhir import params as fhir_params
from dicomvault.integration.fhir import search as fhir_search
from dicomvault.web.dicomweb.multipart import read_parts
from dicomvault.web.dicomweb.qido import parse_qido

ROUNDS = 1500


def mutate(rng: random.Random, seed: bytes) -> bytes:
    v = bytearray(seed)
    for _ in range(1 + rng.randrange(4)):
        if not v:
            v.append(rng.randrange(256))
            continue
        at = rng.randrange(len(v))
        kind = rng.randrange(6)
        if kind == 0:
            v[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            v[at] = rng.choice((0, 0x0A, 0x0D, 0x22, 0x2D, 0x3B, 0x7F, 0x80, 0xFF))
        elif kind == 2:
            del v[at:]
        elif kind == 3:
            run = v[at: at + 1 + rng.randrange(64)]
            v[at:at] = run
        elif kind == 4:
            del v[at: at + 1 + rng.randrange(64)]
        else:
            v[at:at] = bytes(rng.randrange(256) for _ in range(1 + rng.randrange(8)))
    return bytes(v)


async def _chunks(data: bytes, rng: random.Random) -> AsyncIterator[bytes]:
    i = 0
    while i < len(data):
        n = 1 + rng.randrange(max(1, len(data) // 3))
        yield data[i: i + n]
        i += n


def test_stow_multipart_reader(tmp_path: Path) -> None:
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()[:3000]
    b = "fuzz-boundary"
    second = f"\r\n--{b}\r\nContent-Type: application/dicom\r\nContent-Length: 4\r\n\r\nDICM\r\n--{b}--\r\n"
    body = f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + dicom + second.encode()
    content_types = [f'multipart/related; type="application/dicom"; boundary="{b}"',
                     f"multipart/related; boundary={b}", "multipart/related", "application/dicom", ""]
    rng = random.Random(20261206)

    async def read_all(data: bytes, ct: str) -> None:
        async for part in read_parts(_chunks(data, rng), ct, spool_dir=str(tmp_path), max_body=1 << 20,
                                     memory_part_limit=rng.choice((64, 1 << 20))):
            part.read()
            part.discard()

    async def run() -> None:
        for i in range(ROUNDS):
            data = body if i % 10 == 0 else mutate(rng, body)
            ct = content_types[0]
            if rng.random() < 0.2:
                ct = mutate(rng, rng.choice(content_types).encode()).decode("latin-1")
            try:
                await read_all(data, ct)
            except DicomVaultError:
                pass

    asyncio.run(run())


def _pairs(rng: random.Random, base: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in base:
        if rng.random() < 0.5:
            value = mutate(rng, value.encode()).decode("latin-1")
        if rng.random() < 0.2:
            name = mutate(rng, name.encode()).decode("latin-1")
        out.append((name, value))
    return out


def test_qido_parameters() -> None:
    base = [("PatientID", "P*"), ("StudyDate", "20240101-20241231"), ("ModalitiesInStudy", "CT"),
            ("limit", "10"), ("offset", "5"), ("fuzzymatching", "true"),
            ("includefield", "00100010,PatientAge"),
            ("00081030", "CHEST*"), ("StudyTime", "080000-120000"), ("SeriesInstanceUID", "1.2.3"),
            ("00080020", "-20240101"), ("orderby", "StudyDate")]
    rng = random.Random(6)
    for _ in range(ROUNDS * 3):
        params = _pairs(rng, rng.sample(base, 1 + rng.randrange(len(base))))
        resource = rng.choice(("studies", "series", "instances", "studie"))
        try:
            parse_qido(resource, params, study_uid=rng.choice((None, "1.2.3", "x" * 70)))
        except DicomVaultError:
            pass


def test_fhir_search_parameters(engine: Engine) -> None:
    """Parsed and run against a real index holding one study: a bad value may only be a 400/404."""
    engine.store_files([get_testdata_file("CT_small.dcm")])
    study = [("patient.identifier", "|1CT1"), ("patient", "Patient/1CT1"), ("subject", "x"),
             ("identifier", "urn:dicom:uid|urn:oid:1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"),
             ("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|ACSN|A1"),
             ("accession", "A\\,B"), ("started", "ge2004-01-01"), ("started", "lt2005"),
             ("modality", "http://dicom.nema.org/resources/ontology/DCM|CT,MR"), ("_id", "1.2.3"),
             ("_count", "5"), ("_offset", "0"), ("_format", "json")]
    patient = [("identifier", "|1CT1"), ("name", "CompressedSamples,x"), ("family", "Comp"),
               ("given", "ct"), ("birthdate", "le2000-02-29"), ("gender", "male,unknown"), ("_id", "1CT1"),
               ("_count", "0")]
    rng = random.Random(15)
    for _ in range(ROUNDS):
        for base, allowed, run in ((study, fhir_search.IMAGING_STUDY_PARAMS,
                                    fhir_search.search_imaging_studies),
                                   (patient, fhir_search.PATIENT_PARAMS, fhir_search.search_patients)):
            params = _pairs(rng, rng.sample(base, 1 + rng.randrange(len(base))))
            try:
                run(engine.index, fhir_params.group(params, allowed, "fuzz"))
            except DicomVaultError:
                pass
        fid = mutate(rng, b"FHIR-2d1.2-20x").decode("latin-1")
        for read in (fhir_search.read_imaging_study, fhir_search.read_patient):
            try:
                read(engine.index, fid)
            except DicomVaultError:
                pass


def test_toml_configuration(tmp_path: Path) -> None:
    good = b'''data = "d"
[dimse]
ae_title = "DICOMVAULT"
port = 11112
max_associations = 64
tls_port = 0

[[peers]]
ae_title = "PACS"
host = "10.0.0.1"
port = 104

[http.oidc]
issuer = "https://sso.example/realms/h"
audience = ["dicomvault"]
jwks = "https://sso.example/realms/h/certs"
roles_claim = "realm_access.roles"
role_map = { radiologist = "reader", admins = "admin" }
leeway = 30
algorithms = ["RS256", "ES256"]

[storage]
reserve_min = "16MB"
reserve_fraction = 0.02

[tiering]
compaction = "background"

[[tiers]]
name = "landing"
backend = "local"
path = "landing"
codec = "raw"
capacity = "200GB"

[[tiers]]
name = "warm"
backend = "local"
path = "volumes"
codec = "hot"
'''
    cfg = tmp_path / "dv.toml"
    rng = random.Random(12)
    for _ in range(ROUNDS):
        cfg.write_bytes(mutate(rng, good))
        try:
            load_config(cfg)
        except DicomVaultError:
            pass
