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
# # 01 · Data exploration: why bSSFP → LGE is a domain shift
#
# A segmentation network trained on labelled **bSSFP** cine images (bright blood, dark myocardium)
# fails on **LGE** images, where healthy myocardium is nulled, scar is bright and blood is grey.
# This notebook shows that shift, which is what the rest of the study tries to bridge by restyling
# bSSFP images to look like LGE. It makes the paper's **Fig. 1**: appearance and cardiac-region
# intensity distributions of the sequences (`figures/fig1_appearance.png`,
# `figures/fig1_intensity.png`), and it checks that the built-in phantom's shift is as large as
# the real one.
#
# By default it runs on the built-in phantom. Pass `data_dir` to use MS-CMRSeg 2019 or MyoPS 2020
# data. Where the real sample sets are found, they are always shown beside the phantom.

# %% tags=["parameters"]
profile = "demo"        # smoke | demo | demo-long | real | real-ref | paper, or the path of a profile YAML file
data_dir = None         # None: the built-in phantom; else an MS-CMRSeg 2019 or MyoPS 2020 folder
c0_spacing = "header"   # "lge" for the cropped MS-CMRSeg copy, whose C0 headers keep a stale voxel size
seed = 0
output_root = None      # None: the folder of this profile and data (README: where outputs land)
real_data_dir = None    # folder holding mscmrseg2019/ and myops2020/; None: $CMR_REAL_DATA or ../shared/data

# %% [markdown]
# ## Setup
# One call validates the parameters against the profile; a wrong value stops here with one line.

# %%
from cmr_lib.core.atomic import save_figure, write_json, write_text
from cmr_lib.core.config import make_config
from cmr_lib.data.sources import find_real_data, open_source, source_for
from cmr_lib.data.slices import SliceDataset
from cmr_lib.report import explore, plots

cfg = make_config(profile=profile, data_dir=data_dir, c0_spacing=c0_spacing, seed=seed,
                         output_root=output_root, real_data_dir=real_data_dir)
print(cfg.summary())
source = source_for(**cfg.source_args)
print(source)

# %% [markdown]
# ## The physics: one anatomy, three contrasts
#
# A voxel's brightness is not a property of the tissue alone: it depends on the tissue's proton
# density (PD) and relaxation times (T1, T2) *and* on the sequence. The phantom uses the textbook
# signal equations (1.5 T):
#
# | sequence | signal | effect |
# | --- | --- | --- |
# | bSSFP (C0), flip α ≈ 60° | PD·sin α / ((1 + cos α) + (1 − cos α)·T1/T2) | high T2/T1: blood and fat bright, myocardium dark |
# | LGE, inversion recovery, after gadolinium | PD·\|1 − 2·exp(−TI/T1)\| | TI ≈ ln 2 · T1(myocardium) nulls healthy myocardium; scar (short T1, gadolinium pools there) is bright |
# | T2-weighted, black blood | PD·exp(−TE/T2), blood and fat suppressed | edema (long T2) brighter than myocardium, blood black |
#
# The table gives each tissue's parameters and its noiseless signal, relative to the brightest
# tissue of each sequence. Read one row across: myocardium is mid-grey in bSSFP, black in LGE and
# bright in T2. That is the domain shift in one line.

# %%
explore.tissue_table().round(2)

# %% [markdown]
# The phantom then adds what real scanners add: partial volume (sub-voxel sampling, thick slices),
# a smooth coil-sensitivity bias field, Rician noise and an arbitrary intensity scale stored as
# int16. Each sequence has its own grid, slice thickness and pose, as in the real data, where the
# sequences are not co-registered. Two details matter for realism. In LGE the inversion time is set
# on a TI scout minutes before the acquisition, and gadolinium washes out meanwhile, so healthy
# myocardium comes out dark grey rather than black. Contrast dose, timing and blood flow also vary
# from patient to patient.

# %% [markdown]
# ## What the sequences look like (Fig. 1, appearance)
# One mid-ventricular slice per data set and sequence (axis 0 horizontal: the RV is on the left),
# with the manual contours: MYO green, LV red, RV blue.

# %%
sources = {"phantom" if data_dir is None else source.layout: source}
real = find_real_data(real_data_dir)
for name, path in real.items():
    if cfg.data_dir is None or path != cfg.data_dir:
        sources[{"mscmrseg": "MS-CMRSeg 2019", "myops": "MyoPS 2020"}[name]] = open_source(path)
print("data sets:", ", ".join(f"{k} ({v.root})" for k, v in sources.items()))
if not real:
    print("real sample sets not found: showing the phantom only (set real_data_dir or CMR_REAL_DATA)")

pct = tuple(cfg.sizes.preprocess.percentiles)
fig = plots.fig1_appearance(explore.examples(sources, percentiles=pct))
print("saved", save_figure(fig, cfg.figures_dir / "fig1_appearance.png"))

