"""Notebook 06's figures from run records: Table 2 bars, Fig. 6 predictions, Fig. 8 per-setting histograms."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats

from cmr_lib.core.config import Config
from cmr_lib.core.errors import CmrError
from cmr_lib.core.grid import label, table_rows
from cmr_lib.core.paths import recorded_path
from cmr_lib.data.nifti import read_label
from cmr_lib.data.slices import SliceDataset, heart_extent
from cmr_lib.data.splits import run_split
from cmr_lib.data.transforms import normalise
from cmr_lib.evaluation.evaluate import STRUCTURES
from cmr_lib.evaluation.metrics import histogram, intensity_kl, mean_class_dice, region_values
from cmr_lib.report.plots import add_contour_key, row_colours, show_slice
from cmr_lib.report.tables import by_row, first_run_per_row, part_of
from cmr_lib.training.augment import BatchAugmenter, setting_data, training_examples
from cmr_lib.training.segmenters import load_run_segmenter
from cmr_lib.training.stylizers import train_stylizer


def table2_bars(records: list[dict], rows=None, part: str | None = None):
    """Dice and HD per structure for each Table 2 row, every seed used: bar = mean over patients (each patient's
    value averaged over seeds), black line = 95% t-interval of the row's mean over seeds (two or more seeds),
    one dot per patient; each row its own colour, the key below the panels."""
    groups = by_row(records)
    present = [k for k in (table_rows("table2") if rows is None else rows) if k in groups]
    if not present:
        raise CmrError("no run matches a row of the table")
    colours = row_colours(len(present))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2 + 0.22 * ((len(present) + 3) // 4)))
    width = 0.8 / len(present)
    for ax, metric, name in ((axes[0], "dice", "Dice"), (axes[1], "hd", "Hausdorff distance (mm)")):
        for i, key in enumerate(present):
            runs = groups[key]
            per_seed = pd.concat([pd.DataFrame(r["metrics"][part or part_of(r)]).assign(seed=r["seed"]) for r in runs])
            for j, s in enumerate(STRUCTURES):
                one = per_seed[per_seed["structure"] == s].dropna(subset=[metric])
                patients = one.groupby("case")[metric].mean().to_numpy(dtype=float)
                seed_means = one.groupby("seed")[metric].mean().to_numpy(dtype=float)
                x = j + (i - (len(present) - 1) / 2) * width
                ax.bar(x, patients.mean() if len(patients) else np.nan, width * 0.9, color=colours[i],
                       label=label(key) if j == 0 else None)
                if len(seed_means) >= 2:
                    half = stats.t.ppf(0.975, len(seed_means) - 1) * seed_means.std(ddof=1) / np.sqrt(len(seed_means))
                    ax.errorbar(x, seed_means.mean(), yerr=half, color="k", lw=1.0, capsize=1.5)
                ax.plot(np.full(len(patients), x), patients, ".", color="k", ms=2.5, alpha=0.6)
        ax.set_xticks(range(len(STRUCTURES)), STRUCTURES)
        ax.set_xlim(-0.5, len(STRUCTURES) - 0.5)
        ax.set_ylabel(name)
    axes[0].set_ylim(0, 1)
    seeds = sorted({r["seed"] for k in present for r in groups[k]})
    fig.suptitle(f"Table 2 per structure: mean over patients (bar), each patient (dot), 95% interval over "
                 f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} (line)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(present), 4), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(present) + 3) // 4), 1, 1))
    return fig


def _saved_prediction(record: dict, name: str) -> Path | None:
    """A run's saved prediction of one LGE volume (predictions/, or predictions/val/), if there."""
    pred_dir = Path(record["_path"]).parent / "predictions"
    return next((d / name for d in (pred_dir, pred_dir / "val") if (d / name).is_file()), None)


def prediction_grid(records: list[dict], source, rows=None, *, patients: int = 3):
    """Fig. 6: LGE slices of labelled test (else validation) patients, ground truth and each row's saved
    prediction (from the predictions/ folder beside its run.json, or its val/ subfolder)."""
    first, present = first_run_per_row(records, table_rows("table2", "paper") if rows is None else rows)
    rec0 = first[present[0]]
    pats = [int(p) for p in rec0.get("test_patients_labelled") or []] or \
        [int(p) for p in rec0["data"]["split"]["val"] if source.has_label(int(p), "LGE")]
    pats = pats[:patients]
    if not pats:
        raise CmrError(f"{source.root}: no labelled LGE patient to show")
    fig, axes = plt.subplots(len(pats), len(present) + 1, figsize=(2.2 * (len(present) + 1), 2.8 * len(pats)),
                             squeeze=False)
    for r, p in enumerate(pats):
        vol = source.load(p, "LGE", label="require")
        lo, hi = heart_extent(vol.label)
        z = (lo + hi) // 2                                  # the mid-ventricular slice
        img = normalise(vol.image[..., z:z + 1], (0.5, 99.5))[..., 0]
        show_slice(axes[r, 0], img, vol.label[..., z], title=f"patient {p}: ground truth")
        for c, key in enumerate(present, 1):
            path = _saved_prediction(first[key], vol.image_path.name)
            if path is None:
                axes[r, c].set_axis_off()
                axes[r, c].set_title(f"{label(key)}\n(no saved prediction)", fontsize=7)
                continue
            prd = read_label(path, allow_empty=True)[0][..., z]
            show_slice(axes[r, c], img, prd, title=f"{label(key)}\nDice {mean_class_dice(prd, vol.label[..., z]):.2f}")
    for ax in axes.ravel():
        ax.title.set_fontsize(7)
    fig.suptitle("LGE: ground truth and each setting's prediction")
    add_contour_key(fig)
    return fig


