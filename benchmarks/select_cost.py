"""What choosing the checkpoint without target labels costs (issue 35): a Table 2 row on the real MS-CMRSeg sample
trained three ways, by the profile's segmenter.select: 'source' (bSSFP 31-35 held out to choose the checkpoint,
trains on 30), 'last' (trains on all 35, keeps the last checkpoint) and 'target' (trains on all 35, chooses on
LGE 1-5: the paper's protocol). Scored on LGE 1-5 and on MyoPS 111-120 (the half no run uses). Writes
benchmarks/results/select_cost.md (and .csv).

    python benchmarks/select_cost.py [--profile real] [--rows 0:none 0:slaug] [--seeds 0 1 2] [--work DIR]

Runs are cached under --work (default build/select_cost), so a second call only tabulates.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cmr_lib.core.atomic import write_text
from cmr_lib.core.config import make_config
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import resolve_data
from cmr_lib.data.sources import open_source
from cmr_lib.evaluation.evaluate import summarize
from cmr_lib.evaluation.inference import score_volumes
from cmr_lib.report.cross import scored_patients
from cmr_lib.report.stats import case_means, min_attainable_p, wilcoxon
from cmr_lib.study.runs import run_setting
from cmr_lib.training.segmenters import load_run_segmenter

RULES = ("source", "last", "target")
OUT = repo_root() / "benchmarks" / "results" / "select_cost"


def run(profile: str, rows, seeds, work: Path) -> pd.DataFrame:
    """One line per (row, rule, seed): Dice and HD AVG on LGE 1-5 and Dice AVG on MyoPS 111-120, with the
    per-patient Dice kept for the paired comparison."""
    named = resolve_data("mscmrseg2019")
    myops = open_source(named.t2_dir)
    vols = [myops.load(p, "LGE", label="require") for p in scored_patients(myops)]
    out = []
    for setting, stylizer in rows:
        for rule in RULES:
            for seed in seeds:
                cfg = make_config(profile=profile, setting=setting, stylizer=stylizer, seed=seed,
                                  data_dir=named.data_dir, c0_spacing=named.c0_spacing, t2_dir=str(named.t2_dir),
                                  output_root=work / rule, overrides={"segmenter.select": rule})
                rec = run_setting(cfg, progress=False).record
                model = load_run_segmenter(rec, cfg)
                df, _ = score_volumes(model, vols, cfg.inference)
                lge = pd.DataFrame(rec["metrics"]["val"])
                out.append({"row": f"setting {setting}, {stylizer}", "select": rule, "seed": seed,
                            "trained on": len(rec["data"]["split"]["train"]),
                            "chosen on": f"{rec['segmenter']['selection']['sequence'] or '-'} "
                                         f"{rec['segmenter']['selection']['patients'] or ''}".strip(),
                            "best step": rec["segmenter"]["best_step"],
                            "LGE 1-5 DC": float(summarize(lge).loc["dice", "AVG"]),
                            "LGE 1-5 HD": float(summarize(lge).loc["hd", "AVG"]),
                            "MyoPS DC": float(summarize(df).loc["dice", "AVG"]),
                            "minutes": round((rec["segmenter"]["train_seconds"] or 0) / 60, 1),   # as trained
                            "_lge": case_means(lge), "_myops": case_means(df)})
                print(out[-1]["row"], rule, seed, round(out[-1]["LGE 1-5 DC"], 3), round(out[-1]["MyoPS DC"], 3),
                      flush=True)
    return pd.DataFrame(out)


def report(df: pd.DataFrame, profile: str) -> str:
    """Means over seeds per (row, rule), then each rule against 'source', paired over patients (seeds averaged)."""
    lines = [f"# What choosing without target labels costs ({profile} profile, {df['seed'].nunique()} seeds)\n",
             "Made by `benchmarks/select_cost.py`. `source`: checkpoint chosen on held-out bSSFP 31-35 (the DRU-Net "
             "trains on 30); `last`: trained on all 35, last checkpoint; `target`: trained on all 35, chosen on the "
             "LGE 1-5 labels (the paper's protocol: its LGE 1-5 numbers are then not a clean test). MyoPS: patients "
             "111-120, which no run uses.\n",
             "| row | select | trained on | DC LGE 1-5 | HD LGE 1-5 (mm) | DC MyoPS 111-120 | chosen step per seed "
             "| DRU-Net training minutes (3 seeds, 1 thread) |",
             "|---|---|---|---|---|---|---|---|"]
    for (row, rule), g in df.groupby(["row", "select"], sort=False):
        lines.append(f"| {row} | {rule} | {int(g['trained on'].iloc[0])} | {g['LGE 1-5 DC'].mean():.3f} | "
                     f"{g['LGE 1-5 HD'].mean():.1f} | {g['MyoPS DC'].mean():.3f} | "
                     f"{', '.join('-' if pd.isna(b) else str(int(b)) for b in g['best step'])} | "
                     f"{g['minutes'].sum():.1f} |")
    lines += ["", "Against `source`, paired over patients (each patient's Dice AVG averaged over seeds):", "",
              "| row | select | test set | patients | mean difference (rule - source) | p (Wilcoxon) | smallest p |",
              "|---|---|---|---|---|---|---|"]
    for row, g in df.groupby("row", sort=False):
        base = g[g["select"] == "source"]
        for rule in RULES[1:]:
            other = g[g["select"] == rule]
            if other.empty or base.empty:
                continue
            for name, col in (("LGE 1-5", "_lge"), ("MyoPS 111-120", "_myops")):
                a = pd.concat(list(other[col]), axis=1).mean(axis=1)
                b = pd.concat(list(base[col]), axis=1).mean(axis=1)
                t = wilcoxon(a, b)
                lines.append(f"| {row} | {rule} | {name} | {t['patients']} | {t['mean difference']:+.3f} | "
                             f"{t['p (Wilcoxon)']:.3g} | {min_attainable_p(t['patients']):.3g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="real")
    ap.add_argument("--rows", nargs="+", default=["0:none"], help="setting:stylizer, e.g. 0:none 0:slaug")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--work", default=str(repo_root() / "build" / "select_cost"))
    args = ap.parse_args(argv)
    rows = [(int(r.split(":")[0]), r.split(":")[1]) for r in args.rows]
    df = run(args.profile, rows, args.seeds, Path(args.work))
    write_text(OUT.with_suffix(".csv"), df.drop(columns=["_lge", "_myops"]).to_csv(index=False, float_format="%.4f"))
    text = report(df, args.profile)
    write_text(OUT.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
