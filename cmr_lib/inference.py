"""Whole-volume prediction: slice by slice at the network's crop, back to the original grid and spacing.

Each slice goes through the same preprocessing as training (per-volume normalisation, in-plane
resampling, centre crop); class probabilities are put back (outside the crop: background), resampled
bilinearly to the stored grid, and the argmax is taken there, so metrics use the original voxel size.
"""
from __future__ import annotations

import numpy as np
import torch

from cmr_lib.data import Volume
from cmr_lib.slices import prepare_volume
from cmr_lib.transforms import center_crop, resize, uncrop


def predict_volume(model, vol: Volume, *, crop: int, spacing_mm=None, percentiles=(0.5, 99.5), batch: int = 16,
                   device=None, autocast=None) -> np.ndarray:
    """Class labels (X, Y, Z) uint8 on `vol`'s own grid from a segmentation network (in eval mode)."""
    device = device or next(model.parameters()).device
    prep = prepare_volume(vol, spacing_mm=spacing_mm, percentiles=percentiles)
    h, w, nz = prep.image.shape
    x = torch.from_numpy(center_crop(prep.image, crop)).permute(2, 0, 1)[:, None]    # (Z, 1, S, S)
    probs = []
    was_training = model.training
    model.eval()
    with torch.inference_mode(), (autocast if autocast is not None else torch.autocast(device.type, enabled=False)):
        for k in range(0, nz, batch):
            probs.append(model(x[k:k + batch].to(device)).float().softmax(1).cpu())
    model.train(was_training)
    p = torch.cat(probs).permute(2, 3, 1, 0).numpy()                 # (S, S, K, Z)
    full = uncrop(p, (h, w))                                          # (H, W, K, Z), zero outside the crop
    outside = full.sum(axis=2) == 0
    full[:, :, 0][outside] = 1.0                                      # background where the crop did not reach
    k = full.shape[2]
    back = resize(full.reshape(h, w, k * nz), vol.image.shape[:2], order=1).reshape(*vol.image.shape[:2], k, nz)
    return back.argmax(axis=2).astype(np.uint8)                       # (X, Y, Z)
