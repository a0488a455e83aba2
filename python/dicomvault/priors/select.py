"""Which of a patient's studies are relevant priors for an order: the relevance rule of [priors].

An order names a modality and a procedure in words (Requested Procedure Description, its code
meaning, the step description); a prior names its body part in its series' BodyPartExamined
(a DICOM defined term: CHEST, HEAD, LSPINE, ...). Both are brought to those terms through a
synonym table: a term matches where the text holds the term or one of its synonyms as whole
words ("CT THORAX W/O" -> CHEST; "C-SPINE" -> CSPINE). A prior none of whose series has a
BodyPartExamined is read from its study and series descriptions instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from ..index import Index
from ..integration.priors_settings import PriorsConfig
from ..integration.worklist_entry import WorklistEntry

# DICOM BodyPartExamined defined terms (PS3.16 Annex L) and the words an order or a description
# uses for them. A term always matches itself.
BODY_PARTS: dict[str, tuple[str, ...]] = {
    "HEAD": ("BRAIN", "SKULL", "CRANIUM", "CRANIAL", "CEREBRAL", "NEURO"),
    "NECK": ("THYROID", "CAROTID", "LARYNX"),
    "CHEST": ("THORAX", "LUNG", "LUNGS", "PULMONARY", "RIBS", "CXR"),
    "ABDOMEN": ("ABD", "ABDOMINAL", "LIVER", "PANCREAS", "KIDNEY", "KIDNEYS", "RENAL", "SPLEEN"),
    "PELVIS": ("PELVIC", "BLADDER", "PROSTATE", "UTERUS"),
    "CSPINE": ("C SPINE", "CERVICAL SPINE"),
    "TSPINE": ("T SPINE", "THORACIC SPINE", "DORSAL SPINE"),
    "LSPINE": ("L SPINE", "LUMBAR", "LUMBAR SPINE"),
    "SPINE": ("WHOLE SPINE",),
    "BREAST": ("MAMMO", "MAMMOGRAPHY", "MAMMOGRAM"),
    "HEART": ("CARDIAC", "CORONARY", "CORONARIES"),
    "SHOULDER": (), "ELBOW": (), "WRIST": (), "HAND": (), "HIP": (), "KNEE": (), "ANKLE": (), "FOOT": (),
    "EXTREMITY": ("LIMB",),
}


def _words(text: str) -> str:
    """Upper-case words separated by single spaces, padded, so ' TERM ' finds whole words."""
    return " " + " ".join(re.split(r"[^A-Z0-9]+", text.upper())).strip() + " "


class BodyParts:
    """The synonym table: built-in terms plus the configured extra synonyms."""

    def __init__(self, extra: Mapping[str, Iterable[str]] | None = None) -> None:
        table = {k: list(v) for k, v in BODY_PARTS.items()}
        for term, words in (extra or {}).items():
            table.setdefault(term.upper(), []).extend(w.upper() for w in words)
        self._table = {term: [_words(w) for w in (term, *words)] for term, words in table.items()}

    def terms_in(self, *texts: str) -> frozenset[str]:
        """The terms any of the texts names."""
        found = set()
        for text in texts:
            if not text:
                continue
            padded = _words(text)
            found.update(term for term, words in self._table.items() if any(w in padded for w in words))
        return frozenset(found)


@dataclass(frozen=True)
class Prior:
    study_uid: str
    study_date: str  # YYYYMMDD, "" if the study has none
    description: str
    modalities: frozenset[str]
    body_parts: frozenset[str]

    def summary(self) -> dict[str, object]:
        return {"study_uid": self.study_uid, "study_date": self.study_date, "description": self.description,
                "modalities": sorted(self.modalities), "body_parts": sorted(self.body_parts)}


def patient_studies(index: Index, patient_id: str, parts: BodyParts) -> list[Prior]:
    """The patient's studies in the index with their modalities and body parts (from series)."""
    out = []
    rows = index.find("STUDY", {"PatientID": patient_id, "StudyDate": "", "StudyDescription": ""})
    for row in rows:
        if row.get("PatientID") != patient_id:
            # C-FIND matching has no escape for '*' and '?' (PS3.4 C.2.2.2.4): an id holding one
            # matched others too
            continue
        uid = row["StudyInstanceUID"]
        series = list(index.find("SERIES", {"StudyInstanceUID": uid, "Modality": "", "BodyPartExamined": "",
                                            "SeriesDescription": ""}))
        modalities = frozenset(s["Modality"].upper() for s in series if s.get("Modality"))
        body = parts.terms_in(*(s.get("BodyPartExamined", "") for s in series))
        if not body:  # no BodyPartExamined anywhere: what the descriptions say
            body = parts.terms_in(row.get("StudyDescription", ""),
                                  *(s.get("SeriesDescription", "") for s in series))
        out.append(Prior(uid, row.get("StudyDate", "") or "", row.get("StudyDescription", "") or "",
                         modalities, body))
    return out


def order_body_parts(entry: WorklistEntry, parts: BodyParts) -> frozenset[str]:
    code = entry.procedure_code
    meaning = code[2] if len(code) > 2 else ""
    return parts.terms_in(entry.procedure, entry.step_description, meaning)


def _cutoff(today: date, years: float) -> str:
    """YYYYMMDD `years` before `today` (fractions of a year as 365.25 days)."""
    whole = int(years)
    try:
        start = today.replace(year=today.year - whole)
    except ValueError:  # 29 February
        start = today.replace(year=today.year - whole, day=28)
    start -= timedelta(days=round((years - whole) * 365.25))
    return start.strftime("%Y%m%d")


def relevant(entry: WorklistEntry, prior: Prior, settings: PriorsConfig, order_parts: frozenset[str]
             ) -> list[str] | None:
    """The criteria the prior meets (None: not relevant). A criterion the order cannot be
    compared on (no modality, no body part recognised) is left out; with none left, nothing is
    relevant (an order that says nothing would otherwise fetch every study of the patient)."""
    checks: dict[str, bool] = {}
    if "modality" in settings.match and entry.modality:
        checks["modality"] = entry.modality.upper() in prior.modalities
    if "body_part" in settings.match and order_parts:
        checks["body_part"] = bool(order_parts & prior.body_parts)
    if not checks:
        return None
    met = [k for k, ok in checks.items() if ok]
    if settings.require == "all" and len(met) < len(checks) or not met:
        return None
    return met


def select_priors(index: Index, entry: WorklistEntry, settings: PriorsConfig, *,
                  today: date | None = None) -> tuple[list[tuple[Prior, list[str]]], frozenset[str]]:
    """(the relevant priors, newest first, at most `count`, each with the criteria it met; the
    body parts read from the order). The order's own study is never its prior; a study without
    a date or older than max_age_years is not considered."""
    parts = BodyParts(settings.body_parts)
    order_parts = order_body_parts(entry, parts)
    cutoff = _cutoff(today or date.today(), settings.max_age_years)
    chosen = []
    for p in patient_studies(index, entry.patient_id, parts):
        if p.study_uid == entry.study_uid or not p.study_date or p.study_date < cutoff:
            continue
        met = relevant(entry, p, settings, order_parts)
        if met is not None:
            chosen.append((p, met))
    chosen.sort(key=lambda pm: (pm[0].study_date, pm[0].study_uid), reverse=True)
    return chosen[: settings.count], order_parts
