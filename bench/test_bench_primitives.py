"""pytest-benchmark suites for the engine primitives, one 512x512 16-bit CT slice each.

`make bench` saves results under bench/.results; compare two commits with
`pytest-benchmark compare` (see bench/README.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from dicomvault import _native  # type: ignore[attr-defined]
from dicomvault.engine import Engine


def _mb_s(benchmark, nbytes: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.extra_info["MB/s"] = round(nbytes / benchmark.stats.stats.mean / 1e6, 1)


def test_parse(benchmark, one_ct: bytes) -> None:  # type: ignore[no-untyped-def]
    benchmark(_native.parse, one_ct)
    _mb_s(benchmark, len(one_ct))


def test_hash_blake3(benchmark, one_ct: bytes) -> None:  # type: ignore[no-untyped-def]
    benchmark(_native.blake3, one_ct)
    _mb_s(benchmark, len(one_ct))


def test_encode_hot(benchmark, one_ct: bytes) -> None:  # type: ignore[no-untyped-def]
    benchmark(_native.encode, one_ct)
    _mb_s(benchmark, len(one_ct))


def test_decode_hot(benchmark, one_ct: bytes) -> None:  # type: ignore[no-untyped-def]
    codec, stored, logical_len = _native.encode(one_ct)
    benchmark(_native.decode, codec, stored, logical_len)
    _mb_s(benchmark, logical_len)


def test_put_durable(benchmark, scratch: Path, ct_files: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    """32 slices stored durably (hash + hot codec + group-committed fsync + index sync)."""
    batch = ct_files[:32]
    opened: list[Engine] = []

    def fresh() -> tuple[tuple[Engine], dict[str, object]]:
        eng = Engine(tempfile.mkdtemp(dir=scratch), min_free_bytes=0)
        opened.append(eng)
        return (eng,), {}

    try:
        benchmark.pedantic(lambda eng: eng.store_buffers(batch), setup=fresh, rounds=5)
    finally:
        for eng in opened:
            eng.close()
    _mb_s(benchmark, sum(map(len, batch)))


def test_get_verified(benchmark, scratch: Path, ct_files: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    """Read one slice back as its Part-10 file: read, decode, BLAKE3 verify."""
    with Engine(scratch / "get", min_free_bytes=0) as eng:
        (res,) = eng.store_buffers(ct_files[:1])
        benchmark(eng.read_file, res.sop_instance_uid)
    _mb_s(benchmark, len(ct_files[0]))
