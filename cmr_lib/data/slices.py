"""2-D slice datasets over any source (phantom, MS-CMRSeg, MyoPS), and slice levels base <-> apex.

A volume is prepared once (per-volume robust normalisation, in-plane resampling to the profile's
spacing); each item is then augmented (random affine, training only) and centre-cropped to the
profile's size. Items are deterministic in (seed, epoch, index), whatever the DataLoader workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cmr_lib.data.nifti import Volume
from cmr_lib.data.sources import CMRSource
from cmr_lib.data.transforms import apply_affine, center_crop, normalise, random_affine, resample_inplane


def heart_extent(label: np.ndarray):
    """(first, last) slice index along axis 2 that contains any heart label, or None if none does."""
    z = np.flatnonzero(np.asarray(label).reshape(-1, label.shape[-1]).any(axis=0))
    return (int(z[0]), int(z[-1])) if z.size else None


def relative_levels(n_slices: int, extent) -> np.ndarray:
    """Relative position of each slice between the first (0) and last (1) heart slice; outside: <0 or >1.

    This pairs a bSSFP slice with the same patient's LGE slice at the same level (setting 3): the
    real data's affines cannot (their world centres disagree by 41-121 mm between sequences).
    """
    z = np.arange(n_slices, dtype=np.float64)
    if extent is None:
        return (z + 0.5) / n_slices
    first, last = extent
    return np.full(n_slices, 0.5) if last == first else (z - first) / (last - first)


def nearest_level(levels: np.ndarray, target: float) -> int:
    """Index of the slice whose relative level is closest to `target`."""
    return int(np.argmin(np.abs(np.asarray(levels) - target)))


@dataclass(frozen=True)
class PreparedVolume:
    """A normalised, resampled volume ready for slicing, with the stored volume's shape and voxel size beside it."""

    image: np.ndarray            # (H, W, Z) float32 in [0, 1]
    label: np.ndarray | None     # (H, W, Z) uint8 classes, or None
    patient: int
    sequence: str
    spacing: tuple               # spacing after resampling (mm)
    original_shape: tuple        # (X, Y, Z) of the stored volume
    original_spacing: tuple
    levels: np.ndarray           # (Z,) relative level of each slice (from the label when present)


def preprocess_arguments(pre) -> dict:
    """prepare_volume's arguments from a preprocess section (a profile's, or the dict a checkpoint recorded)."""
    return {"spacing_mm": pre["spacing_mm"], "percentiles": tuple(pre["percentiles"]), "fov_mm": pre["normalise_fov_mm"]}


def prepare_volume(vol: Volume, *, spacing_mm=None, percentiles=(0.5, 99.5), fov_mm=None) -> PreparedVolume:
    """Normalise one volume and resample it in-plane to `spacing_mm` (None keeps its own spacing).
    fov_mm: take the normalisation percentiles over the central fov_mm x fov_mm only (None: the whole slice)."""
    window = None if fov_mm is None else tuple(fov_mm / vol.spacing[i] for i in range(2))
    img = normalise(vol.image, percentiles, name=str(vol.image_path), window=window)
    img = resample_inplane(img, vol.spacing, spacing_mm, order=1)
    lab = None if vol.label is None else resample_inplane(vol.label, vol.spacing, spacing_mm, order=0)
    # the exact spacing after rounding to whole pixels (e.g. 192 px at 0.73 mm -> 93 px at 1.507 mm)
    new_spacing = tuple(vol.spacing[i] * vol.image.shape[i] / img.shape[i] for i in range(2)) + (vol.spacing[2],)
    levels = relative_levels(vol.image.shape[2], None if vol.label is None else heart_extent(vol.label))
    return PreparedVolume(image=img.astype(np.float32), label=lab, patient=vol.patient, sequence=vol.sequence,
                          spacing=tuple(new_spacing), original_shape=vol.image.shape,
                          original_spacing=tuple(vol.spacing), levels=levels)


class SliceDataset(torch.utils.data.Dataset):
    """Slices of prepared volumes -> {'image': (1, S, S) float32, 'label': (S, S) int64, 'has_label', meta}.

    augment: a dict of random_affine arguments plus 'probability' (training), or None (evaluation).
    heart_only: keep only slices whose label contains heart (needs labels).
    """

    def __init__(self, volumes: list[PreparedVolume], *, crop: int, augment: dict | None = None, seed: int = 0,
                 heart_only: bool = False):
        self.volumes = list(volumes)
        self.crop = int(crop)
        self.augment = dict(augment) if augment else None
        self.seed = int(seed)
        self.epoch = 0
        self.items = []
        for vi, v in enumerate(self.volumes):
            for z in range(v.image.shape[2]):
                if heart_only and (v.label is None or not v.label[:, :, z].any()):
                    continue
                self.items.append((vi, z))

    @classmethod
    def from_source(cls, source: CMRSource, patients, sequence: str, *, preprocess, crop: int, augment=None,
                    seed: int = 0, label="optional", heart_only=False):
        """Build from a data source with a preprocess section, a crop and an augment section (None: no
        augmentation); a Config gives the first four as `**cfg.slicing(train=...)`."""
        vols = [prepare_volume(v, **preprocess_arguments(preprocess))
                for v in source.volumes(patients, sequence, label=label)]
        return cls(vols, crop=crop, augment=None if augment is None else dict(augment), seed=seed,
                   heart_only=heart_only)

    def set_epoch(self, epoch: int):
        """Change the augmentation draw (call once per epoch)."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        vi, z = self.items[index]
        v = self.volumes[vi]
        image = torch.from_numpy(np.ascontiguousarray(v.image[:, :, z]))[None]         # (1, H, W)
        has_label = v.label is not None
        label = torch.from_numpy(v.label[:, :, z].astype(np.int64)) if has_label else torch.zeros(image.shape[1:], dtype=torch.int64)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            aug = dict(self.augment)
            if rng.random() < aug.pop("probability", 1.0):
                image, label = apply_affine(image, label, random_affine(rng, **aug))
        image = torch.from_numpy(center_crop(image[0].numpy(), self.crop))[None]        # (1, S, S)
        label = torch.from_numpy(center_crop(label.numpy(), self.crop))                  # (S, S)
        return {"image": image, "label": label, "has_label": has_label, "patient": v.patient,
                "sequence": v.sequence, "slice": z, "level": float(v.levels[z])}
