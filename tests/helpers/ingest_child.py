"""Child process for the crash tests: ingests synthetic objects forever and prints one line
`ACK <SOPInstanceUID> <blake3 of the file bytes>` per object, only after store returned (that is,
after the object was acknowledged as durable). The parent kills it with SIGKILL at a random moment.

usage: ingest_child.py DATA_DIR SEED [BATCH]
"""

from __future__ import annotations

import sys

import blake3

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine, StoreOutcome


def main() -> None:
    data, seed = sys.argv[1], int(sys.argv[2])
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    with Engine(data, min_free_bytes=0) as engine:
        print("READY", flush=True)
        series = 0
        while True:
            spec = SeriesSpec(slices=40, rows=128, columns=128, seed=seed * 1000 + series)
            files = list(ct_series(spec))
            for i in range(0, len(files), batch_size):
                chunk = files[i : i + batch_size]
                for buf, res in zip(chunk, engine.store_buffers(chunk), strict=True):
                    if not isinstance(res, StoreOutcome):
                        print(f"ERR {res}", flush=True)
                        sys.exit(3)
                    print(f"ACK {res.sop_instance_uid} {blake3.blake3(buf).hexdigest()}", flush=True)
            series += 1


if __name__ == "__main__":
    main()