# %% [markdown]
# ## Intensity distributions in the cardiac region (Fig. 1, histograms)
#
# Each volume is normalised on its own: its 0.5th and 99.5th intensity percentiles map to 0 and 1.
# This is what every later stage sees. Intensities inside LV ∪ MYO ∪ RV (and inside the myocardium
# alone) are pooled over the labelled patients. The shift between two sequences is measured by the
# KL divergence of their histograms, KL(C0 ‖ target), in nats.

# %%
pools, used = explore.load_pools(sources, patients=cfg.sizes.data.calibration_patients, percentiles=pct)
kl = explore.kl_table(pools, bins=cfg.sizes.analysis.hist_bins)
fig = plots.fig1_intensity(pools, kl, bins=cfg.sizes.analysis.hist_bins)
print("saved", save_figure(fig, cfg.figures_dir / "fig1_intensity.png"))
kl.round(3)

# %% [markdown]
# ## Calibration: is the phantom's shift realistic?
#
# The phantom only stands in for real data if bSSFP → LGE is as hard on it as on real images. The
# KL of the cardiac region is the yardstick: the table above has one row per data set and pair
# (with the real sets present) and is saved as `results/fig1_kl.md`; the lines below compare the
# phantom's C0 → LGE shift with the real ones.
#
# What the table showed when the phantom was calibrated (demo profile, 45 phantom patients against
# every real patient with labels): three regions of the phantom's C0 → LGE shift lie between the
# two real sets; the fourth, the myocardium, is above both, because the phantom nulls healthy
# myocardium somewhat more completely than real scans do. Every entry is the same order of
# magnitude as a real one, and the C0 → T2 shift matches MyoPS's closely. The cropped MS-CMRSeg
# copy shows the smallest C0 → LGE shift, because its LGE blood pool is bright and its tight crop
# leaves little bright fat to set the normalisation; MyoPS, uncropped, shows the largest.
#
# A second finding, measured on the same data: in the cropped MS-CMRSeg copy the C0 headers keep
# the original voxel size of the scan, but the arrays were resampled to the LGE grid. The heart
# spans the same number of pixels in C0 and LGE (the heart-size table below), so the true C0
# voxel is LGE's. Profiles that resample to a common spacing must read C0 with `c0_spacing="lge"`.
# Both are measured again below whenever the real copies are present:

# %%
print(explore.calibration_statement(kl, "heart"))
print(explore.calibration_statement(kl, "MYO"))
for name, seqs in used.items():
    print(f"{name}: patients used per sequence: " + ", ".join(f"{s} {len(p)}" for s, p in seqs.items()))
explore.heart_sizes(sources).round(2)

# %% [markdown]
# ## From volumes to training slices
#
# The networks see 2-D slices. Each volume is normalised, resampled in-plane to the profile's
# spacing (`preprocess.spacing_mm`: coarser on CPU profiles, native in `paper`), then each
# training slice gets a random affine transform: scale, rotation, translation and shear, bilinear
# for the image and nearest-neighbour for the label, so labels stay labels. Last comes a centre
# crop to the profile's size; small images are zero-padded. The grid shows what one training epoch
# draws.

# %%
patients = source.patients_with("C0", labelled=True)[:2]
train_slices = SliceDataset.from_source(source, patients, "C0", **cfg.slicing(train=True), heart_only=True)
print(f"{len(train_slices)} heart slices of {len(patients)} patients, crop {cfg.crop} px at "
      f"{cfg.sizes.preprocess.spacing_mm or 'native'} mm")
step = max(1, len(train_slices) // 8)
fig = plots.augmentation_grid([train_slices[i] for i in range(0, len(train_slices), step)][:8])

# %% [markdown]
# ## Results
# The KL table is saved beside the figures, so the README and later notebooks can quote it.

# %%
cfg.results_dir.mkdir(parents=True, exist_ok=True)
write_text(cfg.results_dir / "fig1_kl.csv", kl.to_csv(index=False, float_format="%.4f"))
write_text(cfg.results_dir / "fig1_kl.md", kl.to_markdown(index=False, floatfmt=".3f") + "\n")
write_json(cfg.results_dir / "fig1_kl.json", {"config": cfg.to_dict(), "patients": used,
                                              "kl": kl.to_dict(orient="records")})
print("wrote", cfg.results_dir / "fig1_kl.csv", "(and .md, .json)")

# %% [markdown]
# ## Exercises
#
# Each asks you to predict first, then run and check.
#
# 1. Predict first, then check: in the tissue table, which tissue is brightest in LGE, and why does that make
#    scar easy to see but the myocardium's outline hard? Find the row and explain it from the TI formula.
# 2. Run the notebook with `-p seed 1` (papermill) or change `seed` in the parameters cell. Which numbers of
#    `fig1_kl.md` move, and which stay put? What does that tell you about what the phantom's seed controls?
# 3. If the real sample sets are here, compare the KL from C0 to LGE on the phantom with the KL on MS-CMRSeg. Is
#    the phantom's shift as large as the real one? What would a too-easy phantom do to the conclusions of
#    notebook 05?
