"""How a run turns a bSSFP training batch into the images its DRU-Net learns from: one copy of that rule
(`BatchAugmenter`), used by training, by the example figures and by the histograms alike.

The appearance-augmentation baselines of Table 2 (no training) live here too: what a practitioner
tries first.

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

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cmr_lib.core.device import autocast, device, memory_format
from cmr_lib.core.errors import CmrError
from cmr_lib.core.schema import APPEARANCE_BASELINES, REMAPS
from cmr_lib.data.slices import SliceDataset
from cmr_lib.data.sources import CMRSource
from cmr_lib.data.splits import style_pool
from cmr_lib.models.adain import grain_noise
from cmr_lib.models.drunet import segmentation_loss
from cmr_lib.training.checkpoints import draw_items
from cmr_lib.training.slaug import slaug


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
    raise CmrError(f"parameter 'stylizer' = {kind!r}: not a baseline (choose {', '.join(APPEARANCE_BASELINES)})")


# ---------------------------------------------------------------------------------------------
# style slices and the batch rule

class StylePicker:
    """Style slices for a batch, per Table 1's pairing: 'random' (any style slice) or 'same_patient_level'
    (the same patient's slice at the nearest relative level between base and apex; unlabelled style
    volumes take their level from the stack position, since their labels must not be used in training)."""

    def __init__(self, styles: SliceDataset, pairing: str):
        self.styles, self.pairing = styles, pairing
        self.by_patient: dict[int, list] = {}
        for idx, (vi, z) in enumerate(styles.items):
            v = styles.volumes[vi]
            self.by_patient.setdefault(v.patient, []).append((idx, float(v.levels[z])))
        self.fallbacks = 0

    def __call__(self, content_items: list[dict], rng: np.random.Generator, step: int) -> torch.Tensor:
        self.styles.set_epoch(step)
        picks = []
        for it in content_items:
            options = self.by_patient.get(it["patient"]) if self.pairing == "same_patient_level" else None
            if options:
                picks.append(min(options, key=lambda o: abs(o[1] - it["level"]))[0])
            else:
                self.fallbacks += self.pairing == "same_patient_level"
                picks.append(int(rng.integers(len(self.styles))))
        return torch.stack([self.styles[i]["image"] for i in picks])


def uses_styles(cfg) -> bool:
    """Whether a run's batches need LGE style slices (the stylizers and histmatch)."""
    return bool(cfg.network) or cfg.baseline == "histmatch"


def setting_data(cfg, source: CMRSource, split: dict, pool=None) -> tuple[SliceDataset, SliceDataset | None]:
    """A setting run's training slices: labelled bSSFP of the training patients (augmented per step), and
    the LGE style pool (`pool` = data.splits.style_pool's answer, found here when not given) when its
    batches take styles (else None)."""
    content = SliceDataset.from_source(source, split["train"], "C0", **cfg.slicing(train=True), label="require")
    if not uses_styles(cfg):
        return content, None
    style_src, patients = pool or style_pool(source, split, "LGE", t2_dir=cfg.t2_dir)
    return content, SliceDataset.from_source(style_src, patients, "LGE", **cfg.slicing(train=True), label="skip")


def training_batch(cfg, content: SliceDataset, step: int):
    """Batch `step` of a setting run, as drawn from (seed, step) alone: (items, images, labels, rng); the
    rng goes on to pick the batch's random styles."""
    rng = np.random.default_rng([cfg.seed, step, 3])
    items = draw_items(content, rng, cfg.sizes.segmenter.batch, step)
    return items, torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items]), rng


