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
# Every row of Table 2 (settings 0–3 × RAIN, AdaConv, and our baselines) and Table 3 (RAIN with 1, 3,
# 5 epsilon iterations) was written by notebook 05 as `results/runs/<run>/run.json`. This notebook reads those
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
# With several seeds, a cell is the mean over seeds ± the 95 % confidence interval of that mean.

# %% tags=["parameters"]
profile = "demo"        # the profile whose runs make the tables (runs of other profiles are ignored)
seed = 0                # the seed whose runs make the figures (and the tables when seeds is None)
seeds = None            # a list of seeds whose runs the tables average ([0, 1, 2] from make reproduce with SEEDS 3)
data_dir = None         # None: the built-in phantom; else the data folder the runs used
c0_spacing = "header"   # as the runs had it ("lge" for the cropped MS-CMRSeg copy)
t2_dir = None           # as the runs had it (T2 for setting 1 when data_dir has none)
output_root = None      # None: the folder of this profile and data (README: where outputs land)
allow_mixed = False     # True: let runs of several profiles or data sources share one table
cross_data = "auto"     # data sets to test every row's network on besides its own: "auto" (the real sample
                        # sets found and the phantom), None (skip), or a list of data folders

# %% [markdown]
# ## The runs

# %%
from cmr_lib.core import grid
from cmr_lib.core.atomic import save_figure, write_json, write_text
from cmr_lib.core.config import check_parameter, make_config
from cmr_lib.core.paths import display_path
from cmr_lib.data.sources import source_for
from cmr_lib.report import cross, paper, stats, summary_figures, tables
from cmr_lib.study.rebuild import cross_dataset, setting_histograms
from cmr_lib.study.runs import export_test_predictions

cfg = make_config(profile=profile, setting=0, seed=seed, data_dir=data_dir, c0_spacing=c0_spacing,
                  output_root=output_root, t2_dir=t2_dir)
print(cfg.summary())
seeds = check_parameter("seeds", seeds) or [cfg.seed]
allow_mixed, cross_data = check_parameter("allow_mixed", allow_mixed), check_parameter("cross_data", cross_data)
source = source_for(**cfg.source_args)
runs = tables.load_runs(cfg.results_dir, profile=cfg.profile, seed=seeds, allow_mixed=allow_mixed,
                          data_root=None if allow_mixed else display_path(source.root))
first_seed = [r for r in runs if r["seed"] == cfg.seed] or runs          # one run per row for the figures
print(f"{len(runs)} runs of profile {cfg.profile}, seeds {seeds}:")
for r in runs:
    print(f"  {r['run_name']}: {tables.part_of(r)} patients, {r['summary'][tables.part_of(r)]['dice']['cases']} cases")

# %% [markdown]
# ## Table 2: settings × stylizers
#
# Rows follow the paper: setting 0 (bSSFP only), then settings 1–3 with each stylizer (RAIN with 5
# epsilon iterations). Then come our baseline rows, which the paper does not have: appearance
# augmentations a practitioner would try first (`intensity`: random monotone curves, gamma and
# contrast; `GIN`: random shallow conv nets; `histmatch`: the histogram of an LGE slice, random in
# setting 2, the same patient's in setting 3), and RAIN followed by the intensity remap. The `patients` column says whether a row reports the labelled test patients or,
# when test labels are withheld (the real MS-CMRSeg copy), the validation patients.

# %%
table2 = tables.table(runs, grid.table_rows("table2"))
tables.write_table(table2, cfg.results_dir / "table2")
print(tables.markdown(table2))

# %% [markdown]
# The same predictions after the post-processing nnU-Net applies by default: each structure keeps only
# its largest connected component. The islands it removes lie far from the heart, so the Hausdorff
# distance drops most; Dice changes little. The saved predictions stay as the network made them
# (`python -m cmr_lib.evaluation.evaluate PRED GT --largest-component` scores them this way).

# %%
older = [r["run_name"] for r in runs if "summary_largest_component" not in r]
if older:
    print("runs made before post-processed scores were recorded (rerun them):", ", ".join(older))
else:
    table2_lcc = tables.table(runs, grid.table_rows("table2"), postprocess="largest_component")
    tables.write_table(table2_lcc, cfg.results_dir / "table2_largest_component")
    print(tables.markdown(table2_lcc))

# %% [markdown]
# ## Table 3: RAIN and the number of epsilon iterations
#
# Adversarial style search moves each batch's style code up the gradient of the segmentation loss
# `epsilon_iterations` times before the network learns from it: more rounds, harder styles.

# %%
table3 = None
if any(grid.row_key(r) in grid.table_rows("table3") for r in runs):
    table3 = tables.table(runs, grid.table_rows("table3"))
    tables.write_table(table3, cfg.results_dir / "table3")
    print(tables.markdown(table3))
