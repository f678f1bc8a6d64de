"""Appearance-augmentation baselines for Table 2 (no training): what a practitioner tries first.

- `histmatch`: each bSSFP training slice takes the intensity histogram of an LGE slice (exact rank
  matching over the whole crop: the 144-mm field around the heart that the network sees).
- `intensity`: a random monotone piecewise-linear intensity curve, then gamma and contrast jitter
  (BigAug-style, Zhang et al., IEEE TMI 2020).
- `gin`: a shallow convolutional network with fresh random weights per image, mixed with the input and
  rescaled to its norm (Global Intensity Non-linear augmentation, Ouyang et al., IEEE TMI 2022).

All take and return (N, 1, S, S) float images in [0, 1] (the percentile-normalised range of the test
images) and draw every random number from the torch.Generator they are given, so a seed fixes them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cmr_lib.errors import CmrError

BASELINES = ("histmatch", "intensity", "gin")
COMBINED = ("rain+intensity", "adaconv+intensity")      # a stylizer, then the intensity remap


def _check(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise CmrError(f"{name}: expected images of shape (N, 1, S, S), got {tuple(x.shape)}")


def _uniform(gen: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def histogram_match(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Give each image of x the exact intensity histogram of the same-index reference image.

    The k-th darkest pixel of x takes the value of the k-th darkest pixel of its reference (ties in x
    keep their order), so anatomy keeps its rank order and the histogram becomes the reference's.
    """
    _check(x, "histogram_match input")
    _check(reference, "histogram_match reference")
    if x.shape != reference.shape:
        raise CmrError(f"histogram_match: images {tuple(x.shape)} and references {tuple(reference.shape)} differ")
    flat = x.flatten(1)
    order = flat.argsort(dim=1, stable=True)
    ref_sorted = reference.flatten(1).to(flat.dtype).sort(dim=1).values
    out = torch.empty_like(flat).scatter_(1, order, ref_sorted)
    return out.view_as(x)


def random_intensity(x: torch.Tensor, gen: torch.Generator, *, control_points: int = 3,
                     gamma=(0.7, 1.5), contrast=(0.75, 1.25)) -> torch.Tensor:
    """A random monotone (non-decreasing) piecewise-linear curve per image, then gamma and contrast jitter.

    The curve passes through `control_points` random knots plus the two ends, whose values are sorted
    uniform draws: intensity order is kept, but the spacing between tissues changes freely. Gamma is
    drawn log-uniformly; contrast scales around the image mean. The result is clipped to [0, 1].
    """
    _check(x, "random_intensity input")
    n = x.shape[0]
    k = control_points + 2
    xs = torch.cat([torch.zeros(n, 1), _uniform(gen, (n, control_points), 0.0, 1.0).sort(dim=1).values,
                    torch.ones(n, 1)], dim=1)                                   # (n, k) knot positions
    ys = _uniform(gen, (n, k), 0.0, 1.0).sort(dim=1).values                    # (n, k) knot values
    lo, hi = ys[:, :1], ys[:, -1:]
    ys = (ys - lo) / (hi - lo).clamp_min(1e-3)                                # use the full [0, 1] range
    g = torch.exp(_uniform(gen, (n,), float(torch.log(torch.tensor(gamma[0]))),
                           float(torch.log(torch.tensor(gamma[1])))))
    c = _uniform(gen, (n,), contrast[0], contrast[1])
    xs, ys, g, c = (t.to(x.device) for t in (xs, ys, g, c))    # random draws on the CPU generator
    flat = x.flatten(1).float().clamp(0.0, 1.0)
    out = torch.empty_like(flat)
    for i in range(n):
        j = torch.searchsorted(xs[i].contiguous(), flat[i].contiguous(), right=True).clamp(1, k - 1)
        x0, x1, y0, y1 = xs[i][j - 1], xs[i][j], ys[i][j - 1], ys[i][j]
        t = (flat[i] - x0) / (x1 - x0).clamp_min(1e-6)
        v = (y0 + t * (y1 - y0)).clamp(0.0, 1.0) ** g[i]
        out[i] = ((v - v.mean()) * c[i] + v.mean()).clamp(0.0, 1.0)
    return out.view_as(x).to(x.dtype)


def gin(x: torch.Tensor, gen: torch.Generator, *, layers: int = 4, channels: int = 2,
        kernel_sizes=(1, 3)) -> torch.Tensor:
    """Global Intensity Non-linear augmentation: a random `layers`-deep conv net per image.

    Each layer draws one kernel size from `kernel_sizes` and N(0, 1) weights and biases for every image
    (grouped convolution), with leaky ReLU between layers. The output is mixed with the input by a
    uniform random weight and scaled to the input's Frobenius norm, as in Ouyang et al.; then (our
    addition) min-max rescaled to [0, 1], the range of the normalised test images.
    """
    _check(x, "gin input")
    if layers < 2:
        raise CmrError(f"parameter 'baselines.gin.layers' = {layers!r}: must be >= 2")
    n, _, h, w = x.shape
    inp = x.float()
    y = inp.reshape(1, n, h, w)
    c_in = 1
    for layer in range(layers):
        c_out = 1 if layer == layers - 1 else channels
        k = int(kernel_sizes[int(torch.randint(len(kernel_sizes), (1,), generator=gen))])
        weight = torch.randn((n * c_out, c_in, k, k), generator=gen).to(x.device)
        bias = torch.randn((n * c_out,), generator=gen).to(x.device)
        y = F.conv2d(y, weight, bias, padding=k // 2, groups=n)
        if layer < layers - 1:
            y = F.leaky_relu(y)
        c_in = c_out
    y = y.view(n, 1, h, w)
    alpha = torch.rand((n, 1, 1, 1), generator=gen).to(x.device)
    mixed = alpha * y + (1.0 - alpha) * inp
    mixed = mixed * (inp.flatten(1).norm(dim=1) / (mixed.flatten(1).norm(dim=1) + 1e-5)).view(n, 1, 1, 1)
    lo = mixed.flatten(1).min(dim=1).values.view(n, 1, 1, 1)
    hi = mixed.flatten(1).max(dim=1).values.view(n, 1, 1, 1)
    return ((mixed - lo) / (hi - lo).clamp_min(1e-6)).to(x.dtype)


def augment(kind: str, x: torch.Tensor, gen: torch.Generator, params, *, reference: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Apply one baseline by name with the profile's `baselines` parameters (histmatch needs `reference`)."""
    if kind == "histmatch":
        if reference is None:
            raise CmrError("histmatch needs LGE reference slices")
        return histogram_match(x, reference)
    if kind == "intensity":
        p = params.intensity
        return random_intensity(x, gen, control_points=p.control_points, gamma=tuple(p.gamma),
                                contrast=tuple(p.contrast))
    if kind == "gin":
        p = params.gin
        return gin(x, gen, layers=p.layers, channels=p.channels, kernel_sizes=tuple(p.kernel_sizes))
    raise CmrError(f"parameter 'stylizer' = {kind!r}: not a baseline (choose {', '.join(BASELINES)})")
