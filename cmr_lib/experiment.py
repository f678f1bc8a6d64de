"""The study end to end: stylizer pre-training and evaluation (notebooks 02, 03), the settings (05).

Notebooks call these functions; they combine data, models, training and metrics, and write the
result files the analysis reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from cmr_lib.atomic import write_json
from cmr_lib.data import CMRSource, default_split, open_source, split_for
from cmr_lib.errors import CmrError
from cmr_lib.metrics import edge_overlap, intensity_kl, mean_class_dice
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


def train_pair(cfg, source: CMRSource, kind: str, pair, *, progress=True, reuse_only=False) -> TrainedStylizer:
    """Train (or reuse) one stylizer for one pre-training pair (reuse_only: never train)."""
    return train_stylizer(cfg, source, kind, pair, style_source=style_source_for(cfg, source, pair[1]),
                          progress=progress, reuse_only=reuse_only)


@dataclass
class Stylization:
    """Content slices, the style slice each got, and the result (all (N, 1, S, S)), with labels (N, S, S)."""

    content: torch.Tensor
    style: torch.Tensor | None          # None: a style-free augmentation (intensity, gin)
    stylized: torch.Tensor
    content_label: torch.Tensor
    style_label: torch.Tensor


def stylize_examples(ts: TrainedStylizer, cfg, source: CMRSource, *, max_slices: int | None = None,
                     batch: int = 16) -> Stylization:
    """Stylize heart slices of training patients' bSSFP with random labelled style slices (validation
    patients' labels select the style's cardiac region for analysis only; they never train anything)."""
    style_src = style_source_for(cfg, source, ts.pretrain[1])
    crop = cfg.sizes.preprocess.crop[ts.kind]
    split = split_for(source, cfg.split)
    content = SliceDataset.from_source(source, split["train"], ts.pretrain[0], cfg, train=False, heart_only=True,
                                       label="require", crop=crop)
    style_split = split_for(source, cfg.split) if style_src is source else default_split(style_src)
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


# ---------------------------------------------------------------------------------------------
# one row of Table 2 / 3: a setting run, its predictions and its run.json (notebook 05)

@dataclass
class SettingRun:
    """A finished setting run: its folder, its record (run.json) and the trained networks."""

    run_dir: object
    record: dict
    segmenter: object
    stylizer: TrainedStylizer | None


def run_name(cfg, epsilon_iterations: int, source: CMRSource) -> str:
    """<profile>_<data>_setting<S>_<stylizer>[_eps<E>]_seed<seed>: one folder per Table 2/3 row and seed."""
    data = "phantom" if source.name == "phantom" else source.root.name
    eps = f"_eps{epsilon_iterations}" if cfg.network == "rain" else ""
    return f"{cfg.profile}_{data}_setting{cfg.setting}_{cfg.stylizer}{eps}_seed{cfg.seed}"


def _git_commit() -> dict:
    import subprocess

    from cmr_lib.params import repo_root

    def git(*args):
        r = subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def _versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "scipy", "nibabel", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def table2_summary(df) -> dict:
    """The paper's Table 2 form of per-case rows: per metric, the structure means and AVG / STD over them."""
    from cmr_lib.evaluate import METRICS, STRUCTURES, summarize

    if df.empty:
        return {}
    s = summarize(df)
    return {m: {k: (None if not np.isfinite(s.loc[m, k]) else round(float(s.loc[m, k]), 4))
                for k in (*STRUCTURES, "AVG", "STD")} | {"cases": int(df["case"].nunique())} for m in METRICS}


def _records(df) -> list[dict]:
    return df.to_dict("records")                       # NaN (empty masks) becomes null in run.json


