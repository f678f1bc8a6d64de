"""The stylizer quality metrics (issue 34) on tiny synthetic cases whose answers are known: an identity "stylizer"
keeps Dice and has the raw pair's c2st, a blur drops grad_ratio, a histogram remap to the target lowers the KL,
and the two-sample test tells different images apart and not alike ones."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from cmr_lib.evaluation.quality import c2st, dice_kept, grad_ratio, mean_dice, structure_kl


def _hearts(n, seed, *, myo=0.6, blood=0.9, noise=0.05, size=32):
    """n slices of a disc heart (LV blood pool inside a myocardial ring) at random places, with their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, labs = [], []
    for _ in range(n):
        cy, cx = rng.uniform(12, 20, 2)
        r = np.hypot(yy - cy, xx - cx)
        lab = np.where(r < 5, 2, np.where(r < 8, 1, 0)).astype(np.uint8)
        img = np.choose(lab, [0.2, myo, blood]) + rng.normal(0, noise, lab.shape)
        imgs.append(np.clip(img, 0, 1)[None].astype(np.float32))
        labs.append(lab)
    return np.stack(imgs), np.stack(labs)


def test_an_identity_stylizer_keeps_dice_and_has_the_raw_pairs_c2st():
    content, labels = _hearts(40, 0)
    target, _ = _hearts(40, 1, myo=0.3, blood=0.6)                 # LGE-like: dark myocardium, grey blood
    judge = labels.copy()                                           # a judge that finds the heart
    assert dice_kept(judge, judge, labels) == 1.0
    stylized = content.copy()                                       # the identity "stylizer"
    assert c2st(stylized, target, seed=3) == c2st(content, target, seed=3)
    assert grad_ratio(stylized, content) == 1.0


def test_a_blur_drops_grad_ratio_and_a_lost_heart_drops_dice_kept():
    content, labels = _hearts(8, 0)
    blurred = ndimage.gaussian_filter(content, sigma=(0, 0, 2, 2))
    assert grad_ratio(blurred, content) < 0.3
    empty = np.zeros_like(labels)
    assert dice_kept(empty, labels, labels) == 0.0 and mean_dice(labels, labels) == 1.0


def test_a_histogram_remap_to_the_target_lowers_the_structure_kl():
    content, labels = _hearts(20, 0)
    target, target_labels = _hearts(20, 1, myo=0.3, blood=0.6)
    remapped = content.copy()                                       # each structure moved to the target's level
    for cls, (src, dst) in {1: (0.6, 0.3), 2: (0.9, 0.6)}.items():
        remapped[:, 0][labels == cls] += dst - src
    for cls in (1, 2):
        raw = structure_kl(content, labels, target, target_labels, cls)
        assert structure_kl(remapped, labels, target, target_labels, cls) < raw / 5
    assert np.isnan(structure_kl(content, labels, target, np.zeros_like(target_labels), 1))


def test_c2st_tells_different_images_apart_and_not_alike_ones():
    a, _ = _hearts(60, 0)
    same, _ = _hearts(60, 5)
    other, _ = _hearts(60, 6, myo=0.3, blood=0.6)
    blurred = ndimage.gaussian_filter(same, sigma=(0, 0, 2, 2))
    assert c2st(a, other, seed=0) >= 0.9 and c2st(a, blurred, seed=0) >= 0.9
    assert 0.3 <= c2st(a, same, seed=0) <= 0.7
    state = torch.random.get_rng_state()
    c2st(a, same, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())          # it leaves the caller's random state alone
    assert np.isnan(c2st(a[:2], same[:2]))


@pytest.mark.parametrize("seed", [0, 1])
def test_c2st_is_a_function_of_its_inputs_and_seed(seed):
    a, _ = _hearts(30, 0)
    b, _ = _hearts(30, 1, myo=0.4)
    assert c2st(a, b, seed=seed) == c2st(a, b, seed=seed)


def test_the_report_measures_every_stylizer_and_direction_on_slices_no_stylizer_saw(tiny_phantom, tmp_path):
    import pandas as pd

    from cmr_lib.core.config import make_config
    from cmr_lib.data.sources import open_source
    from cmr_lib.data.splits import run_split
    from cmr_lib.study.quality import COLUMNS, quality_slices, stylizer_quality
    cfg = make_config(profile="smoke", data_dir=tiny_phantom, output_root=tmp_path)
    src = open_source(tiny_phantom)
    split = run_split(src, cfg.split, cfg.sizes.segmenter)
    content, target = quality_slices(cfg, src, ("C0", "LGE"), crop=cfg.crop)
    assert len(content) and {content[i]["patient"] for i in range(len(content))}.isdisjoint(split["train"])
    assert len(target) and {target[i]["patient"] for i in range(len(target))}.isdisjoint(split["style"])
    df = stylizer_quality(cfg, src, ("rain", "adaconv"))
    assert list(df.columns) == COLUMNS and len(df) == 4
    assert list(zip(df["stylizer"], df["direction"])) == [("rain", "C0->LGE"), ("rain", "C0->T2"),
                                                         ("adaconv", "C0->LGE"), ("adaconv", "C0->T2")]
    assert df["search_change"].notna().tolist() == [True, True, False, False]
    assert (df["c2st_raw"].between(0, 1)).all() and (df["grad_ratio"] >= 0).all()
    assert df["c2st_style"].between(0, 1).all()                        # real pool slices against the targets
    written = pd.read_csv(tmp_path / "results" / "stylizer_quality.csv")
    assert list(written.columns) == COLUMNS and len(written) == 4
    assert (tmp_path / "figures" / "quality_rain_C0-LGE.png").is_file()


