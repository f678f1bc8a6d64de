"""How good a stylized image is, measured against what a good one must keep and change (issue 34).

A stylized bSSFP slice must keep the heart (a frozen judge network still finds it: `dice_kept`), be as sharp as its
content (`grad_ratio`), take the target sequence's intensities in each structure (`structure_kl` against real
target slices, beside the raw bSSFP's), and be hard to tell from a real target slice (`c2st`: a small classifier's
held-out accuracy, 0.5 = indistinguishable). Images are (N, 1, S, S) in [0, 1], labels (N, S, S) classes
{0 bg, 1 MYO, 2 LV, 3 RV}.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmr_lib.evaluation.metrics import intensity_kl

STRUCTURE_CLASSES = {"myo": 1, "blood": 2}          # the myocardium and the LV blood pool, LGE's two contrasts


def structure_kl(images, labels, targets, target_labels, cls: int, bins: int = 64) -> float:
    """KL(images || targets) of the intensities inside class `cls` of each sample's own labels (same bins)."""
    a = np.asarray(images)[:, 0][np.asarray(labels) == cls]
    b = np.asarray(targets)[:, 0][np.asarray(target_labels) == cls]
    return float("nan") if a.size == 0 or b.size == 0 else intensity_kl(a, b, bins)


def histogram_match(image, reference) -> torch.Tensor:
    """`image` with its intensities replaced by the reference's at the same rank (a monotone remap that gives it
    the reference's histogram exactly, keeping its ordering): the best any global intensity style can do."""
    x = torch.as_tensor(image, dtype=torch.float32)
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    flat = x.numpy().ravel()
    ranks = np.argsort(np.argsort(flat, kind="stable"), kind="stable") / max(flat.size - 1, 1)
    return torch.from_numpy(np.quantile(ref, ranks).reshape(x.shape).astype(np.float32))


def structure_stats(images, labels, cls: int) -> tuple[float, float]:
    """Mean and standard deviation of the intensities inside class `cls` of each sample's own labels (pooled)."""
    a = np.asarray(images)[:, 0][np.asarray(labels) == cls]
    return (float("nan"), float("nan")) if a.size == 0 else (float(a.mean()), float(a.std()))


def appearance(images, labels) -> dict:
    """What makes a slice look like LGE rather than bSSFP, in two numbers: the myocardium's spread (LGE's scar and
    nulling make it heterogeneous) and the blood-minus-myocardium contrast."""
    myo, blood = (structure_stats(images, labels, STRUCTURE_CLASSES[k]) for k in ("myo", "blood"))
    return {"myo_std": myo[1], "contrast": blood[0] - myo[0]}


def grad_energy(images) -> np.ndarray:
    """Per slice, the mean squared finite-difference gradient (sharpness; 0 for a flat image)."""
    x = np.asarray(images, dtype=np.float64)[:, 0]
    gy, gx = np.diff(x, axis=1), np.diff(x, axis=2)
    return (gy ** 2).mean(axis=(1, 2)) + (gx ** 2).mean(axis=(1, 2))


def grad_ratio(stylized, content) -> float:
    """Gradient energy of the stylized slices over that of their contents (summed over slices): 1 = as sharp."""
    c = grad_energy(content).sum()
    return float("nan") if c == 0 else float(grad_energy(stylized).sum() / c)


def mean_dice(pred: np.ndarray, labels: np.ndarray, classes=(1, 2, 3)) -> float:
    """Dice over MYO, LV and RV, pooled over the slices (structures absent from both left out)."""
    out = []
    for c in classes:
        p, r = pred == c, labels == c
        total = p.sum() + r.sum()
        if total:
            out.append(2.0 * (p & r).sum() / total)
    return float(np.mean(out)) if out else float("nan")


def dice_kept(pred_stylized: np.ndarray, pred_content: np.ndarray, labels: np.ndarray) -> float:
    """The judge's Dice on the stylized slices over its Dice on their unstylized contents (1 = the heart is kept)."""
    base = mean_dice(pred_content, labels)
    return float("nan") if not base else mean_dice(pred_stylized, labels) / base


class _Critic(nn.Module):
    """A small convolutional classifier: real target slice or not (c2st)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


def c2st(a, b, *, seed: int = 0, steps: int = 300, batch: int = 32, lr: float = 2e-3) -> float:
    """Classifier two-sample test: the held-out accuracy of a small CNN trained to tell slices `a` from slices `b`
    (as many of each, half of each to train on, the other half to score; seeded, so the same inputs give the same
    number). 0.5 = indistinguishable, 1.0 = always told apart."""
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float32), torch.as_tensor(np.asarray(b), dtype=torch.float32)
    n = min(len(a), len(b))
    if n < 4:
        return float("nan")
    rng = np.random.default_rng(seed)
    ia, ib = rng.permutation(len(a))[:n], rng.permutation(len(b))[:n]
    half = n // 2
    x_train = torch.cat([a[ia[:half]], b[ib[:half]]])
    y_train = torch.cat([torch.zeros(half), torch.ones(half)])
    x_test = torch.cat([a[ia[half:]], b[ib[half:]]])
    y_test = torch.cat([torch.zeros(n - half), torch.ones(n - half)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = _Critic()
        opt = torch.optim.Adam(critic.parameters(), lr=lr)
        for step in range(steps):
            idx = torch.from_numpy(rng.integers(len(x_train), size=batch))
            loss = F.binary_cross_entropy_with_logits(critic(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            hits = ((critic(x_test) > 0).float() == y_test).float().mean()
    return float(hits)
