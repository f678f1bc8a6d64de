"""Data sets of cardiac MR volumes: MS-CMRSeg 2019 layout (also the phantom's) and MyoPS 2020 layout.

One reader, layout detected from the file names; single files are read by data.nifti.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from cmr_lib.core.digests import file_digest
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import repo_root
from cmr_lib.core.sections import DataConfig
from cmr_lib.data import phantom
from cmr_lib.data.nifti import Volume, case_name, check_same_grid, read_image, read_label, voxel_size

_CANONICAL = {"C0": "C0", "T2": "T2", "LGE": "LGE", "DE": "LGE"}


def canonical_sequence(token: str) -> str:
    """A file name's sequence token as this project names it ('DE' is MyoPS's LGE)."""
    return _CANONICAL[token]


LAYOUTS = {"mscmrseg": "MS-CMRSeg 2019 (patient{N}_{C0,LGE,T2}.nii.gz + _manual)",
           "myops": "MyoPS 2020 (myops_training_{N}_{C0,DE,T2,gd}.nii.gz)"}


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
            lab, _, laff = read_label(lpath, layout=self.layout)
            check_same_grid(ipath, image.shape, affine, lpath, lab.shape, laff)
        return Volume(image=image, label=lab, spacing=zooms, affine=affine, patient=patient,
                      sequence=sequence, image_path=ipath, label_path=lpath)

    def _lge_inplane(self, patient: int) -> tuple:
        """The in-plane voxel size of this patient's LGE header (for c0_spacing='lge')."""
        if not self.has(patient, "LGE"):
            raise CmrError(f"{self.root}: c0_spacing='lge' needs patient {patient}'s LGE image for its voxel size")
        zooms = voxel_size(self.image_path(patient, "LGE"))
        return (zooms[0], zooms[1])

    def check(self, patients, sequence: str) -> None:
        """Open and validate every volume of these patients (image, and label where there is one) now, so
        that a bad file stops a run before training, not after."""
        for p in patients:
            self.load(p, sequence, label="optional")

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
    layout, hits = _named_files(root)
    images, labels = _index_files(root, layout, hits)
    check_distinct_patients(images)
    return CMRSource(root.resolve(), layout, images, labels, c0_spacing=c0_spacing)


def _named_files(root: Path) -> tuple[str, list]:
    """The folder's layout and its files named as that layout names them ((name, case_name) pairs); near-miss names,
    folders under case names and mixed layouts are one-line errors."""
    names = sorted(os.listdir(root))
    if not names:
        raise CmrError(f"{root}: data folder is empty")
    hits = {"mscmrseg": [], "myops": []}
    for name in names:
        case = case_name(name)
        if case is not None:
            if not (root / name).is_file():
                raise CmrError(f"{root / name}: is a folder (or not a regular file), not a NIfTI file")
            hits[case[0]].append((name, case))
        elif near_miss(name):
            raise CmrError(f"{root / name}: named almost as the layout names a case, which would leave it unread; "
                           f"rename it {near_miss(name)}")
    if hits["mscmrseg"] and hits["myops"]:
        raise CmrError(f"{root}: mixes MS-CMRSeg files ({hits['mscmrseg'][0][0]}) and MyoPS files "
                       f"({hits['myops'][0][0]}); use one layout per folder")
    layout = "mscmrseg" if hits["mscmrseg"] else "myops" if hits["myops"] else None
    if layout is None:
        raise CmrError(f"{root}: no {LAYOUTS['mscmrseg']} or {LAYOUTS['myops']} files found")
    return layout, hits[layout]


def _index_files(root: Path, layout: str, hits: list) -> tuple[dict, dict]:
    """{(patient, sequence): image path} and {(patient, sequence): label path} of a layout's files (MyoPS: one
    co-registered label for all three sequences); duplicates and labels without images are one-line errors."""
    images, labels = {}, {}
    for name, (_, patient, token, is_label) in hits:
        path = root / name
        key = (patient, "gd") if layout == "myops" and is_label else (patient, _CANONICAL[token])
        table = labels if is_label else images
        if key in table:
            raise CmrError(f"{path}: duplicate {key[1]} file for patient {patient} ({table[key].name})")
        table[key] = path
    if layout == "myops":
        gd = {p: path for (p, _), path in labels.items()}
        no_image = [path for p, path in gd.items() if not any(q == p for q, _ in images)]
        if no_image:
            raise CmrError(f"{no_image[0]}: label file without its images")
        labels = {(p, s): gd[p] for (p, s) in images if p in gd}
    orphans = [lab for key, lab in labels.items() if key not in images]
    if orphans:
        raise CmrError(f"{orphans[0]}: label file without its image")
    return images, labels


