"""Every parameter of every notebook, checked in one place (core.config.PARAMETERS): a table of wrong values
per parameter, each run through the notebook's own first cells as papermill would inject it, must stop
with one line naming that parameter (issue 18: `-p include_original false` arrived as a truthy string)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cmr_lib.core.config import PARAMETERS, check_parameter
from cmr_lib.core.errors import CmrError

NOTEBOOKS = sorted((Path(__file__).resolve().parents[3] / "notebooks").glob("[0-9]*.py"))

# Wrong values a user can pass (papermill's -p delivers strings, -y delivers YAML types).
BAD = {
    "profile": [5, "huge", "/no/such/profile.yaml"],
    "setting": ["two", 9, True],
    "stylizer": ["cyclegan", None],
    "seed": [-1, "x", 1.5],
    "data_dir": ["", "/no/such/folder", 5],
    "t2_dir": ["/no/such/folder", ""],
    "real_data_dir": ["/no/such/folder"],
    "c0_spacing": ["guess", None],
    "output_root": [5, "/proc/cmr_results"],
    "epsilon_iterations": [-1, 2.5, "five"],
    "include_original": ["false", 1, None],
    "kernel_size": [4, "big", 0],
    "seeds": ["0,1,2", [0, 0], [-1], 3, []],
    "allow_mixed": ["false", "True", 0],
    "cross_data": ["all", [5], ["/no/such/folder"], 1],
    "kernels": [None, [4], [3, 3], "3,7", []],
    "kinds": ["adaconv", ["rain"], [], ["adaconv", "adaconv"]],
    "max_slices": [0, "all", 2.5],
}


def _cells(path: Path) -> tuple[str, str]:
    """(the parameters cell, the code cell after it) of a paired percent-format notebook."""
    parts = re.split(r"^# %%(.*)$", path.read_text(), flags=re.M)
    cells = list(zip(parts[1::2], parts[2::2]))
    i = next(i for i, (head, _) in enumerate(cells) if 'tags=["parameters"]' in head)
    following = next(src for head, src in cells[i + 1:] if "[markdown]" not in head)
    return cells[i][1], following


def _names(src: str) -> list[str]:
    return re.findall(r"^([a-z_0-9]+)\s*=", src, flags=re.M)


def test_every_notebook_parameter_has_a_rule_and_every_rule_a_parameter():
    used = {name for nb in NOTEBOOKS for name in _names(_cells(nb)[0])}
    assert used == set(PARAMETERS), (used ^ set(PARAMETERS))
    assert set(BAD) == set(PARAMETERS)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_default_passes_its_rule(nb):
    ns: dict = {}
    exec(_cells(nb)[0], ns)
    for name in _names(_cells(nb)[0]):
        check_parameter(name, ns[name])


CASES = [(nb, name, bad) for nb in NOTEBOOKS for name in _names(_cells(nb)[0]) for bad in BAD[name]]


@pytest.mark.parametrize("nb, name, bad", CASES, ids=[f"{nb.stem}-{n}-{b!r}" for nb, n, b in CASES])
def test_a_wrong_value_stops_the_notebook_with_one_line(nb, name, bad, tmp_path):
    params, first = _cells(nb)
    ns: dict = {}
    exec(params, ns)
    ns.update(profile="smoke", output_root=str(tmp_path))     # if a value slipped through: small and here
    ns[name] = bad
    with pytest.raises(CmrError) as err:
        exec(first, ns)
    line = str(err.value)
    assert "\n" not in line and f"'{name}'" in line, line
    assert not (tmp_path / "results").exists()                  # stopped before anything was written


def test_unknown_parameters_are_refused_by_name():
    from cmr_lib.core.config import make_config
    with pytest.raises(CmrError, match="parameter 'epsilon_iteration': unknown"):
        make_config(profile="smoke", epsilon_iteration=5)


def test_yaml_and_papermill_spellings_that_mean_the_right_thing_are_accepted():
    assert check_parameter("setting", "3") == 3                 # papermill -p setting 3 from a shell script
    assert check_parameter("seeds", (0, 1)) == [0, 1]
    assert check_parameter("cross_data", None) is None and check_parameter("kernel_size", None) is None
