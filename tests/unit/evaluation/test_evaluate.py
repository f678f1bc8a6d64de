import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import heart_label, write_nifti

from cmr_lib.core.errors import CmrError
from cmr_lib.data.nifti import map_labels
from cmr_lib.evaluation import evaluate, metrics
from cmr_lib.evaluation.evaluate import evaluate_dirs, summarize

SP = (1.2, 1.2, 8.0)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "cmr_lib.evaluation.evaluate", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def dirs(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    ref = heart_label((40, 40, 5))
    shifted = np.roll(ref, 2, axis=0)
    write_nifti(gt / "patient1_LGE_manual.nii.gz", ref, SP)
    write_nifti(pred / "patient1_LGE.nii.gz", shifted, SP)                      # matched with _manual
    empty_rv = np.where(ref == 600, 0, ref).astype(np.int16)
    write_nifti(gt / "patient2_LGE_manual.nii.gz", ref, SP)
    write_nifti(pred / "patient2_LGE_manual.nii.gz", empty_rv, SP)              # matched by the same name
    return pred, gt, ref, shifted


def test_cli_writes_exact_columns_and_matches_metrics(dirs, tmp_path):
    pred, gt, ref, shifted = dirs
    out = _run(pred, gt, "--out", tmp_path / "m.csv")
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "m.csv")
    assert list(df.columns) == ["case", "structure", "dice", "hd", "hd95", "assd"]
    assert sorted(df["case"].unique()) == ["patient1_LGE", "patient2_LGE"]
    assert set(df["structure"]) == {"MYO", "LV", "RV"}
    expect = metrics.evaluate_volume(map_labels(shifted, "p"), map_labels(ref, "g"), SP)
    row = df[(df.case == "patient1_LGE") & (df.structure == "LV")].iloc[0]
    for k in ("dice", "hd", "hd95", "assd"):
        assert row[k] == pytest.approx(expect["LV"][k], abs=1e-6)
    rv2 = df[(df.case == "patient2_LGE") & (df.structure == "RV")].iloc[0]
    assert rv2["dice"] == 0.0 and np.isnan(rv2["hd"])                          # empty prediction: counted
    assert "AVG ± STD" in out.stdout and "RV 1" in out.stdout
    assert not list(tmp_path.glob(".m.csv*"))


def test_named_flags_in_nnunets_order_give_the_same_scores_and_a_mix_is_refused(dirs, tmp_path):
    pred, gt, *_ = dirs
    named = _run("-ref", gt, "-pred", pred, "--out", tmp_path / "named.csv")
    positional = _run(pred, gt, "--out", tmp_path / "positional.csv")
    assert named.returncode == positional.returncode == 0, named.stderr
    assert (tmp_path / "named.csv").read_text() == (tmp_path / "positional.csv").read_text()
    mixed = _run(pred, "-ref", gt)
    assert mixed.returncode == 2 and "not a mix" in mixed.stderr


def test_summary_is_table_2_form(dirs):
    pred, gt, *_ = dirs
    df = evaluate.evaluate_dirs(pred, gt)
    summ = evaluate.summarize(df)
    means = [df[df.structure == s]["dice"].mean() for s in ("MYO", "LV", "RV")]
    assert summ.loc["dice", "AVG"] == pytest.approx(np.mean(means))
    assert summ.loc["dice", "STD"] == pytest.approx(np.std(means))             # population std
    assert summ.loc["hd", "RV"] == pytest.approx(df[(df.structure == "RV")]["hd"].dropna().mean())
    assert summ.loc["hd", "nan_RV"] == 1 and summ.loc["hd", "nan_LV"] == 0


