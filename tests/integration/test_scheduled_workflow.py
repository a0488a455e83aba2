"""IHE Scheduled Workflow end to end against one real `dicomvault serve`, with pynetdicom as the
modality: HL7 order → worklist → the modality queries it → MPPS IN PROGRESS → C-STORE → storage
commitment → MPPS COMPLETED → HL7 report → FHIR ImagingStudy → ADT^A08 correction seen on
C-FIND, C-GET, WADO-RS and FHIR → IOCM rejection of one instance (issue 15's "done when")."""

from __future__ import annotations

import copy
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pydicom
from dicomweb_client.api import DICOMwebClient
from dv_iocm import Image, rejection_note
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from hl7_served import ARCHIVE_AE, HOST, Served, free_port, msg, send, serve_with_hl7
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    KeyObjectSelectionDocumentStorage,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS

MODALITY = "COMMITSCU"  # the modality's AE: the archive's configured peer for commitment reports
STATION = "CT07"
COMMIT_INSTANCE = "1.2.840.10008.1.20.1.1"


def _order(study_uid: str) -> bytes:
    return msg("MSH|^~\\&|RIS|HOSP|DICOMVAULT|HOSP|20261206080000||OMI^O23^OMI_O23|WF1|P|2.5.1",
               "PID|1||P700^^^HOSP^MR||Smyth^Jon||19601010|M",
               "ORC|NW|700|F700||SC", "TQ1|1||||||202612060900",
               "OBR|1|700|F700|CTCH^CT Chest^L",
               f"IPC|ACC700|RP700|{study_uid}|SPS700|CT||||{STATION}")


def _modality_ae() -> AE:
    ae = AE(ae_title=MODALITY)
    for ctx in (ModalityWorklistInformationFind, MPPS, CTImageStorage, KeyObjectSelectionDocumentStorage,
                StorageCommitmentPushModel, StudyRootQueryRetrieveInformationModelFind,
                StudyRootQueryRetrieveInformationModelGet):
        ae.add_requested_context(ctx)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def _worklist_query() -> Dataset:
    q = Dataset()
    q.PatientName = q.PatientID = q.AccessionNumber = q.StudyInstanceUID = q.RequestedProcedureID = ""
    item = Dataset()
    item.ScheduledStationAETitle, item.Modality = STATION, "CT"
    item.ScheduledProcedureStepID = item.ScheduledProcedureStepStartDate = ""
    q.ScheduledProcedureStepSequence = [item]
    return q


def _mpps_create(wl: Dataset) -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID, step.AccessionNumber = wl.StudyInstanceUID, wl.AccessionNumber
    step.RequestedProcedureID = wl.RequestedProcedureID
    step.ScheduledProcedureStepID = wl.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    step.RequestedProcedureDescription = step.ScheduledProcedureStepDescription = ""
    step.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientName, ds.PatientID = wl.PatientName, wl.PatientID
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = "PPS700"
    ds.PerformedStationAETitle = STATION
    ds.PerformedStationName = ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261206", "0902"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = ds.PerformedProtocolCodeSequence = ds.PerformedSeriesSequence = []
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = ""
    ds.Modality, ds.StudyID = "CT", ""
    return ds