# A file name that a case's name was meant to be (other case, '-', '.' or ' ' for '_', a missing '_'):
# patient2_lge_manual.nii.gz, patient3_C0_Manual.nii.gz, Patient-4-C0.nii.gz, myops-training-101-de.nii.gz
_NEAR = {"mscmrseg": re.compile(r"^patient[ _.-]*(\d+)[ _.-]*(c0|t2|lge|de)([ _.-]*manual)?(\.nii(?:\.gz)?)$", re.I),
         "myops": re.compile(r"^myops[ _.-]*(training|test|validation)[ _.-]*(\d+)[ _.-]*(c0|t2|de|gd)(\.nii(?:\.gz)?)$",
                             re.I)}


def near_miss(name: str) -> str | None:
    """The name a file was meant to have when it nearly follows a layout (case, separators) but not exactly;
    None for a name of neither layout (left alone) or one that follows it."""
    m = _NEAR["mscmrseg"].match(name)
    if m:
        expected = f"patient{int(m.group(1))}_{m.group(2).upper()}{'_manual' if m.group(3) else ''}{m.group(4).lower()}"
    else:
        m = _NEAR["myops"].match(name)
        if not m:
            return None
        token = m.group(3).upper() if m.group(3).lower() != "gd" else "gd"
        expected = f"myops_{m.group(1).lower()}_{int(m.group(2))}_{token}{m.group(4).lower()}"
    return None if expected == name else expected


def check_distinct_patients(images: dict) -> None:
    """One patient under two numbers (the same image content for one sequence) is an error: it would land in
    training and test at once."""
    seen: dict[tuple, tuple] = {}
    for (patient, seq), path in sorted(images.items()):
        key = (seq, file_digest(path))
        if key in seen:
            other, other_path = seen[key]
            raise CmrError(f"{path}: the same image as {other_path.name} (patient {other}): one patient under two "
                           f"numbers would be trained and tested on at once; remove one of them")
        seen[key] = (patient, path)


def open_source(data_dir, *, c0_spacing: str = "header") -> CMRSource:
    """Open a data folder in either layout (see detect_layout)."""
    return detect_layout(data_dir, c0_spacing=c0_spacing)


def source_for(data_dir, *, c0_spacing: str = "header", phantom_data: DataConfig | None = None,
               progress=True) -> CMRSource:
    """The data of a run: `data_dir`, or (None) the built-in phantom its profile's data section describes,
    generated once, then reused."""
    if data_dir is not None:
        return open_source(data_dir, c0_spacing=c0_spacing)
    d = phantom_data or DataConfig()
    phantom.ensure(d.folder, patients=d.phantom_patients, seed=d.phantom_seed, progress=progress)
    return open_source(d.folder)


def find_real_data(base=None) -> dict[str, Path]:
    """Locate the real sample sets (tests, calibration): `base`, else CMR_REAL_DATA, else <repo>/../shared/data,
    else <repo>/data/real (where `make real-data` puts them).

    Returns {'mscmrseg': path, 'myops': path} for the subfolders `mscmrseg2019/`, `myops2020/` that exist.
    """
    if base is None:
        env = os.environ.get("CMR_REAL_DATA")
        candidates = [Path(env)] if env else [repo_root().parent / "shared" / "data", repo_root() / "data" / "real"]
    else:
        candidates = [Path(base)]
    for base in candidates:
        base = base.expanduser()
        found = {}
        for key, sub in (("mscmrseg", "mscmrseg2019"), ("myops", "myops2020")):
            if (base / sub).is_dir() and any((base / sub).iterdir()):
                found[key] = (base / sub).resolve()
        if found:
            return found
    return {}
