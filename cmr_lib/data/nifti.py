"""Single NIfTI files: images and label maps read and written safely, label values mapped to classes.

Arrays keep their stored order (axis 2 = slices); the header is used for voxel sizes only, because the
real sets' orientation codes are inconsistent between patients (measured: see docs/data.md and ../shared/data/README.md).
Labels are mapped to classes {0 background, 1 MYO, 2 LV, 3 RV}.
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from cmr_lib.core.atomic import atomic_path
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import check_file

CLASSES = {1: "MYO", 2: "LV", 3: "RV"}
# Dataset label value -> class, per layout. 1220 (edema) and 2221 (scar) are MyoPS myocardium only.
LAYOUT_LABELS = {"mscmrseg": {0: 0, 200: 1, 500: 2, 600: 3},
                 "myops": {0: 0, 200: 1, 500: 2, 600: 3, 1220: 1, 2221: 1}}
LABEL_TO_CLASS = LAYOUT_LABELS["myops"]               # every value of either layout (files of neither layout)
CLASS_TO_LABEL = {0: 0, 1: 200, 2: 500, 3: 600}
AFFINE_TOLERANCE_MM = 1e-2
# plausible voxel sizes in mm (in plane, between slices): cardiac MR uses about 0.5-3 mm in plane and 1-25 mm between
# slices (the real sets: 0.73-1.25 and 5-23); outside is a broken header, and a 99 mm pixel would be resampled
# to an array of gigabytes, so it is refused from the header, before any voxel is read
VOXEL_MM = {"in-plane": (0.2, 4.0), "slices": (0.5, 40.0)}
_TO_MM = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 1e-3}     # NIfTI xyz units (unknown: mm)


_NII = r"(?i:\.nii(?:\.gz)?)$"            # the extension in any case (.NII.GZ as written by some tools)
LAYOUT_NAMES = {"mscmrseg": re.compile(r"^patient(\d+)_(C0|T2|LGE|DE)(_manual)?" + _NII),
                "myops": re.compile(r"^myops_(?:training|test|validation)_(\d+)_(C0|T2|DE|gd)" + _NII)}


def case_name(name: str) -> tuple[str, int, str, bool] | None:
    """(layout, patient, sequence token as written, whether it is a label file) of a file named as a layout names a
    case (LAYOUT_NAMES), else None. MyoPS's 'gd' is its one label for all sequences."""
    for layout, rx in LAYOUT_NAMES.items():
        m = rx.match(name)
        if m:
            token = m.group(2)
            return layout, int(m.group(1)), token, bool(m.group(3)) if layout == "mscmrseg" else token == "gd"
    return None


def layout_of(path) -> str | None:
    """The data layout a file's name follows ('mscmrseg' or 'myops', see LAYOUT_NAMES), or None."""
    found = case_name(Path(path).name)
    return None if found is None else found[0]


@dataclass(frozen=True)
class Volume:
    """One sequence of one patient: image, optional label classes, voxel size in mm, affine."""

    image: np.ndarray            # (X, Y, Z) float32, stored array order, Z = slices
    label: np.ndarray | None     # (X, Y, Z) uint8 classes {0 bg, 1 MYO, 2 LV, 3 RV}, or None
    spacing: tuple               # (sx, sy, sz) in mm, from the header
    affine: np.ndarray           # (4, 4) as stored (not trusted for orientation)
    patient: int
    sequence: str                # 'C0' (bSSFP), 'LGE', 'T2'
    image_path: Path
    label_path: Path | None

    @property
    def shape(self):
        return self.image.shape


# ---------------------------------------------------------------------------------------------
# single files

