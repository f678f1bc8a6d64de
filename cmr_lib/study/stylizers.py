"""The stylizer study of notebooks 02 (RAIN) and 03 (AdaConv): train each pre-training pair of Table 1,
stylize examples, measure how LGE-like and how faithful the results are, draw Figs. 5 and 7-9."""
from __future__ import annotations


import numpy as np
import pandas as pd
import torch

from cmr_lib.core.atomic import read_json, save_figure, write_json
from cmr_lib.core.device import autocast, device, precision_used
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import display_path
from cmr_lib.core.schema import SEARCHING, load_settings
from cmr_lib.data.slices import SliceDataset
from cmr_lib.data.sources import CMRSource
from cmr_lib.data.splits import run_split, style_split
from cmr_lib.evaluation.metrics import edge_overlap, intensity_kl, region_values
from cmr_lib.models.drunet import segmentation_loss
from cmr_lib.report import plots
from cmr_lib.training.augment import Stylization
from cmr_lib.training.stylizers import STYLIZERS, TrainedStylizer, train_stylizer

REPORT_COLUMNS = ["kl_content_to_style", "kl_stylized_to_style", "kl_stylized_to_content", "kl_content_to_style_myo",
                  "kl_stylized_to_style_myo", "edge_overlap_content_stylized", "slices"]


def pretrain_pairs() -> list[tuple[str, str]]:
    """The stylizer pre-training pairs of Table 1, in order: (C0, T2) for setting 1, (C0, LGE) for 2 and 3."""
    pairs = []
    for spec in load_settings().values():
        if spec["stylize"]:
            pair = (spec["pretrain"]["content"], spec["pretrain"]["style"])
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def setup_line(cfg, kind: str) -> str:
    """What a stylizer notebook is about to train: the run's summary, then input size, steps, batch,
    precision and device."""
    st, dev = cfg.sizes.stylizer, device()
    kernel = f", kernel size {st.adaconv.kernel_size}" if kind in ("adaconv", "adaconv-vae") else ""
    return cfg.summary() + "\n" + (f"{STYLIZERS[kind]} input {cfg.crop_for(kind)} px{kernel}, "
                                    f"{st.iterations} steps of batch {st.batch}, "
                                    f"precision {precision_used(st.precision, dev)} on {dev}")


def train_pairs(cfg, source: CMRSource, kind: str, *, progress=True, curves=False) -> dict:
    """Train (or reuse) one `kind` stylizer per pre-training pair, printing one status line each (02, 03);
    curves: also draw each one's loss curves."""
    trained = {}
    for pair in pretrain_pairs():
        ts = trained[pair] = train_stylizer(cfg, source, kind, pair, progress=progress)
        print(f"{pair[0]}->{pair[1]}: {'reused' if ts.info['reused'] else 'trained'} "
              f"({ts.info.get('seconds_train', 0):.0f} s), checkpoint {ts.run_dir.name}")
        if curves:
            plots.loss_curves(ts.history, title=f"{STYLIZERS[kind]} {pair[0]}->{pair[1]} training losses")
    return trained


def stylize_examples(ts: TrainedStylizer, cfg, source: CMRSource, *, max_slices: int | None = None,
                     batch: int = 16) -> Stylization:
    """Stylize heart slices of training patients' bSSFP with random labelled style slices (validation
    patients' labels select the style's cardiac region for analysis only; they never train anything)."""
    crop = cfg.crop_for(ts.kind)
    split = run_split(source, cfg.split, cfg.sizes.segmenter)
    style_src, styles_split = style_split(source, split, ts.pretrain[1], t2_dir=cfg.t2_dir)
    content = SliceDataset.from_source(source, split["train"], ts.pretrain[0], **cfg.slicing(train=False, crop=crop),
                                       heart_only=True, label="require")
    style_pats = [p for p in styles_split["val"] if style_src.has_label(p, ts.pretrain[1])] or \
        style_src.patients_with(ts.pretrain[1], labelled=True)[:5]
    style = SliceDataset.from_source(style_src, style_pats, ts.pretrain[1], **cfg.slicing(train=False, crop=crop),
                                     heart_only=True, label="require")
    rng = np.random.default_rng([cfg.seed, 99])
    n = len(content) if max_slices is None else min(max_slices, len(content))
    c_items = [content[int(i)] for i in np.sort(rng.choice(len(content), size=n, replace=False))]
    s_items = [style[int(i)] for i in rng.integers(len(style), size=n)]
    c = torch.stack([x["image"] for x in c_items])
    s = torch.stack([x["image"] for x in s_items])
    dev = device()
    model = ts.model.to(dev).eval()
    outs = []
    with torch.inference_mode(), autocast(cfg.sizes.stylizer.precision, dev):
        for k in range(0, n, batch):
            outs.append(model.stylize(c[k:k + batch].to(dev), s[k:k + batch].to(dev)).float().cpu())
    return Stylization(content=c, style=s, stylized=torch.cat(outs),
                       content_label=torch.stack([x["label"] for x in c_items]),
                       style_label=torch.stack([x["label"] for x in s_items]),
                       content_patient=[int(x["patient"]) for x in c_items])


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


