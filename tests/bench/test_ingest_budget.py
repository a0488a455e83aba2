"""bench/ingest_budget.py's arithmetic: the CPU an archive may spend per object at a target
rate, once the clients sharing the cores have taken theirs (no server runs here)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import ingest_budget as ib  # noqa: E402

MED = {"orthanc inst/s": 300.0, "client ms/obj (ceiling)": 1.0, "receive floor ms/obj": 0.3,
       "native floor ms/obj": 1.1, "dicomvault server ms/obj": 2.5}


def test_out_of_reach_when_the_floors_exceed_the_budget() -> None:
    # 900 inst/s: clients take 0.9 of 2 cores, 1.1 left = 1.22 ms per object < 1.4 ms of floors
    text = ib.verdict(MED, 3.0, 2)
    assert "= 900 inst/s" in text and "take 0.90 of 2 cores" in text
    assert "leaving the archive 1.22 ms" in text and "= 1.40 ms per object" in text
    assert "out of reach" in text and "floors / budget = 1.15" in text
    # floors only: 2 cores / 2.4 ms = 833 inst/s
    assert "833 inst/s = 2.78x Orthanc" in text


def test_within_reach_on_more_cores() -> None:
    text = ib.verdict(MED, 3.0, 4)
    assert "within the floors' reach" in text and "leaving the archive 3.44 ms" in text
