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
# # 02 · RAIN: restyling bSSFP as LGE with a style VAE, and mining hard styles
#
# **RAIN** (random AdaIN, Luo et al.) is the first of the paper's two stylizers (Sec. 4.2). It
# restyles a labelled bSSFP slice so that it looks like a T2 or LGE slice while keeping its anatomy,
# so that the bSSFP labels still fit. Its extra trick is a **style VAE**: every style lives in a
# smooth 512-d latent space, so the segmentation training can *search* that space for the styles
# that hurt it most (adversarial style mining, Fig. 5).
#
# This notebook trains RAIN for both of the paper's pre-training pairs, bSSFP → T2 (setting 1) and
# bSSFP → LGE (settings 2 and 3). It shows content, style and stylized images (Fig. 7), their
# intensity histograms with KL divergences (Fig. 8), the labels drawn on the stylized images
# (Fig. 9), and style exploration (Fig. 5). The numbers go to `results/stylizers/rain_C0-*.json`.

# %% tags=["parameters"]
profile = "demo"        # smoke | demo | demo-long | real | real-ref | paper, or the path of a profile YAML file
data_dir = None         # None: the built-in phantom; else an MS-CMRSeg 2019 or MyoPS 2020 folder
c0_spacing = "header"   # "lge" for the cropped MS-CMRSeg copy, whose C0 headers keep a stale voxel size
t2_dir = None           # T2 images when data_dir has none (the MS-CMRSeg copy): a MyoPS 2020 folder
seed = 0
output_root = None      # None: the folder of this profile and data (README: where outputs land)

# %% [markdown]
# ## Setup

# %%
import pandas as pd

from cmr_lib.core.atomic import save_figure
from cmr_lib.core.config import make_config
from cmr_lib.data.sources import source_for
from cmr_lib.report import plots
from cmr_lib.study import stylizers
from cmr_lib.training.segmenters import train_segmenter
from cmr_lib.training.stylizers import resolve_encoder

cfg = make_config(profile=profile, setting=2, stylizer="rain", data_dir=data_dir, c0_spacing=c0_spacing,
                  seed=seed, output_root=output_root, t2_dir=t2_dir)
print(stylizers.setup_line(cfg, "rain"))
source = source_for(**cfg.source_args)

# %% [markdown]
# ## The encoder: VGG-19 to relu4_1
#
# Every stylizer describes images with the activations of a frozen VGG-19 up to `relu4_1`. A
# *style* is summarised by the per-channel means and standard deviations at relu1_1 … relu4_1 (the
# style loss, eq. 4). The *content* is the relu4_1 feature map itself (the content loss, eq. 3).
# Grey MR slices enter as three identical channels with ImageNet normalisation.
#
# The paper uses ImageNet weights. This machine may be offline, so `encoder_weights="auto"` takes
# them from torch's hub cache when they are there and otherwise falls back to an encoder **trained on
# the MR slices themselves**: an autoencoder that reconstructs bSSFP, LGE and T2 slices. docs/methods.md
# says why this fallback beat seeded random filters. On CPU profiles the encoder is narrower (a
# width multiplier) and the decoders start from that autoencoder's decoder (`warm_start`), so that
# a few hundred steps suffice. The `paper` profile trains from scratch with the full VGG-19.

# %%
encoder, record = resolve_encoder(cfg, source)
print("encoder weights:", record)

# %% [markdown]
# ## The model: AdaIN + a style VAE
#
# AdaIN (eq. 1) gives the content features the style's channel statistics:
# $\mathrm{AdaIN}(c, s) = \sigma(s)\,\frac{c - \mu(c)}{\sigma(c)} + \mu(s)$, computed on relu4_1.
# A mirror decoder then turns the result into an image. RAIN does not apply the style's statistics
# directly. It encodes the 1024-d vector $[\mu(s) \oplus \sigma(s)]$ with a VAE (three Linear layers,
# to a 512-d mean and log-variance), samples $z$, and decodes $z$ back to the statistics that AdaIN
# uses. The loss, eq. (2)–(6), is
# $L = L_c + \lambda_1 L_s + \lambda_2 L_{KL} + \lambda_3 L_{rec}$ with weights 1, 1, 1, 5.
# Two details differ from the reference code, and both keep the VAE meaningful on MR data:
#
# - The VAE predicts the *log*-variance, so σ is always positive; the reference's raw σ can go
#   negative.
# - It works on *standardised* style vectors. MR styles vary far less than the paintings RAIN was
#   designed for. On raw vectors the KL term won and the posterior collapsed: every style decoded to
#   the same washed-out average, measured.
#
# The CPU profiles also weight the style loss 10, the default of pytorch-AdaIN, instead of the
# reference's 1. With a thousand training steps instead of 160,000, a weight of 1 barely moves the
# intensities. The `paper` profile keeps the reference weights.

