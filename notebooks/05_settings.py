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
# # 05 · One row of Table 2 or 3: a setting, a stylizer, a DRU-Net, LGE test scores
#
# The paper's experiments (Table 1) differ in where the stylized training images come from:
#
# | setting | stylizer pre-trained on | style image during segmentation training |
# | --- | --- | --- |
# | 0 | (no stylization) | none |
# | 1 | bSSFP → T2 | a random LGE slice |
# | 2 | bSSFP → LGE | a random LGE slice |
# | 3 | bSSFP → LGE | the same patient's LGE slice at the nearest level between base and apex |
#
# This notebook runs **one** row: it pre-trains (or reuses) the stylizer, trains a DRU-Net on
# stylized bSSFP slices, predicts every test LGE volume, scores it, and writes
# `results/runs/<run>/run.json`, which notebook 06 turns into Tables 2 and 3. With RAIN, every
# training batch first runs `epsilon_iterations` rounds of adversarial style search (Table 3 varies
# it: 1, 3, 5).
#
# The paper has no baseline rows; we add the appearance augmentations a practitioner would try first,
# each with the same DRU-Net, budget, split and evaluation (`cmr_lib/training/augment.py`):
#
# | `stylizer` | settings | what each training batch gets |
# | --- | --- | --- |
# | `intensity` | 0 | a random monotone intensity curve, gamma and contrast jitter (BigAug-style) |
# | `gin` | 0 | a random shallow conv net, mixed with the image (GIN, Ouyang et al. 2022) |
# | `slaug` | 0 | SLAug (Su et al. 2023): a global and a per-structure random intensity curve with a random scale and shift, fused where the network's gradient says the image matters |
# | `histmatch` | 2, 3 | the histogram of the LGE slice the setting picks (whole 144-mm crop) |
# | `rain+intensity`, `adaconv+intensity`, `rain+slaug` | 1-3 | the stylizer, then the intensity remap or SLAug |
#
# Run it from the repository root, for example:
#
# ```bash
# papermill -k python3 notebooks/05_settings.ipynb out.ipynb -p setting 3 -p stylizer adaconv
# ```

# %% tags=["parameters"]
profile = "demo"          # smoke | demo | demo-long | real | real-ref | paper, or the path of a profile YAML file
setting = 1               # 0, 1, 2 or 3 (Table 1)
stylizer = "rain"         # rain | adaconv (ignored in setting 0) | intensity | gin | histmatch | rain+intensity | ...
epsilon_iterations = 5    # RAIN style-search rounds per batch (Table 3: 1, 3, 5)
include_original = True   # also train on the unstylized batch
seed = 0
data_dir = None           # None: the built-in phantom; else an MS-CMRSeg 2019 or MyoPS 2020 folder
c0_spacing = "header"     # "lge" for the cropped MS-CMRSeg copy, whose C0 headers keep a stale voxel size
t2_dir = None             # T2 images for setting 1 when data_dir has none (the MS-CMRSeg copy): MyoPS 2020
output_root = None        # None: the folder of this profile and data (README: where outputs land)

# %%
from cmr_lib.core.atomic import save_figure
from cmr_lib.core.config import check_parameter, make_config
from cmr_lib.data.sources import source_for
from cmr_lib.report import plots
from cmr_lib.study.rebuild import run_training_examples
from cmr_lib.study import runs

cfg = make_config(profile=profile, setting=setting, stylizer=stylizer, seed=seed, data_dir=data_dir,
                  c0_spacing=c0_spacing, output_root=output_root, t2_dir=t2_dir)
epsilon_iterations = check_parameter("epsilon_iterations", epsilon_iterations)
include_original = check_parameter("include_original", include_original)
print(cfg.summary())
if cfg.searches:
    print(f"epsilon iterations {epsilon_iterations}, also training on the original batch: {include_original}")

# %% [markdown]
# ## Train (or reuse) and evaluate
#
# Work already done with the same configuration is reused: the stylizer checkpoint, the DRU-Net
# checkpoint and a finished `run.json`. A killed run resumes from its last checkpoint.

# %%
source = source_for(**cfg.source_args)
run = runs.run_setting(cfg, source, epsilon_iterations=epsilon_iterations, include_original=include_original)
rec = run.record
print(f"run {rec['run_name']}: {run.run_dir}")
print("timings (s):", rec["timings_seconds"])
if rec["encoder"]:
    print("encoder weights:", rec["encoder"]["weights"], rec["encoder"].get("source"))
save_figure(plots.training_curves(run.segmenter.history, title=f"DRU-Net, {rec['run_name']}"),
            cfg.figures_dir / "runs" / f"{rec['run_name']}_training.png")

# %% [markdown]
# ## What the network trained on
#
# The first training batch, rebuilt from the run's record with the very function training used
# (a test checks that the images are identical): bSSFP slices of training patients, after the random
# affine augmentation; the LGE slice that this setting's pairing picked for each one (none for the
# style-free baselines); and what the DRU-Net saw. For RAIN with style search, the search here runs
# against the trained network (the network of step 0 is not kept), which looks for the styles it
# finds hardest.

# %%
if cfg.network or cfg.baseline:
    examples = run_training_examples(rec, source, output_root=output_root)
    save_figure(plots.stylization_grid(examples, title=f"setting {cfg.setting}, {cfg.stylizer}: training images"),
                cfg.figures_dir / "runs" / f"{rec['run_name']}_stylized.png")
else:
    print(f"setting {cfg.setting} trains on the bSSFP slices as they are")

# %% [markdown]
# ## Predictions on LGE (test patients with labels)

# %%
labelled = rec["test_patients_labelled"] or [p for p in rec["data"]["split"]["val"] if source.has_label(p, "LGE")]
shown = labelled[: cfg.sizes.analysis.examples]
rows = {"LGE": runs.predict_examples(cfg, source, run.segmenter.model, shown, sequence="LGE")}
save_figure(plots.prediction_panels(rows, title=f"{rec['run_name']}: LGE ground truth and prediction"),
            cfg.figures_dir / "runs" / f"{rec['run_name']}_predictions.png");

# %% [markdown]
# ## Metrics
#
# Dice and the Hausdorff distance (HD, in mm) per structure on the LGE test volumes. AVG ± STD is
# the mean and spread over the three structures, as in the paper's Table 2. When the test labels
# are withheld, as in the MS-CMRSeg challenge copy, the predictions are still saved (`predictions/`).
# The scores are then those of the patients that have labels; the validation patients' scores
# (used for model selection, so optimistic) are shown too.

# %%
if rec["test_patients_unlabelled"]:
    print(f"test patients without labels (predicted, not scored): {rec['test_patients_unlabelled']}")
runs.summary_table(rec)

# %% [markdown]
# ## Exercises
#
# Each asks you to predict first, then run and check.
#
# 1. Run setting 0 and setting 3 with the same seed (`-p setting 0`, `-p setting 3`). Predict which structure
#    gains most from stylization, then check the per-structure Dice.
# 2. Set `epsilon_iterations` to 0 and then to 5 (RAIN). Does the adversarial search help on this profile? Run
#    two seeds each before you decide: how large is the seed-to-seed spread?
# 3. Try `-p stylizer intensity` (a random intensity curve, no style transfer). If it scores as well as RAIN,
#    what does that say about what the stylizer contributes?
