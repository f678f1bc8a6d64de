"""What the report shows but must compute from trained networks (so the report layer itself only reads records and
files): each row's networks scored on the other data sets (cross_dataset, notebook 06's cross-dataset table; each
run's scores cached beside its run.json), and
the images a run's network trained on, rebuilt from its record (run_training_examples; Fig. 8's
setting_histograms)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from cmr_lib.core.atomic import read_json, write_json
from cmr_lib.core.config import Config
from cmr_lib.core.digests import file_digest, fingerprint, reusable
from cmr_lib.core.errors import CmrError
from cmr_lib.core.grid import STYLIZER_NAMES, label, table_rows, uses_epsilon
from cmr_lib.core.paths import recorded_path
from cmr_lib.data.slices import SliceDataset
from cmr_lib.data.splits import run_split
from cmr_lib.evaluation.evaluate import COLUMNS, summarize
from cmr_lib.evaluation.inference import score_volumes
from cmr_lib.evaluation.metrics import histogram, intensity_kl, region_values
from cmr_lib.report.cross import DATA_NAMES, scored_patients
from cmr_lib.report.plots import row_colours
from cmr_lib.report.stats import case_means
from cmr_lib.report.tables import by_row, first_run_per_row, part_of, selection_is_clean
from cmr_lib.training.augment import BatchAugmenter, setting_data, training_examples
from cmr_lib.training.checkpoints import data_fingerprint
from cmr_lib.training.segmenters import load_run_segmenter, run_checkpoint
from cmr_lib.training.stylizers import train_stylizer


def cross_dataset(records: list[dict], own, others: dict, rows=None, *, output_root=None) -> pd.DataFrame:
    """Each row's DRU-Nets (one per seed), trained on `own`, scored on the labelled LGE of each data set in
    `others` that no run used (scored_patients); its own data set's column is its table value. A cell is the
    mean over the row's seeds, as in Table 2. Columns: setting, key, stylizer, epsilon, seeds, then
    '<data> DC' and '<data> HD' (AVG over MYO, LV, RV), with the patient counts in df.attrs['patients'] and
    each row's per-patient Dice AVG (averaged over seeds) in df.attrs['per_patient']."""
    groups = by_row(records)
    present = [k for k in (table_rows("table2") if rows is None else rows) if k in groups]
    if not present:
        raise CmrError("no run matches a row of the table")
    sets = {name: (src, scored_patients(src)) for name, src in others.items()}
    volumes = {}                                                     # read once, when a network must score them
    own_name = DATA_NAMES.get(own.name, own.name)
    counts, out, per_patient = {}, [], {}
    for key in present:
        recs = groups[key]
        part = part_of(recs[0])
        chose = part == "val" and not selection_is_clean(recs[0])                 # its labels chose the checkpoint
        own_col = f"{own_name} (own {'val' if chose else 'test'})"
        counts[own_col] = recs[0]["summary"][part]["dice"]["cases"]
        row = {"setting": key[0], "key": key[1], "stylizer": STYLIZER_NAMES[key[1]],
               "epsilon": key[2] if uses_epsilon(key[1]) else None, "seeds": len(recs),
               f"{own_col} DC": np.mean([_num(r["summary"][part]["dice"]["AVG"]) for r in recs]),
               f"{own_col} HD": np.mean([_num(r["summary"][part]["hd"]["AVG"]) for r in recs])}
        scored = {name: [] for name in sets}
        for rec in recs:
            cfg = Config.from_record(rec, output_root=output_root)
            model = []
            for name, (src, patients) in sets.items():
                df = cross_scores(rec, cfg, name, src, patients, model, volumes)
                counts[name] = int(df["case"].nunique())
                m = summarize(df)
                scored[name].append((float(m.loc["dice", "AVG"]), float(m.loc["hd", "AVG"]), case_means(df)))
        for name, runs in scored.items():
            row[f"{name} DC"] = float(np.mean([dc for dc, _, _ in runs]))
            row[f"{name} HD"] = float(np.mean([hd for _, hd, _ in runs]))
            per_patient.setdefault(name, {})[key] = pd.concat([c for _, _, c in runs], axis=1).mean(axis=1,
                                                                                                 skipna=False)
        out.append(row)
    df = pd.DataFrame(out)
    df.attrs["patients"] = counts
    df.attrs["per_patient"] = per_patient          # {data set: {row key: Dice AVG per patient}} for cross_tests
    return df


def cross_scores(record, cfg, name: str, src, patients: list[int], model: list, volumes: dict) -> pd.DataFrame:
    """One run's per-case scores on another data set's labelled LGE, cached beside its run.json
    (cross_<name>.json) under the fingerprint of its weights, the preprocessing and the scored files by content: a
    second notebook 06 reads them instead of running inference again. `model` (a list of at most one network)
    and `volumes` (name -> loaded volumes) are filled on first need and shared by the caller's loop."""
    key = fingerprint({"segmenter": file_digest(run_checkpoint(record)),      # the weights, not the folder's name
                       "preprocess": cfg.sizes.preprocess.to_dict(), "postprocess": "none",
                       "data": data_fingerprint(src, {"cross": ("LGE", patients)})})
    where = Path(record["_path"]).parent / f"cross_{_safe(name)}.json" if "_path" in record else None
    if where is not None and reusable(where):                  # FORCE=1: scored again once
        cached = read_json(where, "cross-dataset scores")
        if isinstance(cached, dict) and cached.get("key") == key:
            df = pd.DataFrame(cached["metrics"], columns=COLUMNS)
            return df.astype({c: float for c in df.columns if c not in ("case", "structure")})   # null -> NaN
    if not model:
        model.append(load_run_segmenter(record, cfg))
    if name not in volumes:
        volumes[name] = [src.load(p, "LGE", label="require") for p in patients]
    df, _ = score_volumes(model[0], volumes[name], cfg.inference)
    if where is not None:
        write_json(where, {"key": key, "data": name, "patients": list(patients), "metrics": df.to_dict("records")})
    return df


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


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
    split = run_split(source, cfg0.split, cfg0.sizes.segmenter)
    ref = SliceDataset.from_source(source, [p for p in split["val"] if source.has_label(p, "LGE")], "LGE",
                                   **cfg0.slicing(train=False), heart_only=True, label="require")
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
