"""One training step of every trainer at a profile's sizes (default `paper`: RAIN 224 px, AdaConv 256 px, full
VGG-19, DRU-Net depth 5), in fp32 and bf16, with the device's matmul rate measured in the same process as the
reference; then the wall time of the profile's whole `make reproduce` extrapolated from the step times.

Each step is the library's own training step (model losses, backward, Adam; the DRU-Net's steps go through
training.augment.BatchAugmenter as a setting run does) on random images of the profile's size, so data
loading and validation are left out: the extrapolation is a lower bound on a GPU that is kept fed.

    python benchmarks/gpu_check.py [--profile paper] [--reps 10] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from cmr_lib.core.config import make_config
from cmr_lib.core.device import autocast, bf16_supported, device, memory_format
from cmr_lib.core.grid import reproduce_rows, uses_epsilon
from cmr_lib.models.adain import Decoder
from cmr_lib.models.vgg import VGGEncoder, build_encoder
from cmr_lib.training.augment import BatchAugmenter
from cmr_lib.training.segmenters import _optimise, segmenter_for_training, segmenter_optimizer
from cmr_lib.training.stylizers import build_stylizer, optimise_stylizer

PRETRAININGS = (("rain", "C0-T2"), ("rain", "C0-LGE"), ("adaconv", "C0-T2"), ("adaconv", "C0-LGE"))


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(dtype, dev, n: int, reps: int = 10) -> float:
    """TFLOP/s of an n x n x n matmul in `dtype`: the reference rate of this device."""
    a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def time_step(step, dev, reps: int) -> dict:
    """Seconds per call of step(i) after warm-up (cuDNN autotuning, allocator), and its FLOPs per call."""
    for i in range(3):
        step(i)
    try:
        with FlopCounterMode(display=False) as counter:
            step(3)
        tflop = counter.get_total_flops() / 1e12
    except RuntimeError:                # the counter cannot follow autograd.grad (RAIN's style search)
        tflop = None
    sync(dev)
    t = time.perf_counter()
    for i in range(reps):
        step(4 + i)
    sync(dev)
    seconds = (time.perf_counter() - t) / reps
    return {"seconds": seconds, "tflop": tflop}


def stylizer_step(kind: str, cfg, dev):
    """RAIN's or AdaConv's training step (train_stylizer's step_fn) on random content and style images."""
    st = cfg.sizes.stylizer
    enc, _ = build_encoder("random", width=st.encoder_width)
    model = build_stylizer(kind, enc, cfg.sizes.stylizer, cfg.crop_for(kind))
    size = cfg.crop_for(kind)
    if hasattr(model, "calibrate"):
        model.calibrate(torch.rand(16, 1, size, size))
    fmt = memory_format(st.precision, dev)
    model.to(dev).to(memory_format=fmt).train()
    opt = torch.optim.Adam(model.trainable(), lr=st.lr)
    c = torch.rand(st.batch, 1, size, size, device=dev).contiguous(memory_format=fmt)
    s = torch.rand(st.batch, 1, size, size, device=dev).contiguous(memory_format=fmt)

    return lambda i: optimise_stylizer(cfg.sizes.stylizer, kind, cfg.seed, model, opt, c, s, i, dev)


def autoencoder_step(cfg, dev):
    """The offline 'mr' encoder's pre-training step (encoder and decoder both learn)."""
    ae = cfg.sizes.stylizer.autoencoder
    enc, dec = VGGEncoder(width=cfg.sizes.stylizer.encoder_width).requires_grad_(True), Decoder(
        width=cfg.sizes.stylizer.encoder_width)
    enc.to(dev), dec.to(dev)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=ae.lr)
    size = cfg.sizes.preprocess.crop.none
    x = torch.rand(ae.batch, 1, size, size, device=dev)

    def step(i):
        with autocast(cfg.sizes.stylizer.precision, dev):
            loss = torch.nn.functional.mse_loss(dec(enc(x, last_only=True)).float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def setting_step(cfg, dev, epsilon: int):
    """A setting run's DRU-Net step (train_setting's step_fn): the batch augmented by BatchAugmenter (RAIN's
    search against the network being trained, SLAug's saliency...), then the original batch beside it."""
    sg = cfg.sizes.segmenter
    stylizer = None
    if cfg.network:
        enc, _ = build_encoder("random", width=cfg.sizes.stylizer.encoder_width)
        stylizer = build_stylizer(cfg.network, enc, cfg.sizes.stylizer, cfg.crop)
        if hasattr(stylizer, "calibrate"):
            stylizer.calibrate(torch.rand(16, 1, cfg.crop, cfg.crop))
    no_styles = types.SimpleNamespace(items=[], volumes=[])        # styles are passed to each call below
    aug = BatchAugmenter(cfg, stylizer=stylizer, styles=no_styles if stylizer or cfg.baseline else None,
                         epsilon_iterations=epsilon)
    model = segmenter_for_training(cfg.sizes.segmenter, dev).train()
    opt = segmenter_optimizer(sg, model)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(sg.batch, 1, cfg.crop, cfg.crop, generator=g).to(dev)
    y = torch.randint(0, 4, (sg.batch, cfg.crop, cfg.crop), generator=g).to(dev)
    s = torch.rand(sg.batch, 1, cfg.crop, cfg.crop, generator=g).to(dev)
    augmenting = bool(cfg.network or cfg.baseline)

    def step(i):
        xb, yb = x, y
        if augmenting:
            xs, ys = step.augment(None, x, y, np.random.default_rng(i), i, segmenter=model, styles=s)
            xb, yb = torch.cat([xs, x]), torch.cat([ys, y])
        step.optimise(sg, model, opt, xb, yb, i, dev)
    step.augmenter, step.augment, step.optimise = aug, aug, _optimise    # profile_row.py times each part
    return step


def measure(profile: str, precision: str, reps: int, dev, record=lambda steps: None) -> dict:
    """Step times of every trainer and every reproduce row of `profile` in one precision; `record(steps)` is
    called after each one (the figures survive a time limit)."""
    over = {"stylizer.precision": precision, "segmenter.precision": precision}
    base = make_config(profile=profile, overrides=over)
    jobs = [("autoencoder", lambda: autoencoder_step(base, dev))]
    jobs += [(kind, lambda kind=kind: stylizer_step(kind, base, dev)) for kind in ("rain", "adaconv")]
    for setting, stylizer, eps in reproduce_rows():
        cfg = make_config(profile=profile, setting=setting, stylizer=stylizer, overrides=over)
        jobs.append((f"setting{setting}_{stylizer}_eps{eps}", lambda cfg=cfg, eps=eps: setting_step(cfg, dev, eps)))
    out = {}
    for key, build in jobs:
        out[key] = time_step(build(), dev, reps)
        print(f"  {precision} {key}: {out[key]['seconds'] * 1e3:.1f} ms/step", flush=True)
        record(out)
    return out


def extrapolate(profile: str, steps: dict, seeds: int) -> dict:
    """Hours of the profile's `make reproduce` from step times: the offline encoder's pre-training, the four
    stylizer pre-trainings and every reproduce row, per seed and for `seeds` seeds (validation and data
    loading left out)."""
    cfg = make_config(profile=profile)
    st, sg = cfg.sizes.stylizer, cfg.sizes.segmenter
    parts = {"autoencoder": st.autoencoder.iterations * steps["autoencoder"]["seconds"]}
    for kind, pair in PRETRAININGS:
        parts[f"{kind} {pair}"] = st.iterations * steps[kind]["seconds"]
    for setting, stylizer, eps in reproduce_rows():
        key = f"setting{setting}_{stylizer}_eps{eps}"
        parts[key] = sg.iterations * steps[key]["seconds"]
    per_seed = sum(parts.values())
    return {"seconds_per_part_one_seed": {k: round(v, 1) for k, v in parts.items()},
            "hours_one_seed": round(per_seed / 3600, 2), "seeds": seeds,
            "hours_all_seeds": round(per_seed * seeds / 3600, 2),
            "rain_eps_rows_share": round(sum(v for k, v in parts.items()
                                             if k.startswith("setting") and uses_epsilon(k.split("_")[1])
                                             and not k.endswith("eps0")) / per_seed, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--matmul-n", type=int, default=8192, help="size of the reference matmul")
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    dev = device()
    torch.manual_seed(0)
    info = {"device": str(dev), "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "profile": args.profile}
    precisions = ["fp32"] + (["bf16"] if bf16_supported(dev) else [])
    rates = {p: matmul_tflops(torch.float32 if p == "fp32" else torch.bfloat16, dev, args.matmul_n) for p in precisions}
    info["matmul_tflops"] = {p: float(f"{r:.4g}") for p, r in rates.items()}   # 2 decimals made a busy CPU 0.0
    print(json.dumps(info), flush=True)
    result = {"machine": info, "steps": {}, "extrapolation": {}}

    def record(steps, p):
        for v in steps.values():
            v["tflops"] = None if v["tflop"] is None else round(v["tflop"] / v["seconds"], 3)
            v["fraction_of_matmul"] = None if v["tflop"] is None else round(v["tflops"] / info["matmul_tflops"][p], 4)
        result["steps"][p] = steps
        if args.out:                                     # rewritten after each step: a kill keeps what ran
            Path(args.out).write_text(json.dumps(result, indent=1))

    for p in precisions:
        steps = measure(args.profile, p, args.reps, dev, record=lambda steps, p=p: record(steps, p))
        seeds = make_config(profile=args.profile).sizes.reproduce.seeds
        result["extrapolation"][p] = extrapolate(args.profile, steps, seeds)
        record(steps, p)
        print(f"{p}: {json.dumps(result['extrapolation'][p])}", flush=True)
    print("\n" + render(result))
    return 0


def render(result: dict) -> str:
    """The figures as a Markdown table: ms per step and fraction of the matmul rate, per precision."""
    precisions = list(result["steps"])
    head = "| step | " + " | ".join(f"{p} ms | {p} of matmul" for p in precisions) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(precisions))]
    for key in result["steps"][precisions[0]]:
        cells = [f"{r['seconds'] * 1e3:.1f} | " + ("n/a" if r["fraction_of_matmul"] is None
                                                     else f"{r['fraction_of_matmul']:.1%}")
                 for r in (result["steps"][p][key] for p in precisions)]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for p in precisions:
        e = result["extrapolation"][p]
        lines.append(f"\n{p}: one seed {e['hours_one_seed']} h, {e['seeds']} seeds {e['hours_all_seeds']} h "
                     f"(RAIN style-search rows {e['rain_eps_rows_share']:.0%} of it)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
