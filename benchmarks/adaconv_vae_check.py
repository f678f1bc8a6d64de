"""AdaConv + VAE against the AdaConv it is built on, and RAIN (issue 16): how well the VAE reproduces AdaConv's
descriptor W, what the stylized slices keep (decoded W, W itself, W's mean), and how far the epsilon search
raises a bSSFP DRU-Net's loss. Written to benchmarks/results/adaconv_vae_check_<data>_<profile>.{md,json}.

    python benchmarks/adaconv_vae_check.py --data mscmrseg2019        # the real sample, profile real (reuses)
    python benchmarks/adaconv_vae_check.py --profile smoke            # the phantom, seconds
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from cmr_lib.core.atomic import write_json, write_text
from cmr_lib.core.config import make_config
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import resolve_data
from cmr_lib.data.sources import source_for
from cmr_lib.models.drunet import segmentation_loss
from cmr_lib.study.ablation import structure_preservation
from cmr_lib.study.stylizers import stylize_examples
from cmr_lib.training.augment import Stylization
from cmr_lib.training.segmenters import train_segmenter
from cmr_lib.training.stylizers import train_stylizer

OUT = repo_root() / "benchmarks" / "results"
KEEP = ("edge_overlap", "dice_kept", "kl_stylized_to_style")


def run(*, data=None, profile=None, kernel=3, seed=0, work=None, out_dir=OUT, slices=32, search=16) -> dict:
    """Train (or reuse) AdaConv, AdaConv + VAE and RAIN bSSFP->LGE and measure them on the same slices."""
    named = resolve_data(data) if data else None
    profile = profile or ("real" if named else "demo")
    where = {} if named is None else dict(data_dir=named.data_dir, c0_spacing=named.c0_spacing,
                                         t2_dir=str(named.t2_dir) if named.t2_dir else None)
    root = Path(work) if work else (repo_root() / "real" / data if named else repo_root() / "build" / "adaconv_vae_check")
    out = {"profile": profile, "data": data or "phantom", "seed": seed, "kernel_size": kernel, "rows": []}
    for kind in ("adaconv", "adaconv-vae", "rain"):
        cfg = make_config(profile=profile, setting=2, stylizer=kind, seed=seed, output_root=root,
                          overrides={"stylizer.adaconv.kernel_size": kernel}, **where)
        source = source_for(**cfg.source_args, progress=False)
        seg = train_segmenter(cfg, source, progress=False).model.eval()
        ts = train_stylizer(cfg, source, kind, ("C0", "LGE"), progress=False)
        st = stylize_examples(ts, cfg, source, max_slices=slices)
        m = ts.model.eval()
        images = {"as stylized": st.stylized}
        row = {"kind": kind, "seconds_train": ts.info.get("seconds_train"), "reused": ts.info["reused"]}
        if kind == "adaconv-vae":
            with torch.no_grad():
                w = m.style_descriptor(st.style)
                mu, _ = m.style_code(st.style)
                feat = m.encoder(st.content, last_only=True)
                images["W itself"] = m.decoder(feat, w).clamp(0, 1)
                images["W's mean"] = m.decoder(feat, m.vae.shift.view_as(w[0])[None].expand_as(w)).clamp(0, 1)
                flat = w.flatten(1)
                row["vae_rec_mse_std_units"] = float(F.mse_loss(m.vae.decode_standardised(mu), m.vae.standardise(flat)))
                row["w_var_std_units"] = float(m.vae.standardise(flat).var(0).mean())
            row["seconds_base"] = ts.info.get("seconds_base")
        row["kept"] = {name: {k: v for k, v in structure_preservation(
            Stylization(st.content, st.style, img, st.content_label, st.style_label), seg,
            cfg.sizes.analysis.hist_bins).items() if k in KEEP} for name, img in images.items()}
        if hasattr(m, "explore"):
            for p in m.parameters():
                p.requires_grad_(False)
            with torch.no_grad():
                z0 = m.style_code(st.style[:search])[0]
            ex = m.explore(st.content[:search], z0, lambda img: segmentation_loss(seg(img), st.content_label[:search]),
                           iterations=5, **cfg.sizes.stylizer.explore.to_dict())
            row["search"] = {"rule": cfg.sizes.stylizer.explore.rule, "step": cfg.sizes.stylizer.explore.step,
                             "losses": [float(v) for v in ex.losses],
                             "image_change": float((ex.images[-1] - ex.images[0]).abs().mean())}
        print(json.dumps(row), flush=True)
        out["rows"].append(row)
    name = f"adaconv_vae_check_{out['data']}_{profile}"
    write_json(Path(out_dir) / f"{name}.json", out)
    write_text(Path(out_dir) / f"{name}.md", markdown(out))
    return out


def markdown(out: dict) -> str:
    """The check as Markdown: what each stylizer's slices keep, then the VAE's fit and the search's losses."""
    lines = [f"bSSFP->LGE, {out['data']}, profile {out['profile']}, seed {out['seed']}, kernel size {out['kernel_size']}",
             "", "| stylizer | images | edge overlap | Dice kept | KL stylized→style |", "|---|---|---|---|---|"]
    for r in out["rows"]:
        for name, v in r["kept"].items():
            lines.append(f"| {r['kind']} | {name} | {v['edge_overlap']:.3f} | {v['dice_kept']:.3f} | "
                         f"{v['kl_stylized_to_style']:.3f} |")
    lines += ["", "| stylizer | VAE reconstruction MSE (standardised W) | W's variance (same units) | search losses "
              "(5 steps) | mean image change | train s |", "|---|---|---|---|---|---|"]
    for r in out["rows"]:
        rec = f"{r['vae_rec_mse_std_units']:.3f}" if "vae_rec_mse_std_units" in r else ""
        var = f"{r['w_var_std_units']:.3f}" if "w_var_std_units" in r else ""
        s = r.get("search")
        losses = " → ".join(f"{v:.4f}" for v in s["losses"][::5]) if s else ""
        change = f"{s['image_change']:.4f}" if s else ""
        secs = r.get("seconds_train")
        lines.append(f"| {r['kind']} | {rec} | {var} | {losses} | {change} | {'' if secs is None else secs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a real sample set (mscmrseg2019); default: the phantom")
    ap.add_argument("--profile", default=None, help="default: real with --data, else demo")
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="checkpoints and results of the runs (default: real/<data>, else "
                    "build/adaconv_vae_check)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    run(data=args.data, profile=args.profile, kernel=args.kernel, seed=args.seed, work=args.work, out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
