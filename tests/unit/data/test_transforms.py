from pathlib import Path

import numpy as np
import pytest
import torch

from cmr_lib.core.config import make_config
from cmr_lib.core.errors import CmrError
from cmr_lib.data.nifti import Volume
from cmr_lib.data.slices import SliceDataset, heart_extent, nearest_level, prepare_volume, relative_levels
from cmr_lib.data.sources import open_source
from cmr_lib.data.transforms import (
    apply_affine,
    center_crop,
    normalise,
    random_affine,
    resample_inplane,
    resize,
    uncrop,
)


def test_normalise_is_robust_and_scale_free():
    v = np.random.default_rng(0).random((20, 20, 3)).astype(np.float32)
    v[0, 0, 0] = 1e9                                             # an extreme outlier
    n = normalise(v)
    assert n.min() == 0.0 and n.max() == 1.0 and n.dtype == np.float32
    assert np.median(n) == pytest.approx(0.5, abs=0.05)          # the outlier did not squash the rest
    assert np.allclose(normalise(v * 1000 + 7), n, atol=1e-5)     # any storage scale gives the same image
    with pytest.raises(CmrError, match="constant"):
        normalise(np.full((4, 4, 2), 5.0))
    with pytest.raises(CmrError, match="NaN"):
        normalise(np.array([[[np.nan, 1.0]]]))
    sparse = np.zeros((20, 20, 2), np.float32)
    sparse[3, 3, 0] = 4.0                                         # percentiles equal: falls back to min/max
    assert normalise(sparse).max() == 1.0


def test_normalise_window_takes_the_scale_from_the_centre_only():
    v = np.full((100, 100, 2), 10.0, np.float32)
    v[40:60, 40:60] = np.linspace(0, 100, 400).reshape(20, 20, 1)      # the "heart", 0-100
    v[:10] = 1000.0                                                    # a bright body wall far from the centre
    whole, centre = normalise(v), normalise(v, window=(20, 20))
    assert whole[50, 50, 0] < 0.1                                      # the wall sets the scale: the heart is dark
    assert centre[40:60, 40:60].min() == 0.0 and centre[40:60, 40:60].max() == 1.0
    assert centre[0, 0, 0] == 1.0                                      # outside the window: clipped, not rescaled
    assert np.array_equal(normalise(v, window=(500, 500)), whole)      # a window past the image: the whole slice
    vol = Volume(image=v, label=None, spacing=(0.5, 0.5, 8.0), affine=np.eye(4), patient=1, sequence="LGE",
                 image_path=Path("p1_LGE.nii.gz"), label_path=None)
    assert np.allclose(prepare_volume(vol, fov_mm=10.0).image, centre)  # 10 mm at 0.5 mm: the 20 px window


def test_resample_keeps_the_field_of_view():
    x, y = np.meshgrid(np.arange(192), np.arange(192), indexing="ij")
    disc = (np.hypot(x - 120, y - 80) < 30).astype(np.uint8)[:, :, None]      # centre (120, 80) px at 0.75 mm
    out = resample_inplane(disc, (0.75, 0.75, 5.0), 1.5, order=0)
    assert out.shape == (96, 96, 1) and set(np.unique(out)) == {0, 1}
    centre_mm = np.argwhere(out[:, :, 0]).mean(axis=0) * 1.5 + 0.75
    assert centre_mm == pytest.approx(np.array([120.5, 80.5]) * 0.75, abs=0.8)
    assert out.sum() * 1.5 ** 2 == pytest.approx(disc.sum() * 0.75 ** 2, rel=0.05)
    img = resample_inplane(disc.astype(np.float32), (0.75, 0.75, 5.0), 1.5, order=1)
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert resize(out, (192, 192, 1), order=0).shape == (192, 192, 1)
    assert resample_inplane(disc, (0.75, 0.75, 5.0), None, order=0) is disc


@pytest.mark.parametrize("shape, out", [((155, 157, 20), (478, 482)), ((155, 157), (120, 100)),
                                        ((96, 96, 3, 2), (250, 260))])
def test_bilinear_resize_is_scipy_grid_mode_zoom(shape, out):
    """The fast order-1 path (torch) gives scipy's grid-mode zoom, up- and down-sampling, any trailing axes."""
    from scipy import ndimage
    a = np.random.default_rng(0).random(shape)
    zoom = [out[0] / shape[0], out[1] / shape[1]] + [1.0] * (len(shape) - 2)
    ref = ndimage.zoom(a, zoom, order=1, grid_mode=True, mode="nearest", prefilter=False)
    got = resize(a, out, order=1)
    assert got.dtype == np.float64 and got.shape == ref.shape == (*out, *shape[2:])
    np.testing.assert_allclose(got, ref, atol=1e-12)
    got32 = resize(a.astype(np.float32), out, order=1)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, ref, atol=1e-4)
    ints = (a * 100).astype(np.int16)                     # integers keep scipy's path (and their dtype)
    assert resize(ints, out, order=1).dtype == np.int16


def test_center_crop_pads_and_inverts():
    a = np.arange(10 * 12).reshape(10, 12) + 1
    c = center_crop(a, 6)
    assert c.shape == (6, 6) and c[0, 0] == a[2, 3]
    p = center_crop(a, 16)                                         # 16x16 from 10x12: zero padding
    assert p.shape == (16, 16) and p[3, 2] == a[0, 0] and p[0, 0] == 0
    assert np.array_equal(uncrop(center_crop(a, 16), a.shape), a)
    assert center_crop(np.ones((16, 16)), 224).sum() == 256        # a 16x16 image smaller than the crop
    for shape, size in (((8, 9), (5, 5)), ((5, 5), (8, 8)), ((9, 4), (6, 7)), ((7, 7), (4, 10))):
        b = np.arange(np.prod(shape)).reshape(shape) + 1           # odd differences: one offset both ways
        back = uncrop(center_crop(b, size), shape)
        kept = back > 0
        assert kept.any() and np.array_equal(back[kept], b[kept])
    assert center_crop(np.ones((3, 5)), (4, 4), anchor="start").sum() == 12


