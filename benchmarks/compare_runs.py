"""Two reproductions of the same Table 2/3 rows side by side, e.g. before and after a change meant only to
make `make reproduce` faster: per row, each side's seed mean of DC AVG and HD AVG, the difference, and
Welch's t-test over the seeds, so "within seed noise" is a measured call rather than a reading by eye.

Each side is a results folder that holds `runs/*/run.json` (and, where present, `reproduce.json`, whose
wall time gives the speed-up). Rows missing on either side are listed, not compared.

    python benchmarks/compare_runs.py --before DIR [--before-profile P] --after DIR [--after-profile P]
        [--before-steps steps.json --after-steps steps.json] [--jobs 2] [--seeds 0 ...] [--alpha 0.05] [--out ...]

`--before-steps`/`--after-steps` take each side's ledger of step seconds (results/notebooks/<profile>/steps.json):
the one-seed wall time is then modelled from it the same way on both sides, for runs whose own wall time
covers more seeds or shared the machine. `--seeds` keeps only those seeds' records on both sides (a one-seed
rerun against a three-seed run: compare seed 0 with seed 0, not with a three-seed mean).
"""
from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_row import save  # noqa: E402

from cmr_lib.core.errors import CmrError  # noqa: E402
from cmr_lib.core.grid import label, table_rows  # noqa: E402
from cmr_lib.report.tables import row_values, by_row, load_runs  # noqa: E402
from cmr_lib.pipeline.plan import read_ledger, seed_of  # noqa: E402

METRICS = ("DC AVG", "HD AVG")


def seed_values(records: list[dict]) -> dict[tuple, dict[str, list[float]]]:
    """{row key: {metric: one value per seed, in seed order}} from run records (the patients Table 2 reports)."""
    out = {}
    for key, recs in by_row(records).items():
        recs = sorted(recs, key=lambda r: r.get("seed", 0))
        vals = [row_values(r) for r in recs]
        # a structure a network never predicts has no HD (None): NaN, so its row's HD mean is undefined, not wrong
        out[key] = {m: [float("nan") if v[m] is None else float(v[m]) for v in vals] for m in METRICS} \
            | {"seeds": [r.get("seed") for r in recs]}
    return out


def welch(a: list[float], b: list[float]) -> float:
    """Two-sided p of Welch's t-test between two sets of seed values (NaN with fewer than 2 on a side or no spread)."""
    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def identical_seeds(before: list[dict], after: list[dict]) -> dict:
    """How many (row, seed) runs on both sides gave the same per-patient metrics bit for bit: all of them when
    the change was meant to keep every float (or the same code was run again), since one seed fixes a CPU run."""
    def keyed(records):
        return {(key, r.get("seed", 0)): r.get("metrics") for key, recs in by_row(records).items() for r in recs}
    b, a = keyed(before), keyed(after)
    common = [k for k in b if k in a]
    return {"pairs": len(common), "identical": sum(b[k] == a[k] for k in common)}


def compare(before: list[dict], after: list[dict], *, alpha: float = 0.05) -> dict:
    """Per row present on both sides: seed means, difference (after - before), Welch p and whether it is
    within seed noise (p >= alpha on every metric); then the shift over all rows (Wilcoxon of the row
    differences), which catches a small change common to every row that no single row can show."""
    b, a = seed_values(before), seed_values(after)
    order = [k for k in dict.fromkeys(table_rows("table2") + table_rows("table3")) if k in b or k in a]
    rows, missing = [], []
    for key in order:
        if key not in b or key not in a:
            missing.append({"row": label(key), "side": "after" if key in b else "before"})
            continue
        row = {"row": label(key), "seeds_before": b[key]["seeds"], "seeds_after": a[key]["seeds"]}
        for m in METRICS:
            row[m] = {"before": float(np.mean(b[key][m])), "after": float(np.mean(a[key][m])),
                      "sd_before": _sd(b[key][m]), "sd_after": _sd(a[key][m]), "p": welch(b[key][m], a[key][m])}
            row[m]["diff"] = row[m]["after"] - row[m]["before"]
        testable = min(len(b[key]["seeds"]), len(a[key]["seeds"])) >= 2
        # one seed on a side has no noise to compare with: the row is untested (None), not passed
        row["within_noise"] = all(not (row[m]["p"] < alpha) for m in METRICS) if testable else None
        rows.append(row)
    if not rows:
        raise CmrError("no row was run on both sides; compare reproductions of the same rows")
    shift = {}
    for m in METRICS:
        d = [r[m]["diff"] for r in rows if not np.isnan(r[m]["diff"])]
        p = float(stats.wilcoxon(d).pvalue) if len(d) >= 6 and any(d) else float("nan")
        shift[m] = {"mean_diff": float(np.mean(d)), "rows": len(d), "p": p}
    verdicts = [r["within_noise"] for r in rows]
    if False in verdicts or any(s["p"] < alpha for s in shift.values()):
        overall = False
    else:
        overall = None if None in verdicts else True
    return {"alpha": alpha, "rows": rows, "missing": missing, "shift": shift, "within_noise": overall,
            "same_seed": identical_seeds(before, after)}


