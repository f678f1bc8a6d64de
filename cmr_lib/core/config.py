"""Notebook parameters + a profile -> one validated, immutable Config (and back from a run's record)."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cmr_lib.core.checks import (
    as_int,
    check_epsilon_iterations,
    choice,
    cross_data,
    dir_param,
    distinct_ints,
    fail,
    kernel_list,
    kind_list,
    opt_folder,
    opt_kernel,
    seed_list,
    writable_dir,
)
from cmr_lib.core.errors import CmrError, check_bool
from cmr_lib.core.paths import default_output_root, display_path, recorded_path
from cmr_lib.core.schema import (
    APPEARANCE_BASELINES,
    CROP_OF,
    NETWORKS,
    PROFILE_SCHEMA,
    SEARCHING,
    SETTINGS,
    STYLE_FREE,
    STYLIZERS,
    load_profile,
    load_settings,
    validate_tree,
    with_record_defaults,
)
from cmr_lib.core.sections import Profile, build


class Section(Mapping):
    """A read-only nested mapping with attribute access: cfg.sizes.preprocess.crop.rain."""

    def __init__(self, data: Mapping):
        self._data = {k: Section(v) if isinstance(v, Mapping) else v for k, v in data.items()}

    def __getitem__(self, key):
        return self._data[key]

    def __getattr__(self, key):
        if key.startswith("__") or key == "_data":      # pickle/copy probe these before __init__ ran
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Section) else v for k, v in self._data.items()}

    def __repr__(self):
        return f"Section({self.to_dict()!r})"


@dataclass(frozen=True)
class InferencePolicy:
    """How a network is applied to a volume: the crop it trained at, the preprocess section (a profile's, or the
    mapping its checkpoint recorded) and the segmenter's precision."""

    crop: int
    preprocess: Mapping
    precision: str


