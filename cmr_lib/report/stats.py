"""Paired tests over patients between Table 2 rows, and the written reading of the baselines."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cmr_lib.core.grid import STYLE_TRANSFER, STYLIZER_NAMES, label, table_rows
from cmr_lib.core.schema import APPEARANCE_BASELINES
from cmr_lib.evaluation.evaluate import STRUCTURES
from cmr_lib.report.tables import METRIC_NAMES, by_row, key_of, part_of, value

SETTING0 = (0, "none", 0)


def patient_scores(records: list[dict], metric: str = "dice") -> pd.Series:
    """Per patient (case), the mean of `metric` over MYO, LV and RV, averaged over the runs (seeds) given.
    NaN where a structure's value is undefined (e.g. HD of a structure never predicted)."""
    cols = [case_means(pd.DataFrame(rec["metrics"][part_of(rec)]), metric) for rec in records]
    cols = [c for c in cols if len(c)]
    return pd.concat(cols, axis=1).mean(axis=1, skipna=False) if cols else pd.Series(dtype=float)


def case_means(df: pd.DataFrame, metric: str = "dice") -> pd.Series:
    """Per case of a per-case-and-structure metrics table, the mean of `metric` over MYO, LV and RV (NaN
    where one is undefined): the one number per patient that the paired tests compare."""
    if df.empty:
        return pd.Series(dtype=float)
    wide = df.set_index(["case", "structure"])[metric].astype(float).unstack()
    return wide.reindex(columns=list(STRUCTURES)).mean(axis=1, skipna=False)


def wilcoxon(a: pd.Series, b: pd.Series) -> dict:
    """Paired two-sided Wilcoxon signed-rank test of a - b over the cases both have (finite values)."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = both["a"] - both["b"]
    out = {"patients": int(len(d)), "mean difference": float(d.mean()) if len(d) else float("nan"),
           "p (Wilcoxon)": float("nan")}
    if len(d) >= 2 and (d != 0).any():
        out["p (Wilcoxon)"] = float(stats.wilcoxon(both["a"], both["b"]).pvalue)
    return out


def best_baseline(t2: pd.DataFrame):
    """The appearance-baseline row (histmatch, intensity, GIN, SLAug alone) with the highest Dice AVG, or None."""
    bl = t2[t2["key"].isin(APPEARANCE_BASELINES)]
    return None if bl.empty else bl.loc[bl["DC AVG"].idxmax()]


def best_baseline_key(t2: pd.DataFrame) -> tuple | None:
    """The key of `best_baseline(t2)`: what the tests compare every stylizer row with."""
    row = best_baseline(t2)
    return None if row is None else key_of(row)


def comparisons(present: list[tuple], best_baseline: tuple | None = None) -> list[tuple[tuple, tuple]]:
    """The pairs the paper and the baselines ask about, among the rows present: every row against setting 0;
    RAIN against AdaConv in each setting; AdaConv + VAE against AdaConv and RAIN in its setting; each stylizer + a baseline (intensity, SLAug) against the stylizer
    alone and against that baseline alone; every row with a stylizer against `best_baseline` (best_baseline_key)."""
    out = [(k, SETTING0) for k in present if k != SETTING0 and SETTING0 in present]
    if best_baseline in present and best_baseline != SETTING0:
        out += [(k, best_baseline) for k in present if k[1].split("+")[0] in STYLE_TRANSFER]
    for s in (1, 2, 3):
        rain = next((k for k in present if k[:2] == (s, "rain")), None)
        if rain and (s, "adaconv", 0) in present:
            out.append((rain, (s, "adaconv", 0)))
        vae = next((k for k in present if k[:2] == (s, "adaconv-vae")), None)      # the paper's future work
        if vae:
            out += [(vae, j) for j in ((s, "adaconv", 0), rain) if j in present]
        for k in present:
            if k[0] == s and "+" in k[1]:
                network, remap = k[1].split("+")
                alone = next((j for j in present if j[:2] == (s, network)), None)
                out += [(k, j) for j in (alone, (0, remap, 0)) if j in present]
    return out


def paired_tests(records: list[dict], rows=None, metrics=("dice", "hd"), *, best_baseline: tuple | None = None
                 ) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests over test (else validation) patients for `comparisons`: per patient
    the mean over structures, averaged over seeds. Columns: row, against, metric, patients, mean difference
    (row - against), p."""
    groups = by_row(records)
    present = [k for k in (table_rows("table2") if rows is None else rows) if k in groups]
    out = []
    for a, b in dict.fromkeys(comparisons(present, best_baseline)):
        for m in metrics:
            out.append({"row": label(a), "against": label(b), "metric": f"{METRIC_NAMES[m]} AVG",
                        **wilcoxon(patient_scores(groups[a], m), patient_scores(groups[b], m))})
    return pd.DataFrame(out, columns=["row", "against", "metric", "patients", "mean difference", "p (Wilcoxon)"])