# %%
trained = stylizers.train_pairs(cfg, source, "rain", curves=True)

# %% [markdown]
# ## Stylized images (Fig. 7), histograms (Fig. 8) and label overlays (Fig. 9)
#
# Each bSSFP heart slice of a training patient is paired with a random slice of the style sequence
# and restyled. Two questions matter. Does the stylized image take on the style's intensity
# distribution (KL to the style, which should fall below the content's)? And does it keep the
# anatomy, so that the bSSFP labels still fit (the contours in Fig. 9 and the edge overlap)?
#
# What a good stylized slice must do, concretely, for LGE: keep every edge of the heart where the bSSFP had it
# (the labels must still fit, and it must stay as sharp), while the healthy myocardium turns dark (LGE nulls it)
# and the blood pool grey. A blurred edge map fails the first, an unchanged bSSFP the second. Notebook 03 ends
# with the **quality report** that measures both for RAIN and AdaConv on slices no stylizer trained on
# (`results/stylizer_quality.csv`); at laptop budgets the paper's RAIN decodes from a grid eight times coarser
# than the image and comes out blurred, which the profile options `stylizer.rain.skips` and
# `stylizer.rain.detail_weight` (deviations from the paper, off in `demo` and `paper`) are there to fix.
#
# What each fix bought on real data (measured one at a time on held-out slices:
# `benchmarks/results/stylizer_quality.md`): four times the training steps did not sharpen the images much;
# the detail loss kept the anatomy but not the sharpness; skips carrying the content's normalised detail, with
# the detail loss, kept both, and a threefold style weight then made the slices hard to tell from real LGE.
# What none of them did is give the myocardium LGE's spread of grey levels (scar, noise): a stylizer that keeps
# the content's structure keeps its texture too. The real-data profiles use skips, a third of the detail
# loss and the threefold style weight (`params/real.yaml`).

# %%
reports = {pair: stylizers.stylizer_figures(cfg, source, ts, f"RAIN {pair[0]} -> {pair[1]}")
           for pair, ts in trained.items()}
table = pd.DataFrame(reports.values()).set_index("pretrain")
table[stylizers.REPORT_COLUMNS].round(3)

# %% [markdown]
# Read the table row by row. `kl_stylized_to_style` below `kl_content_to_style` means the
# stylized images moved toward the target sequence's intensity distribution.
# `edge_overlap_content_stylized` (1 = identical boundaries; unrelated images score about 0.1–0.2)
# tells whether the anatomy survived.

# %%
stylizers.print_verdicts(reports, "RAIN")

# %% [markdown]
# ## Style exploration: mining harder styles (Fig. 5)
#
# At segmentation time RAIN does not just sample styles. It starts from the code $z$ of an LGE
# slice and pushes $z$ **up** the gradient of the segmentation loss, $z \leftarrow z + \frac{20}{L}
# \nabla_z L$ (the ASM rule). The DRU-Net then has to learn from the style it finds hardest. To show
# this, a DRU-Net is trained briefly on bSSFP, kept fixed, and the loss it suffers is followed over
# 0, 1, 3 and 5 exploration iterations. Table 3 compares these iteration counts during training.

# %%
segmenter = train_segmenter(cfg, source)
content, labels, exploration = stylizers.explore_examples(cfg, source, trained[("C0", "LGE")], segmenter, n=3,
                                                           iterations=5)
save_figure(plots.exploration_strip(content, labels, exploration, title="RAIN style exploration (bSSFP -> LGE)"),
            cfg.figures_dir / "fig5_rain_C0-LGE.png")
print("segmentation loss after 0..5 iterations:", [round(x, 3) for x in exploration.losses])

# %% [markdown]
# ## Exercises
#
# Each asks you to predict first, then run and check.
#
# 1. Before running: if the style weight in the profile were ten times smaller, would `kl_stylized_to_style` go
#    up or down? Try it with `overrides` in `make_config` (`{"stylizer.rain.style_weight": 1.0}`) and compare the
#    table.
# 2. In the style-exploration figure, the loss rises with each iteration. Change `iterations=5` to 10 in the last
#    cell. Does the loss keep rising, and do the images still show a heart? Which matters more for training a
#    segmenter?
# 3. Open `results/stylizer_quality.csv` (written by notebook 03). Which column would tell you that a stylizer
#    has simply blurred the image? Which one that it changed nothing?