@dataclass(frozen=True)
class Config:
    """Everything a notebook or run needs: parameters, the profile's sizes, the setting, the paths."""

    profile: str
    setting: int
    stylizer: str
    seed: int
    data_dir: Path | None          # None: the built-in phantom (see `phantom_dir`)
    c0_spacing: str                # 'header', or 'lge' for the cropped MS-CMRSeg copy (see data.sources.detect_layout)
    output_root: Path
    sizes: Profile                 # the profile's typed sections (core.sections): cfg.sizes.segmenter.batch
    setting_spec: Section
    extra: Section = field(default_factory=lambda: Section({}))
    split: Section = field(default_factory=lambda: Section({}))   # train/val/test_patients given by the user

    @property
    def figures_dir(self) -> Path:
        return self.output_root / "figures"

    @property
    def results_dir(self) -> Path:
        return self.output_root / "results"

    @property
    def phantom_dir(self) -> Path:
        return self.sizes.data.folder

    @property
    def t2_dir(self):
        """The folder setting 1's T2 styles come from when the data set has none (notebook parameter t2_dir)."""
        return self.extra.get("t2_dir")

    @property
    def source_args(self) -> dict:
        """data.sources.source_for's arguments: the data folder (None: the phantom its data section describes) and
        the C0 voxel-size rule."""
        return {"data_dir": self.data_dir, "c0_spacing": self.c0_spacing, "phantom_data": self.sizes.data}

    @property
    def inference(self) -> InferencePolicy:
        """How this run's DRU-Net is applied to a volume (evaluation.inference.predict)."""
        return InferencePolicy(crop=self.crop, preprocess=self.sizes.preprocess, precision=self.sizes.segmenter.precision)

    def slicing(self, *, train: bool, crop: int | None = None) -> dict:
        """data.slices.SliceDataset.from_source's profile arguments: the preprocessing, this run's crop (or `crop`),
        the augmentation when `train`, and the seed."""
        return {"preprocess": self.sizes.preprocess, "crop": crop or self.crop,
                "augment": self.sizes.augment if train else None, "seed": self.seed}

    @property
    def network(self) -> str | None:
        """The trained stylizer this run uses ('rain', 'adaconv' or 'adaconv-vae'; also for 'rain+intensity'), or None."""
        kind = self.stylizer.split("+")[0]
        return kind if kind in NETWORKS else None

    @property
    def baseline(self) -> str | None:
        """The appearance augmentation this run applies: 'histmatch', 'intensity', 'gin', 'slaug' (alone or
        after a stylizer: 'rain+intensity'), or None."""
        kind = self.stylizer.split("+")[-1]
        return kind if kind in APPEARANCE_BASELINES else None

    @property
    def searches(self) -> bool:
        """Whether this run's stylizer has a style latent that the epsilon search moves (RAIN, AdaConv + VAE)."""
        return self.network in SEARCHING

    @property
    def crop(self) -> int:
        """Centre-crop size of this run's stylizer network (baselines and setting 0 use the 'none' size)."""
        return self.crop_for(self.network)

    def crop_for(self, kind: str | None) -> int:
        """Centre-crop size of a stylizer network (AdaConv + VAE takes AdaConv's; None: the 'none' size)."""
        return self.sizes.preprocess.crop[CROP_OF.get(kind, kind) or "none"]

    def to_dict(self) -> dict:
        """Plain data for run records; paths inside the repository are written relative to it."""
        return {
            "profile": self.profile, "setting": self.setting, "stylizer": self.stylizer, "seed": self.seed,
            "data_dir": display_path(self.data_dir), "c0_spacing": self.c0_spacing,
            "output_root": display_path(self.output_root),
            "sizes": self.sizes.to_dict(), "setting_spec": self.setting_spec.to_dict(),
            "split": self.split.to_dict(), "extra": self.extra.to_dict(),
        }

    @classmethod
    def from_record(cls, record: Mapping, *, output_root=None) -> Config:
        """The Config a run was made with, from its run.json: sizes as recorded (not as the profile file says
        now). `output_root` is where that run's results/ live (records do not keep it; default: the profile's and
        data's own folder)."""
        c = record["config"]
        sizes = validate_tree(with_record_defaults(c["sizes"]), PROFILE_SCHEMA, str(record.get("_path", "run record")))
        data = c.get("data_dir")
        data = None if data is None else recorded_path(data)
        out = (Path(output_root).expanduser().resolve() if output_root is not None
               else default_output_root(c["profile"], data))
        return cls(profile=c["profile"], setting=int(c["setting"]), stylizer=c["stylizer"], seed=int(c["seed"]),
                   data_dir=data, c0_spacing=c["c0_spacing"], output_root=out, sizes=build(sizes),
                   setting_spec=Section(c["setting_spec"]), extra=Section(c.get("extra") or {}),
                   split=Section(c.get("split") or {}))

    def summary(self) -> str:
        """A few readable lines for the top of a notebook."""
        data = str(self.data_dir) if self.data_dir else f"built-in phantom ({self.phantom_dir})"
        return "\n".join([
            f"profile   {self.profile}",
            f"setting   {self.setting}: {self.setting_spec.name}",
            f"stylizer  {self.stylizer}",
            f"seed      {self.seed}",
            f"data      {data}",
            f"outputs   {self.output_root}",
        ] + ([SMOKE_WARNING] if self.profile == "smoke" else []))


SMOKE_WARNING = "WARNING: profile 'smoke' has sizes meant only to test the code: its images and numbers are not results"


# Every parameter of every notebook (their first code cell), with its one validator: notebooks and
# make_config check parameters here and nowhere else (tests/unit/core/test_notebook_parameters.py walks the table).
PARAMETERS = {
    "profile": lambda n, v: load_profile(v)[0],
    "setting": lambda n, v: choice(n, as_int(n, v), SETTINGS),
    "stylizer": lambda n, v: choice(n, v, STYLIZERS),
    "seed": lambda n, v: as_int(n, v, minimum=0),
    "data_dir": opt_folder,
    "t2_dir": opt_folder,
    "real_data_dir": opt_folder,
    "c0_spacing": lambda n, v: choice(n, v, ("header", "lge")),
    "output_root": lambda n, v: None if v is None else writable_dir(n, dir_param(n, v, must_exist=False)),
    "epsilon_iterations": lambda n, v: check_epsilon_iterations(v),
    "include_original": check_bool,
    "kernel_size": opt_kernel,
    "seeds": seed_list,
    "allow_mixed": check_bool,
    "cross_data": cross_data,
    "kernels": kernel_list,
    "kinds": kind_list,
    "max_slices": lambda n, v: None if v is None else as_int(n, v, minimum=1),
}


def check_parameter(name: str, value):
    """A notebook parameter validated by its rule in PARAMETERS (the cleaned value), or a one-line CmrError."""
    if name not in PARAMETERS:
        raise CmrError(f"parameter '{name}': unknown (notebook parameters: {', '.join(PARAMETERS)})")
    return PARAMETERS[name](name, value)


