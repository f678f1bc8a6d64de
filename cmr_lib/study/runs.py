"""One row of Table 2 / 3 end to end (notebook 05): stylizer, DRU-Net, LGE predictions and run.json; and the
DRU-Net's own figures (notebook 04)."""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cmr_lib.core.atomic import atomic_path
from cmr_lib.core.digests import note_step_file, reusable
from cmr_lib.core.checks import check_epsilon_iterations
from cmr_lib.core.errors import CmrError, check_bool
from cmr_lib.core.paths import display_path, recorded_path, repo_root
from cmr_lib.core.records import RunRecord
from cmr_lib.data.slices import heart_extent
from cmr_lib.data.sources import CMRSource, source_for
from cmr_lib.data.splits import run_split
from cmr_lib.data.transforms import normalise
from cmr_lib.evaluation.evaluate import METRICS, STRUCTURES, summarize
from cmr_lib.evaluation.inference import predict, predict_volumes, score_predictions, score_volumes
from cmr_lib.evaluation.postprocess import POSTPROCESS
from cmr_lib.evaluation.metrics import mean_class_dice
from cmr_lib.training.checkpoints import data_fingerprint
from cmr_lib.training.segmenters import TrainedSegmenter, run_checkpoint, train_setting
from cmr_lib.training.stylizers import TrainedStylizer, train_stylizer


@dataclass
class SettingRun:
    """A finished setting run: its folder, its record (run.json) and the trained networks."""

    run_dir: Path
    record: dict
    segmenter: TrainedSegmenter
    stylizer: TrainedStylizer | None


def run_name(cfg, epsilon_iterations: int, source: CMRSource) -> str:
    """<profile>_<data>_setting<S>_<stylizer>[_eps<E>][_k<K>]_seed<seed>: one folder per Table 2/3 row and seed
    (_k<K>: a kernel-size variant, given as the `kernel_size` parameter; notebook 07's rows)."""
    data = "phantom" if source.name == "phantom" else source.root.name
    eps = f"_eps{epsilon_iterations}" if cfg.searches else ""
    k = cfg.extra.get("kernel_size")
    kernel = f"_k{k}" if k is not None else ""
    return f"{cfg.profile}_{data}_setting{cfg.setting}_{cfg.stylizer}{eps}{kernel}_seed{cfg.seed}"


def _git_commit() -> dict:
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
    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "scipy", "nibabel", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def table2_summary(df) -> dict:
    """The paper's Table 2 form of per-case rows: per metric, the structure means and AVG / STD over them."""
    if df.empty:
        return {}
    s = summarize(df)
    return {m: {k: (None if not np.isfinite(s.loc[m, k]) else round(float(s.loc[m, k]), 4))
                for k in (*STRUCTURES, "AVG", "STD")} | {"cases": int(df["case"].nunique())} for m in METRICS}


def run_setting(cfg, source: CMRSource | None = None, *, epsilon_iterations: int = 5, include_original: bool = True,
                progress=True) -> SettingRun:
    """Run one row of Table 2/3 end to end: pre-train (or reuse) the setting's stylizer, train the DRU-Net
    on augmented bSSFP, predict every test LGE volume on its own grid (saved as NIfTI in the data set's label
    encoding), score the labelled ones and the validation patients, and write results/runs/<name>/run.json.

    A finished run whose networks and scored files are unchanged (run_inputs) is reused; otherwise it is scored
    again and its record replaced (the record is written last, atomically).
    """
    include_original = check_bool("include_original", include_original)
    t_start = time.perf_counter()
    timings = {}
    source = source or source_for(**cfg.source_args, progress=progress)
    timings["data"] = time.perf_counter() - t_start
    eps = check_epsilon_iterations(epsilon_iterations) if cfg.searches else 0
    include_original = include_original if (cfg.network or cfg.baseline) else False
    name = run_name(cfg, eps, source)
    run_dir = cfg.results_dir / "runs" / name
    split = run_split(source, cfg.split, cfg.sizes.segmenter)                    # once per run, passed down
    described = _described(cfg, source, split, eps, include_original)
    record_path = run_dir / "run.json"
    old = RunRecord.read(record_path) if record_path.is_file() else None
    for part in ("test", "val"):
        source.check(split[part], "LGE")                    # a bad LGE volume stops the run before training
    ts, seg = _trained(cfg, source, split, eps, include_original, timings, progress)
    inputs = run_inputs(cfg, source, split, seg, ts, eps=eps, include_original=include_original)
    if _still_valid(old, inputs, record_path):
        note_step_file(record_path)
        return SettingRun(run_dir, old, seg, ts)            # the same networks scored on the same files
    t = time.perf_counter()
    predicted = {part: list(predict_volumes(seg.model, (source.load(p, "LGE", label="optional") for p in split[part]),
                                            cfg.inference,
                                            pred_dir=run_dir / "predictions" / ("" if part == "test" else part),
                                            progress=progress and part == "test"))
                 for part in ("test", "val")}                  # val too: for figures when test labels are withheld
    scored = {(part, pp): score_predictions(pairs, postprocess=pp) for part, pairs in predicted.items()
              for pp in POSTPROCESS}
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    record = _record(cfg, name, described, inputs, split, seg, ts, scored, timings, run_dir)
    record.write(record_path)
    return SettingRun(run_dir, record, seg, ts)


