"""The ct-chest analyzer on a clinical-size phantom (300 slices of 512 x 512): the same accuracy
as on the small one, and the SEG/SR written. Slow (about a minute and 2 GB of memory), so
`make test-full` only; bench/ct_chest_timing.py times the same run stage by stage."""

from __future__ import annotations

import pytest
from analysis_helpers import series_data
from phantoms import LEFT, RIGHT, chest_phantom

from dicomvault.analysis.lung import CtChestAnalyzer


@pytest.mark.slow
def test_300_slices_512_matrix() -> None:
    ph = chest_phantom(shape=(300, 512, 512), spacing=(1.0, 0.625, 0.625), seed=13)
    result = CtChestAnalyzer({}).run([series_data(ph.datasets)])
    got = {m.key: m.value for m in result.measurements}
    for side, name in ((LEFT, "left"), (RIGHT, "right")):
        assert abs(got[f"lung_volume_{name}"] - ph.volume_ml(side)) <= 0.02 * ph.volume_ml(side)
        assert abs(got[f"emphysema_index_{name}"] - ph.emphysema_percent(side)) <= 1.0
    assert [o.Modality for o in result.objects] == ["SEG", "SR"]
