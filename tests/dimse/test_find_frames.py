"""C-FIND pending responses framed a chunk of matches at a time (core/src/net/find_frames.rs via
dimse/find.py PendingResponses, what dimse/fastpath.py sends): byte for byte what the per-match
path writes (IdentifierEncoder.encode_values framed by _native.frame_message), on the rows a real
index gives for the real-image corpus and pydicom's character set files; and FindAnswer's batches
end as find_responses does (max_query_results, C-CANCEL, a failing index)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import repeat
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from dicomvault import _native
from dicomvault.dimse.find import (
    PENDING,
    FindAnswer,
    IdentifierEncoder,
    PendingResponses,
    command_set,
    find_responses,
)
from dicomvault.dimse.status import CANCEL, OUT_OF_RESOURCES, SUCCESS
from dicomvault.engine import Engine
from dv_corpus import archive_corpus

CONTEXT_ID = 5
MESSAGE_ID = 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    yield from archive_corpus(tmp_path_factory.mktemp("find-frames") / "data")


def _identifier(level: str, keys: list[str], charset: str | None, sequence: str | None = None) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    for kw in keys:
        setattr(ds, kw, "")
    if sequence is not None:
        setattr(ds, sequence, [])
    return ds


# (model, identifier level, return keys, a sequence key): every level, defaults (Retrieve AE
# Title, Instance Availability), names in many character sets, multi-valued and empty values
QUERIES = [
    (PATIENT_ROOT, "PATIENT", ["PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                               "NumberOfPatientRelatedStudies"], None),
    (STUDY_ROOT, "STUDY", ["PatientName", "PatientID", "StudyDate", "StudyDescription", "AccessionNumber",
                           "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyInstanceUID",
                           "RetrieveAETitle", "InstanceAvailability"], "ReferencedStudySequence"),
    (STUDY_ROOT, "SERIES", ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
                            "SeriesDescription", "NumberOfSeriesRelatedInstances", "RetrieveAETitle"], None),
    (STUDY_ROOT, "IMAGE", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                           "InstanceNumber", "PatientName", "ImageComments", "RetrieveAETitle",
                           "InstanceAvailability"], "ReferencedImageSequence"),
]


def _per_match(engine: Engine, model: str, identifier: Dataset, implicit: bool, max_pdu: int,
               cancelled: Callable[[], bool] = lambda: False, max_results: int = 0) -> tuple[bytes, Any]:
    """The reference: the per-match responses (find_responses), each framed by frame_message, as
    the fast path sent them before; and the final (status, comment)."""
    pending = command_set(model, MESSAGE_ID, PENDING)
    out, final = b"", None
    for code, encoded, comment in find_responses(engine, model, identifier, "ARCHIVE", implicit=implicit,
                                                 caller="TEST", cancelled=cancelled, max_results=max_results):
        if code == PENDING:
            out += _native.frame_message(CONTEXT_ID, pending, encoded, max_pdu)
        else:
            final = (code, comment)
    return out, final


def _chunked(engine: Engine, model: str, identifier: Dataset, implicit: bool, max_pdu: int,
             sizes: Iterator[int], cancelled: Callable[[], bool] = lambda: False,
             max_results: int = 0, native: bool = False) -> tuple[bytes, Any, int]:
    """What dimse/fastpath.py sends: a batch of rows framed per call; (bytes, final, batches).
    `native`: every batch through the native framer itself, no per-row fallback."""
    answer = FindAnswer(engine, model, identifier, "ARCHIVE", implicit=implicit, caller="TEST",
                        max_results=max_results)
    assert answer.encoder is not None
    responses = PendingResponses(answer.encoder, CONTEXT_ID, command_set(model, MESSAGE_ID, PENDING), max_pdu)
    out = bytearray()
    batches = 0
    for rows in answer.batches(cancelled, sizes):
        if native:
            assert responses.frames is not None
            out += responses.frames.frame(rows)
        else:
            responses.frame_into(out, rows)
        batches += 1
    return bytes(out), answer.final, batches


@pytest.mark.parametrize(("model", "level", "keys", "sequence"), QUERIES, ids=[q[1] for q in QUERIES])
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize(("implicit", "max_pdu"), [(False, 0), (True, 16384), (False, 64)])
def test_chunks_are_the_per_match_bytes_on_the_corpus(corpus: Engine, model: str, level: str, keys: list[str],
                                                       sequence: str | None, charset: str | None,
                                                       implicit: bool, max_pdu: int) -> None:
    identifier = _identifier(level, keys, charset, sequence)
    want, want_final = _per_match(corpus, model, identifier, implicit, max_pdu)
    got, final, batches = _chunked(corpus, model, identifier, implicit, max_pdu, repeat(16), native=True)
    assert final == want_final == (SUCCESS, None)
    assert got == want
    if "PatientName" in keys:
        assert want.count(b"ISO_IR 192") > 0  # the charset files' names switch the identifier to UTF-8
    assert batches > 1 and len(want) > 5_000
    encoder = FindAnswer(corpus, model, identifier, "ARCHIVE", implicit=implicit, caller="T").encoder
    assert encoder is not None
    assert encoder.pending_frames(CONTEXT_ID, b"C", max_pdu) is not None  # the native path was taken


def _corpus_rows(engine: Engine, level: str, query: dict[str, str],
                 encoder: IdentifierEncoder) -> list[list[str]]:
    rows = list(engine.index.find_values(level, query, encoder.columns))
    assert len(rows) > 50
    return rows


def _reference(encoder: IdentifierEncoder, rows: list[list[str]], max_pdu: int) -> bytes:
    return b"".join(_native.frame_message(CONTEXT_ID, b"CMD", encoder.encode_values(r), max_pdu)
                    for r in rows)


@pytest.mark.parametrize("implicit", [True, False])
def test_defaults_blanks_and_charsets_on_altered_corpus_rows(corpus: Engine, implicit: bool) -> None:
    """The corpus' IMAGE rows with values emptied (the defaults apply), made non-ASCII in a key
    that is written empty (a binary VR: the character set still switches, as encode_values does),
    and a key the index never has."""
    query = {kw: "" for kw in ["StudyInstanceUID", "SOPInstanceUID", "PatientName", "RetrieveAETitle",
                               "InstanceAvailability", "EncapsulatedDocument", "RequestAttributesSequence"]}
    encoder = IdentifierEncoder("IMAGE", query, [0x00081140], "ISO_IR 100", "OUR_AE", implicit=implicit)
    rows = _corpus_rows(corpus, "IMAGE", query, encoder)
    at = {kw: i for i, kw in enumerate(encoder.columns)}
    altered = []
    for n, row in enumerate(rows):
        row = list(row)
        if n % 3 == 0:
            row[at["RetrieveAETitle"]] = row[at["InstanceAvailability"]] = row[at["PatientName"]] = ""
        if n % 5 == 0:
            row[at["EncapsulatedDocument"]] = "é"
        altered.append(row)
    frames = encoder.pending_frames(CONTEXT_ID, b"CMD", 0)
    assert frames is not None
    got = frames.frame(altered)
    assert got == _reference(encoder, altered, 0)
    assert got.count(b"OUR_AE") >= len(rows) // 3 and got.count(b"ONLINE") >= len(rows) // 3
    assert got.count(b"ISO_IR 192") >= len(rows) // 5


def test_a_numeric_key_keeps_the_python_conversion(corpus: Engine) -> None:
    """US/FL keys (text in the index, binary on the wire) are converted by encode_values: no native
    plan, the same bytes through the fallback."""
    identifier = _identifier("IMAGE", ["SOPInstanceUID", "Rows", "Columns", "PatientName"], None)
    want, _ = _per_match(corpus, STUDY_ROOT, identifier, False, 0)
    got, final, _ = _chunked(corpus, STUDY_ROOT, identifier, False, 0, repeat(8))
    assert final == (SUCCESS, None) and got == want
    answer = FindAnswer(corpus, STUDY_ROOT, identifier, "A", implicit=False, caller="T")
    assert answer.encoder is not None and answer.encoder.pending_frames(1, b"C", 0) is None


@pytest.mark.parametrize(("bad", "error"), [("\udc80", UnicodeEncodeError), (None, TypeError)])
def test_a_row_that_cannot_be_encoded_fails_after_the_rows_before_it(corpus: Engine, bad: Any,
                                                                       error: type[Exception]) -> None:
    """The native call refuses the chunk; it is redone per match, which sends the matches before
    the bad row and raises encode_values' own error, as the per-match path did."""
    query = {"SOPInstanceUID": "", "PatientName": ""}
    encoder = IdentifierEncoder("IMAGE", query, [], None, "A", implicit=False)
    rows = _corpus_rows(corpus, "IMAGE", query, encoder)[:6]
    rows[3] = [rows[3][0], bad]
    responses = PendingResponses(encoder, CONTEXT_ID, b"CMD", 0)
    out = bytearray()
    with pytest.raises(error) as got:
        responses.frame_into(out, rows)
    with pytest.raises(error) as want:
        encoder.encode_values(rows[3])
    assert str(got.value) == str(want.value)
    assert bytes(out) == _reference(encoder, rows[:3], 0)


