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
# # 03 · AdaConv: restyling bSSFP as LGE with predicted convolution kernels
#
# **AdaConv** (Chandran et al., CVPR 2021) is the paper's second stylizer (Sec. 4.2). AdaIN
# transfers only each feature channel's mean and standard deviation. AdaConv instead *predicts
# convolution kernels* from the style image, so it can also move local structure, such as edges
# and the texture of the myocardium: depthwise kernels, pointwise kernels and biases at four
# decoder scales. The paper found AdaConv's stylized images sharper, but its Hausdorff distances
# worse than RAIN's. This notebook trains AdaConv for both pre-training pairs and makes the same
# figures as notebook 02 (Figs. 7-9) for `results/stylizers/adaconv_C0-*.json`.

# %% tags=["parameters"]
profile = "demo"        # smoke | demo | demo-long | real | real-ref | paper, or the path of a profile YAML file
data_dir = None         # None: the built-in phantom; else an MS-CMRSeg 2019 or MyoPS 2020 folder
c0_spacing = "header"   # "lge" for the cropped MS-CMRSeg copy, whose C0 headers keep a stale voxel size
t2_dir = None           # T2 images when data_dir has none (the MS-CMRSeg copy): a MyoPS 2020 folder
kernel_size = None      # None: the profile's (3); the paper's future work asks for larger kernels (5, 7)
seed = 0
output_root = None      # None: the folder of this profile and data (README: where outputs land)

# %% [markdown]
# ## Setup

# %%
import pandas as pd

from cmr_lib.core.config import check_parameter, make_config
from cmr_lib.data.sources import source_for
from cmr_lib.study import stylizers
from cmr_lib.training.stylizers import resolve_encoder

kernel_size = check_parameter("kernel_size", kernel_size)
overrides = None if kernel_size is None else {"stylizer.adaconv.kernel_size": kernel_size}
cfg = make_config(profile=profile, setting=2, stylizer="adaconv", data_dir=data_dir, c0_spacing=c0_spacing,
                  seed=seed, output_root=output_root, overrides=overrides, t2_dir=t2_dir)
print(stylizers.setup_line(cfg, "adaconv"))
source = source_for(**cfg.source_args)

# %% [markdown]
# ## The model
#
# The same frozen VGG-19 encoder as in notebook 02 (same weights, same fallback) describes content
# and style. The style image's relu4_1 features then pass through three conv + pooling stages and a
# **fully connected layer** to a global descriptor $W$ of size 512 × k × k. Because of that layer
# the style image has a fixed size: 256 px in the `paper` profile, the profile's crop elsewhere. At
# each of four decoder scales, *kernel predictors* turn $W$ into, per sample:
#
# | prediction | shape | role |
# | --- | --- | --- |
# | depthwise kernels | C × C/g × k × k | spatial filtering within each of g channel groups |
# | pointwise kernels | C × C/g × 1 × 1 | mixing channels within each group |
# | biases | C | shifting each channel |
#
# The groups g are 512, 128, 32 and 8 at full width. An AdaConv block instance-normalises the
# content features, convolves them with these kernels, and passes the result through an ordinary
# 3×3 convolution. The kernels differ per sample, yet the library runs the whole batch as *one*
# grouped convolution by folding the batch into the channel axis, with no Python loop. The losses:
# content on relu4_1 against the content's own features, and the mean/std style loss with weight 10.

# %%
encoder, record = resolve_encoder(cfg, source)
print("encoder weights:", record)
trained = stylizers.train_pairs(cfg, source, "adaconv", curves=True)
n_params = sum(p.numel() for p in trained[("C0", "LGE")].model.trainable())
print(f"trainable parameters (style encoder + decoder with kernel predictors): {n_params / 1e6:.2f} M")

# %% [markdown]
# ## Stylized images (Fig. 7), histograms (Fig. 8) and label overlays (Fig. 9)
# The same protocol as for RAIN: training patients' bSSFP heart slices, each with a random slice of
# the style sequence. The KL divergences use the same bins as notebook 02, so the two stylizers can
# be compared directly.

# %%
reports = {pair: stylizers.stylizer_figures(cfg, source, ts, f"AdaConv {pair[0]} -> {pair[1]}")
           for pair, ts in trained.items()}
table = pd.DataFrame(reports.values()).set_index("pretrain")
table[stylizers.REPORT_COLUMNS].round(3)

# %%
stylizers.print_verdicts(reports, "AdaConv")

# %% [markdown]
# ## RAIN or AdaConv?
# When notebook 02 has run with the same profile, its results sit beside these. Lower
# `kl_stylized_to_style` means a closer match to the style's intensities. Higher
# `edge_overlap_content_stylized` means the anatomy survived better. Notebook 05 asks which of the
# two matters for segmentation.

# %%
stylizers.stylizer_reports(cfg).round(3)