def test_identity_affine_changes_nothing():
    img = torch.rand(1, 24, 30)
    lab = torch.randint(0, 4, (24, 30))
    m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out_img, out_lab = apply_affine(img, lab, m)
    assert torch.allclose(out_img, img, atol=1e-5) and torch.equal(out_lab, lab)


def test_translation_and_rotation_move_pixels_where_expected():
    img = torch.zeros(1, 32, 32)
    img[0, 10, 20] = 1.0
    lab = (img[0] > 0).long() * 3
    # output(p) = input(A p + t): a shift of -4/32 along rows moves the dot from row 10 to row 14
    out_img, out_lab = apply_affine(img, lab, np.array([[1.0, 0.0, -4 / 32], [0.0, 1.0, 0.0]]))
    assert tuple(torch.nonzero(out_lab)[0].tolist()) == (14, 20)
    assert out_img[0, 14, 20] == pytest.approx(1.0)
    # 90 degrees about the centre (15.5, 15.5): the dot's offset (-5.5, 4.5) comes from p = A^-1 (-5.5, 4.5)
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    _, r_lab = apply_affine(img, lab, rot)
    assert tuple(torch.nonzero(r_lab)[0].tolist()) == (20, 21)


@pytest.mark.parametrize("shape", [(48, 96), (96, 48), (64, 64)])
def test_affine_matches_scipy_on_non_square_images(shape):
    """Rotation, shear and scale agree with scipy.ndimage.affine_transform, also when H != W."""
    from scipy import ndimage

    h, w = shape
    img = np.zeros(shape, np.float32)
    img[h // 4: h // 2, w // 3: w // 2] = 1.0
    img[h // 2 + 3, w // 2 - 5] = 2.0
    m = random_affine(np.random.default_rng(3), scale=(0.9, 1.1), rotation_deg=25, translation=0.0, shear_deg=8)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    ref = ndimage.affine_transform(img, m[:, :2], offset=centre - m[:, :2] @ centre, order=1, mode="constant")
    ours, _ = apply_affine(torch.from_numpy(img)[None], None, m)
    assert np.abs(ours[0].numpy() - ref)[2:-2, 2:-2].max() < 1e-4


def test_random_affine_keeps_labels_as_labels():
    rng = np.random.default_rng(0)
    lab = torch.zeros(64, 64, dtype=torch.int64)
    lab[20:40, 20:40] = 1
    lab[25:35, 25:35] = 2
    for _ in range(5):
        m = random_affine(rng, scale=(0.8, 1.2), rotation_deg=30, translation=0.1, shear_deg=10)
        _, out = apply_affine(torch.rand(1, 64, 64), lab, m)
        assert set(out.unique().tolist()) <= {0, 1, 2} and out.dtype == torch.int64
        assert (out == 2).sum() > 0


def test_levels_between_base_and_apex():
    lab = np.zeros((4, 4, 10), np.uint8)
    lab[1, 1, 2:8] = 2
    assert heart_extent(lab) == (2, 7)
    lv = relative_levels(10, (2, 7))
    assert lv[2] == 0.0 and lv[7] == 1.0 and lv[0] < 0 and lv[9] > 1
    assert nearest_level(lv, 0.5) in (4, 5)
    assert heart_extent(np.zeros((2, 2, 3))) is None
    assert np.all(relative_levels(3, None) == [1 / 6, 0.5, 5 / 6])
    assert relative_levels(3, (1, 1))[0] == 0.5


def test_slice_dataset(tiny_phantom, tmp_path):
    cfg = make_config(profile="smoke", output_root=tmp_path)
    src = open_source(tiny_phantom)
    ds = SliceDataset.from_source(src, [1, 2], "C0", **cfg.slicing(train=True), heart_only=True)
    item = ds[0]
    s = cfg.crop
    assert item["image"].shape == (1, s, s) and item["image"].dtype == torch.float32
    assert item["label"].shape == (s, s) and item["label"].dtype == torch.int64 and item["has_label"]
    assert all(ds.volumes[vi].label[:, :, z].any() for vi, z in ds.items)
    again = ds[0]
    assert torch.equal(item["image"], again["image"])                    # deterministic in (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(item["image"], ds[0]["image"])                # a new draw next epoch
    ev = SliceDataset.from_source(src, [1], "LGE", **cfg.slicing(train=False))
    assert len(ev) == src.load(1, "LGE").shape[2]
    assert torch.equal(ev[3]["image"], ev[3]["image"])
    prep = prepare_volume(src.load(1, "LGE"), spacing_mm=2.5)
    assert prep.spacing[:2] == pytest.approx((2.5, 2.5), rel=0.02) and prep.original_shape[2] == prep.image.shape[2]
    vol = src.load(1, "LGE")
    assert prep.spacing[0] * prep.image.shape[0] == pytest.approx(vol.spacing[0] * vol.shape[0])   # same FOV
    assert 0.0 <= prep.image.min() and prep.image.max() <= 1.0
    nolab = SliceDataset([prepare_volume(src.load(1, "T2", label="skip"))], crop=32)
    assert not nolab[0]["has_label"] and nolab[0]["label"].sum() == 0