def apply_overrides(tree: dict, overrides, where: str) -> dict:
    """Set dotted keys of a profile tree (e.g. {'stylizer.adaconv.kernel_size': 5}); unknown keys are errors."""
    if overrides is None:
        return tree
    if not isinstance(overrides, Mapping):
        fail("overrides", overrides, "must be a mapping of dotted profile keys to values")
    tree = copy.deepcopy(tree)
    for key, value in overrides.items():
        node, parts = tree, str(key).split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                fail("overrides", key, f"no such profile key (in {where})")
            node = node[part]
        if parts[-1] not in node or isinstance(node[parts[-1]], dict):
            fail("overrides", key, f"no such profile value (in {where})")
        node[parts[-1]] = value
    return validate_tree(tree, PROFILE_SCHEMA, f"{where} + overrides")


def _patients(name, value):
    """None (the data source's default) or a non-empty list of distinct patient numbers, sorted."""
    out = distinct_ints(name, value, minimum=1, items="patient numbers", item="patient", none="the data source's default")
    return None if out is None else sorted(out)


def stylizer_for_setting(stylizer: str, setting: int) -> str:
    """Which stylizer values a setting takes. Setting 0 trains on bSSFP alone ('rain'/'adaconv' are ignored
    there, so the notebook's defaults run as-is) or with a style-free augmentation ('intensity', 'gin');
    histmatch takes LGE slices as settings 2 (random) and 3 (same patient) do; the networks need 1-3."""
    if setting == 0:
        if stylizer in ("rain", "adaconv", "none"):
            return "none"
        if stylizer in STYLE_FREE:
            return stylizer
        fail("stylizer", stylizer, "setting 0 takes 'none', " + ", ".join(map(repr, STYLE_FREE)) + " "
              + ("(histmatch uses LGE styles: setting 2 or 3)" if stylizer == "histmatch"
                 else "(a stylizer needs setting 1, 2 or 3)"))
    if stylizer in ("none", *STYLE_FREE):
        fail("stylizer", stylizer, f"setting {setting} stylizes: choose one of "
              + ", ".join(s for s in STYLIZERS if s not in ("none", *STYLE_FREE))
              + ("" if stylizer == "none" else f" ({stylizer} uses no style image: run it as setting 0)"))
    if stylizer == "histmatch" and setting == 1:
        fail("stylizer", stylizer, "histmatch has no pre-training, so setting 1 would repeat setting 2: "
              "use setting 2 (random LGE) or 3 (same patient's LGE)")
    return stylizer


def make_config(*, profile="demo", setting=0, stylizer="rain", seed=0, data_dir=None, c0_spacing="header",
                output_root=None, overrides=None, train_patients=None, val_patients=None, test_patients=None,
                **extra) -> Config:
    """Validate notebook parameters against a profile and return one immutable Config.

    `data_dir=None` selects the built-in phantom; `c0_spacing='lge'` fixes the cropped MS-CMRSeg copy's
    C0 voxel size; `train/val/test_patients=None` keep the data source's default split
    (data.splits.split_for); `output_root=None` writes figures/, results/ and checkpoints/ in the profile's and
    data's own folder (core.paths.default_output_root); `overrides` sets dotted profile keys. `extra` holds
    other notebook parameters of PARAMETERS (t2_dir, ...), kept for records.
    """
    name, sizes = load_profile(profile)
    sizes = apply_overrides(sizes, overrides, name)
    setting = check_parameter("setting", setting)
    stylizer = stylizer_for_setting(check_parameter("stylizer", stylizer), setting)
    seed = check_parameter("seed", seed)
    data = check_parameter("data_dir", data_dir)
    c0_spacing = check_parameter("c0_spacing", c0_spacing)
    out = check_parameter("output_root", output_root) or default_output_root(name, data)
    for key, value in extra.items():
        check_parameter(key, value)                  # kept as given: records name folders as the user did
    split = {k: v for k, v in (("train", _patients("train_patients", train_patients)),
                               ("val", _patients("val_patients", val_patients)),
                               ("test", _patients("test_patients", test_patients))) if v is not None}
    return Config(profile=name, setting=setting, stylizer=stylizer, seed=seed, data_dir=data,
                  c0_spacing=c0_spacing, output_root=out, sizes=build(sizes),
                  setting_spec=Section(load_settings()[setting]), extra=Section(extra), split=Section(split))
