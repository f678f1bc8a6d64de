"""Intensity exploration for notebook 01 (the paper's Fig. 1): why bSSFP -> LGE is a domain shift.

Pools normalised intensities per structure over patients and compares sequences with the KL
divergence of their histograms, for the phantom and for any real data set.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cmr_lib.data import CLASSES, CMRSource
from cmr_lib.metrics import intensity_kl
from cmr_lib.transforms import normalise

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