# %% [markdown]
# ## How good are the stylized images? The quality report
#
# The figures above show slices of the patients the stylizers trained on. A fair test uses content no stylizer
# ever saw: bSSFP of the patients held out from training, each restyled with a style from the stylizer's own pool
# (as in training), and compared with labelled slices of the target sequence that no stylizer saw and no table
# reports (beside MS-CMRSeg: bSSFP 31-35, styled with LGE 6-45, against the LGE of MyoPS 101-110, the tuning set;
# T2 against MyoPS 111-120's T2). A good stylized slice must **keep** the heart and change its **look**; each
# column of `stylizer_quality.csv` asks one of those questions:
#
# - `dice_kept`: a frozen judge (the SLAug row's DRU-Net, trained on bSSFP with strong appearance augmentation,
#   never on a stylized image) segments the stylized slice; its Dice over its Dice on the unstylized slice.
#   Near 1: the anatomy survived.
# - `grad_ratio`: the stylized slice's gradient energy over its content's. Near 1: as sharp; a blurred edge map
#   falls far below.
# - `kl_myo`, `kl_blood`: how far the myocardium's and the LV blood pool's intensities are from real target
#   slices' (KL, lower is closer), beside `kl_*_raw`, the same for the untouched bSSFP. A stylizer that works
#   brings both below their raw values: LGE darkens the (healthy) myocardium and greys the blood pool.
# - `c2st`: a small classifier learns to tell stylized slices from real target slices; its accuracy on held-out
#   slices (0.5: cannot tell them apart). `c2st_raw` is the same for raw bSSFP, the gap to close, and
#   `c2st_style` for real slices of the stylizer's own style pool: where pool and targets come from different
#   scanners, even real images of the target sequence are told apart that well, so no stylizer can go below it.
# - `search_change`, `dice_kept_search` (stylizers with a style search): how much five rounds of the search move
#   the image, and whether the heart survives them.
# - `myo_std`, `contrast` (with `_raw` and `_target`): the spread of the myocardium's grey levels and the
#   blood-minus-myocardium contrast. Real LGE's myocardium is nulled with bright scar, so it spreads far more than
#   bSSFP's; a stylizer that keeps the content's structure keeps its even myocardium, which is why `kl_myo` is hard.

# %%
from cmr_lib.study.quality import stylizer_quality

quality = stylizer_quality(cfg, source)
quality.round(3)

# %%
from IPython.display import Image, display

display(Image(filename=str(cfg.figures_dir / "quality_rain_C0-LGE.png")))
display(Image(filename=str(cfg.figures_dir / "quality_adaconv_C0-LGE.png")))

# %% [markdown]
# How to read the figure: each column is one held-out bSSFP slice; its own contours are drawn on every row. In
# a good row the contours still sit on the heart's edges (the anatomy is kept) while the grey levels look like
# the style row's (the look has changed). On the `demo` profile (the paper's design at laptop sizes, on the
# phantom) expect the stylized row to be smoother than the content. On real data the paper's design gave
# blurred edge maps; the `real` profiles add the content's detail back through skips and a detail loss (for
# AdaConv too), which the quality table of the real run shows kept the heart and its sharpness while the
# classifier's accuracy fell toward 0.5 (see `docs/findings.md`, section 7, and
# `benchmarks/results/stylizer_quality.md` for each change measured on its own).
#
# **Why `kl_myo` stays above its raw value.** Ask what the best possible *global* style could do: give each
# bSSFP slice exactly the grey-level histogram of its style slice, keeping every pixel's rank (a perfect
# intensity remap, no network). `benchmarks/quality_oracles.py` does that on the same held-out slices: the
# classifier can no longer tell the slices from LGE, the blood pool moves toward LGE's, and yet the
# myocardium moves *away* from LGE's. A global map keeps the order of grey levels; LGE breaks bSSFP's order
# inside the myocardium (healthy muscle nulled below its surroundings, scar bright above them), which depends on
# the tissue, not on the bSSFP grey level. Only a remap that knows where the myocardium is reaches LGE's
# myocardium, and no stylizer in the paper sees labels. Read `benchmarks/results/quality_oracles.md` beside the
# quality table: a stylizer whose `kl_myo` is below the ideal global remap's has done what a style can.
#
# A network can still learn where the myocardium is from the image itself, if some loss asks it to. The paper's
# losses compare statistics of whole feature maps, so none does. The `real` profile adds one that does: a small
# **patch critic** (`stylizer.<kind>.adversarial_weight`) learns to tell patches of real LGE from stylized ones,
# and the stylizer learns to fool it. It was the first change that brought `kl_myo` below its raw value
# (`benchmarks/results/stylizer_quality.md`, rows `rain_adv1`; chosen on the tuning set in
# `benchmarks/results/stylizer_quality_tuning.md`).

# %% [markdown]
# ## Exercises
#
# Each asks you to predict first, then run and check.
#
# 1. Predict, then run with `-p kernel_size 5`: will the stylized images keep more of the content's edges or
#    fewer? Check `edge_overlap_content_stylized` and the contour figure.
# 2. In the quality table, compare `c2st` with `c2st_raw`. What would a value of 0.5 mean, and why is a value
#    near 0.5 not enough on its own (think of `dice_kept`)?
# 3. Read `benchmarks/results/stylizer_quality.md`. Pick one change that fixed sharpness and one that did not,
#    and explain the difference from how the decoder is built.
