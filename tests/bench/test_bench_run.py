"""`dicomvault bench` end to end (through `python -m dicomvault.bench`, which builds its parser
with the same `add_commands` the main CLI calls): a short run completes, its JSON has exactly the
fields docs/bench.md lists, its HTML is one offline file with SVG charts, and `bench compare`
reads two results."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bench.md"
# keys that are data, not field names
MAPS = {"by_modality": "<modality>", "by_kind": "<kind>", "skipped": "<phase>"}


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomvault.bench", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("storescu") is None:  # the run includes the DIMSE phase (make sysdeps)
        pytest.skip("dcmtk storescu not installed")
    d = tmp_path_factory.mktemp("bench")
    target = d / "target"
    r = bench(
        "--target",
        str(target),
        "--workload",
        "mixed",
        "--size",
        "0.04",
        "--scale",
        "0.1",
        "--threads",
        "2",
        "--phase-seconds",
        "0.5",
        "--seed",
        "3",
        "--dimse",
        "--associations",
        "2",
        "--json",
        str(d / "r.json"),
        "--html",
        str(d / "r.html"),
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    return {
        "dir": d,
        "target": target,
        "stdout": r.stdout,
        "json": json.loads((d / "r.json").read_text()),
        "html": (d / "r.html").read_text(),
    }


def documented_fields(heading: str = "## JSON fields\n") -> set[str]:
    """Field paths of the table under `heading` in docs/bench.md (up to the next section),
    `{a,b}` expanded."""
    text = DOCS.read_text(encoding="utf-8").split(heading, 1)[1].split("\n## ", 1)[0]
    out: set[str] = set()
    for m in re.finditer(r"^\| `([^`]+)` \|", text, re.M):
        paths = [m.group(1)]
        while any("{" in p for p in paths):
            nxt = []
            for p in paths:
                b = re.search(r"\{([^}]*)\}", p)
                if b is None:
                    nxt.append(p)
                    continue
                nxt += [p[: b.start()] + alt + p[b.end() :] for alt in b.group(1).split(",")]
            paths = nxt
        out.update(paths)
    return out


def actual_fields(d: Any, prefix: str = "") -> set[str]:
    if not isinstance(d, dict):
        return {prefix}
    out: set[str] = set()
    last = prefix.rsplit(".", 1)[-1]
    for k, v in d.items():
        key = MAPS.get(last, k)
        out |= actual_fields(v, f"{prefix}.{key}" if prefix else key)
    return out


def test_short_run_completes_with_every_phase(run: dict[str, Any]) -> None:
    r = run["json"]
    assert set(r["phases"]) == {"ingest", "compact", "query", "retrieve", "scrub", "dimse_ingest"}
    ing = r["phases"]["ingest"]
    # Ingest lands raw; the compact phase moves all of it to the warm tier's codec.
    comp = r["phases"]["compact"]
    assert ing["compression_ratio"] == 1.0
    assert comp["failed"] == 0 and comp["blobs"] == ing["objects"] and comp["compression_ratio"] > 1.2
    assert ing["errors"] == 0 and ing["objects"] > 10 and ing["bytes"] >= 0.04e9
    assert r["phases"]["scrub"]["damaged"] == 0 and r["phases"]["scrub"]["objects"] == ing["objects"]
    assert r["phases"]["retrieve"]["objects"] > 0 and r["phases"]["query"]["queries"] >= 6
    assert r["generator"]["mode"] == "pregenerated" and r["generator"]["mb_s"] > 0
    assert all(v is not None for v in r["ratios"].values()), r["ratios"]
    assert len(r["workload"]["by_modality"]) >= 2  # mixed means mixed
    for line in (
        "device synced seq write",
        "engine ingest",
        "compact to warm",
        "engine query",
        "engine retrieve",
        "engine scrub",
        "dimse ingest (2 assoc)",
    ):
        assert line in run["stdout"]
    assert "x seq write" in run["stdout"] and "x seq read" in run["stdout"]
    assert not any(run["target"].iterdir()), "the run directory must be removed"


def test_dimse_phase_sends_the_same_objects_durably(run: dict[str, Any]) -> None:
    d, ing = run["json"]["phases"]["dimse_ingest"], run["json"]["phases"]["ingest"]
    assert d["server_exit_code"] == 0 and d["errors"] == 0 and d["storescu_failures"] == 0
    assert d["objects"] == d["objects_stored"] == ing["objects"] and d["bytes"] == ing["bytes"]
    assert d["associations"] == 2 and len(d["association_objects_s"]) == 2
    assert d["latency_ms"]["p50"] is not None and d["timeline"]
    assert d["compression_ratio"] and d["compression_ratio"] > 1
    assert run["json"]["config"]["dimse"] is True and "dimse" in run["json"]["config"]["phases"]


def test_json_fields_are_exactly_the_documented_ones(run: dict[str, Any]) -> None:
    documented, actual = documented_fields(), actual_fields(run["json"])
    assert len(documented) > 100
    assert not actual - documented, f"undocumented fields: {sorted(actual - documented)}"
    assert not documented - actual, f"documented but missing: {sorted(documented - actual)}"


def test_html_is_one_offline_file_with_charts(run: dict[str, Any]) -> None:
    h = run["html"]
    assert h.startswith("<!DOCTYPE html>") and h.count("<svg") >= 3  # throughput + latency charts
    assert "<polyline" in h and "<rect" in h
    assert "<script" not in h and "<link" not in h and " src=" not in h
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", h)


def test_compare_two_results(run: dict[str, Any], tmp_path: Path) -> None:
    a = run["json"]
    b = copy.deepcopy(a)
    b["phases"]["ingest"]["mb_s"] = a["phases"]["ingest"]["mb_s"] / 2
    b["phases"]["query"]["latency_ms"]["p50"] = a["phases"]["query"]["latency_ms"]["p50"] * 3
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    r = bench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    rows = {
        ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines() if ln.startswith(("phases.", "ratios."))
    }
    assert rows["phases.ingest.mb_s"][2] == "0.500" and rows["phases.ingest.mb_s"][3] == "A"
    assert rows["phases.query.latency_ms.p50"][2] == "3.000" and rows["phases.query.latency_ms.p50"][3] == "A"
    assert rows["phases.scrub.mb_s"][2] == "1.000" and len(rows["phases.scrub.mb_s"]) == 3  # no verdict


def test_duration_run_generates_ahead(tmp_path: Path) -> None:
    r = bench(
        "--target",
        str(tmp_path),
        "--workload",
        "ct",
        "--duration",
        "1",
        "--scale",
        "0.1",
        "--phases",
        "ingest,scrub",
        "--phase-seconds",
        "0.3",
        "--json",
        str(tmp_path / "d.json"),
    )
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "d.json").read_text())
    assert res["generator"]["mode"] == "run_ahead"
    assert set(res["phases"]) == {"ingest", "compact", "scrub"}
    assert res["ratios"]["retrieve_vs_seq_read"] is None
    assert res["ratios"]["dimse_ingest_vs_seq_write"] is None
    assert 0.9 < res["phases"]["ingest"]["seconds"] < 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "http://127.0.0.1:8333/x"], "s3://BUCKET"),
        (["--endpoint", "http://127.0.0.1:8333"], "go with an s3://BUCKET target"),
        (["--phases", "ingest,bogus"], "unknown phase"),
        (["--phases", "query"], "ingest phase is required"),
    ],
)
def test_errors_exit_2_with_a_message(args: list[str], message: str, tmp_path: Path) -> None:
    full = args if "--target" in args else ["--target", str(tmp_path), *args]
    r = bench(*full, "--size", "0.01", "--scale", "0.1")
    assert r.returncode == 2 and message in r.stderr, r.stderr
