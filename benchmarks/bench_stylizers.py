"""Stylization throughput of RAIN and AdaConv at the paper's sizes (RAIN 224 px, AdaConv 256 px, full
VGG-19), on this machine: images/s, the FLOP rate reached as a fraction of a plain torch matmul's rate in
the same dtype measured in the same process, and peak memory.

Variants: fp32 and bf16 autocast, each NCHW and channels-last, all under torch.inference_mode(). bf16 is
measured only where the CPU (AVX-512 BF16 / AMX) or GPU supports it; fp32 is the fallback.

    python benchmarks/bench_stylizers.py [--batch 8] [--reps 3]
"""
import argparse
import json
import multiprocessing as mp
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cmr_lib.core.device import bf16_supported, device
from cmr_lib.models.adaconv import AdaConv
from cmr_lib.models.rain import RAIN
from cmr_lib.models.vgg import build_encoder


def matmul_rate(dtype, dev, n=4096, reps=5) -> float:
    """GFLOP/s of an n x n matmul in `dtype` (the reference rate)."""
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def measure(kind: str, batch: int, reps: int, queue):
    torch.manual_seed(0)
    dev = device()
    enc, _ = build_encoder("random", width=1.0)
    size = 224 if kind == "rain" else 256
    model = (RAIN(enc) if kind == "rain" else AdaConv(enc, image_size=size)).to(dev).eval()
    content = torch.rand(batch, 1, size, size, device=dev)
    style = torch.rand(batch, 1, size, size, device=dev)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.stylize(content, style)
    flops = counter.get_total_flops()
    rates = {"fp32": matmul_rate(torch.float32, dev)}
    variants = [("fp32", False), ("fp32", True)]
    if bf16_supported(dev):
        rates["bf16"] = matmul_rate(torch.bfloat16, dev)
        variants += [("bf16", False), ("bf16", True)]
    rows = []
    for dtype, channels_last in variants:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        c, s = content.to(memory_format=fmt), style.to(memory_format=fmt)
        ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "bf16"
               else torch.autocast(dev.type, enabled=False))
        with torch.inference_mode(), ctx:
            model.stylize(c, s)                                   # warm-up (oneDNN primitive creation)
            t = time.perf_counter()
            for _ in range(reps):
                model.stylize(c, s)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / reps
        gflops = flops / dt / 1e9
        rows.append({"variant": f"{dtype}{' channels-last' if channels_last else ''}", "images_per_s": batch / dt,
                     "gflop_per_s": gflops, "fraction_of_matmul": gflops / rates[dtype]})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"kind": kind, "size": size, "gflop_per_image": flops / batch / 1e9, "matmul_gflop_per_s": rates,
               "rows": rows, "peak_rss_mib": peak,
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if dev.type == "cuda" else None})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    results = []
    for kind in ("rain", "adaconv"):                  # one process each, so peak memory is the model's own
        q = ctx.Queue()
        p = ctx.Process(target=measure, args=(kind, args.batch, args.reps, q))
        p.start()
        results.append(q.get())
        p.join()
    print(f"device: {device()}, threads: {torch.get_num_threads()}, batch {args.batch}")
    for r in results:
        rates = ", ".join(f"{k} {v:.0f}" for k, v in r["matmul_gflop_per_s"].items())
        print(f"\n{r['kind'].upper()} at {r['size']} px: {r['gflop_per_image']:.1f} GFLOP per stylized image; "
              f"matmul reference GFLOP/s: {rates}; peak RSS {r['peak_rss_mib']:.0f} MiB")
        print(f"  {'variant':<22}{'images/s':>10}{'GFLOP/s':>10}{'of matmul':>11}")
        for row in r["rows"]:
            print(f"  {row['variant']:<22}{row['images_per_s']:>10.2f}{row['gflop_per_s']:>10.0f}"
                  f"{row['fraction_of_matmul']:>10.0%}")
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
