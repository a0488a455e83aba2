"""The pynetdicom internals our association subclasses override or use are still there.

Fails after a pynetdicom upgrade that renamed or removed one of them, naming each: re-read the
subclasses in dimse/association.py, dul.py, encoded.py and transport.py against the new pynetdicom
(the copied loops first: Association._run_reactor, DULServiceProvider.run_reactor), then update
dimse/pynetdicom_private.py and the pin in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pynetdicom

from dicomvault.dimse import pynetdicom_private


def test_private_names_our_subclasses_rely_on_exist() -> None:
    missing = pynetdicom_private.problems()
    assert not missing, (f"pynetdicom {pynetdicom.__version__} no longer has what dicomvault's DIMSE "
                         f"subclasses override or use:\n  " + "\n  ".join(missing))


def test_pynetdicom_is_the_pinned_release_line() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    [pin] = [d for d in project["project"]["dependencies"] if d.replace(" ", "").startswith("pynetdicom")]
    assert pin.replace(" ", "") == "pynetdicom>=3.0.4,<3.1", pin
    major, minor, patch = (int(x) for x in pynetdicom.__version__.split(".")[:3])
    assert (major, minor) == (3, 0) and patch >= 4, (
        f"pynetdicom {pynetdicom.__version__} installed; dimse/pynetdicom_private.py was checked "
        "against 3.0.4")
