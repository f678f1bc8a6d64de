"""Intensity exploration for notebook 01 (the paper's Fig. 1): why bSSFP -> LGE is a domain shift.

Pools normalised intensities per structure over patients and compares sequences with the KL
divergence of their histograms, for the phantom and for any real data set.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cmr_lib.data.nifti import CLASSES
from cmr_lib.data.phantom_anatomy import TISSUES, tissue_signals
from cmr_lib.data.real import epicardial_diameter_px
from cmr_lib.data.slices import heart_extent, nearest_level, relative_levels
from cmr_lib.data.sources import CMRSource
from cmr_lib.data.transforms import normalise
from cmr_lib.evaluation.metrics import intensity_kl

REGIONS = ("heart", "MYO", "LV", "RV")   # heart = LV u MYO u RV


def cardiac_intensities(volume, percentiles=(0.5, 99.5)) -> dict[str, np.ndarray]:
    """Normalised intensities of one labelled volume, per region: {'heart', 'MYO', 'LV', 'RV'} -> 1-D arrays."""
    if volume.label is None:
        raise ValueError(f"{volume.image_path}: needs a label to select the cardiac region")
    img = normalise(volume.image, percentiles, name=str(volume.image_path))
    out = {"heart": img[volume.label > 0]}
    out.update({name: img[volume.label == cls] for cls, name in CLASSES.items()})
    return out


def pooled_intensities(source: CMRSource, sequence: str, patients=None, percentiles=(0.5, 99.5)):
    """Pool cardiac intensities of `sequence` over labelled patients (all, or the first `patients`)."""
    have = source.patients_with(sequence, labelled=True)
    if isinstance(patients, int):
        have = have[:patients]
    elif patients is not None:
        have = [p for p in have if p in set(patients)]
    parts = {r: [] for r in REGIONS}
    for vol in source.volumes(have, sequence, label="require"):
        for r, v in cardiac_intensities(vol, percentiles).items():
            parts[r].append(v)
    return {r: np.concatenate(v) if v else np.zeros(0, np.float32) for r, v in parts.items()}, have


def kl_table(pools: dict[str, dict[str, dict]], pairs=(("C0", "LGE"), ("C0", "T2")), bins=64) -> pd.DataFrame:
    """KL(source || target) per data set, sequence pair and region, from pooled intensities.

    pools: {dataset name: {sequence: {region: values}}}. Pairs whose sequences a data set lacks are skipped.
    """
    rows = []
    for name, seqs in pools.items():
        for a, b in pairs:
            if a not in seqs or b not in seqs:
                continue
            row = {"data": name, "pair": f"{a}->{b}"}
            for r in REGIONS:
                va, vb = seqs[a][r], seqs[b][r]
                row[r] = intensity_kl(va, vb, bins) if len(va) and len(vb) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows, columns=["data", "pair", *REGIONS])


def example_slice(volume, level: float = 0.5, percentiles=(0.5, 99.5)):
    """(normalised 2-D image, label or None, slice index) at a relative level between base and apex."""
    img = normalise(volume.image, percentiles, name=str(volume.image_path))
    extent = None if volume.label is None else heart_extent(volume.label)
    z = nearest_level(relative_levels(img.shape[2], extent), level)
    return img[:, :, z], None if volume.label is None else volume.label[:, :, z], z


def calibration_statement(kl: pd.DataFrame, region: str = "heart", pair: str = "C0->LGE") -> str:
    """One sentence comparing the phantom's sequence shift with the real data sets' (order of magnitude)."""
    sub = kl[kl["pair"] == pair].set_index("data")[region]
    if "phantom" not in sub.index:
        return "no phantom row to compare"
    real = sub.drop("phantom", errors="ignore").dropna()
    if real.empty:
        return (f"phantom KL({pair}, {region}) = {sub['phantom']:.3f}; no real data found to compare with "
                "(set CMR_REAL_DATA or place the samples in ../shared/data)")
    ph = float(sub["phantom"])
    parts = ", ".join(f"{k} {v:.3f}" for k, v in real.items())
    ratios = ph / real
    same_order = bool(((ratios > 0.1) & (ratios < 10)).any())
    verdict = "the same order of magnitude as" if same_order else "NOT of the same order as"
    return (f"KL({pair}) in the {region} region: phantom {ph:.3f} vs real {parts} "
            f"(phantom/real {', '.join(f'{r:.1f}x' for r in ratios)}): {verdict} at least one real set.")


def tissue_table(**acquisition) -> pd.DataFrame:
    """Tissue parameters and noiseless signal per sequence, each relative to that sequence's brightest tissue."""
    table = pd.DataFrame({seq: tissue_signals(seq, **acquisition) for seq in ("C0", "LGE", "T2")})
    table = table / table.max(axis=0)
    params = pd.DataFrame(TISSUES, index=["PD", "T1 (ms)", "T2 (ms)", "T1 post-Gd (ms)"]).T
    return pd.concat([params, table.add_prefix("signal ")], axis=1).drop(index="air")


