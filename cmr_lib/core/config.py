"""Notebook parameters + a profile -> one validated, immutable Config (and back from a run's record)."""
from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cmr_lib.core.errors import CmrError, check_bool, check_int
from cmr_lib.core.paths import data_root, default_output_root, display_path, recorded_path
from cmr_lib.core.checks import as_int, choice, fail
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
        d = self.sizes.data
        return data_root() / "phantom" / f"n{d.phantom_patients}_seed{d.phantom_seed}"

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


def check_epsilon_iterations(value) -> int:
    """The style-search rounds per batch (RAIN, AdaConv + VAE): a non-negative int (Table 3 uses 1, 3, 5)."""
    return check_int("epsilon_iterations", value, hint=" (1, 3, 5 in Table 3)")


def _dir_param(name, value, *, must_exist):
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        fail(name, value, "is empty: give a folder, or None" + (" for the built-in phantom" if must_exist else ""))
    if not isinstance(value, (str, os.PathLike)):
        fail(name, value, "must be a folder path or None")
    path = Path(value).expanduser().resolve()
    if must_exist and not path.is_dir():
        fail(name, str(value), "no such folder")
    return path


def _writable_dir(name, path: Path) -> Path:
    """Fail now, not after hours of training, when results cannot be written under `path`: a file is
    created and removed in the nearest existing folder (permission bits alone pass /proc for root)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        fail(name, str(path), f"{probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(name, str(path), f"folder {probe} is not writable")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".cmr_write_probe_")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        fail(name, str(path), f"folder {probe} does not take new files ({exc.strerror or type(exc).__name__})")
    return path


def _opt_folder(name, value):
    return _dir_param(name, value, must_exist=True)


def _opt_kernel(name, value):
    if value is None:
        return None
    value = as_int(name, value, minimum=1)
    if value % 2 == 0:
        fail(name, value, "must be odd (3, 5, 7, ...) or None for the profile's")
    return value


def _distinct_ints(name, value, *, minimum: int, items: str, item: str, none: str, hint: str = ""):
    """None, or a non-empty list of distinct integers >= minimum (seeds, patient numbers)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        fail(name, value, f"must be None ({none}) or a non-empty list of {items}{hint}")
    out = [as_int(name, v, minimum=minimum) for v in value]
    if len(set(out)) != len(out):
        fail(name, value, f"lists a {item} twice")
    return out


def _seed_list(name, value):
    return _distinct_ints(name, value, minimum=0, items="seeds", item="seed", none="the run's seed",
                          hint=", e.g. [0, 1, 2] (papermill: -y 'seeds: [0, 1, 2]')")


def _kernel_list(name, value):
    if value is None:
        fail(name, value, "must be a list of odd kernel sizes, e.g. [3, 7, 11]")
    out = _distinct_ints(name, value, minimum=1, items="odd kernel sizes", item="kernel size", none="")
    for k in out:
        _opt_kernel(name, k)
    return out


def _kind_list(name, value):
    kinds = ("adaconv", "adaconv-vae")
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        fail(name, value, f"must be a non-empty list of {' and '.join(kinds)}")
    out = [choice(name, v, kinds) for v in value]
    if len(set(out)) != len(out):
        fail(name, value, "lists a stylizer twice")
    return out


def _cross_data(name, value):
    if value is None or value == "auto":
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        fail(name, value, "must be 'auto', None (skip) or a list of data folders")
    for folder in value:
        _dir_param(name, folder, must_exist=True)
    return list(value)


# Every parameter of every notebook (their first code cell), with its one validator: notebooks and
# make_config check parameters here and nowhere else (tests/test_notebook_parameters.py walks the table).
PARAMETERS = {
    "profile": lambda n, v: load_profile(v)[0],
    "setting": lambda n, v: choice(n, as_int(n, v), SETTINGS),
    "stylizer": lambda n, v: choice(n, v, STYLIZERS),
    "seed": lambda n, v: as_int(n, v, minimum=0),
    "data_dir": _opt_folder,
    "t2_dir": _opt_folder,
    "real_data_dir": _opt_folder,
    "c0_spacing": lambda n, v: choice(n, v, ("header", "lge")),
    "output_root": lambda n, v: None if v is None else _writable_dir(n, _dir_param(n, v, must_exist=False)),
    "epsilon_iterations": lambda n, v: check_epsilon_iterations(v),
    "include_original": check_bool,
    "kernel_size": _opt_kernel,
    "seeds": _seed_list,
    "allow_mixed": check_bool,
    "cross_data": _cross_data,
    "kernels": _kernel_list,
    "kinds": _kind_list,
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
    out = _distinct_ints(name, value, minimum=1, items="patient numbers", item="patient", none="the data source's default")
    return None if out is None else sorted(out)


def _stylizer_for_setting(stylizer: str, setting: int) -> str:
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
    stylizer = _stylizer_for_setting(check_parameter("stylizer", stylizer), setting)
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
