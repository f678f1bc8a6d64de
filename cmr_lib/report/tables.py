"""Tables 2 and 3 from run records (`results/runs/*/run.json`, written by study.runs.run_setting).

Every number here comes from those records; rows and their order come from the experiment grid
(core.grid).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cmr_lib.core.atomic import write_text
from cmr_lib.core.errors import CmrError
from cmr_lib.core.records import RunRecord
from cmr_lib.core.grid import STYLIZER_NAMES, row_key, table_rows, uses_epsilon
from cmr_lib.evaluation.evaluate import STRUCTURES

METRIC_NAMES = {"dice": "DC", "hd": "HD", "hd95": "HD95", "assd": "ASSD"}


def load_runs(results_dir, *, profile: str | None = None, seed: int | list | None = None,
              data_root: str | None = None, allow_mixed: bool = False, required: bool = True) -> list[dict]:
    """The run.json records under results_dir/runs (optionally one profile, one seed or a list of seeds, and
    one data source: the `data.root` its records name).

    Runs from different profiles or data sources never share a table unless `allow_mixed`: a one-line
    error names what differs. None found is an error unless not `required` (then []). Kernel-size variants
    (notebook 07's rows, run with a `kernel_size` parameter) are not rows of Tables 2 and 3 and are left out.
    """
    runs_dir = Path(results_dir) / "runs"
    seeds = None if seed is None else (list(seed) if isinstance(seed, (list, tuple)) else [seed])
    records = []
    for path in sorted(runs_dir.glob("*/run.json")):
        rec = RunRecord.read(path)
        variant = rec.get("config", {}).get("extra", {}).get("kernel_size") is not None   # notebook 07's rows
        if (profile is None or rec["profile"] == profile) and (seeds is None or rec.get("seed") in seeds) \
                and (data_root is None or str(rec["data"].get("root")) == str(data_root)) and not variant:
            records.append(rec)
    if not records and not required:
        return []
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


def selection_of(record: dict) -> dict:
    """How a run's checkpoint was chosen (training.segmenters.selection_set): its rule, sequence and patients;
    records made before the rule existed chose on the LGE validation patients."""
    chosen = (record.get("segmenter") or {}).get("selection")
    if chosen:
        return chosen
    return {"rule": "target", "sequence": "LGE", "patients": list(record["data"]["split"].get("val", []))}


def reported_patients(record: dict) -> list[int]:
    """The patients whose labels a run's table row reports (its `part_of`)."""
    return sorted({int(re.search(r"\d+", str(m["case"])).group()) for m in record["metrics"][part_of(record)]})


def selection_is_clean(record: dict) -> bool:
    """True when no label of a reported patient chose the run's checkpoint: the rule is 'last', or the selection
    patients are other patients than the reported ones (by number: in MS-CMRSeg a patient's bSSFP and LGE share
    it, so holding out bSSFP 31-35 while reporting LGE 1-5 is clean, selecting on LGE 1-5 is not)."""
    chosen = selection_of(record)
    return chosen["rule"] == "last" or not set(chosen["patients"]) & set(reported_patients(record))


SELECT_NAMES = {"source": "held-out bSSFP", "last": "last checkpoint", "target": "LGE validation (paper)"}


def by_row(records: list[dict]) -> dict[tuple, list[dict]]:
    """The records grouped by their row (setting, stylizer, epsilon), seeds together."""
    out: dict[tuple, list[dict]] = {}
    for rec in records:
        out.setdefault(row_key(rec), []).append(rec)
    return out


def first_run_per_row(records: list[dict], rows) -> tuple[dict, list]:
    """{row: its first run} and the rows (in `rows` order) that have one; figures show one seed per row."""
    groups = by_row(records)
    present = [k for k in rows if k in groups]
    if not present:
        raise CmrError("no run matches a row of the table")
    return {k: groups[k][0] for k in present}, present


def _summary_key(postprocess: str) -> str:
    return "summary" if postprocess == "none" else f"summary_{postprocess}"


def row_values(record: dict, postprocess: str = "none") -> dict:
    """One run's numbers on the patients its table row reports (its `part_of`), as Table 2's columns."""
    part = part_of(record)
    key = _summary_key(postprocess)
    if key not in record:
        raise CmrError(f"{record.get('_path', record.get('run_name'))}: has no {postprocess} scores; rerun it")
    s = record[key][part]
    row = {"patients": part, "cases": s["dice"]["cases"]}
    for metric, name in METRIC_NAMES.items():
        for k in (*STRUCTURES, "AVG", "STD"):
            row[f"{name} {k}"] = s[metric][k]
    return row


def table(records: list[dict], rows=None, *, postprocess: str = "none") -> pd.DataFrame:
    """One row per (setting, stylizer, epsilon) key in `rows` order, numbers averaged over seeds (with the
    seed count); rows without a run are left out (rows=None: Table 2's); postprocess 'largest_component' reads
    the scores after nnU-Net's post-processing. Columns: the key (setting, key =
    stylizer value, epsilon), the stylizer's display name, DC/HD/HD95/ASSD per structure, AVG, STD (and their 95 % CI over seeds)."""
    groups = by_row(records)
    out = []
    for key in table_rows("table2") if rows is None else rows:
        recs = groups.get(key)
        if not recs:
            continue
        vals = pd.DataFrame([row_values(r, postprocess) for r in recs])
        if vals["patients"].nunique() > 1:
            raise CmrError(f"runs of setting {key[0]}, {key[1]} report different patient sets; rerun them alike")
        rules = sorted({selection_of(r)["rule"] for r in recs})
        row = {"setting": key[0], "key": key[1], "stylizer": STYLIZER_NAMES[key[1]],
               "epsilon": key[2] if uses_epsilon(key[1]) else None,
               "seeds": len(recs), "patients": vals["patients"].iloc[0], "cases": int(vals["cases"].iloc[0]),
               "select": "+".join(rules), "clean": all(selection_is_clean(r) for r in recs)}
        nums = vals.drop(columns=["patients", "cases"]).astype(float)
        row.update(nums.mean().to_dict())
        if len(recs) > 1:
            row.update({f"{c} ci95": v for c, v in ci95(nums).items()})
        out.append(row)
    if not out:
        raise CmrError("no run matches a row of this table; run notebooks/05_settings.ipynb for them first")
    return pd.DataFrame(out)


def key_of(row) -> tuple:
    """The grid key (setting, stylizer, epsilon) of a table row."""
    return (int(row["setting"]), row["key"], int(row["epsilon"]) if uses_epsilon(row["key"]) else 0)


def value(df: pd.DataFrame, key: tuple, col: str) -> float:
    """One cell of a table by row key; NaN when the row is missing."""
    sel = df[(df["setting"] == key[0]) & (df["key"] == key[1])]
    if uses_epsilon(key[1]):
        sel = sel[sel["epsilon"] == key[2]]
    return float(sel[col].iloc[0]) if len(sel) else float("nan")


def ci95(values: pd.DataFrame) -> pd.Series:
    """Half-width of the 95 % confidence interval of each column's mean over rows (seeds): Student's t
    with n - 1 degrees of freedom, n the column's finite values (NaN when fewer than 2)."""
    n = values.notna().sum()
    half = values.std(ddof=1) / np.sqrt(n) * pd.Series(stats.t.ppf(0.975, np.maximum(n - 1, 1)), index=n.index)
    return half.where(n >= 2)


def fmt(v, d: int) -> str:
    """A number with d decimals, or 'nan'."""
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{d}f}"


