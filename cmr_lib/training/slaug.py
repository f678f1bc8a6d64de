"""SLAug (Su et al., AAAI 2023): saliency-balancing location-scale augmentation, the strongest source-only
baseline of the field, written for this project's batches (the authors' constants where they give them).

- Global location-scale (GLA): a random smooth monotone intensity curve over the whole image, then a
  random scale (about 1) and shift (location) of intensities, clipped to [0, 1].
- Local location-scale (LLA): the same, drawn separately for the background and for each labelled
  structure (so the classes get different intensities); the background's curve, and half of the
  structures' curves, may be non-monotone. Near-black voxels keep their value.
- Saliency-balancing fusion (SBF): where the network's loss is most sensitive to the GLA image (the
  gradient's magnitude, pooled to cells of about CELL_PX pixels and smoothed), the GLA image is kept;
  elsewhere the LLA image takes over. The network learns from both the GLA and the fused image.
Every draw comes from the torch.Generator given, so (seed, step) fixes it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CURVE_POINTS = 4            # Bezier control points: the two ends and two random inner ones
CURVE_SAMPLES = 1000
SCALE_SD, SCALE_RANGE = 0.1, (0.9, 1.1)
LOCATION_SD = 0.5
SLIDE_PERCENTILE = 20.0     # the shift keeps the 20th..80th intensity percentiles inside [0, 1]
BACKGROUND = 0.01           # voxels at or below keep their value in LLA
CELL_PX = 10                # saliency cell size (the reference: 18 cells over 192 px)

_T = torch.linspace(0.0, 1.0, CURVE_SAMPLES)
_BERNSTEIN = torch.stack([math.comb(CURVE_POINTS - 1, i) * _T ** (CURVE_POINTS - 1 - i) * (1 - _T) ** i
                          for i in range(CURVE_POINTS)])                      # (points, samples)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for 1-D tensors (xp increasing)."""
    idx = torch.searchsorted(xp, x.clamp(xp[0], xp[-1])).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    w = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return f0 + w * (f1 - f0)


def random_curve(v: torch.Tensor, gen: torch.Generator, *, monotone: bool) -> torch.Tensor:
    """Intensities `v` (1-D) through a random Bezier curve from (min, min) to (max, max)."""
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-6:
        return v
    inner = lo + (hi - lo) * torch.rand((2, CURVE_POINTS - 2), generator=gen)
    px = torch.tensor([lo, *inner[0].tolist(), hi])
    py = torch.tensor([lo, *inner[1].tolist(), hi])
    xs, ys = px @ _BERNSTEIN, py @ _BERNSTEIN
    xs, order = xs.sort()
    ys = ys.sort().values if monotone else ys[order]
    return _interp(v, xs, ys)


def location_scale(v: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random scale (about 1) and shift of intensities `v` (1-D), clipped to [0, 1]."""
    scale = float((1.0 + SCALE_SD * torch.randn((), generator=gen)).clamp(*SCALE_RANGE))
    location = float(LOCATION_SD * torch.randn((), generator=gen))
    q = torch.quantile(v, torch.tensor([SLIDE_PERCENTILE / 100, 1 - SLIDE_PERCENTILE / 100]))
    location = min(max(location, 0.0 - float(q[0])), 1.0 - float(q[1]))
    return (v * scale + location).clamp(0.0, 1.0)


def global_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """GLA of images (N, 1, S, S) in [0, 1]: one monotone curve and one location-scale per image."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        v = x[i].flatten().float().cpu()
        out[i] = location_scale(random_curve(v, gen, monotone=True), gen).view_as(x[i]).to(x)
    return out


def local_augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """LLA of images (N, 1, S, S) with labels (N, S, S): a curve and a location-scale per region."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        img, lab = x[i, 0].float().cpu(), y[i].cpu()
        res = torch.zeros_like(img)
        for c in range(int(lab.max()) + 1):
            mask = lab == c
            if not mask.any():
                continue
            monotone = False if c == 0 else bool(torch.rand((), generator=gen) < 0.5)
            res[mask] = location_scale(random_curve(img[mask], gen, monotone=monotone), gen)
        keep = img <= BACKGROUND
        res[keep] = img[keep]
        out[i, 0] = res.to(x)
    return out


def saliency_map(grad: torch.Tensor) -> torch.Tensor:
    """Smooth saliency in [0, 1] per image from input gradients (N, 1, S, S): the gradient's magnitude pooled
    to cells of about CELL_PX pixels, upsampled smoothly, rescaled to [0, 1]."""
    n, _, h, w = grad.shape
    cells = max(2, round(h / CELL_PX))
    pooled = F.adaptive_avg_pool2d(grad.abs().float(), cells)
    smooth = F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=True)   # no overshoot
    flat = smooth.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view(n, 1, h, w)


def slaug(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, loss_fn) -> torch.Tensor:
    """The GLA images and the saliency-fused images of one batch, stacked: (2N, 1, S, S). loss_fn(images)
    is the segmentation loss of the network being trained on these images (labels y)."""
    gla, lla = global_augment(x, gen), local_augment(x, y, gen)
    probe = gla.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(probe), probe)
    sal = saliency_map(grad)
    return torch.cat([gla, gla * sal + lla * (1 - sal)]).detach()
