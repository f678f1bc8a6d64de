"""Read cardiac MR volumes: MS-CMRSeg 2019 layout (also the phantom's) and MyoPS 2020 layout.

One reader, layout detected from the file names. Arrays keep their stored order (axis 2 = slices,
RV toward decreasing axis 0 in both real sets); the header is used for voxel sizes only, because the
real sets' orientation codes are inconsistent between patients (measured: see the data README).
Labels are mapped to classes {0 background, 1 MYO, 2 LV, 3 RV}.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cmr_lib.core.atomic import atomic_path
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import repo_root
from cmr_lib.data import phantom

CLASSES = {1: "MYO", 2: "LV", 3: "RV"}
# Dataset label value -> class. 1220 (edema) and 2221 (scar) are MyoPS myocardium.
LABEL_TO_CLASS = {0: 0, 200: 1, 500: 2, 600: 3, 1220: 1, 2221: 1}
CLASS_TO_LABEL = {0: 0, 1: 200, 2: 500, 3: 600}
AFFINE_TOLERANCE_MM = 1e-2

_NII = r"\.nii(?:\.gz)?$"
_MSCMRSEG = re.compile(r"^patient(\d+)_(C0|T2|LGE|DE)(_manual)?" + _NII)
_MYOPS = re.compile(r"^myops_(?:training|test|validation)_(\d+)_(C0|T2|DE|gd)" + _NII)
_CANONICAL = {"C0": "C0", "T2": "T2", "LGE": "LGE", "DE": "LGE"}
LAYOUTS = {"mscmrseg": "MS-CMRSeg 2019 (patient{N}_{C0,LGE,T2}.nii.gz + _manual)",
           "myops": "MyoPS 2020 (myops_training_{N}_{C0,DE,T2,gd}.nii.gz)"}


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
    path = Path(path)
    if not path.is_file():
        raise CmrError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise CmrError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CmrError(f"{path}: not a NIfTI image (got {type(img).__name__})")
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
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise CmrError(f"{path}: invalid voxel size {zooms} in the header")
    return data, zooms, np.asarray(img.affine, dtype=np.float64)


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


def map_labels(values: np.ndarray, path) -> np.ndarray:
    """Dataset label values (0/200/500/600, MyoPS 1220/2221) -> classes uint8; unknown values are an error."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise CmrError(f"{path}: label volume contains NaN or Inf")
        rounded = np.rint(values)
        if not np.array_equal(rounded, values):
            raise CmrError(f"{path}: label volume has non-integer values")
        values = rounded.astype(np.int64)
    uniq = np.unique(values)
    unknown = [int(u) for u in uniq if int(u) not in LABEL_TO_CLASS]
    if unknown:
        raise CmrError(f"{path}: unknown label value(s) {unknown[:5]}; expected "
                       f"{sorted(LABEL_TO_CLASS)} (0 bg, 200 MYO, 500 LV, 600 RV, MyoPS 1220/2221 MYO)")
    lut = np.zeros(int(uniq.max()) + 1, dtype=np.uint8)
    for value, cls in LABEL_TO_CLASS.items():
        if value < lut.size:
            lut[value] = cls
    return lut[values.astype(np.int64, copy=False)]


