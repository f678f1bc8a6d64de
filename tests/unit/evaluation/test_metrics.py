import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage

from cmr_lib.evaluation import metrics

SPACINGS = [(1.25, 1.25, 10.0), (0.73, 0.76, 5.0), (1.0, 2.0, 3.0)]


def _random_masks(rng, shape=(48, 40, 10)):
    """Two overlapping blobby masks (smoothed noise), so surfaces are irregular and partly touch the border."""
    def blob():
        f = ndimage.gaussian_filter(rng.normal(size=shape), (3, 3, 1))
        return f > np.percentile(f, 70)
    return blob(), blob()


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_medpy(seed):
    rng = np.random.default_rng(seed)
    a, b = _random_masks(rng)
    sp = SPACINGS[seed % 3]
    ours = metrics.surface_metrics(a, b, sp)
    assert ours["dice"] == pytest.approx(medpy.dc(a, b), abs=1e-6)
    assert ours["hd"] == pytest.approx(medpy.hd(a, b, sp), abs=1e-6)
    assert ours["hd95"] == pytest.approx(medpy.hd95(a, b, sp), abs=1e-6)
    assert ours["assd"] == pytest.approx(medpy.assd(a, b, sp), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_monai(seed):
    rng = np.random.default_rng(100 + seed)
    a, b = _random_masks(rng)
    sp = SPACINGS[seed]
    ours = metrics.surface_metrics(a, b, sp)
    pa = torch.from_numpy(a)[None, None].float()
    pb = torch.from_numpy(b)[None, None].float()
    hd = compute_hausdorff_distance(pa, pb, include_background=True, spacing=list(sp))
    assert ours["hd"] == pytest.approx(float(hd), abs=1e-5)
    assert ours["dice"] == pytest.approx(float(compute_dice(pa, pb, include_background=True)), abs=1e-6)


def test_small_structures_far_apart_and_touching_the_border():
    a = np.zeros((30, 30, 5), bool)
    b = np.zeros_like(a)
    a[0:3, 0:3, 0] = True                # touches the array border: border voxels still count as surface
    b[25:30, 20:30, 3:5] = True
    sp = (0.8, 0.9, 7.0)
    ours = metrics.surface_metrics(a, b, sp)
    for key, fn in (("hd", medpy.hd), ("hd95", medpy.hd95), ("assd", medpy.assd)):
        assert ours[key] == pytest.approx(fn(a, b, sp), abs=1e-6)
    assert ours["dice"] == 0.0


def test_empty_masks_are_nan_not_invented():
    a = np.zeros((8, 8, 2), bool)
    b = a.copy()
    b[2:4, 2:4, 0] = True
    empty_pred = metrics.surface_metrics(a, b, (1, 1, 1))
    assert empty_pred["dice"] == 0.0 and np.isnan(empty_pred["hd"]) and np.isnan(empty_pred["assd"])
    both = metrics.surface_metrics(a, a, (1, 1, 1))
    assert np.isnan(both["dice"]) and np.isnan(both["hd95"])
    same = metrics.surface_metrics(b, b, (1, 1, 1))
    assert same["dice"] == 1.0 and same["hd"] == 0.0 and same["assd"] == 0.0


def test_evaluate_volume_per_structure():
    ref = np.zeros((20, 20, 3), np.uint8)
    ref[5:15, 5:15] = 1
    ref[8:12, 8:12] = 2
    ref[0:4, 0:4] = 3
    pred = ref.copy()
    pred[0:4, 0:4] = 0                   # RV missed entirely
    out = metrics.evaluate_volume(pred, ref, (1.0, 1.0, 5.0))
    assert list(out) == ["MYO", "LV", "RV"]
    assert out["MYO"]["dice"] == 1.0 and out["LV"]["hd"] == 0.0
    assert out["RV"]["dice"] == 0.0 and np.isnan(out["RV"]["hd"])
    with pytest.raises(ValueError, match="shape"):
        metrics.evaluate_volume(pred[:10], ref, (1, 1, 1))


def test_histogram_kl():
    rng = np.random.default_rng(0)
    x, y = rng.beta(2, 5, 5000), rng.beta(5, 2, 5000)
    assert metrics.intensity_kl(x, x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.intensity_kl(x, y) > 1.0
    assert metrics.intensity_kl(x, rng.beta(2, 5, 5000)) < 0.05
    h = metrics.histogram(np.array([0.1, 0.1]), bins=4)
    assert (h > 0).all() and h.sum() == pytest.approx(1.0)      # smoothing keeps empty bins finite
    assert np.isfinite(metrics.intensity_kl(np.array([0.05]), np.array([0.95])))


def test_scalar_spacing_and_lower_dimensions_like_medpy():
    rng = np.random.default_rng(5)
    a, b = (ndimage.gaussian_filter(rng.normal(size=(40, 50)), 3) > 0.02 for _ in range(2))
    ours = metrics.surface_metrics(a, b, 0.8)
    assert ours["hd"] == pytest.approx(medpy.hd(a, b, 0.8)) and ours["assd"] == pytest.approx(medpy.assd(a, b, 0.8))
    line_a, line_b = np.zeros(20, bool), np.zeros(20, bool)
    line_a[2:6], line_b[10:15] = True, True
    assert metrics.surface_metrics(line_a, line_b, 2.0)["hd"] == pytest.approx(medpy.hd(line_a, line_b, 2.0))


def test_mean_class_dice_averages_the_classes_present():
    from cmr_lib.evaluation.metrics import mean_class_dice

    ref = np.zeros((4, 4), int)
    ref[0, :2], ref[1, :2] = 1, 2                       # MYO and LV present, RV absent
    pred = ref.copy()
    pred[1, :2] = 0                                     # LV missed entirely
    assert mean_class_dice(pred, ref) == pytest.approx(0.5)
    assert np.isnan(mean_class_dice(pred, np.zeros_like(ref)))
