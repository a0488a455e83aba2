"""Patient corrections from the HIS: demographics updates, merges (and their undoing), kept in the
index while the stored objects stay byte-identical as received.

An update sets the patient record's attributes and, on each of the patient's studies, the same
values in the study's attributes (what C-FIND, QIDO and the viewer answer: a study-level view
carries the patient attributes, and an image-level one lays it over the instance's own) and in
``StudyRecord.coerced`` (what coercion.py writes into each object leaving the archive).

A merge moves every study of the prior patient under the survivor: the study records change
owner, the counters move, the prior patient record goes, and the survivor's values become each
moved study's coerced values. What the merge changed is kept in the meta column family under
``pt/merge/E(prior PatientID)`` (a :class:`MergeRecord`), so that an admin can undo it exactly,
and so that an object still arriving with the prior ID (a modality that had cached it) lands in
a study under the survivor. An identifier change (HL7 A47) is a merge into a patient that does
not exist yet.

Each correction is a feed entry (PATIENT_UPDATED, PATIENTS_MERGED, MERGE_UNDONE) whose
``detail`` holds what a replica needs to apply the same correction (:meth:`apply_patient_change`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from . import keys, secondary
from .errors import CorrectionConflictError, CorrectionError, NotFoundError
from .query import scan, scan_keys
from .records import (
    MERGE_UNDONE,
    PATIENT_KEYWORDS,
    PATIENT_UPDATED,
    PATIENTS_MERGED,
    Change,
    InstanceRecord,
    PatientRecord,
    Record,
    StudyRecord,
    _finish,
)
from .schema import CF_IDX, CF_INSTANCES, CF_META, CF_PATIENTS, CF_STUDIES
from .txn import Txn

T = TypeVar("T")
MERGE_PREFIX = b"pt/merge/"
# One key per study that has (or had) coerced values: read into a set at open, so a read of a
# study nobody corrected (nearly all of them) costs a set lookup, not an index read.
COERCED_PREFIX = b"pt/c/"
# The attributes an update may set: the Patient Module's, except the ID (a change of ID is a
# merge: the patients column family is keyed by it).
UPDATABLE: frozenset[str] = PATIENT_KEYWORDS - {"PatientID"}
_COUNTERS = ("num_series", "num_instances", "logical_bytes", "stored_bytes")


@_finish
@dataclass(slots=True)
class MergeRecord(Record):
    """One merge (meta CF, ``pt/merge/E(prior)``): enough to undo it exactly."""

    KIND: ClassVar[str] = "merge"
    prior_id: str = ""
    survivor_id: str = ""
    at: float = 0.0
    prior_attrs: dict[str, str] = field(default_factory=dict)
    prior_created_at: float = 0.0
    prior_corrected_at: float = 0.0
    # whether the merge created the survivor's record (an identifier change): undone, it goes
    survivor_created: bool = False
    # study UID -> [its patient attributes before the merge, its coerced values before the merge]
    studies: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def merge_key(prior_id: str) -> bytes:
    return MERGE_PREFIX + keys.encode(keys.norm_text(prior_id))


def patient_values(patient: PatientRecord) -> dict[str, str]:
    """The patient's current Patient Module values, its ID included."""
    values = {k: v for k, v in patient.attrs.items() if k in UPDATABLE}
    values["PatientID"] = patient.patient_id
    return values


def check_values(values: Mapping[str, str]) -> dict[str, str]:
    """The update as plain strings; raises CorrectionError for a keyword an update may not set."""
    bad = sorted(k for k in values if k not in UPDATABLE)
    if bad:
        hint = " (change an ID with a merge)" if "PatientID" in bad else ""
        raise CorrectionError(f"not patient attributes an update may set: {', '.join(bad)}{hint}; "
                                   f"allowed: {', '.join(sorted(UPDATABLE))}")
    return {k: "" if v is None else str(v) for k, v in values.items()}


def _assign(attrs: dict[str, str], values: Mapping[str, str]) -> None:
    """Set each value; an empty one removes the attribute (as the index keeps what was received)."""
    for k, v in values.items():
        if v:
            attrs[k] = v
        else:
            attrs.pop(k, None)


def _retarget(study: StudyRecord, values: Mapping[str, str]) -> None:
    """Give a study the patient values ``values`` (complete: a patient attribute the study has
    but ``values`` lacks is emptied), in its attributes and in what leaves the archive."""
    full = {**{k: "" for k in study.attrs if k in UPDATABLE}, **values}
    _assign(study.attrs, full)
    study.coerced.update(full)