def _described(cfg, source: CMRSource, split: dict, eps: int, include_original: bool) -> dict:
    """What a run is, for its record: its configuration (unset notebook options, and the T2 folder where no T2
    stylizer runs, left out), its search rounds and the data with its split."""
    config = {k: v for k, v in cfg.to_dict().items() if k != "output_root"}
    uses_t2 = bool(cfg.network) and cfg.setting_spec.pretrain.style == "T2"
    config["extra"] = {k: v for k, v in config["extra"].items() if v is not None and (k != "t2_dir" or uses_t2)}
    return {"config": config, "epsilon_iterations": eps, "include_original": include_original,
            "data": {"source": source.name, "root": display_path(source.root), "layout": source.layout,
                     "split": split}}


def _trained(cfg, source: CMRSource, split: dict, eps: int, include_original: bool, timings: dict, progress):
    """The row's stylizer (if it has one) and DRU-Net, trained or reused; their times go into `timings`."""
    spec, ts = cfg.setting_spec, None
    t = time.perf_counter()
    if cfg.network:
        ts = train_stylizer(cfg, source, cfg.network, (spec.pretrain.content, spec.pretrain.style), split=split,
                            progress=progress)
    timings["stylizer"] = time.perf_counter() - t
    t = time.perf_counter()
    seg = train_setting(cfg, source, stylizer=ts, split=split, epsilon_iterations=eps,
                        include_original=include_original, progress=progress)
    timings["segmenter"] = time.perf_counter() - t
    return ts, seg


def _still_valid(old: dict | None, inputs: dict, record_path: Path) -> bool:
    """Whether an existing record describes these networks scored on these files (then it is reused); a record
    made from other inputs is announced as replaced."""
    if old is not None and old.get("inputs") == inputs and reusable(record_path) \
            and run_checkpoint(old).is_file():
        return True
    if old is not None:
        changed = sorted(k for k in set(inputs) | set(old.get("inputs") or {})
                         if inputs.get(k) != (old.get("inputs") or {}).get(k))
        print(f"{display_path(record_path)}: made from other inputs ({', '.join(changed) or 'an older record'}); "
              f"scored again, the record is replaced")
    return False


def _record(cfg, name: str, described: dict, inputs: dict, split: dict, seg, ts, scored: dict, timings: dict,
            run_dir: Path) -> RunRecord:
    """run.json: what the run is, how its networks were trained and chosen, and its scores per part."""
    test_df, unlabelled = scored[("test", "none")]
    val_df = scored[("val", "none")][0]
    parts = sorted({part for part, _ in scored}, key=("test", "val").index)
    hist, info = seg.history, seg.info
    return RunRecord.from_dict({
        "run_name": name, **described, "inputs": inputs, "seed": cfg.seed, "profile": cfg.profile, "setting": cfg.setting,
        "setting_name": cfg.setting_spec.name, "stylizer": cfg.stylizer, "baseline": cfg.baseline,
        "git": _git_commit(), "versions": _versions(),
        "encoder": ts.info["encoder"] if ts else None,
        "stylizer_run": {"checkpoint": display_path(ts.run_dir), "reused": ts.info.get("reused"),
                         "train_seconds": ts.info.get("seconds_train")} if ts else None,
        "segmenter": {"checkpoint": display_path(seg.run_dir), "reused": info.get("reused"),
                      "best_step": info.get("best_step"), "train_seconds": info.get("seconds_train"),
                      "selection": info.get("selection"),
                      "seconds_stylize": info.get("seconds_stylize"), "precision": info.get("precision"),
                      "device": info.get("device"), "style_fallbacks": info.get("style_fallbacks"),
                      "val_step": hist.get("val_step", []), "val_dice": hist.get("val_dice", []),
                      "mean_explore_gain": (float(np.mean(hist["explore_gain"])) if hist.get("explore_gain")
                                            else None)},
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        # the training's threads (CPU results depend on them: summation order), also when it was reused here
        "torch_threads": info.get("torch_threads", torch.get_num_threads()),
        "torch_threads_scoring": torch.get_num_threads(),
        "data_files": {**info["config"]["data"], "test": inputs["scored"]["data"]},   # each file's SHA-256, per role
        "test_patients_labelled": sorted({int(r) for r in split["test"]} - set(unlabelled)),
        "test_patients_unlabelled": unlabelled,
        "predictions": display_path(run_dir / "predictions"),
        "predictions_val": display_path(run_dir / "predictions" / "val"),
        "metrics": {"test": test_df.to_dict("records"), "val": val_df.to_dict("records")},   # NaN -> null
        "summary": {"test": table2_summary(test_df), "val": table2_summary(val_df)},
        # the same predictions with each structure reduced to its largest connected component (nnU-Net's)
        "metrics_largest_component": {p: scored[(p, "largest_component")][0].to_dict("records") for p in parts},
        "summary_largest_component": {p: table2_summary(scored[(p, "largest_component")][0]) for p in parts},
    }, run_dir / "run.json")


