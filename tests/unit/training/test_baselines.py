"""The appearance-augmentation baselines (issue 7): what each does to an image, which settings take
which, and that a run trains on what it says."""
import numpy as np
import pytest
import torch

from cmr_lib.core.config import make_config
from cmr_lib.core.errors import CmrError
from cmr_lib.training.augment import gin, histogram_match, random_intensity


def _images(n=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    disk = ((xx ** 2 + yy ** 2) < 0.4).float()
    return (0.2 + 0.6 * disk + 0.1 * torch.rand((n, 1, s, s), generator=g)).clamp(0, 1)


def test_histogram_match_takes_the_references_values_in_the_images_order():
    x, ref = _images(seed=1), torch.rand((4, 1, 32, 32), generator=torch.Generator().manual_seed(2)) ** 2
    out = histogram_match(x, ref)
    for i in range(4):
        assert torch.equal(out[i].flatten().sort().values, ref[i].flatten().sort().values)   # its histogram
        order = x[i].flatten().argsort()
        assert torch.all(out[i].flatten()[order].diff() >= 0)                                # x's rank order
    with pytest.raises(CmrError, match="differ"):
        histogram_match(x, ref[:2])


def test_intensity_remap_is_monotone_in_range_seeded_and_varied():
    x = _images()
    a = random_intensity(x, torch.Generator().manual_seed(3), contrast=(1.0, 1.0))
    b = random_intensity(x, torch.Generator().manual_seed(3), contrast=(1.0, 1.0))
    c = random_intensity(x, torch.Generator().manual_seed(4), contrast=(1.0, 1.0))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    for i in range(4):
        order = x[i].flatten().argsort()
        assert torch.all(a[i].flatten()[order].diff() >= -1e-6)          # intensity order kept
    curves = [np.corrcoef(x[i].flatten(), a[i].flatten())[0, 1] for i in range(4)]
    assert not torch.allclose(a[0], x[0], atol=0.05) and len({round(v, 3) for v in curves}) > 1


def test_gin_is_seeded_rescaled_and_changes_contrast_nonmonotonically():
    x = _images(n=8)
    a = gin(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, gin(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, gin(x, torch.Generator().manual_seed(6)))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    corr = [np.corrcoef(x[i].flatten(), a[i].flatten())[0, 1] for i in range(8)]
    assert min(corr) < 0.99                                             # not the identity
    assert any(c < 0 for c in corr) or max(corr) - min(corr) > 0.2      # random nets differ per image
    with pytest.raises(CmrError, match="must be >= 2"):
        gin(x, torch.Generator(), layers=1)


@pytest.mark.parametrize("setting, stylizer, expect", [
    (0, "intensity", "intensity"), (0, "gin", "gin"), (0, "rain", "none"), (2, "histmatch", "histmatch"),
    (3, "histmatch", "histmatch"), (3, "rain+intensity", "rain+intensity"), (1, "adaconv+intensity", "adaconv+intensity")])
def test_settings_take_the_baselines_that_make_sense(setting, stylizer, expect):
    cfg = make_config(profile="smoke", setting=setting, stylizer=stylizer)
    assert cfg.stylizer == expect
    assert cfg.network == (expect.split("+")[0] if expect.split("+")[0] in ("rain", "adaconv") else None)
    assert cfg.baseline == (expect.split("+")[-1] if expect.split("+")[-1] in ("histmatch", "intensity", "gin")
                            else None)


@pytest.mark.parametrize("setting, stylizer, message", [
    (1, "histmatch", "setting 1 would repeat setting 2"), (0, "histmatch", "histmatch uses LGE styles"),
    (2, "intensity", "run it as setting 0"), (3, "gin", "run it as setting 0"),
    (0, "rain+intensity", "a stylizer needs setting 1, 2 or 3"), (2, "none", "setting 2 stylizes")])
def test_a_baseline_in_the_wrong_setting_is_one_line(setting, stylizer, message):
    with pytest.raises(CmrError, match=message) as err:
        make_config(profile="smoke", setting=setting, stylizer=stylizer)
    assert "\n" not in str(err.value) and "parameter 'stylizer'" in str(err.value)


def test_baseline_profile_values_are_checked():
    with pytest.raises(CmrError, match="baselines.gin.kernel_sizes"):
        make_config(profile="smoke", setting=0, stylizer="gin", overrides={"baselines.gin.kernel_sizes": [2]})


def test_slaug_location_scale_and_saliency_fusion():
    from cmr_lib.training import slaug

    x = _images(n=3, s=32, seed=4)
    y = torch.zeros((3, 32, 32), dtype=torch.long)
    y[:, 10:20, 10:20], y[:, 22:28, 4:12] = 2, 3
    gla = slaug.global_augment(x, torch.Generator().manual_seed(0))
    assert gla.shape == x.shape and 0 <= float(gla.min()) and float(gla.max()) <= 1
    for i in range(3):                                   # one monotone curve per image keeps the intensity order
        a, b = x[i].flatten(), gla[i].flatten()
        assert (b[a.argsort()].diff() >= -1e-5).all()
    assert torch.equal(gla, slaug.global_augment(x, torch.Generator().manual_seed(0)))      # seeded
    lla = slaug.local_augment(x, y, torch.Generator().manual_seed(1))
    inside = [float(lla[i, 0][y[i] == c].mean() - x[i, 0][y[i] == c].mean()) for i in range(3) for c in (2, 3)]
    assert len({round(v, 3) for v in inside}) > 1       # each structure gets its own remap
    grad = torch.zeros((1, 1, 40, 40))
    grad[0, 0, :8, :8] = 1.0                            # the loss reacts to the top-left corner only
    sal = slaug.saliency_map(grad)
    assert float(sal.min()) == 0.0 and float(sal[0, 0, 0, 0]) == 1.0 and sal[0, 0, 2, 2] > 0.5 > 0.05 > sal[0, 0, 35, 35]
    net = torch.nn.Conv2d(1, 4, 3, padding=1)
    both = slaug.slaug(x, y, torch.Generator().manual_seed(2),
                       lambda img: torch.nn.functional.cross_entropy(net(img), y))
    assert both.shape == (6, 1, 32, 32) and not both.requires_grad and net.weight.grad is None
    fused = both[3:]
    assert not torch.allclose(fused, both[:3]) and 0 <= float(fused.min()) and float(fused.max()) <= 1
