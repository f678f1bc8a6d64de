"""Evaluation: Dice, HD, HD95, ASSD per structure (mm), per case; a Table-2-form summary; the CLI.

    python -m cmr_lib.evaluation.evaluate PRED_DIR GT_DIR [--out FILE.csv] [--largest-component]

Each prediction file is scored against the ground-truth file of the same name (a ground-truth
name with `_manual` or `_gd` before the extension also matches). Label values follow the ground truth's
layout (0/200/500/600; in MyoPS files 1220/2221 count as myocardium). Voxel sizes come from the ground
truth's header. Errors (missing file, shape mismatch, unknown label value): one line, exit code 2.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cmr_lib.core.atomic import atomic_path
from cmr_lib.core.errors import CmrError, cli_main
from cmr_lib.data.nifti import CLASSES, check_same_grid, layout_of, read_label
from cmr_lib.evaluation.metrics import evaluate_volume
from cmr_lib.evaluation.postprocess import postprocessed

COLUMNS = ["case", "structure", "dice", "hd", "hd95", "assd"]
METRICS = ["dice", "hd", "hd95", "assd"]
STRUCTURES = list(CLASSES.values())
_NII = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def _stem(name: str) -> str:
    return _NII.sub("", name)


def _case_name(stem: str) -> str:
    """patient1_LGE_manual -> patient1_LGE; myops_training_101_gd -> myops_training_101."""
    return re.sub(r"_(manual|gd)$", "", stem)


def _unique(files, what: str) -> dict[str, Path]:
    """{stem: path}; one case given twice (.nii and .nii.gz, or two spellings of the extension) is an error."""
    out = {}
    for f in files:
        stem = _stem(f.name)
        if stem in out:
            raise CmrError(f"{f}: {what} case {stem} is given twice (also {out[stem].name}); keep one file")
        out[stem] = f
    return out


def match_files(pred_dir, gt_dir, *, allow_missing: bool = False) -> list[tuple[str, Path | None, Path]]:
    """Pair each prediction with its ground truth by file name: [(case, pred_path, gt_path)].

    A ground-truth folder may also hold the images (a data set folder): label files (`_manual`, `_gd`)
    always win over a plain name, and a MyoPS prediction named after a sequence
    (`myops_training_101_DE`) is scored against that patient's `_gd` label. A ground-truth case of the
    predicted sequences without a prediction is an error, as challenge evaluators count it; with
    `allow_missing` it is paired with None (scored as an empty prediction).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise CmrError(f"{d}: {what} folder not found")
    if pred_dir.resolve() == gt_dir.resolve():
        raise CmrError(f"{pred_dir}: the prediction folder is the ground-truth folder; every case would score 1")
    preds = sorted(p for p in pred_dir.iterdir() if _NII.search(p.name))
    if not preds:
        raise CmrError(f"{pred_dir}: no .nii or .nii.gz prediction files")
    _unique(preds, "prediction")
    plain = _unique(sorted(g for g in gt_dir.iterdir() if _NII.search(g.name)), "ground-truth")
    labels = {_case_name(stem): g for stem, g in plain.items() if re.search(r"_(manual|gd)$", stem)}
    pairs, used = [], set()
    for p in preds:
        stem = _stem(p.name)
        case = _case_name(stem)
        myops_patient = re.sub(r"_(C0|DE|T2|LGE)$", "", case) if case.startswith("myops_") else None
        g = labels.get(case) or (labels.get(myops_patient) if myops_patient else None) or plain.get(stem)
        if g is None:
            raise CmrError(f"{p}: no ground truth of the same name in {gt_dir}")
        if p.resolve() == g.resolve():
            raise CmrError(f"{p}: the prediction is its own ground truth")
        pairs.append((case, p, g))
        used.add(g)
    missing = [(case, g) for case, g in _expected(labels or plain, preds).items() if g not in used]
    if missing and not allow_missing:
        names = ", ".join(c for c, _ in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CmrError(f"{gt_dir}: no prediction for {len(missing)} ground-truth case(s) ({names}); a missing case "
                       f"counts in a challenge: pass --allow-missing to score each as an empty prediction (Dice 0)")
    return pairs + [(case, None, g) for case, g in missing]


def _expected(gt: dict[str, Path], preds: list[Path]) -> dict[str, Path]:
    """The ground-truth cases a prediction folder should cover: those of the sequences it predicts
    (MS-CMRSeg patient{N}_{SEQ}), every MyoPS patient when it predicts MyoPS, else every case."""
    stems = [_case_name(_stem(p.name)) for p in preds]
    seqs = {m.group(1) for m in (re.search(r"^patient\d+_(\w+)$", s) for s in stems) if m}
    out = {}
    for case, g in gt.items():
        m = re.search(r"^patient\d+_(\w+)$", case)
        if (m and m.group(1) in seqs) or (case.startswith("myops_") and any(s.startswith("myops_") for s in stems)) \
                or not (m or case.startswith("myops_")):
            out[case] = g
    return out


def evaluate_case(pred_path, gt_path, *, postprocess: str = "none") -> list[dict]:
    """Rows (case, structure, dice, hd, hd95, assd) of one prediction against its ground truth, after
    `postprocess` ('none' or 'largest_component', see evaluation.postprocess)."""
    gt, spacing, gt_affine = read_label(gt_path)
    if pred_path is None:                     # a missing prediction (allow_missing): scored as empty
        pred, pred_spacing, pred_affine = np.zeros_like(gt), spacing, gt_affine
        case = _case_name(_stem(Path(gt_path).name))
    else:
        pred, pred_spacing, pred_affine = read_label(pred_path, allow_empty=True, layout=layout_of(gt_path))
        case = _case_name(_stem(Path(pred_path).name))
    if pred.shape != gt.shape:
        raise CmrError(f"{pred_path}: shape {pred.shape} differs from ground truth {Path(gt_path).name} {gt.shape}")
    if not np.allclose(pred_spacing, spacing, rtol=1e-3, atol=1e-4):
        raise CmrError(f"{pred_path}: voxel size {tuple(round(s, 4) for s in pred_spacing)} differs from ground "
                       f"truth {Path(gt_path).name} {tuple(round(s, 4) for s in spacing)}")
    check_same_grid(gt_path, gt.shape, gt_affine, pred_path, pred.shape, pred_affine,
                    what="a prediction and its ground truth")            # a flipped or shifted prediction
    pred = postprocessed(pred, postprocess)
    return [{"case": case, "structure": s, **m} for s, m in evaluate_volume(pred, gt, spacing).items()]


def evaluate_dirs(pred_dir, gt_dir, *, progress=False, postprocess: str = "none",
                  allow_missing: bool = False) -> pd.DataFrame:
    """Evaluate every prediction in `pred_dir` against `gt_dir`; one row per case and structure (see
    match_files for missing cases)."""
    pairs = match_files(pred_dir, gt_dir, allow_missing=allow_missing)
    rows = []
    for _, p, g in tqdm(pairs, desc="evaluate", unit="case", disable=not progress):
        rows.extend(evaluate_case(p, g, postprocess=postprocess))
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Table 2 form: per metric, the mean per structure (NaN excluded), then AVG and STD (population) over
    the three structure means, and how many cases had NaN (empty prediction or empty reference)."""
    rows = []
    for metric in METRICS:
        row = {"metric": metric}
        means = []
        for s in STRUCTURES:
            vals = df.loc[df["structure"] == s, metric].to_numpy(dtype=float)
            m = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            row[s] = m
            row[f"nan_{s}"] = int(np.isnan(vals).sum())
            means.append(m)
        row["AVG"] = float(np.mean(means))
        row["STD"] = float(np.std(means))          # population std over the three structures
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def format_summary(summary: pd.DataFrame, n_cases: int) -> str:
    """A plain-text Table 2 row block: Dice and distances per structure, AVG +- STD, NaN counts."""
    names = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}
    lines = [f"{'':<10}" + "".join(f"{s:>9}" for s in STRUCTURES) + f"{'AVG ± STD':>17}"]
    for metric, row in summary.iterrows():
        fmt = "{:9.3f}" if metric == "dice" else "{:9.2f}"
        avg = f"{row['AVG']:.3f} ± {row['STD']:.3f}" if metric == "dice" else f"{row['AVG']:.2f} ± {row['STD']:.2f}"
        lines.append(f"{names[metric]:<10}" + "".join(fmt.format(row[s]) for s in STRUCTURES) + f"{avg:>17}")
    nan = summary.loc["hd"]
    lines.append(f"cases: {n_cases}; cases with undefined distances (empty prediction or reference): "
                 + ", ".join(f"{s} {int(nan[f'nan_{s}'])}" for s in STRUCTURES))
    return "\n".join(lines)


def write_csv(df: pd.DataFrame, path) -> Path:
    """Write per-case rows with exactly COLUMNS, atomically; NaN is written as 'nan'."""
    with atomic_path(path) as tmp:
        df[COLUMNS].to_csv(tmp, index=False, na_rep="nan", float_format="%.6f")
    return Path(path)


def check_output(out, *inputs) -> None:
    """Refuse an --out that is a folder or one of the input files (the CSV would replace a label volume)."""
    out = Path(out)
    if out.is_dir():
        raise CmrError(f"{out}: --out is a folder; give a file name such as {out / 'metrics.csv'}")
    target = out.resolve()
    for folder in inputs:
        folder = Path(folder)
        if folder.is_dir() and any(f.resolve() == target for f in folder.iterdir()):
            raise CmrError(f"{out}: --out is one of the input files in {folder}; the CSV would overwrite it")


@cli_main
def main(argv=None) -> int:
    """cmr-evaluate -ref GT_DIR -pred PRED_DIR [--out FILE.csv] [--largest-component] (or PRED_DIR GT_DIR)"""
    ap = argparse.ArgumentParser(prog="cmr-evaluate", description=__doc__.split("\n\n")[0],
                                 epilog="example: cmr-evaluate -ref data/mscmrseg2019 -pred labels/ --out scores.csv")
    ap.add_argument("-ref", "--ref", dest="ref", help="folder of ground-truth label volumes (nnU-Net's order: -ref, -pred)")
    ap.add_argument("-pred", "--pred", dest="pred", help="folder of predicted label volumes (.nii / .nii.gz)")
    ap.add_argument("pred_dir", nargs="?", help="(positional form) folder of predicted label volumes")
    ap.add_argument("gt_dir", nargs="?", help="(positional form) folder of ground-truth label volumes")
    ap.add_argument("--out", help="write per-case metrics to this CSV file")
    ap.add_argument("--allow-missing", action="store_true",
                    help="score a ground-truth case without a prediction as an empty prediction (Dice 0)")
    ap.add_argument("--largest-component", action="store_true",
                    help="score each structure's largest connected component only (nnU-Net's post-processing)")
    args = ap.parse_args(argv)
    named, positional = (args.ref, args.pred), (args.pred_dir, args.gt_dir)
    if any(named) and any(positional) or not (all(named) or all(positional)):
        ap.error("give -ref GT_DIR -pred PRED_DIR, or PRED_DIR GT_DIR, not a mix")
    if all(named):
        args.pred_dir, args.gt_dir = args.pred, args.ref
    if args.out:
        check_output(args.out, args.pred_dir, args.gt_dir)
    df = evaluate_dirs(args.pred_dir, args.gt_dir, postprocess="largest_component" if args.largest_component else "none",
                       allow_missing=args.allow_missing)
    if args.out:
        write_csv(df, args.out)
    print(format_summary(summarize(df), df["case"].nunique()))
    if args.out:
        print(f"per-case metrics: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