else:
    print("no RAIN setting-1 run yet: run 05_settings with setting=1, stylizer='rain', epsilon_iterations=1, 3, 5")

# %% [markdown]
# ## Beside the paper
#
# The paper's values come from `params/paper_tables.yaml`, transcribed from its Tables 2 and 3 (a test
# checks each number against the paper's text). Differences are ours minus the paper's; a row the paper
# does not have (our baselines) has no paper value. Mind what is compared: the paper's networks were
# trained on real bSSFP and scored on real LGE; on the phantom, only the direction of each difference
# between rows can be set beside the paper's.

# %%
comparison = paper.comparison_markdown(table2, table3)
write_text(cfg.results_dir / "paper_comparison.md", comparison)
print(comparison)

# %% [markdown]
# ## Which of the paper's claims hold here?
#
# A claim is a statement about patients, so a difference of means is not enough. Each claim is judged twice:
# do the means go its way, and does a paired Wilcoxon test over patients (each patient's score averaged over
# structures and seeds) put that difference beyond chance, after Holm's correction over the tests the claim
# needs? It **holds** when both say yes, **does not hold** when the means go the other way, is **not shown**
# when the means agree but the test does not (with 5 patients no two-sided test can reach p < 0.05), and
# **cannot tell** when the rows it needs are missing.

# %%
verdicts = paper.claims(table2, table3, scores=paper.record_scores(runs))
claims_md = paper.claims_markdown(verdicts)
print(claims_md)

# %% [markdown]
# How to read this on the built-in phantom (demo profile): the phantom's LGE differs from its bSSFP
# less than real LGE does (a bSSFP-trained network keeps more of its Dice on phantom LGE than on the
# real MS-CMRSeg LGE at the same budget, see docs/findings.md), and the CPU-sized stylizers are blurry, so
# gains from stylization are small there. The claims about RAIN against AdaConv and about epsilon
# iterations are about the methods' behaviour and can be read on any data; the size of the gain over
# setting 0 belongs to the real data and the paper profile.

# %% [markdown]
# ## Does style transfer beat simple appearance augmentation?
#
# A table cell is a mean; whether two rows differ is a question about patients. Every row is tested
# against setting 0; each stylizer alone also against the random intensity curve (the control: a
# stylizer that does not beat it adds nothing that any perturbation of the grey levels would not); each
# stylizer + baseline against both of its parts; and every row with a stylizer against the best appearance
# baseline (the one with the highest Dice, picked on these same patients, so those p-values are
# optimistic). Holm's correction runs within each metric's family of tests. For each pair,
# every test (else validation) patient gives one number per row, its Dice or HD averaged over MYO, LV
# and RV (and over seeds), and a paired Wilcoxon signed-rank test asks whether the differences are
# centred on zero. With 15 phantom test patients, p < 0.05 needs a consistent difference; with the 5
# labelled LGE patients of the real MS-CMRSeg copy, no difference can reach it (the smallest
# two-sided p with 5 pairs is 0.0625): there, read the differences, not the verdicts.

# %%
tests = stats.paired_tests(runs, grid.table_rows("table2"), best_baseline=stats.best_baseline_key(table2))
write_text(cfg.results_dir / "table2_tests.md", stats.tests_markdown(tests))
write_text(cfg.results_dir / "table2_tests.csv", tests.to_csv(index=False, float_format="%.5g"))
print(stats.tests_markdown(tests))

# %% [markdown]
# The reading below is written from the numbers above, for the data this notebook was run on.

# %%
where = "the built-in phantom" if cfg.data_dir is None else f"{cfg.data_dir.name}"
reading = stats.baseline_reading(table2, tests, runs, data=where)
write_text(cfg.results_dir / "baselines.md", reading)
print(reading)

# %% [markdown]
# ## Across data sets
#
# A network trained on one data set's bSSFP (and styled with its LGE) meets another scanner, another
# centre and, for the phantom, another world. Each row's DRU-Net is scored, as it is, on every labelled
# LGE volume of the other data sets available here (real MS-CMRSeg 2019 validation patients, MyoPS
# 2020 patients, the phantom); its own column repeats its Table 2 value. None of these volumes took
# part in its training. With several seeds, every seed's network is scored and a cell is their mean, as in
# Table 2. Each stylizer row is then tested, patient by patient, on each data set against the same rows
# as above (`cross_dataset_tests.md`: with the 10 MyoPS test patients a consistent difference can reach
# p < 0.05, which the 5 labelled MS-CMRSeg patients cannot), and the baselines are read again on each data
# set (added to `baselines.md`).

