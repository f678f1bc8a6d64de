import numpy as np
import pandas as pd

from cmr_lib.data.sources import open_source
from cmr_lib.report import explore


def test_pools_and_kl_table(tiny_phantom):
    src = open_source(tiny_phantom)
    pools, used = explore.load_pools({"phantom": src}, progress=False)
    assert used["phantom"] == {"C0": [1, 2, 3], "LGE": [1, 2, 3], "T2": [1, 2, 3]}
    heart = pools["phantom"]["C0"]["heart"]
    assert heart.size == sum(p.size for r, p in pools["phantom"]["C0"].items() if r != "heart")
    assert 0.0 <= heart.min() and heart.max() <= 1.0
    kl = explore.kl_table(pools, bins=32)
    assert list(kl.columns) == ["data", "pair", "heart", "MYO", "LV", "RV"]
    assert list(kl["pair"]) == ["C0->LGE", "C0->T2"] and (kl[["heart", "MYO", "LV", "RV"]] > 0).all().all()
    assert pools["phantom"]["C0"]["LV"].mean() > pools["phantom"]["C0"]["MYO"].mean()


def test_calibration_statement():
    kl = pd.DataFrame([{"data": "phantom", "pair": "C0->LGE", "heart": 0.3},
                       {"data": "MyoPS", "pair": "C0->LGE", "heart": 0.6}])
    assert "the same order of magnitude as" in explore.calibration_statement(kl)
    far = kl.assign(heart=[30.0, 0.6])
    assert "NOT of the same order" in explore.calibration_statement(far)
    assert "no real data found" in explore.calibration_statement(kl.iloc[:1])


def test_examples_and_tissue_table(tiny_phantom):
    ex = explore.examples({"phantom": open_source(tiny_phantom)})
    img, lab = ex["phantom"]["LGE"]
    assert img.ndim == 2 and lab.shape == img.shape and lab.any()
    table = explore.tissue_table()
    assert table.loc["myocardium", "signal LGE"] < 0.01 and table.loc["infarct", "signal LGE"] > 0.5
    assert np.isclose(table.filter(like="signal").max().to_numpy(), 1.0).all()


def test_heart_sizes_flags_a_wrong_voxel_size(tiny_phantom):
    right = explore.heart_sizes({"phantom": open_source(tiny_phantom)}).set_index("sequence")
    mm = right["epicardial diameter mm"]
    assert (mm.max() / mm.min()) < 1.3           # correct headers: one heart, one size in mm
    # C0 read with the LGE's in-plane voxel size (~0.75 mm instead of ~1.25): the stale header of the cropped
    # MS-CMRSeg copy, the other way round. The same heart in pixels now measures far smaller in mm.
    wrong = explore.heart_sizes({"phantom": open_source(tiny_phantom, c0_spacing="lge")}).set_index("sequence")
    assert wrong.loc["C0", "voxel size mm"] < 0.8 < right.loc["C0", "voxel size mm"]
    assert wrong.loc["C0", "epicardial diameter px"] == right.loc["C0", "epicardial diameter px"]
    ratio = wrong.loc["LGE", "epicardial diameter mm"] / wrong.loc["C0", "epicardial diameter mm"]
    assert ratio > 1.3, ratio
