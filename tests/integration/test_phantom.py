import functools
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from cmr_lib.core.errors import CmrError
from cmr_lib.data import phantom, phantom_anatomy
from cmr_lib.data.sources import open_source

SEEDS = np.random.SeedSequence(2019).spawn(8)


@functools.lru_cache(maxsize=None)
def simulate(i, noise=True, bias=True):
    """One phantom patient per (seed index, noise, bias), simulated once per test session."""
    return phantom.simulate_patient(SEEDS[i], noise=noise, bias=bias)


@pytest.fixture(scope="module")
def infarct_patient():
    """A noisy patient with an infarct, with the scar's and the edema's volume fraction per voxel."""
    for s in SEEDS:
        sim = phantom.simulate_patient(s, track=("infarct",), infarct_probability=1.0)
        if sim["LGE"][3]["fractions"]["infarct"].max() > 0.99:
            return sim
    pytest.fail("no seed gave a full-voxel infarct")


def _means(image, label):
    return {k: float(image[label == k].mean()) for k in range(4)}


# ---------------------------------------------------------------------------------------------
# physics: signal equations and contrast orderings

def test_signal_equations_give_the_studys_contrasts():
    c0, lge, t2 = (phantom_anatomy.tissue_signals(s) for s in ("C0", "LGE", "T2"))
    assert c0["blood"] > 2 * c0["myocardium"] and c0["fat"] > c0["myocardium"]          # bright blood
    assert lge["myocardium"] < 1e-6                                                       # nulled at TI = ln2 T1
    assert lge["infarct"] > lge["blood"] > lge["myocardium"]                              # bright scar, grey blood
    assert lge["fat"] > lge["blood"]
    assert t2["blood"] < 0.2 * t2["myocardium"] and t2["edema"] > t2["myocardium"]        # black blood, bright edema
    assert phantom_anatomy.tissue_signals("T2", fat_suppression=1.0)["fat"] > t2["fat"]
    assert all(s["air"] == 0 for s in (c0, lge, t2))


def test_signal_equations_match_their_formulas():
    a = np.deg2rad(60.0)
    expected = 0.8 * np.sin(a) / ((1 + np.cos(a)) + (1 - np.cos(a)) * 1000.0 / 50.0)
    assert phantom_anatomy.bssfp_signal(0.8, 1000.0, 50.0, 60.0) == pytest.approx(expected)
    assert phantom_anatomy.lge_signal(1.0, 480.0, np.log(2) * 480.0) == pytest.approx(0.0, abs=1e-12)
    assert phantom_anatomy.t2w_signal(1.0, 50.0, 50.0) == pytest.approx(np.exp(-1))
    with pytest.raises(CmrError, match="sequence"):
        phantom_anatomy.tissue_signals("FLAIR")


@pytest.mark.parametrize("seed", range(4))
def test_contrast_orderings_hold_in_every_sequence(seed):
    sim = simulate(seed)
    c0, lge, t2 = (_means(*sim[s][:2]) for s in ("C0", "LGE", "T2"))
    assert c0[2] > 1.5 * c0[1] and c0[3] > c0[1]           # bSSFP: bright LV/RV blood, dark myocardium
    assert lge[2] > 1.3 * lge[1] and lge[3] > lge[1]       # LGE: (near-)nulled myocardium below grey blood
    assert t2[1] > 2 * t2[2] and t2[1] > 2 * t2[3]         # T2: black blood


def test_scar_is_bright_in_lge(infarct_patient):
    image, label, _, info = infarct_patient["LGE"]
    scar = info["fractions"]["infarct"] > 0.99
    assert label[scar].tolist() == [1] * int(scar.sum())         # scar is labelled myocardium
    healthy = (label == 1) & (info["fractions"]["infarct"] == 0)
    assert image[scar].mean() > image[label == 2].mean() > image[healthy].mean()
    c0 = infarct_patient["C0"]
    assert c0[0][c0[1] == 2].mean() > c0[0][c0[1] == 1].mean()   # in bSSFP the same scar is not bright


def test_rician_noise_floor_is_rayleigh_in_air():
    quiet = simulate(0, noise=False)["C0"][0]
    noisy = simulate(0)["C0"][0]
    air = noisy[quiet == 0]
    assert air.size > 5000 and (air >= 0).all()
    assert air.mean() / air.std() == pytest.approx(np.sqrt(np.pi / 2) / np.sqrt(2 - np.pi / 2), rel=0.05)


def test_bias_field_is_smooth_and_present():
    flat = simulate(0, noise=False, bias=False)["C0"][0]
    biased = simulate(0, noise=False)["C0"][0]
    body = flat > 0.05 * flat.max()
    ratio = np.where(body, biased / np.where(body, flat, 1), np.nan)
    assert np.nanmax(ratio) / np.nanmin(ratio) > 1.2                       # a real field
    step = np.abs(np.diff(ratio, axis=0))
    assert np.nanmedian(step / ratio[1:]) < 0.05                            # smooth voxel to voxel


def test_each_sequence_has_its_own_grid():
    sim = simulate(2)
    for seq, acq in phantom.ACQUISITIONS.items():
        image, label, spacing, info = sim[seq]
        assert image.shape == label.shape == (acq.matrix, acq.matrix, info["slices"])
        assert acq.spacing[0] <= spacing[0] <= acq.spacing[1] and acq.thickness[0] <= spacing[2] <= acq.thickness[1]
        assert acq.slices[0] <= info["slices"] <= acq.slices[1]
        assert set(np.unique(label)) == {0, 1, 2, 3}
    assert sim["C0"][2] != sim["LGE"][2]


