"""Profiles and Table 1 as validated data: the key tree every profile has, a validator per leaf (from core.sections).

Profiles (`params/{smoke,demo,paper,real,real-ref}.yaml`, or a path to a YAML file of one's own) set sizes and
iteration counts only, as deltas of the typed defaults. `params/settings.yaml` is the paper's Table 1 as data. A wrong value is a
one-line CmrError naming the parameter and what is allowed.
"""
from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from cmr_lib.core import sections
from cmr_lib.core.checks import choice, fail
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import check_file, repo_root

PROFILES = ("smoke", "demo", "demo-long", "real", "real-ref", "paper")
STYLIZERS = ("rain", "adaconv", "adaconv-vae", "none", "histmatch", "intensity", "gin", "slaug", "rain+intensity",
             "adaconv+intensity", "rain+slaug")
NETWORKS = ("rain", "adaconv", "adaconv-vae")   # the trained stylizers; the other values are baselines (training.augment)
SEARCHING = ("rain", "adaconv-vae")             # those with a style VAE, whose latent the epsilon search moves
CROP_OF = {"adaconv-vae": "adaconv"}            # a network whose input size is another's profile key
APPEARANCE_BASELINES = ("histmatch", "intensity", "gin", "slaug")
STYLE_FREE = ("intensity", "gin", "slaug")    # the baselines that need no style image (setting 0, or after a stylizer)
REMAPS = ("intensity", "gin")                 # of those, the ones that remap each image alone (training.augment)
SETTINGS = (0, 1, 2, 3)
SEQUENCES = ("C0", "LGE", "T2")


# The key tree every profile has, with a validator per leaf, and the values older run records lacked: both derived
# from the typed sections (core.sections), where each parameter is defined once.
PROFILE_SCHEMA = sections.schema_of()
RECORD_DEFAULTS = sections.record_defaults()


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
    """Return (name, validated sizes) of a profile name in PROFILES or a path to a profile YAML file. A profile gives
    only what differs from the typed defaults (core.sections, the demo profile) or from the profile it
    `extends: <name or path>`."""
    path = profile_path(profile)
    own = load_yaml(path)
    if isinstance(own, Mapping) and "profile" not in own:
        raise CmrError(f"{path}: missing key 'profile' (each profile names itself: the name names its result folders)")
    tree = validate_tree(merged(sections.defaults(), profile_tree(path)), PROFILE_SCHEMA, str(path))
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


def main(argv=None) -> int:
    """Print docs/parameters.md: every profile key with its default, unit, meaning and each profile's value."""
    sys.stdout.write(sections.reference({p: load_profile(p)[1] for p in PROFILES}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
