"""Validators of one parameter each: the cleaned value, or a one-line CmrError naming the parameter and what is
allowed. The profile's fields (core.sections) and the notebook parameters (core.config) are checked with these."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from cmr_lib.core.errors import CmrError, check_int


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


def pos_int(name, v):
    return as_int(name, v, minimum=1)


def opt_pos_int(name, v):
    return None if v is None else as_int(name, v, minimum=1)


def opt_pos_float(name, v):
    return None if v is None else as_float(name, v, minimum=0.0, strict_min=True)


def flag(name, v):
    return v if isinstance(v, bool) else fail(name, v, "must be true or false")


def nonneg_float(name, v):
    return as_float(name, v, minimum=0.0)


def probability(name, v):
    return as_float(name, v, minimum=0.0, maximum=1.0)


def fraction(name, v):
    return as_float(name, v, minimum=0.0, maximum=0.5)


def percentiles(name, v):
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        fail(name, v, "must be a pair [low, high]")
    lo, hi = (as_float(name, x, minimum=0.0, maximum=100.0) for x in v)
    if lo >= hi:
        fail(name, v, "low must be below high")
    return [lo, hi]


def scale_range(name, v):
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        fail(name, v, "must be a pair [min, max]")
    lo, hi = (as_float(name, x, minimum=0.0, strict_min=True) for x in v)
    if lo > hi:
        fail(name, v, "min must not exceed max")
    return [lo, hi]


def safe_name(name, v):
    """A profile name becomes part of folder and run names: letters, digits, '_' and '-' only (no '..', '/')."""
    if not (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", v)):
        fail(name, v, "must be a plain name (letters, digits, '_', '-'); it names result folders")
    return v


def encoder_weights(name, v):
    if isinstance(v, str) and (v in ("auto", "imagenet", "random", "mr") or v.endswith((".pth", ".pt"))):
        return v
    fail(name, v, "choose 'auto', 'imagenet', 'random', 'mr' or a path to a .pth file")


def odd_kernel(name, v):
    v = as_int(name, v, minimum=1)
    if v % 2 == 0:
        fail(name, v, "must be odd (3, 5, 7, ...)")
    return v


def odd_kernels(name, v):
    if not (isinstance(v, (list, tuple)) and v):
        fail(name, v, "must be a non-empty list of odd kernel sizes")
    return [odd_kernel(name, k) for k in v]


def check_epsilon_iterations(value) -> int:
    """The style-search rounds per batch (RAIN, AdaConv + VAE): a non-negative int (Table 3 uses 1, 3, 5)."""
    return check_int("epsilon_iterations", value, hint=" (1, 3, 5 in Table 3)")


def dir_param(name, value, *, must_exist):
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


def writable_dir(name, path: Path) -> Path:
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


def opt_folder(name, value):
    return dir_param(name, value, must_exist=True)


def opt_kernel(name, value):
    if value is None:
        return None
    value = as_int(name, value, minimum=1)
    if value % 2 == 0:
        fail(name, value, "must be odd (3, 5, 7, ...) or None for the profile's")
    return value


def distinct_ints(name, value, *, minimum: int, items: str, item: str, none: str, hint: str = ""):
    """None, or a non-empty list of distinct integers >= minimum (seeds, patient numbers)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        fail(name, value, f"must be None ({none}) or a non-empty list of {items}{hint}")
    out = [as_int(name, v, minimum=minimum) for v in value]
    if len(set(out)) != len(out):
        fail(name, value, f"lists a {item} twice")
    return out


def seed_list(name, value):
    return distinct_ints(name, value, minimum=0, items="seeds", item="seed", none="the run's seed",
                          hint=", e.g. [0, 1, 2] (papermill: -y 'seeds: [0, 1, 2]')")


def kernel_list(name, value):
    if value is None:
        fail(name, value, "must be a list of odd kernel sizes, e.g. [3, 7, 11]")
    out = distinct_ints(name, value, minimum=1, items="odd kernel sizes", item="kernel size", none="")
    for k in out:
        opt_kernel(name, k)
    return out


def kind_list(name, value):
    kinds = ("adaconv", "adaconv-vae")
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        fail(name, value, f"must be a non-empty list of {' and '.join(kinds)}")
    out = [choice(name, v, kinds) for v in value]
    if len(set(out)) != len(out):
        fail(name, value, "lists a stylizer twice")
    return out


def cross_data(name, value):
    if value is None or value == "auto":
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        fail(name, value, "must be 'auto', None (skip) or a list of data folders")
    for folder in value:
        dir_param(name, folder, must_exist=True)
    return list(value)
