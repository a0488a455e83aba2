"""Per-study tier bookkeeping in the index's meta column family.

Moves are by study, and policies reason about studies (age, last access, modality, size), so
each study moved off the compaction tier has a record `tier/study/<uid>` (msgpack: tier,
moved_at, promoted_until). Last access times are kept as `tier/access/<uid>`: reads note them
in memory (`Engine.accessed`) and `flush_access` writes them in one batch now and then, so a
retrieve never waits on an index write.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from ..engine import Engine
from .policy import StudyPlacement

STUDY_PREFIX = b"tier/study/"
ACCESS_PREFIX = b"tier/access/"


@dataclass(frozen=True)
class StudyTier:
    tier: str
    moved_at: float = 0.0
    promoted_until: float | None = None


def home_tier(engine: Engine) -> str:
    """Where a study lives before any policy moved it: the first tier that compresses (the
    compactor's destination), or the landing tier itself in inline mode."""
    for t in engine.local_tiers:
        if t.codec != "raw":
            return t.name
    return engine.tiers[0].name


def get(engine: Engine, study_uid: str) -> StudyTier:
    raw = engine.index.get_meta(STUDY_PREFIX + study_uid.encode())
    if not raw:
        return StudyTier(home_tier(engine))
    d = msgpack.unpackb(raw)
    return StudyTier(d["tier"], d.get("moved_at", 0.0), d.get("promoted_until"))


def put(engine: Engine, study_uid: str, st: StudyTier) -> None:
    value = msgpack.packb({"tier": st.tier, "moved_at": st.moved_at, "promoted_until": st.promoted_until})
    engine.index.put_meta(STUDY_PREFIX + study_uid.encode(), value)


def all_tiers(engine: Engine) -> dict[str, StudyTier]:
    out = {}
    for k, v in engine.index.meta_items(STUDY_PREFIX):
        d = msgpack.unpackb(v)
        uid = k[len(STUDY_PREFIX):].decode()
        out[uid] = StudyTier(d["tier"], d.get("moved_at", 0.0), d.get("promoted_until"))
    return out


def flush_access(engine: Engine) -> int:
    """Writes the last-access times noted since the last flush; how many studies."""
    noted, engine.accessed = engine.accessed, {}
    engine.index.put_meta_many({ACCESS_PREFIX + uid.encode(): repr(at).encode() for uid, at in noted.items()})
    return len(noted)


def placements(engine: Engine) -> list[StudyPlacement]:
    """Every study as the policies see it."""
    flush_access(engine)
    tiers = all_tiers(engine)
    access = {k[len(ACCESS_PREFIX):].decode(): float(v) for k, v in engine.index.meta_items(ACCESS_PREFIX)}
    home = home_tier(engine)
    out = []
    for s in engine.index.studies():
        st = tiers.get(s.study_uid, StudyTier(home))
        out.append(
            StudyPlacement(
                study_uid=s.study_uid,
                tier=st.tier,
                received_at=s.updated_at or s.created_at,
                last_access=access.get(s.study_uid),
                modalities=frozenset(s.modalities_in_study()),
                logical_bytes=s.logical_bytes,
                stored_bytes=s.stored_bytes,
                promoted_until=st.promoted_until,
            )
        )
    return out
