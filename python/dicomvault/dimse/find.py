"""C-FIND SCP (Patient Root and Study Root): the identifier becomes an index query.

Every key of the request identifier is a return key and, unless universal, a matching key; the
matching itself (PS3.4 C.2.2.2: single value, wildcard, range, UID list, universal, empty) is the
index's (`index/query.py`). The (small) identifier is decoded with pydicom, which also applies
its Specific Character Set, so query values reach the index as Unicode text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from ..engine import Engine
from ..index import QueryError
from .common import calling_ae, log, status

PENDING = 0xFF00
CANCEL = 0xFE00
SUCCESS = 0x0000
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000

PATIENT_ROOT_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
STUDY_ROOT_LEVELS = ("STUDY", "SERIES", "IMAGE")
_INT_VRS = {"US", "SS", "UL", "SL", "UV", "SV"}
_FLOAT_VRS = {"FL", "FD"}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT"}
_PATIENT_ROOT_MODELS = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}
# Not query keys: they qualify the query itself.
_SKIP_TAGS = {0x00080005, 0x00080052}


def levels_for(model_uid: str) -> tuple[str, ...]:
    """Query/Retrieve levels an information model allows (Patient Root also has PATIENT)."""
    return PATIENT_ROOT_LEVELS if model_uid in _PATIENT_ROOT_MODELS else STUDY_ROOT_LEVELS


def match_string(elem: DataElement) -> str:
    """An identifier element's value as a C.2.2.2 match string ('' = universal)."""
    value = elem.value
    if value is None or value == "" or elem.VR in _BINARY_VRS:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _response_value(vr: str, text: str) -> Any:
    """The index's string form of a value, as pydicom wants it for the VR (None = empty)."""
    if not text:
        return None
    if vr in _INT_VRS:
        vals = [int(v) for v in text.split("\\") if v.strip()]
        return vals[0] if len(vals) == 1 else vals
    if vr in _FLOAT_VRS:
        fvals = [float(v) for v in text.split("\\") if v.strip()]
        return fvals[0] if len(fvals) == 1 else fvals
    return text


def parse_identifier(identifier: Dataset) -> tuple[str, dict[str, str], list[int]]:
    """(level, query dict keyword -> match string, sequence tags to return empty)."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    query: dict[str, str] = {}
    sequences: list[int] = []
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _SKIP_TAGS or elem.tag.is_private or elem.tag.element == 0:
            continue
        kw = elem.keyword
        if not kw:
            continue
        if elem.VR == "SQ":
            # Sequence matching is optional (C.2.2.2.6); we return the key empty.
            sequences.append(tag)
            continue
        query[kw] = match_string(elem)
    return level, query, sequences


def build_response(level: str, row: dict[str, str], query: dict[str, str], sequences: list[int],
                   request_charset: Any, our_ae: str) -> Dataset:
    ds = Dataset()
    values = {kw: row.get(kw, "") for kw in query}
    if any(not v.isascii() for v in values.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 carries whatever the index holds
    elif request_charset:
        ds.SpecificCharacterSet = request_charset
    ds.QueryRetrieveLevel = level
    for kw, text in values.items():
        tag = tag_for_keyword(kw)
        if tag is None:
            continue
        vr = dictionary_VR(tag).split(" ")[0]
        if kw == "RetrieveAETitle" and not text:
            text = our_ae
        elif kw == "InstanceAvailability" and not text:
            text = "ONLINE"
        ds.add_new(tag, vr, None if vr in _BINARY_VRS else _response_value(vr, text))
    for tag in sequences:
        ds.add_new(tag, "SQ", [])
    return ds


def handle_find(event: Any, engine: Engine, our_ae: str) -> Iterator[tuple[int, Dataset | None]]:
    """EVT_C_FIND handler: yields (Pending, match) per match, then the final status."""
    model = str(event.request.AffectedSOPClassUID)
    identifier = event.identifier
    level, query, sequences = parse_identifier(identifier)
    if level not in levels_for(model):
        why = f"QueryRetrieveLevel {level or '(missing)'!r} not valid for {model}"
        log.warning("C-FIND from %s refused: %s", calling_ae(event), why)
        yield status(IDENTIFIER_DOES_NOT_MATCH, why), None
        return
    try:
        rows = engine.index.find(level, query)
    except QueryError as exc:
        log.warning("C-FIND from %s refused: %s", calling_ae(event), exc)
        yield status(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
        return
    charset = identifier.get("SpecificCharacterSet")
    n = 0
    for row in rows:
        if event.is_cancelled:
            log.info("C-FIND from %s cancelled after %d matches", calling_ae(event), n)
            yield CANCEL, None
            return
        yield PENDING, build_response(level, row, query, sequences, charset, our_ae)
        n += 1
    log.info("C-FIND from %s at %s level: %d matches", calling_ae(event), level, n)
    yield SUCCESS, None

