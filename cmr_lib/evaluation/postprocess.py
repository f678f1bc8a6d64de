"""Post-processing of predicted label maps, as nnU-Net does it: each structure keeps its largest connected
component. The islands it removes lie far from the heart, so they dominate the Hausdorff distance."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from cmr_lib.core.errors import CmrError

POSTPROCESS = ("none", "largest_component")
_FULL_3D = np.ones((3, 3, 3), dtype=bool)          # 26-connected: touching in a slice or across slices


def keep_largest_component(pred: np.ndarray, classes=(1, 2, 3)) -> np.ndarray:
    """A copy of `pred` (X, Y, Z) in which each class keeps only its largest 3-D connected component; the
    other voxels of that class become background. A class that is absent stays absent."""
    out = pred.copy()
    for c in classes:
        mask = pred == c
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=_FULL_3D)
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            out[mask & (comp != 1 + int(np.argmax(sizes)))] = 0
    return out


def postprocessed(pred: np.ndarray, postprocess: str) -> np.ndarray:
    """`pred` after the named post-processing ('none' returns it unchanged)."""
    if postprocess not in POSTPROCESS:
        raise CmrError(f"parameter 'postprocess' = {postprocess!r}: choose one of {', '.join(POSTPROCESS)}")
    return keep_largest_component(pred) if postprocess == "largest_component" else pred