def test_a_request_charset_that_cannot_be_written() -> None:
    """Not ASCII (not a DICOM term): an all-ASCII match fails as encode_values fails for it, a
    non-ASCII match goes out as ISO_IR 192."""
    encoder = IdentifierEncoder("PATIENT", {"PatientName": ""}, [], "ISO_IR 1ö0", "A", implicit=False)
    responses = PendingResponses(encoder, CONTEXT_ID, b"CMD", 0)
    out = bytearray()
    responses.frame_into(out, [["Gérard"]])
    assert bytes(out) == _reference(encoder, [["Gérard"]], 0)
    with pytest.raises(UnicodeEncodeError):
        responses.frame_into(out, [["Gérard"], ["Doe"]])
    assert bytes(out) == _reference(encoder, [["Gérard"], ["Gérard"]], 0)


STUDY_KEYS = ["PatientID", "StudyInstanceUID", "StudyDescription"]


@pytest.mark.parametrize("max_results", [1, 5, 7])
def test_max_query_results_as_per_match(corpus: Engine, max_results: int) -> None:
    identifier = _identifier("STUDY", STUDY_KEYS, None)
    all_rows, _ = _per_match(corpus, STUDY_ROOT, identifier, False, 0)
    want, want_final = _per_match(corpus, STUDY_ROOT, identifier, False, 0, max_results=max_results)
    got, final, _ = _chunked(corpus, STUDY_ROOT, identifier, False, 0, repeat(3), max_results=max_results)
    assert final == want_final and final is not None and final[0] == OUT_OF_RESOURCES
    assert got == want and len(want) < len(all_rows)
    assert got.count(command_set(STUDY_ROOT, MESSAGE_ID, PENDING)) == max_results
    # exactly as many matches as the limit: Success, not a refusal
    n = len(list(corpus.index.find_values("STUDY", {kw: "" for kw in STUDY_KEYS}, STUDY_KEYS)))
    _, final, _ = _chunked(corpus, STUDY_ROOT, identifier, False, 0, repeat(4), max_results=n)
    assert final == (SUCCESS, None)


