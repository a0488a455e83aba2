"""The relevance rule of [priors] on a real index: modality and body part (BodyPartExamined and
the words of an order, through the synonym table), all/any, count, age, the order's own study and
other patients left out; the [priors] table's checks; the worklist hook every add goes through."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from dicomvault.config_values import ConfigError
from dicomvault.engine import Engine
from dicomvault.integration.priors_settings import PriorsConfig, parse_priors
from dicomvault.integration.worklist_entry import entry_from_fields
from dicomvault.integration.worklist_store import WorklistStore, on_scheduled
from dicomvault.priors.select import BodyParts, select_priors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from priors_helpers import days_ago, study_file  # noqa: E402

PATIENT = "PRI-1"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, dict[str, str]]]:
    """One patient's studies, newest first by name: ct_chest_1 (30 days), ct_chest_2 (400 days,
    BodyPartExamined THORAX: a synonym), mr_chest (60 days), ct_head (90 days), ct_chest_old (7
    years), ct_lung_desc (200 days, no BodyPartExamined: its description says lung); and another
    patient's CT chest."""
    studies = {
        "ct_chest_1": (PATIENT, "CT", "CHEST", days_ago(30), "CT CHEST"),
        "ct_chest_2": (PATIENT, "CT", "THORAX", days_ago(400), "CT THX"),
        "mr_chest": (PATIENT, "MR", "CHEST", days_ago(60), "MR CHEST"),
        "ct_head": (PATIENT, "CT", "HEAD", days_ago(90), "CT HEAD"),
        "ct_chest_old": (PATIENT, "CT", "CHEST", days_ago(7 * 366), "CT CHEST"),
        "ct_lung_desc": (PATIENT, "CT", None, days_ago(200), "HRCT Lungs"),
        "other_patient": ("PRI-2", "CT", "CHEST", days_ago(10), "CT CHEST"),
    }
    eng = Engine(tmp_path_factory.mktemp("priors-select") / "data")
    uids = {}
    for name, args in studies.items():
        uid, files = study_file(*args)
        assert all(not isinstance(r, Exception) for r in eng.store_buffers(files))
        uids[name] = uid
    yield eng, uids
    eng.close()


def order(**kw: str) -> object:
    fields = {"patient_id": PATIENT, "accession": "A1", "modality": "CT",
              "procedure": "CT Thorax w/o contrast", **kw}
    return entry_from_fields({k: v for k, v in fields.items() if v})


def chosen(engine: tuple[Engine, dict[str, str]], settings: PriorsConfig, **kw: str) -> list[str]:
    eng, uids = engine
    names = {v: k for k, v in uids.items()}
    got, _ = select_priors(eng.index, order(**kw), settings)  # type: ignore[arg-type]
    return [names[p.study_uid] for p, _ in got]


Archive = tuple[Engine, dict[str, str]]


def test_modality_and_body_part_newest_first_within_count_and_age(engine: Archive) -> None:
    # CT + chest: the MR, the head CT, the 7-year-old one and the other patient's are left out
    assert chosen(engine, PriorsConfig(count=10)) == ["ct_chest_1", "ct_lung_desc", "ct_chest_2"]
    assert chosen(engine, PriorsConfig(count=2)) == ["ct_chest_1", "ct_lung_desc"]
    assert chosen(engine, PriorsConfig(count=10, max_age_years=0.5)) == ["ct_chest_1"]
    assert chosen(engine, PriorsConfig(count=10, max_age_years=10)) == [
        "ct_chest_1", "ct_lung_desc", "ct_chest_2", "ct_chest_old"]


def test_criteria_any_and_single(engine: tuple[Engine, dict[str, str]]) -> None:
    # any: same modality or same body part (the MR chest and the head CT come in)
    assert chosen(engine, PriorsConfig(count=10, require="any")) == [
        "ct_chest_1", "mr_chest", "ct_head", "ct_lung_desc", "ct_chest_2"]
    assert chosen(engine, PriorsConfig(count=10, match=("body_part",))) == [
        "ct_chest_1", "mr_chest", "ct_lung_desc", "ct_chest_2"]
    assert chosen(engine, PriorsConfig(count=10, match=("modality",))) == [
        "ct_chest_1", "ct_head", "ct_lung_desc", "ct_chest_2"]


