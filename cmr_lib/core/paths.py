"""Where the repository and its generated data are, and how records name paths."""
from __future__ import annotations

import os
from pathlib import Path

from cmr_lib.core.errors import CmrError


def repo_root() -> Path:
    """The repository root (the folder holding `params/`); CMR_REPO overrides it."""
    env = os.environ.get("CMR_REPO")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Where generated data (the phantom) live: `<repo>/data`, or CMR_DATA_ROOT."""
    env = os.environ.get("CMR_DATA_ROOT")
    return Path(env).resolve() if env else repo_root() / "data"


def default_output_root(profile: str, data_dir) -> Path:
    """Where a run writes results/, figures/ and checkpoints/ when no output_root is given: one folder per profile
    and data, so that no profile's run overwrites another's files. The built-in phantom: the repository itself for
    'demo' (the committed teaching run), phantom/<profile>/ for any other profile. A data folder:
    real/<its name>/ for 'real', real/<its name>/<profile>/ for any other profile."""
    root = repo_root()
    if data_dir is None:
        return root if profile == "demo" else root / "phantom" / profile
    base = root / "real" / (Path(data_dir).resolve().name or "data")
    return base if profile == "real" else base / profile


def display_path(path) -> str | None:
    """A path for records: relative to the repository when inside it ('.' for the root), else absolute."""
    if path is None:
        return None
    path = Path(path)
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def recorded_path(text) -> Path:
    """The path a record names (display_path's inverse): relative ones are inside the repository."""
    path = Path(text)
    return path if path.is_absolute() else repo_root() / path


def check_file(path, what: str = "file") -> Path:
    """`path` must be an existing regular file: a folder in its place or a missing file is a one-line error
    that says which (a folder named like a case is not 'file not found')."""
    path = Path(path)
    if path.is_dir():
        raise CmrError(f"{path}: is a folder, not a {what}")
    if not path.is_file():
        raise CmrError(f"{path}: {what} not found")
    return path
