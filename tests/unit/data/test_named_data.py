"""`make reproduce DATA=mscmrseg2019`: the sample set is found by name and what its files do not say (the
stale C0 voxel size, T2 from MyoPS) is worked out, on synthetic copies and on the real one."""
import numpy as np
import pytest
from conftest import heart_label, write_nifti

from cmr_lib.core.config import make_config
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import detect_c0_spacing, epicardial_diameter_px, resolve_data
from cmr_lib.pipeline import reproduce as rp


def _copy(folder, *, c0_mm, lge_mm=0.75, t2=False, patients=(1, 2)):
    """An MS-CMRSeg-layout folder whose C0 and LGE show the same heart on the same pixel grid."""
    folder.mkdir(parents=True)
    lab = heart_label((40, 40, 4))
    for p in patients:
        img = np.random.default_rng(p).random((40, 40, 4)).astype(np.float32)    # one patient, one image
        write_nifti(folder / f"patient{p}_C0.nii.gz", img, spacing=(c0_mm, c0_mm, 10.0))
        write_nifti(folder / f"patient{p}_C0_manual.nii.gz", lab, spacing=(c0_mm, c0_mm, 10.0))
        write_nifti(folder / f"patient{p}_LGE.nii.gz", img, spacing=(lge_mm, lge_mm, 5.0))
        write_nifti(folder / f"patient{p}_LGE_manual.nii.gz", lab, spacing=(lge_mm, lge_mm, 5.0))
        if t2:
            write_nifti(folder / f"patient{p}_T2.nii.gz", img, spacing=(lge_mm, lge_mm, 5.0))
    return folder


def _manifest_of(monkeypatch, tmp_path, base):
    """Check synthetic sample sets against a manifest of their own files (the real one lists the real files)."""
    from cmr_lib.core.digests import file_digest
    from cmr_lib.data import download, real
    path = tmp_path / "manifest.tsv"
    lines = ["dest\trepository\tpath\tsha256\tcommit"] + [
        f"{f.relative_to(base)}\tnobody/none\t{f.name}\t{file_digest(f)}\t" for f in sorted(base.rglob("*.nii.gz"))]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(real, "check_set", lambda folder, name: download.check_set(folder, name, manifest=path))
    return path


def test_epicardial_diameter_counts_myocardium_and_blood_pool_not_rv():
    lab = np.zeros((20, 20, 2), dtype=np.uint8)
    lab[2:6, 2:6, 1] = 1                      # 16 px of myocardium
    lab[6:8, 2:6, 1] = 2                      # 8 px of blood pool
    lab[10:20, 10:20, 0] = 3                  # a larger RV elsewhere is ignored
    assert epicardial_diameter_px(lab) == pytest.approx(2 * np.sqrt(24 / np.pi))


def test_a_stale_c0_header_is_detected_and_a_right_one_trusted(tmp_path):
    spacing, ev = detect_c0_spacing(_copy(tmp_path / "stale", c0_mm=1.25))
    assert spacing == "lge" and ev["patients"] == 2 and ev["c0_over_lge_mm"] == pytest.approx(1.25 / 0.75, abs=1e-3)
    assert detect_c0_spacing(_copy(tmp_path / "right", c0_mm=0.75))[0] == "header"
    unlabelled = _copy(tmp_path / "nolabels", c0_mm=1.25)
    for f in unlabelled.glob("*_LGE_manual.nii.gz"):
        f.unlink()
    assert detect_c0_spacing(unlabelled) == ("header", {"patients": 0})      # no evidence: trust the headers


def test_named_data_is_found_and_completed(tmp_path, monkeypatch):
    base = tmp_path / "real"
    _copy(base / "mscmrseg2019", c0_mm=1.25)
    _manifest_of(monkeypatch, tmp_path, base)
    with pytest.raises(CmrError, match="has no T2 images for setting 1 and no myops2020/ folder"):
        resolve_data("mscmrseg2019", base)
    _copy(base / "myops2020", c0_mm=0.75, t2=True)        # stands in for MyoPS (same layout is enough here)
    _manifest_of(monkeypatch, tmp_path, base)
    named = resolve_data("mscmrseg2019", base)
    assert named.c0_spacing == "lge" and named.t2_dir == (base / "myops2020").resolve()
    assert resolve_data("myops2020", base).t2_dir is None
    with pytest.raises(CmrError, match="DATA = 'acdc': choose one of 'mscmrseg2019', 'myops2020'"):
        resolve_data("acdc", base)
    with pytest.raises(CmrError, match="no mscmrseg2019/ folder found"):
        resolve_data("mscmrseg2019", tmp_path / "empty")


def test_make_reproduce_data_passes_what_it_found(tmp_path, monkeypatch):
    base = tmp_path / "real"
    _copy(base / "mscmrseg2019", c0_mm=1.25)
    _copy(base / "myops2020", c0_mm=0.75, t2=True)
    _manifest_of(monkeypatch, tmp_path, base)
    monkeypatch.setenv("CMR_REAL_DATA", str(base))
    seen = {}
    monkeypatch.setattr(rp, "reproduce", lambda profile, **kw: seen.update(profile=profile, **kw) or 0)

    def lands():
        return make_config(profile=seen["profile"], data_dir=seen["data_dir"]).output_root

    assert rp.main(["--data", "mscmrseg2019", "--seeds", "3"]) == 0
    assert seen["profile"] == "real" and seen["seeds"] == 3 and seen["c0_spacing"] == "lge"
    assert seen["data_dir"] == (base / "mscmrseg2019").resolve() and seen["t2_dir"] == (base / "myops2020").resolve()
    assert seen["output_root"] is None and lands() == repo_root() / "real" / "mscmrseg2019"
    assert rp.main(["--data", "mscmrseg2019", "--profile", "smoke", "--c0-spacing", "header"]) == 0
    assert seen["profile"] == "smoke" and seen["c0_spacing"] == "header"       # explicit values win
    assert lands() == repo_root() / "real" / "mscmrseg2019" / "smoke"            # never over real's tables
    assert rp.main(["--data", "mscmrseg2019", "--profile", "real-ref"]) == 0
    assert lands() == repo_root() / "real" / "mscmrseg2019" / "real-ref" and seen["seeds"] is None
    assert rp.main(["--data", "mscmrseg2019", "--data-dir", str(base)]) == 2     # one line, exit 2


def test_the_real_copy_is_recognised(mscmrseg_dir, myops_dir):
    named = resolve_data("mscmrseg2019", mscmrseg_dir.parent)
    assert named.c0_spacing == "lge" and named.t2_dir == myops_dir
    assert 1.5 < named.evidence["c0_over_lge_mm"] < 1.8 and 0.9 < named.evidence["c0_over_lge_px"] < 1.1
    assert detect_c0_spacing(myops_dir)[0] == "header"                   # co-registered: nothing stale


def test_the_evaluation_sets_put_the_tuning_set_first_and_keep_it_apart_from_the_tests(mscmrseg_dir, myops_dir):
    """Issue 35: the one place that names which real LGE a choice may read (tuning) and which are only reported."""
    from cmr_lib.data.real import TUNING, evaluation_sets
    sets = evaluation_sets()
    assert list(sets)[0] == TUNING and [len(v) for v in sets.values()] == [10, 5, 10]
    tuning = {v.patient for v in sets[TUNING]}
    myops_test = {v.patient for v in sets["test: MyoPS 111-120"]}
    assert tuning == set(range(101, 111)) and myops_test == set(range(111, 121))
    assert all(v.label is not None for vols in sets.values() for v in vols)
