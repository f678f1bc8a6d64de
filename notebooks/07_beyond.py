# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Beyond the paper: larger AdaConv kernels, and AdaConv with a style search
#
# The paper closes (its Section 7) with two proposals it did not try:
#
# 1. AdaConv moves local structure: the endocardium of its stylized images looks dilated (the paper's
#    Fig. 9), so networks trained on them miss the labelled boundaries (high HD). The proposal: predict
#    **larger kernels**, so that the restyling stays a convolution but acts more globally. The paper's
#    expectation: larger kernels change structure less.
# 2. AdaConv trained on bSSFP → T2 does poorly on LGE (setting 1). The proposal: give AdaConv RAIN's
#    **style VAE and adversarial style search**, so that it meets harder styles than the ones it was
#    shown. The expectation: AdaConv with style search generalises from T2 to LGE as RAIN does.
#
# No public code has either. This notebook measures both:
#
# - **Kernel sizes.** A bSSFP → LGE AdaConv (and AdaConv + VAE) is trained at each predicted kernel size,
#   everything else equal. On the same bSSFP heart slices, each is scored three ways: the **edge overlap**
#   of content and stylized image; the Dice that a **DRU-Net trained on bSSFP** keeps when it segments the
#   stylized slice with the content's label as truth (`kept` = stylized / content); and the
#   **intensity-histogram KL** of the stylized heart to the style's (lower is closer to LGE).
# - **AdaConv + VAE + ε.** Its Table 2 and 3 rows (`params/experiments.yaml`, group `beyond`), run by
#   notebook 05 like any row, beside AdaConv and RAIN in the same setting, with paired tests over patients.
#
# How AdaConv + VAE is built (`cmr_lib/models/adaconv_vae.py`, docs/methods.md): AdaConv's global
# style descriptor $W$ (512 × k × k at full width) is flattened, standardised and encoded by RAIN's own
# style VAE to a latent $z$; the kernel predictors see the decoded $W$. At segmentation time, the
# ε-search moves $z$ up the gradient of the segmentation loss with RAIN's rule, code shared.

# %% tags=["parameters"]
profile = "demo"                  # smoke | demo | demo-long | real | real-ref | paper, or the path of a profile YAML file
data_dir = None                   # None: the built-in phantom; else an MS-CMRSeg 2019 or MyoPS 2020 folder
c0_spacing = "header"             # "lge" for the cropped MS-CMRSeg copy, whose C0 headers keep a stale voxel size
t2_dir = None                     # T2 images when data_dir has none (the MS-CMRSeg copy): a MyoPS 2020 folder
kernels = [3, 5, 7, 11]           # predicted kernel sizes (odd); 11 is near-global at the demo's 12 px relu4_1 maps
kinds = ["adaconv", "adaconv-vae"]
max_slices = 64                   # bSSFP heart slices stylized per stylizer (None: all)
seed = 0
seeds = None                      # a list of seeds to average (e.g. [0, 1, 2]); None: [seed]
output_root = None                # None: the folder of this profile and data (README: where outputs land)

# %% [markdown]
# ## Setup

# %%
from cmr_lib.core import grid
from cmr_lib.core.atomic import save_figure, write_text
from cmr_lib.core.config import check_parameter, make_config
from cmr_lib.core.paths import display_path
from cmr_lib.data.sources import source_for
from cmr_lib.report import paper, plots, stats, tables
from cmr_lib.study import ablation

kernels, kinds = check_parameter("kernels", kernels), check_parameter("kinds", kinds)
max_slices = check_parameter("max_slices", max_slices)
cfg = make_config(profile=profile, setting=1, stylizer="adaconv-vae", data_dir=data_dir, c0_spacing=c0_spacing,
                  seed=seed, output_root=output_root, t2_dir=t2_dir)
print(cfg.summary())
seeds = check_parameter("seeds", seeds) or [cfg.seed]
where = dict(profile=profile, data_dir=data_dir, c0_spacing=c0_spacing, t2_dir=t2_dir, output_root=output_root)
source = source_for(**cfg.source_args)
out_dir = cfg.results_dir / "beyond"
print(f"profile {cfg.profile}, data {display_path(source.root)}, kernels {kernels}, {', '.join(kinds)}, seeds {seeds}")

