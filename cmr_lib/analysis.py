"""Notebook 06: Tables 2 and 3, the paper's claims checked, and the summary figures, from run.json files.

Every number here comes from `results/runs/*/run.json` (written by `experiment.run_setting`); the
figures that need images also read the data set and the runs' saved predictions and stylizers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_lib.errors import CmrError
from cmr_lib.evaluate import STRUCTURES

# Table 2's rows in the paper's order: (setting, stylizer, epsilon iterations); Table 3: RAIN, setting 1
PAPER_ROWS = [(0, "none", 0), (1, "rain", 5), (1, "adaconv", 0), (2, "rain", 5), (2, "adaconv", 0),
              (3, "rain", 5), (3, "adaconv", 0)]
# Our baseline rows (issue 7; not in the paper): appearance augmentations, and a stylizer + intensity
BASELINE_ROWS = [(0, "intensity", 0), (0, "gin", 0), (2, "histmatch", 0), (3, "histmatch", 0),
                 (1, "rain+intensity", 5), (2, "rain+intensity", 5), (3, "rain+intensity", 5),
                 (1, "adaconv+intensity", 0), (2, "adaconv+intensity", 0), (3, "adaconv+intensity", 0)]
TABLE2_ROWS = PAPER_ROWS + BASELINE_ROWS
TABLE3_ROWS = [(1, "rain", 1), (1, "rain", 3), (1, "rain", 5)]
STYLIZER_NAMES = {"none": "none", "rain": "RAIN", "adaconv": "AdaConv", "histmatch": "histmatch",
                  "intensity": "intensity", "gin": "GIN", "rain+intensity": "RAIN + intensity",
                  "adaconv+intensity": "AdaConv + intensity"}
STYLE_TRANSFER = ("RAIN", "AdaConv")
APPEARANCE_BASELINES = ("histmatch", "intensity", "GIN")
METRIC_NAMES = {"dice": "DC", "hd": "HD", "hd95": "HD95", "assd": "ASSD"}


def load_runs(results_dir, *, profile: str | None = None, seed: int | list | None = None,
              data_root: str | None = None, allow_mixed: bool = False) -> list[dict]:
    """The run.json records under results_dir/runs (optionally one profile, one seed or a list of seeds, and
    one data source: the `data.root` its records name).

    Runs from different profiles or data sources never share a table unless `allow_mixed`: a one-line
    error names what differs.
    """
    runs_dir = Path(results_dir) / "runs"
    records = []
    for path in sorted(runs_dir.glob("*/run.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CmrError(f"{path}: not a readable run record ({exc.__class__.__name__})") from None
        if not isinstance(rec, dict) or not {"setting", "stylizer", "summary", "profile", "data"} <= set(rec):
            raise CmrError(f"{path}: not a run record (needs setting, stylizer, summary, profile and data)")
        seeds = None if seed is None else (list(seed) if isinstance(seed, (list, tuple)) else [seed])
        if (profile is None or rec["profile"] == profile) and (seeds is None or rec.get("seed") in seeds) \
                and (data_root is None or str(rec["data"].get("root")) == str(data_root)):
            rec["_path"] = str(path)
            records.append(rec)
    if not records:
        raise CmrError(f"{runs_dir}: no run.json" + (f" for profile {profile!r}" if profile else "")
                       + "; run notebooks/05_settings.ipynb (or make reproduce) first")
    if not allow_mixed:
        for key, get in (("profiles", lambda r: r["profile"]), ("data sources", lambda r: r["data"]["root"])):
            kinds = sorted({str(get(r)) for r in records})
            if len(kinds) > 1:
                raise CmrError(f"{runs_dir}: runs from several {key} ({', '.join(kinds)}); choose one "
                               f"(profile=...) or pass allow_mixed=True")
    return records


def part_of(record: dict) -> str:
    """Which patients a run's table row reports: the labelled test patients, else the validation ones
    (the MS-CMRSeg copy withholds its test labels, as the challenge did)."""
    return "test" if record["summary"].get("test") else "val"


def _row_values(record: dict) -> dict:
    part = part_of(record)
    s = record["summary"][part]
    row = {"patients": part, "cases": s["dice"]["cases"]}
    for metric, name in METRIC_NAMES.items():
        for k in (*STRUCTURES, "AVG", "STD"):
            row[f"{name} {k}"] = s[metric][k]
    return row


def row_key(record: dict) -> tuple:
    """(setting, stylizer, epsilon iterations) of a run: its row in Table 2 or 3."""
    eps = record.get("epsilon_iterations", 0) if _uses_rain(record["stylizer"]) else 0
    return (int(record["setting"]), record["stylizer"], int(eps))


def _uses_rain(stylizer: str) -> bool:
    return stylizer.split("+")[0] == "rain"


def table(records: list[dict], rows=TABLE2_ROWS) -> pd.DataFrame:
    """One row per (setting, stylizer, epsilon) in `rows` order, numbers averaged over seeds (with the
    seed count); rows without a run are left out. Columns: DC/HD/HD95/ASSD per structure, AVG, STD."""
    by_key: dict[tuple, list[dict]] = {}
    for rec in records:
        by_key.setdefault(row_key(rec), []).append(rec)
    out = []
    for key in rows:
        recs = by_key.get(key)
        if not recs:
            continue
        vals = pd.DataFrame([_row_values(r) for r in recs])
        if vals["patients"].nunique() > 1:
            raise CmrError(f"runs of setting {key[0]}, {key[1]} report different patient sets; rerun them alike")
        row = {"setting": key[0], "stylizer": STYLIZER_NAMES[key[1]], "epsilon": key[2] if _uses_rain(key[1]) else None,
               "seeds": len(recs), "patients": vals["patients"].iloc[0], "cases": int(vals["cases"].iloc[0])}
        nums = vals.drop(columns=["patients", "cases"]).astype(float)
        row.update(nums.mean().to_dict())
        if len(recs) > 1:
            row.update({f"{c} ci95": v for c, v in ci95(nums).items()})
        out.append(row)
    if not out:
        raise CmrError("no run matches a row of this table; run notebooks/05_settings.ipynb for them first")
    return pd.DataFrame(out)


def ci95(values: pd.DataFrame) -> pd.Series:
    """Half-width of the 95 % confidence interval of each column's mean over rows (seeds): Student's t
    with n - 1 degrees of freedom, n the column's finite values (NaN when fewer than 2)."""
    from scipy import stats

    n = values.notna().sum()
    half = values.std(ddof=1) / np.sqrt(n) * pd.Series(stats.t.ppf(0.975, np.maximum(n - 1, 1)), index=n.index)
    return half.where(n >= 2)