def tests_markdown(tests: pd.DataFrame) -> str:
    """The paired tests as a markdown table (differences: row minus the row it is compared with)."""
    lines = ["| row | against | metric | patients | mean difference | p (Wilcoxon) |", "|---|---|---|---|---|---|"]
    for _, t in tests.iterrows():
        d = 3 if t["metric"].endswith("DC AVG") else 1                 # Dice to 3 places, distances (mm) to 1
        diff = "nan" if not np.isfinite(t["mean difference"]) else f"{t['mean difference']:+.{d}f}"
        p = "nan" if not np.isfinite(t["p (Wilcoxon)"]) else f"{t['p (Wilcoxon)']:.3g}"
        lines.append(f"| {t['row']} | {t['against']} | {t['metric']} | {t['patients']} | {diff} | {p} |")
    return "\n".join(lines) + "\n"


def _p(tests: pd.DataFrame, row: str, against) -> float:
    """The DC AVG p-value of `row` against the row `against(name)` accepts; NaN when not tested."""
    t = tests[(tests["row"] == row) & (tests["metric"] == "DC AVG") & tests["against"].map(against)]
    return float(t["p (Wilcoxon)"].iloc[0]) if len(t) else float("nan")


def baseline_reading(t2: pd.DataFrame, tests: pd.DataFrame, records: list[dict], *, data: str = "the phantom",
                     alpha: float = 0.05) -> str:
    """A written reading of the baselines, from the numbers: where style transfer beats appearance
    augmentation, where it does not, and by how much (Dice AVG; p from paired Wilcoxon tests)."""
    st = t2[t2["key"].isin(STYLE_TRANSFER)]
    bl = t2[t2["key"].isin(APPEARANCE_BASELINES)]
    s0 = value(t2, SETTING0, "DC AVG")
    if st.empty or bl.empty:
        return f"On {data}: the table lacks style-transfer or baseline rows; nothing to compare.\n"

    def signed(v, d=3):
        return f"{round(v, d) + 0.0:+.{d}f}"

    def verdict(p):
        return "n/a" if not np.isfinite(p) else ("significant" if p < alpha else "not significant") + f", p = {p:.3g}"

    groups = by_row(records)
    best_st, best_bl = st.loc[st["DC AVG"].idxmax()], best_baseline(t2)
    w = wilcoxon(patient_scores(groups[key_of(best_st)]), patient_scores(groups[key_of(best_bl)]))
    lines = [f"On {data} ({int(best_st['cases'])} {best_st['patients']} patients, setting 0 Dice {s0:.3f}):"]
    lines.append(f"- Best style transfer: {label(key_of(best_st))}, Dice {best_st['DC AVG']:.3f}; best appearance "
                 f"baseline: {label(key_of(best_bl))}, Dice {best_bl['DC AVG']:.3f}. Difference "
                 f"{signed(best_st['DC AVG'] - best_bl['DC AVG'])} ({verdict(w['p (Wilcoxon)'])}; both rows picked "
                 f"as the best of their group on these same patients, so the p-value is optimistic).")
    beats = [f"{label(key_of(r))} ({r['DC AVG']:.3f})" for _, r in st.iterrows() if r["DC AVG"] > best_bl["DC AVG"]]
    lines.append(f"- Style-transfer rows above the best baseline: {', '.join(beats) if beats else 'none'}.")
    for _, r in bl.iterrows():
        p = _p(tests, label(key_of(r)), lambda a: a == label(SETTING0))
        lines.append(f"- {label(key_of(r))} against setting 0: {signed(r['DC AVG'] - s0)} Dice ({verdict(p)}).")
    for _, r in t2[t2["key"].str.contains("+", regex=False)].iterrows():
        network, remap = r["key"].split("+")
        alone_key = (int(r["setting"]), network, key_of(r)[2])
        alone = value(t2, alone_key, "DC AVG")
        p = _p(tests, label(key_of(r)), lambda a: a == label(alone_key))
        lines.append(f"- Adding {STYLIZER_NAMES[remap]} to {STYLIZER_NAMES[network]} in setting {int(r['setting'])}: "
                     f"{signed(r['DC AVG'] - alone)} Dice ({verdict(p)}).")
    return "\n".join(lines) + "\n"