def _load_nifti(path: Path):
    """Open a NIfTI file and return (array as stored, header zooms, affine); clear errors for bad files."""
    path = check_file(path, "NIfTI file")
    quiet = logging.getLogger("nibabel.global")
    level = quiet.level
    quiet.setLevel(logging.ERROR)             # nibabel logs, then hides, a zero pixdim: _voxel_size says it
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise CmrError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    finally:
        quiet.setLevel(level)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CmrError(f"{path}: not a NIfTI image (got {type(img).__name__})")
    if len(img.shape) >= 3 and 0 in img.shape[:3]:
        raise CmrError(f"{path}: is empty, shape {img.shape} (a volume needs X, Y and at least one slice)")
    zooms = _voxel_size(path, img)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise CmrError(f"{path}: the header's affine has NaN or Inf entries")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip, short data
        raise CmrError(f"{path}: corrupt or truncated NIfTI data ({type(exc).__name__}: {exc})") from None
    if data.ndim > 3 and all(s == 1 for s in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise CmrError(f"{path}: is {data.ndim}-D with shape {data.shape}; expected one 3-D volume (X, Y, slices)")
    return data, zooms, affine


def voxel_size(path) -> tuple:
    """A NIfTI file's voxel size in mm from its header alone (validated as for a full read)."""
    path = check_file(path, "NIfTI file")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise CmrError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    return _voxel_size(path, img)


def _voxel_size(path: Path, img) -> tuple:
    """The voxel size in mm from the header as stored (nibabel silently turns a zero into 1): zero, negative,
    NaN or implausible sizes are errors; metres and microns are converted to mm."""
    try:
        with ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f, check=False)
    except Exception as exc:
        raise CmrError(f"{path}: unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    stored = [float(v) for v in raw["pixdim"][1:4]]
    if not all(np.isfinite(v) and v > 0 for v in stored):
        raise CmrError(f"{path}: invalid voxel size {tuple(stored)} in the header (pixdim 1-3 must be positive)")
    unit = raw.get_xyzt_units()[0]
    if unit not in _TO_MM:
        raise CmrError(f"{path}: spatial unit {unit!r} in the header; expected mm, metres or microns")
    zooms = tuple(v * _TO_MM[unit] for v in stored)
    (a, b), (c, d) = VOXEL_MM["in-plane"], VOXEL_MM["slices"]
    if not (all(a <= z <= b for z in zooms[:2]) and all(c <= z <= d for z in zooms[2:])):
        raise CmrError(f"{path}: voxel size {tuple(round(z, 6) for z in zooms)} mm (header unit {unit}) is not "
                       f"plausible for a cardiac MR scan (expected {a}-{b} mm in plane, {c}-{d} mm between slices)")
    return zooms


def read_image(path) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Read an image volume as float32; NaN/Inf or a constant image is an error."""
    data, zooms, affine = _load_nifti(path)
    if data.dtype.kind not in "iuf":
        raise CmrError(f"{path}: unsupported voxel type {data.dtype}")
    image = np.asarray(data, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise CmrError(f"{path}: contains {bad} NaN or Inf voxels")
    lo, hi = float(image.min()), float(image.max())
    if lo == hi:
        raise CmrError(f"{path}: image is constant (every voxel = {lo:g})")
    return image, zooms, affine


def map_labels(values: np.ndarray, path, layout: str | None = None) -> np.ndarray:
    """Dataset label values -> classes uint8: 0/200/500/600, and MyoPS's 1220/2221 only in MyoPS files
    (`layout`, else from the file name; a name of neither layout takes both). Other values are an error."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise CmrError(f"{path}: label volume contains NaN or Inf")
        rounded = np.rint(values)
        if not np.array_equal(rounded, values):
            raise CmrError(f"{path}: label volume has non-integer values")
        values = rounded.astype(np.int64)
    layout = layout or layout_of(path)
    table = LAYOUT_LABELS.get(layout, LABEL_TO_CLASS)
    uniq = np.unique(values)
    unknown = [int(u) for u in uniq if int(u) not in table]
    if unknown:
        myops_only = set(unknown) <= set(LABEL_TO_CLASS)
        raise CmrError(f"{path}: unknown label value(s) {unknown[:5]}"
                       + (" in an MS-CMRSeg 2019 file (1220/2221 are MyoPS 2020 edema and scar)" if myops_only else "")
                       + f"; expected {sorted(table)} (0 bg, 200 MYO, 500 LV, 600 RV"
                       + (", MyoPS 1220/2221 MYO)" if 1220 in table else ")"))
    lut = np.zeros(int(uniq.max()) + 1, dtype=np.uint8)
    for value, cls in table.items():
        if value < lut.size:
            lut[value] = cls
    return lut[values.astype(np.int64, copy=False)]


def read_label(path, *, allow_empty=False, layout: str | None = None) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Read a label volume as classes {0..3} (uint8; values by `layout`, see map_labels); an all-background
    volume is an error unless allowed."""
    data, zooms, affine = _load_nifti(path)
    if data.dtype.kind not in "iuf":
        raise CmrError(f"{path}: unsupported label voxel type {data.dtype}")
    label = map_labels(np.asarray(data), path, layout)
    if not allow_empty and not label.any():
        raise CmrError(f"{path}: label volume is all background")
    return label, zooms, affine


def check_same_grid(path_a, shape_a, affine_a, path_b, shape_b, affine_b, *, what="image and label"):
    """Raise a one-line CmrError if two volumes do not share shape and affine (within 0.01 mm)."""
    if tuple(shape_a) != tuple(shape_b):
        raise CmrError(f"{path_b}: shape {tuple(shape_b)} differs from {Path(path_a).name} {tuple(shape_a)} "
                       f"({what} must share one grid)")
    diff = float(np.abs(np.asarray(affine_a) - np.asarray(affine_b)).max())
    if not diff <= AFFINE_TOLERANCE_MM:                                  # NaN fails too
        raise CmrError(f"{path_b}: affine differs from {Path(path_a).name} by {diff:.3g} mm "
                       f"(tolerance {AFFINE_TOLERANCE_MM} mm; {what} must share one grid)")


def write_label(path, label: np.ndarray, *, like: Volume) -> Path:
    """Write class labels {0..3} in the dataset's encoding (0/200/500/600) on `like`'s grid, atomically."""
    if label.shape != like.image.shape:
        raise CmrError(f"{path}: label shape {label.shape} differs from the image grid {like.image.shape}")
    codes = np.zeros(label.shape, dtype=np.int16)
    for cls, value in CLASS_TO_LABEL.items():
        codes[label == cls] = value
    header = nib.load(str(like.image_path)).header.copy()    # the image's own header: same grid, same zooms
    header.set_data_dtype(np.int16)
    header.set_slope_inter(1.0, 0.0)
    img = nib.Nifti1Image(codes, like.affine, header=header)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
