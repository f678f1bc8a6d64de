"""The study end to end: stylizer pre-training and evaluation (notebooks 02, 03), the settings (05).

Notebooks call these functions; they combine data, models, training and metrics, and write the
result files the analysis reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cmr_lib.atomic import write_json
from cmr_lib.data import CMRSource, default_split, open_source
from cmr_lib.errors import CmrError
from cmr_lib.metrics import edge_overlap, intensity_kl
from cmr_lib.params import display_path, load_settings
from cmr_lib.slices import SliceDataset
from cmr_lib.train import TrainedStylizer, autocast, device, train_stylizer


def pretrain_pairs() -> list[tuple[str, str]]:
    """The stylizer pre-training pairs of Table 1, in order: (C0, T2) for setting 1, (C0, LGE) for 2 and 3."""
    pairs = []
    for spec in load_settings().values():
        if spec["stylize"]:
            pair = (spec["pretrain"]["content"], spec["pretrain"]["style"])
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def style_source_for(cfg, source: CMRSource, sequence: str) -> CMRSource:
    """Where the style sequence's images come from: the data set itself, or `t2_dir` for T2.

    The cropped MS-CMRSeg copy has no T2: setting 1 then takes T2 from MyoPS 2020 (t2_dir).
    """
    if source.patients_with(sequence):
        return source
    t2_dir = cfg.extra.get("t2_dir") if sequence == "T2" else None
    if t2_dir:
        other = open_source(t2_dir)
        if other.patients_with("T2"):
            return other
        raise CmrError(f"{other.root}: parameter 't2_dir' has no T2 images")
    raise CmrError(f"{source.root}: has no {sequence} images; pass t2_dir (a MyoPS 2020 folder) for T2 styles")


def train_pair(cfg, source: CMRSource, kind: str, pair, *, progress=True) -> TrainedStylizer:
    """Train (or reuse) one stylizer for one pre-training pair."""
    return train_stylizer(cfg, source, kind, pair, style_source=style_source_for(cfg, source, pair[1]),
                          progress=progress)


@dataclass
class Stylization:
    """Content slices, the style slice each got, and the result (all (N, 1, S, S)), with labels (N, S, S)."""

    content: torch.Tensor
    style: torch.Tensor
    stylized: torch.Tensor
    content_label: torch.Tensor
    style_label: torch.Tensor


def stylize_examples(ts: TrainedStylizer, cfg, source: CMRSource, *, max_slices: int | None = None,
                     batch: int = 16) -> Stylization:
    """Stylize heart slices of training patients' bSSFP with random labelled style slices (validation
    patients' labels select the style's cardiac region for analysis only; they never train anything)."""
    style_src = style_source_for(cfg, source, ts.pretrain[1])
    crop = cfg.sizes.preprocess.crop[ts.kind]
    split = default_split(source)
    content = SliceDataset.from_source(source, split["train"], ts.pretrain[0], cfg, train=False, heart_only=True,
                                       label="require", crop=crop)
    style_split = default_split(style_src)
    style_pats = [p for p in style_split["val"] if style_src.has_label(p, ts.pretrain[1])] or \
        style_src.patients_with(ts.pretrain[1], labelled=True)[:5]
    style = SliceDataset.from_source(style_src, style_pats, ts.pretrain[1], cfg, train=False, heart_only=True,
                                     label="require", crop=crop)
    rng = np.random.default_rng([cfg.seed, 99])
    n = len(content) if max_slices is None else min(max_slices, len(content))
    ci = np.sort(rng.choice(len(content), size=n, replace=False))
    si = rng.integers(len(style), size=n)
    c_items = [content[int(i)] for i in ci]
    s_items = [style[int(i)] for i in si]
    c = torch.stack([x["image"] for x in c_items])
    s = torch.stack([x["image"] for x in s_items])
    dev = device()
    outs = []
    model = ts.model.to(dev).eval()
    with torch.inference_mode(), autocast(cfg.sizes.stylizer.precision, dev):
        for k in range(0, n, batch):
            outs.append(model.stylize(c[k:k + batch].to(dev), s[k:k + batch].to(dev)).float().cpu())
    return Stylization(content=c, style=s, stylized=torch.cat(outs),
                       content_label=torch.stack([x["label"] for x in c_items]),
                       style_label=torch.stack([x["label"] for x in s_items]))


def region_values(images: torch.Tensor, labels: torch.Tensor, region: str) -> np.ndarray:
    """Intensities of (N, 1, S, S) images inside a region of their (N, S, S) labels: 'heart' or 'MYO'."""
    lab = labels.numpy()
    mask = lab > 0 if region == "heart" else lab == 1
    return images[:, 0].numpy()[mask]


def stylization_kl(st: Stylization, bins: int) -> dict:
    """KL divergences between content, style and stylized intensity histograms (same bins for all).

    Content and stylized images share the content's labels (stylization keeps the geometry); the style
    images' regions come from their own labels.
    """
    out = {}
    for region in ("heart", "MYO"):
        c = region_values(st.content, st.content_label, region)
        s = region_values(st.style, st.style_label, region)
        o = region_values(st.stylized, st.content_label, region)
        suffix = "" if region == "heart" else "_myo"
        out[f"kl_content_to_style{suffix}"] = intensity_kl(c, s, bins)
        out[f"kl_stylized_to_style{suffix}"] = intensity_kl(o, s, bins)
        out[f"kl_stylized_to_content{suffix}"] = intensity_kl(o, c, bins)
    return out


def geometry_kept(st: Stylization) -> float:
    """Mean edge overlap of each content slice with its stylized version (1 = same boundaries)."""
    return float(np.nanmean([edge_overlap(a[0].numpy(), b[0].numpy()) for a, b in zip(st.content, st.stylized)]))


def stylizer_report(cfg, source: CMRSource, ts: TrainedStylizer, st: Stylization) -> dict:
    """The numbers of one stylizer and pre-training pair; written to results/stylizers/<kind>_<C0>-<X>.json."""
    kl = stylization_kl(st, cfg.sizes.analysis.hist_bins)
    report = {
        "stylizer": ts.kind, "pretrain": "-".join(ts.pretrain), "profile": cfg.profile,
        "data": display_path(source.root), "region": "LV ∪ MYO ∪ RV (kl_*), myocardium (kl_*_myo)",
        "bins": cfg.sizes.analysis.hist_bins, "slices": int(st.content.shape[0]), **kl,
        "edge_overlap_content_stylized": geometry_kept(st),
        "encoder": ts.info["encoder"], "reused": ts.info["reused"],
        "train_seconds": ts.info.get("seconds_train"), "precision": ts.info.get("precision"),
        "iterations": cfg.sizes.stylizer.iterations, "final_loss": float(np.mean(ts.history["total"][-20:])),
        "checkpoint": display_path(ts.run_dir),
    }
    write_json(cfg.results_dir / "stylizers" / f"{ts.kind}_{'-'.join(ts.pretrain)}.json", report)
    return report


def explore_examples(cfg, source: CMRSource, ts: TrainedStylizer, segmenter, *, n: int = 3, iterations: int = 5):
    """RAIN's adversarial style search on n bSSFP heart slices (Fig. 5).

    One style slice gives the starting latent (its mean code); `iterations` steps move it up the gradient
    of the segmentation loss of a fixed DRU-Net trained on bSSFP. Returns (content, labels, Exploration).
    """
    from cmr_lib.drunet import segmentation_loss

    if ts.kind != "rain":
        raise CmrError(f"style exploration needs RAIN, not {ts.kind}")
    st = stylize_examples(ts, cfg, source, max_slices=max(n, 1))
    pick = torch.linspace(0, st.content.shape[0] - 1, n).round().long()
    content, label, style = st.content[pick], st.content_label[pick], st.style[pick[:1]]
    dev = device()
    model, seg = ts.model.to(dev).eval(), segmenter.model.to(dev).eval()
    sg = cfg.sizes.segmenter
    with torch.no_grad():
        z0 = model.style_code(style.to(dev))[0].expand(n, -1)                  # (n, C) the style's mean code

    def loss_fn(images):
        return segmentation_loss(seg(images), label.to(dev), ce_weight=sg.ce_weight, dice_weight=sg.dice_weight)

    ex = model.explore(content.to(dev), z0, loss_fn, iterations=iterations, step=cfg.sizes.stylizer.explore.step,
                       rule=cfg.sizes.stylizer.explore.rule)
    ex.images = [im.cpu() for im in ex.images]
    return content, label, ex


def evaluate_segmenter(cfg, source: CMRSource, segmenter, patients, *, sequence: str = "LGE", pred_dir=None,
                       progress=True):
    """Predict each patient's `sequence` volume on its own grid; score those with labels (Dice, HD, HD95,
    ASSD in mm). Returns (DataFrame of case/structure rows, list of patients without labels).

    pred_dir: also write each prediction there as NIfTI in the dataset's label encoding.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from cmr_lib.data import write_label
    from cmr_lib.evaluate import COLUMNS
    from cmr_lib.inference import predict_volume
    from cmr_lib.metrics import evaluate_volume
    from cmr_lib.train import autocast as _autocast

    pre = cfg.sizes.preprocess
    dev = device()
    model = segmenter.model.to(dev).eval()
    rows, unlabelled = [], []
    for p in tqdm(patients, desc="evaluate", disable=not progress):
        vol = source.load(p, sequence, label="optional")
        pred = predict_volume(model, vol, crop=cfg.crop, spacing_mm=pre.spacing_mm,
                              percentiles=tuple(pre.percentiles), autocast=_autocast(cfg.sizes.segmenter.precision, dev))
        if pred_dir is not None:
            write_label(pred_dir / vol.image_path.name, pred, like=vol)
        if vol.label is None:
            unlabelled.append(p)
            continue
        for structure, m in evaluate_volume(pred, vol.label, vol.spacing).items():
            rows.append({"case": vol.image_path.name.split(".nii")[0], "structure": structure, **m})
    return pd.DataFrame(rows, columns=COLUMNS), unlabelled
