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
# # 04 · DRU-Net and the domain gap: trained on bSSFP, tested on LGE
#
# The segmentation network of the paper (Sec. 4.3) is the **DRU-Net** of Jafari et al. (ISBI 2020),
# a U-Net with dense and residual connections. This notebook explains the network, trains it in
# **setting 0** (bSSFP slices only, no stylization), and then shows what the study is about: the same
# network that segments bSSFP well loses much of its accuracy on LGE images of the same patients
# (Fig. 6). Settings 1–3 (notebook 05) try to close that gap with stylized training images.

# %% tags=["parameters"]
profile = "demo"        # smoke | demo | demo-long | real | real-ref | paper, or the path of a profile YAML file
data_dir = None         # None: the built-in phantom; else an MS-CMRSeg 2019 or MyoPS 2020 folder
c0_spacing = "header"   # "lge" for the cropped MS-CMRSeg copy, whose C0 headers keep a stale voxel size
seed = 0
output_root = None      # None: the folder of this profile and data (README: where outputs land)

# %% [markdown]
# ## Setup

# %%
import pandas as pd

from cmr_lib.core.atomic import save_figure
from cmr_lib.core.config import make_config
from cmr_lib.data.sources import source_for
from cmr_lib.data.splits import run_split
from cmr_lib.models import drunet
from cmr_lib.report import plots
from cmr_lib.study import runs
from cmr_lib.training.segmenters import build_segmenter

cfg = make_config(profile=profile, setting=0, data_dir=data_dir, c0_spacing=c0_spacing, seed=seed,
                  output_root=output_root)
print(cfg.summary())
source = source_for(**cfg.source_args)
split = run_split(source, cfg.split, cfg.sizes.segmenter)
print({role: len(p) for role, p in split.items()}, "patients per role")

# %% [markdown]
# ## The network
#
# DRU-Net is a U-Net of `depth` levels. A 7×7 stem convolution maps the slice to `root` channels.
#
# - Each **down block** runs two 3×3 convolutions with batch norm. It sums the input and both
#   outputs (`x + x1 + x_in`, a residual), applies ReLU and **concatenates the result with the
#   block's input**, so the channels double at each level, dense-style. Max pooling follows.
# - Each **up block** upsamples with a transposed convolution and concatenates the skip from the
#   same level. Two 3×3 convolutions with batch norm follow, summed with a 1×1 shortcut.
#
# A 1×1 head gives the four classes: background, MYO, LV, RV. The reference puts a ReLU on these
# logits. Once a class's logits are negative everywhere, that ReLU zeroes them and passes no gradient,
# and the class is gone for good; the CPU profiles therefore leave it out (`segmenter.head_relu`), the
# `paper` profile keeps it. The loss is cross-entropy plus soft Dice over the three structures. At
# the reference size (5 levels, 16 root channels) the network has about 3.1 M parameters. The CPU
# profiles halve the width.

# %%
model = build_segmenter(cfg.sizes.segmenter)
reference = drunet.DRUNet(depth=5, root=16)
print(f"this profile: depth {model.depth}, root {cfg.sizes.segmenter.root}: "
      f"{drunet.parameter_count(model):,} parameters")
print(f"reference:    depth 5, root 16: {drunet.parameter_count(reference):,} parameters")
pd.DataFrame(drunet.layer_table(model, cfg.crop)).set_index("block")

# %% [markdown]
# ## Setting 0: training on bSSFP
#
# The network learns from the labelled bSSFP slices of the training patients, with random affine
# augmentation. It never sees an LGE label. The LGE volumes of the validation patients (labelled)
# are used only to pick the best checkpoint, as in the paper. The run then predicts every test LGE
# volume on its own grid and writes `results/runs/<run>/run.json`.

# %%
run = runs.run_setting(cfg)
save_figure(plots.training_curves(run.segmenter.history, title="DRU-Net, setting 0 (bSSFP only)"),
            cfg.figures_dir / "fig6_drunet_training.png")
print(f"run {run.record['run_name']}: best validation step {run.record['segmenter']['best_step']}, "
      f"{run.record['timings_seconds']['total']:.0f} s")

# %% [markdown]
# ## The domain gap (Fig. 6)
#
# The same network, the same patients, two sequences. On bSSFP it has learned the anatomy. LGE
# changes the contrasts: the healthy myocardium is nulled, scar turns bright, and the blood pool
# and fat have other intensities. The network loses structures it knew. The table gives the Dice per structure on both sequences of the held-out patients.

# %%
held_out = split["val"] + split["test"]
runs.domain_gap(cfg, source, run.segmenter.model, held_out)

# %%
n = cfg.sizes.analysis.examples
pats = [p for p in held_out if source.has_label(p, "C0") and source.has_label(p, "LGE")][:n]
rows = {"bSSFP": runs.predict_examples(cfg, source, run.segmenter.model, pats, sequence="C0"),
        "LGE": runs.predict_examples(cfg, source, run.segmenter.model, pats, sequence="LGE")}
save_figure(plots.prediction_panels(rows, title="Setting 0: a DRU-Net trained on bSSFP, on bSSFP and on LGE"),
            cfg.figures_dir / "fig6_domain_gap.png");

# %% [markdown]
# Every stylized setting in notebook 05 is measured against this setting-0 row. Table 2 asks how
# much of the bSSFP → LGE drop each stylizer recovers.

# %% [markdown]
# ## Exercises
#
# Each asks you to predict first, then run and check.
#
# 1. Before running: which structure will lose the most Dice from bSSFP to LGE, MYO, LV or RV? Check the table
#    and explain it from the intensities of notebook 01.
# 2. Train longer with `overrides={"segmenter.iterations": 600}` in `make_config`. Does the LGE Dice rise with
#    the bSSFP Dice, or does the gap widen? What does that say about the domain shift?
