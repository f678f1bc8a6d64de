"""make book (issue 36): executed notebooks rendered to a static site with an index, opened in a real headless
browser (Debian's chromium): every page loads and every image on it loads."""
from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import matplotlib
import nbformat
import pytest

from cmr_lib.core.errors import CmrError
from cmr_lib.report import book

matplotlib.use("Agg")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _png() -> str:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _executed(path, title, *, outputs=True):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("plot()")
    if outputs:
        code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
                        nbformat.v4.new_output("stream", name="stdout", text="Dice 0.81\n")]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nSome prose."), code]
    nbformat.write(nb, str(path))
    return path


def _dom(page) -> str:
    run = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-500:]
    return run.stdout


def test_the_book_renders_every_executed_notebook_with_an_index(tmp_path):
    src = tmp_path / "executed"
    src.mkdir()
    _executed(src / "02_rain.ipynb", "02 · RAIN")
    _executed(src / "01_data.ipynb", "01 · Data")
    _executed(src / ".03_being_written.tmp.ipynb", "not yet", outputs=False)
    pages = book.build_book(src, tmp_path / "book")
    assert [p.name for p in pages] == ["index.html", "01_data.html", "02_rain.html"]
    index = pages[0].read_text()
    assert index.index("01 · Data") < index.index("02 · RAIN") and "href='02_rain.html'" in index
    assert "Dice 0.81" in pages[2].read_text() and "index.html" in pages[2].read_text()
    _executed(src / "04_unrun.ipynb", "04", outputs=False)
    with pytest.raises(CmrError, match="04_unrun.ipynb: has no outputs"):
        book.build_book(src, tmp_path / "book2")
    with pytest.raises(CmrError, match="no executed notebook"):
        book.build_book(tmp_path / "none", tmp_path / "book3")


@pytest.mark.skipif(BROWSER is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_every_page_and_image_loads_in_a_headless_browser(tmp_path):
    src = tmp_path / "executed"
    src.mkdir()
    _executed(src / "01_data.ipynb", "01 · Data")
    _executed(src / "05_settings.ipynb", "05 · Settings")
    pages = book.build_book(src, tmp_path / "book")
    for page in pages:
        dom = _dom(page)
        found = re.search(r'data-images="(\d+)/(\d+)"', dom)
        assert found, f"{page.name}: the page did not finish loading"
        loaded, total = map(int, found.groups())
        assert loaded == total and total == (0 if page.name == "index.html" else 1), (page.name, found.group(0))