def _move_counts(study: StudyRecord, src: PatientRecord | None, dst: PatientRecord) -> None:
    dst.num_studies += 1
    for c in _COUNTERS:
        setattr(dst, c, getattr(dst, c) + getattr(study, c))
    if src is not None:
        src.num_studies -= 1
        for c in _COUNTERS:
            setattr(src, c, getattr(src, c) - getattr(study, c))


class PatientCorrections:
    """Index methods of patient corrections (mixed into index.store.Index, whose ``_commit``,
    ``_cfs`` and writers' lock they use)."""

    _cfs: dict[str, Any]
    _has_merges: bool
    _coerced_studies: set[str]
    _commit: Callable[..., tuple[Any, Txn]]
    iter_sop_uids_of: Callable[[str, str], Iterator[str]]

    def _reown(self, txn: Txn, study_uid: str, patient_id: str) -> None:
        """The study's instance records name their new patient (deletes, audits and `check` go by it)."""
        for sop in self.iter_sop_uids_of("study", study_uid):
            key = keys.encode(sop)
            rec: InstanceRecord | None = txn.get(CF_INSTANCES, key)
            if rec is not None and rec.patient_id != patient_id:
                rec.patient_id = patient_id
                txn.put(CF_INSTANCES, key, rec)

    # ---------------------------------------------------------------- reads

    def studies_of_patient(self, patient_id: str) -> list[str]:
        p = secondary.IDX_STUDY_PATIENT_ID.prefix + keys.encode(keys.norm_text(patient_id))
        idx = self._cfs[CF_IDX]
        return [keys.decode_at(k, len(p))[0] for k in scan_keys(idx, p, keys.prefix_upper_bound(p))]

    def _load_coerced(self) -> None:
        p = COERCED_PREFIX
        self._coerced_studies = {keys.decode_at(k, len(p))[0]
                                 for k, v in scan(self._cfs[CF_META], p, keys.prefix_upper_bound(p)) if v}

    def _mark_coerced(self, txn: Txn, study: StudyRecord) -> None:
        if study.coerced and study.study_uid not in self._coerced_studies:
            txn.meta[COERCED_PREFIX + keys.encode(study.study_uid)] = b"1"
            self._coerced_studies.add(study.study_uid)  # early is harmless: one lookup more

    def coercion_of(self, study_uid: str) -> dict[str, str]:
        """What leaves the archive for this study's objects differs from the stored bytes by these
        patient attributes (empty: nothing; send the bytes as received)."""
        uid = keys.norm_uid(study_uid)
        if uid not in self._coerced_studies:
            return {}
        raw = self._cfs[CF_STUDIES].get(keys.encode(uid))
        if raw is None:
            return {}
        return dict(StudyRecord.fields_of(raw).get("coerced") or {})

    def merge_of(self, prior_id: str) -> MergeRecord | None:
        raw = self._cfs[CF_META].get(merge_key(prior_id))
        return MergeRecord.decode(raw) if raw else None

    def merges(self) -> Iterator[MergeRecord]:
        """Every merge still in force, by prior PatientID."""
        p = MERGE_PREFIX
        for _, raw in scan(self._cfs[CF_META], p, keys.prefix_upper_bound(p)):
            if raw:
                yield MergeRecord.decode(raw)

    def _any_merge(self) -> bool:
        return any(True for _ in self.merges())

    # ---------------------------------------------------------------- in a txn

    def _merge_in(self, txn: Txn, prior_id: str) -> MergeRecord | None:
        k = merge_key(prior_id)
        raw = txn.meta.get(k)
        if raw is None:
            raw = self._cfs[CF_META].get(k)
        return MergeRecord.decode(raw) if raw else None

    def _survivor(self, txn: Txn, patient_id: str) -> str:
        """Where an object arriving with ``patient_id`` belongs (merges followed, in a bounded
        chain: a merge into a patient that was later merged again)."""
        pid = patient_id
        for _ in range(16):
            m = self._merge_in(txn, pid)
            if m is None:
                return pid
            pid = m.survivor_id
        return pid

    def _new_study_values(self, txn: Txn, study: StudyRecord, patient: PatientRecord | None,
                          received_id: str, received: Mapping[str, str]) -> None:
        """A new study of a patient the HIS corrected (or of a merged ID) takes the patient's
        current values; those its objects carry differently become its coerced values."""
        if study.patient_id != received_id:
            study.coerced["PatientID"] = study.patient_id
        if patient is None or not (patient.corrected_at or study.patient_id != received_id):
            self._mark_coerced(txn, study)
            return
        values = patient_values(patient)
        full = {k: values.get(k, "") for k in set(values) | {k for k in received if k in UPDATABLE}}
        study.coerced.update({k: v for k, v in full.items() if received.get(k, "") != v})
        _assign(study.attrs, full)
        self._mark_coerced(txn, study)

    def _update_in(self, txn: Txn, patient_id: str, values: Mapping[str, str], *, strict: bool = True
                   ) -> list[str]:
        pid = keys.norm_text(patient_id)
        pkey = keys.encode(pid)
        patient: PatientRecord | None = txn.get(CF_PATIENTS, pkey)
        if patient is None:
            if strict:
                raise NotFoundError("patient", patient_id)
            return []
        _assign(patient.attrs, values)
        patient.corrected_at = patient.updated_at = txn.now
        txn.put(CF_PATIENTS, pkey, patient)
        studies = self.studies_of_patient(pid)
        for uid in studies:
            skey = keys.encode(uid)
            study: StudyRecord | None = txn.get(CF_STUDIES, skey)
            if study is None:
                continue
            _assign(study.attrs, values)
            study.coerced.update(values)
            study.updated_at = txn.now
            self._mark_coerced(txn, study)
            txn.put(CF_STUDIES, skey, study)
        txn.add_change(Change(kind=PATIENT_UPDATED, level="patient", patient_id=pid,
                              detail={"values": dict(values)}))
        return studies

    def _merge_into(self, txn: Txn, prior_id: str, survivor_id: str,
                    survivor_values: Mapping[str, str] | None, *, strict: bool = True) -> MergeRecord | None:
        prior, survivor = keys.norm_text(prior_id), keys.norm_text(survivor_id)
        if not prior or not survivor or prior == survivor:
            raise CorrectionError(f"cannot merge patient {prior_id!r} into {survivor_id!r}")
        done = self._merge_in(txn, prior)
        if done is not None:
            if done.survivor_id == survivor or not strict:
                return None  # already merged (a replayed or repeated message)
            raise CorrectionConflictError(f"patient {prior!r} was already merged into {done.survivor_id!r}")
        if self._merge_in(txn, survivor) is not None:
            raise CorrectionConflictError(f"patient {survivor!r} was itself merged into "
                                       f"{self._survivor(txn, survivor)!r}: merge into that one")
        src: PatientRecord | None = txn.get(CF_PATIENTS, keys.encode(prior))
        dst: PatientRecord | None = txn.get(CF_PATIENTS, keys.encode(survivor))
        created = dst is None
        if dst is None:
            base = {k: v for k, v in (src.attrs if src is not None else {}).items() if k in UPDATABLE}
            dst = PatientRecord(patient_id=survivor, attrs=base, created_at=txn.now)
            txn.stats.patients += 1
        _assign(dst.attrs, survivor_values or {})
        dst.corrected_at = dst.updated_at = txn.now
        record = MergeRecord(prior_id=prior, survivor_id=survivor, at=txn.now, survivor_created=created,
                             prior_attrs=dict(src.attrs) if src is not None else {},
                             prior_created_at=src.created_at if src is not None else 0.0,
                             prior_corrected_at=src.corrected_at if src is not None else 0.0)
        values = patient_values(dst)
        for uid in self.studies_of_patient(prior):
            skey = keys.encode(uid)
            study: StudyRecord | None = txn.get(CF_STUDIES, skey)
            if study is None:
                continue
            record.studies[uid] = [{k: v for k, v in study.attrs.items() if k in UPDATABLE},
                                   dict(study.coerced)]
            study.patient_id = survivor
            study.attrs["PatientID"] = survivor
            self._reown(txn, uid, survivor)
            _retarget(study, values)
            study.updated_at = txn.now
            self._mark_coerced(txn, study)
            _move_counts(study, src, dst)
            txn.put(CF_STUDIES, skey, study)
        if src is not None:
            txn.delete(CF_PATIENTS, keys.encode(prior))
            txn.stats.patients -= 1
        txn.put(CF_PATIENTS, keys.encode(survivor), dst)
        txn.meta[merge_key(prior)] = record.encode()
        self._has_merges = True
        txn.add_change(Change(kind=PATIENTS_MERGED, level="patient", patient_id=survivor,
                              detail={"prior": prior, "survivor": survivor,
                                      "values": dict(survivor_values or {})}))
        return record

    def _unmerge_in(self, txn: Txn, prior_id: str, *, strict: bool = True) -> MergeRecord | None:
        prior = keys.norm_text(prior_id)
        record = self._merge_in(txn, prior)
        if record is None:
            if strict:
                raise NotFoundError("patient merge", prior_id)
            return None
        survivor = record.survivor_id
        dst: PatientRecord | None = txn.get(CF_PATIENTS, keys.encode(survivor))
        src = PatientRecord(patient_id=prior, attrs=dict(record.prior_attrs),
                            created_at=record.prior_created_at or txn.now,
                            corrected_at=record.prior_corrected_at, updated_at=txn.now)
        for uid, (attrs, coerced) in record.studies.items():
            skey = keys.encode(uid)
            study: StudyRecord | None = txn.get(CF_STUDIES, skey)
            if study is None or study.patient_id != survivor:
                continue  # deleted since, or moved again by a later correction
            study.patient_id = prior
            study.attrs["PatientID"] = prior
            self._reown(txn, uid, prior)
            for k in [k for k in study.attrs if k in UPDATABLE]:
                del study.attrs[k]
            study.attrs.update(attrs)
            study.coerced = dict(coerced)
            study.updated_at = txn.now
            self._mark_coerced(txn, study)
            if dst is not None:
                _move_counts(study, dst, src)
            else:
                _move_counts(study, None, src)
            txn.put(CF_STUDIES, skey, study)
        txn.put(CF_PATIENTS, keys.encode(prior), src)
        txn.stats.patients += 1
        if dst is not None:
            if record.survivor_created and dst.num_studies <= 0:
                txn.delete(CF_PATIENTS, keys.encode(survivor))
                txn.stats.patients -= 1
            else:
                dst.updated_at = txn.now
                txn.put(CF_PATIENTS, keys.encode(survivor), dst)
        txn.meta[merge_key(prior)] = b""
        txn.add_change(Change(kind=MERGE_UNDONE, level="patient", patient_id=prior,
                              detail={"prior": prior, "survivor": survivor}))
        return record

    def _apply_patient_change(self, txn: Txn, ch: Change) -> None:
        """A correction shipped from another site, applied here the same way (leniently: what it
        names may be gone, or already applied by a replayed page)."""
        d = ch.detail or {}
        if ch.kind == PATIENT_UPDATED:
            self._update_in(txn, ch.patient_id, d.get("values") or {}, strict=False)
        elif ch.kind == PATIENTS_MERGED:
            self._merge_into(txn, d.get("prior", ""), d.get("survivor", ""), d.get("values") or None,
                             strict=False)
        elif ch.kind == MERGE_UNDONE:
            self._unmerge_in(txn, d.get("prior", ""), strict=False)

    # ---------------------------------------------------------------- the public writes

    def update_patient(self, patient_id: str, values: Mapping[str, str]) -> list[str]:
        """Set Patient Module attributes of a patient (a value "" empties one); returns the UIDs
        of the studies whose outgoing objects change. NotFoundError for an unknown patient."""
        vals = check_values(values)
        if not vals:
            return []
        out, _ = self._commit(f"update patient {patient_id}",
                              lambda txn: self._update_in(txn, patient_id, vals))
        return out

    def merge_patients(self, prior_id: str, survivor_id: str,
                       survivor_values: Mapping[str, str] | None = None) -> MergeRecord | None:
        """Move every study of ``prior_id`` under ``survivor_id`` (created if new: an identifier
        change), optionally updating the survivor's values in the same batch. Returns what the
        merge changed, or None if exactly this merge was already done."""
        vals = check_values(survivor_values or {})
        out, _ = self._commit(f"merge patient {prior_id} into {survivor_id}",
                              lambda txn: self._merge_into(txn, prior_id, survivor_id, vals))
        return out

    def unmerge_patients(self, prior_id: str) -> MergeRecord:
        """Undo the merge of ``prior_id``: its studies (those still under the survivor) go back
        with the values they had. NotFoundError if it is not merged."""
        out, _ = self._commit(f"undo merge of patient {prior_id}",
                              lambda txn: self._unmerge_in(txn, prior_id))
        assert out is not None
        return out
