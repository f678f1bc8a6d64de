"""The profile as typed data: one frozen dataclass per section, each field with its default (the demo profile's
value), unit, meaning and validator. The YAML profiles in `params/` give only what differs from these defaults.

Everything else is derived from the fields: the validator tree (core.schema.PROFILE_SCHEMA), the values older run
records lacked (`before`), and the parameter reference in docs/parameters.md (`python -m cmr_lib.core.schema`).
A new parameter is one field here plus the profiles that change it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cmr_lib.core import checks as ck
from cmr_lib.core.paths import data_root

SELECT_RULES = ("source", "last", "target")
PRECISIONS = ("auto", "bf16", "fp32")
_ABSENT = object()


def param(default, check, meaning: str, unit: str = "", *, before=_ABSENT, quiet: bool = False):
    """A profile field: its default, validator `check(name, value)`, one-line meaning and unit; `before` is the
    value that run records written before the field existed meant (they lack the key). `quiet`: the field is left
    out of checkpoint identities (Params.identity) while it holds `before`, so adding it renames no network."""
    meta = {"check": check, "meaning": meaning, "unit": unit}
    if before is not _ABSENT:
        meta["before"] = before
    if quiet:
        if before is _ABSENT:
            raise ValueError("a quiet parameter needs the value older records meant (before=)")
        meta["quiet"] = True
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls, meaning: str):
    """A nested section field (its own dataclass of fields)."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "meaning": meaning})


def one_of(*allowed):
    return lambda n, v: ck.choice(n, v, allowed)


def int_at_least(minimum: int):
    return lambda n, v: ck.as_int(n, v, minimum=minimum)


def positive(n, v):
    return ck.as_float(n, v, minimum=0.0, strict_min=True)


class Params(Mapping):
    """Base of every section: attribute access (`sizes.segmenter.batch`) and read-only mapping access
    (`sizes.baselines['gin']`, `dict(section)`), and `to_dict()` for records and hashes. Sections compare as
    mappings (`eq=False` keeps Mapping's equality): a section equals the dict of its values."""

    __slots__ = ()

    def __getitem__(self, key):
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict:
        return self._plain(identity=False)

    def identity(self) -> dict:
        """to_dict() for checkpoint hashes: quiet fields that hold their `before` value are left out, so a network
        trained before such a field existed keeps its name."""
        return self._plain(identity=True)

    def _plain(self, *, identity: bool) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if identity and f.metadata.get("quiet") and v == f.metadata["before"]:
                continue
            if isinstance(v, Params):
                v = v._plain(identity=identity)
            out[f.name] = list(v) if isinstance(v, list) else v
        return out


# ---------------------------------------------------------------------------------------------
# the sections, in the order profiles list them

@dataclass(frozen=True, eq=False)
class DataConfig(Params):
    phantom_patients: int = param(45, ck.pos_int, "patients of the built-in phantom (MS-CMRSeg 2019 has 45)")
    phantom_seed: int = param(2019, int_at_least(0), "the phantom is the same data set whatever the run seed")
    calibration_patients: int | None = param(None, ck.opt_pos_int,
                                             "real patients for notebook 01's calibration (null: all)")

    @property
    def folder(self) -> Path:
        """Where this phantom is generated (once) and read from."""
        return data_root() / "phantom" / f"n{self.phantom_patients}_seed{self.phantom_seed}"


@dataclass(frozen=True, eq=False)
class CropConfig(Params):
    rain: int = param(64, ck.pos_int, "RAIN's training crop (64 px at 2.25 mm: 144 mm around the heart)", "px")
    adaconv: int = param(64, ck.pos_int, "AdaConv's input size (fixed by its fully connected layer)", "px")
    none: int = param(64, ck.pos_int, "crop of setting 0 and the style-free baselines", "px")


@dataclass(frozen=True, eq=False)
class PreprocessConfig(Params):
    spacing_mm: float | None = param(2.25, ck.opt_pos_float,
                                     "in-plane resampling (null: native); coarser than native to fit CPU budgets",
                                     "mm")
    percentiles: list = param([0.5, 99.5], ck.percentiles, "intensity window [low, high] mapped to [0, 1]", "%")
    normalise_fov_mm: float | None = param(None, ck.opt_pos_float,
                                           "percentiles over the central square of this side (null: whole slice)",
                                           "mm", before=None)
    test_crop: str = param("image", one_of("image", "heart"),
                           "inference crop at the image centre, or moved onto the heart the network finds",
                           before="image")
    crop: CropConfig = section(CropConfig, "centre-crop size per network")


