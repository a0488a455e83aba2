"""C-FIND responses written without pydicom (dimse/find.py): the bytes must be what pynetdicom
and pydicom would produce or accept."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_FIND_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from dicomvault.dimse.find import PENDING, IdentifierEncoder, command_set, decode_identifier, pdata_primitives


@pytest.mark.parametrize(("sop_class", "msg_id"), [(STUDY_ROOT, 1), (PATIENT_ROOT, 65535)])
def test_command_set_is_pynetdicoms(sop_class: str, msg_id: int) -> None:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = PENDING
    rsp.Identifier = BytesIO(b"\x08\x00\x52\x00")  # any: pynetdicom marks the data set present
    msg = C_FIND_RSP()
    msg.primitive_to_message(rsp)
    assert command_set(sop_class, msg_id, PENDING) == encode(msg.command_set, True, True)


QUERY = {"PatientName": "", "PatientID": "", "StudyDate": "", "StudyInstanceUID": "",
         "NumberOfStudyRelatedInstances": "", "RetrieveAETitle": "", "NumberOfFrames": "",
         "ModalitiesInStudy": "", "Rows": "", "PixelSpacing": ""}
ROW = {"PatientName": "Doe^John", "PatientID": "P1", "StudyDate": "20240105", "StudyInstanceUID": "1.2.3",
       "NumberOfStudyRelatedInstances": "12", "ModalitiesInStudy": "CT\\SR", "Rows": "512",
       "PixelSpacing": "0.5\\0.5"}


@pytest.mark.parametrize("implicit", [True, False])
def test_identifier_decodes_to_the_row(implicit: bool) -> None:
    enc = IdentifierEncoder("STUDY", QUERY, [0x00081110], None, "ARCHIVE", implicit=implicit)
    ds = decode_identifier(enc.encode(ROW), implicit)
    tags = [int(e.tag) for e in ds]
    assert tags == sorted(tags), "ascending tag order"
    assert "SpecificCharacterSet" not in ds  # ASCII and none requested
    assert ds.QueryRetrieveLevel == "STUDY"
    assert (str(ds.PatientName), ds.PatientID, ds.StudyDate) == ("Doe^John", "P1", "20240105")
    assert ds.StudyInstanceUID == "1.2.3"  # odd length, NUL-padded on the wire, not in the value
    assert ds.NumberOfStudyRelatedInstances == 12
    assert list(ds.ModalitiesInStudy) == ["CT", "SR"]
    assert ds.RetrieveAETitle == "ARCHIVE"  # default for a key the index does not hold
    assert ds.Rows == 512  # US, binary
    assert [float(x) for x in ds.PixelSpacing] == [0.5, 0.5]
    assert ds["NumberOfFrames"].is_empty
    assert ds.ReferencedStudySequence == []


def test_identifier_character_sets() -> None:
    enc = IdentifierEncoder("STUDY", {"PatientName": ""}, [], "ISO_IR 100", "A", implicit=False)
    ascii_ds = decode_identifier(enc.encode({"PatientName": "Doe^John"}), False)
    assert ascii_ds.SpecificCharacterSet == "ISO_IR 100"  # the request's, for ASCII values
    utf8 = enc.encode({"PatientName": "Müller^Żółć"})
    ds = decode_identifier(utf8, False)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    ds.decode()
    assert str(ds.PatientName) == "Müller^Żółć"
    assert "Müller^Żółć".encode() in utf8


def test_unparsable_binary_value_is_returned_empty() -> None:
    enc = IdentifierEncoder("IMAGE", {"Rows": ""}, [], None, "A", implicit=True)
    assert decode_identifier(enc.encode({"Rows": "many"}), True)["Rows"].is_empty


def test_same_elements_as_pydicom_would_encode() -> None:
    enc = IdentifierEncoder("STUDY", QUERY, [], None, "ARCHIVE", implicit=False)
    raw = enc.encode(ROW)
    ds = decode_identifier(raw, False)
    again = encode(ds, False, True, False)
    assert again == raw


@pytest.mark.parametrize("max_pdu", [0, 16382, 40, 17])
def test_pdata_reassembles_in_pynetdicom(max_pdu: int) -> None:
    command = command_set(STUDY_ROOT, 5, PENDING)
    enc = IdentifierEncoder("STUDY", QUERY, [], None, "A", implicit=True)
    dataset = enc.encode(ROW)
    prims = pdata_primitives(1, command, dataset, max_pdu)
    if max_pdu:
        for p in prims:
            assert sum(6 + len(d) - 1 for _, d in p.presentation_data_value_list) <= max_pdu
    if max_pdu in (0, 16382):
        assert len(prims) == 1  # command and identifier in one P-DATA-TF
    msg = DIMSEMessage()
    done = [msg.decode_msg(p) for p in prims]
    assert done[-1] and not any(done[:-1])
    assert isinstance(msg, C_FIND_RSP)
    assert msg.command_set.Status == PENDING and msg.command_set.MessageIDBeingRespondedTo == 5
    assert msg.data_set.getvalue() == dataset



@pytest.mark.parametrize("sequences", [[], [0x00081110, 0x00081115]])
def test_values_in_column_order_encode_like_the_row(sequences: list[int]) -> None:
    """encode_values (what find_responses gives it: Index.find_values in `columns` order) writes
    the same bytes as encode of the row dict: defaults, level and sequences in their places."""
    enc = IdentifierEncoder("STUDY", QUERY, sequences, "ISO_IR 100", "ARCHIVE", implicit=False)
    assert sorted(enc.columns) == sorted(QUERY)
    for row in (ROW, {}, {**ROW, "PatientName": "Müller^Jürgen"}):
        assert enc.encode_values([row.get(c, "") for c in enc.columns]) == enc.encode(row)
    assert decode_identifier(enc.encode_values([""] * len(enc.columns)), False).RetrieveAETitle == "ARCHIVE"
    with pytest.raises(ValueError, match="values for"):
        enc.encode_values([""])