def run_setting(cfg, source: CMRSource | None = None, *, epsilon_iterations: int = 5, include_original: bool = True,
                progress=True) -> SettingRun:
    """Run one row of Table 2/3 end to end: pre-train (or reuse) the setting's stylizer, train the DRU-Net
    on stylized bSSFP, predict every test LGE volume on its own grid (saved as NIfTI in the data set's label
    encoding), score the labelled ones and the validation patients, and write results/runs/<name>/run.json.

    A finished run with the same configuration is reused; one with another configuration is never
    overwritten (a one-line error says so).
    """
    import time

    from cmr_lib.data import source_for
    from cmr_lib.train import data_fingerprint, train_setting

    t_start = time.perf_counter()
    timings = {}
    if source is None:
        source = source_for(cfg, progress=progress)
    timings["data"] = time.perf_counter() - t_start
    spec = cfg.setting_spec
    eps = epsilon_iterations if cfg.network == "rain" else 0
    augmenting = bool(cfg.network or cfg.baseline)
    name = run_name(cfg, eps, source)
    run_dir = cfg.results_dir / "runs" / name
    split = split_for(source, cfg.split)
    config = {k: v for k, v in cfg.to_dict().items() if k != "output_root"}
    config["extra"] = {k: v for k, v in config["extra"].items() if v is not None}    # unset notebook options
    identity = {"config": config,
                "epsilon_iterations": eps, "include_original": include_original if augmenting else False,
                "data": {"source": source.name, "root": display_path(source.root), "layout": source.layout,
                         "split": split}}
    record_path = run_dir / "run.json"
    if record_path.is_file():
        old = json.loads(record_path.read_text())
        if {k: old.get(k) for k in identity} != json.loads(json.dumps(identity, default=str)):
            raise CmrError(f"{record_path}: a run with this name and another configuration exists; move it away "
                           f"or choose another output_root (it is never overwritten)")
    ts = None
    t = time.perf_counter()
    if cfg.network:
        ts = train_pair(cfg, source, cfg.network, (spec.pretrain.content, spec.pretrain.style), progress=progress)
    timings["stylizer"] = time.perf_counter() - t
    t = time.perf_counter()
    seg = train_setting(cfg, source, stylizer=ts, epsilon_iterations=eps, include_original=include_original,
                        progress=progress)
    timings["segmenter"] = time.perf_counter() - t
    if record_path.is_file() and seg.info.get("reused"):
        old = json.loads(record_path.read_text())
        if old.get("segmenter", {}).get("checkpoint") == display_path(seg.run_dir):
            return SettingRun(run_dir, old, seg, ts)
    t = time.perf_counter()
    test_df, unlabelled = evaluate_segmenter(cfg, source, seg, split["test"], pred_dir=run_dir / "predictions",
                                             progress=progress)
    val_df, _ = evaluate_segmenter(cfg, source, seg, split["val"], pred_dir=run_dir / "predictions" / "val",
                                   progress=False)                  # for figures when test labels are withheld
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    hist = seg.history
    record = {
        "run_name": name, **identity, "seed": cfg.seed, "profile": cfg.profile, "setting": cfg.setting,
        "setting_name": spec.name, "stylizer": cfg.stylizer, "baseline": cfg.baseline,
        "git": _git_commit(), "versions": _versions(),
        "encoder": ts.info["encoder"] if ts else None,
        "stylizer_run": {"checkpoint": display_path(ts.run_dir), "reused": ts.info.get("reused"),
                         "train_seconds": ts.info.get("seconds_train")} if ts else None,
        "segmenter": {"checkpoint": display_path(seg.run_dir), "reused": seg.info.get("reused"),
                      "best_step": seg.info.get("best_step"), "train_seconds": seg.info.get("seconds_train"),
                      "seconds_stylize": seg.info.get("seconds_stylize"), "precision": seg.info.get("precision"),
                      "device": seg.info.get("device"), "style_fallbacks": seg.info.get("style_fallbacks"),
                      "val_step": hist.get("val_step", []), "val_dice": hist.get("val_dice", []),
                      "mean_explore_gain": (float(np.mean(hist["explore_gain"])) if hist.get("explore_gain")
                                            else None)},
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),           # CPU results depend on it (summation order)
        "data_files": {**seg.info["config"]["data"],           # each file's size, per role: what the run saw
                       "test": data_fingerprint(source, {"test": ("LGE", split["test"])})},
        "test_patients_labelled": sorted({int(r) for r in split["test"]} - set(unlabelled)),
        "test_patients_unlabelled": unlabelled,
        "predictions": display_path(run_dir / "predictions"),
        "predictions_val": display_path(run_dir / "predictions" / "val"),
        "metrics": {"test": _records(test_df), "val": _records(val_df)},
        "summary": {"test": table2_summary(test_df), "val": table2_summary(val_df)},
    }
    write_json(record_path, record)
    return SettingRun(run_dir, record, seg, ts)