def wall_time(results_dir: Path) -> dict | None:
    """Wall time and summed step times of the folder's last `make reproduce`, if it wrote reproduce.json."""
    path = Path(results_dir) / "reproduce.json"
    if not path.exists():
        return None
    try:
        rep = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CmrError(f"{path}: not valid JSON") from None
    return {k: rep.get(k) for k in ("profile", "seeds", "jobs", "total_seconds", "total_seconds_when_run")}


def modelled_wall(ledger: dict, jobs: int = 2) -> dict:
    """One seed's `make reproduce` time from a steps ledger (name -> {seconds, parallel}): its steps are
    those without a _seedN suffix (the run's first seed); the sequential ones add up, the parallel ones
    are packed longest first onto `jobs` slots. A model (the driver orders rows by a cost guess), so compare
    both sides with it, and it against a measured wall time."""
    steps = {n: e for n, e in ledger.items() if seed_of(n) is None}
    if not steps:
        raise CmrError("the steps ledger has no steps of a first seed (every name ends in _seedN)")
    try:
        serial = sum(float(e["seconds"]) for e in steps.values() if not e.get("parallel"))
        rows = sorted((float(e["seconds"]) for e in steps.values() if e.get("parallel")), reverse=True)
    except (KeyError, TypeError, ValueError):
        raise CmrError("a steps ledger entry has no numeric 'seconds'") from None
    slots = [0.0] * max(1, jobs)
    for t in rows:
        heapq.heapreplace(slots, slots[0] + t)
    return {"steps": len(steps), "serial_seconds": round(serial, 1), "rows": len(rows),
            "rows_seconds_summed": round(sum(rows), 1), "jobs": jobs,
            "total_seconds": round(serial + max(slots), 1)}


def steps_ledger(path: Path) -> dict:
    """A steps.json ledger that must exist (plan.read_ledger reads it)."""
    if not Path(path).is_file():
        raise CmrError(f"{path}: no such steps ledger")
    return read_ledger(path)


NOISE_WORD = {True: "yes", False: "**no**", None: "untested (1 seed)"}
VERDICT = {True: "every row and the overall shift are within seed noise.",
           False: "**not within seed noise** (rows marked no, or the overall shift).",
           None: "not judged: some rows have one seed on a side, so their seed noise is unknown (run SEEDS=3)."}


def _pm(mean: float, sd: float, d: int) -> str:
    return f"{mean:.{d}f}" + ("" if np.isnan(sd) else f" ± {sd:.{d}f}")


