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
# # 06 · Analysis: Tables 2 and 3, the paper's claims, and the summary figures
#
# Every row of Table 2 (settings 0–3 × RAIN, AdaConv) and Table 3 (RAIN with 1, 3, 5 epsilon
# iterations) was written by notebook 05 as `results/runs/<run>/run.json`. This notebook reads those
# records alone (plus the saved predictions and the stylizers they name, for the figures), builds the
# tables in the paper's layout, checks the paper's claims against them, and draws:
#
# - `figures/fig6_predictions.png`: LGE slices, ground truth and each setting's prediction;
# - `figures/fig8_histograms.png`: what each setting trains on, as intensity histograms beside LGE;
# - `figures/table2_bars.png`: Dice and Hausdorff distance per structure, with every patient.
#
# **Metric conventions** (as in the paper): Dice and the Hausdorff distance (HD, mm, on each volume's
# own voxel grid) per structure and patient; a table cell is the mean over patients; "AVG ± STD" is the
# mean and the population standard deviation over the three structures' means. HD95 and ASSD are extra.

# %% tags=["parameters"]
profile = "demo"        # the profile whose runs make the tables (runs of other profiles are ignored)
seed = 0                # the seed whose runs make the tables
data_dir = None         # None: the built-in phantom; else the data folder the runs used
c0_spacing = "header"   # as the runs had it ("lge" for the cropped MS-CMRSeg copy)
t2_dir = None           # as the runs had it (T2 for setting 1 when data_dir has none)
output_root = None      # None: figures/, results/ and checkpoints/ of the repository
allow_mixed = False     # True: let runs of several profiles or data sources share one table

# %% [markdown]
# ## The runs

# %%
from cmr_lib import analysis, data
from cmr_lib.atomic import save_figure, write_text
from cmr_lib.params import make_config

cfg = make_config(profile=profile, setting=0, seed=seed, data_dir=data_dir, c0_spacing=c0_spacing,
                  output_root=output_root, t2_dir=t2_dir)
runs = analysis.load_runs(cfg.results_dir, profile=cfg.profile, seed=cfg.seed, allow_mixed=allow_mixed)
print(f"{len(runs)} runs of profile {cfg.profile}, seed {cfg.seed}:")
for r in runs:
    print(f"  {r['run_name']}: {analysis.part_of(r)} patients, {r['summary'][analysis.part_of(r)]['dice']['cases']} cases")

# %% [markdown]
# ## Table 2: settings × stylizers
#
# Rows follow the paper: setting 0 (bSSFP only), then settings 1–3 with each stylizer (RAIN with 5
# epsilon iterations). The `patients` column says whether a row reports the labelled test patients or,
# when test labels are withheld (the real MS-CMRSeg copy), the validation patients.

# %%
table2 = analysis.table(runs, analysis.TABLE2_ROWS)
analysis.write_table(table2, cfg.results_dir / "table2")
print(analysis.markdown(table2))

# %% [markdown]
# ## Table 3: RAIN and the number of epsilon iterations
#
# Adversarial style search moves each batch's style code up the gradient of the segmentation loss
# `epsilon_iterations` times before the network learns from it: more rounds, harder styles.

# %%
table3 = None
if any(analysis.row_key(r) in analysis.TABLE3_ROWS for r in runs):
    table3 = analysis.table(runs, analysis.TABLE3_ROWS)
    analysis.write_table(table3, cfg.results_dir / "table3")
    print(analysis.markdown(table3))
else:
    print("no RAIN setting-1 run yet: run 05_settings with setting=1, stylizer='rain', epsilon_iterations=1, 3, 5")

# %% [markdown]
# ## Beside the paper
#
# The paper's values come from `params/paper_tables.yaml`; a blank cell means that value has not been
# transcribed there (see the file's header). Differences are ours minus the paper's.

# %%
paper = analysis.paper_tables()
print(analysis.compare_with_paper(table2, paper["table2"]).round(3).to_string(index=False))
if table3 is not None:
    print(analysis.compare_with_paper(table3, paper["table3"]).round(3).to_string(index=False))

# %% [markdown]
# ## Which of the paper's claims hold here?
#
# Each claim is checked on the tables above; `holds` is empty when the rows it needs are missing.

# %%
verdicts = analysis.claims(table2, table3)
write_text(cfg.results_dir / "claims.md", analysis.claims_markdown(verdicts))
print(analysis.claims_markdown(verdicts))

# %% [markdown]
# How to read this on the built-in phantom (demo profile): the phantom's LGE differs from its bSSFP
# less than real LGE does (a bSSFP-trained network keeps more of its Dice on phantom LGE than on the
# real MS-CMRSeg LGE at the same budget, see the README), and the CPU-sized stylizers are blurry, so
# gains from stylization are small there. The claims about RAIN against AdaConv and about epsilon
# iterations are about the methods' behaviour and can be read on any data; the size of the gain over
# setting 0 belongs to the real data and the paper profile.

# %% [markdown]
# ## Figures

# %%
source = data.source_for(cfg)
save_figure(analysis.prediction_grid(runs, source), cfg.figures_dir / "fig6_predictions.png")

# %%
fig, kl = analysis.setting_histograms(
    runs, source, lambda s, k: make_config(profile=profile, setting=s, stylizer=k if s else "rain", seed=seed,
                                           data_dir=data_dir, c0_spacing=c0_spacing, output_root=output_root,
                                           t2_dir=t2_dir))
save_figure(fig, cfg.figures_dir / "fig8_histograms.png")
write_text(cfg.results_dir / "fig8_kl.csv", kl.to_csv())
print(kl.round(3).to_string())
if kl.attrs["skipped"]:
    print("left out (stylizer checkpoint gone):", ", ".join(kl.attrs["skipped"]))

# %%
save_figure(analysis.table2_bars(runs), cfg.figures_dir / "table2_bars.png");
