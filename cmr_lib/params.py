"""Profiles and parameters: notebook parameters + a profile -> one validated, immutable config.

Profiles (`params/{smoke,demo,paper}.yaml`, or a path to a YAML file with the same keys) set sizes and
iteration counts only. `params/settings.yaml` is the paper's Table 1 as data. A wrong value is a
one-line CmrError naming the parameter and what is allowed.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cmr_lib.errors import CmrError

PROFILES = ("smoke", "demo", "paper")
STYLIZERS = ("rain", "adaconv", "none", "histmatch", "intensity", "gin", "rain+intensity", "adaconv+intensity")
NETWORKS = ("rain", "adaconv")     # the trained stylizers; the other values are baselines (cmr_lib.baselines)
SETTINGS = (0, 1, 2, 3)
SEQUENCES = ("C0", "LGE", "T2")


def repo_root() -> Path:
    """The repository root (the folder holding `params/`); CMR_REPO overrides it."""
    env = os.environ.get("CMR_REPO")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Where generated data (the phantom) live: `<repo>/data`, or CMR_DATA_ROOT."""
    env = os.environ.get("CMR_DATA_ROOT")
    return Path(env).resolve() if env else repo_root() / "data"


# ---------------------------------------------------------------------------------------------
# small validators: each returns the cleaned value or raises CmrError naming `name`

def _fail(name, value, why):
    raise CmrError(f"parameter '{name}' = {value!r}: {why}")


def _int(name, value, *, minimum=None):
    if isinstance(value, bool):
        _fail(name, value, "must be an integer")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        _fail(name, value, "must be an integer")
    if minimum is not None and value < minimum:
        _fail(name, value, f"must be >= {minimum}")
    return value


