"""uid_memo gives pynetdicom's answers, raises where pynetdicom raises, and negotiates the same."""

from __future__ import annotations

import pytest
from pynetdicom import _config, pdu_items, presentation, utils
from pynetdicom.presentation import PresentationContext

from dicomvault.dimse import uid_memo

CT = "1.2.840.10008.5.1.4.1.1.2"
SYNTAXES = ["1.2.840.10008.1.2.1", b"1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.50\x00", "1.2.3.4.5"]


@pytest.fixture
def memo():
    uid_memo.install()
    yield
    uid_memo.uninstall()
    uid_memo.install()  # the server installs it process-wide; leave it as other tests expect


def _stock_list(values):
    cx = PresentationContext()
    for v in values:
        uid_memo._ORIGINAL_ADD_TS(cx, v)
    return list(cx.transfer_syntax)


def test_add_transfer_syntax_same_list_as_pynetdicom(memo):
    assert PresentationContext.add_transfer_syntax is uid_memo.add_transfer_syntax
    for _ in range(2):  # the second round is served from the cache
        cx = PresentationContext()
        for v in SYNTAXES:
            cx.add_transfer_syntax(v)
        assert cx.transfer_syntax == _stock_list(SYNTAXES)
        assert [type(u) for u in cx.transfer_syntax] == [type(u) for u in _stock_list(SYNTAXES)]


def _outcome(func, *args, **kw):
    try:
        return ("ok", func(*args, **kw))
    except ValueError as exc:
        return ("raised", str(exc))


def test_set_uid_same_outcomes_and_invalid_values_raise_every_time(memo):
    assert pdu_items.set_uid is uid_memo.set_uid
    values = (CT, CT.encode(), CT + "\x00", "1.2.3", "1." * 40, "", "1.2.\\3", b"")
    for value in values:
        for allow_empty in (True, False):
            stock = _outcome(utils.set_uid, value, "Abstract Syntax Name", allow_empty)
            for _ in range(2):  # the second call may come from the cache
                assert _outcome(uid_memo.set_uid, value, "Abstract Syntax Name", allow_empty) == stock
    assert _outcome(uid_memo.set_uid, "1." * 40, "x")[0] == "raised"
    assert uid_memo.set_uid(None, "x") is None


def test_add_transfer_syntax_raises_where_pynetdicom_does(memo):
    for bad in ("", "1." * 40):
        for _ in range(2):
            with pytest.raises(ValueError):
                PresentationContext().add_transfer_syntax(bad)
            with pytest.raises(ValueError):
                uid_memo._ORIGINAL_ADD_TS(PresentationContext(), bad)


def test_conformance_setting_is_part_of_the_key(memo):
    non_conformant = "1.2.03.4"  # leading zero in a component
    before = _config.ENFORCE_UID_CONFORMANCE
    try:
        _config.ENFORCE_UID_CONFORMANCE = False
        assert uid_memo.set_uid(non_conformant, "Abstract Syntax Name") == non_conformant
        PresentationContext().add_transfer_syntax(non_conformant)
        _config.ENFORCE_UID_CONFORMANCE = True
        with pytest.raises(ValueError):
            uid_memo.set_uid(non_conformant, "Abstract Syntax Name")
        with pytest.raises(ValueError):
            PresentationContext().add_transfer_syntax(non_conformant)
    finally:
        _config.ENFORCE_UID_CONFORMANCE = before


def test_cache_is_bounded(memo, monkeypatch):
    monkeypatch.setattr(uid_memo, "MAX_ENTRIES", 8)
    for i in range(50):
        PresentationContext().add_transfer_syntax(f"1.2.3.{i}")
        uid_memo.set_uid(f"1.2.4.{i}", "SOP Class UID")
    assert len(uid_memo._ts_cache) <= 8 and len(uid_memo._set_uid_cache) <= 8


def test_uninstall_restores_pynetdicom(memo):
    uid_memo.uninstall()
    assert PresentationContext.add_transfer_syntax is uid_memo._ORIGINAL_ADD_TS
    assert pdu_items.set_uid is utils.set_uid and presentation.validate_uid is utils.validate_uid


def test_installed_against_the_pynetdicom_it_was_written_for(memo):
    assert uid_memo._signatures() == uid_memo.EXPECTED_SIGNATURES
    assert uid_memo.install() is True
