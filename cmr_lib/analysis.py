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
TABLE2_ROWS = [(0, "none", 0), (1, "rain", 5), (1, "adaconv", 0), (2, "rain", 5), (2, "adaconv", 0),
               (3, "rain", 5), (3, "adaconv", 0)]
TABLE3_ROWS = [(1, "rain", 1), (1, "rain", 3), (1, "rain", 5)]
STYLIZER_NAMES = {"none": "none", "rain": "RAIN", "adaconv": "AdaConv"}
METRIC_NAMES = {"dice": "DC", "hd": "HD", "hd95": "HD95", "assd": "ASSD"}


def load_runs(results_dir, *, profile: str | None = None, seed: int | None = None,
              allow_mixed: bool = False) -> list[dict]:
    """The run.json records under results_dir/runs (optionally one profile and seed).

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
        if (profile is None or rec["profile"] == profile) and (seed is None or rec.get("seed") == seed):
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
    eps = record.get("epsilon_iterations", 0) if record["stylizer"] == "rain" else 0
    return (int(record["setting"]), record["stylizer"], int(eps))


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
        row = {"setting": key[0], "stylizer": STYLIZER_NAMES[key[1]], "epsilon": key[2] if key[1] == "rain" else None,
               "seeds": len(recs), "patients": vals["patients"].iloc[0], "cases": int(vals["cases"].iloc[0])}
        row.update(vals.drop(columns=["patients", "cases"]).astype(float).mean().to_dict())
        out.append(row)
    if not out:
        raise CmrError("no run matches a row of this table; run notebooks/05_settings.ipynb for them first")
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame, *, extra=("HD95", "ASSD")) -> str:
    """The paper's layout: DC per structure and AVG ± STD, HD (mm) likewise, then AVG of extra metrics."""
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
                                           f"{_get(t2, s, 'AdaConv', 'HD AVG'):.1f} mm ({r:+.0%})"
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
    stylized = t2[t2["setting"] > 0]
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


def _label(key) -> str:
    s, k, e = key
    return "setting 0 (none)" if s == 0 else f"setting {s}, {STYLIZER_NAMES[k]}" + (f" ε{e}" if k == "rain" else "")


def prediction_grid(records: list[dict], source, *, patients: int = 3, rows=TABLE2_ROWS):
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
                       rows=TABLE2_ROWS):
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
