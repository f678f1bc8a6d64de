"""The paper's numbers beside ours, and the paper's claims checked on our tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmr_lib.core.errors import CmrError
from cmr_lib.core.grid import STYLE_TRANSFER
from cmr_lib.core.paths import default_output_root, repo_root
from cmr_lib.core.schema import load_yaml
from cmr_lib.report.stats import holm, min_attainable_p, patient_scores, wilcoxon
from cmr_lib.report.tables import by_row, key_of, value


def paper_tables(path=None) -> dict:
    """The paper's Table 2 and 3 values as transcribed in params/paper_tables.yaml (null = not transcribed);
    each row names its grid key (setting, stylizer value, epsilon for RAIN)."""
    path = path or repo_root() / "params" / "paper_tables.yaml"
    data = load_yaml(path) or {}
    for t in ("table2", "table3"):
        if not isinstance(data.get(t), list):
            raise CmrError(f"{path}: needs a list '{t}' of rows")
    return data


def compare_with_paper(ours: pd.DataFrame, paper_rows: list[dict], metrics=("DC AVG", "HD AVG")) -> pd.DataFrame:
    """Ours beside the paper's values, row by row, with the differences (ours - paper); rows or values the
    paper file does not give stay empty (NaN)."""
    theirs = {(int(p["setting"]), p["stylizer"], int(p.get("epsilon") or 0)): p for p in paper_rows}
    out = []
    for _, r in ours.iterrows():
        match = theirs.get(key_of(r), {})
        row = {"setting": r["setting"], "stylizer": r["stylizer"], "epsilon": r["epsilon"]}
        for m in metrics:
            paper = float(match[m]) if match.get(m) is not None else float("nan")
            row[f"{m} ours"], row[f"{m} paper"], row[f"{m} difference"] = r[m], paper, r[m] - paper
        out.append(row)
    return pd.DataFrame(out)


def _rain(t2: pd.DataFrame, s: int) -> tuple:
    """The RAIN row of setting s in a table (whatever its epsilon; Table 2 has one)."""
    sel = t2[(t2["setting"] == s) & (t2["key"] == "rain")]
    return (s, "rain", int(sel["epsilon"].iloc[0])) if len(sel) else (s, "rain", 5)


VERDICTS = ("holds", "does not hold", "not shown", "cannot tell")


def judge(direction: bool | None, pvalues=(), *, alpha: float = 0.05, tested: bool = True) -> str:
    """A claim's verdict: 'cannot tell' (rows missing), 'does not hold' (the means go the other way), 'holds'
    (the means go its way and every paired test of it is below alpha after Holm's correction over them), else
    'not shown' (its way, but not beyond chance: too few patients, or too small a difference)."""
    if direction is None:
        return "cannot tell"
    if not direction:
        return "does not hold"
    if not tested:
        return "holds"
    adjusted = holm(pvalues)
    return "holds" if len(adjusted) and np.all(np.isfinite(adjusted)) and np.all(adjusted < alpha) else "not shown"


def _tested(scores, a: tuple, b: tuple, metric: str) -> dict | None:
    """The paired test of row a against row b on `metric` over patients (scores(key, metric) gives each row's
    per-patient values, seeds averaged), or None without scores."""
    if scores is None:
        return None
    x, y = scores(a, metric), scores(b, metric)
    if x is None or y is None:
        return None
    return wilcoxon(x, y)


def _pfmt(t: dict | None) -> str:
    if t is None:
        return ""
    n = t["patients"]
    return f", p {t['p (Wilcoxon)']:.3g} over {n} patients" + (
        f" (smallest possible {min_attainable_p(n):.3g})" if min_attainable_p(n) >= 0.05 else "")


def claims(t2: pd.DataFrame, t3: pd.DataFrame | None = None, *, scores=None, central_margin: float = 0.10,
           hd_margin: float = 0.20, alpha: float = 0.05) -> pd.DataFrame:
    """The paper's claims, each judged on our tables (judge): by the means' direction and, with `scores` (a
    function (row key, 'dice'|'hd') -> per-patient Series, seeds averaged; None where it has no such row or
    metric), by paired Wilcoxon tests over patients, Holm-corrected within the claim. Columns: claim, verdict
    (VERDICTS), holds (True only for 'holds'; None for 'cannot tell'), evidence. "Far below" means at least
    `hd_margin` (relative) below, in every setting where both HDs are defined."""
    found = [_hd_claim(t2, scores, hd_margin), _adaconv_claim(t2, scores), _epsilon_claim(t3, scores),
             _gain_claim(t2, scores, central_margin)]
    return pd.DataFrame([_verdict(*c, tested=scores is not None, alpha=alpha) for c in found], dtype=object)


def _verdict(claim: str, direction, tests, evidence: str, *, tested: bool, alpha: float) -> dict:
    """One claim's row: its verdict from the means' direction and its paired tests (judge)."""
    tests = [t for t in tests if t is not None]
    if tested and direction and not tests:
        verdict = "cannot tell"                                      # means there, no per-patient scores
        evidence += "; no per-patient scores to test"
    else:
        verdict = judge(direction, [t["p (Wilcoxon)"] for t in tests], alpha=alpha, tested=tested)
    if not tested and verdict == "holds":
        evidence += "; means only, not tested"
    return {"claim": claim, "verdict": verdict, "holds": None if verdict == "cannot tell" else verdict == "holds",
            "evidence": evidence}


def _hd_claim(t2, scores, hd_margin):
    """RAIN's HD far below AdaConv's in every stylized setting: (claim, direction, tests, evidence)."""
    claim = f"RAIN's HD is far (at least {hd_margin:.0%}) below AdaConv's in every stylized setting"
    hd = {s: (value(t2, _rain(t2, s), "HD AVG"), value(t2, (s, "adaconv", 0), "HD AVG")) for s in (1, 2, 3)}
    settings = [s for s, (r, a) in hd.items() if np.isfinite(r) and np.isfinite(a)]
    both = {s: len(t2[(t2["setting"] == s) & t2["key"].isin(STYLE_TRANSFER)]) == 2 for s in (1, 2, 3)}
    undefined = [s for s in (1, 2, 3) if s not in settings and both[s]]
    note = "".join(f"; setting {s}: HD undefined (a structure never predicted)" for s in undefined)
    if not settings:
        return claim, None, [], "no setting has both stylizers' HD" + note
    rel = {s: 1 - hd[s][0] / hd[s][1] for s in settings}
    tests = {s: _tested(scores, (s, "adaconv", 0), _rain(t2, s), "hd") for s in settings}
    return (claim, all(r >= hd_margin for r in rel.values()), tests.values(),
            "; ".join(f"setting {s}: RAIN {hd[s][0]:.1f} mm vs AdaConv {hd[s][1]:.1f} mm "
                      f"({abs(r):.0%} {'below' if r >= 0 else 'above'}{_pfmt(tests[s])})" for s, r in rel.items())
            + note)


def _adaconv_claim(t2, scores):
    """AdaConv improves from setting 1 to settings 2 and 3 (Dice)."""
    a = {s: value(t2, (s, "adaconv", 0), "DC AVG") for s in (1, 2, 3)}
    ok = all(np.isfinite(v) for v in a.values())
    tests = {s: _tested(scores, (s, "adaconv", 0), (1, "adaconv", 0), "dice") for s in (2, 3)} if ok else {}
    return ("AdaConv improves from setting 1 to settings 2 and 3 (Dice)", (a[2] > a[1] and a[3] > a[1]) if ok else None,
            tests.values(), ", ".join(f"setting {s}: {v:.3f}" + (_pfmt(tests.get(s)) if s in tests else "")
                                      for s, v in a.items()) if ok else "rows missing")


def _epsilon_claim(t3, scores):
    """RAIN improves with more epsilon iterations (Table 3; ε 0 is the no-search control, not part of it)."""
    claim = "RAIN improves with more epsilon iterations (Table 3, Dice)"
    t3 = None if t3 is None else t3[(t3["key"] == "rain") & (t3["epsilon"] > 0)]
    if t3 is None or len(t3) < 2:
        return claim, None, [], "Table 3 rows missing"
    t3s = t3.sort_values("epsilon")
    dc = t3s["DC AVG"].to_numpy()
    lo, hi = key_of(t3s.iloc[0]), key_of(t3s.iloc[-1])
    test = _tested(scores, hi, lo, "dice")
    return (claim, bool(np.all(np.diff(dc) >= 0)), [test],
            ", ".join(f"ε {int(e)}: {v:.3f}" for e, v in zip(t3s["epsilon"], dc))
            + (f"; ε {hi[2]} against ε {lo[2]}{_pfmt(test)}" if test else ""))


def _gain_claim(t2, scores, central_margin):
    """Stylization beats no stylization by at least `central_margin` Dice (the best stylized row)."""
    base = value(t2, (0, "none", 0), "DC AVG")
    stylized = t2[t2["key"].isin(STYLE_TRANSFER)]
    claim = f"stylization beats no stylization by at least {central_margin:.2f} Dice (best row)"
    if not (np.isfinite(base) and len(stylized)):
        return claim, None, [], "rows missing"
    best = stylized.loc[stylized["DC AVG"].idxmax()]
    gain = float(best["DC AVG"]) - base
    test = _tested(scores, key_of(best), (0, "none", 0), "dice")
    return (claim, bool(gain >= central_margin), [test],
            f"setting 0: {base:.3f}; best: setting {int(best['setting'])} {best['stylizer']} "
            f"{float(best['DC AVG']):.3f} ({gain:+.3f}{_pfmt(test)}; the best row picked on these patients)")


def record_scores(records: list[dict]):
    """claims' `scores` for one data set's own test (or validation) patients: a row's per-patient Dice or HD AVG,
    seeds averaged (report.stats.patient_scores)."""
    groups = by_row(records)
    return lambda key, metric: patient_scores(groups[key], metric) if key in groups else None


def per_patient_scores(per_patient: dict):
    """claims' `scores` from a cross-dataset table's per-patient Dice AVG ({row key: Series}); no HD there."""
    return lambda key, metric: per_patient.get(key) if metric == "dice" else None


def claims_of_other_profiles(cfg) -> dict:
    """The verdicts (claims.csv) that other profiles' notebook 06 wrote for the same data: {profile: claims table},
    from the data's own output folders (core.paths.default_output_root: real/<data>/[<profile>/], or the
    repository and phantom/<profile>/ for the phantom)."""
    home = default_output_root("real" if cfg.data_dir is not None else "demo", cfg.data_dir)
    roots = [home] + (sorted(p for p in home.iterdir() if p.is_dir()) if cfg.data_dir is not None and home.is_dir()
                      else sorted((repo_root() / "phantom").glob("*")))
    out = {}
    for root in roots:
        f = root / "results" / "claims.csv"
        if not f.is_file() or root.resolve() == Path(cfg.output_root).resolve():
            continue
        df = pd.read_csv(f, dtype=object)
        if {"claim", "verdict", "profile"} <= set(df.columns) and len(df):
            out[str(df["profile"].iloc[0])] = df
    return out


def verdicts_across(verdicts: dict) -> pd.DataFrame:
    """One row per claim with its verdict on each test set or profile ({name: claims() table}) and whether they
    differ, so that a claim that holds on one and not another says so."""
    names = list(verdicts)
    claims_ = list(dict.fromkeys(c for v in verdicts.values() for c in v["claim"]))
    out = []
    for c in claims_:
        row = {"claim": c}
        for n in names:
            hit = verdicts[n][verdicts[n]["claim"] == c]
            row[n] = hit["verdict"].iloc[0] if len(hit) and "verdict" in hit else "cannot tell"
        seen = {row[n] for n in names if row[n] != "cannot tell"}
        row["differs"] = len(seen) > 1
        out.append(row)
    return pd.DataFrame(out, dtype=object)


def across_markdown(table: pd.DataFrame, what: str = "test sets") -> str:
    """verdicts_across as markdown, with a line naming each claim whose verdict differs."""
    names = [c for c in table.columns if c not in ("claim", "differs")]
    lines = ["| claim | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for _, r in table.iterrows():
        lines.append(f"| {r['claim']} | " + " | ".join(str(r[n]) for n in names) + " |")
    differs = [r["claim"] for _, r in table.iterrows() if r["differs"]]
    note = (f"\nThe verdict differs between {what} for: " + "; ".join(differs) + ".\n") if differs else \
        f"\nNo claim's verdict differs between {what}.\n"
    return "\n".join(lines) + "\n" + note


def future_work_claims(kernel_verdicts: pd.DataFrame, t2: pd.DataFrame | None, tests: pd.DataFrame) -> pd.DataFrame:
    """The paper's two Section-7 expectations: "larger kernels change structure less" (study.ablation.kernel_claims,
    one per kind), and "AdaConv with a style search generalises from T2 to LGE (setting 1) as RAIN does":
    AdaConv + VAE ε5 in setting 1 beats setting 0 and AdaConv in setting 1 (Dice AVG, means over seeds), with
    RAIN's setting-1 Dice and the paired p-values as evidence."""
    rows = kernel_verdicts.to_dict("records")
    claim = "AdaConv with a style search (AdaConv + VAE, ε5) generalises from T2 to LGE in setting 1, as RAIN does"
    keys = {"AdaConv + VAE": (1, "adaconv-vae", 5), "AdaConv": (1, "adaconv", 0), "RAIN": (1, "rain", 5),
            "setting 0": (0, "none", 0)}
    dc = {name: float("nan") if t2 is None else value(t2, k, "DC AVG") for name, k in keys.items()}
    needed = ("AdaConv + VAE", "AdaConv", "setting 0")
    if not all(np.isfinite(dc[n]) for n in needed):
        rows.append({"claim": claim, "holds": None,
                     "evidence": "rows missing: " + ", ".join(n for n in needed if not np.isfinite(dc[n]))})
        return pd.DataFrame(rows, dtype=object)

    def test(against: str) -> dict | None:
        t = tests[(tests["row"] == "setting 1, AdaConv + VAE ε5") & (tests["against"] == against)
                  & (tests["metric"] == "DC AVG")]
        return None if not len(t) else {"p (Wilcoxon)": float(t["p (Wilcoxon)"].iloc[0]),
                                        "patients": int(t["patients"].iloc[0])}

    def p(t: dict | None) -> str:
        return "not tested" if t is None else f"p {t['p (Wilcoxon)']:.3g}"
    against = {"AdaConv": test("setting 1, AdaConv"), "setting 0": test("setting 0 (none)")}
    direction = bool(dc["AdaConv + VAE"] > dc["setting 0"] and dc["AdaConv + VAE"] > dc["AdaConv"])
    done = [t for t in against.values() if t is not None]
    verdict = judge(direction, [t["p (Wilcoxon)"] for t in done]) if done else \
        ("does not hold" if not direction else "cannot tell")
    evidence = (f"setting 1 Dice AVG: AdaConv + VAE {dc['AdaConv + VAE']:.3f}, AdaConv {dc['AdaConv']:.3f} "
                f"({p(against['AdaConv'])}), RAIN {dc['RAIN']:.3f}, setting 0 {dc['setting 0']:.3f} "
                f"({p(against['setting 0'])}); Holm over both tests")
    rows.append({"claim": claim, "verdict": verdict, "holds": None if verdict == "cannot tell" else verdict == "holds",
                 "evidence": evidence})
    return pd.DataFrame(rows, dtype=object)


