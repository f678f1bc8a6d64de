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
STYLIZED = (*STYLE_TRANSFER, "adaconv-vae")              # every stylizer alone, the paper's future work too
CONTROL = (0, "intensity", 0)        # a random intensity curve: what any restyling must beat to count as style


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


def min_attainable_p(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test can give with n pairs: 2 / 2^n (all differences
    of one sign). With 5 patients it is 0.0625, so no test over 5 patients can reach 0.05."""
    return float("nan") if n < 1 else min(1.0, 2.0 / 2.0 ** n)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN left out and kept NaN): controls the chance of
    any false positive in the family at the level the adjusted values are compared with."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        m = ok.size
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p[i]))
            out[i] = running
    return out


def with_holm(tests: pd.DataFrame, family=("metric",)) -> pd.DataFrame:
    """The tests with 'p (Holm)' (adjusted within each family: by default, one metric on one test set) and
    'min p' (the smallest p the patient count allows) beside the raw p."""
    tests = tests.copy()
    tests["p (Holm)"] = np.nan
    for _, idx in tests.groupby(list(family)).groups.items() if len(tests) else []:
        tests.loc[idx, "p (Holm)"] = holm(tests.loc[idx, "p (Wilcoxon)"])
    tests["min p"] = [min_attainable_p(int(n)) for n in tests["patients"]] if len(tests) else []
    return tests


TEST_COLUMNS = ["row", "against", "metric", "patients", "mean difference", "p (Wilcoxon)", "p (Holm)", "min p"]


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
    every stylizer alone against the random intensity curve (CONTROL); RAIN against AdaConv in each setting;
    AdaConv + VAE against AdaConv and RAIN in its setting; each stylizer + a baseline (intensity, SLAug) against
    the stylizer alone and against that baseline alone; every row with a stylizer against `best_baseline`
    (best_baseline_key)."""
    out = [(k, SETTING0) for k in present if k != SETTING0 and SETTING0 in present]
    if CONTROL in present:
        out += [(k, CONTROL) for k in present if k[1] in STYLIZED]
    if best_baseline in present and best_baseline != SETTING0:
        out += [(k, best_baseline) for k in present if k[1].split("+")[0] in STYLIZED]
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
    the mean over structures, averaged over seeds (one observation per patient). Columns: row, against, metric,
    patients, mean difference (row - against), p, p after Holm's correction within each metric, and the smallest
    p the patient count allows."""
    groups = by_row(records)
    present = [k for k in (table_rows("table2") if rows is None else rows) if k in groups]
    out = []
    for a, b in dict.fromkeys(comparisons(present, best_baseline)):
        for m in metrics:
            out.append({"row": label(a), "against": label(b), "metric": f"{METRIC_NAMES[m]} AVG",
                        **wilcoxon(patient_scores(groups[a], m), patient_scores(groups[b], m))})
    return with_holm(pd.DataFrame(out, columns=TEST_COLUMNS[:6]))[TEST_COLUMNS]


def tests_markdown(tests: pd.DataFrame) -> str:
    """The paired tests as a markdown table (differences: row minus the row it is compared with), with Holm's
    adjusted p beside the raw one and a note on the smallest p the patient count allows."""
    if "p (Holm)" not in tests:
        tests = with_holm(tests)

    def num(v):
        return "nan" if not np.isfinite(v) else f"{v:.3g}"

    lines = ["| row | against | metric | patients | mean difference | p (Wilcoxon) | p (Holm) |",
             "|---|---|---|---|---|---|---|"]
    for _, t in tests.iterrows():
        d = 3 if t["metric"].endswith("DC AVG") else 1                 # Dice to 3 places, distances (mm) to 1
        diff = "nan" if not np.isfinite(t["mean difference"]) else f"{t['mean difference']:+.{d}f}"
        lines.append(f"| {t['row']} | {t['against']} | {t['metric']} | {t['patients']} | {diff} | "
                     f"{num(t['p (Wilcoxon)'])} | {num(t['p (Holm)'])} |")
    counts = sorted({int(n) for n in tests["patients"] if n > 0})
    note = ("\nPaired two-sided Wilcoxon signed-rank tests over patients (each patient's score averaged over "
            "structures and seeds); p (Holm): adjusted within each metric's family of tests. ")
    if counts:
        note += "Smallest attainable p: " + ", ".join(f"{min_attainable_p(n):.3g} with {n} patients" for n in counts)
        if any(min_attainable_p(n) >= 0.05 for n in counts):
            note += " (so no test over so few patients can reach 0.05)"
        note += "."
    return "\n".join(lines) + "\n" + note + "\n"


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

    n_patients = int(t2["cases"].min()) if "cases" in t2 and len(t2) else 0
    floor = min_attainable_p(n_patients) if n_patients else float("nan")

    def verdict(p):
        if not np.isfinite(p):
            return "n/a"
        out = ("significant" if p < alpha else "not significant") + f", p = {p:.3g}"
        return out + (f"; with {n_patients} patients no p below {floor:.3g} is possible" if floor >= alpha else "")

    groups = by_row(records)
    best_st, best_bl = st.loc[st["DC AVG"].idxmax()], best_baseline(t2)
    w = wilcoxon(patient_scores(groups[key_of(best_st)]), patient_scores(groups[key_of(best_bl)]))
    which = "test" if best_st["patients"] == "test" else "labelled LGE"       # 'val': MS-CMRSeg's LGE 1-5
    lines = [f"On {data} ({int(best_st['cases'])} {which} patients, setting 0 Dice {s0:.3f}):"]
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
