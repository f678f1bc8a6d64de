"""Beyond the paper (its Section 7): how the AdaConv kernel size, and a style VAE on AdaConv's descriptor,
change what the stylized images keep of the anatomy and take of the style.

Structure preservation of a trained stylizer is measured three ways on the same stylized heart slices:
the edge overlap of content and stylized images, the Dice between the content's label and what a DRU-Net
trained on the content (bSSFP) segments in the stylized image (relative to the same network on the
content itself), and the intensity-histogram KL of the stylized heart to the style's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cmr_lib.core.config import make_config
from cmr_lib.core.device import device
from cmr_lib.core.grid import STYLIZER_NAMES, label, table_rows
from cmr_lib.data.sources import CMRSource, source_for
from cmr_lib.evaluation.metrics import dice, edge_overlap
from cmr_lib.report.paper import judge
from cmr_lib.report.stats import TEST_COLUMNS, holm, min_attainable_p, paired_tests, wilcoxon
from cmr_lib.report.tables import by_row, ci95, load_runs, table
from cmr_lib.study.stylizers import geometry_kept, stylization_kl, stylize_examples
from cmr_lib.training.augment import Stylization
from cmr_lib.training.segmenters import train_segmenter
from cmr_lib.training.stylizers import TrainedStylizer, train_stylizer

COLUMNS = ["kind", "kernel_size", "seed", "edge_overlap", "dice_content", "dice_stylized", "dice_kept",
           "kl_stylized_to_style", "kl_content_to_style", "slices"]


def segment(model, images: torch.Tensor, batch: int = 16) -> np.ndarray:
    """Class maps (N, S, S) of a DRU-Net on images (N, 1, S, S)."""
    dev = device()
    model = model.to(dev).eval()
    with torch.inference_mode():
        return torch.cat([model(images[k:k + batch].to(dev)).argmax(1).cpu()
                          for k in range(0, images.shape[0], batch)]).numpy()


def label_dice(pred: np.ndarray, label: np.ndarray) -> float:
    """Mean foreground Dice (MYO, LV, RV present in the label) over slices."""
    scores = [dice(p == c, t == c) for p, t in zip(pred, label) for c in (1, 2, 3) if (t == c).any()]
    return float(np.mean(scores)) if scores else float("nan")


def structure_preservation(st: Stylization, segmenter, bins: int) -> dict:
    """Edge overlap, the bSSFP network's Dice on content and on stylized slices (and their ratio), and the
    stylized and raw content's histogram KL to the style (heart region)."""
    labels = st.content_label.numpy()
    d_content = label_dice(segment(segmenter, st.content), labels)
    d_stylized = label_dice(segment(segmenter, st.stylized), labels)
    kl = stylization_kl(st, bins)
    return {"edge_overlap": geometry_kept(st), "dice_content": d_content, "dice_stylized": d_stylized,
            "dice_kept": d_stylized / d_content if d_content > 0 else float("nan"),
            "kl_stylized_to_style": kl["kl_stylized_to_style"], "kl_content_to_style": kl["kl_content_to_style"],
            "slices": int(st.content.shape[0])}


def preservation_row(ts: TrainedStylizer, cfg, source: CMRSource, segmenter, *, max_slices: int | None = 64
                     ) -> tuple[dict, Stylization]:
    """One row of the kernel-size table (a trained stylizer's structure preservation on stylized examples),
    and those examples (the same content and style slices for every stylizer of one seed)."""
    st = stylize_examples(ts, cfg, source, max_slices=max_slices)
    kernel = ts.info["config"][ts.kind].get("kernel_size")
    return {"kind": ts.kind, "kernel_size": kernel,
            **structure_preservation(st, segmenter, cfg.sizes.analysis.hist_bins)}, st


def per_slice(st: Stylization, segmenter) -> pd.DataFrame:
    """Per content slice: the edge overlap with its stylized version and the bSSFP network's Dice on the stylized
    slice (the numbers the kernel-size claim pairs, slice by slice, across kernel sizes)."""
    labels = st.content_label.numpy()
    pred = segment(segmenter, st.stylized)
    patients = st.content_patient if st.content_patient is not None else [None] * len(labels)
    return pd.DataFrame({"slice": np.arange(len(labels)), "patient": patients,
                         "edge_overlap": [edge_overlap(a[0].numpy(), b[0].numpy())
                                          for a, b in zip(st.content, st.stylized)],
                         "dice_stylized": [label_dice(pred[i:i + 1], labels[i:i + 1]) for i in range(len(labels))]})


@dataclass
class KernelAblation:
    """The kernel-size ablation: one row per (kind, kernel size, seed), the per-slice values behind them, and the
    stylized examples of the first seed ({kind: {'k = 3': Stylization, ...}}, the same slices at every size)."""

    rows: pd.DataFrame
    slices: pd.DataFrame
    examples: dict = field(default_factory=dict)


