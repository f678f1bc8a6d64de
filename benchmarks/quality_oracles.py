"""How far a global intensity style could go on the stylizer quality bar (issue 34): the held-out bSSFP slices of
the quality report, remapped without any network to (a) their own style slice's histogram, (b) the pooled target's,
and (c) each structure to the target's same structure (labels used: a bound no label-free stylizer can reach),
scored with the report's own metrics and judge beside the stylizers' rows of stylizer_quality_tuning.md.

    python benchmarks/quality_oracles.py [--profile real] [--work build/stylizer_quality/before]

Writes benchmarks/results/quality_oracles.{csv,md}.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from cmr_lib.core.atomic import write_text
from cmr_lib.core.config import make_config
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import resolve_data
from cmr_lib.data.sources import open_source
from cmr_lib.evaluation.quality import (STRUCTURE_CLASSES, appearance, c2st, dice_kept, grad_ratio, histogram_match,
                                        structure_kl)
from cmr_lib.study.ablation import segment
from cmr_lib.study.quality import held_out_pairs, judge

OUT = repo_root() / "benchmarks" / "results" / "quality_oracles"
SHOWN = ["images", "dice_kept", "kl_myo", "kl_blood", "c2st", "grad_ratio", "myo_std", "contrast"]


def per_structure(image, label, target, target_label):
    """Each class of one slice remapped to the same class of the pooled target slices."""
    out = image.clone()
    for cls in range(4):
        inside = torch.from_numpy(label == cls)[None]
        ref = target[torch.from_numpy(target_label == cls)[:, None]]
        if inside.any() and ref.numel():
            out[inside] = histogram_match(image[inside], ref)
    return out


def score(name, images, content, content_label, target, target_label, net, pred_content, cfg) -> dict:
    """The quality report's image metrics for one set of images standing in for the stylized slices."""
    row = {"images": name, "dice_kept": dice_kept(segment(net, images), pred_content, content_label)}
    for k, cls in STRUCTURE_CLASSES.items():
        row[f"kl_{k}"] = structure_kl(images, content_label, target, target_label, cls, cfg.sizes.analysis.hist_bins)
    row["c2st"] = c2st(images, target, seed=cfg.seed)
    row["grad_ratio"] = grad_ratio(images, content)
    return {**row, **appearance(images, content_label)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="real")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(repo_root() / "build" / "stylizer_quality" / "before"),
                    help="a run folder whose checkpoints hold (or will hold) the judge")
    args = ap.parse_args(argv)
    named = resolve_data("mscmrseg2019")
    cfg = make_config(profile=args.profile, seed=args.seed, data_dir=named.data_dir, c0_spacing=named.c0_spacing,
                      t2_dir=str(named.t2_dir), output_root=Path(args.work))
    source = open_source(named.data_dir, c0_spacing=named.c0_spacing)
    content, label, styles, target, target_label = held_out_pairs(cfg, source, ("C0", "LGE"),
                                                                  crop=cfg.crop_for("rain"))
    net = judge(cfg, source).model.eval()
    pred_content = segment(net, content)
    candidates = {
        "raw bSSFP": content,
        "histogram of its own style slice": torch.stack([histogram_match(c, s) for c, s in zip(content, styles)]),
        "histogram of the pooled target": torch.stack([histogram_match(c, target) for c in content]),
        "each structure to the target's (labels)": torch.stack(
            [per_structure(c, lab, target, target_label) for c, lab in zip(content, label)]),
    }
    rows = [score(k, v, content, label, target, target_label, net, pred_content, cfg) for k, v in candidates.items()]
    rows.append({"images": "real LGE (the target)", **appearance(target, target_label)})
    # the style slices are real MS-CMRSeg LGE: how far the classifier tells one site's LGE from the other's
    rows.append({"images": "real LGE of the style pool (MS-CMRSeg 6-45)", "c2st": c2st(styles, target, seed=cfg.seed),
                 "grad_ratio": grad_ratio(styles, content)})
    tuning = repo_root() / "benchmarks" / "results" / "stylizer_quality_tuning"
    for name in ("adopted", "critic"):                    # the stylizers, measured on the same slices and targets
        if (tuning / f"{name}.csv").is_file():
            q = pd.read_csv(tuning / f"{name}.csv")
            for _, r in q[q.direction == "C0->LGE"].iterrows():
                rows.append({"images": f"{r.stylizer} ({name}, stylizer_quality_tuning)",
                             **{k: r[k] for k in SHOWN[1:]}})
    df = pd.DataFrame(rows).reindex(columns=SHOWN)
    write_text(OUT.with_suffix(".csv"), df.to_csv(index=False, float_format="%.4g"))
    write_text(OUT.with_suffix(".md"), (
        f"Held-out slices of the quality report ({len(content)} bSSFP content slices of MS-CMRSeg 31-35, each "
        f"given a style slice of LGE 6-45; {len(target)} target LGE slices of the tuning set, MyoPS 101-110; profile "
        f"`{args.profile}`, seed {args.seed}), judged as "
        "study.quality judges a stylizer. The remaps use no network: each is what an ideal stylizer of that kind "
        "would output.\n\n" + df.to_markdown(index=False, floatfmt=".3f") + "\n"))
    print(OUT.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