def test_an_order_that_says_nothing_comparable_selects_nothing(engine: Archive) -> None:
    # the procedure names no known body part: only the modality criterion is left
    assert chosen(engine, PriorsConfig(count=10), procedure="Special protocol 7") == [
        "ct_chest_1", "ct_head", "ct_lung_desc", "ct_chest_2"]
    assert chosen(engine, PriorsConfig(count=10), procedure="Special protocol 7", modality="") == []


def test_the_orders_own_study_is_not_its_prior(engine: tuple[Engine, dict[str, str]]) -> None:
    eng, uids = engine
    assert chosen(engine, PriorsConfig(count=10), study_uid=uids["ct_chest_1"]) == [
        "ct_lung_desc", "ct_chest_2"]


def test_body_part_synonyms_and_configured_extras() -> None:
    parts = BodyParts()
    assert parts.terms_in("CT THORAX W/O") == {"CHEST"}
    # a C-spine order also names the spine as a whole: a whole-spine prior is relevant, an
    # L-spine one (LSPINE only) is not
    assert parts.terms_in("MRI C-Spine") == {"CSPINE", "SPINE"}
    assert parts.terms_in("LSPINE") == {"LSPINE"}
    assert parts.terms_in("CT abdomen/pelvis") == {"ABDOMEN", "PELVIS"}
    assert parts.terms_in("Chestnut protocol") == frozenset()  # whole words only
    assert BodyParts({"CHEST": ["PE STUDY"]}).terms_in("CTA PE study") == {"CHEST"}
    assert BodyParts({"ORBIT": ["EYE"]}).terms_in("eye") == {"ORBIT"}
    settings = parse_priors({"body_parts": {"chest": ["pe study"]}}, "t")
    assert settings.body_parts == {"CHEST": ("PE STUDY",)}


def test_settings_defaults_and_refusals() -> None:
    s = parse_priors({}, "t")
    assert (s.enabled, s.count, s.max_age_years, s.match, s.require, s.push_to) == (
        True, 3, 5.0, ("modality", "body_part"), "all", None)
    assert parse_priors({"push_to": "READ1", "count": 5, "max_age_years": 2.5}, "t").push_to == "READ1"
    for bad in ({"count": -1}, {"count": True}, {"match": ["size"]}, {"match": []}, {"require": "most"},
                {"max_age_years": "5"}, {"push_to": "X" * 17}, {"body_parts": ["CHEST"]}, {"colour": 1},
                {"retry_after": 0}, {"max_attempts": 0}):
        with pytest.raises(ConfigError):
            parse_priors(bad, "t")


def test_cutoff_handles_a_leap_day() -> None:
    from dicomvault.priors.select import _cutoff

    assert _cutoff(date(2028, 2, 29), 1) == "20270228"
    assert _cutoff(date(2026, 3, 10), 0.5) == "20250908"


def test_every_add_is_heard_and_a_failing_listener_fails_no_add(tmp_path: Path) -> None:
    with Engine(tmp_path / "data") as eng:
        store = WorklistStore(eng.index)
        heard: list[str] = []

        def broken(_entry: object) -> None:
            raise RuntimeError("listener bug")

        stops = [on_scheduled(eng.index, broken), on_scheduled(eng.index, lambda e: heard.append(e.key))]
        # another store on the same index (as the HTTP route, the HL7 feed and the CLI each build)
        WorklistStore(eng.index).add(entry_from_fields({"patient_id": "P", "accession": "H1"}))
        store.add(entry_from_fields({"patient_id": "P", "accession": "H2"}))
        store.update("H2^H2^H2", procedure="changed")  # a change is no new order
        for stop in stops:
            stop()
        store.add(entry_from_fields({"patient_id": "P", "accession": "H3"}))
        assert heard == ["H1^H1^H1", "H2^H2^H2"]
        assert store.require("H1^H1^H1").priors == {}