def run_training_examples(record: dict, source, *, steps=(0,), output_root=None, segmenter=None):
    """What a run's DRU-Net trained on at the given steps (training.augment.training_examples), rebuilt from
    its record: its config, its stylizer (reused, never retrained) and, where the images depend on the network
    (RAIN's search, SLAug's saliency), that network (`segmenter`; default: the run's trained one)."""
    cfg = Config.from_record(record, output_root=output_root)
    split = record["data"]["split"]
    stylizer = None
    if cfg.network:
        spec = cfg.setting_spec.pretrain
        ts = train_stylizer(cfg, source, cfg.network, (spec.content, spec.style), split=split, progress=False,
                            reuse_only=True)
        want = Path((record.get("stylizer_run") or {}).get("checkpoint") or "").name
        if ts.run_dir.name != want:
            where = record.get("_path", record.get("run_name"))
            raise CmrError(f"{where}: its stylizer {want} is not the one its config builds ({ts.run_dir.name}); "
                           f"rerun the row")
        stylizer = ts.model
    content, styles = setting_data(cfg, source, split)
    eps = record.get("epsilon_iterations", 0)
    augmenter = BatchAugmenter(cfg, stylizer=stylizer, styles=styles, epsilon_iterations=eps)
    if augmenter.needs_network and segmenter is None:
        segmenter = load_run_segmenter(record, cfg)
    return training_examples(cfg, augmenter, content, steps=steps, segmenter=segmenter)


def setting_histograms(records: list[dict], source, rows=None, *, steps=range(6), bins: int = 64, output_root=None):
    """Fig. 8 per setting: intensity histograms of the images each row's DRU-Net trained on (its batches at
    `steps`, exactly as training drew and augmented them), in the myocardium and in LV ∪ MYO ∪ RV, against
    the LGE of validation patients; KL(training images || LGE) per row. A row whose stylizer checkpoint is
    gone is left out (df.attrs['skipped']). Returns (figure, DataFrame of KL values)."""
    first, present = first_run_per_row(records, table_rows("table2", "paper") if rows is None else rows)
    cfg0 = Config.from_record(first[present[0]], output_root=output_root)
    split = run_split(cfg0, source)
    ref = SliceDataset.from_source(source, [p for p in split["val"] if source.has_label(p, "LGE")], "LGE", cfg0,
                                   train=False, heart_only=True, label="require", crop=cfg0.crop)
    if len(ref) == 0:
        raise CmrError(f"{source.root}: no labelled LGE validation slice to compare with")
    ref_img = torch.stack([ref[i]["image"] for i in range(len(ref))])
    ref_lab = torch.stack([ref[i]["label"] for i in range(len(ref))])
    shown, skipped = {}, []
    for key in present:
        rec = first[key]
        if rec.get("stylizer_run") and not (recorded_path(rec["stylizer_run"]["checkpoint"]) / "final.pt").is_file():
            skipped.append(label(key))
            continue
        ex = run_training_examples(rec, source, steps=tuple(steps), output_root=output_root)
        shown[label(key) + (": bSSFP as is" if key == (0, "none", 0) else "")] = ex
    kl_rows = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    centres = (np.arange(bins) + 0.5) / bins
    colours = dict(zip(shown, row_colours(len(shown))))
    for ax, region, name in ((axes[0], "MYO", "myocardium"), (axes[1], "heart", "LV ∪ MYO ∪ RV")):
        r = region_values(ref_img, ref_lab, region)
        ax.fill_between(centres, histogram(r, bins), color="0.8", label="LGE (validation patients)")
        for lbl, ex in shown.items():
            v = np.clip(region_values(ex.stylized, ex.content_label, region), 0.0, 1.0)
            kl = intensity_kl(v, r, bins)
            kl_rows.append({"row": lbl, "region": region, "kl_to_lge": round(kl, 4)})
            ax.plot(centres, histogram(v, bins), lw=1.2, color=colours[lbl], label=f"{lbl} (KL {kl:.2f})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("normalised intensity")
        ax.set_ylabel("density")
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.suptitle("What each row's network trained on, against LGE: intensity histograms and KL(training || LGE)")
    fig.tight_layout()
    kl = pd.DataFrame(kl_rows).pivot(index="row", columns="region", values="kl_to_lge")
    kl = kl.reindex(list(shown)).rename(columns={"MYO": "KL MYO", "heart": "KL LV ∪ MYO ∪ RV"})
    kl.attrs["skipped"] = skipped
    return fig, kl