def run_inputs(cfg, source: CMRSource, split: dict, seg: TrainedSegmenter, ts: TrainedStylizer | None, *, eps: int,
               include_original: bool) -> dict:
    """What a run's record is made of, and nothing else: the trained networks (their folders are named by the hash
    of everything that trained them, data content included) and what scoring reads (the test and validation LGE
    images and labels by content, the preprocessing, the post-processing). The record is reused while these are
    the same; a change elsewhere in the profile (e.g. analysis.examples) keeps it."""
    return {"segmenter_run": seg.run_dir.name, "stylizer_run": ts.run_dir.name if ts else None,
            "epsilon_iterations": eps, "include_original": include_original, "split": split,
            "scored": {"preprocess": cfg.sizes.preprocess.to_dict(), "postprocess": list(POSTPROCESS),
                       "data": data_fingerprint(source, {"test": ("LGE", split["test"]), "val": ("LGE", split["val"])})}}


def row_folder(record: dict) -> str:
    """A run's row as a folder name: setting<S>_<stylizer>[_eps<E>][_k<K>] (its run name without profile, data and
    seed)."""
    name = record["run_name"]
    start = name.index(f"_setting{record['setting']}_") + 1
    return name[start:name.rindex("_seed")]


def export_test_predictions(records: list[dict], dest) -> pd.DataFrame:
    """Copy each run's predictions of its unlabelled test patients (MS-CMRSeg LGE 6-45, whose labels the challenge
    withheld) to dest/<row>/seed<k>/, named as the challenge names the LGE images (patient<N>_LGE.nii.gz), so that a
    reader who holds the labels scores every row without training anything (`evaluate` with -ref their folder).
    Returns one line per (row, seed) with the count copied; a prediction the record lists but that is not on disk
    is a one-line error."""
    out = []
    for rec in sorted(records, key=lambda r: (row_folder(r), r["seed"])):
        unlabelled = rec.get("test_patients_unlabelled") or []
        if not unlabelled:
            continue
        where = Path(dest) / row_folder(rec) / f"seed{rec['seed']}"
        src_dir = recorded_path(rec["predictions"])
        names = sorted(f.name for f in src_dir.glob("*.nii*") if f.is_file())
        wanted = [n for n in names if int(re.search(r"\d+", n).group()) in set(unlabelled)]
        if len(wanted) != len(unlabelled):
            raise CmrError(f"{src_dir}: holds {len(wanted)} of the {len(unlabelled)} unlabelled test predictions its "
                           f"record lists; rerun the row")
        for n in wanted:
            with atomic_path(where / n) as tmp:
                shutil.copyfile(src_dir / n, tmp)
        out.append({"row": row_folder(rec), "seed": rec["seed"], "predictions": len(wanted),
                    "folder": display_path(where)})
    return pd.DataFrame(out, columns=["row", "seed", "predictions", "folder"])


def predict_examples(cfg, source: CMRSource, model, patients, *, sequence: str = "LGE", per_patient: int = 1
                     ) -> list[dict]:
    """Labelled slices of `sequence` with the network's prediction, for figures: the mid-heart slice(s) of
    each patient, on the stored grid (image normalised for display, label, prediction, per-slice Dice)."""
    pre = cfg.sizes.preprocess
    out = []
    for p in patients:
        if not source.has_label(p, sequence):
            continue
        vol = source.load(p, sequence, label="require")
        pred = predict(model, vol, cfg.inference)
        lo, hi = heart_extent(vol.label)
        for z in sorted({int(round(v)) for v in np.linspace(lo, hi, per_patient + 2)[1:-1]}):
            lab, prd = vol.label[..., z], pred[..., z]
            out.append({"patient": p, "sequence": sequence, "slice": z,
                        "image": normalise(vol.image[..., z:z + 1], tuple(pre.percentiles))[..., 0],
                        "label": lab, "pred": prd, "dice": mean_class_dice(prd, lab)})
    return out


def domain_gap(cfg, source: CMRSource, model, patients) -> pd.DataFrame:
    """Dice per structure of one network on bSSFP and on LGE of the same patients (those labelled in both):
    how much of the segmentation survives the change of sequence before any stylization."""
    rows = {}
    for seq in ("C0", "LGE"):
        vols = [source.load(p, seq, label="require") for p in patients if source.has_label(p, seq)]
        df, _ = score_volumes(model, vols, cfg.inference)
        if not df.empty:
            s = summarize(df)
            rows[f"{seq} ({df['case'].nunique()} patients)"] = {k: s.loc["dice", k] for k in (*STRUCTURES, "AVG")} | \
                {"HD AVG (mm)": s.loc["hd", "AVG"]}
    return pd.DataFrame(rows).T.round(3)


def summary_table(record: dict) -> pd.DataFrame:
    """A run's Table 2 row(s): Dice and HD (mm) per structure and AVG ± STD, for the labelled test and
    the validation patients, from its run.json record."""
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
