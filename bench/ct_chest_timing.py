"""How long the ct-chest analyzer takes on one chest CT the size of a clinical one: the synthetic
chest phantom of tests/analysis/phantoms.py at 300 slices of 512 x 512 (1 mm slices, 0.625 mm
pixels), timed stage by stage, with the accuracy against the phantom's voxel truth and the peak
memory of the process.

    .venv/bin/python bench/ct_chest_timing.py                 # 300 x 512 x 512
    .venv/bin/python bench/ct_chest_timing.py --slices 100    # quicker

Run it under `nice` on a shared machine; the analyzer itself is single-threaded (numpy/scipy).
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "analysis"))

from phantoms import LEFT, RIGHT, chest_phantom  # noqa: E402

from dicomvault.analysis import api  # noqa: E402
from dicomvault.analysis.emphysema import low_attenuation_percent  # noqa: E402
from dicomvault.analysis.lung import CtChestAnalyzer  # noqa: E402
from dicomvault.analysis.lung_segmentation import segment_lungs  # noqa: E402
from dicomvault.analysis.quality import QualityAnalyzer  # noqa: E402
from dicomvault.analysis.volume import build_volume  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    depth_mm, fov_mm = 300.0, 320.0
    spacing = (depth_mm / args.slices, fov_mm / args.size, fov_mm / args.size)
    load = os.getloadavg()
    t0 = time.perf_counter()
    ph = chest_phantom(shape=(args.slices, args.size, args.size), spacing=spacing, seed=1)
    datasets = list(ph.datasets)
    random.Random(1).shuffle(datasets)
    first = datasets[0]
    info = api.SeriesInfo(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, modality="CT",
                          num_instances=len(datasets), attrs={"BodyPartExamined": "CHEST"},
                          sop_class_uids=frozenset({first.SOPClassUID}))
    print(f"phantom {args.slices} x {args.size} x {args.size}, spacing {spacing[0]:.3g}/{spacing[1]:.3g} mm: "
          f"made in {time.perf_counter() - t0:.1f} s")

    # Wall and CPU seconds: on a loaded machine the CPU time is the figure that carries over.
    stages: dict[str, tuple[float, float]] = {}

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def since(start: tuple[float, float]) -> tuple[float, float]:
        now = clock()
        return now[0] - start[0], now[1] - start[1]

    # pydicom keeps a decoded pixel array with its dataset: the quality analyzer gets copies
    # made before any decoding, so its figure includes decoding as the worker's would.
    undecoded = [copy.deepcopy(ds) for ds in datasets]
    t = clock()
    volume = build_volume(datasets)
    stages["volume (sort, decode, HU)"] = since(t)
    t = clock()
    masks = segment_lungs(volume)
    stages["lung segmentation"] = since(t)
    t = clock()
    for mask in (masks.left, masks.right, masks.lungs):
        low_attenuation_percent(volume.hu, mask)
    stages["emphysema index x3"] = since(t)
    del volume, masks

    analyzer = CtChestAnalyzer({})
    t = clock()
    result = analyzer.run([api.SeriesData(info=info, datasets=datasets)])
    stages["whole ct-chest run (incl. SEG + SR; decoded above)"] = since(t)
    t = clock()
    quality = QualityAnalyzer({}).run([api.SeriesData(info=info, datasets=undecoded)])
    stages["quality analyzer, same series (decoding included)"] = since(t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    got = {m.key: m.value for m in result.measurements}
    print(f"load average before: {' '.join(f'{x:.1f}' for x in load)}")
    print("| stage | wall s | CPU s |\n| --- | ---: | ---: |")
    for name, (wall, cpu) in stages.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")
    print(f"\npeak RSS of the process (phantom included): {peak_mb:.0f} MB")
    for side, key in ((LEFT, "left"), (RIGHT, "right")):
        truth = ph.volume_ml(side)
        print(f"{key}: volume {got[f'lung_volume_{key}']:.1f} mL (truth {truth:.1f}, "
              f"{100 * (got[f'lung_volume_{key}'] - truth) / truth:+.2f} %), emphysema index "
              f"{got[f'emphysema_index_{key}']:.2f} % (truth {ph.emphysema_percent(side):.2f} %)")
    print(f"objects: {[o.Modality for o in result.objects]}, SEG frames "
          f"{int(result.objects[0].NumberOfFrames)}; summary: {result.summary}")
    print(f"quality: {quality.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