# %% [markdown]
# ## 1 · Kernel size and structure
#
# Each stylizer is trained (or reused from `checkpoints/stylizers/`: the k = 3 AdaConv is notebook 03's)
# and stylizes the same bSSFP heart slices with the same LGE style slices.

# %%
result = ablation.kernel_ablation(kernels, kinds, seeds=seeds, max_slices=max_slices, progress=True, **where)
print(ablation.preservation_markdown(result.rows))

# %% [markdown]
# What the numbers mean, in the images: the same slices at every kernel size, with the bSSFP label's
# contours drawn on each. Where the stylizer moved the anatomy, the contours no longer sit on the edges
# of the stylized heart; a network trained on such an image learns the wrong boundary.

# %%
for kind, by_k in result.examples.items():
    fig = plots.kernel_size_strip(by_k, title=f"{grid.STYLIZER_NAMES[kind]}: the same bSSFP slices stylized "
                                             f"as LGE at each kernel size, bSSFP contours on each")
    save_figure(fig, cfg.figures_dir / "beyond" / f"kernel_sizes_{kind}.png")

# %% [markdown]
# The paper's expectation, tested slice by slice: the largest kernel against the smallest, paired over the
# same content slices (and seeds), on edge overlap and on the Dice kept (Wilcoxon signed-rank).

# %%
kernel_verdicts = ablation.kernel_claims(result.slices)
print(paper.claims_markdown(kernel_verdicts))

# %% [markdown]
# Does it matter for segmentation? The setting-1 row (AdaConv pre-trained bSSFP → T2, LGE styles while the
# DRU-Net trains) at each kernel size, everything else equal: the profile's own size is Table 2's row,
# the others are runs named `..._k<size>` (kept out of Tables 2 and 3). The table gathers everything.

# %%
segmentation = ablation.kernel_runs(kernels, "adaconv", setting=1, seeds=seeds, **where)
kernel_md = ablation.preservation_markdown(result.rows, segmentation)
write_text(out_dir / "kernel_ablation.md", kernel_md + "\n" + paper.claims_markdown(kernel_verdicts))
write_text(out_dir / "kernel_ablation.csv", result.rows.to_csv(index=False, float_format="%.5g"))
write_text(out_dir / "kernel_runs.csv", segmentation.to_csv(index=False, float_format="%.5g"))
print(kernel_md)

# %% [markdown]
# ## 2 · AdaConv with a style search, per setting
#
# Every setting's AdaConv, AdaConv + VAE (ε = 5) and RAIN (ε = 5) rows, beside setting 0, from the runs
# notebook 05 wrote (cells are means over the seeds; `make reproduce BEYOND=1` runs the AdaConv + VAE rows).
# The paired tests compare AdaConv + VAE with setting 0, and with AdaConv and RAIN in its own setting.

# %%
vae = ablation.vae_comparison(cfg.results_dir, profile=cfg.profile, seeds=seeds, data_root=display_path(source.root))
if vae.table is not None:
    write_text(out_dir / "adaconv_vae.md", tables.markdown(vae.table) + "\n" + stats.tests_markdown(vae.tests))
    print(tables.markdown(vae.table))
    print(stats.tests_markdown(vae.tests))
if vae.missing:
    print("rows without a run (notebook 05 runs them; make reproduce BEYOND=1 runs them all):", "; ".join(vae.missing))

# %% [markdown]
# Table 3 with AdaConv + VAE: the number of ε iterations in setting 1, beside RAIN's.

# %%
if vae.table3 is not None:
    write_text(out_dir / "table3.md", tables.markdown(vae.table3))
    print(tables.markdown(vae.table3))

# %% [markdown]
# ## The paper's two expectations

# %%
verdicts = paper.future_work_claims(kernel_verdicts, vae.table, vae.tests)
write_text(out_dir / "claims.md", paper.claims_markdown(verdicts))
print(paper.claims_markdown(verdicts))

# %% [markdown]
# ## Exercises
#
# Each asks you to predict first, then run and check.
#
# 1. Predict how the kernel size changes `kl_stylized_to_style` and the structure kept, then check
#    `results/beyond/kernel_ablation.md`. Is there a size that does both well?
# 2. AdaConv + VAE can search for hard styles as RAIN does. Compare its Table 3 rows with RAIN's: does the search
#    help it more or less, and what in its latent space could explain that?
