"""The cross-dataset table, read: each Table 2 row's networks (trained on one data set, scored on the others' LGE by
study.rebuild.cross_dataset) in markdown, paired tests and verdicts; which patients are scored; the protocol."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmr_lib.core.atomic import read_json
from cmr_lib.core.errors import CmrError
from cmr_lib.core.grid import STYLE_TRANSFER, label, row_key
from cmr_lib.core.paths import recorded_path
from cmr_lib.core.schema import APPEARANCE_BASELINES
from cmr_lib.data.sources import find_real_data, open_source
from cmr_lib.data.splits import external_split
from cmr_lib.report.stats import STYLIZED, TEST_COLUMNS, comparisons, wilcoxon, with_holm
from cmr_lib.report.tables import key_of, reported_patients, selection_of

DATA_NAMES = {"phantom": "phantom", "mscmrseg": "MS-CMRSeg 2019", "myops": "MyoPS 2020"}


def other_sources(own, *, real=None, phantom_dir=None) -> dict:
    """The data sets to test on besides the runs' own: the real sample sets found (data.sources.find_real_data,
    or `real` = {name: folder}) and the phantom (`phantom_dir`, if generated), minus the runs' own source."""
    found = dict(find_real_data() if real is None else real)
    if phantom_dir is not None and Path(phantom_dir).is_dir():
        found["phantom"] = Path(phantom_dir)
    sources = [open_source(folder) for folder in found.values()]
    sources = [src for src in sources if Path(src.root).resolve() != Path(own.root).resolve()
               and src.patients_with("LGE", labelled=True)]
    names = [DATA_NAMES.get(src.name, src.name) for src in sources]
    # two folders of one layout: each column named by its folder too
    out = {(n if names.count(n) == 1 else f"{n} ({Path(src.root).name})"): src for n, src in zip(names, sources)}
    if len(out) < len(sources):
        raise CmrError(f"{own.root}: two cross_data folders share a name; give folders with distinct names")
    return out


def scored_patients(src) -> list[int]:
    """The patients of a data set beside the runs' own that the cross-dataset table reports: its labelled LGE in
    the test part of data.splits.external_split (the other part may give styles and tune settings)."""
    return [p for p in external_split(src)["test"] if src.has_label(p, "LGE")]


def style_patients(record: dict) -> tuple[str, list[int]] | None:
    """(layout, patients) whose images served as styles for a run's stylizer, from the stylizer checkpoint's
    meta.json; None for a run without a stylizer or whose checkpoint is gone."""
    where = (record.get("stylizer_run") or {}).get("checkpoint")
    meta = recorded_path(where) / "meta.json" if where else None
    if meta is None or not meta.is_file():
        return None
    style = read_json(meta, "stylizer record")["config"]["data"].get("style") or {}
    if not style:
        return None
    return style["layout"], sorted(int(p) for p in next(iter(style["patients"].values()))[1])


def protocol(records: list[dict], own, others: dict) -> dict:
    """Who chose and who is reported, for every run and every other test set (results/protocol.json): each run's
    checkpoint selection, its reported patients and the patients its stylizer took styles from; for each other
    data set, the patients scored and those whose images served any run as styles."""
    rows, served = [], {}
    for rec in records:
        style = style_patients(rec)
        if style:
            served.setdefault(style[0], set()).update(style[1])
        rows.append({"row": label(row_key(rec)), "seed": rec["seed"], "selection": selection_of(rec),
                     "reported": {"layout": own.name, "sequence": "LGE", "patients": reported_patients(rec)},
                     "styles": None if style is None else {"layout": style[0], "patients": style[1]}})
    sets = {name: {"layout": src.name, "scored": scored_patients(src),
                   "served_as_styles": sorted(served.get(src.name, set()))} for name, src in others.items()}
    return {"runs": rows, "other_test_sets": sets}


def protocol_problems(summary: dict) -> list[str]:
    """What in a protocol summary breaks the rule that nothing reported helped choose: a checkpoint chosen on a
    reported patient, a reported patient whose images served as styles, a scored patient of another data set
    that served as a style. Empty when clean."""
    problems = []
    for r in summary["runs"]:
        reported = set(r["reported"]["patients"])
        sel = r["selection"]
        if sel["rule"] != "last" and reported & set(sel["patients"]):
            problems.append(f"{r['row']} seed {r['seed']}: checkpoint chosen on reported patients "
                            f"{sorted(reported & set(sel['patients']))}")
        st = r.get("styles")
        if st and st["layout"] == r["reported"]["layout"] and reported & set(st["patients"]):
            problems.append(f"{r['row']} seed {r['seed']}: reported patients {sorted(reported & set(st['patients']))} "
                            f"served as styles")
    for name, s in summary["other_test_sets"].items():
        both = set(s["scored"]) & set(s["served_as_styles"])
        if both:
            problems.append(f"{name}: scored patients {sorted(both)} served as styles")
    return problems


