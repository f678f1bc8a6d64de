"""Fetch the real sample sets from the public copies they were made from, checking every file's SHA-256.

    python -m cmr_lib.data.download DEST [--mirror DIR] [--only mscmrseg2019|myops2020]

`params/real_data.tsv` lists each file: where it goes under DEST, the GitHub repository and path it comes
from, its SHA-256 and the commit it is fetched at (blank: the default branch, where no commit is known). Online,
files come raw from GitHub at that commit, so a later upstream commit cannot change them; `--mirror DIR`
copies them from a folder already laid out like DEST instead (e.g. ../shared/data). A file already in
DEST with the right hash is kept; a source whose hash differs is never written, and a file in DEST that is not
the manifest's (a user's own, of the same name) is never replaced without --force (one-line errors). Afterwards
the sets are checked against the manifest, as `make reproduce DATA=...` checks them each time.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from cmr_lib.core.atomic import atomic_path
from cmr_lib.core.digests import file_digest
from cmr_lib.core.errors import CmrError, cli_main
from cmr_lib.core.paths import check_file, repo_root

RAW = "https://raw.githubusercontent.com"
SETS = ("mscmrseg2019", "myops2020")


@dataclass(frozen=True)
class Entry:
    """One file of the manifest."""

    dest: str               # path under the data folder, e.g. mscmrseg2019/patient1_C0.nii.gz
    repository: str         # owner/name on GitHub
    path: str               # path in that repository
    sha256: str
    ref: str = "HEAD"       # the commit it is fetched at (HEAD: the default branch)


def load_manifest(path=None) -> list[Entry]:
    """The manifest's entries (params/real_data.tsv), checked: five columns, a 64-hex SHA-256, a 40-hex commit or
    nothing (the default branch), no duplicate."""
    path = Path(path) if path else repo_root() / "params" / "real_data.tsv"
    check_file(path, "manifest")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines or lines[0].split("\t") != ["dest", "repository", "path", "sha256", "commit"]:
        raise CmrError(f"{path}: needs the header line dest, repository, path, sha256, commit (tab-separated)")
    out = []
    for n, ln in enumerate(lines[1:], 2):
        cells = ln.split("\t")
        if (len(cells) != 5 or not _hex(cells[3], 64) or not (cells[4] == "" or _hex(cells[4], 40))):
            raise CmrError(f"{path}: line {n} is not 'dest, repository, path, sha256, commit' with a 64-hex SHA-256 "
                           f"and a 40-hex commit or none")
        entry = Entry(*cells[:4], ref=cells[4] or "HEAD")
        parts = entry.dest.split("/")
        if (entry.dest.startswith("/") or "\\" in entry.dest or any(p in ("", ".", "..") for p in parts)
                or parts[0] not in SETS or len(parts) < 2):
            raise CmrError(f"{path}: line {n}: destination {entry.dest!r} is not a plain path inside one of the sets "
                           f"({', '.join(SETS)}): it could write outside the data folder")
        out.append(entry)
    if len({e.dest for e in out}) != len(out):
        raise CmrError(f"{path}: a destination is listed twice")
    return out


def _hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def sha256_of(data: bytes) -> str:
    """SHA-256 (hex) of bytes in memory (files on disk: core.digests.file_digest)."""
    return hashlib.sha256(data).hexdigest()


def url_of(entry: Entry, base_url: str = RAW) -> str:
    """Where the file is served raw: <base>/<repository>/<commit>/<path> (HEAD where no commit is pinned)."""
    return f"{base_url.rstrip('/')}/{entry.repository}/{entry.ref}/{entry.path}"


def _fetch(source: str, *, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(source, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CmrError(f"{source}: could not be fetched ({getattr(exc, 'reason', exc)})") from None


def download(dest, *, mirror=None, base_url: str = RAW, only=SETS, manifest=None, timeout: float = 60.0,
             progress=True, force: bool = False) -> dict:
    """Lay out the files of the sets in `only` under `dest`, from `mirror` (a folder) or from `base_url`.

    Returns {'fetched': n, 'kept': n} (kept: already there with the right hash). Every file is checked
    against its SHA-256 before it is written (atomically), so a changed or corrupt source never lands; a file
    already in `dest` with another content is not this command's and is only replaced with `force`. At the end
    every set is checked against the manifest (check_set)."""
    unknown = [s for s in only if s not in SETS]
    if unknown:
        raise CmrError(f"parameter 'only' = {unknown[0]!r}: choose from {', '.join(SETS)}")
    if mirror is not None and not Path(mirror).is_dir():
        raise CmrError(f"{mirror}: mirror folder not found")
    dest = Path(dest)
    entries = [e for e in load_manifest(manifest) if e.dest.split("/")[0] in only]
    counts = {"fetched": 0, "kept": 0}
    root = dest.resolve()
    for e in entries:                                  # refuse before fetching anything
        target = dest / e.dest
        if not target.resolve().is_relative_to(root):
            raise CmrError(f"{target}: lies outside {dest} (a link?); nothing written")
        if target.exists() and not target.is_file():
            raise CmrError(f"{target}: is a folder (or not a regular file) where the manifest puts a file; "
                           f"move it away")
        if target.is_file() and not force and file_digest(target) != e.sha256:
            raise CmrError(f"{target}: exists and is not the manifest's file (SHA-256 {file_digest(target)[:12]}...), "
                           f"so this command did not write it; move it away, or pass --force to replace it")
    for e in tqdm(entries, desc="real data", unit="file", disable=not progress):
        target = dest / e.dest
        if target.is_file() and file_digest(target) == e.sha256:
            counts["kept"] += 1
            continue
        if mirror is not None:
            src = Path(mirror) / e.dest
            if not src.is_file():
                raise CmrError(f"{src}: not in the mirror")
            source, data = str(src), src.read_bytes()
        else:
            source = url_of(e, base_url)
            data = _fetch(source, timeout=timeout)
        got = sha256_of(data)
        if got != e.sha256:
            raise CmrError(f"{source}: SHA-256 {got[:12]}... is not the manifest's {e.sha256[:12]}... for {e.dest} "
                           f"(a changed or corrupt file; nothing written for it)")
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(data)
        counts["fetched"] += 1
    for name in only:
        check_set(dest / name, name, manifest=manifest)
    return counts


def check_set(folder, name: str, *, manifest=None) -> None:
    """A sample set's folder must hold every file the manifest lists for it, each with its SHA-256: a partial or
    altered copy is a one-line error with the count of missing files (your own data go through DATA_DIR)."""
    folder = Path(folder)
    entries = [e for e in load_manifest(manifest) if e.dest.split("/")[0] == name]
    missing = [e for e in entries if not (folder / e.dest.split("/", 1)[1]).is_file()]
    if missing:
        raise CmrError(f"{folder}: {len(missing)} of the {len(entries)} files of {name} are missing "
                       f"(first: {missing[0].dest.split('/', 1)[1]}); fetch them with `make real-data`")
    for e in entries:
        path = folder / e.dest.split("/", 1)[1]
        if file_digest(path) != e.sha256:
            raise CmrError(f"{path}: is not the {name} file the manifest lists (SHA-256 differs); fetch it again with "
                           f"`make real-data`, or give a changed copy as DATA_DIR")


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cmr-download", description=__doc__.split("\n\n")[0],
                                 epilog="example: cmr-download data/real   (then: make reproduce DATA_DIR=data/real/mscmrseg2019)")
    ap.add_argument("dest", help="the data folder to fill (gets mscmrseg2019/ and myops2020/)")
    ap.add_argument("--mirror", default=None, help="copy from this folder (laid out like DEST) instead of online")
    ap.add_argument("--only", action="append", choices=SETS, help="one set only (repeatable; default both)")
    ap.add_argument("--force", action="store_true", help="replace files in DEST that are not the manifest's")
    args = ap.parse_args(argv)
    counts = download(args.dest, mirror=args.mirror, only=tuple(args.only or SETS), force=args.force)
    print(f"{args.dest}: {counts['fetched']} files fetched, {counts['kept']} already there; every SHA-256 checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