@dataclass(frozen=True, eq=False)
class AugmentConfig(Params):
    probability: float = param(1.0, ck.probability, "chance that a training slice is transformed")
    scale: list = param([0.9, 1.1], ck.scale_range, "zoom range [min, max]")
    rotation_deg: float = param(20.0, ck.nonneg_float, "largest rotation", "deg")
    translation: float = param(0.05, ck.fraction, "largest shift, as a fraction of the crop")
    shear_deg: float = param(5.0, ck.nonneg_float, "largest shear", "deg")


@dataclass(frozen=True, eq=False)
class RainConfig(Params):
    lr_decay: float = param(5.0e-5, ck.nonneg_float, "lr / (1 + lr_decay * step)", "1/step")
    content_weight: float = param(1.0, ck.nonneg_float, "content loss weight (paper eq. 2)")
    style_weight: float = param(10.0, ck.nonneg_float, "style loss weight (reference 1; 10 for 1000-step budgets)")
    kl_weight: float = param(1.0, ck.nonneg_float, "style VAE's KL weight")
    rec_weight: float = param(5.0, ck.nonneg_float, "style VAE's reconstruction weight")
    detail_weight: float = param(0.0, ck.nonneg_float,
                                 "structure loss at relu1-3, instance-normalised (deviation; 0 = paper)", before=0.0)
    intensity_weight: float = param(0.0, ck.nonneg_float,
                                    "grey-level quantile loss against the style image (deviation; 0 = paper)",
                                    before=0.0)
    skips: bool = param(False, ck.flag, "decoder skips of the content's normalised detail (deviation; false = paper)",
                        before=False)
    grain: bool = param(False, ck.flag, "learned per-pixel noise at full size, needs skips (deviation; false = paper)",
                        before=False)
    adversarial_weight: float = param(0.0, ck.nonneg_float,
                                      "patch critic's loss: stylized against real target slices (deviation; 0 = paper)",
                                      before=0.0, quiet=True)


@dataclass(frozen=True, eq=False)
class AdaConvConfig(Params):
    lr_decay: float = param(2.0e-4, ck.nonneg_float, "lr / (1 + lr_decay * step), the reference code's", "1/step")
    content_weight: float = param(1.0, ck.nonneg_float, "content loss weight")
    style_weight: float = param(10.0, ck.nonneg_float, "style loss weight")
    kernel_size: int = param(3, ck.odd_kernel, "predicted kernel size (the paper's future work asks for larger)",
                             "px")
    style_dim: int = param(512, ck.pos_int, "style descriptor channels (scaled by encoder_width)")
    detail_weight: float = param(0.0, ck.nonneg_float, "as rain's (deviation; 0 = paper)", before=0.0)
    intensity_weight: float = param(0.0, ck.nonneg_float, "as rain's (deviation; 0 = paper)", before=0.0)
    skips: bool = param(False, ck.flag, "as rain's (deviation; false = paper)", before=False)
    grain: bool = param(False, ck.flag, "as rain's (deviation; false = paper)", before=False)
    adversarial_weight: float = param(0.0, ck.nonneg_float, "as rain's (deviation; 0 = paper; AdaConv + VAE's "
                                      "AdaConv is trained with it, its VAE is not)", before=0.0, quiet=True)


@dataclass(frozen=True, eq=False)
class ExploreConfig(Params):
    step: float = param(4.0, positive, "style search step in the standardised latent (ASM's 20 wiped out the LV)")
    rule: str = param("asm", one_of("asm", "sign", "plain"), "style search update rule (models.style_search)")


PRECISION_MEANING = "fp32 | bf16 | auto (bf16 autocast where the hardware supports it); demo: the same floats on every CPU"


@dataclass(frozen=True, eq=False)
class AutoencoderConfig(Params):
    iterations: int = param(250, ck.pos_int, "decoder pretraining steps on MR slices", "steps")
    batch: int = param(8, ck.pos_int, "slices per step", "slices")
    lr: float = param(1.0e-3, positive, "Adam learning rate (an autoencoder converges fast)")