def kernel_ablation(kernels, kinds=("adaconv", "adaconv-vae"), *, seeds=(0,), max_slices: int | None = 64,
                    progress=False, **where) -> KernelAblation:
    """Train (or reuse) a bSSFP->LGE stylizer of each kind at each predicted kernel size, everything else equal,
    for each seed, and measure its structure preservation with one bSSFP DRU-Net per seed. `where`: make_config's
    profile, data_dir, c0_spacing, t2_dir, output_root."""
    rows, slices, examples = [], [], {kind: {} for kind in kinds}
    for seed in seeds:
        segmenter, source = None, None
        for kind in kinds:
            for k in kernels:
                cfg = make_config(setting=2, stylizer=kind, seed=seed, overrides={"stylizer.adaconv.kernel_size": k},
                                  **where)
                source = source or source_for(**cfg.source_args, progress=False)
                if segmenter is None:                              # one bSSFP network judges every stylizer
                    segmenter = train_segmenter(cfg, source, progress=progress).model
                ts = train_stylizer(cfg, source, kind, ("C0", "LGE"), progress=progress)
                row, st = preservation_row(ts, cfg, source, segmenter, max_slices=max_slices)
                rows.append({**row, "seed": seed, "seconds_train": ts.info.get("seconds_train"),
                             "reused": ts.info["reused"]})
                slices.append(per_slice(st, segmenter).assign(kind=kind, kernel_size=k, seed=seed))
                if seed == seeds[0]:
                    examples[kind][f"k = {k}"] = st
    return KernelAblation(pd.DataFrame(rows), pd.concat(slices, ignore_index=True), examples)


def kernel_runs(kernels, kind: str = "adaconv", *, setting: int = 1, seeds=(0,), progress=False, **where
                ) -> pd.DataFrame:
    """Segmentation rows per kernel size: the setting's DRU-Net trained on `kind` stylized at each kernel size,
    everything else equal (notebook 05's run_setting; the profile's own size is the Table 2 row itself, other
    sizes are runs named ..._k<K>). One row per (kernel size, seed): Dice, HD and HD95 AVG over MYO, LV and RV
    on the test (else validation) patients."""
    from cmr_lib.study.runs import run_setting      # runs imports the training stack; only this function needs it
    out = []
    for seed in seeds:
        for k in kernels:
            cfg = make_config(setting=setting, stylizer=kind, seed=seed, **where)
            if k != cfg.sizes.stylizer.adaconv.kernel_size:
                cfg = make_config(setting=setting, stylizer=kind, seed=seed, kernel_size=k,
                                  overrides={"stylizer.adaconv.kernel_size": k}, **where)
            rec = run_setting(cfg, progress=progress).record
            part = "test" if rec["summary"].get("test") else "val"
            summ = rec["summary"][part]
            out.append({"kind": kind, "kernel_size": k, "seed": seed, "setting": setting, "patients": part,
                        **{f"{name} AVG": summ[m]["AVG"] for m, name in (("dice", "DC"), ("hd", "HD"), ("hd95", "HD95"))},
                        "run": rec["run_name"]})
    return pd.DataFrame(out)


SEGMENTATION = ["DC AVG", "HD AVG", "HD95 AVG"]


MEASURES = ["edge_overlap", "dice_content", "dice_stylized", "dice_kept", "kl_stylized_to_style", "kl_content_to_style"]


def _mean_ci(g: pd.DataFrame, cols) -> dict:
    vals = g[list(cols)].astype(float)
    out = vals.mean().to_dict()
    if len(g) > 1:
        out.update({f"{c} ci95": v for c, v in ci95(vals).items()})
    return out


def kernel_table(rows: pd.DataFrame, segmentation: pd.DataFrame | None = None) -> pd.DataFrame:
    """The kernel-size table: per (kind, kernel size), each measure's mean over seeds (and its 95 % CI with
    several seeds), the seed count and the slices measured per seed; with `segmentation` (kernel_runs), the
    setting's Dice, HD and HD95 AVG beside them (NaN where a size has no run)."""
    seg = {} if segmentation is None or segmentation.empty else {
        key: g for key, g in segmentation.groupby(["kind", "kernel_size"], sort=True)}
    out = []
    for (kind, k), g in rows.groupby(["kind", "kernel_size"], sort=True):
        row = {"kind": kind, "kernel_size": int(k), "seeds": int(g["seed"].nunique()), "slices": int(g["slices"].iloc[0]),
               **_mean_ci(g, MEASURES)}
        if segmentation is not None:
            sg = seg.get((kind, k))
            row.update(_mean_ci(sg, SEGMENTATION) if sg is not None else {c: float("nan") for c in SEGMENTATION})
            row["setting"] = int(sg["setting"].iloc[0]) if sg is not None else None
        out.append(row)
    return pd.DataFrame(out)