def test_cancel_is_asked_before_each_batch(corpus: Engine) -> None:
    identifier = _identifier("STUDY", STUDY_KEYS, None)
    asked: list[int] = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) > 2

    got, final, batches = _chunked(corpus, STUDY_ROOT, identifier, False, 0, iter([2, 4, 8, 16]),
                                   cancelled=cancelled)
    assert final == (CANCEL, None) and batches == 2
    one, _ = _per_match(corpus, STUDY_ROOT, identifier, False, 0)
    pending = command_set(STUDY_ROOT, MESSAGE_ID, PENDING)
    assert got.count(pending) == 6 and one.startswith(got)


def test_a_failing_index_sends_what_it_gave_then_fails(corpus: Engine) -> None:
    identifier = _identifier("STUDY", STUDY_KEYS, None)
    answer = FindAnswer(corpus, STUDY_ROOT, identifier, "A", implicit=False, caller="T")
    rows = list(answer._rows)

    def failing() -> Iterator[list[str]]:
        yield from rows[:5]
        raise OSError("disk gone")

    answer._rows = failing()
    got: list[list[list[str]]] = []
    with pytest.raises(OSError, match="disk gone"):
        for batch in answer.batches(lambda: False, repeat(4)):
            got.append(batch)
    assert got == [rows[:4], rows[4:5]] and answer.final is None
