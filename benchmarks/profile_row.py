"""Where a Table 2 row's time goes on this machine: one DRU-Net training step of each kind of row at a
profile's sizes (gpu_check.py's step: the library's BatchAugmenter and optimiser step on random images),
split into phases (the augmentation, the style search's decoder and network forwards, the rest of the
augmentation, which for a searching row is mostly the search's backward, and the optimiser step) and into
torch ops (torch.profiler, self CPU time), beside the phases of the last `make reproduce`.

Shares are fractions of the same step measured in the same process. The stylizers are untrained (random
weights cost the same time); nothing is written but the profile files.

    python benchmarks/profile_row.py [--profile demo] [--reps 4] [--threads 1] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import setting_step  # noqa: E402

from cmr_lib.core.atomic import write_json, write_text  # noqa: E402
from cmr_lib.core.config import make_config  # noqa: E402
from cmr_lib.core.device import device  # noqa: E402

ROWS = (("setting 0, none", 0, "none", 0), ("setting 1, adaconv", 1, "adaconv", 0),
        ("setting 1, rain, no search", 1, "rain", 0), ("setting 1, rain, eps 1", 1, "rain", 1),
        ("setting 1, rain, eps 5", 1, "rain", 5), ("setting 0, slaug", 0, "slaug", 0))
SEARCH = ("search: decoder forward", "search: network forward")


def timed(seconds: dict, name: str, fn):
    """fn, adding its wall time to seconds[name] at each call."""
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - t
    return wrapper


def profile_row(profile: str, setting: int, stylizer: str, eps: int, reps: int) -> dict:
    """Seconds per step, its phases (per step) and the top torch ops (self CPU seconds per step) of one row."""
    cfg = make_config(profile=profile, setting=setting, stylizer=stylizer)
    step = setting_step(cfg, device(), eps)
    seconds = defaultdict(float)
    step.augment = timed(seconds, "augmentation", step.augment)
    step.optimise = timed(seconds, "optimiser step (forward, backward, Adam)", step.optimise)
    aug = step.augmenter
    if hasattr(aug.stylizer, "render"):                     # the stylizers with a style search
        aug.stylizer.render = timed(seconds, SEARCH[0], aug.stylizer.render)
    aug._loss = timed(seconds, SEARCH[1], aug._loss)
    for i in range(2):                                      # warm-up
        step(i)
    seconds.clear()
    t = time.perf_counter()
    for i in range(reps):
        step(2 + i)
    per_step = (time.perf_counter() - t) / reps
    phases = {k: v / reps for k, v in seconds.items()}
    if "augmentation" in phases:
        phases["augmentation: the rest"] = phases.pop("augmentation") - sum(phases.get(k, 0.0) for k in SEARCH)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(2):
            step(2 + reps + i)
    ops = sorted(((e.key, e.self_cpu_time_total / 2e6) for e in prof.key_averages()), key=lambda kv: -kv[1])
    return {"seconds_per_step": per_step, "phases": {k: round(v, 4) for k, v in phases.items() if v > 0},
            "top_ops": [(k, round(v, 4)) for k, v in ops[:8]], "iterations": cfg.sizes.segmenter.iterations,
            "training_seconds": round(per_step * cfg.sizes.segmenter.iterations, 1)}


def reproduce_phases(path: Path) -> dict:
    """Seconds per kind of step of the last `make reproduce`, as each step last really ran."""
    if not path.is_file():
        return {}
    out = defaultdict(float)
    for s in json.loads(path.read_text())["steps"]:
        name = s["step"]
        kind = ("Table 2/3 rows" if " row: " in name else "stylizers" if "stylizer" in name.lower()
                else "analysis (06, 07)" if name.startswith(("analysis", "beyond")) else name)
        out[kind] += s["seconds_when_run"]
    return {k: round(v, 1) for k, v in out.items()}


def markdown(result: dict) -> str:
    lines = [f"# Where a row's time goes: profile {result['profile']}, {result['threads']} thread(s), "
             f"torch {torch.__version__}", "",
             "| row | s / step | training (s) | phases, share of the step |", "|---|---|---|---|"]
    for name, r in result["rows"].items():
        share = sorted(r["phases"].items(), key=lambda kv: -kv[1])
        lines.append(f"| {name} | {r['seconds_per_step']:.3f} | {r['training_seconds']:.0f} | "
                     + "; ".join(f"{k} {v / r['seconds_per_step']:.0%}" for k, v in share) + " |")
    lines += ["", "Top torch ops by self CPU time, seconds per step:", ""]
    lines += [f"- {name}: " + ", ".join(f"`{k}` {v:.3f}" for k, v in r["top_ops"][:6])
              for name, r in result["rows"].items()]
    if result["reproduce_phases"]:
        lines += ["", "The last `make reproduce` (results/reproduce.json), seconds as each step last ran:", ""]
        lines += [f"- {k}: {v:.0f} s" for k, v in sorted(result["reproduce_phases"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (make reproduce: 1 per parallel row)")
    ap.add_argument("--rows", default=None, help="comma-separated indices into ROWS (default: all)")
    ap.add_argument("--out", default="benchmarks/results", help="folder for profile_row_<profile>.md/.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    picked = ROWS if args.rows is None else [ROWS[int(i)] for i in args.rows.split(",")]
    result = {"profile": args.profile, "threads": args.threads, "rows": {},
              "reproduce_phases": reproduce_phases(Path("results/reproduce.json")) if args.profile == "demo" else {}}
    for name, setting, stylizer, eps in picked:
        result["rows"][name] = profile_row(args.profile, setting, stylizer, eps, args.reps)
        print(f"{name}: {result['rows'][name]['seconds_per_step']:.3f} s/step", flush=True)
    save(Path(args.out) / f"profile_row_{Path(args.profile).stem}", result, markdown(result))   # a YAML path: its name
    return result


def save(stem: Path, result: dict, text: str) -> None:
    """The figures as <stem>.json and their Markdown as <stem>.md (each written whole), and the Markdown printed."""
    write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
