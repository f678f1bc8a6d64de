"""Whole-volume prediction: slice by slice at the network's crop, back to the original grid and spacing.

Each slice goes through the same preprocessing as training (per-volume normalisation, in-plane
resampling, a crop at the image centre or, with preprocess.test_crop = heart, moved from there onto the heart
that the network finds inside it, see heart_shift); class probabilities are put back (outside the crop: background), resampled
bilinearly to the stored grid, and the argmax is taken there, so metrics use the original voxel size.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from cmr_lib.core.config import InferencePolicy
from cmr_lib.core.device import autocast, device
from cmr_lib.core.errors import CmrError
from cmr_lib.data.nifti import Volume, write_label
from cmr_lib.data.slices import prepare_volume, preprocess_arguments
from cmr_lib.data.transforms import center_crop, resize, uncrop, window_start
from cmr_lib.evaluation.evaluate import COLUMNS
from cmr_lib.evaluation.metrics import evaluate_volume
from cmr_lib.evaluation.postprocess import postprocessed

TEST_CROPS = ("image", "heart")      # where inference centres its crop (preprocess.test_crop)


def _probabilities(model, image: np.ndarray, size: int, shift, *, batch: int, device, autocast) -> np.ndarray:
    """Softmax (H, W, K, Z) of the network on the size-px window of `image` (H, W, Z) moved by `shift` px,
    put back on the image's grid (zero where the window did not reach)."""
    x = torch.from_numpy(center_crop(image, size, shift=shift)).permute(2, 0, 1)[:, None]    # (Z, 1, S, S)
    probs = []
    with torch.inference_mode(), (autocast if autocast is not None else torch.autocast(device.type, enabled=False)):
        for k in range(0, x.shape[0], batch):
            probs.append(model(x[k:k + batch].to(device)).float().softmax(1).cpu())
    return uncrop(torch.cat(probs).permute(2, 3, 1, 0).numpy(), image.shape[:2], shift=shift)   # (H, W, K, Z)


def heart_shift(model, image: np.ndarray, crop: int, *, passes: int = 3, **kw) -> tuple[int, int]:
    """The shift (px per axis) that centres a crop-px window on the heart of `image` (H, W, Z): from the image
    centre, up to `passes` times, the window moves to the centre of the largest connected region the network
    calls heart inside it, so a heart cut by the window's edge comes into full view. Moving from the centre
    step by step keeps the window off the body wall far away, which a network trained on heart-sized crops
    may also call heart (measured: one pass over the whole field found it there). No heart: (0, 0). Uses no label."""
    h, w = image.shape[:2]
    base = [window_start(n, crop, "center", 0) for n in (h, w)]
    shift = (0, 0)
    for _ in range(passes):
        heart = _probabilities(model, image, crop, shift, **kw).argmax(axis=2) > 0       # (H, W, Z)
        if not heart.any():
            break
        comp, _ = ndimage.label(heart, structure=np.ones((3, 3, 3), dtype=bool))
        centre = np.argwhere(comp == 1 + int(np.argmax(np.bincount(comp.ravel())[1:])))[:, :2].mean(axis=0)
        new = tuple(int(round(c - (crop - 1) / 2)) - b for c, b in zip(centre, base))
        if new == shift:
            break
        shift = new
    return shift


def predict_volume(model, vol: Volume, *, crop: int, spacing_mm=None, percentiles=(0.5, 99.5), fov_mm=None,
                   centre: str = "image", batch: int = 16, device=None, autocast=None) -> np.ndarray:
    """Class labels (X, Y, Z) uint8 on `vol`'s own grid from a segmentation network (in eval mode), its crop
    at the image centre or (centre='heart') moved from there onto the heart the network finds (heart_shift).
    Runs call `predict` instead, which sets crop, spacing, centring and precision from the run's config."""
    if centre not in TEST_CROPS:
        raise CmrError(f"parameter 'preprocess.test_crop' = {centre!r}: choose one of {', '.join(TEST_CROPS)}")
    device = device or next(model.parameters()).device
    prep = prepare_volume(vol, spacing_mm=spacing_mm, percentiles=percentiles, fov_mm=fov_mm)
    h, w, nz = prep.image.shape
    was_training = model.training
    model.eval()
    kw = {"batch": batch, "device": device, "autocast": autocast}
    try:
        shift = heart_shift(model, prep.image, crop, **kw) if centre == "heart" else (0, 0)
        full = _probabilities(model, prep.image, crop, shift, **kw)  # (H, W, K, Z), zero outside the crop
    finally:
        model.train(was_training)
    outside = full.sum(axis=2) == 0
    full[:, :, 0][outside] = 1.0                                      # background where the crop did not reach
    k = full.shape[2]
    back = resize(full.reshape(h, w, k * nz), vol.image.shape[:2], order=1).reshape(*vol.image.shape[:2], k, nz)
    return back.argmax(axis=2).astype(np.uint8)                       # (X, Y, Z)


def predict(model, vol: Volume, policy: InferencePolicy, dev=None) -> np.ndarray:
    """`vol`'s labels as a network predicts them under `policy` (a run's `cfg.inference`, or what a checkpoint
    recorded): its crop, its centring, spacing and normalisation, and the segmenter's precision (bf16 where
    supported under 'auto'), on `dev` (default: core.device). The one inference policy: test scores,
    validation (model selection), the cross-dataset table, figures and cmr-predict all come through here."""
    dev = dev or device()
    pre = policy.preprocess
    return predict_volume(model.to(dev), vol, crop=policy.crop, **preprocess_arguments(pre),
                          centre=pre["test_crop"], device=dev, autocast=autocast(policy.precision, dev))


def predict_volumes(model, volumes: Iterable[Volume], policy: InferencePolicy, *, pred_dir=None, progress=False):
    """(volume, prediction) for each volume, predicted by `predict`; pred_dir: also write each prediction
    there as NIfTI in the data set's label encoding (as predicted, before any post-processing)."""
    for vol in tqdm(volumes, desc="predict", disable=not progress):
        pred = predict(model, vol, policy)
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


def score_volumes(model, volumes: Iterable[Volume], policy: InferencePolicy, *, pred_dir=None, progress=False,
                  postprocess: str = "none") -> tuple[pd.DataFrame, list[int]]:
    """Predict each volume (`predict`) and score those with labels: test scores, validation (model selection),
    the cross-dataset table and the domain gap all come through here. See score_predictions."""
    return score_predictions(predict_volumes(model, volumes, policy, pred_dir=pred_dir, progress=progress),
                             postprocess=postprocess)
