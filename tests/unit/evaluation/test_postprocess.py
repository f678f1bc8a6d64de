"""nnU-Net's post-processing: each structure keeps its largest connected component."""
import numpy as np
import pytest

from conftest import heart_label, write_nifti
from cmr_lib.core.errors import CmrError
from cmr_lib.evaluation.evaluate import evaluate_dirs, main
from cmr_lib.evaluation.postprocess import keep_largest_component, postprocessed


def test_each_structure_keeps_its_largest_component():
    pred = np.zeros((20, 20, 4), dtype=np.uint8)
    pred[2:8, 2:8, 1:3] = 2                   # the LV: 72 voxels over two slices (touching across them)
    pred[15:17, 15:17, 0] = 2                 # an LV island far away: 4 voxels
    pred[10:12, 2:4, 3] = 3                   # the RV's only component stays
    pred[18, 0, 0] = 1                        # a one-voxel MYO island beside ...
    pred[0:3, 12:15, 2] = 1                   # ... the MYO's largest part (9 voxels)
    out = keep_largest_component(pred)
    assert (out == 2).sum() == 72 and out[15:17, 15:17, 0].max() == 0
    assert (out == 3).sum() == (pred == 3).sum() and (out == 1).sum() == 9 and out[18, 0, 0] == 0
    assert ((out != pred) <= (out == 0)).all()                    # only ever turns voxels into background
    diagonal = np.zeros((5, 5, 3), dtype=np.uint8)
    diagonal[1, 1, 0] = diagonal[2, 2, 1] = 1                     # touching corner to corner across slices
    assert (keep_largest_component(diagonal) == diagonal).all()
    assert (keep_largest_component(np.zeros((4, 4, 2), np.uint8)) == 0).all()
    with pytest.raises(CmrError, match="parameter 'postprocess' = 'blur'"):
        postprocessed(pred, "blur")


def test_the_evaluator_scores_saved_predictions_either_way(tmp_path, capsys):
    gt = heart_label((40, 40, 5))
    pred = gt.copy()
    pred[36:39, 36:39, 0] = 500                                   # a far LV island: Dice barely moves, HD jumps
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    write_nifti(tmp_path / "gt" / "patient1_LGE_manual.nii.gz", gt)
    write_nifti(tmp_path / "pred" / "patient1_LGE.nii.gz", pred)
    raw = evaluate_dirs(tmp_path / "pred", tmp_path / "gt").set_index("structure")
    kept = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", postprocess="largest_component").set_index("structure")
    assert raw.loc["LV", "hd"] > 10 and kept.loc["LV", "hd"] == 0 and kept.loc["LV", "dice"] == 1.0
    assert raw.loc["MYO", "hd"] == kept.loc["MYO", "hd"] == 0
    assert main([str(tmp_path / "pred"), str(tmp_path / "gt"), "--largest-component"]) == 0
    assert "Dice" in capsys.readouterr().out
