"""The bad-input catalogue (issue 6): each case is a real file or parameter, answered by one line that
names the file or parameter and the problem, with nothing previously written damaged. The CLIs exit
non-zero with that line; notebooks show it without a traceback (CmrError._render_traceback_)."""
from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import heart_label, write_nifti

from cmr_lib.core.checks import check_epsilon_iterations
from cmr_lib.core.config import make_config
from cmr_lib.core.errors import CmrError
from cmr_lib.data.nifti import read_image
from cmr_lib.data.sources import open_source
from cmr_lib.training.checkpoints import load_checkpoint


def _img(shape=(32, 32, 4)):
    return np.random.default_rng(0).random(shape).astype(np.float32)


def _case(d: Path, name="patient1", seq="LGE", image=None, label=None, spacing=(1.0, 1.0, 5.0)):
    write_nifti(d / f"{name}_{seq}.nii.gz", _img() if image is None else image, spacing)
    if label is not False:
        write_nifti(d / f"{name}_{seq}_manual.nii.gz", heart_label() if label is None else label, spacing)
    return d


def _load(d: Path, seq="LGE", patient=1):
    return lambda: open_source(d).load(patient, seq)


def _affine_shifted(d):
    _case(d, label=False)
    aff = np.diag([1.0, 1.0, 5.0, 1.0])
    aff[0, 3] = 2.0
    write_nifti(d / "patient1_LGE_manual.nii.gz", heart_label(), affine=aff)
    return _load(d)


def _truncated(d):
    _case(d, label=False)
    path = d / "patient1_LGE.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return lambda: read_image(path)


def _not_nifti(d):
    (d / "patient1_LGE.nii.gz").write_bytes(gzip.compress(b"this is a text file, not an image"))
    return lambda: read_image(d / "patient1_LGE.nii.gz")


def _missing_sequence(d):
    _case(d, seq="C0")
    return _load(d, "LGE")


def _missing_label(d):
    _case(d, label=False)
    return lambda: open_source(d).load(1, "LGE", label="require")


def _checkpoint(d, **state):
    from cmr_lib.models.drunet import DRUNet
    model = DRUNet(depth=3, root=4)
    torch.save({"model": model.state_dict(), "step": 1, "config": {"kind": "segmenter"}, **state}, d / "ckpt.pt")
    return d / "ckpt.pt"


def _other_architecture(d):
    from cmr_lib.models.drunet import DRUNet
    path = _checkpoint(d)
    return lambda: load_checkpoint(path, model=DRUNet(depth=4, root=8))


def _other_profile(d):
    path = _checkpoint(d)
    return lambda: load_checkpoint(path, config={"kind": "segmenter", "segmenter": {"root": 16}})


def _truncated_checkpoint(d):
    path = _checkpoint(d)
    path.write_bytes(path.read_bytes()[:300])
    return lambda: load_checkpoint(path)


