"""Whole-volume prediction: slice by slice at the network's crop, back to the original grid and spacing.

Each slice goes through the same preprocessing as training (per-volume normalisation, in-plane
resampling, centre crop); class probabilities are put back (outside the crop: background), resampled
bilinearly to the stored grid, and the argmax is taken there, so metrics use the original voxel size.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cmr_lib.core.device import autocast, device
from cmr_lib.data.nifti import Volume, write_label
from cmr_lib.data.slices import prepare_volume
from cmr_lib.data.transforms import center_crop, resize, uncrop
from cmr_lib.evaluation.evaluate import COLUMNS
from cmr_lib.evaluation.metrics import evaluate_volume
from cmr_lib.evaluation.postprocess import postprocessed


def predict_volume(model, vol: Volume, *, crop: int, spacing_mm=None, percentiles=(0.5, 99.5), batch: int = 16,
                   device=None, autocast=None) -> np.ndarray:
    """Class labels (X, Y, Z) uint8 on `vol`'s own grid from a segmentation network (in eval mode).
    Runs call `predict` instead, which sets crop, spacing and precision from the run's config."""
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


def predict(model, vol: Volume, cfg) -> np.ndarray:
    """`vol`'s labels as a run's network predicts them: the run's crop, spacing and normalisation, and the
    segmenter's precision (bf16 where supported under 'auto'). The one inference policy: test scores,
    validation (model selection), the cross-dataset table and figures all come through here."""
    pre, dev = cfg.sizes.preprocess, device()
    return predict_volume(model.to(dev), vol, crop=cfg.crop, spacing_mm=pre.spacing_mm,
                          percentiles=tuple(pre.percentiles), device=dev,
                          autocast=autocast(cfg.sizes.segmenter.precision, dev))


def predict_volumes(model, volumes: Iterable[Volume], cfg, *, pred_dir=None, progress=False):
    """(volume, prediction) for each volume, predicted by `predict`; pred_dir: also write each prediction
    there as NIfTI in the data set's label encoding (as predicted, before any post-processing)."""
    for vol in tqdm(volumes, desc="predict", disable=not progress):
        pred = predict(model, vol, cfg)
        if pred_dir is not None:
            write_label(Path(pred_dir) / vol.image_path.name, pred, like=vol)
        yield vol, pred


def score_predictions(pairs, *, postprocess: str = "none") -> tuple[pd.DataFrame, list[int]]:
    """Score (volume, prediction) pairs that have labels (Dice, HD, HD95, ASSD in mm on the volume's own grid),
    after `postprocess` ('none' or 'largest_component'). Returns (one row per case and structure, in
    evaluate.COLUMNS; the patients without labels)."""
    rows, unlabelled = [], []
    for vol, pred in pairs:
        if vol.label is None:
            unlabelled.append(vol.patient)
            continue
        case = vol.image_path.name.split(".nii")[0]
        pred = postprocessed(pred, postprocess)
        rows += [{"case": case, "structure": st, **m} for st, m in evaluate_volume(pred, vol.label, vol.spacing).items()]
    return pd.DataFrame(rows, columns=COLUMNS), unlabelled


def score_volumes(model, volumes: Iterable[Volume], cfg, *, pred_dir=None, progress=False, postprocess: str = "none"
                  ) -> tuple[pd.DataFrame, list[int]]:
    """Predict each volume (`predict`) and score those with labels: test scores, validation (model selection),
    the cross-dataset table and the domain gap all come through here. See score_predictions."""
    return score_predictions(predict_volumes(model, volumes, cfg, pred_dir=pred_dir, progress=progress),
                             postprocess=postprocess)