def _float(name, value, *, minimum=None, maximum=None, strict_min=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(name, value, "must be a number")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        _fail(name, value, "must be finite")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        _fail(name, value, f"must be {'>' if strict_min else '>='} {minimum}")
    if maximum is not None and value > maximum:
        _fail(name, value, f"must be <= {maximum}")
    return value


def _choice(name, value, allowed):
    if value not in allowed:
        _fail(name, value, "choose one of " + ", ".join(repr(a) for a in allowed))
    return value


def _pos_int(name, v):
    return _int(name, v, minimum=1)


def _opt_pos_int(name, v):
    return None if v is None else _int(name, v, minimum=1)


def _opt_pos_float(name, v):
    return None if v is None else _float(name, v, minimum=0.0, strict_min=True)


def _nonneg_float(name, v):
    return _float(name, v, minimum=0.0)


def _probability(name, v):
    return _float(name, v, minimum=0.0, maximum=1.0)


def _fraction(name, v):
    return _float(name, v, minimum=0.0, maximum=0.5)


def _percentiles(name, v):
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        _fail(name, v, "must be a pair [low, high]")
    lo, hi = (_float(name, x, minimum=0.0, maximum=100.0) for x in v)
    if lo >= hi:
        _fail(name, v, "low must be below high")
    return [lo, hi]


def _scale_range(name, v):
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        _fail(name, v, "must be a pair [min, max]")
    lo, hi = (_float(name, x, minimum=0.0, strict_min=True) for x in v)
    if lo > hi:
        _fail(name, v, "min must not exceed max")
    return [lo, hi]


def _safe_name(name, v):
    """A profile name becomes part of folder and run names: letters, digits, '_' and '-' only (no '..', '/')."""
    import re

    if not (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", v)):
        _fail(name, v, "must be a plain name (letters, digits, '_', '-'); it names result folders")
    return v


def _encoder_weights(name, v):
    if isinstance(v, str) and (v in ("auto", "imagenet", "random", "mr") or v.endswith((".pth", ".pt"))):
        return v
    _fail(name, v, "choose 'auto', 'imagenet', 'random', 'mr' or a path to a .pth file")


def _odd_kernel(name, v):
    v = _int(name, v, minimum=1)
    if v % 2 == 0:
        _fail(name, v, "must be odd (3, 5, 7, ...)")
    return v


def _odd_kernels(name, v):
    if not (isinstance(v, (list, tuple)) and v):
        _fail(name, v, "must be a non-empty list of odd kernel sizes")
    return [_odd_kernel(name, k) for k in v]


# The key tree every profile must have, with a validator per leaf.
PROFILE_SCHEMA = {
    "profile": lambda n, v: _safe_name(n, v),
    "data": {
        "phantom_patients": _pos_int,
        "phantom_seed": lambda n, v: _int(n, v, minimum=0),
        "calibration_patients": _opt_pos_int,
    },
    "preprocess": {
        "spacing_mm": _opt_pos_float,
        "percentiles": _percentiles,
        "crop": {"rain": _pos_int, "adaconv": _pos_int, "none": _pos_int},
    },
    "augment": {
        "probability": _probability,
        "scale": _scale_range,
        "rotation_deg": _nonneg_float,
        "translation": _fraction,
        "shear_deg": _nonneg_float,
    },
    "stylizer": {
        "encoder_weights": _encoder_weights,
        "offline_fallback": lambda n, v: _choice(n, v, ("random", "mr")),
        "encoder_width": lambda n, v: _float(n, v, minimum=0.0, maximum=1.0, strict_min=True),
        "batch": _pos_int,
        "iterations": _pos_int,
        "checkpoint_every": _pos_int,
        "lr": lambda n, v: _float(n, v, minimum=0.0, strict_min=True),
        "precision": lambda n, v: _choice(n, v, ("auto", "bf16", "fp32")),
        "warm_start": lambda n, v: v if isinstance(v, bool) else _fail(n, v, "must be true or false"),
        "rain": {"lr_decay": _nonneg_float, "content_weight": _nonneg_float, "style_weight": _nonneg_float,
                 "kl_weight": _nonneg_float, "rec_weight": _nonneg_float},
        "adaconv": {"lr_decay": _nonneg_float, "content_weight": _nonneg_float, "style_weight": _nonneg_float,
                    "kernel_size": lambda n, v: _odd_kernel(n, v), "style_dim": _pos_int},
        "explore": {"step": lambda n, v: _float(n, v, minimum=0.0, strict_min=True),
                    "rule": lambda n, v: _choice(n, v, ("asm", "sign", "plain"))},
        "autoencoder": {"iterations": _pos_int, "batch": _pos_int,
                        "lr": lambda n, v: _float(n, v, minimum=0.0, strict_min=True)},
    },
    "segmenter": {
        "depth": lambda n, v: _int(n, v, minimum=2),
        "root": _pos_int,
        "head_relu": lambda n, v: v if isinstance(v, bool) else _fail(n, v, "must be true or false"),
        "batch": _pos_int,
        "iterations": _pos_int,
        "checkpoint_every": _pos_int,
        "lr": lambda n, v: _float(n, v, minimum=0.0, strict_min=True),
        "lr_halve_every": _pos_int,
        "val_every": _pos_int,
        "ce_weight": _nonneg_float,
        "dice_weight": _nonneg_float,
        "precision": lambda n, v: _choice(n, v, ("auto", "bf16", "fp32")),
    },
    "baselines": {
        "intensity": {"control_points": lambda n, v: _int(n, v, minimum=0), "gamma": _scale_range,
                      "contrast": _scale_range},
        "gin": {"layers": lambda n, v: _int(n, v, minimum=2), "channels": _pos_int,
                "kernel_sizes": _odd_kernels},
    },
    "reproduce": {"seeds": _pos_int},
    "analysis": {"hist_bins": _pos_int, "examples": _pos_int},
}


def _validate_tree(tree, schema, where, prefix=""):
    if not isinstance(tree, Mapping):
        raise CmrError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    missing = [k for k in schema if k not in tree]
    unknown = [k for k in tree if k not in schema]
    if missing:
        raise CmrError(f"{where}: missing key '{prefix}{missing[0]}'")
    if unknown:
        raise CmrError(f"{where}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(schema)})")
    out = {}
    for key, rule in schema.items():
        name = prefix + key
        if isinstance(rule, dict):
            out[key] = _validate_tree(tree[key], rule, where, name + ".")
        else:
            try:
                out[key] = rule(name, tree[key])
            except CmrError as exc:
                raise CmrError(f"{where}: {exc}") from None
    return out


def load_yaml(path) -> dict:
    """Read a YAML file; a missing or malformed file is a one-line CmrError."""
    path = Path(path)
    if not path.is_file():
        raise CmrError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CmrError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_profile(profile: str) -> tuple[str, dict]:
    """Return (name, validated sizes) of a profile name in PROFILES or a path to a profile YAML file."""
    if not isinstance(profile, (str, os.PathLike)):
        _fail("profile", profile, "choose one of " + ", ".join(map(repr, PROFILES)) + " or a .yaml path")
    text = str(profile)
    if text in PROFILES:
        path = repo_root() / "params" / f"{text}.yaml"
    elif text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser().resolve()
    else:
        _fail("profile", profile, "choose one of " + ", ".join(map(repr, PROFILES)) + " or a .yaml path")
    tree = _validate_tree(load_yaml(path), PROFILE_SCHEMA, str(path))
    return tree["profile"], tree


def load_settings() -> dict[int, dict]:
    """Table 1 of the paper (`params/settings.yaml`), validated: setting -> its description."""
    path = repo_root() / "params" / "settings.yaml"
    raw = load_yaml(path)
    if not isinstance(raw, Mapping) or sorted(raw) != list(SETTINGS):
        raise CmrError(f"{path}: must define exactly the settings {list(SETTINGS)}")
    out = {}
    for key, spec in raw.items():
        for need in ("name", "stylize", "pretrain", "style_sequence", "style_pairing"):
            if need not in spec:
                raise CmrError(f"{path}: setting {key} lacks '{need}'")
        if spec["stylize"]:
            pre = spec["pretrain"] or {}
            if pre.get("content") not in SEQUENCES or pre.get("style") not in SEQUENCES:
                raise CmrError(f"{path}: setting {key} pretrain must name content and style sequences")
            _choice(f"settings.{key}.style_sequence", spec["style_sequence"], SEQUENCES)
            _choice(f"settings.{key}.style_pairing", spec["style_pairing"], ("random", "same_patient_level"))
        out[int(key)] = dict(spec)
    return out


class Section(Mapping):
    """A read-only nested mapping with attribute access: cfg.preprocess.crop.rain."""

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
    c0_spacing: str                # 'header', or 'lge' for the cropped MS-CMRSeg copy (see data.detect_layout)
    output_root: Path
    sizes: Section
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
        """The trained stylizer this run uses ('rain' or 'adaconv'; also for 'rain+intensity'), or None."""
        kind = self.stylizer.split("+")[0]
        return kind if kind in NETWORKS else None

    @property
    def baseline(self) -> str | None:
        """The appearance augmentation this run applies: 'histmatch', 'intensity', 'gin' (alone or after a
        stylizer: 'rain+intensity'), or None."""
        kind = self.stylizer.split("+")[-1]
        return kind if kind in ("histmatch", "intensity", "gin") else None

    @property
    def crop(self) -> int:
        """Centre-crop size of this run's stylizer network (baselines and setting 0 use the 'none' size)."""
        return self.sizes.preprocess.crop[self.network or "none"]

    def to_dict(self) -> dict:
        """Plain data for run records; paths inside the repository are written relative to it."""
        return {
            "profile": self.profile, "setting": self.setting, "stylizer": self.stylizer, "seed": self.seed,
            "data_dir": display_path(self.data_dir), "c0_spacing": self.c0_spacing,
            "output_root": display_path(self.output_root),
            "sizes": self.sizes.to_dict(), "setting_spec": self.setting_spec.to_dict(),
            "split": self.split.to_dict(), "extra": self.extra.to_dict(),
        }

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
        ])