def stylizer_figures(cfg, source: CMRSource, ts: TrainedStylizer, title: str) -> dict:
    """Stylize examples with one trained stylizer, save Figs. 7 (grid), 8 (histograms) and 9 (label overlay)
    as figures/fig{7,8,9}_<kind>_<pair>.png, and return its report (written to results/stylizers/)."""
    name = f"{ts.kind}_{ts.pretrain[0]}-{ts.pretrain[1]}"
    sty = stylize_examples(ts, cfg, source)
    report = stylizer_report(cfg, source, ts, sty)
    n = cfg.sizes.analysis.examples
    save_figure(plots.stylization_grid(sty, n, title=title), cfg.figures_dir / f"fig7_{name}.png")
    values = {r: {"content": region_values(sty.content, sty.content_label, r),
                  "style": region_values(sty.style, sty.style_label, r),
                  "stylized": region_values(sty.stylized, sty.content_label, r)} for r in ("MYO", "heart")}
    save_figure(plots.stylization_histograms(values, report, cfg.sizes.analysis.hist_bins, title=title),
                cfg.figures_dir / f"fig8_{name}.png")
    save_figure(plots.contour_overlay(sty, n, title=f"{title}: bSSFP labels on stylized images"),
                cfg.figures_dir / f"fig9_{name}.png")
    return report


def print_verdicts(reports: dict, label: str) -> None:
    """One line per pair: are the stylized images closer to the style than the raw bSSFP?"""
    for pair, r in reports.items():
        verdict = "closer to" if r["kl_stylized_to_style"] < r["kl_content_to_style"] else "NOT closer to"
        print(f"{label} {pair[0]}->{pair[1]}: stylized images are {verdict} the style "
              f"(KL {r['kl_stylized_to_style']:.3f} vs {r['kl_content_to_style']:.3f} for the raw bSSFP)")


def stylizer_reports(cfg) -> pd.DataFrame:
    """The stylizer reports of this profile written so far (results/stylizers/*.json, by notebooks 02 and 03),
    one row per stylizer and pre-training pair: RAIN and AdaConv side by side."""
    rows = []
    for path in sorted((cfg.results_dir / "stylizers").glob("*.json")):
        r = read_json(path, "stylizer report")
        if r.get("profile") == cfg.profile:
            rows.append({k: r.get(k) for k in ("stylizer", "pretrain", *REPORT_COLUMNS[:3], REPORT_COLUMNS[5])})
    return pd.DataFrame(rows)


def explore_examples(cfg, source: CMRSource, ts: TrainedStylizer, segmenter, *, n: int = 3, iterations: int = 5):
    """The adversarial style search (RAIN's, or AdaConv + VAE's) on n bSSFP heart slices (Fig. 5).

    One style slice gives the starting latent (its mean code); `iterations` steps move it up the gradient
    of the segmentation loss of a fixed DRU-Net trained on bSSFP. Returns (content, labels, Exploration).
    """
    if ts.kind not in SEARCHING:
        raise CmrError(f"style exploration needs a stylizer with a style VAE ({', '.join(SEARCHING)}), not {ts.kind}")
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

    ex = model.explore(content.to(dev), z0, loss_fn, iterations=iterations, **cfg.sizes.stylizer.explore.to_dict())
    ex.images = [im.cpu() for im in ex.images]
    return content, label, ex
