"""cmr-predict (issue 36): which files a folder gives, labels written on each input's grid in the challenge's values,
inputs never overwritten, one-line errors (exit 2), and every console script's --help with an example."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import repo_root
from cmr_lib.models.drunet import DRUNet
from cmr_lib.study import predict
from cmr_lib.training.checkpoints import save_checkpoint
from conftest import heart_label, write_nifti

CONFIG = {"crop": 32, "segmenter": {"depth": 3, "root": 4, "head_relu": False, "precision": "fp32"},
          "preprocess": {"spacing_mm": None, "percentiles": [0.5, 99.5], "normalise_fov_mm": None,
                         "test_crop": "image"}}


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "run" / "final.pt", model=DRUNet(depth=3, root=4, head_relu=False),
                           optimizer=None, step=1, config=CONFIG, history={})


def _scan(path, seed=0):
    rng = np.random.default_rng(seed)
    image = heart_label((40, 36, 3)).astype(np.float32) / 3 + rng.normal(0, 20, (40, 36, 3)).astype(np.float32)
    affine = np.array([[0, 1.4, 0, -20], [1.3, 0, 0, 5], [0, 0, 8, 2], [0, 0, 0, 1]], dtype=float)
    return write_nifti(path, image, spacing=(1.3, 1.4, 8.0), affine=affine)


def _digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(Path(folder).iterdir())}


def test_a_folder_gives_the_chosen_sequence_and_never_a_label_file(tmp_path):
    for name in ("patient1_LGE.nii.gz", "patient1_LGE_manual.nii.gz", "patient1_C0.nii.gz", "myops_training_101_DE.nii.gz",
                 "myops_training_101_gd.nii.gz", "myops_training_101_T2.nii.gz", "scan_a.nii", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    names = lambda seq: [f.name for f in predict.find_inputs(tmp_path, seq)]      # noqa: E731
    assert names("LGE") == ["myops_training_101_DE.nii.gz", "patient1_LGE.nii.gz", "scan_a.nii"]
    assert names("C0") == ["patient1_C0.nii.gz", "scan_a.nii"]
    assert "patient1_LGE_manual.nii.gz" not in names("any") and "notes.txt" not in names("any")
    with pytest.raises(CmrError, match="not a NIfTI file"):
        predict.find_inputs(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CmrError, match=f"{empty}: no LGE NIfTI volume"):
        predict.find_inputs(empty)


def test_labels_are_written_on_each_input_grid_in_the_challenge_values(tmp_path, model_file, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    _scan(scans / "patient6_LGE.nii.gz")
    _scan(scans / "mine.nii.gz", seed=1)
    before = _digest(scans)
    rc = predict.main(["-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(model_file.parent), "--quiet"])
    assert rc == 0 and "2 label volume(s)" in capsys.readouterr().out
    assert _digest(scans) == before
    for name in before:
        src, out = nib.load(str(scans / name)), nib.load(str(tmp_path / "out" / name))
        assert out.shape == src.shape and np.allclose(out.affine, src.affine)
        assert np.allclose(out.header.get_zooms(), src.header.get_zooms())
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 200, 500, 600}
    again = predict.predict_files(predict.find_inputs(scans), tmp_path / "lc", model_file, progress=False,
                                  largest_component=True)
    assert [f.name for f in again] == sorted(before)


def test_bad_inputs_are_one_line_errors_and_no_input_is_overwritten(tmp_path, model_file, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    _scan(scans / "patient6_LGE.nii.gz")
    before = _digest(scans)
    cases = [(["-i", str(scans), "-o", str(scans), "-m", str(model_file)], "would overwrite an input"),
             (["-i", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")], "no such file or folder"),
             (["-i", str(scans), "-o", str(tmp_path / "o"), "-m", "no-such-model"], "no such file, folder or shipped"),
             (["-i", str(scans), "-o", str(tmp_path / "o"), "-m", str(tmp_path)], "not a trained model")]
    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "step": 0, "config": CONFIG, "x": Path("/")}, bad)
    cases.append((["-i", str(scans), "-o", str(tmp_path / "o"), "-m", str(bad)], "could run code on load"))
    for argv, message in cases:
        assert predict.main(argv + ["--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert _digest(scans) == before and not (tmp_path / "o").exists()


def test_every_console_script_runs_and_its_help_shows_an_example():
    scripts = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"cmr-predict", "cmr-evaluate", "cmr-download", "cmr-phantom", "cmr-reproduce"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        out = subprocess.run([sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())",
                              "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and f"usage: {name}" in out.stdout and "example:" in out.stdout, (name, out.stderr)