def _mpps_completed(series_uid: str, images: list[Dataset]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20261206", "0915"
    s = Dataset()
    s.PerformingPhysicianName = s.OperatorsName = ""
    s.ProtocolName, s.SeriesDescription, s.RetrieveAETitle = "Chest", "axial", ARCHIVE_AE
    s.SeriesInstanceUID = series_uid
    s.ReferencedImageSequence = []
    for im in images:
        r = Dataset()
        r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = im.SOPClassUID, im.SOPInstanceUID
        s.ReferencedImageSequence.append(r)
    s.ReferencedNonImageCompositeSOPInstanceSequence = []
    ds.PerformedSeriesSequence = [s]
    return ds


def _acquire(wl: Dataset, n: int) -> list[Dataset]:
    """What the modality makes of the worklist item: n CT slices with its demographics and UIDs."""
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    out = []
    for i in range(n):
        ds = copy.deepcopy(src)
        ds.PatientName, ds.PatientID = wl.PatientName, wl.PatientID
        ds.StudyInstanceUID, ds.AccessionNumber = wl.StudyInstanceUID, wl.AccessionNumber
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        out.append(ds)
    return out


def _commit(s: Served, assoc: Any, commit_port: int, images: list[Dataset]) -> Dataset:
    """N-ACTION; the N-EVENT-REPORT comes back on an association to our SCP (COMMITSCU's peer port)."""
    reports: list[Dataset] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append(event.event_information)
        arrived.set()
        return 0x0000, None

    scp = AE(ae_title=MODALITY)
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = scp.start_server((HOST, commit_port), block=False,
                              evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        req = Dataset()
        req.TransactionUID = generate_uid()
        req.ReferencedSOPSequence = []
        for im in images:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = im.SOPClassUID, im.SOPInstanceUID
            req.ReferencedSOPSequence.append(item)
        status, _ = assoc.send_n_action(req, 1, StorageCommitmentPushModel, COMMIT_INSTANCE)
        assert status.Status == 0x0000
        assert arrived.wait(20), "no N-EVENT-REPORT"
    finally:
        server.shutdown()
    return reports[0]


def _study_find(assoc: Any, study_uid: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel, q.StudyInstanceUID = "STUDY", study_uid
    q.PatientName = q.PatientID = q.NumberOfStudyRelatedInstances = ""
    found = [ident for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)
             if status.Status in (0xFF00, 0xFF01)]
    assert len(found) == 1
    return found[0]


def _c_get(ae: AE, s: Served, study_uid: str) -> list[Dataset]:
    got: list[Dataset] = []

    def on_store(event: Any) -> int:
        got.append(event.dataset)
        return 0x0000

    assoc = ae.associate(HOST, s.arch.port, ae_title=ARCHIVE_AE, ext_neg=[_scp_role(CTImageStorage)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        q = Dataset()
        q.QueryRetrieveLevel, q.StudyInstanceUID = "STUDY", study_uid
        statuses = [st.Status for st, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet)]
        assert statuses[-1] == 0x0000
    finally:
        assoc.release()
    return got


def _scp_role(sop_class: str) -> Any:
    from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid, role.scu_role, role.scp_role = sop_class, False, True
    return role


def test_a_scheduled_exam_end_to_end(tmp_path: Path) -> None:
    commit_port = free_port()
    with serve_with_hl7(tmp_path / "site", commit_port=commit_port) as s:
        study_uid = generate_uid()
        # 1. the RIS orders the exam
        (ack,) = send(s, _order(study_uid))
        assert ack["MSA"][1] == "AA", ack
        ae = _modality_ae()
        assoc = ae.associate(HOST, s.arch.port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        try:
            # 2. the modality pulls the worklist
            found = assoc.send_c_find(_worklist_query(), ModalityWorklistInformationFind)
            answers = [ident for st, ident in found if st.Status in (0xFF00, 0xFF01)]
            (wl,) = [a for a in answers if a.AccessionNumber == "ACC700"]
            assert (wl.PatientID, str(wl.PatientName)) == ("P700", "Smyth^Jon")
            assert wl.StudyInstanceUID == study_uid
            # 3. MPPS IN PROGRESS, the images, storage commitment, MPPS COMPLETED
            mpps_uid = generate_uid()
            rsp, _ = assoc.send_n_create(_mpps_create(wl), MPPS, mpps_uid)
            assert rsp.Status == 0x0000
            images = _acquire(wl, 3)
            for ds in images:
                assert assoc.send_c_store(ds).Status == 0x0000
            report = _commit(s, assoc, commit_port, images)
            assert {r.ReferencedSOPInstanceUID for r in report.ReferencedSOPSequence} == {
                im.SOPInstanceUID for im in images}
            assert "FailedSOPSequence" not in report
            rsp, _ = assoc.send_n_set(_mpps_completed(images[0].SeriesInstanceUID, images), MPPS, mpps_uid)
            assert rsp.Status == 0x0000
        finally:
            assoc.release()
        key = urllib.parse.quote("ACC700^RP700^SPS700", safe="")
        entry = s.http.get(f"/api/worklist/{key}").json()
        assert entry["status"] == "COMPLETED" and entry["mpps"] == [mpps_uid]
        # 4. the radiologist's report arrives over HL7 and shows on the study
        (ack,) = send(s, msg("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20261206||ORU^R01^ORU_R01|WF2|P|2.5.1",
                             "PID|1||P700^^^HOSP||Smyth^Jon", "OBR|1|700|F700|CTCH^CT Chest|||20261206100000"
                             "|||||||||||ACC700|||||||F", "OBX|1|TX|GDT^Findings||Lungs clear.||||||F"))
        assert ack["MSA"][1] == "AA", ack
        study = s.http.get(f"/api/studies/{study_uid}").json()
        assert [r["text"] for r in study["reports"]] == ["Lungs clear."]
        # 5. the EHR finds the study over FHIR, with an endpoint to the archive's DICOMweb
        bundle = s.http.get("/fhir/r4/ImagingStudy", params={"patient.identifier": "P700"}).json()
        (res,) = [e["resource"] for e in bundle.get("entry", [])]
        ImagingStudy.model_validate(res)
        assert res["numberOfInstances"] == 3 and any(i["value"] == f"urn:oid:{study_uid}"
                                                     for i in res["identifier"])
        # 6. the HIS corrects the name: every way out carries it, the stored bytes do not change
        (ack,) = send(s, msg("MSH|^~\\&|HIS|HOSP|PACS|HOSP|20261206||ADT^A08^ADT_A01|WF3|P|2.5.1",
                             "EVN|A08|20261206", "PID|1||P700^^^HOSP||Smith^John||19601010|M"))
        assert ack["MSA"][1] == "AA", ack
        assoc = ae.associate(HOST, s.arch.port, ae_title=ARCHIVE_AE)
        try:
            assert str(_study_find(assoc, study_uid).PatientName) == "Smith^John"
        finally:
            assoc.release()
        got = _c_get(ae, s, study_uid)
        assert {str(ds.PatientName) for ds in got} == {"Smith^John"} and len(got) == 3
        web = DICOMwebClient(url=str(s.http.base_url) + "/dicom-web", headers=dict(s.http.headers))
        assert {str(ds.PatientName) for ds in web.retrieve_study(study_uid)} == {"Smith^John"}
        patients = s.http.get("/fhir/r4/Patient", params={"identifier": "P700"}).json()
        (pat,) = [e["resource"] for e in patients.get("entry", [])]
        Patient.model_validate(pat)
        assert pat["name"][0]["family"] == "Smith"
        # 7. QC rejects one image (IOCM): gone from C-FIND and WADO, the others stay
        stored = [Image(Path(), study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID)
                  for ds in images]
        kos_path = tmp_path / "kos.dcm"
        rejection_note(kos_path, stored[:1], code="113001", patient_id="P700")
        assoc = ae.associate(HOST, s.arch.port, ae_title=ARCHIVE_AE)
        try:
            assert assoc.send_c_store(pydicom.dcmread(kos_path)).Status == 0x0000
            q = Dataset()
            q.QueryRetrieveLevel, q.StudyInstanceUID, q.SOPInstanceUID = "IMAGE", study_uid, ""
            q.SeriesInstanceUID = images[0].SeriesInstanceUID
            found = assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)
            left = {str(i.SOPInstanceUID) for st, i in found if st.Status in (0xFF00, 0xFF01)}
        finally:
            assoc.release()
        assert left == {images[1].SOPInstanceUID, images[2].SOPInstanceUID}
        r = s.http.get(f"/dicom-web/studies/{study_uid}/series/{images[0].SeriesInstanceUID}/instances/"
                       f"{images[0].SOPInstanceUID}",
                       headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert r.status_code == 404