class _RunsCode:
    """Unpickling this would run a shell command (the attack a weights_only load refuses)."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/cmr_pwned_by_pickle",))


def _malicious_pickle(d, protocol=pickle.DEFAULT_PROTOCOL):
    path = d / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _RunsCode(), "step": 1, "config": {}}, f, protocol=protocol)
    return lambda: load_checkpoint(path)


def _escaping_profile(d):
    from cmr_lib.core.paths import repo_root
    text = (repo_root() / "params" / "smoke.yaml").read_text().replace("profile: smoke", "profile: ../../evil")
    (d / "mine.yaml").write_text(text)
    return lambda: make_config(profile=str(d / "mine.yaml"))


def _unwritable_output(d):
    out = d / "readonly"
    out.mkdir()
    if os.geteuid() == 0:            # root writes through permission bits: a file in the way stands in
        blocker = d / "file.txt"
        blocker.write_text("x")
        out = blocker / "results"
    else:
        out.chmod(0o555)
    return lambda: make_config(profile="smoke", output_root=str(out))


def _include_original_as_string(d, phantom_dir):
    from cmr_lib.study.runs import run_setting
    cfg = make_config(profile="smoke", setting=0, stylizer="gin", data_dir=phantom_dir, output_root=d / "out")
    return lambda: run_setting(cfg, open_source(phantom_dir), include_original="false", progress=False)


def _phantom_over_real(d):
    from cmr_lib.data import phantom
    _case(d, seq="C0")                                       # a real patient1, no phantom marker
    before = {f.name: f.read_bytes() for f in d.iterdir()}

    def action():
        try:
            phantom.generate(d, patients=1, workers=1, progress=False)
        finally:
            assert {f.name: f.read_bytes() for f in d.iterdir()} == before      # nothing replaced or added
    return action


def _header(d, name="patient1_LGE.nii.gz", **fields):
    """An image whose stored header has `fields` as given (nibabel would fix some of them when writing)."""
    import nibabel as nib
    img = nib.Nifti1Image(_img(), np.diag([1.0, 1.0, 5.0, 1.0]))
    for key, value in fields.items():
        if key == "units":
            img.header.set_xyzt_units(value)
        else:
            img.header[key] = value
    nib.save(img, str(d / name))
    return lambda: read_image(d / name)


def _pixdim(*zooms):
    return np.array([1.0, *zooms, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)


def _nan_affine(d):
    import nibabel as nib
    path = d / "patient1_LGE.nii"
    img = nib.Nifti1Image(_img(), np.diag([1.0, 1.0, 5.0, 1.0]))
    img.header.set_qform(None, code=0)
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    raw[280:284] = np.float32(np.nan).tobytes()         # srow_x[0] as stored (nibabel rewrites it on save)
    path.write_bytes(bytes(raw))
    return lambda: read_image(path)


def _myops_values_in_mscmrseg(d):
    lab = heart_label()
    return _load(_case(d, label=np.where(lab == 200, 2221, lab).astype(np.int16)))


def _folder_named_like_a_case(d):
    _case(d, seq="C0")
    (d / "patient2_C0.nii.gz").mkdir()
    return lambda: open_source(d)


def _yaml_syntax_error(d):
    from cmr_lib.core.paths import repo_root
    text = (repo_root() / "params" / "smoke.yaml").read_text().replace("profile: smoke", "profile: [mine")
    (d / "mine.yaml").write_text(text)
    return lambda: make_config(profile=str(d / "mine.yaml"))


def _proc_output_root(d):
    return lambda: make_config(profile="smoke", output_root="/proc/cmr_results")


def _bad_test_volume_before_training(d, phantom_dir):
    import shutil

    from cmr_lib.data.splits import split_for
    from cmr_lib.study.runs import run_setting
    data = d / "phantom"
    shutil.copytree(phantom_dir, data)
    test = split_for(open_source(data))["test"][-1]
    (data / f"patient{test}_LGE.nii.gz").write_bytes(b"")               # an empty file among the test volumes
    cfg = make_config(profile="smoke", setting=0, data_dir=data, output_root=d / "out")

    def action():
        try:
            run_setting(cfg, progress=False)
        finally:
            assert not list((d / "out").rglob("*.pt"))                      # stopped before any training
    return action


# ---------------------------------------------------------------------------------------------
# issue 39: reuse that can be trusted (each case failed on the main before it, with no error or a traceback)

def _near_miss(d, wrong):
    _case(d, name="patient1", seq="C0")
    write_nifti(d / "patient1_LGE.nii.gz", _img() * 2)
    write_nifti(d / wrong, heart_label())
    return lambda: open_source(d)


def _one_patient_twice(d):
    lab = heart_label()
    for p in (101, 102):
        img = np.random.default_rng(p).random((32, 32, 4)).astype(np.float32)
        for seq in ("C0", "DE", "T2"):
            write_nifti(d / f"myops_training_{p}_{seq}.nii.gz", img * (1 + ("C0", "DE", "T2").index(seq)))
        write_nifti(d / f"myops_training_{p}_gd.nii.gz", lab)
    import shutil
    for seq in ("C0", "DE", "T2", "gd"):                                 # patient 101 again, as 117
        shutil.copy(d / f"myops_training_101_{seq}.nii.gz", d / f"myops_training_117_{seq}.nii.gz")
    return lambda: open_source(d)


def _no_c0_labels(d):
    from cmr_lib.data.splits import split_for
    for p in (1, 2, 3):
        write_nifti(d / f"patient{p}_C0.nii.gz", _img() + p)
        write_nifti(d / f"patient{p}_LGE.nii.gz", _img() * p)
    write_nifti(d / "patient1_LGE_manual.nii.gz", heart_label())
    return lambda: split_for(open_source(d))


def _manifest(d, dest):
    path = d / "manifest.tsv"
    path.write_text(f"dest\trepository\tpath\tsha256\tcommit\n{dest}\towner/repo\tx.nii.gz\t{'0' * 64}\t\n")
    return path


def _set_for_download(d):
    """A one-file set 'myops2020' in a mirror and its manifest: (mirror, manifest, DEST)."""
    from cmr_lib.core.digests import file_digest
    mirror = d / "mirror"
    (mirror / "myops2020").mkdir(parents=True)
    write_nifti(mirror / "myops2020" / "myops_training_101_C0.nii.gz", _img())
    write_nifti(mirror / "myops2020" / "myops_training_101_gd.nii.gz", heart_label())
    lines = ["dest\trepository\tpath\tsha256\tcommit"] + [
        f"myops2020/{f.name}\towner/repo\t{f.name}\t{file_digest(f)}\t" for f in sorted((mirror / "myops2020").iterdir())]
    (d / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return mirror, d / "manifest.tsv", d / "dest"


def _download_over_a_users_file(d):
    from cmr_lib.data.download import download
    mirror, manifest, dest = _set_for_download(d)
    (dest / "myops2020").mkdir(parents=True)
    (dest / "myops2020" / "myops_training_101_gd.nii.gz").write_bytes(b"my own corrected labels")
    return lambda: download(dest, mirror=mirror, manifest=manifest, only=("myops2020",), progress=False)


def _download_onto_a_folder(d):
    from cmr_lib.data.download import download
    mirror, manifest, dest = _set_for_download(d)
    (dest / "myops2020" / "myops_training_101_C0.nii.gz").mkdir(parents=True)
    return lambda: download(dest, mirror=mirror, manifest=manifest, only=("myops2020",), progress=False)


def _partial_set(d):
    from cmr_lib.data.download import check_set, download
    mirror, manifest, dest = _set_for_download(d)
    download(dest, mirror=mirror, manifest=manifest, only=("myops2020",), progress=False)
    (dest / "myops2020" / "myops_training_101_gd.nii.gz").unlink()
    return lambda: check_set(dest / "myops2020", "myops2020", manifest=manifest)


def _disk_full_checkpoint(d):
    from unittest import mock

    from cmr_lib.models.drunet import DRUNet
    from cmr_lib.training.checkpoints import save_checkpoint
    (d / "ckpt.pt").write_bytes(b"the earlier checkpoint")

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: "
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    def action():
        with mock.patch.object(torch, "save", full):
            save_checkpoint(d / "ckpt.pt", model=DRUNet(depth=3, root=4), optimizer=None, step=1, config={},
                            history={})
    return action


def _disk_full_table(d):
    import errno
    from unittest import mock

    from cmr_lib.core.atomic import write_text
    (d / "table2.md").write_text("the earlier table")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    def action():
        with mock.patch.object(Path, "write_text", full):
            write_text(d / "table2.md", "a new table")
    return action


def _truncated_record(d):
    from cmr_lib.report.tables import load_runs
    run = d / "results" / "runs" / "smoke_phantom_setting0_none_seed0"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"run_name": "smoke_phantom_setting0_none_seed0", "metr')
    return lambda: load_runs(d / "results")


def _truncated_record_in_a_run(d, phantom):
    from cmr_lib.study.runs import run_setting
    cfg = make_config(profile="smoke", setting=0, data_dir=phantom, output_root=d)
    run = d / "results" / "runs" / "smoke_phantom_setting0_none_seed0"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"run_name": "smoke_phan')
    return lambda: run_setting(cfg, progress=False)


def _second_reproduce(d):
    from cmr_lib.pipeline import reproduce as rp
    from cmr_lib.pipeline.plan import output_lock
    cfg = make_config(profile="smoke", output_root=d / "out")
    nb = d / "x.ipynb"
    nb.write_text("{}")

    def action():
        with output_lock(cfg):
            rp.reproduce("smoke", steps_list=[("x", str(nb), {})], output_root=d / "out")
    return action


@dataclass
class Case:
    name: str
    make: object                # (tmp folder[, phantom]) -> a callable that must raise CmrError
    message: str                # regex the one line must match
    names: str                  # what the line must name (a file or a parameter)
    phantom: bool = False       # make() also takes the tiny phantom's folder


CASES = [
    # data folders and files
    Case("data folder missing", lambda d: lambda: open_source(d / "nope"), "data folder not found", "nope"),
    Case("data folder empty", lambda d: lambda: open_source(d), "data folder is empty", "/data"),
    Case("no known files", lambda d: ((d / "notes.txt").write_text("x"), lambda: open_source(d))[1],
         "no MS-CMRSeg 2019 .* files found", "/data"),
    Case("MS-CMRSeg and MyoPS files mixed", lambda d: (write_nifti(d / "patient1_C0.nii.gz", _img()),
                                                       write_nifti(d / "myops_training_101_C0.nii.gz", _img()),
                                                       lambda: open_source(d))[2], "mixes MS-CMRSeg files", "/data"),
    Case("label file without its image", lambda d: (write_nifti(d / "patient1_C0_manual.nii.gz", heart_label()),
                                                    lambda: open_source(d))[1], "label file without its image",
         "patient1_C0_manual.nii.gz"),
    Case("patient missing one sequence", _missing_sequence, "patient 1 has no LGE image", "/data"),
    Case("label file missing", _missing_label, "patient 1 has no LGE label file", "/data"),
    Case("image and label shapes differ", lambda d: _load(_case(d, label=heart_label((32, 30, 4)))),
         r"shape \(32, 30, 4\) differs from patient1_LGE.nii.gz", "patient1_LGE_manual.nii.gz"),
    Case("affines differ beyond tolerance", _affine_shifted, "affine differs from patient1_LGE.nii.gz",
         "patient1_LGE_manual.nii.gz"),
    Case("unknown label value 300", lambda d: _load(_case(d, label=np.where(heart_label() == 200, 300,
                                                                            heart_label()))),
         r"unknown label value\(s\) \[300\]", "patient1_LGE_manual.nii.gz"),
    Case("label volume all background", lambda d: _load(_case(d, label=np.zeros((32, 32, 4), np.int16))),
         "label volume is all background", "patient1_LGE_manual.nii.gz"),
    Case("truncated .nii.gz", _truncated, "corrupt or truncated|not a readable NIfTI", "patient1_LGE.nii.gz"),
    Case("not a NIfTI", _not_nifti, "not a readable NIfTI", "patient1_LGE.nii.gz"),
    Case("4-D volume", lambda d: _load(_case(d, image=_img((32, 32, 4, 3)))), "is 4-D", "patient1_LGE.nii.gz"),
    Case("NaN voxels", lambda d: _load(_case(d, image=np.where(heart_label() > 0, np.nan, 1.0).astype(np.float32))),
         "NaN or Inf voxels", "patient1_LGE.nii.gz"),
    Case("Inf voxels", lambda d: _load(_case(d, image=np.where(heart_label() > 0, np.inf, 1.0).astype(np.float32))),
         "NaN or Inf voxels", "patient1_LGE.nii.gz"),
    Case("constant image", lambda d: _load(_case(d, image=np.full((32, 32, 4), 3.0, np.float32))),
         "image is constant", "patient1_LGE.nii.gz"),
    Case("voxel size 0 in the header (nibabel would read it as 1)", lambda d: _header(d, pixdim=_pixdim(0, 1, 5)),
         r"invalid voxel size \(0.0, 1.0, 5.0\)", "patient1_LGE.nii.gz"),
    Case("negative voxel size", lambda d: _header(d, pixdim=_pixdim(1, -1, 5)), "invalid voxel size",
         "patient1_LGE.nii.gz"),
    Case("NaN voxel size", lambda d: _header(d, pixdim=_pixdim(1, np.nan, 5)), "invalid voxel size",
         "patient1_LGE.nii.gz"),
    Case("implausible voxel size", lambda d: _header(d, pixdim=_pixdim(1, 1, 5000)), "is not plausible",
         "patient1_LGE.nii.gz"),
    Case("voxel size in metres that means metres", lambda d: _header(d, units="meter"),
         r"voxel size \(1000.0, 1000.0, 5000.0\) mm \(header unit meter\) is not plausible", "patient1_LGE.nii.gz"),
    Case("NaN in the affine", _nan_affine, "affine has NaN or Inf", "patient1_LGE.nii"),
    Case("empty volume (192 x 192 x 0)", lambda d: _load(_case(d, image=np.zeros((32, 32, 0), np.float32),
                                                               label=False)),
         r"is empty, shape \(32, 32, 0\)", "patient1_LGE.nii.gz"),
    Case("a folder named like a case", _folder_named_like_a_case, "is a folder", "patient2_C0.nii.gz"),
    Case("MyoPS label values in an MS-CMRSeg file", _myops_values_in_mscmrseg,
         r"unknown label value\(s\) \[2221\] in an MS-CMRSeg 2019 file", "patient1_LGE_manual.nii.gz"),
    Case("non-integer labels", lambda d: _load(_case(d, label=heart_label().astype(np.float32) + 0.5)),
         "non-integer values", "patient1_LGE_manual.nii.gz"),
    # parameters
    Case("unknown setting", lambda d: lambda: make_config(setting=7), "choose one of 0, 1, 2, 3", "'setting' = 7"),
    Case("unknown stylizer", lambda d: lambda: make_config(setting=1, stylizer="foo"), "choose one of 'rain'",
         "'stylizer' = 'foo'"),
    Case("unknown profile", lambda d: lambda: make_config(profile="huge"), "profile", "huge"),
    Case("zero iterations", lambda d: lambda: make_config(overrides={"segmenter.iterations": 0}), "must be >= 1",
         "segmenter.iterations"),
    Case("negative iterations", lambda d: lambda: make_config(overrides={"stylizer.iterations": -5}),
         "must be >= 1", "stylizer.iterations"),
    Case("epsilon_iterations not an int", lambda d: lambda: check_epsilon_iterations(2.5), "must be a non-negative integer", "'epsilon_iterations' = 2.5"),
    Case("negative epsilon_iterations", lambda d: lambda: check_epsilon_iterations(-1), "must be a non-negative integer", "'epsilon_iterations' = -1"),
    # checkpoints
    Case("checkpoint of another architecture", _other_architecture,
         r"checkpoint is for another architecture \(\d+ tensors missing, \d+ unexpected, \d+ of another shape",
         "ckpt.pt"),
    Case("checkpoint of another profile", _other_profile, "made with another configuration", "ckpt.pt"),
    Case("truncated checkpoint", _truncated_checkpoint, "not a loadable checkpoint: corrupt or truncated", "ckpt.pt"),
    Case("pickle that runs code on load", _malicious_pickle, "refused, it holds objects other than tensors",
         "evil.pt"),
    Case("pickle (protocol 2) that runs code on load", lambda d: _malicious_pickle(d, protocol=2),
         r"refused, .*\((posix|nt)\.system\), which could run code", "evil.pt"),
    Case("checkpoint file missing", lambda d: lambda: load_checkpoint(d / "no.pt"),
         "checkpoint not found", "no.pt"),
    # outputs
    Case("profile name that would escape the results folder", _escaping_profile, "must be a plain name",
         "'profile' = '../../evil'"),
    Case("output folder not writable", _unwritable_output, "not writable|is a file, not a folder",
         "'output_root'"),
    Case("include_original given as the string 'false'", _include_original_as_string,
         "must be True or False", "'include_original' = 'false'", phantom=True),
    Case("data_dir given as an empty string", lambda d: lambda: make_config(data_dir=""),
         "is empty: give a folder, or None for the built-in phantom", "'data_dir'"),
    Case("YAML syntax error", _yaml_syntax_error, r"not valid YAML at line \d+, column \d+", "mine.yaml"),
    Case("a profile path that is a folder", lambda d: lambda: make_config(profile=str(d / "x.yaml"))
         if (d / "x.yaml").mkdir() is None else None, "it is a folder", "'profile'"),
    Case("output_root under /proc (writable by permission bits for root)", _proc_output_root,
         "does not take new files|not writable", "'output_root'"),
    Case("an empty test volume, found before the DRU-Net trains", _bad_test_volume_before_training,
         "not a readable NIfTI|corrupt or truncated", "_LGE.nii.gz", phantom=True),
    Case("phantom into a folder of real patients", _phantom_over_real,
         "folder is not empty and holds no phantom written by this command", "/data"),
    # issue 39
    Case("a label named patient1_lge_manual.nii.gz (would be left unread)",
         lambda d: _near_miss(d, "patient1_lge_manual.nii.gz"), "rename it patient1_LGE_manual.nii.gz",
         "patient1_lge_manual.nii.gz"),
    Case("a label named patient1_LGE_Manual.nii.gz (would be left unread)",
         lambda d: _near_miss(d, "patient1_LGE_Manual.nii.gz"), "rename it patient1_LGE_manual.nii.gz",
         "patient1_LGE_Manual.nii.gz"),
    Case("one MyoPS patient under two numbers", _one_patient_twice, "the same image as myops_training_101_C0",
         "myops_training_117_C0.nii.gz"),
    Case("an MS-CMRSeg folder without C0 labels", _no_c0_labels, "no labelled bSSFP .C0. volumes to train on", "/data"),
    Case("a 99 mm in-plane voxel size", lambda d: _header(d, pixdim=_pixdim(99, 99, 5)),
         r"voxel size \(99.0, 99.0, 5.0\) mm .* is not plausible for a cardiac MR scan", "patient1_LGE.nii.gz"),
    Case("a manifest destination with ..", lambda d: (lambda: __import__("cmr_lib.data.download").data.download
                                                     .load_manifest(_manifest(d, "myops2020/../../evil.nii.gz"))),
         "could write outside the data folder", "manifest.tsv"),
    Case("a download over a file of the user's", _download_over_a_users_file, "this command did not write it",
         "myops_training_101_gd.nii.gz"),
    Case("a download onto a folder", _download_onto_a_folder, "is a folder", "myops_training_101_C0.nii.gz"),
    Case("a downloaded set with a file removed", _partial_set, "1 of the 2 files of myops2020 are missing",
         "myops_training_101_gd.nii.gz"),
    Case("disk full while saving a checkpoint", _disk_full_checkpoint, "no space left on the device", "ckpt.pt"),
    Case("disk full while writing a table", _disk_full_table, "no space left on the device", "table2.md"),
    Case("a truncated run.json read by the tables", _truncated_record, "not valid JSON", "run.json"),
    Case("a truncated run.json found by its run", _truncated_record_in_a_run, "not valid JSON", "run.json",
         phantom=True),
    Case("a second make reproduce into one output folder", _second_reproduce,
         "another make reproduce is writing here", "/out"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue(case, tmp_path, request):
    d = tmp_path / "data"
    d.mkdir()
    sentinel = tmp_path / "earlier_result.json"
    sentinel.write_text('{"kept": true}')
    action = case.make(d, request.getfixturevalue("tiny_phantom")) if case.phantom else case.make(d)
    before = _checksums(tmp_path)                                    # every file that existed before
    with pytest.raises(CmrError) as err:
        action()
    line = str(err.value)
    assert "\n" not in line and case.names in line, line
    import re
    assert re.search(case.message, line), line
    assert err.value._render_traceback_() == [f"CmrError: {line}"]            # how a notebook shows it
    assert sentinel.read_text() == '{"kept": true}'
    after = _checksums(tmp_path)
    assert {f: after.get(f) for f in before} == before, "a file that existed before was changed or removed"
    assert not Path("/tmp/cmr_pwned_by_pickle").exists()


def _checksums(folder: Path) -> dict:
    import hashlib
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*")) if f.is_file()}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (("cmr_lib.evaluation.evaluate", "{d}/nope", "{d}"), "nope: "),
    (("cmr_lib.data.phantom", "{d}/out", "--patients", "0"), "patients"),
    (("cmr_lib.data.phantom", "{d}/out", "--workers", "-1"), "'workers' = -1"),
    (("cmr_lib.evaluation.evaluate", "{d}/pred", "{d}/gt", "--out", "{d}/gt/patient1_LGE_manual.nii.gz"),
     "--out is one of the input files"),
    (("cmr_lib.evaluation.evaluate", "{d}/pred", "{d}/gt", "--out", "{d}/pred"), "--out is a folder"),
    (("cmr_lib.pipeline.reproduce", "--profile", "huge"), "huge"),
    (("cmr_lib.pipeline.reproduce", "--jobs", "0"), "'jobs' = 0"),
])
def test_clis_exit_nonzero_with_one_line(tmp_path, args, message):
    for sub in ("pred", "gt"):
        _case(tmp_path / sub if (tmp_path / sub).mkdir() is None else None)
    kept = (tmp_path / "gt" / "patient1_LGE_manual.nii.gz").read_bytes()
    r = _cli(*(a.format(d=tmp_path) for a in args))
    assert (tmp_path / "gt" / "patient1_LGE_manual.nii.gz").read_bytes() == kept
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# inputs that are odd but valid: accepted, with the documented result

def test_int_and_float_storage_and_extreme_intensities_read_alike(tmp_path):
    base = np.random.default_rng(0).random((32, 32, 4))
    for dtype, scale in ((np.int16, 3000), (np.float64, 1.0), (np.float32, 1.0), (np.float32, 1e9)):
        path = write_nifti(tmp_path / f"img_{np.dtype(dtype).name}_{scale:g}.nii.gz", (base * scale).astype(dtype))
        img, zooms, _ = read_image(path)
        assert img.dtype == np.float32 and np.isfinite(img).all() and zooms == (1.0, 1.0, 5.0)
        from cmr_lib.data.transforms import normalise
        n = normalise(img, (0.5, 99.5))
        assert n.min() >= 0 and n.max() <= 1 and np.corrcoef(n.ravel(), base.ravel())[0, 1] > 0.95


def test_an_image_smaller_than_the_crop_is_padded_and_predicted_on_its_own_grid(tmp_path):
    from cmr_lib.evaluation.inference import predict_volume
    from cmr_lib.models.drunet import DRUNet
    write_nifti(tmp_path / "patient1_LGE.nii.gz", _img((16, 16, 3)))
    write_nifti(tmp_path / "patient1_LGE_manual.nii.gz", heart_label((16, 16, 3)))
    vol = open_source(tmp_path).load(1, "LGE")
    pred = predict_volume(DRUNet(depth=3, root=4).eval(), vol, crop=64, spacing_mm=1.5, percentiles=(0.5, 99.5))
    assert pred.shape == (16, 16, 3) and set(np.unique(pred)) <= {0, 1, 2, 3}


def test_an_empty_prediction_scores_dice_zero_and_an_undefined_distance(tmp_path):
    from cmr_lib.evaluation.evaluate import evaluate_dirs, summarize
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    lab = heart_label()
    write_nifti(gt / "patient1_LGE.nii.gz", lab)
    write_nifti(pred / "patient1_LGE.nii.gz", np.where(lab == 600, 0, lab).astype(np.int16))   # no RV at all
    df = evaluate_dirs(pred, gt)
    rv = df[df["structure"] == "RV"].iloc[0]
    assert rv["dice"] == 0.0 and np.isnan(rv["hd"])
    s = summarize(df)
    assert s.loc["hd", "nan_RV"] == 1 and s.loc["dice", "LV"] == 1.0


def test_voxel_sizes_in_metres_or_microns_are_converted_to_mm(tmp_path):
    import nibabel as nib
    for unit, zooms in (("meter", (0.0015, 0.0015, 0.008)), ("micron", (1500.0, 1500.0, 8000.0))):
        img = nib.Nifti1Image(_img(), np.diag([*zooms, 1.0]))
        img.header.set_xyzt_units(unit)
        nib.save(img, str(tmp_path / f"{unit}.nii.gz"))
        assert np.allclose(read_image(tmp_path / f"{unit}.nii.gz")[1], (1.5, 1.5, 8.0))


def test_a_yaml_number_without_a_dot_is_a_number(tmp_path):
    from cmr_lib.core.paths import repo_root
    (tmp_path / "mine.yaml").write_text("profile: mine\nextends: smoke\nstylizer:\n  lr: 1e-3\n")   # YAML 1.1: a string
    assert make_config(profile=str(tmp_path / "mine.yaml")).sizes.stylizer.lr == 1e-3
    assert repo_root().name                                           # the profiles it extends are the repository's


def test_myops_label_values_count_as_myocardium_in_myops_files(tmp_path):
    from cmr_lib.data.nifti import read_label
    lab = heart_label()
    path = write_nifti(tmp_path / "myops_training_101_gd.nii.gz", np.where(lab == 200, 1220, lab).astype(np.int16))
    assert (read_label(path)[0] == 1).sum() == (lab == 200).sum()