def check_epsilon_iterations(value) -> int:
    """`epsilon_iterations` must be a non-negative int (Table 3 uses 1, 3, 5): a one-line error otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CmrError(f"parameter 'epsilon_iterations' = {value!r}: must be a non-negative integer (1, 3, 5 in Table 3)")
    return value


def predict_examples(cfg, source: CMRSource, segmenter, patients, *, sequence: str = "LGE", per_patient: int = 1,
                     crop: int | None = None) -> list[dict]:
    """Labelled slices of `sequence` with the network's prediction, for figures: the mid-heart slice(s) of
    each patient, on the stored grid (image normalised for display, label, prediction, per-slice Dice)."""
    from cmr_lib.inference import predict_volume
    from cmr_lib.slices import heart_extent
    from cmr_lib.transforms import normalise

    pre = cfg.sizes.preprocess
    model = segmenter.model if hasattr(segmenter, "model") else segmenter
    out = []
    for p in patients:
        if not source.has_label(p, sequence):
            continue
        vol = source.load(p, sequence, label="require")
        pred = predict_volume(model, vol, crop=crop or cfg.crop, spacing_mm=pre.spacing_mm,
                              percentiles=tuple(pre.percentiles))
        lo, hi = heart_extent(vol.label)
        for z in sorted({int(round(v)) for v in np.linspace(lo, hi, per_patient + 2)[1:-1]}):
            lab, prd = vol.label[..., z], pred[..., z]
            out.append({"patient": p, "sequence": sequence, "slice": z,
                        "image": normalise(vol.image[..., z:z + 1], tuple(pre.percentiles))[..., 0],
                        "label": lab, "pred": prd, "dice": mean_class_dice(prd, lab)})
    return out


def training_examples(cfg, source: CMRSource, run: SettingRun, *, n: int = 6, epsilon_iterations: int = 0
                      ) -> Stylization:
    """What the DRU-Net of an augmented run trained on: bSSFP slices of training patients, the LGE style
    slice the setting's pairing picks for each (random or same patient and level; None for the style-free
    baselines), and the training image (RAIN: after `epsilon_iterations` of style search against the trained
    network; then the run's baseline remap, if any)."""
    from cmr_lib.baselines import augment, histogram_match
    from cmr_lib.drunet import segmentation_loss
    from cmr_lib.train import StylePicker

    spec = cfg.setting_spec
    if not (cfg.network or cfg.baseline) or (cfg.network and run.stylizer is None):
        raise CmrError(f"setting {cfg.setting} with stylizer {cfg.stylizer!r} trains on bSSFP as it is: "
                       f"there are no stylized training examples")
    split = split_for(source, cfg.split)
    crop = cfg.crop
    content = SliceDataset.from_source(source, split["train"], "C0", cfg, train=False, heart_only=True,
                                       label="require", crop=crop)
    rng = np.random.default_rng([cfg.seed, 55])
    items = [content[int(i)] for i in rng.choice(len(content), size=min(n, len(content)), replace=False)]
    x = torch.stack([it["image"] for it in items])
    y = torch.stack([it["label"] for it in items])
    s = None
    if cfg.network or cfg.baseline == "histmatch":
        styles = SliceDataset.from_source(source, [p for p in split["style"] if source.has(p, "LGE")], "LGE", cfg,
                                          train=False, label="skip", crop=crop)
        s = StylePicker(styles, spec.style_pairing)(items, rng, 0)
    out = x
    seg = run.segmenter.model.cpu().eval()
    if cfg.network == "adaconv":
        with torch.no_grad():
            out = run.stylizer.model.cpu().eval().stylize(x, s)
    elif cfg.network == "rain":
        sty = run.stylizer.model.cpu().eval()
        with torch.no_grad():
            z0 = sty.style_code(s)[0]
        out = sty.explore(x, z0, lambda img: segmentation_loss(seg(img), y), iterations=epsilon_iterations,
                          step=cfg.sizes.stylizer.explore.step, rule=cfg.sizes.stylizer.explore.rule).images[-1]
    elif cfg.baseline == "histmatch":
        out = histogram_match(x, s)
    if cfg.baseline in ("intensity", "gin"):
        gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + 55)
        out = augment(cfg.baseline, out.detach().float().clamp(0, 1), gen, cfg.sizes.baselines)
    return Stylization(x, s, out.detach().float().clamp(0, 1), y, torch.zeros_like(y))


