"""HL7 v2 over MLLP against a real `dicomvault serve`: a socket client sends real-shaped v2.3 and
v2.5.1 messages (escapes, repeats, Z-segments, character sets, a malformed one); orders are seen
by DCMTK `findscu -W`, reports by `GET /api/studies/{uid}`, every message is kept on disk."""

from __future__ import annotations

import io
import shutil
import socket
import time
from collections.abc import Iterator

import pydicom
import pytest
from hl7_served import ARCHIVE_AE, HOST, SB, Served, kept, msg, run, send, serve_with_hl7
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    for tool in ("findscu", "dump2dcm"):
        if shutil.which(tool) is None:
            pytest.fail(f"missing tool {tool} (run `make sysdeps`)")
    # short limits so the idle and size tests take a second; MR orders without a station go to MR7
    with serve_with_hl7(tmp_path_factory.mktemp("hl7"), '\n[hl7]\nidle_timeout = 1.5\nmax_message = 8192\n'
                        '[hl7.stations]\nMR = "MR7"\n') as s:
        yield s


def findscu_w(s: Served, station: str) -> list[pydicom.Dataset]:
    n = len(list(s.tmp.glob("q*")))
    dump, query, out = s.tmp / f"q{n}.txt", s.tmp / f"q{n}.wl", s.tmp / f"q{n}.out"
    out.mkdir()
    dump.write_text(f"""\
(0008,0005) CS [ISO_IR 192]
(0008,0050) SH []
(0010,0010) PN []
(0010,0020) LO []
(0020,000d) UI []
(0032,1060) LO []
(0040,0100) SQ (Sequence with explicit length #=1)
  (fffe,e000) na (Item with explicit length #=6)
    (0008,0060) CS []
    (0040,0001) AE [{station}]
    (0040,0002) DA []
    (0040,0003) TM []
    (0040,0009) SH []
    (0040,0020) CS []
  (fffe,e00d) na (ItemDelimitationItem for re-encoding)
(fffe,e0dd) na (SequenceDelimitationItem for re-encoding)
(0040,1001) SH []
""")
    run(["dump2dcm", str(dump), str(query)])
    run(["findscu", "-W", "-X", "-od", str(out), "-aet", "FINDSCU", "-aec", ARCHIVE_AE, *s.arch.addr,
         str(query)])
    return [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]


def omi(control: str, order: str, ctl_id: str, study_uid: str) -> bytes:
    """An IHE RAD-4 OMI^O23 (v2.5.1, UTF-8): two patient id repeats, escapes, a Z-segment."""
    return msg(
        f"MSH|^~\\&|RIS|HOSP|DICOMVAULT|HOSP|20260310081500||OMI^O23^OMI_O23|{ctl_id}|P|2.5.1"
        "||||||UNICODE UTF-8",
        "PID|1||P100^^^HOSP^MR~998877^^^STATE^NI||Müller\\T\\Søn^Zoë^^Jr^Dr||19800214|F",
        "PV1|1|O|||||||0042^Welby^Marcus",
        f"ORC|{control}|{order}|F{order}||SC",
        "TQ1|1||||||202603100930",
        f"OBR|1|{order}|F{order}|CTHN^CT Head \\T\\ Neck\\S\\contrast^L",
        f"IPC|ACC{order}|RP{order}|{study_uid}|SPS{order}|CT||||CT01",
        "ZXX|site specific|ignored~really",
        encoding="utf-8")