def markdown(df: pd.DataFrame, *, extra=("HD95", "ASSD")) -> str:
    """The paper's layout: DC per structure and AVG ± STD, HD (mm) likewise, then AVG of extra metrics.

    With several seeds in a row, each per-structure and AVG cell is "mean ± 95 % CI over seeds" and STD
    (over structures) gets its own column."""
    if "seeds" in df and df["seeds"].max() > 1:
        return _markdown_seeds(df, extra)
    head = ["setting", "stylizer", "ε"]
    cols = [f"DC {k}" for k in STRUCTURES] + ["DC AVG ± STD"] + [f"HD {k}" for k in STRUCTURES] + \
        ["HD AVG ± STD"] + [f"{m} AVG" for m in extra]
    lines = ["| " + " | ".join(head + cols) + " |", "|" + "---|" * (len(head) + len(cols))]

    def f(v, d):
        return "nan" if v is None or not np.isfinite(v) else f"{v:.{d}f}"

    for _, r in df.iterrows():
        eps = "" if r["epsilon"] is None or pd.isna(r["epsilon"]) else str(int(r["epsilon"]))
        cells = [str(r["setting"]), r["stylizer"], eps]
        for name, d in (("DC", 3), ("HD", 1)):
            cells += [f(r[f"{name} {k}"], d) for k in STRUCTURES]
            cells.append(f"{f(r[f'{name} AVG'], d)} ± {f(r[f'{name} STD'], d)}")
        cells += [f(r[f"{m} AVG"], 1) for m in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _markdown_seeds(df: pd.DataFrame, extra) -> str:
    head = ["setting", "stylizer", "ε", "seeds"]
    cols = [f"{n} {k}" for n in ("DC", "HD") for k in (*STRUCTURES, "AVG", "STD")] + [f"{m} AVG" for m in extra]
    lines = ["| " + " | ".join(head + cols) + " |", "|" + "---|" * (len(head) + len(cols))]

    def f(r, col, d):
        v, h = r.get(col), r.get(f"{col} ci95")
        if v is None or not np.isfinite(v):
            return "nan"
        return f"{v:.{d}f}" + (f" ± {h:.{d}f}" if h is not None and np.isfinite(h) else "")

    for _, r in df.iterrows():
        eps = "" if r["epsilon"] is None or pd.isna(r["epsilon"]) else str(int(r["epsilon"]))
        cells = [str(r["setting"]), r["stylizer"], eps, str(int(r["seeds"]))]
        for name, d in (("DC", 3), ("HD", 1)):
            cells += [f(r, f"{name} {k}", d) for k in (*STRUCTURES, "AVG")]
            cells.append(f"{r[f'{name} STD']:.{d}f}" if np.isfinite(r[f"{name} STD"]) else "nan")
        cells += [f(r, f"{m} AVG", 1) for m in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nCells: mean ± 95 % confidence interval over seeds (Student's t); STD: spread " \
        "over the three structures, averaged over seeds.\n"


def write_table(df: pd.DataFrame, out_stem) -> tuple[Path, Path]:
    """results/<name>.csv (all numbers) and .md (the paper's layout), atomically."""
    from cmr_lib.atomic import write_text

    out_stem = Path(out_stem)
    csv = write_text(out_stem.with_suffix(".csv"), df.to_csv(index=False, float_format="%.4f"))
    md = write_text(out_stem.with_suffix(".md"), markdown(df))
    return Path(csv), Path(md)


# ---------------------------------------------------------------------------------------------
# the paper's numbers and claims

def paper_tables(path=None) -> dict:
    """The paper's Table 2 and 3 values as transcribed in params/paper_tables.yaml (null = not transcribed)."""
    import yaml

    from cmr_lib.params import repo_root

    path = Path(path) if path else repo_root() / "params" / "paper_tables.yaml"
    if not path.is_file():
        raise CmrError(f"{path}: the paper's tables file is missing")
    data = yaml.safe_load(path.read_text()) or {}
    for t in ("table2", "table3"):
        if not isinstance(data.get(t), list):
            raise CmrError(f"{path}: needs a list '{t}' of rows")
    return data


def compare_with_paper(ours: pd.DataFrame, paper_rows: list[dict], metrics=("DC AVG", "HD AVG")) -> pd.DataFrame:
    """Ours beside the paper's values, row by row, with the differences (ours - paper); rows or values the
    paper file does not give stay empty (NaN)."""
    out = []
    for _, r in ours.iterrows():
        match = next((p for p in paper_rows if int(p["setting"]) == int(r["setting"])
                      and str(p["stylizer"]).lower() == r["stylizer"].lower()
                      and (r["stylizer"] != "RAIN" or int(p.get("epsilon") or 5) == int(r["epsilon"]))), {})
        row = {"setting": r["setting"], "stylizer": r["stylizer"], "epsilon": r["epsilon"]}
        for m in metrics:
            theirs = match.get(m)
            theirs = float(theirs) if theirs is not None else float("nan")
            row[f"{m} ours"], row[f"{m} paper"] = r[m], theirs
            row[f"{m} difference"] = r[m] - theirs
        out.append(row)
    return pd.DataFrame(out)


def _get(df, setting, stylizer, col, epsilon=None):
    sel = df[(df["setting"] == setting) & (df["stylizer"] == stylizer)]
    if epsilon is not None:
        sel = sel[sel["epsilon"] == epsilon]
    return float(sel[col].iloc[0]) if len(sel) else float("nan")


def claims(t2: pd.DataFrame, t3: pd.DataFrame | None = None, *, central_margin: float = 0.10,
           hd_margin: float = 0.20) -> pd.DataFrame:
    """The paper's claims, each checked on our tables: holds (True/False, None when rows are missing) and the
    numbers behind the verdict. "Far below" means at least `hd_margin` (relative) below, in every setting
    where both HDs are defined."""
    rows = []
    claim = f"RAIN's HD is far (at least {hd_margin:.0%}) below AdaConv's in every stylized setting"
    settings = [s for s in (1, 2, 3) if np.isfinite(_get(t2, s, "RAIN", "HD AVG"))
                and np.isfinite(_get(t2, s, "AdaConv", "HD AVG"))]
    undefined = [s for s in (1, 2, 3) if s not in settings and len(t2[t2["setting"] == s]) == 2]
    note = "".join(f"; setting {s}: HD undefined (a structure never predicted)" for s in undefined)
    if settings:
        rel = {s: 1 - _get(t2, s, "RAIN", "HD AVG") / _get(t2, s, "AdaConv", "HD AVG") for s in settings}
        rows.append({"claim": claim, "holds": all(r >= hd_margin for r in rel.values()),
                     "evidence": "; ".join(f"setting {s}: RAIN {_get(t2, s, 'RAIN', 'HD AVG'):.1f} mm vs AdaConv "
                                           f"{_get(t2, s, 'AdaConv', 'HD AVG'):.1f} mm "
                                           f"({abs(r):.0%} {'below' if r >= 0 else 'above'})"
                                           for s, r in rel.items()) + note})
    else:
        rows.append({"claim": claim, "holds": None, "evidence": "no setting has both stylizers' HD" + note})
    a = {s: _get(t2, s, "AdaConv", "DC AVG") for s in (1, 2, 3)}
    ok = all(np.isfinite(v) for v in a.values())
    rows.append({"claim": "AdaConv improves from setting 1 to settings 2 and 3 (Dice)",
                 "holds": (a[2] > a[1] and a[3] > a[1]) if ok else None,
                 "evidence": ", ".join(f"setting {s}: {v:.3f}" for s, v in a.items()) if ok else "rows missing"})
    if t3 is not None and len(t3) >= 2:
        t3s = t3.sort_values("epsilon")
        dc = t3s["DC AVG"].to_numpy()
        rows.append({"claim": "RAIN improves with more epsilon iterations (Table 3, Dice)",
                     "holds": bool(np.all(np.diff(dc) >= 0)),
                     "evidence": ", ".join(f"ε {int(e)}: {v:.3f}" for e, v in zip(t3s["epsilon"], dc))})
    else:
        rows.append({"claim": "RAIN improves with more epsilon iterations (Table 3, Dice)", "holds": None,
                     "evidence": "Table 3 rows missing"})
    base = _get(t2, 0, "none", "DC AVG")
    stylized = t2[t2["stylizer"].isin(STYLE_TRANSFER)]
    if np.isfinite(base) and len(stylized):
        best = stylized.loc[stylized["DC AVG"].idxmax()]
        gain = float(best["DC AVG"]) - base
        rows.append({"claim": f"stylization beats no stylization by at least {central_margin:.2f} Dice (best row)",
                     "holds": bool(gain >= central_margin),
                     "evidence": f"setting 0: {base:.3f}; best: setting {int(best['setting'])} {best['stylizer']} "
                                 f"{float(best['DC AVG']):.3f} ({gain:+.3f})"})
    return pd.DataFrame(rows, dtype=object)


def claims_markdown(verdicts: pd.DataFrame) -> str:
    """The claims as a markdown list: claim, verdict, evidence."""
    mark = {True: "holds", False: "does not hold", None: "cannot tell (rows missing)"}
    return "".join(f"- {v['claim']}: **{mark[None if pd.isna(v['holds']) else bool(v['holds'])]}** ({v['evidence']})\n"
                   for _, v in verdicts.iterrows())


# ---------------------------------------------------------------------------------------------
# paired tests over patients and the written reading of the baselines

def patient_scores(records: list[dict], metric: str = "dice") -> pd.Series:
    """Per patient (case), the mean of `metric` over MYO, LV and RV, averaged over the runs (seeds) given.
    NaN where a structure's value is undefined (e.g. HD of a structure never predicted)."""
    cols = []
    for rec in records:
        df = pd.DataFrame(rec["metrics"][part_of(rec)])
        if df.empty:
            continue
        wide = df.set_index(["case", "structure"])[metric].astype(float).unstack()
        cols.append(wide.reindex(columns=list(STRUCTURES)).mean(axis=1, skipna=False))
    return pd.concat(cols, axis=1).mean(axis=1, skipna=False) if cols else pd.Series(dtype=float)


def wilcoxon(a: pd.Series, b: pd.Series) -> dict:
    """Paired two-sided Wilcoxon signed-rank test of a - b over the cases both have (finite values)."""
    from scipy import stats

    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = both["a"] - both["b"]
    out = {"patients": int(len(d)), "mean difference": float(d.mean()) if len(d) else float("nan"),
           "p (Wilcoxon)": float("nan")}
    if len(d) >= 2 and (d != 0).any():
        out["p (Wilcoxon)"] = float(stats.wilcoxon(both["a"], both["b"]).pvalue)
    return out


def comparisons(present: list[tuple]) -> list[tuple[tuple, tuple]]:
    """The pairs the paper and the baselines ask about, among the rows present: every row against setting 0;
    RAIN against AdaConv in each setting; each stylizer + intensity against the stylizer alone and against
    intensity alone."""
    s0, out = (0, "none", 0), []
    out += [(k, s0) for k in present if k != s0 and s0 in present]
    for s in (1, 2, 3):
        rain = next((k for k in present if k[:2] == (s, "rain")), None)
        if rain and (s, "adaconv", 0) in present:
            out.append((rain, (s, "adaconv", 0)))
        for k in present:
            if k[0] == s and k[1].endswith("+intensity"):
                alone = next((j for j in present if j[:2] == (s, k[1].split("+")[0])), None)
                out += [(k, j) for j in (alone, (0, "intensity", 0)) if j in present]
    return out


def paired_tests(records: list[dict], rows=TABLE2_ROWS, metrics=("dice", "hd")) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests over test (else validation) patients for `comparisons`: per patient
    the mean over structures, averaged over seeds. Columns: row, against, metric, patients, mean difference
    (row - against), p."""
    by_key: dict[tuple, list[dict]] = {}
    for rec in records:
        by_key.setdefault(row_key(rec), []).append(rec)
    present = [k for k in rows if k in by_key]
    out = []
    for a, b in comparisons(present):
        for m in metrics:
            out.append({"row": _label(a), "against": _label(b), "metric": f"{METRIC_NAMES[m]} AVG",
                        **wilcoxon(patient_scores(by_key[a], m), patient_scores(by_key[b], m))})
    return pd.DataFrame(out, columns=["row", "against", "metric", "patients", "mean difference", "p (Wilcoxon)"])


def tests_markdown(tests: pd.DataFrame) -> str:
    """The paired tests as a markdown table (differences: row minus the row it is compared with)."""
    lines = ["| row | against | metric | patients | mean difference | p (Wilcoxon) |", "|---|---|---|---|---|---|"]
    for _, t in tests.iterrows():
        d = 3 if t["metric"].startswith("DC") else 1
        diff = "nan" if not np.isfinite(t["mean difference"]) else f"{t['mean difference']:+.{d}f}"
        p = "nan" if not np.isfinite(t["p (Wilcoxon)"]) else f"{t['p (Wilcoxon)']:.3g}"
        lines.append(f"| {t['row']} | {t['against']} | {t['metric']} | {t['patients']} | {diff} | {p} |")
    return "\n".join(lines) + "\n"


def baseline_reading(t2: pd.DataFrame, tests: pd.DataFrame, records: list[dict], *, data: str = "the phantom",
                     alpha: float = 0.05) -> str:
    """A written reading of the baselines, from the numbers: where style transfer beats appearance
    augmentation, where it does not, and by how much (Dice AVG; p from paired Wilcoxon tests)."""
    st = t2[t2["stylizer"].isin(STYLE_TRANSFER)]
    bl = t2[t2["stylizer"].isin(APPEARANCE_BASELINES)]
    s0 = _get(t2, 0, "none", "DC AVG")
    if st.empty or bl.empty:
        return f"On {data}: the table lacks style-transfer or baseline rows; nothing to compare.\n"

    def signed(v, d=3):
        return f"{round(v, d) + 0.0:+.{d}f}"

    def verdict(p):
        return "n/a" if not np.isfinite(p) else ("significant" if p < alpha else "not significant") + f", p = {p:.3g}"

    by_key: dict[tuple, list[dict]] = {}
    for rec in records:
        by_key.setdefault(row_key(rec), []).append(rec)
    best_st, best_bl = st.loc[st["DC AVG"].idxmax()], bl.loc[bl["DC AVG"].idxmax()]
    w = wilcoxon(patient_scores(by_key[_key_of(best_st)]), patient_scores(by_key[_key_of(best_bl)]))
    lines = [f"On {data} ({int(best_st['cases'])} {best_st['patients']} patients, setting 0 Dice {s0:.3f}):"]
    lines.append(f"- Best style transfer: {_label(_key_of(best_st))}, Dice {best_st['DC AVG']:.3f}; best appearance "
                 f"baseline: {_label(_key_of(best_bl))}, Dice {best_bl['DC AVG']:.3f}. Difference "
                 f"{signed(best_st['DC AVG'] - best_bl['DC AVG'])} ({verdict(w['p (Wilcoxon)'])}; both rows picked "
                 f"as the best of their group on these same patients, so the p-value is optimistic).")
    beats = [f"{_label(_key_of(r))} ({r['DC AVG']:.3f})" for _, r in st.iterrows() if r["DC AVG"] > best_bl["DC AVG"]]
    lines.append(f"- Style-transfer rows above the best baseline: {', '.join(beats) if beats else 'none'}.")
    for _, r in bl.iterrows():
        t = tests[(tests["row"] == _label(_key_of(r))) & (tests["metric"] == "DC AVG")
                  & (tests["against"] == "setting 0 (none)")]
        p = float(t["p (Wilcoxon)"].iloc[0]) if len(t) else float("nan")
        lines.append(f"- {_label(_key_of(r))} against setting 0: {signed(r['DC AVG'] - s0)} Dice ({verdict(p)}).")
    for _, r in t2[t2["stylizer"].str.endswith("+ intensity")].iterrows():
        alone = _get(t2, int(r["setting"]), r["stylizer"].split(" +")[0], "DC AVG")
        t = tests[(tests["row"] == _label(_key_of(r))) & (tests["metric"] == "DC AVG")
                  & (~tests["against"].str.contains("intensity")) & (tests["against"] != "setting 0 (none)")]
        p = float(t["p (Wilcoxon)"].iloc[0]) if len(t) else float("nan")
        lines.append(f"- Adding intensity to {r['stylizer'].split(' +')[0]} in setting {int(r['setting'])}: "
                     f"{signed(r['DC AVG'] - alone)} Dice ({verdict(p)}).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# cross-dataset check: networks trained on one data set, scored on the others' LGE

DATA_NAMES = {"phantom": "phantom", "mscmrseg": "MS-CMRSeg 2019", "myops": "MyoPS 2020"}


def other_sources(own, *, real=None, phantom_dir=None) -> dict:
    """The data sets to test on besides the runs' own: the real sample sets found (data.find_real_data, or
    `real` = {name: folder}) and the phantom (`phantom_dir`), minus the runs' own source."""
    from cmr_lib.data import find_real_data, open_source

    found = dict(find_real_data() if real is None else real)
    if phantom_dir is not None and Path(phantom_dir).is_dir():
        found["phantom"] = Path(phantom_dir)
    out = {}
    for key, folder in found.items():
        src = open_source(folder)
        if Path(src.root).resolve() != Path(own.root).resolve() and src.patients_with("LGE", labelled=True):
            out[DATA_NAMES.get(src.name, src.name)] = src
    return out


def cross_dataset(records: list[dict], own, others: dict, make_cfg, rows=TABLE2_ROWS) -> pd.DataFrame:
    """Each Table 2 row's DRU-Net (one run per row), trained on `own`, scored on every labelled LGE volume
    of each data set in `others` (networks never saw them); its own data set's column is its table value.

    make_cfg(record) returns the run's Config (for crop, spacing and the network's size). Columns:
    setting, stylizer, epsilon, then '<data> DC' and '<data> HD' (AVG over MYO, LV, RV), with the patient
    counts in df.attrs['patients']."""
    from cmr_lib.evaluate import COLUMNS, summarize
    from cmr_lib.inference import predict_volume
    from cmr_lib.metrics import evaluate_volume
    from cmr_lib.params import repo_root
    from cmr_lib.train import build_segmenter, load_checkpoint

    by_key, present = _first_run_per_row(records, rows)
    volumes = {name: [src.load(p, "LGE", label="require") for p in src.patients_with("LGE", labelled=True)]
               for name, src in others.items()}                     # read once, scored by every network
    own_name = DATA_NAMES.get(own.name, own.name)
    counts, out = {}, []
    for key in present:
        rec = by_key[key]
        s, k, e = key
        part = part_of(rec)
        summ = rec["summary"][part]
        own_col = f"{own_name} ({'own ' + part})"
        counts[own_col] = summ["dice"]["cases"]
        row = {"setting": s, "stylizer": STYLIZER_NAMES[k], "epsilon": e if _uses_rain(k) else None,
               f"{own_col} DC": _num(summ["dice"]["AVG"]), f"{own_col} HD": _num(summ["hd"]["AVG"])}
        cfg = make_cfg(rec)
        ckpt = Path(rec["segmenter"]["checkpoint"])
        ckpt = (ckpt if ckpt.is_absolute() else repo_root() / ckpt) / "final.pt"
        model = build_segmenter(cfg)
        load_checkpoint(ckpt, model=model)
        model.eval()
        pre = cfg.sizes.preprocess
        for name, vols in volumes.items():
            scores = []
            for vol in vols:
                pred = predict_volume(model, vol, crop=cfg.crop, spacing_mm=pre.spacing_mm,
                                      percentiles=tuple(pre.percentiles))
                scores += [{"case": vol.image_path.name, "structure": st, **v}
                           for st, v in evaluate_volume(pred, vol.label, vol.spacing).items()]
            df = pd.DataFrame(scores, columns=COLUMNS)
            m = summarize(df)
            counts[name] = int(df["case"].nunique())
            row[f"{name} DC"], row[f"{name} HD"] = float(m.loc["dice", "AVG"]), float(m.loc["hd", "AVG"])
        out.append(row)
    df = pd.DataFrame(out)
    df.attrs["patients"] = counts
    return df


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def cross_markdown(df: pd.DataFrame) -> str:
    """The cross-dataset table: Dice AVG and HD AVG (mm) per test data set, one row per Table 2 row."""
    names = [c[:-3] for c in df.columns if c.endswith(" DC")]
    counts = df.attrs.get("patients", {})
    head = ["setting", "stylizer", "ε"] + [f"{n} ({counts.get(n, '?')} pat.) {m}" for n in names for m in ("DC", "HD")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        eps = "" if r["epsilon"] is None or pd.isna(r["epsilon"]) else str(int(r["epsilon"]))
        cells = [str(r["setting"]), r["stylizer"], eps]
        for n in names:
            dc, hd = r[f"{n} DC"], r[f"{n} HD"]
            cells += ["nan" if not np.isfinite(dc) else f"{dc:.3f}", "nan" if not np.isfinite(hd) else f"{hd:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cross_reading(df: pd.DataFrame) -> str:
    """The baselines read on every data set of a cross-dataset table: setting 0, the best style-transfer row
    and the best appearance baseline, by Dice AVG (one run per row, so no p-values)."""
    names = [c[:-3] for c in df.columns if c.endswith(" DC")]
    counts = df.attrs.get("patients", {})
    groups = (("style transfer", df["stylizer"].isin(STYLE_TRANSFER)),
              ("baseline", df["stylizer"].isin(APPEARANCE_BASELINES)))
    lines = []
    for n in names:
        col = f"{n} DC"
        s0 = df[(df["setting"] == 0) & (df["stylizer"] == "none")][col]
        base = f"setting 0 {s0.iloc[0]:.3f}" if len(s0) and np.isfinite(s0.iloc[0]) else "no setting-0 row"
        parts, best = [], {}
        for what, mask in groups:
            sub = df[mask & df[col].notna()]
            if len(sub):
                r = sub.loc[sub[col].idxmax()]
                best[what] = r[col]
                parts.append(f"best {what} {_label(_key_of(r))} {r[col]:.3f}")
            else:
                parts.append(f"no {what} row")
        verdict = ""
        if len(best) == 2:
            d = best["style transfer"] - best["baseline"]
            verdict = f": style transfer {'ahead' if d > 0 else 'behind'} by {abs(d):.3f}"
        lines.append(f"- {n} ({counts.get(n, '?')} patients): {base}; {'; '.join(parts)}{verdict}.")
    return "Across data sets (Dice AVG, one run per row):\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# figures

def table2_bars(records: list[dict], rows=TABLE2_ROWS, part: str | None = None):
    """Dice and HD per structure for each Table 2 row: bars at the mean, one dot per patient."""
    import matplotlib.pyplot as plt

    by_key, present = _first_run_per_row(records, rows)     # one seed per bar: the first
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    width = 0.8 / len(present)
    colours = plt.cm.tab10(np.arange(len(present)))
    for ax, metric, name in ((axes[0], "dice", "Dice"), (axes[1], "hd", "Hausdorff distance (mm)")):
        for i, key in enumerate(present):
            rec = by_key[key]
            p = part or part_of(rec)
            df = pd.DataFrame(rec["metrics"][p])
            for j, s in enumerate(STRUCTURES):
                v = df.loc[df["structure"] == s, metric].astype(float).dropna().to_numpy()
                x = j + (i - (len(present) - 1) / 2) * width
                ax.bar(x, v.mean() if len(v) else np.nan, width * 0.9, color=colours[i],
                       label=_label(key) if j == 0 else None)
                ax.plot(np.full(len(v), x), v, ".", color="k", ms=2.5, alpha=0.6)
        ax.set_xticks(range(len(STRUCTURES)), STRUCTURES)
        ax.set_ylabel(name)
    axes[0].set_ylim(0, 1)
    axes[1].legend(fontsize=7, ncol=2, loc="upper right")
    fig.suptitle("Table 2 per structure: mean (bar) and each patient (dot)")
    fig.tight_layout()
    return fig


def _first_run_per_row(records: list[dict], rows) -> tuple[dict, list]:
    """{row: its first run} and the rows (in `rows` order) that have one; figures show one seed per row."""
    by_key = {}
    for rec in records:
        by_key.setdefault(row_key(rec), rec)
    present = [k for k in rows if k in by_key]
    if not present:
        raise CmrError("no run matches a row of Table 2")
    return by_key, present


def _key_of(r) -> tuple:
    """The (setting, stylizer key, epsilon) of a table row, whose stylizer is a display name."""
    k = {v: k for k, v in STYLIZER_NAMES.items()}[r["stylizer"]]
    return (int(r["setting"]), k, int(r["epsilon"]) if _uses_rain(k) else 0)


def _label(key) -> str:
    s, k, e = key
    if (s, k) == (0, "none"):
        return "setting 0 (none)"
    return f"setting {s}, {STYLIZER_NAMES[k]}" + (f" ε{e}" if _uses_rain(k) else "")


def prediction_grid(records: list[dict], source, *, patients: int = 3, rows=PAPER_ROWS):
    """Fig. 6: LGE slices of labelled test (else validation) patients, ground truth and each Table 2 row's
    saved prediction (from the predictions/ folder beside its run.json, or its val/ subfolder)."""
    import matplotlib.pyplot as plt

    from cmr_lib.data import read_label
    from cmr_lib.metrics import mean_class_dice
    from cmr_lib.plots import show_slice
    from cmr_lib.slices import heart_extent
    from cmr_lib.transforms import normalise

    by_key, present = _first_run_per_row(records, rows)
    first = by_key[present[0]]
    pats = [int(p) for p in first.get("test_patients_labelled") or []] or \
        [int(p) for p in first["data"]["split"]["val"] if source.has_label(int(p), "LGE")]
    pats = pats[:patients]
    if not pats:
        raise CmrError(f"{source.root}: no labelled LGE patient to show")
    fig, axes = plt.subplots(len(pats), len(present) + 1, figsize=(2.2 * (len(present) + 1), 2.4 * len(pats)),
                             squeeze=False)
    for r, p in enumerate(pats):
        vol = source.load(p, "LGE", label="require")
        lo, hi = heart_extent(vol.label)
        z = (lo + hi) // 2                                  # the mid-ventricular slice
        img = normalise(vol.image[..., z:z + 1], (0.5, 99.5))[..., 0]
        show_slice(axes[r, 0], img, vol.label[..., z], title=f"patient {p}: ground truth")
        for c, key in enumerate(present, 1):
            rec = by_key[key]
            pred_dir = Path(rec["_path"]).parent / "predictions"
            pred_path = next((d / vol.image_path.name for d in (pred_dir, pred_dir / "val")
                              if (d / vol.image_path.name).is_file()), pred_dir / vol.image_path.name)
            if pred_path.is_file():
                pred = read_label(pred_path, allow_empty=True)[0]
                prd = pred[..., z]
                show_slice(axes[r, c], img, prd,
                           title=f"{_label(key)}\nDice {mean_class_dice(prd, vol.label[..., z]):.2f}")
            else:
                axes[r, c].set_axis_off()
                axes[r, c].set_title(f"{_label(key)}\n(no saved prediction)", fontsize=7)
    for ax in axes.ravel():
        ax.title.set_fontsize(7)
    fig.suptitle("LGE: ground truth and each setting's prediction (MYO / LV / RV)")
    fig.tight_layout()
    return fig


def setting_histograms(records: list[dict], source, make_cfg, *, slices: int = 48, bins: int = 64,
                       rows=PAPER_ROWS):
    """Fig. 8 per setting: intensity histograms of the images each stylized setting trains on (training
    patients' bSSFP restyled with LGE styles picked by the setting's pairing, latent mean for RAIN), in the
    myocardium and in LV ∪ MYO ∪ RV, against the LGE of validation patients; KL(stylized || LGE) per row.

    make_cfg(setting, stylizer) returns the run's Config; each row's stylizer is the one its run.json names
    (reused from its checkpoint; a row whose stylizer is gone is left out).
    Returns (figure, DataFrame of KL values).
    """
    import matplotlib.pyplot as plt
    import torch

    from cmr_lib.data import split_for
    from cmr_lib.experiment import region_values, train_pair
    from cmr_lib.metrics import histogram, intensity_kl
    from cmr_lib.params import repo_root
    from cmr_lib.slices import SliceDataset
    from cmr_lib.train import StylePicker

    by_key, present = _first_run_per_row(records, rows)
    cfg0 = make_cfg(0, "none")
    split = split_for(source, cfg0.split)
    ref = SliceDataset.from_source(source, [p for p in split["val"] if source.has_label(p, "LGE")], "LGE", cfg0,
                                   train=False, heart_only=True, label="require", crop=cfg0.crop)
    if len(ref) == 0:
        raise CmrError(f"{source.root}: no labelled LGE validation slice to compare with")
    ref_img = torch.stack([ref[i]["image"] for i in range(len(ref))])
    ref_lab = torch.stack([ref[i]["label"] for i in range(len(ref))])
    content = SliceDataset.from_source(source, split["train"], "C0", cfg0, train=False, heart_only=True,
                                       label="require", crop=cfg0.crop)
    rng = np.random.default_rng([cfg0.seed, 88])
    items = [content[int(i)] for i in np.sort(rng.choice(len(content), size=min(slices, len(content)),
                                                         replace=False))]
    x = torch.stack([it["image"] for it in items])
    y = torch.stack([it["label"] for it in items])
    styles = SliceDataset.from_source(source, [p for p in split["style"] if source.has(p, "LGE")], "LGE", cfg0,
                                      train=False, label="skip", crop=cfg0.crop)
    images = {}
    skipped = []
    for key in present:
        s, k, _ = key
        if s == 0:
            images[_label(key) + ": bSSFP as is"] = x
            continue
        cfg = make_cfg(s, k)
        rec = by_key[key]
        want = Path((rec.get("stylizer_run") or {}).get("checkpoint") or "")
        want = want if want.is_absolute() else repo_root() / want
        if not (want / "final.pt").is_file():
            skipped.append(_label(key))
            continue
        ts = train_pair(cfg, source, k, (cfg.setting_spec.pretrain.content, cfg.setting_spec.pretrain.style),
                        progress=False, reuse_only=True)
        if ts.run_dir.name != want.name:
            raise CmrError(f"{rec['_path']}: its stylizer {want.name} is not the one this profile builds "
                           f"({ts.run_dir.name}); rerun the row")
        style = StylePicker(styles, cfg.setting_spec.style_pairing)(items, np.random.default_rng([cfg0.seed, 89]), 0)
        model = ts.model.cpu().eval()
        with torch.inference_mode():
            images[_label(key)] = model.stylize(x, style).float().clamp(0, 1)
    kl_rows = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    centres = (np.arange(bins) + 0.5) / bins
    for ax, region, name in ((axes[0], "MYO", "myocardium"), (axes[1], "heart", "LV ∪ MYO ∪ RV")):
        r = region_values(ref_img, ref_lab, region)
        ax.fill_between(centres, histogram(r, bins), color="0.8", label="LGE (validation patients)")
        for lbl, img in images.items():
            v = region_values(img, y, region)
            kl = intensity_kl(v, r, bins)
            kl_rows.append({"row": lbl, "region": region, "kl_to_lge": round(kl, 4)})
            ax.plot(centres, histogram(v, bins), lw=1.2, label=f"{lbl} (KL {kl:.2f})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("normalised intensity")
        ax.legend(fontsize=6)
    fig.suptitle("Training images of each setting against LGE: intensity histograms and KL(stylized || LGE)")
    fig.tight_layout()
    kl = pd.DataFrame(kl_rows).pivot(index="row", columns="region", values="kl_to_lge")
    kl = kl.reindex([lbl for lbl in images]).rename(columns={"MYO": "KL MYO", "heart": "KL LV ∪ MYO ∪ RV"})
    kl.attrs["skipped"] = skipped
    return fig, kl
