"""Policy selection: which studies each policy moves, given placements and tier usage."""

from __future__ import annotations

from dataclasses import replace

from dicomvault.storage.settings import DAY, PolicySpec, TieringSettings, TierSpec
from dicomvault.tiering.policy import PlannedMove, StudyPlacement, plan, plan_all

NOW = 1_700_000_000.0
GB = 10**9
TIERS = (
    TierSpec("landing", "local", "raw", path="landing"),
    TierSpec("warm", "local", "hot", path="warm", capacity=100 * GB, high_watermark=0.8, low_watermark=0.6),
    TierSpec("cold", "s3", "cold", bucket="b"),
)


def study(uid: str, *, age: float = 0, idle: float | None = None, tier: str = "warm",
          modalities: tuple[str, ...] = ("CT",), size: int = GB, stored: int | None = None,
          promoted_until: float | None = None) -> StudyPlacement:
    """A placement `age` days after receipt, last read `idle` days ago (None: never read)."""
    return StudyPlacement(
        study_uid=uid, tier=tier, received_at=NOW - age * DAY,
        last_access=None if idle is None else NOW - idle * DAY, modalities=frozenset(modalities),
        logical_bytes=size, stored_bytes=size if stored is None else stored, promoted_until=promoted_until,
    )


def policy(**kw: object) -> PolicySpec:
    return PolicySpec(**{"name": "p", "from_tier": "warm", "to_tier": "cold", **kw})  # type: ignore[arg-type]


def uids(moves: list[PlannedMove]) -> list[str]:
    return [m.study_uid for m in moves]


def run(p: PolicySpec, studies: list[StudyPlacement], used: int = 0, **kw: float) -> list[PlannedMove]:
    return plan(p, studies, now=NOW, tier_used={"warm": used}, tier_capacity={"warm": 100 * GB}, **kw)


def test_age() -> None:
    studies = [study("young", age=89), study("edge", age=90), study("old", age=200)]
    moves = run(policy(min_age_days=90), studies)
    assert uids(moves) == ["old", "edge"]  # oldest first
    assert moves[0] == PlannedMove("old", "warm", "cold", "p", "received 200 days ago (>= 90)", GB)


def test_only_studies_on_the_from_tier() -> None:
    studies = [study("a", age=100, tier="landing"), study("b", age=100, tier="cold"), study("c", age=100)]
    assert uids(run(policy(min_age_days=90), studies)) == ["c"]


def test_idle_uses_last_access_then_receipt() -> None:
    studies = [
        study("read-recently", age=400, idle=5),
        study("read-long-ago", age=400, idle=45),
        study("never-read-old", age=31),
        study("never-read-new", age=29),
    ]
    moves = run(policy(idle_days=30), studies)
    assert uids(moves) == ["read-long-ago", "never-read-old"]
    assert moves[0].reason == "last read, idle 45 days (>= 30)"
    assert moves[1].reason == "never read, idle 31 days (>= 30)"


def test_age_and_idle_must_both_hold() -> None:
    studies = [study("old-busy", age=100, idle=1), study("old-idle", age=100, idle=60),
               study("new-idle", age=40, idle=40)]
    moves = run(policy(min_age_days=90, idle_days=30), studies)
    assert uids(moves) == ["old-idle"]
    assert moves[0].reason == "received 100 days ago (>= 90); last read, idle 60 days (>= 30)"


def test_modality() -> None:
    studies = [study("ct", age=1), study("mr-sr", age=2, modalities=("MR", "SR")),
               study("us", age=3, modalities=("US",)), study("lower", age=4, modalities=("mr",)),
               study("none", age=5, modalities=())]
    moves = run(policy(modalities=frozenset({"MR", "CT"})), studies)
    assert uids(moves) == ["lower", "mr-sr", "ct"]
    assert [m.reason for m in moves] == ["modality MR", "modality MR", "modality CT"]


