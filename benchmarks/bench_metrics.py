"""Evaluator speed against medpy on 45 volumes of 12x256x256 (the issue's target: at least 3x faster).

Both compute Dice, HD, HD95 and ASSD for MYO, LV and RV per volume; medpy is called as an evaluation
script would call it (dc, hd, hd95, assd per structure). Prints the agreement and the speed ratio.

    python benchmarks/bench_metrics.py [--volumes 45]
"""
import argparse
import time

import numpy as np

from cmr_lib.evaluation.metrics import evaluate_volume

try:
    from medpy.metric import binary as medpy
except ImportError:  # the [dev] extra holds it
    raise SystemExit("medpy is needed for this benchmark: pip install -e '.[dev]'")


def heart_volume(rng, shape=(256, 256, 12)):
    """A reference label volume (LV disc, MYO ring, RV crescent, shrinking to the apex) and a perturbed prediction."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    cx, cy = rng.uniform(100, 156, 2)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for z in range(2, shape[2] - 1):
        s = np.sqrt(np.clip((z - 1) / 6, 0, 1))
        for vol, jitter in ((ref, 0.0), (pred, 1.0)):
            dx, dy = rng.normal(0, 2.0 * jitter, 2)
            r = np.hypot(x - cx - dx, y - cy - dy) * (1 + jitter * rng.normal(0, 0.05))
            rr = np.hypot(x - cx + 38 * s - dx, y - cy - dy)
            vol[(rr < 34 * s) & (r >= 32 * s)] = 3
            vol[r < 32 * s] = 1
            vol[r < 22 * s] = 2
    return pred, ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=45)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    spacing = (1.25, 1.25, 10.0)
    cases = [heart_volume(rng) for _ in range(args.volumes)]

    t0 = time.perf_counter()
    ours = [evaluate_volume(p, r, spacing) for p, r in cases]
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = []
    for p, r in cases:
        row = {}
        for cls, name in ((1, "MYO"), (2, "LV"), (3, "RV")):
            a, b = p == cls, r == cls
            row[name] = {"dice": medpy.dc(a, b), "hd": medpy.hd(a, b, spacing), "hd95": medpy.hd95(a, b, spacing),
                         "assd": medpy.assd(a, b, spacing)}
        ref.append(row)
    t_medpy = time.perf_counter() - t0

    diff = max(abs(o[s][k] - m[s][k]) for o, m in zip(ours, ref) for s in o for k in o[s])
    print(f"volumes: {args.volumes} x {cases[0][0].shape}, spacing {spacing} mm")
    print(f"cmr_lib.evaluation.metrics : {t_ours:7.2f} s ({1000 * t_ours / args.volumes:6.1f} ms/volume)")
    print(f"medpy 0.5       : {t_medpy:7.2f} s ({1000 * t_medpy / args.volumes:6.1f} ms/volume)")
    print(f"speed-up vs medpy: {t_medpy / t_ours:.1f}x   max |difference|: {diff:.2e}")
    if diff > 1e-6:
        raise SystemExit("metrics disagree with medpy beyond 1e-6")


if __name__ == "__main__":
    main()