@dataclass(frozen=True, eq=False)
class StylizerConfig(Params):
    encoder_weights: str = param("auto", ck.encoder_weights,
                                 "auto | imagenet | random | mr | path/to/vgg19.pth (torchvision format)")
    offline_fallback: str = param("mr", one_of("random", "mr"), "what auto uses without ImageNet weights")
    encoder_width: float = param(0.25, lambda n, v: ck.as_float(n, v, minimum=0.0, maximum=1.0, strict_min=True),
                                 "VGG-19 channel multiplier; ImageNet weights need 1.0")
    batch: int = param(8, ck.pos_int, "content/style pairs per step", "pairs")
    iterations: int = param(250, ck.pos_int, "training steps (references: 160k)", "steps")
    checkpoint_every: int = param(125, ck.pos_int, "steps between checkpoints", "steps")
    lr: float = param(5.0e-4, positive, "Adam learning rate (references 1e-4)")
    precision: str = param("fp32", one_of(*PRECISIONS), PRECISION_MEANING)
    warm_start: bool = param(True, ck.flag, "start decoders from an MR autoencoder (paper: from scratch)")
    rain: RainConfig = section(RainConfig, "RAIN: L = L_c + l1 L_s + l2 L_KL + l3 L_rec (paper eq. 2-6)")
    adaconv: AdaConvConfig = section(AdaConvConfig, "AdaConv (predicted depthwise/pointwise kernels)")
    explore: ExploreConfig = section(ExploreConfig, "the adversarial style search")
    autoencoder: AutoencoderConfig = section(AutoencoderConfig, "decoder pretraining (and the offline 'mr' encoder)")


@dataclass(frozen=True, eq=False)
class SegmenterConfig(Params):
    depth: int = param(5, int_at_least(2), "U-Net levels (reference 5)")
    root: int = param(8, ck.pos_int, "channels at the first level (reference 16, ~3.1 M parameters)")
    head_relu: bool = param(False, ck.flag, "the reference's ReLU on the logits (can kill a class for good)")
    batch: int = param(4, ck.pos_int, "slices per step", "slices")
    iterations: int = param(120, ck.pos_int, "training steps", "steps")
    checkpoint_every: int = param(40, ck.pos_int, "steps between checkpoints", "steps")
    lr: float = param(1.0e-3, positive, "Adam learning rate, halved every lr_halve_every steps")
    lr_halve_every: int = param(1000, ck.pos_int, "steps between halvings of the learning rate", "steps")
    val_every: int = param(40, ck.pos_int, "steps between checkpoint choices", "steps")
    select: str = param("source", one_of(*SELECT_RULES),
                        "checkpoint choice: held-out labelled bSSFP, the last one, or LGE labels (paper)",
                        before="target")
    select_patients: int = param(5, ck.pos_int, "labelled bSSFP patients held out for `source` (MS-CMRSeg: 31-35)",
                                 "patients", before=5)
    ce_weight: float = param(1.0, ck.nonneg_float, "cross-entropy weight in the loss")
    dice_weight: float = param(1.0, ck.nonneg_float, "soft Dice (foreground) weight in the loss")
    precision: str = param("fp32", one_of(*PRECISIONS), PRECISION_MEANING)


@dataclass(frozen=True, eq=False)
class IntensityConfig(Params):
    control_points: int = param(3, int_at_least(0), "inner points of the random monotone curve")
    gamma: list = param([0.7, 1.5], ck.scale_range, "gamma range, drawn log-uniformly")
    contrast: list = param([0.75, 1.25], ck.scale_range, "contrast range")


@dataclass(frozen=True, eq=False)
class GinConfig(Params):
    layers: int = param(4, int_at_least(2), "layers of the random shallow network")
    channels: int = param(2, ck.pos_int, "channels per layer")
    kernel_sizes: list = param([1, 3], ck.odd_kernels, "kernel sizes drawn from", "px")


@dataclass(frozen=True, eq=False)
class BaselinesConfig(Params):
    intensity: IntensityConfig = section(IntensityConfig, "BigAug-style curve, gamma and contrast")
    gin: GinConfig = section(GinConfig, "GIN (Ouyang et al. 2022): a random network mixed with the image")