def test_heart_has_base_and_apex():
    image, label, _, _ = simulate(3)["LGE"]
    heart = [bool(label[:, :, z].any()) for z in range(label.shape[2])]
    assert heart.count(True) >= 8
    lv_area = [(label[:, :, z] == 2).sum() for z in range(label.shape[2])]
    first = heart.index(True)
    assert lv_area[first] < max(lv_area)          # the apex is smaller than the mid-ventricle


def test_deterministic_per_seed():
    a = simulate(1)
    b = phantom.simulate_patient(SEEDS[1])
    for s in ("C0", "LGE", "T2"):
        assert np.array_equal(a[s][0], b[s][0]) and np.array_equal(a[s][1], b[s][1])
    c = simulate(2)
    assert a["C0"][0].shape != c["C0"][0].shape or not np.array_equal(a["C0"][0], c["C0"][0])


# ---------------------------------------------------------------------------------------------
# the written data set

def test_written_dataset_reads_back_in_mscmrseg_layout(tiny_phantom):
    src = open_source(tiny_phantom)
    assert src.layout == "mscmrseg" and src.name == "phantom"
    assert src.patients == [1, 2, 3] and src.sequences == ["C0", "LGE", "T2"]
    for seq in src.sequences:
        raw = nib.load(str(src.image_path(1, seq)))
        assert raw.get_data_dtype() == np.int16
        lab = np.asarray(nib.load(str(src.label_path(1, seq))).dataobj)
        assert set(np.unique(lab)) <= {0, 200, 500, 600} and 500 in lab
        vol = src.load(1, seq, label="require")
        assert vol.spacing == pytest.approx(raw.header.get_zooms()[:3])
    rec = json.loads((tiny_phantom / "phantom.json").read_text())
    assert rec["patients"] == 3 and rec["seed"] == 7 and len(rec["patients_meta"]) == 3
    codes = {m["orientation"] for m in rec["patients_meta"]}
    assert codes <= {"PSR", "LSP"}


def test_workers_do_not_change_the_data(tmp_path, tiny_phantom):
    phantom.generate(tmp_path, patients=3, seed=7, workers=2, progress=False)
    for f in sorted(tiny_phantom.glob("patient*.nii.gz")):
        a = np.asarray(nib.load(str(f)).dataobj)
        b = np.asarray(nib.load(str(tmp_path / f.name)).dataobj)
        assert np.array_equal(a, b), f.name


def test_ensure_reuses_a_complete_dataset(tmp_path):
    phantom.ensure(tmp_path, patients=1, seed=3, progress=False)
    stamp = (tmp_path / "phantom.json").stat().st_mtime_ns
    phantom.ensure(tmp_path, patients=1, seed=3, progress=False)
    assert (tmp_path / "phantom.json").stat().st_mtime_ns == stamp
    (tmp_path / "phantom.json").unlink()                         # what an interrupted generation leaves
    (tmp_path / "phantom.partial").write_text("")
    phantom.ensure(tmp_path, patients=1, seed=3, progress=False)
    assert (tmp_path / "phantom.json").exists() and not (tmp_path / "phantom.partial").exists()


def test_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cmr_lib.data.phantom", str(tmp_path / "ph"), "--patients", "1",
                          "--seed", "5", "--workers", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "wrote 1 patients" in out.stdout
    assert len(list((tmp_path / "ph").glob("patient1_*.nii.gz"))) == 6
    bad = subprocess.run([sys.executable, "-m", "cmr_lib.data.phantom", str(tmp_path / "x"), "--patients", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: parameter 'patients' = 0: must be a positive integer"


def test_writing_does_not_advance_the_callers_seed(tmp_path):
    seed = np.random.SeedSequence(11)
    a = phantom.write_patient(tmp_path / "a", 1, seed)
    b = phantom.write_patient(tmp_path / "b", 1, seed)
    assert a == b


def test_a_phantom_folder_is_rewritten_whole_and_other_folders_only_on_request(tmp_path):
    from cmr_lib.core.errors import CmrError
    d = tmp_path / "ph"
    phantom.generate(d, patients=2, seed=1, workers=1, progress=False)
    phantom.generate(d, patients=1, seed=1, workers=1, progress=False)          # fewer: no patient 2 left behind
    assert sorted(f.name for f in d.iterdir()) == ["patient1_C0.nii.gz", "patient1_C0_manual.nii.gz",
                                                  "patient1_LGE.nii.gz", "patient1_LGE_manual.nii.gz",
                                                  "patient1_T2.nii.gz", "patient1_T2_manual.nii.gz", "phantom.json"]
    (d / "notes.txt").write_text("mine")
    with pytest.raises(CmrError, match="also holds other files \\(notes.txt\\)"):
        phantom.generate(d, patients=1, seed=1, workers=1, progress=False)
    phantom.generate(d, patients=1, seed=1, workers=1, progress=False, overwrite=True)
    assert (d / "notes.txt").read_text() == "mine" and (d / "phantom.json").is_file()
    assert not (d / "phantom.partial").exists()


def test_two_processes_asking_for_one_phantom_take_turns(tmp_path):
    """Notebooks or test workers side by side both call ensure on one folder: one writes it, the other waits and
    finds it complete (before the lock, one read a half-written phantom: '1 patients ... need at least 3')."""
    import subprocess
    import sys
    code = ("import sys; from cmr_lib.data import phantom; from cmr_lib.data.sources import open_source; "
            "phantom.ensure(sys.argv[1], patients=3, seed=7, progress=False); "
            "print(len(open_source(sys.argv[1]).patients_with('LGE', labelled=True)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ph")], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0] and outs == ["3", "3", "3"]
