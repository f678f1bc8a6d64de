"""Does a refactor change any result? The same rows (seed 0) run with whichever cmr_lib is first on the path, then
two such runs compared metric by metric and by checkpoint folder name (the fingerprint of everything that trained
it). Run the old code from a worktree with PYTHONPATH pointing at it, the new from the repository:

    git worktree add /tmp/old <commit> && ln -s "$PWD/data" /tmp/old/data
    (cd /tmp/old && PYTHONPATH=/tmp/old python benchmarks/same_rows.py run /tmp/rows_old)
    python benchmarks/same_rows.py run /tmp/rows_new
    python benchmarks/same_rows.py compare /tmp/rows_old /tmp/rows_new --out benchmarks/results/same_rows.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import cmr_lib
from cmr_lib.core.atomic import write_json, write_text
from cmr_lib.core.config import make_config
from cmr_lib.study.runs import run_setting

ROWS = (("demo", 0, "none"), ("smoke", 3, "rain"), ("smoke", 1, "adaconv-vae"), ("smoke", 0, "slaug"))


def run(out: Path) -> dict:
    """Each row of ROWS trained and scored from scratch into out/<profile>; the records' scores and the names of the
    checkpoint folders go to out.json."""
    torch.set_num_threads(2)
    lib = Path(cmr_lib.__file__).parent
    git = subprocess.run(["git", "-C", str(lib), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(lib), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    result = {"lib": f"{git.stdout.strip() or 'unknown'}{' (uncommitted changes)' if dirty else ''}", "rows": {}}
    for profile, setting, stylizer in ROWS:
        t = time.perf_counter()
        cfg = make_config(profile=profile, setting=setting, stylizer=stylizer, seed=0, output_root=out / profile)
        r = run_setting(cfg, progress=False)
        result["rows"][f"{profile} setting {setting} {stylizer}"] = {
            "seconds": round(time.perf_counter() - t, 1), "segmenter": r.segmenter.run_dir.name,
            "stylizer": r.stylizer.run_dir.name if r.stylizer else None,
            "summary": r.record["summary"], "metrics": r.record["metrics"]}
    write_json(out.with_suffix(".json"), result)
    return result


def compare(old: dict, new: dict) -> str:
    lines = [f"# The same rows before and after a change\n\nBefore: commit `{old['lib']}`; after: commit `{new['lib']}` "
             "(benchmarks/same_rows.py; seed 0, two threads, one machine).\n",
             "| row | checkpoints (same name = same fingerprint) | Dice AVG | per-case metrics |", "|---|---|---|---|"]
    for key, a in old["rows"].items():
        b = new["rows"].get(key)
        if b is None:
            lines.append(f"| {key} | missing after | | |")
            continue
        part = "test" if a["summary"]["test"] else "val"
        names = "same" if (a["segmenter"], a["stylizer"]) == (b["segmenter"], b["stylizer"]) else "DIFFERENT"
        dice = f"{a['summary'][part]['dice']['AVG']:.4f} → {b['summary'][part]['dice']['AVG']:.4f}"
        same = "identical" if a["metrics"] == b["metrics"] and a["summary"] == b["summary"] else "DIFFERENT"
        lines.append(f"| {key} | {names} (`{b['segmenter']}`) | {dice} | {same} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.out)
        return 0
    text = compare(*(json.loads(p.with_suffix(".json").read_text()) for p in (args.old, args.new)))
    if args.out:
        write_text(args.out, text)
    print(text, end="")
    return 0 if "DIFFERENT" not in text else 1


if __name__ == "__main__":
    sys.exit(main())