def claims_markdown(verdicts: pd.DataFrame) -> str:
    """The claims as a markdown list: claim, verdict, evidence."""
    mark = {True: "holds", False: "does not hold", None: "cannot tell (rows missing)"}

    def verdict(v):
        if "verdict" in v and isinstance(v["verdict"], str):
            return v["verdict"]
        return mark[None if pd.isna(v["holds"]) else bool(v["holds"])]
    return "".join(f"- {v['claim']}: **{verdict(v)}** ({v['evidence']})\n" for _, v in verdicts.iterrows())


def comparison_markdown(table2: pd.DataFrame, table3: pd.DataFrame | None = None, theirs: dict | None = None) -> str:
    """Ours beside the paper (compare_with_paper) as markdown: Table 2's rows, then Table 3's, with DC and HD
    AVG ours / paper / difference; '' where the paper has no such row (our baselines)."""
    theirs = theirs or paper_tables()
    cell = (lambda v, fmt: "" if not np.isfinite(v) else format(v, fmt))
    lines = ["| table | setting | stylizer | ε | DC AVG ours | DC AVG paper | DC diff. | HD AVG ours | HD AVG paper "
             "| HD diff. |", "|" + " --- |" * 10]
    for name, ours in (("2", table2), ("3", table3)):
        if ours is None or ours.empty:
            continue
        for _, r in compare_with_paper(ours, theirs[f"table{name}"]).iterrows():
            eps = "" if pd.isna(r["epsilon"]) or not r["epsilon"] else str(int(r["epsilon"]))
            lines.append(f"| {name} | {int(r['setting'])} | {r['stylizer']} | {eps} | "
                         + " | ".join(cell(float(r[f"{m} {k}"]), ".3f" if m == "DC AVG" else ".1f")
                                      for m in ("DC AVG", "HD AVG") for k in ("ours", "paper", "difference")) + " |")
    return "\n".join(lines) + "\n"
