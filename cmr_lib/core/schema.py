"""Profiles and Table 1 as validated data: the key tree every profile must have, a validator per leaf.

Profiles (`params/{smoke,demo,paper,real,real-ref}.yaml`, or a path to a YAML file with the same keys) set sizes and
iteration counts only. `params/settings.yaml` is the paper's Table 1 as data. A wrong value is a
one-line CmrError naming the parameter and what is allowed.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import check_file, repo_root

PROFILES = ("smoke", "demo", "real", "real-ref", "paper")
STYLIZERS = ("rain", "adaconv", "adaconv-vae", "none", "histmatch", "intensity", "gin", "slaug", "rain+intensity",
             "adaconv+intensity", "rain+slaug")
NETWORKS = ("rain", "adaconv", "adaconv-vae")   # the trained stylizers; the other values are baselines (training.augment)
SEARCHING = ("rain", "adaconv-vae")             # those with a style VAE, whose latent the epsilon search moves
CROP_OF = {"adaconv-vae": "adaconv"}            # a network whose input size is another's profile key
APPEARANCE_BASELINES = ("histmatch", "intensity", "gin", "slaug")
STYLE_FREE = ("intensity", "gin", "slaug")    # the baselines that need no style image (setting 0, or after a stylizer)
REMAPS = ("intensity", "gin")                 # of those, the ones that remap each image alone (training.augment)
SETTINGS = (0, 1, 2, 3)
# how a DRU-Net's checkpoint is chosen: on held-out labelled bSSFP (no target label seen), the last one, or on the
# LGE validation patients' labels (the paper's protocol: those patients are then no clean test)
SELECT_RULES = ("source", "last", "target")
SEQUENCES = ("C0", "LGE", "T2")


# ---------------------------------------------------------------------------------------------
# small validators: each returns the cleaned value or raises CmrError naming `name`

def fail(name, value, why):
    raise CmrError(f"parameter '{name}' = {value!r}: {why}")


def as_int(name, value, *, minimum=None):
    if isinstance(value, bool):
        fail(name, value, "must be an integer")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        fail(name, value, "must be an integer")
    if minimum is not None and value < minimum:
        fail(name, value, f"must be >= {minimum}")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def as_float(name, value, *, minimum=None, maximum=None, strict_min=False):
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)         # YAML 1.1 reads `lr: 1e-3` (no dot) as a string, not a number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(name, value, "must be a number")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        fail(name, value, "must be finite")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        fail(name, value, f"must be {'>' if strict_min else '>='} {minimum}")
    if maximum is not None and value > maximum:
        fail(name, value, f"must be <= {maximum}")
    return value


def choice(name, value, allowed):
    if value not in allowed:
        fail(name, value, "choose one of " + ", ".join(repr(a) for a in allowed))
    return value


def _pos_int(name, v):
    return as_int(name, v, minimum=1)


def _opt_pos_int(name, v):
    return None if v is None else as_int(name, v, minimum=1)


def _opt_pos_float(name, v):
    return None if v is None else as_float(name, v, minimum=0.0, strict_min=True)


def _flag(name, v):
    return v if isinstance(v, bool) else fail(name, v, "must be true or false")


def _nonneg_float(name, v):
    return as_float(name, v, minimum=0.0)


def _probability(name, v):
    return as_float(name, v, minimum=0.0, maximum=1.0)


def _fraction(name, v):
    return as_float(name, v, minimum=0.0, maximum=0.5)


def _percentiles(name, v):
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        fail(name, v, "must be a pair [low, high]")
    lo, hi = (as_float(name, x, minimum=0.0, maximum=100.0) for x in v)
    if lo >= hi:
        fail(name, v, "low must be below high")
    return [lo, hi]


def _scale_range(name, v):
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        fail(name, v, "must be a pair [min, max]")
    lo, hi = (as_float(name, x, minimum=0.0, strict_min=True) for x in v)
    if lo > hi:
        fail(name, v, "min must not exceed max")
    return [lo, hi]


def _safe_name(name, v):
    """A profile name becomes part of folder and run names: letters, digits, '_' and '-' only (no '..', '/')."""


    if not (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", v)):
        fail(name, v, "must be a plain name (letters, digits, '_', '-'); it names result folders")
    return v


def _encoder_weights(name, v):
    if isinstance(v, str) and (v in ("auto", "imagenet", "random", "mr") or v.endswith((".pth", ".pt"))):
        return v
    fail(name, v, "choose 'auto', 'imagenet', 'random', 'mr' or a path to a .pth file")


def _odd_kernel(name, v):
    v = as_int(name, v, minimum=1)
    if v % 2 == 0:
        fail(name, v, "must be odd (3, 5, 7, ...)")
    return v


def _odd_kernels(name, v):
    if not (isinstance(v, (list, tuple)) and v):
        fail(name, v, "must be a non-empty list of odd kernel sizes")
    return [_odd_kernel(name, k) for k in v]


# The key tree every profile must have, with a validator per leaf.
PROFILE_SCHEMA = {
    "profile": lambda n, v: _safe_name(n, v),
    "data": {
        "phantom_patients": _pos_int,
        "phantom_seed": lambda n, v: as_int(n, v, minimum=0),
        "calibration_patients": _opt_pos_int,
    },
    "preprocess": {
        "spacing_mm": _opt_pos_float,
        "percentiles": _percentiles,
        "normalise_fov_mm": _opt_pos_float,
        "test_crop": lambda n, v: choice(n, v, ("image", "heart")),
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
        "offline_fallback": lambda n, v: choice(n, v, ("random", "mr")),
        "encoder_width": lambda n, v: as_float(n, v, minimum=0.0, maximum=1.0, strict_min=True),
        "batch": _pos_int,
        "iterations": _pos_int,
        "checkpoint_every": _pos_int,
        "lr": lambda n, v: as_float(n, v, minimum=0.0, strict_min=True),
        "precision": lambda n, v: choice(n, v, ("auto", "bf16", "fp32")),
        "warm_start": _flag,
        "rain": {"lr_decay": _nonneg_float, "content_weight": _nonneg_float, "style_weight": _nonneg_float,
                 "kl_weight": _nonneg_float, "rec_weight": _nonneg_float, "detail_weight": _nonneg_float,
                 "intensity_weight": _nonneg_float,
                 "skips": _flag, "grain": _flag},
        "adaconv": {"lr_decay": _nonneg_float, "content_weight": _nonneg_float, "style_weight": _nonneg_float,
                    "kernel_size": lambda n, v: _odd_kernel(n, v), "style_dim": _pos_int,
                    "detail_weight": _nonneg_float, "intensity_weight": _nonneg_float,
                    "skips": _flag, "grain": _flag},
        "explore": {"step": lambda n, v: as_float(n, v, minimum=0.0, strict_min=True),
                    "rule": lambda n, v: choice(n, v, ("asm", "sign", "plain"))},
        "autoencoder": {"iterations": _pos_int, "batch": _pos_int,
                        "lr": lambda n, v: as_float(n, v, minimum=0.0, strict_min=True)},
    },
    "segmenter": {
        "depth": lambda n, v: as_int(n, v, minimum=2),
        "root": _pos_int,
        "head_relu": _flag,
        "batch": _pos_int,
        "iterations": _pos_int,
        "checkpoint_every": _pos_int,
        "lr": lambda n, v: as_float(n, v, minimum=0.0, strict_min=True),
        "lr_halve_every": _pos_int,
        "val_every": _pos_int,
        "select": lambda n, v: choice(n, v, SELECT_RULES),
        "select_patients": _pos_int,
        "ce_weight": _nonneg_float,
        "dice_weight": _nonneg_float,
        "precision": lambda n, v: choice(n, v, ("auto", "bf16", "fp32")),
    },
    "baselines": {
        "intensity": {"control_points": lambda n, v: as_int(n, v, minimum=0), "gamma": _scale_range,
                      "contrast": _scale_range},
        "gin": {"layers": lambda n, v: as_int(n, v, minimum=2), "channels": _pos_int,
                "kernel_sizes": _odd_kernels},
    },
    "reproduce": {"seeds": _pos_int},
    "analysis": {"hist_bins": _pos_int, "examples": _pos_int},
}


# Keys added after run records were first written, with the value that means what those records did.
RECORD_DEFAULTS = {"preprocess.normalise_fov_mm": None, "preprocess.test_crop": "image",
                   "segmenter.select": "target", "segmenter.select_patients": 5,
                   "stylizer.rain.detail_weight": 0.0, "stylizer.rain.skips": False,
                   "stylizer.rain.intensity_weight": 0.0, "stylizer.adaconv.detail_weight": 0.0,
                   "stylizer.adaconv.intensity_weight": 0.0, "stylizer.adaconv.skips": False,
                   "stylizer.rain.grain": False, "stylizer.adaconv.grain": False}


def with_record_defaults(sizes: Mapping) -> dict:
    """A recorded profile tree with every key of RECORD_DEFAULTS it lacks filled in (older run records)."""
    out = copy.deepcopy(dict(sizes))
    for dotted, value in RECORD_DEFAULTS.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.setdefault(leaf, value)
    return out


def validate_tree(tree, schema, where, prefix=""):
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
            out[key] = validate_tree(tree[key], rule, where, name + ".")
        else:
            try:
                out[key] = rule(name, tree[key])
            except CmrError as exc:
                raise CmrError(f"{where}: {exc}") from None
    return out


def load_yaml(path) -> dict:
    """Read a YAML file; a missing or malformed file is a one-line CmrError."""
    path = check_file(path, "YAML file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CmrError(f"{path}: not valid YAML{where} ({why})") from None


def profile_path(profile, name: str = "profile", relative_to: Path | None = None) -> Path:
    """The YAML file of a profile name in PROFILES or of a path (relative to `relative_to` when given)."""
    if not isinstance(profile, (str, os.PathLike)):
        fail(name, profile, "choose one of " + ", ".join(map(repr, PROFILES)) + " or a .yaml path")
    text = str(profile)
    if text in PROFILES:
        return repo_root() / "params" / f"{text}.yaml"
    if not text.endswith((".yaml", ".yml")):
        fail(name, profile, "choose one of " + ", ".join(map(repr, PROFILES)) + " or a .yaml path")
    path = Path(text).expanduser()
    path = (relative_to / path if relative_to is not None and not path.is_absolute() else path).resolve()
    if not path.is_file():
        fail(name, profile, "no such profile file" + (" (it is a folder)" if path.is_dir() else ""))
    return path


def merged(base: Mapping, delta: Mapping) -> dict:
    """`base` with `delta` laid over it: mappings merged key by key, any other value replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in delta.items():
        out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else copy.deepcopy(value)
    return out


def profile_tree(path: Path, seen=()) -> dict:
    """A profile file's keys with those of the profile it `extends` (a name or a path beside it) beneath them."""
    raw = load_yaml(path)
    if not isinstance(raw, Mapping):
        raise CmrError(f"{path}: a profile must be a mapping of keys")
    raw = dict(raw)
    if "extends" not in raw:
        return raw
    base = profile_path(raw.pop("extends"), f"{path}: extends", path.parent)
    if base in seen or base == path:
        raise CmrError(f"{path}: extends {base.name}, which extends it back (a cycle)")
    return merged(profile_tree(base, (*seen, path)), raw)


def load_profile(profile: str) -> tuple[str, dict]:
    """Return (name, validated sizes) of a profile name in PROFILES or a path to a profile YAML file; a profile may
    say `extends: <name or path>` and give only the keys that differ."""
    path = profile_path(profile)
    tree = validate_tree(profile_tree(path), PROFILE_SCHEMA, str(path))
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
            choice(f"settings.{key}.style_sequence", spec["style_sequence"], SEQUENCES)
            choice(f"settings.{key}.style_pairing", spec["style_pairing"], ("random", "same_patient_level"))
        out[int(key)] = dict(spec)
    return out