def markdown(df: pd.DataFrame, *, extra=("HD95", "ASSD")) -> str:
    """The paper's layout: DC per structure and AVG ± STD, HD (mm) likewise, then AVG of extra metrics.

    With several seeds in a row, each per-structure and AVG cell is "mean ± 95 % CI over seeds" and STD
    (over structures) gets its own column."""
    seeds = "seeds" in df and df["seeds"].max() > 1
    head = ["setting", "stylizer", "ε"] + (["seeds"] if seeds else [])
    if seeds:
        cols = [f"{n} {k}" for n in ("DC", "HD") for k in (*STRUCTURES, "AVG", "STD")]
    else:
        cols = [f"{n} {k}" for n in ("DC", "HD") for k in STRUCTURES + ["AVG ± STD"]]
    cols += [f"{m} AVG" for m in extra]
    lines = ["| " + " | ".join(head + cols) + " |", "|" + "---|" * (len(head) + len(cols))]

    def cell(r, col, d):
        h = r.get(f"{col} ci95")
        ci = f" ± {h:.{d}f}" if seeds and h is not None and np.isfinite(h) else ""
        return fmt(r[col], d) + (ci if np.isfinite(r[col]) else "")

    for _, r in df.iterrows():
        eps = "" if r["epsilon"] is None or pd.isna(r["epsilon"]) else str(int(r["epsilon"]))
        dagger = "" if r.get("clean", True) else " †"
        cells = [str(r["setting"]), r["stylizer"] + dagger, eps] + ([str(int(r["seeds"]))] if seeds else [])
        for name, d in (("DC", 3), ("HD", 1)):
            cells += [cell(r, f"{name} {k}", d) for k in STRUCTURES]
            if seeds:
                cells += [cell(r, f"{name} AVG", d), fmt(r[f"{name} STD"], d)]
            else:
                cells.append(f"{fmt(r[f'{name} AVG'], d)} ± {fmt(r[f'{name} STD'], d)}")
        cells += [cell(r, f"{m} AVG", 1) for m in extra]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nCells: mean ± 95 % confidence interval over seeds (Student's t); STD: spread over the three "
            "structures, averaged over seeds.\n") if seeds else ""
    return "\n".join(lines) + "\n" + note + selection_note(df)


def selection_note(df: pd.DataFrame) -> str:
    """One line on how the rows' checkpoints were chosen, and a † warning for rows whose choice saw the labels of
    patients the table reports (segmenter.select 'target', the paper's protocol)."""
    if "select" not in df:
        return ""
    rules = sorted({x for v in df["select"] for x in str(v).split("+")})
    line = "\nCheckpoints chosen on: " + "; ".join(SELECT_NAMES.get(x, x) for x in rules) + "."
    if "clean" in df and not df["clean"].all():
        line += (" † these rows chose their checkpoint on the labels of the patients reported here (the paper's "
                 "protocol): their numbers are not a clean test.")
    return line + "\n"


def write_table(df: pd.DataFrame, out_stem) -> tuple[Path, Path]:
    """results/<name>.csv (all numbers) and .md (the paper's layout), atomically."""
    out_stem = Path(out_stem)
    csv = write_text(out_stem.with_suffix(".csv"), df.to_csv(index=False, float_format="%.4f"))
    md = write_text(out_stem.with_suffix(".md"), markdown(df))
    return Path(csv), Path(md)
