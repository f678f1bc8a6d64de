"""Slice preprocessing: robust intensity normalisation, in-plane resampling, random affine
augmentation (image bilinear, label nearest) and centre crop with padding.

Order in the pipeline: normalise per volume -> resample in-plane -> augment -> crop.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cmr_lib.core.errors import CmrError


def normalise(volume: np.ndarray, percentiles=(0.5, 99.5), *, name="volume", window=None) -> np.ndarray:
    """Map the volume's low/high percentiles to 0/1 and clip: robust to outliers and any storage scale.

    window: (px, px) of a central in-plane square whose voxels (all slices) give the percentiles, so that a
    wide field of view (body, air) does not set the scale of the heart; None: the whole volume."""
    v = np.asarray(volume, dtype=np.float32)
    if not np.all(np.isfinite(v)):
        raise CmrError(f"{name}: contains NaN or Inf voxels")
    ref = v if window is None else center_crop(v, tuple(min(max(1, int(round(w))), n) for w, n in zip(window, v.shape[:2])))
    lo, hi = np.percentile(ref, percentiles)
    if not hi > lo:
        lo, hi = float(ref.min()), float(ref.max())   # a mostly-constant volume: fall back to min/max
        if not hi > lo:
            raise CmrError(f"{name}: image is constant (every voxel = {lo:g}); cannot normalise")
    out = (v - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def resample_inplane(volume: np.ndarray, spacing, target_mm, *, order: int) -> np.ndarray:
    """Resample axes 0 and 1 of an (X, Y, Z) volume from `spacing` to `target_mm` (order 1 image, 0 label).

    The field of view is kept (grid_mode): a 192 px image at 0.75 mm becomes 96 px at 1.5 mm.
    """
    if target_mm is None:
        return volume
    factors = (spacing[0] / target_mm, spacing[1] / target_mm)
    out_shape = tuple(max(1, int(round(volume.shape[i] * factors[i]))) for i in range(2)) + volume.shape[2:]
    return resize(volume, out_shape, order=order)


def resize(volume: np.ndarray, shape, *, order: int) -> np.ndarray:
    """Resize axes 0 and 1 to `shape[:2]` over the same field of view (used to go back to the original grid)."""
    if tuple(shape[:2]) == volume.shape[:2]:
        return volume
    if order == 1 and volume.dtype in (np.float32, np.float64):
        # torch's bilinear (align_corners=False, edges clamped) is scipy's grid-mode order-1 zoom with mode
        # 'nearest' to ~1e-5 in far less time (benchmarks/bench_inference.py): inference spent most of its time here
        flat = np.ascontiguousarray(volume.reshape(*volume.shape[:2], -1).transpose(2, 0, 1))
        out = F.interpolate(torch.from_numpy(flat)[None], size=tuple(int(n) for n in shape[:2]), mode="bilinear",
                            align_corners=False)[0].numpy()
        return np.ascontiguousarray(out.transpose(1, 2, 0)).reshape(*shape[:2], *volume.shape[2:])
    return zoom_resize(volume, shape, order=order)


def zoom_resize(volume: np.ndarray, shape, *, order: int) -> np.ndarray:
    """`resize` through scipy's grid-mode zoom at any order (labels, integers; the reference of the torch path)."""
    if tuple(shape[:2]) == volume.shape[:2]:
        return volume
    zoom = [shape[0] / volume.shape[0], shape[1] / volume.shape[1]] + [1.0] * (volume.ndim - 2)
    mode = "grid-constant" if order == 0 else "nearest"
    out = ndimage.zoom(volume, zoom, order=order, grid_mode=True, mode=mode, prefilter=False)
    if out.shape[:2] != tuple(shape[:2]):   # zoom rounds; pad or cut the last row/column
        out = center_crop(out, shape[:2], anchor="start")
    return out