def test_order_scheduled_seen_by_findscu_then_canceled(served: Served) -> None:
    study = generate_uid()
    acks = send(served, omi("NW", "501", "C501", study), split=True)
    assert acks[0]["MSA"][1:3] == ["AA", "C501"], acks
    assert acks[0]["MSH"][11] == "2.5.1"
    assert kept(served, "received", "C501")
    rsps = [r for r in findscu_w(served, "CT01") if r.AccessionNumber == "ACC501"]
    assert len(rsps) == 1
    r = rsps[0]
    assert str(r.PatientName) == "Müller&Søn^Zoë^^Dr^Jr"  # XPN suffix/prefix swapped into PN order
    assert r.PatientID == "P100"
    assert r.StudyInstanceUID == study
    assert r.RequestedProcedureDescription == "CT Head & Neck^contrast"
    assert r.RequestedProcedureID == "RP501"
    sps = r.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepID, sps.Modality, sps.ScheduledProcedureStepStartDate) == \
        ("SPS501", "CT", "20260310")
    # change (XO) then cancel (CA) on the same connection
    acks = send(served, omi("XO", "501", "C502", study).replace(b"202603100930", b"202603111000"),
                omi("CA", "501", "C503", study))
    assert [a["MSA"][1:3] for a in acks] == [["AA", "C502"], ["AA", "C503"]], acks
    assert not [r for r in findscu_w(served, "CT01") if r.AccessionNumber == "ACC501"]


def test_orm_v23_latin1_with_station_from_config(served: Served) -> None:
    m = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|200603100815||ORM^O01|ORM77|P|2.3||||||8859/1",
            "PID|||77^^^HOSP||Ångström^José||19550101|M",
            "ORC|NW|PO77|FO77",
            "OBR|1|PO77|FO77|MRB^MR Brain^L||||||||||||||ACC77|RP77|SPS77||||MR|||^^^20260312083000",
            "ZDS|1.2.826.0.1.3680043.2.1143.77^PACS^Application^DICOM", encoding="latin-1")
    acks = send(served, m)
    assert acks[0]["MSA"][1:3] == ["AA", "ORM77"], acks
    assert acks[0]["MSH"][8] == "ACK^O01" and acks[0]["MSH"][11] == "2.3"
    rsps = [r for r in findscu_w(served, "MR7") if r.AccessionNumber == "ACC77"]
    assert len(rsps) == 1
    assert str(rsps[0].PatientName) == "Ångström^José"
    assert rsps[0].StudyInstanceUID == "1.2.826.0.1.3680043.2.1143.77"
    step = rsps[0].ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStartDate == "20260312"
    assert step.ScheduledProcedureStepStartTime == "083000"


def test_malformed_messages_are_nakked_and_kept(served: Served) -> None:
    bad_escape = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||ORM^O01|BAD1|P|2.3",
                     "PID|||1||Bad\\Q\\Name", "ORC|NW|X1", "OBR|1|X1||CT^CT||||||||||||||ACC9|RP9|SPS9||||CT")
    no_msh = b"PID|||1||Nobody\rORC|NW|X2\r"
    no_obr = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||ORM^O01|BAD3|P|2.5.1", "PID|||1||A^B", "ORC|NW|X3")
    unknown = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||SIU^S12|BAD4|P|2.5.1", "SCH|1")
    acks = send(served, bad_escape, no_msh, no_obr, unknown)
    codes = [(a["MSA"][1], a["MSA"][2]) for a in acks]
    assert codes == [("AE", "BAD1"), ("AR", ""), ("AE", "BAD3"), ("AR", "BAD4")], acks
    assert "escape" in acks[0]["MSA"][3] and "ERR" in acks[0]
    assert acks[2]["ERR"][3].startswith("100^") and "OBR" in acks[2]["ERR"][8]  # v2.5 ERR-3, ERR-8
    assert acks[0]["ERR"][1].startswith("^^^102&")  # v2.3 ERR-1
    for ctl in ("BAD1", "BAD3", "BAD4"):
        (path,) = kept(served, "rejected", ctl)
        assert path.with_suffix(".reason").read_text().startswith("A")
    (path,) = kept(served, "rejected", "none")
    assert path.read_bytes() == no_msh


def test_adt_for_a_patient_without_images_is_accepted_and_changes_nothing(served: Served) -> None:
    m = msg("MSH|^~\\&|HIS|HOSP|PACS|HOSP|20260310||ADT^A08^ADT_A01|ADT1|P|2.5.1", "EVN|A08|20260310",
            "PID|1||P100^^^HOSP||Muller^Zoe||19800214|F", "PV1|1|O")
    (ack,) = send(served, m)
    assert ack["MSA"][1:3] == ["AA", "ADT1"]
    assert "nothing to update" in ack["MSA"][3]
    assert kept(served, "received", "ADT1") and not kept(served, "rejected", "ADT1")


