"""Notebook 06's figures from run records and saved predictions: Table 2 bars, Fig. 6 predictions (Fig. 8 needs the
training images rebuilt: study.rebuild.setting_histograms)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from cmr_lib.core.errors import CmrError
from cmr_lib.core.grid import label, table_rows
from cmr_lib.data.nifti import read_label
from cmr_lib.data.slices import heart_extent
from cmr_lib.data.transforms import normalise
from cmr_lib.evaluation.evaluate import STRUCTURES
from cmr_lib.evaluation.metrics import mean_class_dice
from cmr_lib.report.plots import add_contour_key, row_colours, show_slice
from cmr_lib.report.tables import by_row, first_run_per_row, part_of


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
    axes[1].set_ylim(bottom=0)                    # a distance is never negative; an interval that dips below is cut
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