def cross_sources(cfg, own, cross_data="auto") -> dict:
    """What notebook 06's `cross_data` asks for: "auto" (the real sample sets found, and the phantom when the
    runs are on real data), None (nothing), or a list of data folders."""
    if not cross_data:
        return {}
    if cross_data == "auto":
        return other_sources(own, phantom_dir=cfg.phantom_dir if cfg.data_dir is not None else None)
    return other_sources(own, real={str(d): d for d in cross_data})


def as_table(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """One data set's column of a cross-dataset table in Table 2's form (setting, key, stylizer, epsilon, cases,
    DC AVG, HD AVG), for what reads Table 2 (the paper's claims)."""
    out = df[["setting", "key", "stylizer", "epsilon"]].copy()
    out["DC AVG"], out["HD AVG"] = df[f"{name} DC"], df[f"{name} HD"]
    out["cases"] = df.attrs.get("patients", {}).get(name, 0)
    return out


def cross_tests(df: pd.DataFrame) -> pd.DataFrame:
    """Paired Wilcoxon tests on each other data set's patients (cross_dataset's per-patient Dice AVG, seeds
    averaged per patient) for the pairs Table 2's tests ask about (report.stats.comparisons) that involve a
    stylizer, with that data set's best appearance baseline (picked on the same patients: optimistic). Columns
    as report.stats.paired_tests, metric '<data set> DC AVG' (Holm's family: one data set's tests)."""
    out = []
    for name, scores in df.attrs.get("per_patient", {}).items():
        means = {k: float(v.mean()) for k, v in scores.items()}
        baselines = [k for k in scores if k[1] in APPEARANCE_BASELINES]
        best = max(baselines, key=lambda k: means[k]) if baselines else None
        for key, against in dict.fromkeys(comparisons(list(scores), best)):
            if key[1].split("+")[0] not in STYLIZED:
                continue
            out.append({"row": label(key), "against": label(against), "metric": f"{name} DC AVG",
                        **wilcoxon(scores[key], scores[against])})
    return with_holm(pd.DataFrame(out, columns=TEST_COLUMNS[:6]))[TEST_COLUMNS]


def _names(df: pd.DataFrame) -> list[str]:
    return [c[:-3] for c in df.columns if c.endswith(" DC")]


def cross_markdown(df: pd.DataFrame) -> str:
    """The cross-dataset table: Dice AVG and HD AVG (mm) per test data set, one row per Table 2 row."""
    names, counts = _names(df), df.attrs.get("patients", {})
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
    and the best appearance baseline, by Dice AVG (means over each row's seeds; cross_tests has the p-values)."""
    counts = df.attrs.get("patients", {})
    groups = (("style transfer", df["key"].isin(STYLE_TRANSFER)), ("baseline", df["key"].isin(APPEARANCE_BASELINES)))
    lines = []
    for n in _names(df):
        col = f"{n} DC"
        s0 = df[(df["setting"] == 0) & (df["key"] == "none")][col]
        base = f"setting 0 {s0.iloc[0]:.3f}" if len(s0) and np.isfinite(s0.iloc[0]) else "no setting-0 row"
        parts, best = [], {}
        for what, mask in groups:
            sub = df[mask & df[col].notna()]
            if len(sub):
                r = sub.loc[sub[col].idxmax()]
                best[what] = r[col]
                parts.append(f"best {what} {label(key_of(r))} {r[col]:.3f}")
            else:
                parts.append(f"no {what} row")
        verdict = ""
        if len(best) == 2:
            d = best["style transfer"] - best["baseline"]
            verdict = f": style transfer {'ahead' if d > 0 else 'behind'} by {abs(d):.3f}"
        lines.append(f"- {n} ({counts.get(n, '?')} patients): {base}; {'; '.join(parts)}{verdict}.")
    seeds = sorted(set(int(n) for n in df["seeds"])) if "seeds" in df else [1]
    runs = "one run per row" if seeds == [1] else f"mean over {'/'.join(map(str, seeds))} seeds per row"
    return f"Across data sets (Dice AVG, {runs}):\n" + "\n".join(lines) + "\n"
