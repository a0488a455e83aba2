"""[priors]: which prior studies of a patient are made ready when an order arrives
(docs/integration.md, "Priors")."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config_values import ConfigError, check_ae_title, check_bool, check_str_list, unknown_keys

CRITERIA = ("modality", "body_part")
REQUIRE = ("all", "any")


@dataclass(frozen=True)
class PriorsConfig:
    """`match`: the criteria a prior must meet (`require` all of them, or any); a criterion the
    order gives nothing to compare with (no modality, no body part recognised) is left out.
    `body_parts`: extra synonyms per BodyPartExamined term, added to the built-in table
    (priors/select.py BODY_PARTS). `retry_after`: seconds before a failed order is tried again
    (doubling per attempt, at most an hour), `max_attempts` tries in all."""

    enabled: bool = True
    count: int = 3
    max_age_years: float = 5.0
    match: tuple[str, ...] = CRITERIA
    require: str = "all"
    push_to: str | None = None
    body_parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    retry_after: float = 60.0
    max_attempts: int = 8


def _number(value: object, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"{where}: must be a number {lo:g}-{hi:g}, got {value!r}")
    return float(value)


def parse_priors(table: object, where: str) -> PriorsConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown_keys(table, {"enabled", "count", "max_age_years", "match", "require", "push_to", "body_parts",
                         "retry_after", "max_attempts"}, where)
    count = table.get("count", 3)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 100:
        raise ConfigError(f"{where}.count: must be 0-100, got {count!r}")
    attempts = table.get("max_attempts", 8)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
        raise ConfigError(f"{where}.max_attempts: must be 1-100, got {attempts!r}")
    match = check_str_list(table.get("match", list(CRITERIA)), f"{where}.match")
    bad = sorted(set(match) - set(CRITERIA))
    if bad or not match:
        raise ConfigError(f"{where}.match: one or more of {', '.join(CRITERIA)}, got {match!r}")
    require = table.get("require", "all")
    if require not in REQUIRE:
        raise ConfigError(f"{where}.require: one of {', '.join(REQUIRE)}, got {require!r}")
    push_to = table.get("push_to")
    raw_parts = table.get("body_parts", {})
    if not isinstance(raw_parts, dict):
        raise ConfigError(f'{where}.body_parts: expected a table TERM = ["synonym", ...]')
    parts = {str(k).upper(): tuple(s.upper() for s in check_str_list(v, f"{where}.body_parts.{k}"))
             for k, v in raw_parts.items()}
    return PriorsConfig(
        enabled=check_bool(table.get("enabled", True), f"{where}.enabled"), count=count,
        max_age_years=_number(table.get("max_age_years", 5), f"{where}.max_age_years", 0, 200),
        match=tuple(dict.fromkeys(match)), require=str(require),
        push_to=None if push_to in (None, "") else check_ae_title(push_to, f"{where}.push_to"),
        body_parts=parts,
        retry_after=_number(table.get("retry_after", 60), f"{where}.retry_after", 0.1, 86_400),
        max_attempts=attempts)