def test_histogram_match_gives_the_reference_histogram_and_keeps_the_order():
    from cmr_lib.evaluation.quality import histogram_match
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(0, 1, (1, 16, 16)).astype(np.float32))
    reference = rng.beta(2, 5, 4096)
    out = histogram_match(image, reference)
    assert out.shape == image.shape and out.dtype == torch.float32
    flat, src = out.numpy().ravel(), image.numpy().ravel()
    assert np.all(np.diff(flat[np.argsort(src)]) >= 0)                          # monotone in the input
    assert np.allclose(np.sort(flat), np.quantile(np.sort(reference), np.linspace(0, 1, flat.size)), atol=1e-6)


def test_a_global_remap_cannot_fix_a_structure_whose_order_the_target_changes():
    """Where the target puts one structure's intensities out of the content's order (LGE's nulled myocardium below
    the background, bSSFP's above it), matching the whole slice's histogram moves that structure the wrong way."""
    from cmr_lib.evaluation.quality import histogram_match
    content, labels = _hearts(20, 0, myo=0.6, blood=0.9)              # bg 0.2 < myo 0.6 < blood 0.9
    target, target_labels = _hearts(20, 1, myo=0.05, blood=0.6)        # myo 0.05 < bg 0.2 < blood 0.6
    remapped = torch.stack([histogram_match(c, t) for c, t in zip(torch.from_numpy(content), torch.from_numpy(target))])
    raw = structure_kl(content, labels, target, target_labels, 1)
    assert structure_kl(remapped.numpy(), labels, target, target_labels, 1) > 0.5 * raw
    assert structure_kl(remapped.numpy(), labels, target, target_labels, 2) < structure_kl(
        content, labels, target, target_labels, 2)


def test_lge_quality_targets_come_from_the_tuning_set_never_from_reported_patients(mscmrseg_dir, myops_dir, tmp_path):
    """Beside MS-CMRSeg (whose labelled LGE 1-5 the tables report), a stylizer is judged against MyoPS 101-110's
    LGE, the tuning set; T2 against MyoPS patients outside the T2 style pool; without MyoPS, the old rule."""
    from cmr_lib.core.config import make_config
    from cmr_lib.data.sources import open_source
    from cmr_lib.data.splits import external_split, run_split
    from cmr_lib.study.quality import quality_targets
    src = open_source(mscmrseg_dir, c0_spacing="lge")
    cfg = make_config(profile="real", data_dir=mscmrseg_dir, c0_spacing="lge", t2_dir=str(myops_dir),
                      output_root=tmp_path)
    split = run_split(src, cfg.split, cfg.sizes.segmenter)
    where, patients = quality_targets(cfg, src, split, "LGE")
    myops = open_source(myops_dir)
    assert where.name == myops.name and patients == [p for p in range(101, 111) if myops.has_label(p, "LGE")]
    assert set(patients) == set(external_split(myops)["tune"]) and patients
    where, t2 = quality_targets(cfg, src, split, "T2")
    assert where.name == myops.name and set(t2).isdisjoint(external_split(myops)["style"]) and t2
    alone = make_config(profile="real", data_dir=mscmrseg_dir, c0_spacing="lge", output_root=tmp_path)
    where, lge = quality_targets(alone, src, split, "LGE")
    assert where is src and lge == [1, 2, 3, 4, 5]


def test_each_content_is_styled_with_a_slice_of_the_stylizers_own_pool(tiny_phantom, tmp_path):
    """The quality sample gives each held-out content a style from the pool the stylizer trained on (as its rows
    use it), never one of the target slices it is then compared with."""
    from cmr_lib.core.config import make_config
    from cmr_lib.data.slices import SliceDataset
    from cmr_lib.data.sources import open_source
    from cmr_lib.data.splits import run_split, style_pool
    from cmr_lib.study.quality import held_out_pairs
    cfg = make_config(profile="smoke", data_dir=tiny_phantom, output_root=tmp_path)
    src = open_source(tiny_phantom)
    content, _, styles, target, _ = held_out_pairs(cfg, src, ("C0", "LGE"), crop=cfg.crop, max_slices=6)
    pool_src, patients = style_pool(src, run_split(src, cfg.split, cfg.sizes.segmenter), "LGE")
    pool = SliceDataset.from_source(pool_src, patients, "LGE", **cfg.slicing(train=False, crop=cfg.crop), label="skip")
    pool_images = torch.stack([pool[i]["image"] for i in range(len(pool))])
    assert len(styles) == len(content)
    for s in styles:
        assert any(torch.equal(s, p) for p in pool_images)
        assert not any(torch.equal(s, t) for t in target)
