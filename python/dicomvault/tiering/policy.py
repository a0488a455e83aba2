"""Which studies the tiering policies move: pure selection over data the caller supplies (the
migrator reads placements and usage from the index and the tiers, then carries out the plan).

`plan(policy, ...)` applies one policy; `plan_all(settings, ...)` applies every policy in order,
moves a study at most once per run and projects each planned move onto the tiers' usage, so a
watermark policy after an age policy counts the bytes already leaving its tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..storage.settings import DAY, PolicySpec, TieringSettings, format_size


@dataclass(frozen=True)
class StudyPlacement:
    study_uid: str
    tier: str  # the tier holding (most of) its blobs
    received_at: float  # epoch seconds, its newest instance's receipt
    last_access: float | None  # epoch seconds of its last read; None = never read
    modalities: frozenset[str]
    logical_bytes: int
    stored_bytes: int  # what it occupies on its tier
    promoted_until: float | None = None  # a promoted study is not moved down before this time

    @property
    def accessed_at(self) -> float:
        """Its last read, or its receipt if it was never read (how idle it is)."""
        return self.received_at if self.last_access is None else self.last_access


@dataclass(frozen=True)
class PlannedMove:
    study_uid: str
    from_tier: str
    to_tier: str
    policy: str
    reason: str  # for people: the log and `tier plan` output
    stored_bytes: int


def _days(seconds: float) -> str:
    return f"{seconds / DAY:.0f}"


def _match(policy: PolicySpec, study: StudyPlacement, now: float) -> str | None:
    """Why `study` meets every criterion of `policy` (its reason), or None if one fails."""
    reasons: list[str] = []
    if policy.min_age_days is not None:
        age = now - study.received_at
        if age < policy.min_age_days * DAY:
            return None
        reasons.append(f"received {_days(age)} days ago (>= {policy.min_age_days:g})")
    if policy.idle_days is not None:
        idle = now - study.accessed_at
        if idle < policy.idle_days * DAY:
            return None
        what = "never read" if study.last_access is None else "last read"
        reasons.append(f"{what}, idle {_days(idle)} days (>= {policy.idle_days:g})")
    if policy.modalities:
        common = {m.upper() for m in study.modalities} & policy.modalities
        if not common:
            return None
        reasons.append(f"modality {', '.join(sorted(common))}")
    lo, hi = policy.min_study_bytes, policy.max_study_bytes
    if (lo is not None and study.logical_bytes < lo) or (hi is not None and study.logical_bytes > hi):
        return None
    bounds = ([f">= {format_size(lo)}"] if lo else []) + ([f"<= {format_size(hi)}"] if hi is not None else [])
    if bounds:
        reasons.append(f"{format_size(study.logical_bytes)} ({', '.join(bounds)})")
    return "; ".join(reasons)


def _candidates(policy: PolicySpec, studies: Iterable[StudyPlacement], now: float
                ) -> list[tuple[StudyPlacement, str]]:
    found = []
    for s in studies:
        if s.tier != policy.from_tier:
            continue
        # Promotion copied it up because it is being read; moving it back down would thrash.
        if s.promoted_until is not None and s.promoted_until > now:
            continue
        reason = _match(policy, s, now)
        if reason is not None:
            found.append((s, reason))
    return found


def _move(policy: PolicySpec, study: StudyPlacement, reason: str) -> PlannedMove:
    return PlannedMove(study.study_uid, policy.from_tier, policy.to_tier, policy.name, reason,
                       study.stored_bytes)


def plan(
    policy: PolicySpec,
    studies: Iterable[StudyPlacement],
    *,
    now: float,
    tier_used: Mapping[str, int],
    tier_capacity: Mapping[str, int | None],
    high_watermark: float = 0.85,
    low_watermark: float = 0.70,
) -> list[PlannedMove]:
    """The moves `policy` asks for among `studies` at `now` (epoch seconds).

    A criteria policy moves every matching study of its from-tier, oldest received first. A
    watermark policy acts only while the from-tier's usage is above `high_watermark` of its
    capacity, and moves the least recently read matching studies until the projected usage is at
    or below `low_watermark` (the from-tier's own watermarks: `plan_all` passes them).
    """
    found = _candidates(policy, studies, now)
    if not policy.watermark:
        found.sort(key=lambda c: (c[0].received_at, c[0].study_uid))
        return [_move(policy, s, reason) for s, reason in found]
    return _plan_watermark(policy, found, tier_used, tier_capacity, high_watermark, low_watermark)


def _plan_watermark(
    policy: PolicySpec,
    found: list[tuple[StudyPlacement, str]],
    tier_used: Mapping[str, int],
    tier_capacity: Mapping[str, int | None],
    high: float,
    low: float,
) -> list[PlannedMove]:
    capacity = tier_capacity.get(policy.from_tier)
    used = tier_used.get(policy.from_tier, 0)
    if not capacity or used <= high * capacity:
        return []
    pressure = (f"{policy.from_tier} at {used / capacity:.0%} of {format_size(capacity)} "
                f"(high watermark {high:.0%})")
    found.sort(key=lambda c: (c[0].accessed_at, c[0].study_uid))
    moves = []
    for study, criteria in found:
        if used <= low * capacity:
            break
        moves.append(_move(policy, study, f"{pressure}; {criteria}" if criteria else pressure))
        used -= study.stored_bytes
    return moves


def plan_all(
    settings: TieringSettings,
    studies: Sequence[StudyPlacement],
    *,
    now: float,
    tier_used: Mapping[str, int],
    tier_capacity: Mapping[str, int | None],
) -> list[PlannedMove]:
    """Every policy of `settings` in order (the moves grouped by policy, each group ordered as by
    `plan`); a study moves at most once per run.

    Usage is projected as moves are planned: the bytes leave the from-tier and arrive on the
    to-tier as stored on the source (an estimate: a colder codec usually stores them smaller, so
    the destination is over-counted, never under). A tier missing from `tier_capacity` has its
    configured capacity.
    """
    used = dict(tier_used)
    capacity = {t.name: t.capacity for t in settings.tiers}
    capacity.update(tier_capacity)
    moved: set[str] = set()
    moves: list[PlannedMove] = []
    for policy in settings.policies:
        source = settings.tier(policy.from_tier)
        remaining = [s for s in studies if s.study_uid not in moved]
        for move in plan(policy, remaining, now=now, tier_used=used, tier_capacity=capacity,
                         high_watermark=source.high_watermark, low_watermark=source.low_watermark):
            moved.add(move.study_uid)
            used[move.from_tier] = used.get(move.from_tier, 0) - move.stored_bytes
            used[move.to_tier] = used.get(move.to_tier, 0) + move.stored_bytes
            moves.append(move)
    return moves