def _store_study(s: Served, accession: str, study_uid: str = "") -> str:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = accession
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    r = s.http.post("/api/instances", content=buf.getvalue(), headers={"Content-Type": "application/dicom"})
    assert r.status_code in (200, 201), r.text
    return str(ds.StudyInstanceUID)


def test_report_by_accession_shown_on_the_study(served: Served) -> None:
    study = _store_study(served, "RACC1")
    other = _store_study(served, "RACC2")
    m = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||ORU^R01^ORU_R01|RPT1|P|2.5.1",
            "PID|1||P5^^^HOSP||Doe^Jane", "OBR|1|PO5|FO5|CTH^CT Head|||20260310101500"
            "|||||||||||RACC1|||||||F|||||||0099&Strange&Stephen",
            "OBX|1|TX|GDT^Findings||No acute bleed.~Ventricles normal \\T\\ symmetric.||||||F",
            "OBX|2|FT|IMP^Impression||Normal\\.br\\study.||||||F",
            "ZRP|vendor extension")
    (ack,) = send(served, m)
    assert ack["MSA"][1:3] == ["AA", "RPT1"], ack
    body = served.http.get(f"/api/studies/{study}").json()
    (report,) = body["reports"]
    assert report["text"] == "No acute bleed.\nVentricles normal & symmetric.\nNormal\nstudy."
    assert report["status"] == "F" and report["accession"] == "RACC1"
    assert report["author"] == "Strange^Stephen" and report["observed"] == "20260310101500"
    assert served.http.get(f"/api/studies/{other}").json()["reports"] == []


def test_report_by_study_uid_before_the_images(served: Served) -> None:
    uid = generate_uid()
    m = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||ORU^R01|RPT2|P|2.3", "PID|||P6", "OBR|1||FO6|MRB^MR",
            f"OBX|1|ST|113014^Study Instance UID^DCM||{uid}", "OBX|2|TX|GDT^Body||Prelim text||||||P")
    assert send(served, m)[0]["MSA"][1] == "AA"
    assert served.http.get(f"/api/studies/{uid}").status_code == 404
    _store_study(served, "", uid)  # the images come after their report
    (report,) = served.http.get(f"/api/studies/{uid}").json()["reports"]
    assert (report["text"], report["status"]) == ("Prelim text", "P")
    no_text = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||ORU^R01|RPT3|P|2.3", "PID|||P6", "OBR|1||FO7")
    assert send(served, no_text)[0]["MSA"][1] == "AE"


def test_idle_and_oversized_connections_are_closed(served: Served) -> None:
    with socket.create_connection((HOST, served.hl7_port), timeout=10) as sock:
        t0 = time.monotonic()
        assert sock.recv(10) == b""
        assert 1.0 < time.monotonic() - t0 < 8
    with socket.create_connection((HOST, served.hl7_port), timeout=10) as sock:
        sock.sendall(SB + b"MSH|^~\\&|" + b"X" * 9000)
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass  # closed with our bytes unread: a reset is the same answer
    # the listener still serves after both
    ok = msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||ORU^R01|RPT9|P|2.3", "OBR|1||FO9||||||||||||||||ACC99",
             "OBX|1|TX|X||text")
    assert send(served, ok)[0]["MSA"][1:3] == ["AA", "RPT9"]


def test_resent_new_order_keeps_its_entry_and_study(served: Served) -> None:
    first = omi("NW", "601", "C601", "")  # no IPC-3: the archive assigns the study UID
    assert send(served, first)[0]["MSA"][1] == "AA"
    (before,) = [r for r in findscu_w(served, "CT01") if r.AccessionNumber == "ACC601"]
    assert send(served, first)[0]["MSA"][1] == "AA"  # the same message again: its ACK was lost
    (after,) = [r for r in findscu_w(served, "CT01") if r.AccessionNumber == "ACC601"]
    assert after.StudyInstanceUID == before.StudyInstanceUID
    assert len(kept(served, "received", "C601")) == 2
