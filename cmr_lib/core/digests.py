"""Content digests of input files, and the record of what a step wrote or rests on.

Reuse decisions (checkpoints, run records, `make reproduce` steps) hash what a file holds, not its name or size:
an edited label reruns what used it even when the file keeps its size. Digests are cached by (path, size,
mtime, inode), in memory and in the user's cache folder (CMR_CACHE_DIR, else $XDG_CACHE_HOME/cmr-stylize, else
~/.cache/cmr-stylize), so that a second look at 180 MB costs a stat per file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

_LOCK = threading.Lock()
_MEMORY: dict[str, list] = {}          # path -> [size, mtime_ns, inode, sha256]
_LOADED: set[str] = set()
_CHUNK = 1 << 20


def _cache_file() -> Path:
    base = os.environ.get("CMR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cmr-stylize")
    return Path(base) / "file_digests.json"


def _load_disk_cache() -> None:
    where = str(_cache_file())
    if where in _LOADED:
        return
    _LOADED.add(where)
    try:
        disk = json.loads(Path(where).read_text())
        if isinstance(disk, dict):
            for k, v in disk.items():
                if isinstance(v, list) and len(v) == 4:
                    _MEMORY.setdefault(k, v)
    except (OSError, ValueError):
        pass                                    # no cache yet, or a damaged one: digests are computed again


def _save_disk_cache() -> None:
    """Write the cache (entries of files that still exist) by temp file and rename; a place that cannot be written
    only costs the next process a hash per file."""
    keep = {k: v for k, v in _MEMORY.items() if os.path.exists(k)}
    where = _cache_file()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{where.name}.", suffix=".tmp", dir=where.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(keep, f, sort_keys=True)
        os.replace(tmp, where)
    except OSError:
        pass


def fingerprint(*parts, length: int = 16) -> str:
    """The one identity hash: the SHA-256 (first `length` hex digits) of the parts in order, bytes as they are and
    anything else as sorted JSON. Checkpoint folders, run inputs and make reproduce's steps are all named by it."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:length]


def file_digest(path) -> str:
    """SHA-256 of a file's bytes (hex), cached by path, size, modification time and inode."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    key = str(path)
    with _LOCK:
        _load_disk_cache()
        hit = _MEMORY.get(key)
        if hit is not None and hit[:3] == stamp:
            return hit[3]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    digest = h.hexdigest()
    with _LOCK:
        _MEMORY[key] = [*stamp, digest]
        _save_disk_cache()
    return digest


def files_digest(paths) -> dict[str, str]:
    """{file name: SHA-256} of several files (a data set's images and labels), sorted by name."""
    return {Path(p).name: file_digest(p) for p in sorted(paths, key=lambda p: Path(p).name)}


def folder_digest(folder) -> str:
    """One SHA-256 over every regular file under `folder` (relative names and contents); '' for no folder."""
    if folder is None or not Path(folder).is_dir():
        return ""
    folder = Path(folder)
    return fingerprint(*(f"{f.relative_to(folder)}\0{file_digest(f)}\n".encode() for f in sorted(folder.rglob("*"))
                         if f.is_file() and not f.name.startswith(".")), length=64)


# ---------------------------------------------------------------------------------------------
# what a `make reproduce` step wrote or rests on: the driver reruns a step when one of these vanished

STEP_FILES_ENV = "CMR_STEP_FILES"


def note_step_file(path) -> None:
    """Add a file this process wrote (or a checkpoint it reused) to its step's list, when a step is running."""
    where = os.environ.get(STEP_FILES_ENV)
    if not where:
        return
    try:
        with open(where, "a", encoding="utf-8") as f:
            f.write(f"{Path(path).resolve()}\n")
    except OSError:
        pass                                    # the list only helps notice vanished outputs later


def read_step_files(where) -> list[str]:
    """The distinct files a step noted that still exist (files it wrote and removed again are left out)."""
    try:
        lines = Path(where).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return sorted({ln for ln in lines if ln and os.path.isfile(ln)})


# ---------------------------------------------------------------------------------------------
# FORCE=1: retrain what was made before the forced run began

FORCE_ENV = "CMR_FORCE_SINCE"


def reusable(path) -> bool:
    """A finished artefact may be reused: it exists and, under FORCE (CMR_FORCE_SINCE, a Unix time), it was made
    during the forced run rather than before it (so one forced `make reproduce` retrains each network once)."""
    path = Path(path)
    if not path.is_file():
        return False
    since = os.environ.get(FORCE_ENV)
    if not since:
        return True
    try:
        return path.stat().st_mtime >= float(since)
    except ValueError:
        return True
