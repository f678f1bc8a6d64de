"""The stylizer quality report (issue 34): every trained stylizer and direction, measured on real slices that no
stylizer trained on, against what a good stylized image must keep (the heart, its sharpness) and change (each
structure's intensities, its look as a whole). Written to results/stylizer_quality.csv with a figure per stylizer.

Held-out slices (quality_slices): content = labelled bSSFP of patients the stylizers do not train on (MS-CMRSeg
31-35, the held-out selection patients; elsewhere the validation and test patients); target (quality_targets) =
labelled slices of the target sequence that no stylizer saw and no table reports: LGE of the MyoPS tuning set
(101-110) beside MS-CMRSeg, T2 of MyoPS 111-120 (their T2 is never scored), the phantom's own held-out patients.
The judge is the SLAug row's DRU-Net (real bSSFP, strong appearance augmentation, never a stylized
image), shared with Table 2's SLAug row.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cmr_lib.core.atomic import save_figure, write_text
from cmr_lib.core.config import Section
from cmr_lib.core.device import autocast, device
from cmr_lib.core.schema import SEARCHING, load_settings
from cmr_lib.data.slices import SliceDataset
from cmr_lib.data.sources import CMRSource, open_source
from cmr_lib.data.splits import external_split, run_split, style_pool, style_split
from cmr_lib.evaluation.quality import STRUCTURE_CLASSES, appearance, c2st, dice_kept, grad_ratio, structure_kl
from cmr_lib.models.drunet import segmentation_loss
from cmr_lib.report import plots
from cmr_lib.study.ablation import segment
from cmr_lib.training.segmenters import TrainedSegmenter, train_setting
from cmr_lib.training.stylizers import STYLIZERS, TrainedStylizer, train_stylizer

COLUMNS = ["stylizer", "direction", "train_seconds", "iterations", "content_slices", "target_slices", "dice_kept",
           "kl_myo", "kl_myo_raw", "kl_blood", "kl_blood_raw", "c2st", "c2st_raw", "c2st_style", "grad_ratio",
           "search_change", "dice_kept_search", "myo_std", "myo_std_raw", "myo_std_target", "contrast",
           "contrast_raw", "contrast_target"]
DIRECTIONS = (("C0", "LGE"), ("C0", "T2"))


@dataclasses.dataclass
class QualitySample:
    """Held-out content slices, the style-pool slice each was given as its style, the stylized result (and
    after one style search, for stylizers that search), with labels."""

    content: torch.Tensor
    content_label: np.ndarray
    style: torch.Tensor                  # the style-pool slice each content slice was given as its style
    target: torch.Tensor
    target_label: np.ndarray
    stylized: torch.Tensor
    searched: torch.Tensor | None = None


def quality_targets(cfg, source: CMRSource, split: dict, sequence: str) -> tuple[CMRSource, list[int]]:
    """(source, patients) of the labelled `sequence` slices a stylizer is judged against. LGE, where `t2_dir`
    names a second data set with labelled LGE (MyoPS beside MS-CMRSeg): its tuning half (MyoPS 101-110), so that
    no label a table reports helps choose a stylizer (LGE styles come from the run's own data). Otherwise the
    labelled patients outside every style pool: the phantom's own; T2 of MyoPS 111-120, whose T2 no table scores.
    Without a second data set (the phantom, or MS-CMRSeg run without t2_dir) those are patients a table reports:
    such a report teaches, and no profile choice may be made on it."""
    if sequence == "LGE" and cfg.t2_dir:
        other = open_source(cfg.t2_dir)
        if Path(other.root).resolve() != Path(source.root).resolve():
            tune = [p for p in external_split(other)["tune"] if other.has_label(p, "LGE")]
            if tune:
                return other, tune
    target_src, target_split = style_split(source, split, sequence, t2_dir=cfg.t2_dir)
    pool = set(target_split["style"])
    return target_src, [p for p in target_src.patients_with(sequence, labelled=True) if p not in pool]


def quality_slices(cfg, source: CMRSource, pair, *, crop: int, split: dict | None = None):
    """(content SliceDataset, target SliceDataset) of held-out heart slices for a content -> target direction."""
    split = split or run_split(source, cfg.split, cfg.sizes.segmenter)
    content_pats = [p for p in source.patients_with(pair[0], labelled=True) if p not in split["train"]]
    target_src, target_pats = quality_targets(cfg, source, split, pair[1])
    content = SliceDataset.from_source(source, content_pats, pair[0], **cfg.slicing(train=False, crop=crop),
                                       heart_only=True, label="require")
    target = SliceDataset.from_source(target_src, target_pats, pair[1], **cfg.slicing(train=False, crop=crop),
                                      heart_only=True, label="require")
    return content, target


def judge(cfg, source: CMRSource, *, progress=False) -> TrainedSegmenter:
    """The frozen judge: Table 2's SLAug row's DRU-Net for this profile and seed (trained here if not yet)."""
    slaug = dataclasses.replace(cfg, setting=0, stylizer="slaug", setting_spec=Section(load_settings()[0]))
    return train_setting(slaug, source, split=run_split(source, slaug.split, slaug.sizes.segmenter), progress=progress)


def _stack(ds: SliceDataset, idx) -> tuple[torch.Tensor, np.ndarray]:
    items = [ds[int(i)] for i in idx]
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items]).numpy()


def held_out_pairs(cfg, source: CMRSource, pair, *, crop: int, max_slices: int = 64):
    """(content, content labels, the style slice each is given, target, target labels): up to max_slices held-out
    content slices, every held-out target slice, and for each content a slice of the stylizer's own style pool
    (data.splits.style_pool: the styles it trained on and is used with, never a target), drawn seeded."""
    split = run_split(source, cfg.split, cfg.sizes.segmenter)
    content_ds, target_ds = quality_slices(cfg, source, pair, crop=crop, split=split)
    rng = np.random.default_rng([cfg.seed, 34])
    n = min(max_slices, len(content_ds))
    content, content_label = _stack(content_ds, np.sort(rng.choice(len(content_ds), size=n, replace=False)))
    target, target_label = _stack(target_ds, np.arange(len(target_ds)))
    pool_src, pool_patients = style_pool(source, split, pair[1], t2_dir=cfg.t2_dir)
    pool = SliceDataset.from_source(pool_src, pool_patients, pair[1], **cfg.slicing(train=False, crop=crop),
                                    label="skip")
    draw = rng.choice(len(pool), size=n, replace=n > len(pool))                   # distinct slices where possible
    styles = torch.stack([pool[int(i)]["image"] for i in draw])
    return content, content_label, styles, target, target_label


def sample(cfg, source: CMRSource, ts: TrainedStylizer, judge_net, *, max_slices: int = 64, batch: int = 16,
           iterations: int = 5, pairs: tuple | None = None) -> QualitySample:
    """Stylize up to max_slices held-out content slices, each with a random slice of the stylizer's style pool
    (seeded), and, for a stylizer with a style search, once more after `iterations` rounds of the search against
    the judge (from each style's own code, the profile's step and rule). `pairs`: held_out_pairs' result for this
    direction and crop, when the caller already has it."""
    content, content_label, styles, target, target_label = pairs or held_out_pairs(
        cfg, source, ts.pretrain, crop=cfg.crop_for(ts.kind), max_slices=max_slices)
    n = len(content)
    dev = device()
    model = ts.model.to(dev).eval()
    outs, searched = [], []
    sg = cfg.sizes.segmenter
    net = judge_net.to(dev).eval()
    for k in range(0, n, batch):
        c, s = content[k:k + batch].to(dev), styles[k:k + batch].to(dev)
        with torch.no_grad(), autocast(cfg.sizes.stylizer.precision, dev):
            outs.append(model.stylize(c, s).float().cpu())
        if ts.kind in SEARCHING:
            lab = torch.from_numpy(content_label[k:k + batch]).long().to(dev)
            with torch.no_grad():
                z0 = model.style_code(s)[0]

            def loss_fn(images, lab=lab):
                return segmentation_loss(net(images), lab, ce_weight=sg.ce_weight, dice_weight=sg.dice_weight)
            found = model.explore(c, z0, loss_fn, iterations=iterations, **cfg.sizes.stylizer.explore.to_dict())
            searched.append(found.images[-1].float().cpu())
    return QualitySample(content, content_label, styles, target, target_label, torch.cat(outs),
                         torch.cat(searched) if searched else None)


def reference_columns(cfg, q: QualitySample) -> dict:
    """The columns that do not depend on the stylizer (the raw bSSFP's and the targets' own, the pool's real
    slices against the targets): one per direction and crop, whichever stylizer is sampled."""
    bins = cfg.sizes.analysis.hist_bins
    row = {f"kl_{name}_raw": structure_kl(q.content, q.content_label, q.target, q.target_label, cls, bins)
           for name, cls in STRUCTURE_CLASSES.items()}
    row["c2st_raw"] = c2st(q.content, q.target, seed=cfg.seed)
    row["c2st_style"] = c2st(q.style, q.target, seed=cfg.seed)   # real slices of the pool: what a site gap alone gives
    for suffix, images, labels in (("_raw", q.content, q.content_label), ("_target", q.target, q.target_label)):
        row.update({f"{k}{suffix}": v for k, v in appearance(images, labels).items()})
    return row


def quality_row(cfg, ts: TrainedStylizer, q: QualitySample, judge_net, reference: dict | None = None) -> dict:
    """One row of the quality report (COLUMNS) from a sample; `reference`: reference_columns(cfg, q) if known."""
    bins = cfg.sizes.analysis.hist_bins
    pred_content, pred_stylized = segment(judge_net, q.content), segment(judge_net, q.stylized)
    row = {"stylizer": ts.kind, "direction": "->".join(ts.pretrain), "train_seconds": ts.info.get("seconds_train"),
           "iterations": cfg.sizes.stylizer.iterations, "content_slices": len(q.content),
           "target_slices": len(q.target), "dice_kept": dice_kept(pred_stylized, pred_content, q.content_label)}
    for name, cls in STRUCTURE_CLASSES.items():
        row[f"kl_{name}"] = structure_kl(q.stylized, q.content_label, q.target, q.target_label, cls, bins)
    row["c2st"] = c2st(q.stylized, q.target, seed=cfg.seed)
    row["grad_ratio"] = grad_ratio(q.stylized, q.content)
    row.update(appearance(q.stylized, q.content_label))
    row.update(reference_columns(cfg, q) if reference is None else reference)
    if q.searched is not None:
        row["search_change"] = float((q.searched - q.stylized).abs().mean())
        row["dice_kept_search"] = dice_kept(segment(judge_net, q.searched), pred_content, q.content_label)
    return row


def stylizer_quality(cfg, source: CMRSource, kinds=("rain", "adaconv", "adaconv-vae"), *, progress=False,
                     max_slices: int = 64, directions=DIRECTIONS) -> pd.DataFrame:
    """The quality report of every stylizer and direction of this profile and seed (trained here if not yet):
    results/stylizer_quality.csv and figures/quality_<kind>_<C0>-<X>.png (content, style, stylized, and after
    the search, with the content's contours, for six held-out slices)."""
    net = judge(cfg, source, progress=progress).model
    rows, pairs, references = [], {}, {}
    for kind in kinds:
        for pair in directions:
            ts = train_stylizer(cfg, source, kind, pair, progress=progress)
            at = (pair, cfg.crop_for(kind))                           # stylizers of one crop share their slices
            if at not in pairs:
                pairs[at] = held_out_pairs(cfg, source, pair, crop=at[1], max_slices=max_slices)
            q = sample(cfg, source, ts, net, max_slices=max_slices, pairs=pairs[at])
            references[at] = references.get(at) or reference_columns(cfg, q)
            rows.append(quality_row(cfg, ts, q, net, references[at]))
            name = f"{kind}_{pair[0]}-{pair[1]}"
            save_figure(plots.quality_strip(q, title=f"{STYLIZERS[kind]} {pair[0]}->{pair[1]} on held-out slices "
                                                     f"(bSSFP contours on every row)"),
                        cfg.figures_dir / f"quality_{name}.png")
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_text(cfg.results_dir / "stylizer_quality.csv", df.to_csv(index=False, float_format="%.4g"))
    return df
