"""Atomic writes: every result, table, figure and checkpoint goes to a temp file, then is renamed.

A run killed mid-write leaves the previous file intact (os.replace is atomic on POSIX and Windows).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cmr_lib.core.digests import note_step_file
from cmr_lib.core.errors import CmrError

TMP_MARK = ".tmp"              # every temporary file is named .<name>.<random>.tmp[.ext]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _full_suffix(path: Path) -> str:
    """'.nii.gz' for a.nii.gz, '.png' for a.png: writers such as nibabel choose the format from it."""
    suffixes = path.suffixes
    return "".join(suffixes[-2:]) if suffixes[-2:] == [".nii", ".gz"] else path.suffix


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error remove it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + _full_suffix(path), dir=path.parent)
    except OSError as exc:
        raise CmrError(f"{path.parent}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)           # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if not _disk_full(exc):
            raise
        raise CmrError(f"{path}: could not be written: no space left on the device (the earlier file, if any, "
                       f"is kept); free some space and run again") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    note_step_file(path)


def _disk_full(exc: BaseException) -> bool:
    """Whether a write failed for want of space: ENOSPC/EDQUOT, or torch's C++ writer saying so in words."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return "No space left on device" in text or ("enforce fail at inline_container" in text and "write" in text)


def remove_stale_temporaries(folder, *, older_than_s: float = 600.0) -> int:
    """Delete the temporary files that killed writers left under `folder` (named by atomic_path, or the notebook
    runner's .<name>.<random>.tmp.ipynb/.log) and that nobody has touched for `older_than_s`; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now, gone = time.time(), 0
    for f in folder.rglob(".*"):
        if TMP_MARK in f.name and f.is_file() and now - f.stat().st_mtime > older_than_s:
            try:
                f.unlink()
                gone += 1
            except OSError:
                pass
    return gone


def read_json(path, what: str = "record"):
    """A JSON file's content; a missing, truncated or damaged file is a one-line error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CmrError(f"{path}: {what} not found") from None
    except (ValueError, UnicodeDecodeError):
        raise CmrError(f"{path}: {what} is not valid JSON (truncated or damaged); delete it to make it again") from None


def write_text(path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, obj) -> Path:
    """Write `obj` as indented, strict JSON atomically: NaN and infinities become null, numpy values plain."""
    return write_text(path, json.dumps(json_plain(obj), indent=2, allow_nan=False) + "\n")


def json_plain(obj):
    """`obj` as strict JSON holds it: NaN and infinities None, numpy values and paths plain, tuples lists."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_figure(fig, path, **kwargs) -> Path:
    """Save a matplotlib figure atomically (PNG by default, 150 dpi)."""
    kwargs.setdefault("dpi", 150)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)