@dataclass(frozen=True, eq=False)
class ReproduceConfig(Params):
    seeds: int = param(1, ck.pos_int, "seeds per Table 2/3 row in make reproduce (SEEDS=n overrides)")


@dataclass(frozen=True, eq=False)
class AnalysisConfig(Params):
    hist_bins: int = param(64, ck.pos_int, "bins of the intensity histograms")
    examples: int = param(6, ck.pos_int, "slices shown in example grids", "slices")


@dataclass(frozen=True, eq=False)
class Profile(Params):
    profile: str = param("demo", ck.safe_name, "the profile's name (it names result folders)")
    data: DataConfig = section(DataConfig, "the built-in phantom")
    preprocess: PreprocessConfig = section(PreprocessConfig, "resampling, intensity window and crops")
    augment: AugmentConfig = section(AugmentConfig, "geometric augmentation of training slices")
    stylizer: StylizerConfig = section(StylizerConfig, "the style-transfer networks")
    segmenter: SegmenterConfig = section(SegmenterConfig, "DRU-Net (Jafari et al. 2020)")
    baselines: BaselinesConfig = section(BaselinesConfig, "appearance augmentations beside the stylizers")
    reproduce: ReproduceConfig = section(ReproduceConfig, "make reproduce")
    analysis: AnalysisConfig = section(AnalysisConfig, "figures")


# ---------------------------------------------------------------------------------------------
# what is derived from the fields

def schema_of(cls=Profile) -> dict:
    """The validator tree of a section: {key: check} for values, {key: {...}} for nested sections."""
    return {f.name: schema_of(f.metadata["section"]) if "section" in f.metadata else f.metadata["check"]
            for f in dataclasses.fields(cls)}


def defaults(cls=Profile) -> dict:
    """The default tree of a section (the demo profile)."""
    return cls().to_dict()


def record_defaults(cls=Profile, prefix: str = "") -> dict:
    """{dotted key: value} of the fields added after run records were first written, with what those records did."""
    out = {}
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            out.update(record_defaults(f.metadata["section"], f"{prefix}{f.name}."))
        elif "before" in f.metadata:
            out[prefix + f.name] = f.metadata["before"]
    return out


def build(tree: Mapping, cls=Profile):
    """A section's typed value from a validated tree (core.schema.validate_tree)."""
    return cls(**{f.name: build(tree[f.name], f.metadata["section"]) if "section" in f.metadata else tree[f.name]
                  for f in dataclasses.fields(cls)})


def _cell(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def reference(profiles: Mapping[str, Mapping]) -> str:
    """docs/parameters.md: every field with its default, unit and meaning, and each profile's value where it differs."""
    names = [p for p in profiles if p != "demo"]
    lines = ["# Profile parameters", "",
             "Written by `python -m cmr_lib.core.schema` from `cmr_lib/core/sections.py` (do not edit by hand; "
             "tests/unit/core/test_params.py checks it). The default is the `demo` profile's value; the other columns show a "
             "profile's value only where it differs. A profile file (`params/*.yaml`) says `extends: <profile>` "
             "and gives only what differs.", ""]

    def walk(cls, prefix, trees):
        fields = dataclasses.fields(cls)
        rows = []
        for f in fields:
            if "section" not in f.metadata:
                default = trees["demo"][f.name]
                others = [_cell(trees[p][f.name]) if trees[p][f.name] != default else "" for p in names]
                rows.append(f"| `{prefix}{f.name}` | {_cell(default)} | {f.metadata['unit']} | "
                            f"{f.metadata['meaning']} | " + " | ".join(others) + " |")
        if rows:
            lines.extend([f"| key | default | unit | meaning | {' | '.join(names)} |",
                          "|---" * (4 + len(names)) + "|", *rows, ""])
        for f in fields:
            if "section" in f.metadata:
                lines.extend([f"## `{prefix}{f.name}`: {f.metadata['meaning']}", ""])
                walk(f.metadata["section"], f"{prefix}{f.name}.", {p: t[f.name] for p, t in trees.items()})

    walk(Profile, "", dict(profiles))
    return "\n".join(lines).rstrip() + "\n"
