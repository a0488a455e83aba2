"""The first object a new process reads is decoded into a buffer whose pages are already mapped
(rust/src/decoded.rs `prewarm`, when a vault opens): without it, a retrieve's first image paid
a page fault per 4 KiB of a fresh buffer (~130 for a 512 KiB CT slice, ~0.35 ms here).

Counted in a fresh interpreter: in this one, earlier tests' reads have warmed the pool already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine

FIRST_READ = """
import json, resource, sys
from pathlib import Path
from dicomvault.engine import Engine
with Engine(Path(sys.argv[1]), read_only=True) as eng:
    h = bytes.fromhex(sys.argv[2])
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    ts, data = eng.vault.read_decoded(h)
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
    print(json.dumps({"faults": faults, "bytes": len(data)}))
"""


def test_a_new_process_decodes_its_first_object_without_faulting_in_a_buffer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slice_ = next(ct_series(SeriesSpec(slices=1)))  # 512x512 16-bit: a 512 KiB data set
    with Engine(data) as eng:
        outcome = eng.store_buffers([slice_])[0]
        assert not isinstance(outcome, Exception), outcome
    r = subprocess.run([sys.executable, "-c", FIRST_READ, str(data), outcome.hash.hex()],
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert got["bytes"] > 512 * 1024
    # A fresh 512 KiB buffer alone takes ~128; what remains is the read's own small allocations.
    assert got["faults"] < 64, got
