"""Whole-volume inference (evaluation.inference.predict): the order-1 resampling through torch's bilinear against
scipy's grid-mode zoom, in the same process, on the same volumes and network.

Every test score, validation, the cross-dataset table and the domain gap go through `predict`, which resamples
each volume to the profile's spacing and the class probabilities back to the stored grid. Prints seconds per
volume for both paths, their ratio and the share of voxels whose predicted label agrees. The network is an
untrained DRU-Net of the profile (its weights do not change the cost); the volumes are the real MyoPS LGE when
the sample set is found, else the phantom's.

    python benchmarks/bench_inference.py [--profile demo] [--threads 1] [--volumes 20] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_row import save  # noqa: E402

from cmr_lib.core.config import make_config  # noqa: E402
from cmr_lib.data import transforms  # noqa: E402
from cmr_lib.data.sources import find_real_data, open_source, source_for  # noqa: E402
from cmr_lib.evaluation.inference import predict  # noqa: E402
from cmr_lib.training.segmenters import build_segmenter  # noqa: E402


def timed_predictions(model, vols, cfg, reps: int = 2) -> tuple[float, list]:
    """Best of `reps` passes: seconds per volume, and the predictions of the last pass."""
    best, preds = float("inf"), []
    for _ in range(reps):
        t = time.perf_counter()
        preds = [predict(model, v, cfg.inference) for v in vols]
        best = min(best, (time.perf_counter() - t) / len(vols))
    return best, preds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (make reproduce: 1 per parallel row)")
    ap.add_argument("--volumes", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = make_config(profile=args.profile, setting=0)
    real = find_real_data()
    src = open_source(real["myops"]) if "myops" in real else source_for(None, phantom_data=cfg.sizes.data,
                                                                         progress=False)
    vols = [src.load(p, "LGE", label="require") for p in src.patients_with("LGE", labelled=True)][: args.volumes]
    model = build_segmenter(cfg.sizes.segmenter).eval()
    fast, new = timed_predictions(model, vols, cfg)
    with mock.patch.object(transforms, "resize", transforms.zoom_resize), \
            mock.patch("cmr_lib.evaluation.inference.resize", transforms.zoom_resize):
        slow, old = timed_predictions(model, vols, cfg)
    agree = float(np.mean([np.mean(a == b) for a, b in zip(new, old)]))
    result = {"profile": args.profile, "threads": args.threads, "data": src.name, "volumes": len(vols),
              "grid": list(vols[0].image.shape), "seconds_per_volume": {"torch": round(fast, 4), "scipy": round(slow, 4)},
              "ratio_torch_over_scipy": round(fast / slow, 3), "labels_agree": round(agree, 6)}
    text = (f"# Whole-volume inference, profile {args.profile}, {args.threads} thread(s), torch {torch.__version__}\n\n"
            f"{len(vols)} {src.name} LGE volumes (first grid {tuple(vols[0].image.shape)}), untrained DRU-Net.\n\n"
            "| order-1 resampling | s / volume |\n|---|---|\n"
            f"| scipy grid-mode zoom (reference) | {slow:.3f} |\n| torch bilinear | {fast:.3f} |\n\n"
            f"Ratio torch / scipy: **{fast / slow:.2f}**. Predicted labels agree on {100 * agree:.4f} % of voxels.\n")
    save(Path(args.out) / f"bench_inference_{args.profile}", result, text)
    return result


if __name__ == "__main__":
    main()
