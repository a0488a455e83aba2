"""ADT messages into patient corrections (IHE RAD-12 Patient Update, ITI-8/PIX feeds):

- A08, A31 (update patient information), A01 and A04 (admit, register): the PID demographics
  update the patient PID-3 names, if the archive holds images of them (otherwise there is nothing
  to correct: the message is acknowledged and says so).
- A40 (merge patient): every study of MRG-1 moves under PID-3, which takes PID's demographics.
- A47 (change patient identifier): MRG-1's studies take the ID in PID-3 (a merge into an ID the
  archive may not know yet).

HL7's rule for empty fields holds: an empty field changes nothing; `""` (two double quotes)
empties the attribute. The mapping is in docs/integration.md."""

from __future__ import annotations

from ..patients import PatientUpdates
from .message import Hl7Error, Message
from .orders import patient_segment, person_name

UPDATES = {"A01", "A04", "A08", "A31"}
MERGES = {"A40", "A47"}
HL7_NULL = '""'
# HL7 table 0001 administrative sex -> DICOM PatientSex (M, F, O; unknown is empty)
SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}


def demographics(msg: Message, pid: dict[int, list[str]]) -> dict[str, str]:
    """The Patient Module values PID carries (only those it sends)."""
    out: dict[str, str] = {}
    name_raw = (pid.get(5) or [""])[0]
    if name_raw:
        out["PatientName"] = "" if name_raw == HL7_NULL else person_name(msg, name_raw)
    birth = msg.get(pid, 7)
    if birth:
        out["PatientBirthDate"] = "" if birth == HL7_NULL else birth[:8]
    sex = msg.get(pid, 8)
    if sex:
        if sex != HL7_NULL and sex.upper()[:1] not in SEX:
            raise Hl7Error(f"PID-8 administrative sex {sex!r} is not in HL7 table 0001", "103")
        out["PatientSex"] = "" if sex == HL7_NULL else SEX[sex.upper()[:1]]
    mother = (pid.get(6) or [""])[0]
    if mother:
        out["PatientMotherBirthName"] = "" if mother == HL7_NULL else person_name(msg, mother)
    return out


def apply_patient(msg: Message, updates: PatientUpdates, peer: str) -> str:
    """Applies one ADT message; returns the summary the ACK carries."""
    event = msg.type[1]
    pid, patient_id = patient_segment(msg, "an ADT message")
    values = demographics(msg, pid)
    user = msg.get("MSH", 3) or "HL7"
    if event in UPDATES:
        if updates.index.get_patient(patient_id) is None:
            return f"ADT^{event}: no images of patient {patient_id} here; nothing to update"
        if not values:
            return f"ADT^{event}: patient {patient_id}: no demographics sent; nothing to update"
        studies = updates.update(patient_id, values, source=f"HL7 ADT^{event}", user=user, client=peer)
        what = ", ".join(sorted(values))
        return f"ADT^{event}: patient {patient_id} updated ({what}) in {len(studies)} studies"
    if event in MERGES:
        mrg = next(iter(msg.all("MRG")), None)
        prior = msg.get(mrg, 1) if mrg is not None else ""
        if not prior:
            raise Hl7Error(f"ADT^{event} needs MRG-1 (the prior patient identifier)", "101")
        record = updates.merge(prior, patient_id, values, source=f"HL7 ADT^{event}", user=user, client=peer)
        if record is None:
            return f"ADT^{event}: patient {prior} was already merged into {patient_id}"
        return f"ADT^{event}: patient {prior} merged into {patient_id} ({len(record.studies)} studies)"
    raise Hl7Error(f"ADT^{event} is not a patient update or merge this archive applies", "200", reject=True)
