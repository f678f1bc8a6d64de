"""Two tabulated reproductions side by side when their run records are not both at hand: each row's DC AVG and
HD AVG on the data set's own patients (table2.csv) and on the other test sets (cross_dataset.csv), before and
after, with the difference. Unlike compare_runs.py (which reads run.json records and tests over seeds) this reads
only the committed tables, so it can set a fresh run beside tables made under an older protocol; the seed counts
and the checkpoint rule of each side are shown, so the reader sees what changed besides the code.

    python benchmarks/table_delta.py --before real/mscmrseg2019/results --after NEW/results --out FILE.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmr_lib.core.atomic import write_text  # noqa: E402
from cmr_lib.core.errors import CmrError, cli_main  # noqa: E402

KEYS = ["setting", "key", "epsilon"]


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise CmrError(f"{path}: no such table (run notebook 06 first)")
    df = pd.read_csv(path)
    df["epsilon"] = df["epsilon"].fillna(-1).astype(int)
    return df


def side_by_side(before: Path, after: Path) -> pd.DataFrame:
    """One line per row present on both sides: seeds, rule, DC/HD on the own patients and on each other set."""
    b, a = _read(before, "table2.csv"), _read(after, "table2.csv")
    cols = {"DC AVG": "own DC", "HD AVG": "own HD"}
    for df, folder in ((b, before), (a, after)):
        cross = _read(folder, "cross_dataset.csv")
        other = [c for c in cross.columns if c.endswith((" DC", " HD")) and "(own" not in c]
        df[other] = df[KEYS].merge(cross[KEYS + other], on=KEYS, how="left")[other].to_numpy()
        if "select" not in df:
            df["select"] = "target"          # the rule of records made before `segmenter.select` existed
    other = sorted({c for c in a.columns if c.endswith((" DC", " HD")) and not c.startswith(("DC ", "HD "))}
                   & set(b.columns))
    keep = KEYS + ["stylizer", "seeds", "select", *cols, *other]
    m = b[keep].rename(columns=cols).merge(a[keep].rename(columns=cols), on=KEYS + ["stylizer"],
                                            suffixes=(" before", " after"))
    for c in [*cols.values(), *other]:
        m[f"{c} Δ"] = m[f"{c} after"] - m[f"{c} before"]
    return m


def markdown(m: pd.DataFrame) -> str:
    metrics = [c[:-len(" before")] for c in m.columns if c.endswith(" before") and c not in ("seeds before",
                                                                                              "select before")]
    head = ["setting", "stylizer", "ε", "seeds", "checkpoint rule"] + [f"{c} before → after (Δ)" for c in metrics]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for _, r in m.iterrows():
        cells = [str(r["setting"]), r["stylizer"], "" if r["epsilon"] < 0 else str(r["epsilon"]),
                 f"{r['seeds before']} → {r['seeds after']}", f"{r['select before']} → {r['select after']}"]
        for c in metrics:
            d = 3 if "DC" in c else 1
            cells.append(f"{r[c + ' before']:.{d}f} → {r[c + ' after']:.{d}f} ({r[c + ' Δ']:+.{d}f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, type=Path)
    p.add_argument("--after", required=True, type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    text = markdown(side_by_side(args.before, args.after))
    if args.out:
        write_text(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
