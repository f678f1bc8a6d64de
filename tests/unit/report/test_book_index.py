"""The book's index names each executed notebook 05 by its Table 2/3 row (from papermill's injected parameters)."""
from cmr_lib.report.book import _injected, _row_label


def _nb(source):
    return {"cells": [{"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": source}]}


def test_the_row_and_seed_come_from_the_injected_parameters_only():
    nb = _nb('# Parameters\nprofile = "real"\nseed = 2\nsetting = 1\nstylizer = "rain"\nepsilon_iterations = 3\n')
    assert _injected(nb) == {"profile": "real", "seed": 2, "setting": 1, "stylizer": "rain", "epsilon_iterations": 3}
    assert _row_label(nb) == "setting 1, RAIN ε3, seed 2"
    assert _row_label(_nb("setting = 0\nstylizer = 'rain'\n")) == "setting 0 (none)"      # setting 0 ignores it
    assert _row_label(_nb("setting = 3\nstylizer = 'adaconv'\nepsilon_iterations = 5\n")) == "setting 3, AdaConv"
    assert _row_label(_nb("profile = 'demo'\n")) == "" and _row_label({"cells": []}) == ""
    assert _injected(_nb("x = __import__('os').system('true')\n")) == {}                  # never evaluated
