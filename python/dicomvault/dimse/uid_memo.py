"""Memoised UID conversion for association negotiation.

Why: dcmtk storescu (like many workstations) proposes ~120 presentation contexts, each with up to
~30 transfer syntaxes. pynetdicom turns every one of those UIDs into a pydicom `UID` several times
while decoding the A-ASSOCIATE-RQ, negotiating and encoding the A-ASSOCIATE-AC, and every
conversion runs pydicom's and pynetdicom's regex validation again. Profiled under `serve`, that
was ~27 ms of GIL-holding CPU per such association (33 ms with the first C-STORE, 9 ms when the
caller proposes only what it sends: 0.3-0.45 ms per object of a 75-object association).

The vocabulary is small (SOP classes, transfer syntaxes, application context, implementation
class UIDs), so the results are cached per distinct (value, arguments, validation settings).
A value that fails validation is never cached: it raises again, with pynetdicom's own message.
A non-conformant UID is logged by pynetdicom only the first time it is seen.

Only the negotiation modules (`pdu_items`, `pdu_primitives`, `presentation`) get the cached
functions; DIMSE primitives, which carry per-object SOP Instance UIDs, keep pynetdicom's.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from pydicom import config as pydicom_config
from pydicom.uid import UID
from pynetdicom import _config, pdu_items, pdu_primitives, presentation, utils
from pynetdicom.presentation import PresentationContext

log = logging.getLogger("dicomvault.dimse")
# The vocabulary seen in practice is a few hundred UIDs; a peer inventing new ones per
# association (private SOP classes per study) only restarts the cache, it cannot grow it.
MAX_ENTRIES = 4096

_ORIGINAL_SET_UID = utils.set_uid
_ORIGINAL_VALIDATE_UID = utils.validate_uid
_ORIGINAL_ADD_TS = PresentationContext.add_transfer_syntax
_MODULES = (pdu_items, pdu_primitives, presentation)

_set_uid_cache: dict[tuple[Any, ...], UID | None] = {}
_ts_cache: dict[tuple[Any, ...], UID | None] = {}
_validate_cache: dict[tuple[Any, ...], bool] = {}
_lock = threading.Lock()
_installed = False


def _settings() -> tuple[Any, ...]:
    """What validation depends on besides the value: a change of any of these (tests toggle
    ENFORCE_UID_CONFORMANCE) gives new cache keys rather than stale answers."""
    return (_config.ENFORCE_UID_CONFORMANCE, id(_config.VALIDATORS.get("UI")),
            pydicom_config.settings.reading_validation_mode)


def _remember(cache: dict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> None:
    with _lock:
        if len(cache) >= MAX_ENTRIES:
            cache.clear()
        cache[key] = value


def set_uid(value: Any, name: str, allow_empty: bool = True, allow_none: bool = True,
            validate: bool = True) -> UID | None:
    """pynetdicom.utils.set_uid, remembered for str and bytes values."""
    if value.__class__ not in (str, bytes, UID):
        return _ORIGINAL_SET_UID(value, name, allow_empty, allow_none, validate)
    key = (value.__class__, value, name, allow_empty, allow_none, validate, _settings())
    try:
        return _set_uid_cache[key]
    except KeyError:
        pass
    result = _ORIGINAL_SET_UID(value, name, allow_empty, allow_none, validate)  # raises if invalid
    _remember(_set_uid_cache, key, result)
    return result


def add_transfer_syntax(self: PresentationContext, syntax: Any) -> None:
    """PresentationContext.add_transfer_syntax with the validation of each distinct value done
    once: pynetdicom's method runs on a scratch context (raising or logging as it does), and the
    UID it appended is remembered."""
    if syntax.__class__ not in (str, bytes, UID):
        _ORIGINAL_ADD_TS(self, syntax)
        return
    key = (syntax.__class__, syntax, _settings())
    try:
        uid = _ts_cache[key]
    except KeyError:
        scratch = PresentationContext()
        _ORIGINAL_ADD_TS(scratch, syntax)
        uid = scratch._transfer_syntax[0] if scratch._transfer_syntax else None
        _remember(_ts_cache, key, uid)
    # pynetdicom appends nothing for an empty value (a rejected context's) or a repeated one
    if uid is not None and uid not in self._transfer_syntax:
        self._transfer_syntax.append(uid)


def validate_uid(uid: UID) -> bool:
    """pynetdicom.utils.validate_uid, remembered (it returns a bool; it never raises)."""
    key = (str(uid), _settings())
    try:
        return _validate_cache[key]
    except KeyError:
        pass
    result = _ORIGINAL_VALIDATE_UID(uid)
    _remember(_validate_cache, key, result)
    return result


_REPLACEMENTS: dict[str, Callable[..., Any]] = {"set_uid": set_uid, "validate_uid": validate_uid}


def _signatures() -> list[tuple[str, ...]]:
    return [tuple(inspect.signature(f).parameters) for f in
            (_ORIGINAL_SET_UID, _ORIGINAL_VALIDATE_UID, _ORIGINAL_ADD_TS)]


# the signatures the wrappers pass arguments by (pynetdicom 3.0.4)
EXPECTED_SIGNATURES = [("value", "name", "allow_empty", "allow_none", "validate"), ("uid",),
                       ("self", "syntax")]


def install() -> bool:
    """Process-wide and idempotent. False (pynetdicom left stock, with a warning) if pynetdicom's
    functions no longer take the arguments the wrappers pass on."""
    global _installed
    with _lock:
        if _installed:
            return True
        if _signatures() != EXPECTED_SIGNATURES or not hasattr(PresentationContext(), "_transfer_syntax"):
            log.warning("UID memo not installed: pynetdicom's set_uid/validate_uid/add_transfer_syntax "
                        "changed upstream (pynetdicom upgraded?); negotiation runs stock (slower)")
            return False
        for module in _MODULES:
            for name, func in _REPLACEMENTS.items():
                if hasattr(module, name):
                    setattr(module, name, func)
        PresentationContext.add_transfer_syntax = add_transfer_syntax  # type: ignore[method-assign]
        _installed = True
        return True


def uninstall() -> None:
    """Restores pynetdicom's functions (tests, A/B measurements)."""
    global _installed
    with _lock:
        for module in _MODULES:
            if hasattr(module, "set_uid"):
                module.set_uid = _ORIGINAL_SET_UID  # type: ignore[attr-defined]
            if hasattr(module, "validate_uid"):
                module.validate_uid = _ORIGINAL_VALIDATE_UID  # type: ignore[attr-defined]
        PresentationContext.add_transfer_syntax = _ORIGINAL_ADD_TS  # type: ignore[method-assign]
        _set_uid_cache.clear()
        _ts_cache.clear()
        _validate_cache.clear()
        _installed = False