def markdown(result: dict) -> str:
    lines = [f"# {result['labels'][0]} against {result['labels'][1]}", "",
             "Seed mean ± seed SD on the patients Table 2 reports; Δ = after - before; p: Welch's t-test over seeds.", "",
             "| row | seeds | DC AVG before | DC AVG after | Δ DC | p | HD AVG before | HD AVG after | Δ HD (mm) | p | within noise |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        dc, hd = r["DC AVG"], r["HD AVG"]
        lines.append(f"| {r['row']} | {len(r['seeds_before'])}/{len(r['seeds_after'])} "
                     f"| {_pm(dc['before'], dc['sd_before'], 3)} | {_pm(dc['after'], dc['sd_after'], 3)} | {dc['diff']:+.3f} "
                     f"| {dc['p']:.3g} | {_pm(hd['before'], hd['sd_before'], 1)} | {_pm(hd['after'], hd['sd_after'], 1)} "
                     f"| {hd['diff']:+.1f} | {hd['p']:.3g} | {NOISE_WORD[r['within_noise']]} |")
    lines += ["", "Shift over all rows (Wilcoxon signed-rank of the row differences):", ""]
    lines += [f"- {m}: mean Δ {s['mean_diff']:+.3f} over {s['rows']} rows, p {s['p']:.3g}" for m, s in result["shift"].items()]
    lines += [f"- missing on the {x['side']} side: {x['row']}" for x in result["missing"]]
    if any(np.isnan(r[m]["diff"]) for r in result["rows"] for m in METRICS):
        lines.append("- nan: in at least one seed a network never predicted a structure, so that seed's HD AVG is "
                     "undefined (its Dice for the structure is 0); such rows are left out of the shift")
    same = result["same_seed"]
    lines.append(f"- the same row and seed on both sides: {same['identical']} of {same['pairs']} gave identical "
                 f"per-patient metrics, bit for bit")
    for side, label in zip(("before", "after"), result["labels"]):
        w = result["wall"][side]
        if w:
            lines.append(f"- {label}: wall {w['total_seconds']:.0f} s for its last invocation, "
                         f"steps summed {w['total_seconds_when_run']:.0f} s (jobs {w['jobs']}, seeds {w['seeds']})")
    wb, wa = result["wall"]["before"], result["wall"]["after"]
    if wb and wa and wb.get("total_seconds") and wa.get("total_seconds"):
        lines.append(f"- wall time after / before: {wa['total_seconds'] / wb['total_seconds']:.2f}")
    model = result.get("modelled", {})
    for side, label in zip(("before", "after"), result["labels"]):
        m = model.get(side)
        if m:
            lines.append(f"- {label}, one seed modelled from its steps' seconds: {m['total_seconds']:.0f} s "
                         f"({m['total_seconds'] / 60:.1f} min: {m['serial_seconds']:.0f} s of sequential steps, "
                         f"{m['rows']} rows of {m['rows_seconds_summed']:.0f} s on {m['jobs']} slots)")
    if model.get("before") and model.get("after"):
        lines.append(f"- modelled one-seed time after / before: "
                     f"{model['after']['total_seconds'] / model['before']['total_seconds']:.2f}")
    lines += ["", "Verdict: " + VERDICT[result["within_noise"]]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="results folder of the reference reproduction")
    ap.add_argument("--after", required=True, help="results folder of the changed one")
    ap.add_argument("--before-profile", default=None)
    ap.add_argument("--after-profile", default=None)
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--after-label", default="after")
    ap.add_argument("--before-steps", default=None, help="the before side's steps.json (a one-seed time is modelled)")
    ap.add_argument("--after-steps", default=None, help="the after side's steps.json")
    ap.add_argument("--jobs", type=int, default=2, help="parallel slots of the modelled time (make reproduce's JOBS)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="compare only these seeds' records")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out", default="benchmarks/results/compare_runs", help="output stem (.md and .json)")
    args = ap.parse_args(argv)
    before = load_runs(args.before, profile=args.before_profile)
    after = load_runs(args.after, profile=args.after_profile)
    if args.seeds is not None:
        before, after = ([r for r in side if r.get("seed", 0) in args.seeds] for side in (before, after))
    result = compare(before, after, alpha=args.alpha)
    result["labels"] = [args.before_label, args.after_label]
    result["wall"] = {"before": wall_time(Path(args.before)), "after": wall_time(Path(args.after))}
    result["modelled"] = {side: modelled_wall(steps_ledger(f), args.jobs)
                          for side, f in (("before", args.before_steps), ("after", args.after_steps)) if f}
    save(Path(args.out), result, markdown(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except CmrError as exc:
        sys.exit(f"compare_runs: {exc}")