def test_size_bounds() -> None:
    studies = [study("small", age=1, size=GB // 2), study("mid", age=2, size=2 * GB),
               study("max", age=3, size=5 * GB), study("big", age=4, size=6 * GB)]
    moves = run(policy(min_study_bytes=GB, max_study_bytes=5 * GB), studies)
    assert uids(moves) == ["max", "mid"]
    assert moves[0].reason == "5 GB (>= 1 GB, <= 5 GB)"
    # size bounds are on the logical size, not what the study occupies
    squeezed = [study("x", size=2 * GB, stored=GB // 10)]
    assert uids(run(policy(min_study_bytes=GB), squeezed)) == ["x"]
    assert run(policy(min_study_bytes=GB), squeezed)[0].stored_bytes == GB // 10


def test_promoted_studies_stay() -> None:
    studies = [study("promoted", age=100, promoted_until=NOW + 3600),
               study("promotion-over", age=100, promoted_until=NOW - 1),
               study("plain", age=100)]
    assert sorted(uids(run(policy(min_age_days=90), studies))) == ["plain", "promotion-over"]
    # promotion also protects against watermark pressure
    assert "promoted" not in uids(run(policy(watermark=True), studies, used=99 * GB,
                                      high_watermark=0.8, low_watermark=0.1))


def test_watermark_below_high_does_nothing() -> None:
    studies = [study(f"s{i}", age=100 - i, size=10 * GB) for i in range(8)]
    assert run(policy(watermark=True), studies, used=80 * GB, high_watermark=0.8, low_watermark=0.6) == []
    assert plan(policy(watermark=True), studies, now=NOW, tier_used={"warm": 99 * GB},
                tier_capacity={"warm": None}) == []


def test_watermark_moves_least_recently_read_down_to_low() -> None:
    studies = [
        study("busy-old", age=300, idle=1, size=10 * GB),
        study("idle-a", age=50, idle=40, size=10 * GB),
        study("never-read", age=60, size=10 * GB),
        study("idle-b", age=50, idle=30, size=10 * GB),
        study("idle-c", age=50, idle=20, size=10 * GB),
    ]
    # 90 GB of 100: 30 GB must leave to reach 60 GB (exactly at the low mark is enough)
    moves = run(policy(watermark=True), studies, used=90 * GB, high_watermark=0.8, low_watermark=0.6)
    assert uids(moves) == ["never-read", "idle-a", "idle-b"]
    assert moves[0].reason == "warm at 90% of 100 GB (high watermark 80%)"
    # 95 GB: three studies leave 65 GB, still above the low mark; the fourth reaches 55 GB
    moves = run(policy(watermark=True), studies, used=95 * GB, high_watermark=0.8, low_watermark=0.6)
    assert uids(moves) == ["never-read", "idle-a", "idle-b", "idle-c"]


def test_watermark_counts_stored_bytes() -> None:
    studies = [study("a", age=10, size=50 * GB, stored=5 * GB), study("b", age=9, size=GB, stored=20 * GB)]
    moves = run(policy(watermark=True), studies, used=90 * GB, high_watermark=0.8, low_watermark=0.7)
    assert uids(moves) == ["a", "b"]  # 5 GB was not enough, 20 GB more reaches 65 GB


def test_watermark_combines_with_criteria() -> None:
    studies = [study("mr", age=100, modalities=("MR",), size=40 * GB),
               study("ct-1", age=90, size=20 * GB), study("ct-2", age=80, size=20 * GB)]
    moves = run(policy(watermark=True, modalities=frozenset({"CT"})), studies, used=95 * GB,
                high_watermark=0.8, low_watermark=0.6)
    # the MR study is the least recently read, but only CT studies may go
    assert uids(moves) == ["ct-1", "ct-2"]
    assert moves[0].reason == "warm at 95% of 100 GB (high watermark 80%); modality CT"


def test_order_is_deterministic() -> None:
    studies = [study(uid, age=100) for uid in ("c", "a", "b")] + [study("z", age=101)]
    expected = ["z", "a", "b", "c"]
    assert uids(run(policy(min_age_days=90), studies)) == expected
    assert uids(run(policy(min_age_days=90), list(reversed(studies)))) == expected
    wm = run(policy(watermark=True), list(reversed(studies)), used=99 * GB, high_watermark=0.8,
             low_watermark=0.1)
    assert uids(wm) == expected


def settings(*policies: PolicySpec) -> TieringSettings:
    return TieringSettings(tiers=TIERS, policies=policies)


def test_plan_all_moves_a_study_once() -> None:
    age = policy(name="age", min_age_days=90)
    ct = policy(name="ct", modalities=frozenset({"CT"}))
    studies = [study("old-ct", age=100), study("new-ct", age=1), study("old-mr", age=100, modalities=("MR",))]
    moves = plan_all(settings(age, ct), studies, now=NOW, tier_used={"warm": 0}, tier_capacity={})
    assert [(m.policy, m.study_uid) for m in moves] == [
        ("age", "old-ct"), ("age", "old-mr"), ("ct", "new-ct")]


def test_plan_all_watermark_sees_earlier_moves() -> None:
    age = policy(name="age", min_age_days=90)
    full = policy(name="full", watermark=True)
    studies = [study("old", age=100, size=10 * GB)] + [study(f"s{i}", age=10 + i, size=10 * GB)
                                                       for i in range(5)]
    used = {"warm": 95 * GB}  # capacity 100 GB and watermarks 80/60 come from the tier settings
    moves = plan_all(settings(age, full), studies, now=NOW, tier_used=used, tier_capacity={})
    # the age policy takes 10 GB (85 GB left); the watermark policy needs 25 GB more, not 35
    assert [(m.policy, m.study_uid) for m in moves] == [
        ("age", "old"), ("full", "s4"), ("full", "s3"), ("full", "s2")]
    assert used == {"warm": 95 * GB}  # the caller's mapping is not modified
    # on its own the watermark policy takes the least recently read study first
    alone = plan_all(settings(full), studies, now=NOW, tier_used=used, tier_capacity={})
    assert [(m.policy, m.study_uid) for m in alone] == [
        ("full", "old"), ("full", "s4"), ("full", "s3"), ("full", "s2")]
    # an age policy that frees enough leaves the watermark policy nothing to do
    big = [replace(s, stored_bytes=40 * GB) if s.study_uid == "old" else s for s in studies]
    moves = plan_all(settings(age, full), big, now=NOW, tier_used=used, tier_capacity={})
    assert uids(moves) == ["old"]


def test_plan_all_projects_arrivals_on_the_destination() -> None:
    mid = TierSpec("cool", "local", "hot", path="cool", capacity=100 * GB, high_watermark=0.8,
                   low_watermark=0.6)
    tiers = (TIERS[0], TIERS[1], mid, TIERS[2])
    into_cool = policy(name="age", to_tier="cool", min_age_days=90)
    cool_full = policy(name="cool-full", from_tier="cool", to_tier="cold", watermark=True)
    studies = [study("arriving", age=100, size=10 * GB)] + [study(f"c{i}", age=200 + i, tier="cool",
                                                                  size=10 * GB) for i in range(3)]
    s = TieringSettings(tiers=tiers, policies=(into_cool, cool_full))
    # cool holds 75 GB: below its high mark until the 10 GB arriving from warm are counted
    moves = plan_all(s, studies, now=NOW, tier_used={"warm": 10 * GB, "cool": 75 * GB}, tier_capacity={})
    assert [(m.policy, m.study_uid) for m in moves] == [
        ("age", "arriving"), ("cool-full", "c2"), ("cool-full", "c1"), ("cool-full", "c0")]
    # without the 10 GB arriving, cool stays below its high mark
    alone = plan_all(replace(s, policies=(cool_full,)), studies, now=NOW,
                     tier_used={"warm": 10 * GB, "cool": 75 * GB}, tier_capacity={})
    assert alone == []


def test_plan_all_capacity_override() -> None:
    full = policy(name="full", watermark=True)
    studies = [study("a", age=10, size=10 * GB)]
    # the caller's capacity (e.g. measured) wins over the configured one
    assert plan_all(settings(full), studies, now=NOW, tier_used={"warm": 90 * GB},
                    tier_capacity={"warm": 1000 * GB}) == []
