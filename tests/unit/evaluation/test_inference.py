"""Whole-volume inference: the crop at the image centre or on the heart found by the network itself."""
from pathlib import Path

import numpy as np
import pytest
import torch

from cmr_lib.core.errors import CmrError
from cmr_lib.data.nifti import Volume
from cmr_lib.data.transforms import center_crop, uncrop
from cmr_lib.evaluation.inference import heart_shift, predict_volume


class BrightIsLV(torch.nn.Module):
    """A stand-in segmenter: LV (class 2) wherever the image is bright, background elsewhere."""

    depth = 3

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        lv = 20 * (x - 0.5) + 0 * self.w
        zero = torch.zeros_like(x)
        return torch.cat([zero, zero - 5, lv, zero - 5], 1)


def disc_volume(centre, n=120, radius=12, slices=2):
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    disc = np.hypot(x - centre[0], y - centre[1]) < radius
    img = np.repeat(np.where(disc, 1.0, 0.1).astype(np.float32)[:, :, None], slices, axis=2)
    lab = np.repeat((disc * 2).astype(np.uint8)[:, :, None], slices, axis=2)
    return Volume(image=img, label=lab, spacing=(1.0, 1.0, 8.0), affine=np.eye(4), patient=1, sequence="LGE",
                  image_path=Path("patient1_LGE.nii.gz"), label_path=None)


def test_shifted_crops_invert_and_zero_fill():
    a = np.arange(20 * 18).reshape(20, 18) + 1
    c = center_crop(a, 8, shift=(9, -7))               # a window reaching past the bottom and the left edge
    assert c.shape == (8, 8) and c[0, 7] == a[15, 5] and (c[5:, :] == 0).all() and (c[:, :2] == 0).all()
    back = uncrop(c, a.shape, shift=(9, -7))
    assert np.array_equal(back[back > 0], a[back > 0]) and (back > 0).sum() == (c > 0).sum()
    assert np.array_equal(center_crop(a, 8, shift=(0, 0)), center_crop(a, 8))


def test_the_heart_crop_finds_a_heart_the_centre_crop_cuts():
    vol = disc_volume(centre=(82, 45))                  # off centre: a 40-px centre crop sees only its edge
    model = BrightIsLV()
    kw = {"crop": 40, "percentiles": (0.0, 100.0)}
    at_centre = predict_volume(model, vol, **kw)
    on_heart = predict_volume(model, vol, centre="heart", **kw)
    truth = vol.label == 2
    dice = lambda p: 2 * ((p == 2) & truth).sum() / ((p == 2).sum() + truth.sum())
    assert dice(at_centre) < 0.5 and dice(on_heart) > 0.99
    shift = heart_shift(model, vol.image.clip(0, 1), 40, batch=4, device=torch.device("cpu"), autocast=None)
    assert abs(40 + shift[0] + 19.5 - 82) <= 1.5 and abs(40 + shift[1] + 19.5 - 45) <= 1.5
    centred = disc_volume(centre=(60, 60))              # a centred heart: both crops agree
    assert np.array_equal(predict_volume(model, centred, **kw), predict_volume(model, centred, centre="heart", **kw))
    with pytest.raises(CmrError, match="test_crop"):
        predict_volume(model, vol, centre="middle", **kw)


def test_heart_placement_measures_how_far_the_heart_lies_from_the_centred_crop():
    from cmr_lib.report.explore import heart_placement

    class Source:
        def __init__(self, vols):
            self.vols = vols

        def patients_with(self, seq, labelled):
            return [v.patient for v in self.vols]

        def volumes(self, patients, seq, label):
            return self.vols
    centred, corner = disc_volume(centre=(60, 60)), disc_volume(centre=(100, 60))   # 120 mm field, 1 mm voxels
    table = heart_placement({"a": Source([centred]), "b": Source([corner])}, fov_mm=40)
    assert list(table["field mm"]) == ["120 x 120", "120 x 120"]
    assert table["heart offset mm"][0] < 1.0 and abs(table["heart offset mm"][1] - 40.0) < 1.0
    assert table["heart inside centred crop"][0] == 1.0 and table["heart inside centred crop"][1] == 0.0
    wide = heart_placement({"b": Source([corner])}, fov_mm=160)          # a window past the field keeps it all
    assert wide["heart inside centred crop"][0] == 1.0


def test_the_placement_report_on_the_real_sets_names_the_one_heart_the_centred_crop_cuts(mscmrseg_dir, myops_dir):
    """docs/findings.md rests on this (benchmarks/results/test_placement.md): MyoPS fields are over twice the
    144 mm crop, and patient 115 is the only test heart that crop cuts."""
    import sys

    from cmr_lib.core.paths import repo_root
    sys.path.insert(0, str(repo_root() / "benchmarks"))
    import real_experiments
    text = real_experiments.placement(None)
    rows = [r.split("|")[1:-1] for r in text.splitlines() if r.startswith("| M")]
    assert len(rows) == 25 and "144 mm" in text
    cut = [r[1].strip() for r in rows if float(r[4]) < 1.0]
    assert cut == ["115"], cut
    assert all(min(map(float, r[2].split("x"))) > 2 * 144 for r in rows if "MyoPS" in r[0])
