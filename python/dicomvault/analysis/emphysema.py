"""The emphysema index: the percentage of lung voxels below -950 HU ("LAA-950", low attenuation
area), the density measure of emphysema used by COPDGene and the QIBA lung density profile."""

from __future__ import annotations

import numpy as np

LAA_THRESHOLD_HU = -950.0


def low_attenuation_percent(hu: np.ndarray, mask: np.ndarray, threshold: float = LAA_THRESHOLD_HU) -> float:
    """Percent of the voxels of `mask` whose HU is below `threshold`; NaN for an empty mask."""
    total = int(np.count_nonzero(mask))
    if total == 0:
        return float("nan")
    return 100.0 * float(np.count_nonzero(hu[mask] < threshold)) / total