def read_label(path, *, allow_empty=False) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Read a label volume as classes {0..3} (uint8); an all-background volume is an error unless allowed."""
    data, zooms, affine = _load_nifti(path)
    if data.dtype.kind not in "iuf":
        raise CmrError(f"{path}: unsupported label voxel type {data.dtype}")
    label = map_labels(np.asarray(data), path)
    if not allow_empty and not label.any():
        raise CmrError(f"{path}: label volume is all background")
    return label, zooms, affine


def check_same_grid(path_a, shape_a, affine_a, path_b, shape_b, affine_b, *, what="image and label"):
    """Raise a one-line CmrError if two volumes do not share shape and affine (within 0.01 mm)."""
    if tuple(shape_a) != tuple(shape_b):
        raise CmrError(f"{path_b}: shape {tuple(shape_b)} differs from {Path(path_a).name} {tuple(shape_a)} "
                       f"({what} must share one grid)")
    diff = float(np.abs(np.asarray(affine_a) - np.asarray(affine_b)).max())
    if diff > AFFINE_TOLERANCE_MM:
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


# ---------------------------------------------------------------------------------------------
# data sets

class CMRSource:
    """A folder of cardiac MR volumes in either supported layout.

    >>> src = open_source("path/to/MS-CMRSeg")   # doctest: +SKIP
    >>> vol = src.load(1, "LGE")                 # Volume with .image, .label, .spacing
    """

    def __init__(self, root: Path, layout: str, images: dict, labels: dict, *, c0_spacing: str = "header"):
        self.root = root
        self.layout = layout
        self._images = images      # (patient, sequence) -> Path
        self._labels = labels      # (patient, sequence) -> Path
        if c0_spacing not in ("header", "lge"):
            raise CmrError(f"parameter 'c0_spacing' = {c0_spacing!r}: choose 'header' or 'lge'")
        self.c0_spacing = c0_spacing

    def __repr__(self):
        seqs = ", ".join(f"{s}: {len(self.patients_with(s))}" for s in self.sequences)
        return f"CMRSource({self.root}, layout={self.layout}, patients with {seqs})"

    @property
    def name(self) -> str:
        return "phantom" if (self.root / "phantom.json").is_file() else self.layout

    @property
    def patients(self) -> list[int]:
        return sorted({p for p, _ in self._images})

    @property
    def sequences(self) -> list[str]:
        present = {s for _, s in self._images}
        return [s for s in ("C0", "LGE", "T2") if s in present]

    def patients_with(self, sequence: str, *, labelled: bool = False) -> list[int]:
        """Patients that have this sequence (and, if `labelled`, its label)."""
        table = self._labels if labelled else self._images
        return sorted(p for p, s in table if s == sequence and (p, s) in self._images)

    def has(self, patient: int, sequence: str) -> bool:
        return (patient, sequence) in self._images

    def has_label(self, patient: int, sequence: str) -> bool:
        return (patient, sequence) in self._labels

    def image_path(self, patient: int, sequence: str) -> Path:
        try:
            return self._images[(patient, sequence)]
        except KeyError:
            raise CmrError(f"{self.root}: patient {patient} has no {sequence} image "
                           f"(have: {', '.join(s for s in self.sequences if self.has(patient, s)) or 'none'})") from None

    def label_path(self, patient: int, sequence: str) -> Path:
        try:
            return self._labels[(patient, sequence)]
        except KeyError:
            raise CmrError(f"{self.root}: patient {patient} has no {sequence} label file") from None

    def load(self, patient: int, sequence: str, *, label: str = "optional") -> Volume:
        """Load one volume. label: 'require' (error if absent), 'optional' (None if absent) or 'skip'."""
        if label not in ("require", "optional", "skip"):
            raise CmrError(f"parameter 'label' = {label!r}: choose 'require', 'optional' or 'skip'")
        ipath = self.image_path(patient, sequence)
        image, zooms, affine = read_image(ipath)
        if sequence == "C0" and self.c0_spacing == "lge":
            zooms = self._lge_inplane(patient) + zooms[2:]
        lab, lpath = None, None
        if label == "require" or (label == "optional" and self.has_label(patient, sequence)):
            lpath = self.label_path(patient, sequence)
            lab, _, laff = read_label(lpath)
            check_same_grid(ipath, image.shape, affine, lpath, lab.shape, laff)
        return Volume(image=image, label=lab, spacing=zooms, affine=affine, patient=patient,
                      sequence=sequence, image_path=ipath, label_path=lpath)

    def _lge_inplane(self, patient: int) -> tuple:
        """The in-plane voxel size of this patient's LGE header (for c0_spacing='lge')."""
        if not self.has(patient, "LGE"):
            raise CmrError(f"{self.root}: c0_spacing='lge' needs patient {patient}'s LGE image for its voxel size")
        try:
            zooms = nib.load(str(self.image_path(patient, "LGE"))).header.get_zooms()
        except Exception as exc:
            raise CmrError(f"{self.image_path(patient, 'LGE')}: not a readable NIfTI file ({exc})") from None
        return (float(zooms[0]), float(zooms[1]))

    def volumes(self, patients, sequence: str, *, label: str = "optional"):
        """Iterate over `load(p, sequence)` for each patient."""
        for p in patients:
            yield self.load(p, sequence, label=label)