def display_path(path) -> str | None:
    """A path for records: relative to the repository when inside it ('.' for the root), else absolute."""
    if path is None:
        return None
    path = Path(path)
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def _dir_param(name, value, *, must_exist):
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        _fail(name, value, "must be a folder path or None")
    path = Path(value).expanduser().resolve()
    if must_exist and not path.is_dir():
        _fail(name, str(value), "no such folder")
    return path


def _writable_dir(name, path: Path) -> Path:
    """Fail now, not after hours of training, when results cannot be written under `path`."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        _fail(name, str(path), f"{probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        _fail(name, str(path), f"folder {probe} is not writable")
    return path


def apply_overrides(tree: dict, overrides, where: str) -> dict:
    """Set dotted keys of a profile tree (e.g. {'stylizer.adaconv.kernel_size': 5}); unknown keys are errors."""
    if overrides is None:
        return tree
    if not isinstance(overrides, Mapping):
        _fail("overrides", overrides, "must be a mapping of dotted profile keys to values")
    import copy

    tree = copy.deepcopy(tree)
    for key, value in overrides.items():
        node, parts = tree, str(key).split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                _fail("overrides", key, f"no such profile key (in {where})")
            node = node[part]
        if parts[-1] not in node or isinstance(node[parts[-1]], dict):
            _fail("overrides", key, f"no such profile value (in {where})")
        node[parts[-1]] = value
    return _validate_tree(tree, PROFILE_SCHEMA, f"{where} + overrides")


def _patients(name, value):
    """None (the data source's default) or a non-empty list of distinct patient numbers."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        _fail(name, value, "must be None (the data source's default) or a non-empty list of patient numbers")
    out = [_int(name, v, minimum=1) for v in value]
    if len(set(out)) != len(out):
        _fail(name, value, "lists a patient twice")
    return sorted(out)