def domain_gap(cfg, source: CMRSource, segmenter, patients) -> "pd.DataFrame":
    """Dice per structure of one network on bSSFP and on LGE of the same patients (those labelled in both):
    how much of the segmentation survives the change of sequence before any stylization."""
    import pandas as pd

    from cmr_lib.evaluate import STRUCTURES, summarize

    rows = {}
    for seq in ("C0", "LGE"):
        pats = [p for p in patients if source.has_label(p, seq)]
        df, _ = evaluate_segmenter(cfg, source, segmenter, pats, sequence=seq, progress=False)
        if not df.empty:
            s = summarize(df)
            rows[f"{seq} ({df['case'].nunique()} patients)"] = {k: s.loc["dice", k] for k in (*STRUCTURES, "AVG")} | \
                {"HD AVG (mm)": s.loc["hd", "AVG"]}
    return pd.DataFrame(rows).T.round(3)


def summary_table(record: dict) -> "pd.DataFrame":
    """A run's Table 2 row(s): Dice and HD (mm) per structure and AVG ± STD, for the labelled test and
    the validation patients, from its run.json record."""
    import pandas as pd

    from cmr_lib.evaluate import STRUCTURES

    rows = {}
    for part in ("test", "val"):
        s = record["summary"].get(part) or {}
        if not s:
            continue
        row = {}
        for metric, name, fmt in (("dice", "DC", "{:.3f}"), ("hd", "HD", "{:.1f}")):
            m = s[metric]
            for k in STRUCTURES:
                row[f"{name} {k}"] = fmt.format(m[k]) if m[k] is not None else "nan"
            row[f"{name} AVG ± STD"] = (f"{fmt.format(m['AVG'])} ± {fmt.format(m['STD'])}"
                                        if m["AVG"] is not None else "nan")
        rows[f"{part} ({s['dice']['cases']} patients)"] = row
    return pd.DataFrame(rows).T


REPORT_COLUMNS = ["kl_content_to_style", "kl_stylized_to_style", "kl_stylized_to_content", "kl_content_to_style_myo",
                  "kl_stylized_to_style_myo", "edge_overlap_content_stylized", "slices"]


def train_pairs(cfg, source: CMRSource, kind: str, *, progress=True) -> dict:
    """Train (or reuse) one `kind` stylizer per pre-training pair, printing one status line each (02, 03)."""
    trained = {}
    for pair in pretrain_pairs():
        ts = trained[pair] = train_pair(cfg, source, kind, pair, progress=progress)
        print(f"{pair[0]}->{pair[1]}: {'reused' if ts.info['reused'] else 'trained'} "
              f"({ts.info.get('seconds_train', 0):.0f} s), checkpoint {ts.run_dir.name}")
    return trained


def stylizer_figures(cfg, source: CMRSource, ts: TrainedStylizer, title: str) -> dict:
    """Stylize examples with one trained stylizer, save Figs. 7 (grid), 8 (histograms) and 9 (label overlay)
    as figures/fig{7,8,9}_<kind>_<pair>.png, and return its report (written to results/stylizers/)."""
    from cmr_lib import plots
    from cmr_lib.atomic import save_figure

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
