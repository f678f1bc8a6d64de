"""Does torch.compile pay for a Table 2 row on this machine? One DRU-Net training step of a few kinds of row
(gpu_check.py's step: the library's BatchAugmenter and optimiser step on random images), eager and with the
segmenter compiled, in the same process: the compile warm-up, the seconds per step after it, their ratio and
the steps a row would need to earn the warm-up back.

A row trains `segmenter.iterations` steps (250 in demo), so the warm-up must be earned back within them.

    python benchmarks/bench_compile.py [--profile demo] [--reps 3] [--threads 1] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402
import profile_row  # noqa: E402

from cmr_lib.core.config import make_config  # noqa: E402
from cmr_lib.core.device import device, precision_used  # noqa: E402

ROWS = (profile_row.ROWS[0], profile_row.ROWS[4])           # setting 0, none; setting 1, rain, eps 5


def timed_row(cfg, eps: int, reps: int, compiled: bool) -> dict:
    """Warm-up seconds (the first three steps, where compilation happens) and seconds per step after them."""
    build = gpu_check.segmenter_for_training
    if compiled:
        gpu_check.segmenter_for_training = lambda c, dev: torch.compile(build(c, dev), dynamic=False)
    try:
        torch.manual_seed(0)
        step = gpu_check.setting_step(cfg, device(), eps)
    finally:
        gpu_check.segmenter_for_training = build
    t = time.perf_counter()
    for i in range(3):
        step(i)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(reps):
        step(3 + i)
    return {"warmup_seconds": round(warm, 2), "seconds_per_step": round((time.perf_counter() - t) / reps, 4)}


def markdown(result: dict) -> str:
    lines = [f"# torch.compile on a row's step: profile {result['profile']}, {result['threads']} thread(s), "
             f"{result['precision']}, torch {torch.__version__}", "",
             "| row | eager s/step | compiled s/step | compiled / eager | compile warm-up (s) | "
             "steps to earn it back | steps in a row |", "|---|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        e, c = r["eager"], r["compiled"]
        gain = e["seconds_per_step"] - c["seconds_per_step"]
        back = f"{c['warmup_seconds'] / gain:.0f}" if gain > 0 else "never (compiled is not faster)"
        lines.append(f"| {name} | {e['seconds_per_step']:.3f} | {c['seconds_per_step']:.3f} | "
                     f"{c['seconds_per_step'] / e['seconds_per_step']:.2f} | {c['warmup_seconds']:.0f} | {back} | "
                     f"{result['iterations']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (make reproduce: 1 per parallel row)")
    ap.add_argument("--out", default="benchmarks/results", help="folder for bench_compile_<profile>.md/.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = make_config(profile=args.profile)
    result = {"profile": args.profile, "threads": args.threads, "iterations": base.sizes.segmenter.iterations,
              "precision": precision_used(base.sizes.segmenter.precision, device()), "rows": {}}
    for name, setting, stylizer, eps in ROWS:
        cfg = make_config(profile=args.profile, setting=setting, stylizer=stylizer)
        r = {mode: timed_row(cfg, eps, args.reps, mode == "compiled") for mode in ("eager", "compiled")}
        result["rows"][name] = r
        print(f"{name}: {r}", flush=True)
    profile_row.save(Path(args.out) / f"bench_compile_{args.profile}", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