def detect_layout(root, *, c0_spacing: str = "header") -> CMRSource:
    """Scan a folder, detect its layout and index its files (nothing is read yet).

    c0_spacing='lge' takes each patient's C0 in-plane voxel size from its LGE header: the cropped
    MS-CMRSeg 2019 copy stores C0 resampled to the LGE grid but keeps the original 1.19-1.25 mm in
    the header (measured: the heart spans the same pixels in both, so the true C0 size is ~0.73 mm).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CmrError(f"{root}: data folder not found")
    names = sorted(os.listdir(root))
    if not names:
        raise CmrError(f"{root}: data folder is empty")
    hits = {"mscmrseg": [], "myops": []}
    for name in names:
        for layout, rx in (("mscmrseg", _MSCMRSEG), ("myops", _MYOPS)):
            m = rx.match(name)
            if m:
                hits[layout].append((name, m))
    if hits["mscmrseg"] and hits["myops"]:
        raise CmrError(f"{root}: mixes MS-CMRSeg files ({hits['mscmrseg'][0][0]}) and MyoPS files "
                       f"({hits['myops'][0][0]}); use one layout per folder")
    layout = "mscmrseg" if hits["mscmrseg"] else "myops" if hits["myops"] else None
    if layout is None:
        raise CmrError(f"{root}: no {LAYOUTS['mscmrseg']} or {LAYOUTS['myops']} files found")
    images, labels = {}, {}
    for name, m in hits[layout]:
        patient, token = int(m.group(1)), m.group(2)
        path = root / name
        if layout == "mscmrseg":
            seq = _CANONICAL[token]
            table = labels if m.group(3) else images
            if (patient, seq) in table:
                raise CmrError(f"{path}: duplicate {seq} file for patient {patient} ({table[(patient, seq)].name})")
            table[(patient, seq)] = path
        else:
            key = (patient, "gd") if token == "gd" else (patient, _CANONICAL[token])
            table = labels if token == "gd" else images
            if key in table:
                raise CmrError(f"{path}: duplicate {key[1]} file for patient {patient} ({table[key].name})")
            table[key] = path
    if layout == "myops":   # one co-registered label for all three sequences
        gd = {p: path for (p, _), path in labels.items()}
        no_image = [path for p, path in gd.items() if not any(q == p for q, _ in images)]
        if no_image:
            raise CmrError(f"{no_image[0]}: label file without its images")
        labels = {(p, s): gd[p] for (p, s) in images if p in gd}
    orphans = [lab for key, lab in labels.items() if key not in images]
    if orphans:
        raise CmrError(f"{orphans[0]}: label file without its image")
    return CMRSource(root.resolve(), layout, images, labels, c0_spacing=c0_spacing)


def open_source(data_dir, *, c0_spacing: str = "header") -> CMRSource:
    """Open a data folder in either layout (see detect_layout)."""
    return detect_layout(data_dir, c0_spacing=c0_spacing)


def source_for(cfg, *, progress=True) -> CMRSource:
    """The data of a run: `cfg.data_dir`, or the built-in phantom (generated once, then reused)."""
    if cfg.data_dir is not None:
        return open_source(cfg.data_dir, c0_spacing=cfg.c0_spacing)
    d = cfg.sizes.data
    phantom.ensure(cfg.phantom_dir, patients=d.phantom_patients, seed=d.phantom_seed, progress=progress)
    return open_source(cfg.phantom_dir)


def find_real_data(base=None) -> dict[str, Path]:
    """Locate the real sample sets (tests, calibration): `base`, else CMR_REAL_DATA, else <repo>/../shared/data.

    Returns {'mscmrseg': path, 'myops': path} for the subfolders `mscmrseg2019/`, `myops2020/` that exist.
    """
    if base is None:
        env = os.environ.get("CMR_REAL_DATA")
        base = Path(env) if env else repo_root().parent / "shared" / "data"
    base = Path(base).expanduser()
    found = {}
    for key, sub in (("mscmrseg", "mscmrseg2019"), ("myops", "myops2020")):
        if (base / sub).is_dir() and any((base / sub).iterdir()):
            found[key] = (base / sub).resolve()
    return found


def default_split(source: CMRSource) -> dict[str, list[int]]:
    """Patients per role, by data source (LGE labels are only ever used for validation and test).

    train: labelled bSSFP (C0) for segmentation training; val / test: LGE with labels (test labels may be
    withheld); style: patients whose LGE/T2 images may serve as unlabelled styles.
    - MS-CMRSeg 2019 (the paper's split): train C0 1-35 (validation is on the LGE of 1-5, another domain),
      val LGE 1-5, test LGE 6-45; every LGE image is an unlabelled style (the challenge released all LGE
      images, and setting 3 needs the training patients' own LGE).
    - MyoPS 2020: the last 25 % of patients are test and appear in no training step (not even as styles);
      the 3 before them are validation; the rest train.
    - The phantom: 25 / 5 / 15 of 45 (scaled to its size); test patients appear in no training step.
    """
    c0 = source.patients_with("C0", labelled=True)
    lge = source.patients_with("LGE")
    if source.layout == "mscmrseg" and source.name != "phantom":
        val = [p for p in source.patients_with("LGE", labelled=True) if p <= 5] or \
            source.patients_with("LGE", labelled=True)[:5]
        test = [p for p in lge if p not in val]
        return {"train": c0, "val": val, "test": test, "style": lge}
    patients = sorted(set(c0) & set(lge)) or c0
    n = len(patients)
    n_test = max(1, round(n / 3)) if source.name == "phantom" else max(1, round(n / 4))
    n_val = max(1, round(n / 9)) if source.name == "phantom" else min(3, max(1, n - n_test - 1))
    if n < 3:
        raise CmrError(f"{source.root}: {n} patients with labelled C0 and LGE; need at least 3 to split")
    train, val, test = patients[: n - n_test - n_val], patients[n - n_test - n_val: n - n_test], patients[n - n_test:]
    return {"train": train, "val": val, "test": test, "style": train + val}


def split_for(source: CMRSource, given=None) -> dict[str, list[int]]:
    """The run's split: `default_split(source)` with the roles in `given` ({'train'|'val'|'test': [...]})
    replaced, checked against the data (training needs labelled C0, validation labelled LGE, test LGE).

    Test patients never enter training, validation or the style pool, except in the MS-CMRSeg layout,
    where the paper's protocol trains on C0 of patients whose (unlabelled) LGE is also the test set.
    """
    split = default_split(source)
    given = dict(given or {})
    if not given:
        return split
    need = {"train": ("C0", True), "val": ("LGE", True), "test": ("LGE", False)}
    for role, patients in given.items():
        seq, labelled = need[role]
        have = set(source.patients_with(seq, labelled=labelled))
        missing = [p for p in patients if p not in have]
        if missing:
            what = f"labelled {seq}" if labelled else f"{seq} image"
            raise CmrError(f"parameter '{role}_patients' = {list(patients)}: patients {missing} have no {what} "
                           f"in {source.root}")
        split[role] = list(patients)
    paper_protocol = source.layout == "mscmrseg" and source.name != "phantom"
    test = set(split["test"])
    clashes = [("val", set(split["val"]) & test)] + ([] if paper_protocol else [("train", set(split["train"]) & test)])
    for role, both in clashes:
        if both:
            raise CmrError(f"parameter 'test_patients': patients {sorted(both)} are also {role} patients")
    if not paper_protocol:
        split["style"] = sorted((set(split["train"]) | set(split["val"])) & set(source.patients_with("LGE")))
    return split


def style_source_for(cfg, source: CMRSource, sequence: str) -> CMRSource:
    """Where a run's `sequence` style images come from: the data set itself, or `t2_dir` for T2 (the cropped
    MS-CMRSeg copy has no T2: setting 1 then takes T2 from MyoPS 2020)."""
    if source.patients_with(sequence):
        return source
    t2_dir = cfg.extra.get("t2_dir") if sequence == "T2" else None
    if t2_dir:
        other = open_source(t2_dir)
        if other.patients_with("T2"):
            return other
        raise CmrError(f"{other.root}: parameter 't2_dir' has no T2 images")
    raise CmrError(f"{source.root}: has no {sequence} images; pass t2_dir (a MyoPS 2020 folder) for T2 styles")


def style_pool(cfg, source: CMRSource, split: dict, sequence: str) -> tuple[CMRSource, list[int]]:
    """The style images of a run, chosen here only: (their source, the patients whose `sequence` volume may
    serve as an unlabelled style), from the run's split, or the other source's own split."""
    style_src = style_source_for(cfg, source, sequence)
    style_split = split if style_src is source else default_split(style_src)
    return style_src, [p for p in style_split["style"] if style_src.has(p, sequence)]
