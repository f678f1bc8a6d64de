"""Each notebook is a .py (percent) + .ipynb pair that never drifts: the sync check of `make sync-check`."""
import json
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PAIRS = sorted(NOTEBOOKS.glob("*.py"))


def test_every_notebook_is_paired():
    assert PAIRS, "no notebooks found"
    assert {p.stem for p in PAIRS} == {p.stem for p in NOTEBOOKS.glob("*.ipynb")}


@pytest.mark.parametrize("py", PAIRS, ids=lambda p: p.stem)
def test_pair_is_in_sync_and_clean(py):
    ipynb = py.with_suffix(".ipynb")
    from_py = jupytext.read(py)
    raw = json.loads(ipynb.read_text())
    from_nb = jupytext.read(ipynb)
    assert [(c.cell_type, c.source.strip()) for c in from_py.cells] == \
           [(c.cell_type, c.source.strip()) for c in from_nb.cells], f"{py.name} and {ipynb.name} differ: run make sync"
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "committed with outputs"
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    params = code[0]["source"] if isinstance(code[0]["source"], str) else "".join(code[0]["source"])
    assert "profile = " in params and "seed = " in params and "output_root = " in params
    namespace = {}
    exec(compile(params, "parameters", "exec"), namespace)                 # plain literals that run as-is
    assert namespace["profile"] == "demo"


@pytest.mark.parametrize("py", PAIRS, ids=lambda p: p.stem)
def test_each_notebook_ends_with_two_or_three_exercises(py):
    """Issue 36: a student finishes each notebook with short exercises (predict, run, check)."""
    import re
    last = jupytext.read(py).cells[-1]
    assert last.cell_type == "markdown" and last.source.splitlines()[0] == "## Exercises", py.name
    assert len(re.findall(r"^\d\. ", last.source, re.M)) in (2, 3), py.name
