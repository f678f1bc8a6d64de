"""The real sample sets by name (`make reproduce DATA=mscmrseg2019`): where they are, and what a run on them
needs that the files do not say (the cropped MS-CMRSeg copy's stale C0 voxel size, T2 from MyoPS)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmr_lib.core.errors import CmrError
from cmr_lib.data.download import check_set
from cmr_lib.data.sources import find_real_data, open_source
from cmr_lib.data.splits import external_split

DATA_SETS = {"mscmrseg2019": "mscmrseg", "myops2020": "myops"}     # name -> find_real_data key
STALE_RATIO = 1.3           # header sizes of one heart that differ by more than this, in mm, are not both right


def epicardial_diameter_px(label: np.ndarray) -> float:
    """Diameter (pixels) of the circle with the area of the largest LV epicardium (labels 1 + 2) over slices."""
    area = max(int(np.isin(label[:, :, z], (1, 2)).sum()) for z in range(label.shape[2]))
    return 2.0 * float(np.sqrt(area / np.pi))


def detect_c0_spacing(data_dir) -> tuple[str, dict]:
    """'lge' when the C0 headers' in-plane voxel size is stale, else 'header'; with the evidence.

    For each patient with labelled C0 and LGE, the epicardium measures the same heart twice. When its
    size in mm by the headers differs by more than STALE_RATIO while its size in pixels agrees (the C0 was
    resampled onto the LGE grid and kept its old header), the C0 header is stale. Without such patients
    the headers are trusted."""
    src = open_source(data_dir)
    both = [p for p in src.patients_with("C0", labelled=True) if src.has_label(p, "LGE")]
    ratios_mm, ratios_px = [], []
    for p in both:
        c0, lge = src.load(p, "C0", label="require"), src.load(p, "LGE", label="require")
        d_c0, d_lge = epicardial_diameter_px(c0.label), epicardial_diameter_px(lge.label)
        if d_c0 == 0 or d_lge == 0:
            continue
        ratios_px.append(d_c0 / d_lge)
        ratios_mm.append(d_c0 * c0.spacing[0] / (d_lge * lge.spacing[0]))
    evidence = {"patients": len(ratios_px)}
    if not ratios_px:
        return "header", evidence
    mm, px = float(np.median(ratios_mm)), float(np.median(ratios_px))
    evidence.update(c0_over_lge_mm=round(mm, 3), c0_over_lge_px=round(px, 3))
    stale = abs(np.log(mm)) > np.log(STALE_RATIO) and abs(np.log(px)) < np.log(STALE_RATIO)
    return ("lge" if stale else "header"), evidence


@dataclass(frozen=True)
class NamedData:
    """A real sample set resolved for a run: its folder and the run parameters it needs."""

    name: str
    data_dir: Path
    c0_spacing: str
    t2_dir: Path | None
    evidence: dict = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{self.name} at {self.data_dir}", f"C0 voxel size from {self.c0_spacing}"]
        if self.evidence.get("patients"):
            parts[-1] += (f" (heart C0/LGE: {self.evidence['c0_over_lge_mm']} in mm by the headers, "
                          f"{self.evidence['c0_over_lge_px']} in pixels, {self.evidence['patients']} patients)")
        parts.append(f"T2 from {self.t2_dir}" if self.t2_dir else "T2 from the data set itself")
        return "; ".join(parts)


def resolve_data(name: str, base=None) -> NamedData:
    """The named sample set, found in `base`, else $CMR_REAL_DATA, else ../shared/data, else data/real (see
    data.sources.find_real_data), checked file by file against the manifest, with its C0 voxel size checked and,
    when it has no T2, MyoPS's T2 beside it (checked too)."""
    if name not in DATA_SETS:
        raise CmrError(f"DATA = {name!r}: choose one of {', '.join(map(repr, DATA_SETS))}")
    found = find_real_data(base)
    key = DATA_SETS[name]
    if key not in found:
        raise CmrError(f"DATA = {name!r}: no {name}/ folder found; set CMR_REAL_DATA to the folder holding it, "
                       f"place it at ../shared/data, or fetch it with `make real-data`")
    data_dir = found[key]
    check_set(data_dir, name)                          # a partial or altered copy is refused, not run on
    c0_spacing, evidence = detect_c0_spacing(data_dir)
    t2_dir = None
    if not open_source(data_dir).patients_with("T2"):
        t2_dir = found.get("myops")
        if t2_dir is None:
            raise CmrError(f"{data_dir}: has no T2 images for setting 1 and no myops2020/ folder lies beside it")
        check_set(t2_dir, "myops2020")
    return NamedData(name, data_dir, c0_spacing, t2_dir, evidence)


TUNING = "tuning: MyoPS 101-110"


def evaluation_sets() -> dict[str, list]:
    """The real labelled LGE volumes by role: the tuning set, the only one a choice may read (MyoPS's first half,
    data.splits.external_split), then the two test sets, which are only reported (MS-CMRSeg LGE 1-5, MyoPS's
    second half)."""
    named = resolve_data("mscmrseg2019")
    ms, my = open_source(named.data_dir, c0_spacing=named.c0_spacing), open_source(resolve_data("myops2020").data_dir)
    halves = external_split(my)
    return {TUNING: [my.load(p, "LGE", label="require") for p in halves["tune"]],
            "test: MS-CMRSeg LGE 1-5": [ms.load(p, "LGE", label="require") for p in ms.patients_with("LGE", labelled=True)],
            "test: MyoPS 111-120": [my.load(p, "LGE", label="require") for p in halves["test"]]}
