"""dimse/negotiation_cache.py: the remembered UI validation gives pynetdicom's verdicts, and a
repeated A-ASSOCIATE-RQ negotiates exactly as a fresh one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import _config, build_context, evt
from pynetdicom._validators import validate_ui
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from dicomvault.dimse import negotiation_cache
from dicomvault.dimse.association import ArchiveAE
from dicomvault.dimse.negotiation_cache import AssociateRqCache, MemoisedUIValidator, associate_rq_cache

VALUES = ["1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.03.4", "1." * 40, "", "1.2.\\3"]


@pytest.fixture
def memo() -> Iterator[MemoisedUIValidator]:
    before = _config.VALIDATORS["UI"]
    negotiation_cache.memoise_ui_validation()
    try:
        current = _config.VALIDATORS["UI"]
        assert isinstance(current, MemoisedUIValidator)
        negotiation_cache.memoise_ui_validation()  # idempotent: not wrapped twice
        assert _config.VALIDATORS["UI"] is current
        yield current
    finally:
        _config.VALIDATORS["UI"] = before


def test_same_verdicts_as_pynetdicom(memo: MemoisedUIValidator) -> None:
    before = _config.ENFORCE_UID_CONFORMANCE
    try:
        for enforce in (False, True, False):  # the setting is part of the key
            _config.ENFORCE_UID_CONFORMANCE = enforce
            for value in VALUES:
                for _ in range(2):  # the second from the cache
                    assert memo(value) == validate_ui(value), (value, enforce)
    finally:
        _config.ENFORCE_UID_CONFORMANCE = before
    assert memo(b"1.2") == validate_ui(b"1.2")  # not a str: never cached


def test_invalid_values_still_raise_in_pynetdicom(memo: MemoisedUIValidator) -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            PresentationContext().add_transfer_syntax("1." * 40)


def test_caches_are_bounded(memo: MemoisedUIValidator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(negotiation_cache, "MAX_UIDS", 8)
    for i in range(50):
        memo(f"1.2.3.{i}")
    assert len(memo._cache) <= 8
    cache = AssociateRqCache(size=3)
    for i in range(10):
        cache.put(bytes([i]), object())
    assert len(cache) == 3 and cache.get(b"\x09") is not None and cache.get(b"\x00") is None


def _negotiate(port: int) -> tuple[list[tuple[Any, Any, int]], Any]:
    ae = ArchiveAE("NEGSCU", tuned=False)
    contexts = [build_context(Verification), build_context(CTImageStorage),
                build_context("1.2.3.4.5.6", ["1.2.840.10008.1.2.1"]),  # not supported: rejected
                build_context(MRImageStorage, ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2"])]
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="NEGSCP")
    try:
        assert assoc.is_established
        accepted = sorted((str(cx.abstract_syntax), str(cx.transfer_syntax[0]), int(cx.context_id))
                          for cx in assoc.accepted_contexts)
        rejected = sorted(int(cx.context_id) for cx in assoc.rejected_contexts)
        return accepted, rejected
    finally:
        assoc.release()


def test_a_repeated_request_negotiates_like_the_first(memo: MemoisedUIValidator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)  # the private context is refused
    associate_rq_cache.clear()
    seen: list[Any] = []
    ae = ArchiveAE("NEGSCP", tuned=True)
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    ae.add_supported_context(MRImageStorage, "1.2.840.10008.1.2")
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_PDU_RECV, lambda e: seen.append(e.pdu))])
    assert server is not None
    try:
        port = server.server_address[1]
        first = _negotiate(port)
        second = _negotiate(port)
    finally:
        server.shutdown()
    assert first == second and first[1] == [5]
    requests = [p for p in seen if isinstance(p, A_ASSOCIATE_RQ)]
    # the same bytes twice: decoded once, the PDU events triggered for both
    assert len(requests) == 2 and requests[0] is requests[1]
