"""Shared fixtures: the real sample sets (skipped with a reason when absent), a tiny phantom, NIfTI writers."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cmr_lib.data import phantom
from cmr_lib.data.sources import find_real_data, open_source

REAL = find_real_data()


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration is `slow` (trains networks, runs notebooks, Snakemake or processes)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
_WHERE = "set CMR_REAL_DATA to the folder holding mscmrseg2019/ and myops2020/, or place it at ../shared/data"


@pytest.fixture(scope="session")
def mscmrseg_dir():
    if "mscmrseg" not in REAL:
        pytest.skip(f"real MS-CMRSeg 2019 sample not found: {_WHERE}")
    return REAL["mscmrseg"]


@pytest.fixture(scope="session")
def myops_dir():
    if "myops" not in REAL:
        pytest.skip(f"real MyoPS 2020 sample not found: {_WHERE}")
    return REAL["myops"]


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """A 3-patient phantom written once per test session."""
    out = tmp_path_factory.mktemp("phantom")
    phantom.generate(out, patients=3, seed=7, workers=1, progress=False)
    return out


def write_nifti(path, array, spacing=(1.0, 1.0, 5.0), affine=None):
    """Write an array as NIfTI with the given voxel size (test helper)."""
    if affine is None:
        affine = np.diag(list(spacing) + [1.0])
    array = np.asarray(array)
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    img = nib.Nifti1Image(array, affine)
    ndim = np.asarray(array).ndim
    img.header.set_zooms((tuple(spacing) + (1.0,) * ndim)[:ndim])
    nib.save(img, str(path))
    return path


def tiny_notebook(path, code):
    """A two-cell notebook (a `parameters` cell for the smoke profile, then `code`) for the pipeline's tests."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'smoke'\nseed = 0\ndata_dir = None\noutput_root = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, str(path))
    return path


def heart_label(shape=(32, 32, 4), *, codes=(200, 500, 600), dtype=np.int16):
    """A small label volume with concentric MYO/LV discs and an RV blob, in dataset codes."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - shape[0] * 0.6, y - shape[1] / 2)
    lab2 = np.zeros(shape[:2], dtype=dtype)
    lab2[r < 9] = codes[0]
    lab2[r < 6] = codes[1]
    lab2[(np.hypot(x - shape[0] * 0.2, y - shape[1] / 2) < 5) & (r >= 9)] = codes[2]
    return np.repeat(lab2[:, :, None], shape[2], axis=2)


@pytest.fixture
def optimiser_spy(monkeypatch):
    """The batches every DRU-Net optimiser step of a setting run receives, as they were (CPU copies)."""
    from cmr_lib.training import segmenters
    seen = []
    optimise = segmenters._optimise

    def spy(sg, model, optimizer, x, y, step, dev):
        seen.append(x.detach().cpu().clone())
        seen_devices.append((x.device.type, y.device.type))
        return optimise(sg, model, optimizer, x, y, step, dev)

    seen_devices = []
    monkeypatch.setattr(segmenters, "_optimise", spy)
    return seen, seen_devices


def run_row(phantom_dir, output_root, setting, stylizer, eps):
    """One Table 2/3 row on the smoke profile: (config, data source, finished run)."""
    from cmr_lib.core.config import make_config
    from cmr_lib.study.runs import run_setting
    cfg = make_config(profile="smoke", setting=setting, stylizer=stylizer, data_dir=phantom_dir,
                      output_root=output_root)
    src = open_source(phantom_dir)
    return cfg, src, run_setting(cfg, src, epsilon_iterations=eps, progress=False)