def _stylizer_for_setting(stylizer: str, setting: int) -> str:
    """Which stylizer values a setting takes. Setting 0 trains on bSSFP alone ('rain'/'adaconv' are ignored
    there, so the notebook's defaults run as-is) or with a style-free augmentation ('intensity', 'gin');
    histmatch takes LGE slices as settings 2 (random) and 3 (same patient) do; the networks need 1-3."""
    if setting == 0:
        if stylizer in ("rain", "adaconv", "none"):
            return "none"
        if stylizer in ("intensity", "gin"):
            return stylizer
        _fail("stylizer", stylizer, "setting 0 takes 'none', 'intensity' or 'gin' "
              + ("(histmatch uses LGE styles: setting 2 or 3)" if stylizer == "histmatch"
                 else "(a stylizer needs setting 1, 2 or 3)"))
    if stylizer in ("none", "intensity", "gin"):
        _fail("stylizer", stylizer, f"setting {setting} stylizes: choose one of "
              + ", ".join(s for s in STYLIZERS if s not in ("none", "intensity", "gin"))
              + ("" if stylizer == "none" else f" ({stylizer} uses no style image: run it as setting 0)"))
    if stylizer == "histmatch" and setting == 1:
        _fail("stylizer", stylizer, "histmatch has no pre-training, so setting 1 would repeat setting 2: "
              "use setting 2 (random LGE) or 3 (same patient's LGE)")
    return stylizer


def make_config(*, profile="demo", setting=0, stylizer="rain", seed=0, data_dir=None, c0_spacing="header",
                output_root=None, overrides=None, train_patients=None, val_patients=None, test_patients=None,
                **extra) -> Config:
    """Validate notebook parameters against a profile and return one immutable Config.

    `data_dir=None` selects the built-in phantom; `c0_spacing='lge'` fixes the cropped MS-CMRSeg copy's
    C0 voxel size; `train/val/test_patients=None` keep the data source's default split (data.split_for); `output_root=None` writes figures/ and results/ in the repository; `overrides` sets
    dotted profile keys. `extra` holds notebook-specific parameters (plain literals), kept for records.
    """
    name, sizes = load_profile(profile)
    sizes = apply_overrides(sizes, overrides, name)
    setting = _choice("setting", _int("setting", setting), SETTINGS)
    stylizer = _choice("stylizer", stylizer, STYLIZERS)
    stylizer = _stylizer_for_setting(stylizer, setting)
    seed = _int("seed", seed, minimum=0)
    data = _dir_param("data_dir", data_dir, must_exist=True)
    c0_spacing = _choice("c0_spacing", c0_spacing, ("header", "lge"))
    out = _dir_param("output_root", output_root, must_exist=False)
    out = _writable_dir("output_root", out) if out is not None else repo_root()
    for key, value in extra.items():
        if not (value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))):
            _fail(key, value, "must be a plain literal (str, number, bool, list, dict or None)")
    split = {k: v for k, v in (("train", _patients("train_patients", train_patients)),
                               ("val", _patients("val_patients", val_patients)),
                               ("test", _patients("test_patients", test_patients))) if v is not None}
    return Config(profile=name, setting=setting, stylizer=stylizer, seed=seed, data_dir=data,
                  c0_spacing=c0_spacing, output_root=out, sizes=Section(sizes),
                  setting_spec=Section(load_settings()[setting]), extra=Section(extra), split=Section(split))