def test_myops_codes_accepted(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    ref = heart_label((30, 30, 3))
    myops = ref.copy()
    myops[(ref == 200) & (np.arange(30)[:, None, None] < 15)] = 2221             # scar counts as myocardium
    write_nifti(gt / "myops_training_101_gd.nii.gz", myops, SP)
    write_nifti(pred / "myops_training_101_gd.nii.gz", ref, SP)
    df = evaluate.evaluate_dirs(pred, gt)
    assert df[df.structure == "MYO"]["dice"].iloc[0] == 1.0


@pytest.mark.parametrize("make, message", [
    (lambda p, g: write_nifti(p / "patient3_LGE.nii.gz", heart_label((40, 40, 5)), SP),
     "patient3_LGE.nii.gz: no ground truth of the same name"),
    (lambda p, g: write_nifti(p / "patient1_LGE.nii.gz", heart_label((40, 36, 5)), SP),
     r"patient1_LGE.nii.gz: shape \(40, 36, 5\) differs from ground truth"),
    (lambda p, g: write_nifti(p / "patient1_LGE.nii.gz", np.where(heart_label((40, 40, 5)) == 500, 300, 0), SP),
     r"unknown label value\(s\) \[300\]"),
    (lambda p, g: write_nifti(p / "patient1_LGE.nii.gz", heart_label((40, 40, 5)), (1.0, 1.0, 8.0)),
     "voxel size"),
])
def test_cli_errors_are_one_line_exit_2(dirs, make, message):
    pred, gt, *_ = dirs
    make(pred, gt)
    out = _run(pred, gt)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    import re
    assert re.search(message, lines[0]), lines[0]


def test_missing_folders(tmp_path):
    out = _run(tmp_path / "nope", tmp_path)
    assert out.returncode == 2 and "prediction folder not found" in out.stderr
    (tmp_path / "p").mkdir()
    with pytest.raises(CmrError, match="no .nii or .nii.gz prediction files"):
        evaluate.match_files(tmp_path / "p", tmp_path)


@pytest.mark.parametrize("image, label, prediction, case", [
    ("patient1_LGE", "patient1_LGE_manual", "patient1_LGE", "patient1_LGE"),                   # MS-CMRSeg
    ("myops_training_101_DE", "myops_training_101_gd", "myops_training_101_DE", "myops_training_101_DE"),
])
def test_label_files_win_over_images_in_a_dataset_folder(tmp_path, image, label, prediction, case):
    """A ground-truth folder that is a data set folder: the image sits beside its label file."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    ref = heart_label((30, 30, 3))
    write_nifti(gt / f"{image}.nii.gz", np.random.default_rng(0).random((30, 30, 3)).astype(np.float32), SP)
    write_nifti(gt / f"{label}.nii.gz", ref, SP)
    write_nifti(pred / f"{prediction}.nii.gz", ref, SP)
    [(found_case, _, g)] = evaluate.match_files(pred, gt)
    assert found_case == case and g.name == f"{label}.nii.gz"
    assert (evaluate.evaluate_dirs(pred, gt)["dice"] == 1.0).all()


def test_duplicate_predictions_are_refused(dirs):
    pred, gt, ref, _ = dirs
    write_nifti(pred / "patient1_LGE.nii", ref, SP)
    with pytest.raises(CmrError, match="prediction case patient1_LGE is given twice"):
        evaluate.match_files(pred, gt)


def _folders(tmp_path, gt_cases=(1, 2, 3), pred_cases=(1, 2)):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for p in gt_cases:
        write_nifti(gt / f"patient{p}_LGE_manual.nii.gz", heart_label())
        write_nifti(gt / f"patient{p}_C0_manual.nii.gz", heart_label())      # another sequence: not expected
    for p in pred_cases:
        write_nifti(pred / f"patient{p}_LGE.nii.gz", heart_label())
    return pred, gt


def test_a_missing_prediction_is_an_error_or_scores_zero(tmp_path):
    pred, gt = _folders(tmp_path)
    with pytest.raises(CmrError, match=r"no prediction for 1 ground-truth case\(s\) \(patient3_LGE\)"):
        evaluate_dirs(pred, gt)
    df = evaluate_dirs(pred, gt, allow_missing=True)
    assert sorted(df["case"].unique()) == ["patient1_LGE", "patient2_LGE", "patient3_LGE"]
    assert (df[df["case"] == "patient3_LGE"]["dice"] == 0).all()
    assert summarize(df).loc["dice", "AVG"] == pytest.approx(2 / 3)         # the missing case counts


def test_the_same_folder_or_file_twice_and_odd_extensions(tmp_path):
    pred, gt = _folders(tmp_path, gt_cases=(1,), pred_cases=(1,))
    with pytest.raises(CmrError, match="the prediction folder is the ground-truth folder"):
        evaluate_dirs(gt, gt)
    write_nifti(gt / "patient1_LGE_manual.nii", heart_label())
    with pytest.raises(CmrError, match="ground-truth case patient1_LGE_manual is given twice"):
        evaluate_dirs(pred, gt)
    (gt / "patient1_LGE_manual.nii").unlink()
    (pred / "patient1_LGE.nii.gz").rename(pred / "patient1_LGE.NII.GZ")      # upper-case extension: still read
    assert evaluate_dirs(pred, gt)["case"].unique().tolist() == ["patient1_LGE"]


def test_a_flipped_prediction_is_refused(tmp_path):
    pred, gt = _folders(tmp_path, gt_cases=(1,), pred_cases=())
    flipped = np.diag([-1.0, 1.0, 5.0, 1.0])
    flipped[0, 3] = 31.0
    write_nifti(pred / "patient1_LGE.nii.gz", heart_label(), affine=flipped)
    with pytest.raises(CmrError, match="patient1_LGE.nii.gz: affine differs from patient1_LGE_manual.nii.gz"):
        evaluate_dirs(pred, gt)
