"""Validators of one parameter each: the cleaned value, or a one-line CmrError naming the parameter and what is
allowed. The profile's fields (core.sections) and the notebook parameters (core.config) are checked with these."""
from __future__ import annotations

import re

from cmr_lib.core.errors import CmrError


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
