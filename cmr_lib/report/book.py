"""The course as a static site (`make book`): the executed notebooks of the last `make reproduce` of a profile,
rendered to HTML under build/book/ with an index page (the notebook map), so a student reads every figure and
table without running anything.

    python -m cmr_lib.report.book                         # the demo run: results/notebooks/demo/
    python -m cmr_lib.report.book --data mscmrseg2019     # profile real on the real sample: real/mscmrseg2019/...
    python -m cmr_lib.report.book --from DIR --out build/book

Each page carries a small script that, once the page has loaded, writes how many of its images loaded into
`<body data-images>` ("loaded/total"), which the test reads from a headless browser.
"""
from __future__ import annotations

import argparse
import ast
import html
import json
import re
import sys
from pathlib import Path

from cmr_lib.core.atomic import write_text
from cmr_lib.core.config import stylizer_for_setting
from cmr_lib.core.errors import CmrError, cli_main
from cmr_lib.core.grid import STYLIZER_NAMES, label, uses_epsilon
from cmr_lib.core.paths import default_output_root, display_path, repo_root

IMAGES_CHECK = ("<script>window.addEventListener('load', function () {var i = document.images, n = 0;"
                "for (var k = 0; k < i.length; k++) { if (i[k].complete && i[k].naturalWidth > 0) n++; }"
                "document.body.dataset.images = n + '/' + i.length;});</script>")


def executed_folder(profile: str | None = None, data: str | None = None) -> Path:
    """Where `make reproduce` left a profile's executed notebooks: <output root>/results/notebooks/<profile>/."""
    profile = profile or ("real" if data else "demo")
    return default_output_root(profile, data) / "results" / "notebooks" / profile


def _title(nb: dict, fallback: str) -> str:
    """A notebook's first markdown heading (its title), else the file name."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            found = re.search(r"^#+\s+(.+)$", "".join(cell.get("source", "")), re.M)
            if found:
                return found.group(1).strip()
    return fallback


def _injected(nb: dict) -> dict:
    """The parameters papermill injected into an executed notebook (its 'injected-parameters' cell): simple
    `name = literal` lines only, read without running anything."""
    out = {}
    for cell in nb.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            for line in "".join(cell.get("source", "")).splitlines():
                name, eq, value = line.partition("=")
                if eq and name.strip().isidentifier():
                    try:
                        out[name.strip()] = ast.literal_eval(value.strip())
                    except (ValueError, SyntaxError):
                        pass
    return out


def _row_label(nb: dict) -> str:
    """Which Table 2/3 row (and seed) an executed notebook 05 ran, from its injected parameters; '' otherwise."""
    p = _injected(nb)
    if "setting" not in p or p.get("stylizer") not in STYLIZER_NAMES:
        return ""
    try:
        stylizer = stylizer_for_setting(p["stylizer"], int(p["setting"]))      # the run's own rule (setting 0: none)
    except CmrError:
        return ""
    eps = int(p.get("epsilon_iterations", 5)) if uses_epsilon(stylizer) else 0
    return label((int(p["setting"]), stylizer, eps)) + (f", seed {p['seed']}" if p.get("seed") else "")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CmrError(f"{path}: not a readable notebook ({type(exc).__name__})") from None


def build_book(src, out) -> list[Path]:
    """Render every executed notebook in `src` (numbered ones first, then the rest, by name) to out/<name>.html with
    a link back to the index, and out/index.html listing them. Returns the pages written, index first."""
    from nbconvert import HTMLExporter
    src, out = Path(src), Path(out)
    notebooks = sorted((p for p in src.glob("*.ipynb") if not p.name.startswith(".")),     # not one being written
                       key=lambda p: (not p.name[:2].isdigit(), p.name))
    if not notebooks:
        raise CmrError(f"{src}: no executed notebook to render (run make reproduce for this profile first)")
    exporter = HTMLExporter(template_name="lab")
    nav = "<p><a href='index.html'>&larr; the course</a></p>"
    pages, entries = [], []
    for path in notebooks:
        nb = _read(path)
        if not any(c.get("outputs") for c in nb.get("cells", []) if c.get("cell_type") == "code"):
            raise CmrError(f"{path}: has no outputs: not an executed notebook")
        body, _ = exporter.from_filename(str(path))
        page = out / f"{path.stem}.html"
        body = body.replace("<body", "<body data-images='pending'", 1)
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
        write_text(page, body.replace("</body>", IMAGES_CHECK + "</body>", 1))
        pages.append(page)
        row = _row_label(nb)
        title = _title(nb, path.stem).split(":")[0] + f": {row}" if row else _title(nb, path.stem)
        entries.append(f"<li><a href='{html.escape(page.name)}'>{html.escape(title)}</a> "
                       f"<small>({html.escape(path.name)})</small></li>")
    index = out / "index.html"
    write_text(index, "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cmr-stylize: the course</title>"
                      "</head><body data-images='pending'><h1>cmr-stylize: the course, as last run</h1>"
                      f"<p>Executed notebooks from <code>{html.escape(display_path(src))}</code>; each page shows the figures "
                      "and tables of that run. Run them yourself with <code>make lab</code>.</p>"
                      f"<ol>{''.join(entries)}</ol>{IMAGES_CHECK}</body></html>")
    return [index, *pages]


@cli_main
def main(argv=None) -> int:
    """python -m cmr_lib.report.book [--profile P] [--data NAME] [--from DIR] [--out build/book]"""
    ap = argparse.ArgumentParser(prog="python -m cmr_lib.report.book", description=__doc__.split("\n\n")[0],
                                 epilog="example: make book   (or: make book DATA=mscmrseg2019)")
    ap.add_argument("--profile", default=None, help="default: 'real' with --data, else 'demo'")
    ap.add_argument("--data", default=None, help="the data folder's name (as make reproduce DATA=...)")
    ap.add_argument("--from", dest="src", default=None, help="a folder of executed notebooks (overrides the above)")
    ap.add_argument("--out", default=str(repo_root() / "build" / "book"))
    args = ap.parse_args(argv)
    src = Path(args.src) if args.src else executed_folder(args.profile, args.data)
    pages = build_book(src, args.out)
    print(f"{len(pages) - 1} notebook page(s) and the index in {args.out}: open {pages[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