def load_pools(sources: dict, *, patients=None, percentiles=(0.5, 99.5), progress=True):
    """Pooled cardiac intensities for every data set and labelled sequence: {name: {seq: {region: values}}}."""
    from tqdm.auto import tqdm

    pools, used = {}, {}
    for name, src in tqdm(sources.items(), desc="intensities", disable=not progress):
        pools[name], used[name] = {}, {}
        for seq in src.sequences:
            if src.patients_with(seq, labelled=True):
                pools[name][seq], used[name][seq] = pooled_intensities(src, seq, patients, percentiles)
    return pools, used


def examples(sources: dict, *, level=0.5, percentiles=(0.5, 99.5)) -> dict:
    """One mid-ventricular example per data set and sequence, from the first patient labelled in all of them."""
    out = {}
    for name, src in sources.items():
        seqs = [s for s in src.sequences if src.patients_with(s, labelled=True)]
        common = set.intersection(*(set(src.patients_with(s, labelled=True)) for s in seqs)) if seqs else set()
        patient = min(common) if common else None
        out[name] = {}
        for seq in seqs:
            p = patient if patient is not None else src.patients_with(seq, labelled=True)[0]
            img, lab, _ = example_slice(src.load(p, seq, label="require"), level, percentiles)
            out[name][seq] = (img, lab)
    return out


def heart_sizes(sources: dict, patients: int | None = 5) -> pd.DataFrame:
    """Mean largest epicardial diameter per data set and sequence, in pixels and in mm by the header.

    If two sequences of one data set show the same heart at very different sizes in mm but the same
    size in pixels, a header voxel size is wrong (the cropped MS-CMRSeg copy's C0: data.real.detect_c0_spacing decides it from the same measure).
    """
    rows = []
    for name, src in sources.items():
        for seq in src.sequences:
            pats = src.patients_with(seq, labelled=True)[:patients]
            px, mm = [], []
            for vol in src.volumes(pats, seq, label="require"):
                d = epicardial_diameter_px(vol.label)
                px.append(d)
                mm.append(d * np.sqrt(vol.spacing[0] * vol.spacing[1]))
            if px:
                rows.append({"data": name, "sequence": seq, "patients": len(px), "voxel size mm": vol.spacing[0],
                             "epicardial diameter px": float(np.mean(px)), "epicardial diameter mm": float(np.mean(mm))})
    return pd.DataFrame(rows)


def heart_placement(sources: dict, fov_mm: float, sequence: str = "LGE") -> pd.DataFrame:
    """Per labelled test volume: its in-plane field (mm), how far its heart (LV ∪ MYO ∪ RV over all slices) lies
    from the image centre, and the share of heart voxels inside a centred fov_mm window, the test crop at the
    image centre: a low share means that crop cuts the heart (what preprocess.test_crop = heart is for)."""
    rows = []
    for name, src in sources.items():
        for vol in src.volumes(src.patients_with(sequence, labelled=True), sequence, label="require"):
            heart = vol.label > 0
            if not heart.any():
                continue
            size = [n * s for n, s in zip(vol.shape[:2], vol.spacing[:2])]
            idx = np.nonzero(heart)
            mm = [(idx[ax] + 0.5) * vol.spacing[ax] - size[ax] / 2 for ax in (0, 1)]   # heart voxels from the centre
            centre = [(m.min() + m.max()) / 2 for m in mm]                              # of the heart's bounding box
            inside = (np.abs(mm[0]) <= fov_mm / 2) & (np.abs(mm[1]) <= fov_mm / 2)
            rows.append({"data": name, "patient": vol.patient, "field mm": f"{size[0]:.0f} x {size[1]:.0f}",
                         "heart offset mm": float(np.hypot(*centre)),
                         "heart inside centred crop": float(inside.mean())})
    return pd.DataFrame(rows)