class BatchAugmenter:
    """The images a setting run's DRU-Net learns from at one step: stylized (RAIN: a style code sampled around
    the picked LGE style, then `epsilon_iterations` rounds of adversarial search against the current network;
    AdaConv: restyled), histogram-matched, and/or remapped by intensity or GIN, or SLAug's location-scale
    images with their saliency fusion (training.slaug: twice the batch). Every draw comes from (seed, step), so
    the same step gives the same images wherever this is called."""

    def __init__(self, cfg, *, stylizer=None, styles: SliceDataset | None = None, epsilon_iterations: int = 0):
        if cfg.network and stylizer is None:
            raise CmrError(f"setting {cfg.setting} stylizes: pass its trained {cfg.network} stylizer")
        if uses_styles(cfg) and styles is None:
            raise CmrError(f"setting {cfg.setting}, {cfg.stylizer}: needs LGE style slices")
        self.cfg, self.dev = cfg, device()
        fmt = memory_format(cfg.sizes.stylizer.precision, self.dev)
        self.stylizer = stylizer.to(self.dev, memory_format=fmt).eval() if stylizer is not None else None
        self.picker = StylePicker(styles, cfg.setting_spec.style_pairing) if uses_styles(cfg) else None
        self.epsilon_iterations = epsilon_iterations if cfg.searches else 0
        self.last_gain = None            # how much the last style search raised the loss

    @property
    def mining(self) -> bool:
        return self.epsilon_iterations > 0

    @property
    def needs_network(self) -> bool:
        """Whether the images depend on the network being trained (RAIN's search, SLAug's saliency)."""
        return self.mining or self.cfg.baseline == "slaug"

    def styles_for(self, items, rng, step) -> torch.Tensor | None:
        """The batch's LGE style slices (None for the style-free baselines)."""
        return self.picker(items, rng, step).to(self.dev) if self.picker else None

    def __call__(self, items, x, y, rng, step: int, segmenter=None, styles=None):
        """(images, labels) the network learns from at batch `step` (x, y on the device); `segmenter` is the
        network being trained (RAIN's search and SLAug's saliency work against it); `styles` the picked
        ones, if already drawn."""
        cfg = self.cfg
        if self.needs_network and segmenter is None:
            raise CmrError(f"{cfg.stylizer}: its images depend on the segmentation network; pass it")
        s = styles if styles is not None else self.styles_for(items, rng, step)
        if cfg.network:
            xs = self._stylize(s, x, y, step, segmenter)
        elif cfg.baseline == "histmatch":
            xs = histogram_match(x, s)
        else:
            xs = x
        if cfg.baseline in REMAPS:
            gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step + 500_000)
            xs = augment(cfg.baseline, xs.clamp(0.0, 1.0), gen, cfg.sizes.baselines)
        elif cfg.baseline == "slaug":
            gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step + 700_000)
            with _frozen(segmenter):
                xs = slaug(xs.clamp(0.0, 1.0), y, gen, lambda img: self._loss(segmenter, img, y))
            return xs, torch.cat([y, y])
        return xs, y

    def _loss(self, segmenter, img, y):
        """The segmentation loss of `segmenter` on img (network in bf16 where the profile says; loss in fp32)."""
        sg = self.cfg.sizes.segmenter
        with autocast(sg.precision, self.dev):
            logits = segmenter(img)
        return segmentation_loss(logits.float(), y, ce_weight=sg.ce_weight, dice_weight=sg.dice_weight)

    def _stylize(self, s, x, y, step, segmenter):
        cfg, sty, dev = self.cfg, self.stylizer, self.dev
        precision = cfg.sizes.stylizer.precision
        gen = torch.Generator(device=dev).manual_seed(int(cfg.seed) * 1_000_003 + step)
        if not cfg.searches:                        # AdaConv: restyled, no latent to sample or search
            with torch.no_grad(), autocast(precision, dev):
                return sty.stylize(x, s, generator=gen).float()
        with torch.no_grad(), autocast(precision, dev):
            feat = sty.content_features(x)
            feat = [f.float() for f in feat] if isinstance(feat, list) else feat.float()
            mu, logvar = sty.style_code(s)
            z0 = sty.vae.sample(mu.float(), logvar.float(), gen)            # a random style around the anchor
        noise = grain_noise(sty, x, gen)                                     # None without the grain deviation
        if not self.mining:
            with torch.no_grad():
                return sty.render(feat, z0, noise=noise)
        # The style decoding stays fp32: under bf16 the search's small moves of z vanished (gain ~1e-6).
        # Only the network runs in bf16 here (_loss): the same mined images, judged in fp32, gained as much
        # (0.00278 both, 48 batches) and it is 1.35x faster (measured on the 2-core CPU).
        with _frozen(segmenter), _frozen(sty):
            found = sty.explore(x, z0, lambda img: self._loss(segmenter, img, y), iterations=self.epsilon_iterations,
                                **cfg.sizes.stylizer.explore.to_dict(), content_feat=feat, noise=noise)
        self.last_gain = found.losses[-1] - found.losses[0]
        return found.images[-1].float()


@contextmanager
def _frozen(model):
    """The model in eval mode while the images are searched or weighed (its BN statistics must not move),
    its weights out of autograd (only the image's or the latent's gradient is wanted: 1.15x faster here)."""
    was_training = model.training
    wanted = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for p, w in zip(model.parameters(), wanted):
            p.requires_grad_(w)


@dataclass
class Stylization:
    """Content slices, the style slice each got, and the result (all (N, 1, S, S)), with labels (N, S, S)."""

    content: torch.Tensor
    style: torch.Tensor | None          # None: a style-free augmentation (intensity, gin)
    stylized: torch.Tensor
    content_label: torch.Tensor
    style_label: torch.Tensor | None
    content_patient: list | None = None  # each content slice's patient (tests pair patients, not slices)


def training_examples(cfg, augmenter: BatchAugmenter, content: SliceDataset, *, steps=(0,), segmenter=None
                      ) -> Stylization:
    """Exactly what a run's DRU-Net was shown at the given training steps: each step's bSSFP batch, its picked
    styles and its augmented images (for RAIN with epsilon > 0, the search runs against `segmenter` as
    given: the network at that step is not kept, so figures use the trained one)."""
    parts = []
    if segmenter is not None:
        segmenter = segmenter.to(augmenter.dev)          # a loaded checkpoint comes on the CPU
    for step in steps:
        items, x, y, rng = training_batch(cfg, content, step)
        x, y = x.to(augmenter.dev), y.to(augmenter.dev)
        s = augmenter.styles_for(items, rng, step)
        out, labels = augmenter(items, x, y, rng, step, segmenter=segmenter, styles=s)
        k = out.shape[0] // x.shape[0]                   # SLAug gives two images per slice: GLA, then fused
        parts.append((x.repeat(k, 1, 1, 1).cpu(), None if s is None else s.repeat(k, 1, 1, 1).cpu(),
                      out.detach().float().cpu(), labels.cpu()))
    cat = (lambda k: None if parts[0][k] is None else torch.cat([p[k] for p in parts]))
    return Stylization(cat(0), cat(1), cat(2), cat(3), None)
