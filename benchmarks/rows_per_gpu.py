"""Rows per GPU (issue 38): the paper profile's DRU-Net rows are launch-bound on one GPU, so several rows sharing
it may finish more steps per second than one row alone. This runs k copies of one row's training step at once on
one device (k processes, as `make reproduce GPUS=0 JOBS=k` would) for k in --rows, and reports the aggregate steps
per second and the speed-up over one row; `make reproduce` takes its default rows per GPU from such a measurement.

Each process builds the row's step as benchmarks/gpu_check.py does (random images of the profile's size, the
library's own BatchAugmenter and optimiser step), warms it up, waits for the others, then times --steps steps.

    python benchmarks/rows_per_gpu.py [--profile paper] [--row 1:rain:5] [--rows 1 2 4] [--steps 20] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import setting_step, sync  # noqa: E402

from cmr_lib.core.atomic import write_json, write_text  # noqa: E402
from cmr_lib.core.config import make_config  # noqa: E402
from cmr_lib.core.device import device  # noqa: E402


def _worker(profile: str, row: tuple, steps: int, threads: int, barrier, queue) -> None:
    torch.set_num_threads(threads)
    setting, stylizer, eps = row
    cfg = make_config(profile=profile, setting=setting, stylizer=stylizer)
    dev = device()
    step = setting_step(cfg, dev, eps)
    for i in range(3):                                   # warm-up: cuDNN autotuning, the allocator
        step(i)
    sync(dev)
    barrier.wait()
    t = time.perf_counter()
    for i in range(steps):
        step(3 + i)
    sync(dev)
    queue.put(time.perf_counter() - t)


def measure(profile: str, row: tuple, k: int, steps: int, threads: int) -> dict:
    """k processes running `steps` steps of the row each at once: the wall time and the aggregate steps/s."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(profile, row, steps, threads, barrier, queue)) for _ in range(k)]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    t = time.perf_counter()
    own = [queue.get(timeout=3600) for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise SystemExit(f"rows_per_gpu: a worker failed (exit codes {[p.exitcode for p in procs]})")
    return {"rows": k, "wall_seconds": round(wall, 3), "steps_per_second": round(k * steps / wall, 3),
            "slowest_row_seconds": round(max(own), 3)}


def markdown(result: dict) -> str:
    base = result["runs"][0]["steps_per_second"]
    lines = [f"# Rows per GPU: {result['row']} at the `{result['profile']}` profile's sizes on {result['device']}", "",
             f"{result['steps']} training steps per row after warm-up; k rows at once, each its own process "
             "(benchmarks/rows_per_gpu.py).", "",
             "| rows at once | wall (s) | steps/s, all rows | × one row |", "|---|---|---|---|"]
    lines += [f"| {r['rows']} | {r['wall_seconds']:.2f} | {r['steps_per_second']:.2f} | "
              f"{r['steps_per_second'] / base:.2f} |" for r in result["runs"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--row", default="1:rain:5", help="setting:stylizer:epsilon, e.g. 0:none:0 or 1:rain:5")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    ap.add_argument("--out", default=None, help="write the result here as JSON (and a .md beside it)")
    args = ap.parse_args(argv)
    setting, stylizer, eps = args.row.split(":")
    row = (int(setting), stylizer, int(eps))
    dev = device()
    result = {"profile": args.profile, "row": args.row, "steps": args.steps,
              "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "runs": []}
    for k in args.rows:
        result["runs"].append(measure(args.profile, row, k, args.steps, args.threads))
        print(json.dumps(result["runs"][-1]), flush=True)
        if args.out:
            write_json(args.out, result)
    if args.out:
        write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
