import nibabel as nib
import numpy as np
import pytest
from conftest import heart_label, write_nifti

from cmr_lib.core.errors import CmrError
from cmr_lib.data.nifti import CLASS_TO_LABEL, read_label, write_label
from cmr_lib.data.sources import open_source


def _centroid(mask):
    return np.argwhere(mask).mean(axis=0)


# ---------------------------------------------------------------------------------------------
# the real samples

def test_mscmrseg_layout_and_split(mscmrseg_dir):
    src = open_source(mscmrseg_dir)
    assert src.layout == "mscmrseg"
    assert src.patients_with("C0", labelled=True) == list(range(1, 36))
    assert src.patients_with("LGE") == list(range(1, 46))
    assert src.patients_with("LGE", labelled=True) == list(range(1, 6))   # test labels withheld
    assert "T2" not in src.sequences


def test_mscmrseg_storage_types_are_read_the_same(mscmrseg_dir):
    src = open_source(mscmrseg_dir)
    c0 = src.load(1, "C0")        # float64 image, float64 label on disk
    lge = src.load(1, "LGE")      # float32 image, int16 label on disk
    for v in (c0, lge):
        assert v.image.dtype == np.float32 and v.label.dtype == np.uint8
        assert set(np.unique(v.label)) == {0, 1, 2, 3}
        assert v.image.shape == v.label.shape and v.image.shape[:2] == (192, 192)
    assert c0.spacing == pytest.approx((1.25, 1.25, 12.0), abs=1e-3)
    assert lge.spacing[2] == pytest.approx(5.0, abs=1e-3) and 0.7 < lge.spacing[0] < 0.8
    assert src.load(40, "LGE").label is None
    with pytest.raises(CmrError, match="patient 40 has no LGE label file"):
        src.load(40, "LGE", label="require")
    with pytest.raises(CmrError, match="patient 40 has no C0 image"):
        src.load(40, "C0")


def test_stored_order_is_consistent_despite_orientation_codes(mscmrseg_dir, myops_dir):
    """The data README's finding: RV toward decreasing axis 0 in every volume, whatever the affine says."""
    codes = set()
    for root in (mscmrseg_dir, myops_dir):
        src = open_source(root)
        for seq in src.sequences:
            for vol in src.volumes(src.patients_with(seq, labelled=True), seq, label="require"):
                codes.add(nib.aff2axcodes(vol.affine))
                assert _centroid(vol.label == 3)[0] < _centroid(vol.label == 2)[0], vol.label_path
    assert len(codes) >= 2   # the affines really disagree, so reorienting by them would scramble this


def test_cropped_mscmrseg_c0_voxel_size_is_fixed_from_lge(mscmrseg_dir):
    """Measured: the copy's C0 arrays are on the LGE pixel size; c0_spacing='lge' makes hearts agree in mm."""
    def diameter_mm(vol):
        area = max(int(((vol.label[:, :, z] == 1) | (vol.label[:, :, z] == 2)).sum()) for z in range(vol.shape[2]))
        return 2 * np.sqrt(area / np.pi) * vol.spacing[0]
    header, fixed = open_source(mscmrseg_dir), open_source(mscmrseg_dir, c0_spacing="lge")
    lge = np.mean([diameter_mm(header.load(p, "LGE")) for p in range(1, 6)])
    c0_header = np.mean([diameter_mm(header.load(p, "C0")) for p in range(1, 6)])
    c0_fixed = np.mean([diameter_mm(fixed.load(p, "C0")) for p in range(1, 6)])
    assert c0_header / lge > 1.4
    assert abs(c0_fixed / lge - 1) < 0.1
    assert fixed.load(1, "C0").spacing[2] == header.load(1, "C0").spacing[2]


def test_myops_layout_shared_label_and_extra_codes(myops_dir):
    src = open_source(myops_dir)
    assert src.layout == "myops" and src.sequences == ["C0", "LGE", "T2"]
    assert len(src.patients) == 20 and src.patients[0] == 101
    p = src.patients[0]
    raw = np.asarray(nib.load(str(src.label_path(p, "LGE"))).dataobj)
    assert {1220, 2221} <= set(np.unique(raw))
    vols = [src.load(p, s, label="require") for s in ("C0", "LGE", "T2")]
    assert all(np.array_equal(vols[0].label, v.label) for v in vols)
    assert set(np.unique(vols[0].label)) == {0, 1, 2, 3}
    assert np.array_equal(vols[0].label == 1, np.isin(raw, (200, 1220, 2221)))


# ---------------------------------------------------------------------------------------------
# layouts and bad files (synthetic)

def _case(tmp_path, name="patient1", seq="LGE", image=None, label=None, spacing=(1.0, 1.0, 5.0)):
    image = np.random.default_rng(0).random((32, 32, 4)).astype(np.float32) if image is None else image
    write_nifti(tmp_path / f"{name}_{seq}.nii.gz", image, spacing)
    if label is not False:
        write_nifti(tmp_path / f"{name}_{seq}_manual.nii.gz", heart_label() if label is None else label, spacing)
    return tmp_path


def test_de_token_is_lge(tmp_path):
    _case(tmp_path, seq="DE")
    src = open_source(tmp_path)
    assert src.sequences == ["LGE"] and src.load(1, "LGE").label is not None


def test_singleton_fourth_axis_is_squeezed(tmp_path):
    _case(tmp_path, image=np.random.default_rng(1).random((32, 32, 4, 1)).astype(np.float32))
    assert open_source(tmp_path).load(1, "LGE").image.shape == (32, 32, 4)


def test_write_label_round_trip(tmp_path):
    _case(tmp_path)
    vol = open_source(tmp_path).load(1, "LGE")
    out = write_label(tmp_path / "pred" / "patient1_LGE.nii.gz", vol.label, like=vol)
    raw = np.asarray(nib.load(str(out)).dataobj)
    assert set(np.unique(raw)) == set(CLASS_TO_LABEL.values())
    lab, zooms, _ = read_label(out)
    assert np.array_equal(lab, vol.label) and zooms == vol.spacing
    assert not list((tmp_path / "pred").glob(".*"))   # no temp files left behind


@pytest.mark.parametrize("names, message", [
    (("myops_training_101_C0.nii.gz", "myops_training_101_C0.nii"), "duplicate C0 file for patient 101"),
    (("myops_training_101_C0.nii.gz", "myops_test_101_C0.nii.gz"), "duplicate C0 file for patient 101"),
    (("myops_training_101_C0.nii.gz", "myops_training_102_gd.nii.gz"), "label file without its images"),
    (("patient1_LGE.nii.gz", "patient1_DE.nii.gz"), "duplicate LGE file for patient 1"),
])
def test_duplicates_and_orphans(tmp_path, names, message):
    for n in names:
        write_nifti(tmp_path / n, heart_label((8, 8, 2)))
    with pytest.raises(CmrError, match=message):
        open_source(tmp_path)


def test_written_label_keeps_the_image_header(mscmrseg_dir, tmp_path):
    vol = open_source(mscmrseg_dir, c0_spacing="lge").load(1, "C0")      # spacing overridden from LGE
    out = write_label(tmp_path / "patient1_C0.nii.gz", vol.label, like=vol)
    written, original = nib.load(str(out)), nib.load(str(vol.image_path))
    assert np.allclose(written.header.get_zooms(), original.header.get_zooms())
    assert np.allclose(written.affine, original.affine, atol=1e-4)