# %%
others = cross.cross_sources(cfg, source, cross_data)
protocol = cross.protocol(runs, source, others)              # who chose, who is reported (a test reads it)
write_json(cfg.results_dir / "protocol.json", {**protocol, "problems": cross.protocol_problems(protocol)})
print("protocol:", "; ".join(cross.protocol_problems(protocol)) or "no reported patient helped choose")
if others:
    table_x = cross_dataset(runs, source, others, grid.table_rows("table2"), output_root=output_root)
    write_text(cfg.results_dir / "cross_dataset.md", cross.cross_markdown(table_x))
    write_text(cfg.results_dir / "cross_dataset.csv", table_x.to_csv(index=False, float_format="%.4f"))
    print(cross.cross_markdown(table_x))
    tests_x = cross.cross_tests(table_x)                     # paired over each data set's patients
    write_text(cfg.results_dir / "cross_dataset_tests.md", stats.tests_markdown(tests_x))
    print(stats.tests_markdown(tests_x))
    across = cross.cross_reading(table_x)                   # the baselines, read on every data set
    write_text(cfg.results_dir / "baselines.md", reading + "\n" + across)
    print(across)
    verdict_sets = {f"{where} (own)": verdicts, **{f"{n} ({table_x.attrs['patients'][n]} patients)":
                    paper.claims(cross.as_table(table_x, n), None, scores=paper.per_patient_scores(
                        table_x.attrs["per_patient"][n])) for n in others}}
elif cross_data:
    print("no other data set with labelled LGE found (set CMR_REAL_DATA to the folder holding mscmrseg2019/ "
          "and myops2020/)")

# %% [markdown]
# ## Do the verdicts agree across test sets and profiles?
#
# The same claims, judged on every test set scored above (Dice only where a set has no per-patient HD), and
# beside the verdicts that other profiles' runs on the same data reached (their `claims.csv`, where written).
# A claim whose verdict changes with the test set or the profile is fragile, and `claims.md` says so.

# %%
if not others:
    verdict_sets = {f"{where} (own)": verdicts}
by_profile = {cfg.profile: verdicts, **paper.claims_of_other_profiles(cfg)}
claims_md += ("\n### Across test sets\n\n" + paper.across_markdown(paper.verdicts_across(verdict_sets), "test sets")
              + "\n### Across profiles (own test set)\n\n"
              + paper.across_markdown(paper.verdicts_across(by_profile), "profiles"))
write_text(cfg.results_dir / "claims.md", claims_md)
write_text(cfg.results_dir / "claims.csv", verdicts.assign(profile=cfg.profile).to_csv(index=False))
print(claims_md)

# %% [markdown]
# ## The official test set, ready to score
#
# The MS-CMRSeg challenge withheld the labels of LGE 6-45, so no table here can report them; reviewers who hold
# them can. Every row's and seed's predictions of those patients are copied to `predictions/<row>/seed<k>/` of
# this profile's folder, named as the challenge names the LGE images, with the one command that scores them.
# (Nothing is copied where every test patient is labelled, as on the phantom.)

# %%
exported = export_test_predictions(runs, cfg.output_root / "predictions")
if len(exported):
    first = exported["folder"].iloc[0]
    write_text(cfg.output_root / "predictions" / "README.md",
               f"# Predictions of the unlabelled test patients ({cfg.profile}, {where})\n\n"
               "One folder per Table 2/3 row and seed, one label volume per patient (0 background, 200 MYO, "
               "500 LV, 600 RV), named as the challenge names the LGE image. With the challenge's test labels "
               "(`patient<N>_LGE_manual.nii.gz`) in a folder LABELS, score one row and seed with:\n\n"
               f"    .venv/bin/python -m cmr_lib.evaluation.evaluate {first} LABELS --out scores.csv\n\n"
               + exported.to_markdown(index=False) + "\n")
    print(exported.to_string(index=False))

# %% [markdown]
# ## Figures

# %%
save_figure(summary_figures.prediction_grid(first_seed, source, grid.table_rows("table2", "paper")),
            cfg.figures_dir / "fig6_predictions.png")

# %%
fig, kl = setting_histograms(first_seed, source, grid.table_rows("table2", "paper"),
                                             output_root=output_root)
save_figure(fig, cfg.figures_dir / "fig8_histograms.png")
write_text(cfg.results_dir / "fig8_kl.csv", kl.to_csv())
print(kl.round(3).to_string())
if kl.attrs["skipped"]:
    print("left out (stylizer checkpoint gone):", ", ".join(kl.attrs["skipped"]))

# %%
save_figure(summary_figures.table2_bars(runs, grid.table_rows("table2")), cfg.figures_dir / "table2_bars.png");

# %% [markdown]
# ## Exercises
#
# Each asks you to predict first, then run and check.
#
# 1. Open `results/table2_tests.md`. With five test patients, what is the smallest p-value a Wilcoxon test can
#    reach, and why does that make a 'significant' verdict impossible here?
# 2. Find a claim in `results/claims.md` that holds on one test set and not on the other. Which would you trust
#    more, and why (think of how many patients each has and who chose the settings)?
# 3. In `figures/table2_bars.png`, compare the bar heights with the spread of the dots. For which row would you
#    want more patients before believing its rank?
