"""StudyRecord.syntaxes: the study's (SOP class, transfer syntax) pairs, counted at ingest and
delete, that a C-MOVE proposes its sub-association from (dimse/retrieve.move_plan); trusted only
when it counts every instance of the study."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from index_helpers import MakeInst
from pydicom.dataset import Dataset

from dicomvault.dimse.retrieve import move_plan
from dicomvault.index import Index
from dicomvault.index import keys as index_keys
from dicomvault.index.records import StudyRecord
from dicomvault.index.schema import CF_STUDIES

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT, JPEG_LS = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def inst(mk: MakeInst, sop: str, sop_class: str = CT, ts: str = EXPLICIT, **kw: Any) -> dict[str, Any]:
    d = mk(sop, sop_class=sop_class, **kw)
    d["transfer_syntax"] = ts
    return d


def pairs(idx: Index, study: str = "1.2.840.1") -> list[tuple[str, str]] | None:
    st = idx.get_study(study)
    assert st is not None
    return st.syntax_pairs()


def test_pairs_follow_ingest_replace_and_delete(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([inst(mk, "1.1"), inst(mk, "1.2", ts=JPEG_LS), inst(mk, "1.3"),
                       inst(mk, "1.4", MR, series="S2", modality="MR")])
    assert pairs(idx) == [(CT, EXPLICIT), (CT, JPEG_LS), (MR, EXPLICIT)]
    st = idx.get_study("1.2.840.1")
    assert st is not None and st.syntaxes == {f"{CT}\\{EXPLICIT}": 2, f"{CT}\\{JPEG_LS}": 1,
                                              f"{MR}\\{EXPLICIT}": 1}
    # a re-send of 1.2 with other content, now uncompressed (keep newest): its pair moves
    idx.add_instance(inst(mk, "1.2", content=b"other"))
    assert pairs(idx) == [(CT, EXPLICIT), (MR, EXPLICIT)]
    idx.delete("instance", "1.4")
    assert pairs(idx) == [(CT, EXPLICIT)]
    assert idx.check() == []


def _rewrite_study(idx: Index, study: StudyRecord) -> None:
    """Writes a study record as is (as an older version of the index left it)."""
    idx._cfs[CF_STUDIES][index_keys.encode(study.study_uid)] = study.encode()  # noqa: SLF001
    idx._records.clear()  # noqa: SLF001 - as on a reopen: such a record is on disk before the index opens


def test_a_study_indexed_before_the_pairs_were_kept_is_not_trusted(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([inst(mk, "1.1"), inst(mk, "1.2", ts=JPEG_LS)])
    st = idx.get_study("1.2.840.1")
    assert st is not None
    st.syntaxes = {}
    _rewrite_study(idx, st)
    assert pairs(idx) is None and idx.check() == []  # not a fault: an older index
    idx.add_instance(inst(mk, "1.3", MR, series="S2", modality="MR"))  # counted: 1 of 3
    assert pairs(idx) is None
    idx.delete("instance", "1.2")  # uncounted, and its pair was never there
    assert pairs(idx) is None
    idx.delete("instance", "1.1")
    assert pairs(idx) == [(MR, EXPLICIT)]  # every instance counted again
    assert idx.check() == []


def test_check_reports_pairs_that_do_not_match_the_instances(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([inst(mk, "1.1"), inst(mk, "1.2", ts=JPEG_LS)])
    st = idx.get_study("1.2.840.1")
    assert st is not None
    st.syntaxes = {f"{CT}\\{EXPLICIT}": 2}  # the right total, the wrong pairs
    _rewrite_study(idx, st)
    problems = idx.check()
    assert len(problems) == 1 and "syntaxes" in problems[0]
    st.syntaxes = {f"{CT}\\{EXPLICIT}": 1, f"{CT}\\{JPEG_LS}": 1}
    _rewrite_study(idx, st)  # put right for the fixture's own check


def _identifier(**kw: str) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def test_move_plan_only_for_one_study_whose_pairs_are_known(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([inst(mk, "1.1"), inst(mk, "1.2", ts=JPEG_LS), inst(mk, "1.3", MR, series="S2")])
    engine: Any = SimpleNamespace(index=idx)
    plan = move_plan(engine, _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.840.1"),
                     STUDY_ROOT_MOVE)
    assert plan is not None
    proposed = [(str(cx.abstract_syntax), [str(t) for t in cx.transfer_syntax]) for cx in plan.contexts]
    # each pair exactly, then each class's uncompressed fallbacks (retrieve.move_contexts)
    assert proposed == [(CT, [EXPLICIT]), (CT, [JPEG_LS]), (MR, [EXPLICIT]),
                        (CT, [EXPLICIT, "1.2.840.10008.1.2"]), (MR, [EXPLICIT, "1.2.840.10008.1.2"])]
    assert [m.sop_uid for m in plan.matches] == idx.sop_uids_of("study", "1.2.840.1")
    others = [_identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.840.1", SeriesInstanceUID="S2"),
              _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.840.1\\9.9"),
              _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="9.9")]
    for ident in others:
        assert move_plan(engine, ident, STUDY_ROOT_MOVE) is None
    st = idx.get_study("1.2.840.1")
    assert st is not None
    st.syntaxes.pop(f"{MR}\\{EXPLICIT}")
    _rewrite_study(idx, st)
    assert move_plan(engine, _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.840.1"),
                     STUDY_ROOT_MOVE) is None
    st.syntaxes[f"{MR}\\{EXPLICIT}"] = 1
    _rewrite_study(idx, st)


@pytest.mark.parametrize("ident", [{"QueryRetrieveLevel": "STUDY"}, {"QueryRetrieveLevel": "FOO"}])
def test_move_plan_refuses_what_resolve_refuses(idx: Index, ident: dict[str, str]) -> None:
    from dicomvault.dimse.retrieve import RetrieveError

    with pytest.raises(RetrieveError):
        move_plan(SimpleNamespace(index=idx), _identifier(**ident), STUDY_ROOT_MOVE)  # type: ignore[arg-type]