def window_start(n: int, m: int, anchor: str, shift: int) -> int:
    """Where an m-px window begins on an n-px axis: centred ((n - m) // 2 when cropping, the same offset
    mirrored when padding) or at 0, then moved by `shift`; it may begin before 0 or end past n (zeros there)."""
    if anchor == "start":
        return int(shift)
    return ((n - m) // 2 if n >= m else -((m - n) // 2)) + int(shift)


def _shared(n: int, m: int, start: int) -> tuple[slice, slice]:
    """(slice of the n-px axis, slice of the m-px window beginning at `start`) covering the pixels they share."""
    a, b = max(start, 0), min(start + m, n)
    if b <= a:
        return slice(0, 0), slice(0, 0)
    return slice(a, b), slice(a - start, b - start)


def center_crop(arr: np.ndarray, size, *, anchor: str = "center", shift=(0, 0)) -> np.ndarray:
    """Crop (or zero-pad) axes 0 and 1 to `size` (int or pair), centred: the paper's 224/256 input crops.

    Padding mirrors the cropping offset (window_start), so uncrop(center_crop(a, s), a.shape) puts every
    kept pixel back where it was. anchor='start' crops or pads at the end instead; `shift` (px per
    axis) moves the window off centre (inference centred on the heart), zero-filling what lies outside.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    out = np.zeros(tuple(size) + arr.shape[2:], dtype=arr.dtype)
    spans = [_shared(n, m, window_start(n, m, anchor, d)) for n, m, d in zip(arr.shape[:2], size, shift)]
    out[tuple(w for _, w in spans)] = arr[tuple(a for a, _ in spans)]
    return out


def uncrop(arr: np.ndarray, shape, *, shift=(0, 0)) -> np.ndarray:
    """Inverse of center_crop (same `shift`): put a cropped (or padded) array back on a zero array of `shape`
    (axes 0, 1)."""
    size = (arr.shape[0], arr.shape[1])
    out = np.zeros(tuple(shape[:2]) + arr.shape[2:], dtype=arr.dtype)
    spans = [_shared(n, m, window_start(n, m, "center", d)) for n, m, d in zip(shape[:2], size, shift)]
    out[tuple(a for a, _ in spans)] = arr[tuple(w for _, w in spans)]
    return out


# ---------------------------------------------------------------------------------------------
# augmentation

def random_affine(rng: np.random.Generator, *, scale=(0.9, 1.1), rotation_deg=15.0, translation=0.05,
                  shear_deg=5.0) -> np.ndarray:
    """Draw a 2x3 affine (pixel units about the image centre, fractions for translation): scale, rotate, shear, shift."""
    s = rng.uniform(*scale)
    a = math.radians(rng.uniform(-rotation_deg, rotation_deg))
    sh = math.radians(rng.uniform(-shear_deg, shear_deg))
    t = rng.uniform(-translation, translation, 2)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shear = np.array([[1.0, math.tan(sh)], [0.0, 1.0]])
    m = np.zeros((2, 3))
    m[:, :2] = s * rot @ shear
    m[:, 2] = t
    return m


def apply_affine(image: torch.Tensor, label: torch.Tensor | None, matrix: np.ndarray):
    """Warp image (bilinear) and label (nearest) of shape (..., H, W) with a 2x3 matrix from random_affine.

    The matrix maps output pixel offsets from the centre to input offsets (translation in fractions of the
    size); outside the input is zero (background).
    """
    h, w = image.shape[-2:]
    m = torch.as_tensor(matrix, dtype=torch.float32)
    # convert pixel-space linear part to torch's normalised coordinates ([-1, 1] across each axis)
    to_norm = torch.tensor([[2.0 / h, 0.0], [0.0, 2.0 / w]])          # (row, col) order, like the matrix
    theta = torch.zeros(1, 2, 3)
    theta[0, :, :2] = to_norm @ m[:, :2] @ torch.linalg.inv(to_norm)
    theta[0, :, 2] = 2.0 * m[:, 2]
    # torch's (x, y) order is (W, H): our matrix is in (row, col); swap both axes
    perm = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    theta[0, :, :2] = perm @ theta[0, :, :2] @ perm
    theta[0, :, 2] = perm @ theta[0, :, 2]
    grid = F.affine_grid(theta, (1, 1, h, w), align_corners=False)
    img = image.reshape(1, -1, h, w).float()
    out_img = F.grid_sample(img, grid.expand(1, h, w, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False).reshape(image.shape)
    out_lab = None
    if label is not None:
        lab = label.reshape(1, -1, h, w).float()
        out_lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros",
                                align_corners=False).reshape(label.shape).to(label.dtype)
    return out_img, out_lab
