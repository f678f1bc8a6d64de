"""The paper's future work, measured (issue 16): AdaConv and AdaConv + VAE at several predicted kernel sizes,
everything else equal. For each, a bSSFP->LGE stylizer is trained (or reused) and its structure preservation
measured on stylized heart slices (cmr_lib.study.ablation): edge overlap, the Dice a bSSFP-trained DRU-Net keeps
on stylized images, and the histogram KL to the style. Written to benchmarks/results/kernel_ablation_<data>_<profile>
.{md,json}, with a figure per kind (.._<kind>.png: the same slices at each kernel size, bSSFP contours on each).

    python benchmarks/kernel_ablation.py                          # the phantom, demo profile, kernels 3 5 7 11
    python benchmarks/kernel_ablation.py --data mscmrseg2019      # the real sample (profile real)
    python benchmarks/kernel_ablation.py --profile smoke --kernels 3 5 --kinds adaconv   # seconds

Stylizers and networks are cached by configuration under --work (default build/kernel_ablation).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cmr_lib.core.atomic import save_figure, write_json, write_text
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import resolve_data
from cmr_lib.report import plots
from cmr_lib.report.paper import claims_markdown
from cmr_lib.study.ablation import KernelAblation, kernel_ablation, kernel_claims, preservation_markdown
from cmr_lib.training.stylizers import STYLIZERS

OUT = repo_root() / "benchmarks" / "results"


def run(*, data=None, profile=None, kernels=(3, 5, 7, 11), kinds=("adaconv", "adaconv-vae"), seeds=(0,),
        work=None, out_dir=OUT, max_slices=64) -> KernelAblation:
    """Train (or reuse) each kind at each kernel size and measure it (cmr_lib.study.ablation); write the table,
    the per-slice claim and the figures."""
    named = resolve_data(data) if data else None
    profile = profile or ("real" if named else "demo")
    where = {} if named is None else dict(data_dir=named.data_dir, c0_spacing=named.c0_spacing,
                                         t2_dir=str(named.t2_dir) if named.t2_dir else None)
    result = kernel_ablation(kernels, kinds, seeds=list(seeds), max_slices=max_slices, profile=profile,
                             output_root=Path(work or repo_root() / "build" / "kernel_ablation"), **where)
    for row in result.rows.to_dict("records"):
        print(json.dumps(row), flush=True)
    name = f"kernel_ablation_{'phantom' if named is None else data}_{profile}"
    claims = kernel_claims(result.slices)
    write_json(Path(out_dir) / f"{name}.json", {"profile": profile, "data": data or "phantom", "seeds": list(seeds),
                                                 "rows": result.rows.to_dict("records"),
                                                 "claims": claims.to_dict("records")})
    write_text(Path(out_dir) / f"{name}.md", preservation_markdown(result.rows) + "\n" + claims_markdown(claims))
    for kind, by_k in result.examples.items():
        save_figure(plots.kernel_size_strip(by_k, title=f"{STYLIZERS[kind]} bSSFP->LGE by kernel size: "
                                                         f"the bSSFP contours on each"),
                    Path(out_dir) / f"{name}_{kind}.png")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a real sample set (mscmrseg2019); default: the phantom")
    ap.add_argument("--profile", default=None, help="default: real with --data, else demo")
    ap.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7, 11])
    ap.add_argument("--kinds", nargs="+", default=["adaconv", "adaconv-vae"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    run(data=args.data, profile=args.profile, kernels=args.kernels, kinds=args.kinds, seeds=args.seeds, work=args.work,
        out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
