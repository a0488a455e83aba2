"""Full consistency check of an index (for ``verify`` and tests).

Recomputes every counter, blob refcount, secondary-index entry and the stats
from the instance records alone and reports each disagreement as a string
naming the UID or key concerned.  Reads everything: O(index size).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from . import keys, secondary
from .query import scan
from .records import BlobRecord, InstanceRecord, PatientRecord, SeriesRecord, StudyRecord, syntax_pair
from .rejections import REJECTED_PREFIX, RejectedEntry
from .schema import CF_BLOBS, CF_IDX, CF_INSTANCES, CF_META, CF_PATIENTS, CF_SERIES, CF_STUDIES


def check_index(
    cfs: Mapping[str, Any],
    stats: Callable[[], Mapping[str, int]],
    tier_counts: Callable[[], Mapping[str, tuple[int, int, int]]] | None = None,
    live_packs: Callable[[], Mapping[str, int]] | None = None,
) -> list[str]:
    """Return a list of problems (empty when the index is consistent): the records in `cfs`
    (the index's column families) against each other and against the counters `stats()`."""
    problems: list[str] = []
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # key -> [n, logical, stored]
    study_classes: dict[str, Counter[str]] = defaultdict(Counter)
    study_syntaxes: dict[str, Counter[str]] = defaultdict(Counter)
    refs: Counter[bytes] = Counter()
    expected_idx: set[bytes] = set()
    objects = logical = stored = 0
    for _, v in scan(cfs[CF_INSTANCES], b"", None):
        rec = InstanceRecord.decode(v)
        objects += 1
        logical += rec.logical_len
        stored += rec.stored_len
        refs[rec.hash] += 1
        expected_idx.update(secondary.instance_entries(rec))
        if rec.sop_class_uid:
            study_classes[rec.study_uid][rec.sop_class_uid] += 1
        study_syntaxes[rec.study_uid][syntax_pair(rec)] += 1
        for k in (f"se:{rec.study_uid}/{rec.series_uid}", f"st:{rec.study_uid}", f"pa:{rec.patient_id}"):
            s = sizes[k]
            s[0] += 1
            s[1] += rec.logical_len
            s[2] += rec.stored_len
    # Instances a rejection note hides hold their blob reference outside the hierarchy.
    for _, v in scan(cfs[CF_META], REJECTED_PREFIX, keys.prefix_upper_bound(REJECTED_PREFIX)):
        if v and (entry := RejectedEntry.decode(v)).record:
            refs[InstanceRecord.decode(entry.record).hash] += 1

    def cmp(key: str, what: str, n: int, lg: int, sb: int) -> None:
        exp = sizes.get(key, [0, 0, 0])
        if [n, lg, sb] != exp:
            problems.append(f"{what}: counts (instances, logical, stored) {[n, lg, sb]} != {exp}")

    series_per_study: Counter[str] = Counter()
    mods: dict[str, Counter[str]] = defaultdict(Counter)
    n_series = 0
    for k, v in scan(cfs[CF_SERIES], b"", None):
        se = SeriesRecord.decode(v)
        n_series += 1
        if k != keys.pack(se.study_uid, se.series_uid):
            problems.append(f"series {se.series_uid}: stored under wrong key {k!r}")
        cmp(f"se:{se.study_uid}/{se.series_uid}", f"series {se.series_uid}", se.num_instances,
            se.logical_bytes, se.stored_bytes)
        series_per_study[se.study_uid] += 1
        if se.modality:
            mods[se.study_uid][se.modality] += 1
        expected_idx.update(secondary.series_entries(se))
    studies_per_patient: Counter[str] = Counter()
    series_per_patient: Counter[str] = Counter()
    n_studies = 0
    for _, v in scan(cfs[CF_STUDIES], b"", None):
        st = StudyRecord.decode(v)
        n_studies += 1
        cmp(f"st:{st.study_uid}", f"study {st.study_uid}", st.num_instances, st.logical_bytes,
            st.stored_bytes)
        if st.num_series != series_per_study[st.study_uid]:
            problems.append(f"study {st.study_uid}: num_series {st.num_series} != "
                            f"{series_per_study[st.study_uid]}")
        if Counter(st.modalities) != mods[st.study_uid]:
            problems.append(f"study {st.study_uid}: modalities {st.modalities} != {dict(mods[st.study_uid])}")
        if Counter(st.sop_classes) != study_classes[st.study_uid]:
            problems.append(f"study {st.study_uid}: sop_classes {st.sop_classes} != "
                            f"{dict(study_classes[st.study_uid])}")
        # a summary that does not count every instance (indexed before it existed) is not used
        if st.syntax_pairs() is not None and Counter(st.syntaxes) != study_syntaxes[st.study_uid]:
            problems.append(f"study {st.study_uid}: syntaxes {st.syntaxes} != "
                            f"{dict(study_syntaxes[st.study_uid])}")
        studies_per_patient[st.patient_id] += 1
        series_per_patient[st.patient_id] += st.num_series
        expected_idx.update(secondary.study_entries(st))
    n_patients = 0
    for _, v in scan(cfs[CF_PATIENTS], b"", None):
        pa = PatientRecord.decode(v)
        n_patients += 1
        cmp(f"pa:{pa.patient_id}", f"patient {pa.patient_id!r}", pa.num_instances, pa.logical_bytes,
            pa.stored_bytes)
        if pa.num_studies != studies_per_patient[pa.patient_id]:
            problems.append(f"patient {pa.patient_id!r}: num_studies {pa.num_studies} != "
                            f"{studies_per_patient[pa.patient_id]}")
        if pa.num_series != series_per_patient[pa.patient_id]:
            problems.append(f"patient {pa.patient_id!r}: num_series {pa.num_series} != "
                            f"{series_per_patient[pa.patient_id]}")
        expected_idx.update(secondary.patient_entries(pa))
    n_blobs = blob_bytes = 0
    per_tier: dict[str, tuple[int, int, int]] = {}
    per_pack: dict[str, int] = {}
    for h, v in scan(cfs[CF_BLOBS], b"", None):
        b = BlobRecord.decode(v)
        n_blobs += 1
        blob_bytes += b.stored_len
        c = per_tier.get(b.tier, (0, 0, 0))
        per_tier[b.tier] = (c[0] + 1, c[1] + b.stored_len, c[2] + b.logical_len)
        if b.pack_key:
            per_pack[b.pack_key] = per_pack.get(b.pack_key, 0) + 1
        if b.refcount != refs.get(h, 0):
            problems.append(f"blob {h.hex()}: refcount {b.refcount} != {refs.get(h, 0)}")
    for h in refs:
        if cfs[CF_BLOBS].get(h) is None:
            problems.append(f"blob {h.hex()}: referenced by {refs[h]} instance(s) but has no record")
    actual_idx = {k for k, _ in scan(cfs[CF_IDX], b"", None)}
    for k in sorted(expected_idx - actual_idx)[:20]:
        problems.append(f"idx entry missing: {k!r}")
    for k in sorted(actual_idx - expected_idx)[:20]:
        problems.append(f"idx entry stale: {k!r}")
    expected_stats = {
        "objects": objects, "logical_bytes": logical, "stored_bytes": stored, "patients": n_patients,
        "studies": n_studies, "series": n_series, "blobs": n_blobs, "blob_bytes": blob_bytes,
    }
    if tier_counts is not None and dict(tier_counts()) != per_tier:
        problems.append(f"tier counters {dict(tier_counts())} but the blob records say {per_tier}")
    if live_packs is not None and dict(live_packs()) != per_pack:
        problems.append(f"pack counts {dict(live_packs())} but the blob records say {per_pack}")
    st_now = stats()
    for k, v in expected_stats.items():
        if st_now.get(k) != v:
            problems.append(f"stats[{k}] = {st_now.get(k)} but the records say {v}")
    return problems
