"""The two appearance numbers of the quality report (issue 34): the myocardium's spread and the blood-minus-
myocardium contrast, on synthetic slices whose answer is known."""
import numpy as np
import pytest

from cmr_lib.evaluation.quality import appearance, structure_stats


def _slice(myo, blood, n=4, size=16):
    labels = np.zeros((n, size, size), dtype=np.int64)
    labels[:, 4:8, 4:12] = 1                      # myocardium
    labels[:, 8:12, 4:12] = 2                     # LV blood pool
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    images[:, 0][labels == 1] = myo
    images[:, 0][labels == 2] = blood
    return images, labels


def test_bssfp_like_and_lge_like_slices_are_told_apart_by_spread_and_contrast():
    flat, labels = _slice(myo=0.3, blood=0.8)                                   # bSSFP: even myocardium
    assert appearance(flat, labels) == pytest.approx({"myo_std": 0.0, "contrast": 0.5})
    rng = np.random.default_rng(0)
    scarred, _ = _slice(myo=rng.choice([0.05, 0.9], size=(4 * 4 * 8)), blood=0.6)   # LGE: nulled with bright scar
    a = appearance(scarred, labels)
    assert a["myo_std"] > 0.3 and a["contrast"] == pytest.approx(0.6 - scarred[:, 0][labels == 1].mean())
    assert np.isnan(structure_stats(flat, np.zeros_like(labels), 1)[0])        # no myocardium: undefined