def preservation_markdown(rows, segmentation: pd.DataFrame | None = None) -> str:
    """The kernel-size table as Markdown (one row per stylizer kind and kernel size; mean ± 95 % CI over seeds
    when there are several), with the segmentation rows' Dice, HD and HD95 when given."""
    table = kernel_table(pd.DataFrame(rows), segmentation)

    def cell(r, c, d=3):
        if not np.isfinite(r[c]):
            return ""
        ci = r.get(f"{c} ci95", float("nan"))
        return f"{r[c]:.{d}f}" + (f" ± {ci:.{d}f}" if np.isfinite(ci) else "")
    seg = segmentation is not None
    setting = next((int(v) for v in table.get("setting", []) if pd.notna(v)), None) if seg else None
    head = ("| stylizer | kernel | seeds | edge overlap | DRU-Net Dice on bSSFP | on stylized | kept | KL stylized→style "
            "| KL bSSFP→style | slices |" + (f" setting {setting} DC AVG | HD AVG (mm) | HD95 AVG (mm) |" if seg else ""))
    lines = [head, "|" + "---|" * (13 if seg else 10)]
    for _, r in table.iterrows():
        lines.append(f"| {r['kind']} | {r['kernel_size']} | {r['seeds']} | " + " | ".join(cell(r, c) for c in MEASURES)
                     + f" | {r['slices']} |" + ("".join(f" {cell(r, c, 3 if c == 'DC AVG' else 1)} |"
                                                        for c in SEGMENTATION) if seg else ""))
    return "\n".join(lines) + "\n"


def kernel_claims(slices: pd.DataFrame) -> pd.DataFrame:
    """The paper's expectation "larger kernels change structure less", per stylizer kind: the largest kernel
    against the smallest, paired over patients (each patient's slices and seeds averaged first: the same slice
    seen once per seed is one observation, not several), on edge overlap and on the bSSFP network's Dice on the
    stylized slice. Holds when both are higher with the larger kernel at p < 0.05 after Holm's correction over
    the two measures; the smallest p the patient count allows is given."""
    out = []
    for kind, g in slices.groupby("kind", sort=True):
        sizes = sorted(g["kernel_size"].unique())
        if len(sizes) < 2:
            out.append({"claim": f"{STYLIZER_NAMES[kind]}: larger kernels change structure less",
                        "verdict": "cannot tell", "holds": None, "evidence": "one kernel size only"})
            continue
        unit = "patient" if g["patient"].notna().all() else "slice"      # older tables had no patient column
        small, large = (g[g["kernel_size"] == k].groupby(unit)[["edge_overlap", "dice_stylized"]].mean()
                        for k in (sizes[0], sizes[-1]))
        tests = {m: wilcoxon(large[m], small[m]) for m in ("edge_overlap", "dice_stylized")}
        adjusted = dict(zip(tests, holm([t["p (Wilcoxon)"] for t in tests.values()])))
        verdict = judge(all(t["mean difference"] > 0 for t in tests.values()),
                        [t["p (Wilcoxon)"] for t in tests.values()])
        n = min(t["patients"] for t in tests.values())
        evidence = "; ".join(f"{m.replace('_', ' ')}: k {sizes[-1]} minus k {sizes[0]} {t['mean difference']:+.3f} "
                             f"over {t['patients']} {unit}s, p {t['p (Wilcoxon)']:.2g} (Holm {adjusted[m]:.2g})"
                             for m, t in tests.items()) + f"; smallest attainable p with {n} {unit}s: " \
            f"{min_attainable_p(n):.2g}"
        out.append({"claim": f"{STYLIZER_NAMES[kind]}: larger kernels change structure less", "verdict": verdict,
                    "holds": verdict == "holds", "evidence": evidence})
    return pd.DataFrame(out, dtype=object)


def comparison_rows() -> list[tuple]:
    """Setting 0, then each setting's RAIN, AdaConv and AdaConv + VAE rows of Table 2 (the grid's order)."""
    wanted = ("rain", "adaconv", "adaconv-vae")
    return [(0, "none", 0)] + [k for s in (1, 2, 3) for k in table_rows("table2") if k[0] == s and k[1] in wanted]


@dataclass
class VAEComparison:
    """AdaConv + VAE beside AdaConv and RAIN: the table (None without runs), the paired tests that involve
    AdaConv + VAE, Table 3's rows (None without them) and the rows that have no run yet."""

    table: pd.DataFrame | None
    tests: pd.DataFrame
    table3: pd.DataFrame | None
    missing: list[str]


def vae_comparison(results_dir, *, profile: str, seeds, data_root: str) -> VAEComparison:
    """Read the runs notebook 05 wrote (one profile, data source and seed list) into the comparison."""
    runs = load_runs(results_dir, profile=profile, seed=list(seeds), data_root=data_root, required=False)
    rows = comparison_rows()
    have = by_row(runs)
    missing = [label(k) for k in rows if k not in have]
    if not any(k in have for k in rows):
        return VAEComparison(None, pd.DataFrame(columns=TEST_COLUMNS), None, missing)
    tests = paired_tests(runs, rows)
    tests = tests[tests["row"].str.contains("VAE") | tests["against"].str.contains("VAE")].reset_index(drop=True)
    t3_rows = table_rows("table3")
    t3 = table(runs, t3_rows) if any(k in have for k in t3_rows) else None
    return VAEComparison(table(runs, rows), tests, t3, missing)
