import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmr_lib import train
from cmr_lib.data import open_source
from cmr_lib.errors import CmrError
from cmr_lib.inference import predict_volume
from cmr_lib.params import make_config
from cmr_lib.slices import prepare_volume


class Oracle(torch.nn.Module):
    """A 'network' that returns the one-hot of labels it was given (to test the prediction plumbing)."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels            # (Z, S, S) long, already cropped
        self.z = 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = F.one_hot(self.labels[self.z:self.z + x.shape[0]], 4).permute(0, 3, 1, 2).float() * 10
        self.z += x.shape[0]
        return out


@pytest.mark.parametrize("spacing_mm, crop", [(None, 256), (2.5, 64), (1.0, 96)])
def test_prediction_returns_to_the_original_grid(tiny_phantom, spacing_mm, crop):
    vol = open_source(tiny_phantom).load(1, "LGE", label="require")
    prep = prepare_volume(vol, spacing_mm=spacing_mm)
    from cmr_lib.transforms import center_crop
    lab = torch.from_numpy(center_crop(prep.label, crop).astype(np.int64)).permute(2, 0, 1)
    pred = predict_volume(Oracle(lab), vol, crop=crop, spacing_mm=spacing_mm, batch=4)
    assert pred.shape == vol.label.shape and pred.dtype == np.uint8
    agree = (pred == vol.label).mean()
    assert agree > (0.999 if spacing_mm is None else 0.97)          # resampling twice loses only edge voxels


def test_setting_needs_the_right_stylizer(tiny_phantom, tmp_path):
    src = open_source(tiny_phantom)
    cfg = make_config(profile="smoke", setting=2, stylizer="rain", data_dir=tiny_phantom, output_root=tmp_path)
    with pytest.raises(CmrError, match="setting 2 stylizes: pass a stylizer pre-trained on C0->LGE"):
        train.train_setting(cfg, src)
    t2 = train.TrainedStylizer(None, "rain", ("C0", "T2"), tmp_path, {}, {})
    with pytest.raises(CmrError, match="needs a C0->LGE stylizer, got C0->T2"):
        train.train_setting(cfg, src, stylizer=t2)
    cfg0 = make_config(profile="smoke", data_dir=tiny_phantom, output_root=tmp_path)
    for bad in (1.5, -1, True, "3"):
        with pytest.raises(CmrError, match="epsilon_iterations"):
            train.train_setting(cfg0, src, epsilon_iterations=bad)


def test_same_patient_level_pairing_picks_the_nearest_level(tiny_phantom):
    cfg = make_config(profile="smoke", data_dir=tiny_phantom)
    src = open_source(tiny_phantom)
    from cmr_lib.slices import SliceDataset
    styles = SliceDataset.from_source(src, [1, 2], "LGE", cfg, train=False, label="skip")
    picker = train.StylePicker(styles, "same_patient_level")
    rng = np.random.default_rng(0)
    for level in (0.0, 0.5, 1.0):
        img = picker([{"patient": 2, "level": level}], rng, 0)[0]
        want = min(picker.by_patient[2], key=lambda o: abs(o[1] - level))[0]
        assert torch.equal(img, styles[want]["image"])
    picker([{"patient": 99, "level": 0.5}], rng, 0)                 # no LGE for that patient: random, counted
    assert picker.fallbacks == 1


def test_setting_zero_trains_validates_and_keeps_the_best(tiny_phantom, tmp_path):
    cfg = make_config(profile="smoke", data_dir=tiny_phantom, output_root=tmp_path,
                      overrides={"segmenter.iterations": 6, "segmenter.val_every": 3})
    res = train.train_setting(cfg, open_source(tiny_phantom), progress=False)
    assert res.history["val_step"] == [3, 6] and len(res.history["val_dice"]) == 2
    assert res.info["best_step"] in (3, 6) and (res.run_dir / "best.pt").is_file()
    again = train.train_setting(cfg, open_source(tiny_phantom), progress=False)
    assert again.info["reused"]
    a, b = res.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
