"""Reuse that can be trusted (issue 39): an edited label reruns what read it and changes its numbers, a comment or a
key nobody reads reruns nothing, FORCE retrains, one profile never writes over another's files, a folder named like
a command is only a name, a step whose files vanished runs again, and a killed run finishes with what its record
says. Each test failed on the main before it."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cmr_lib.core.config import make_config
from cmr_lib.core.digests import FORCE_ENV, STEP_FILES_ENV, read_step_files
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import repo_root
from cmr_lib.data.sources import open_source
from cmr_lib.pipeline import reproduce as rp
from cmr_lib.study.runs import run_setting
from conftest import tiny_notebook


def _data(tiny_phantom, where: Path, ext: str = ".nii.gz") -> Path:
    """A copy of the tiny phantom (uncompressed with ext='.nii': an edit then keeps every file's size)."""
    where.mkdir(parents=True)
    for f in tiny_phantom.iterdir():
        if f.name.endswith(".nii.gz") and ext == ".nii":
            nib.save(nib.load(str(f)), str(where / f.name.replace(".nii.gz", ".nii")))
        else:
            shutil.copy(f, where / f.name)
    return where


def _edit_label(path: Path) -> None:
    """Relabel a label's myocardium (200) as blood pool (500), in place: same dtype and (uncompressed) same size."""
    img = nib.load(str(path))
    lab = np.asarray(img.dataobj)
    size = path.stat().st_size
    nib.save(nib.Nifti1Image(np.where(lab == 200, 500, lab).astype(lab.dtype), img.affine, img.header), str(path))
    if path.suffix == ".nii":
        assert path.stat().st_size == size


def _row(data, out, **kw):
    return run_setting(make_config(profile="smoke", setting=0, data_dir=data, output_root=out, **kw), progress=False)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_an_edited_training_label_retrains_the_row_and_changes_its_numbers(tiny_phantom, tmp_path, ext):
    data = _data(tiny_phantom, tmp_path / "data", ext)
    first = _row(data, tmp_path / "out")
    train = open_source(data)
    label = train.label_path(1, "C0")                                 # patient 1 trains (3-patient phantom)
    _edit_label(label)
    second = _row(data, tmp_path / "out")
    assert not second.segmenter.info["reused"] and second.segmenter.run_dir != first.segmenter.run_dir
    assert second.record["metrics"] != first.record["metrics"]
    assert _row(data, tmp_path / "out").segmenter.info["reused"]     # and the edited data is then reused


def test_an_edited_test_label_rescores_with_the_same_network(tiny_phantom, tmp_path):
    data = _data(tiny_phantom, tmp_path / "data")
    first = _row(data, tmp_path / "out")
    _edit_label(open_source(data).label_path(3, "LGE"))              # patient 3 is the test patient
    second = _row(data, tmp_path / "out")
    assert second.segmenter.info["reused"] and second.segmenter.run_dir == first.segmenter.run_dir
    lv = [[r["dice"] for r in rec["metrics"]["test"] if r["structure"] == "LV"] for rec in (first.record, second.record)]
    assert lv[0] != lv[1]


def test_force_retrains_what_was_made_before_once(tiny_phantom, tmp_path, monkeypatch):
    first = _row(tiny_phantom, tmp_path)
    monkeypatch.setenv(FORCE_ENV, str(time.time() + 1e-3))
    time.sleep(0.01)
    forced = _row(tiny_phantom, tmp_path)
    assert not forced.segmenter.info["reused"] and forced.record["segmenter"]["reused"] is False     # and rescored
    assert first.record["segmenter"]["reused"] is False
    assert _row(tiny_phantom, tmp_path).segmenter.info["reused"]      # made during the forced run: reused


def test_a_reused_network_records_the_threads_it_was_trained_with(tiny_phantom, tmp_path):
    data = _data(tiny_phantom, tmp_path / "data")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _row(data, tmp_path / "out")
        _edit_label(open_source(data).label_path(3, "LGE"))         # scored again, with the network reused ...
        torch.set_num_threads(2)
        again = _row(data, tmp_path / "out")
    finally:
        torch.set_num_threads(threads)
    assert again.segmenter.info["reused"]
    assert again.record["torch_threads"] == 1 and again.record["torch_threads_scoring"] == 2   # ... on 2 threads


def test_a_kill_between_the_record_and_final_pt_finishes_with_the_best_weights(tiny_phantom, tmp_path, monkeypatch):
    from cmr_lib.training import checkpoints
    save = checkpoints.save_checkpoint

    def killed_at_final(path, **kw):
        if Path(path).name == "final.pt":
            raise KeyboardInterrupt("killed")
        return save(path, **kw)

    monkeypatch.setattr(checkpoints, "save_checkpoint", killed_at_final)
    with pytest.raises(KeyboardInterrupt):
        _row(tiny_phantom, tmp_path)
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    run = _row(tiny_phantom, tmp_path)                                # no FileNotFoundError: it finishes
    final = torch.load(run.segmenter.run_dir / "final.pt", weights_only=True)
    best = torch.load(run.segmenter.run_dir / "best.pt", weights_only=True)
    meta = json.loads((run.segmenter.run_dir / "meta.json").read_text())
    assert all(torch.equal(final["model"][k], best["model"][k]) for k in best["model"])
    assert meta["best_step"] == best["step"] and not (run.segmenter.run_dir / "last.pt").exists()
    (run.segmenter.run_dir / "meta.json").unlink()                     # final.pt without its record: not finished
    again = _row(tiny_phantom, tmp_path)
    assert not again.segmenter.info["reused"] and (run.segmenter.run_dir / "meta.json").is_file()


def test_a_run_notes_the_files_its_step_rests_on(tiny_phantom, tmp_path, monkeypatch):
    _row(tiny_phantom, tmp_path)
    monkeypatch.setenv(STEP_FILES_ENV, str(tmp_path / "files.txt"))
    run = _row(tiny_phantom, tmp_path)                                # reused: the record and checkpoint are noted
    noted = read_step_files(tmp_path / "files.txt")
    assert str((run.run_dir / "run.json").resolve()) in noted
    assert str((run.segmenter.run_dir / "final.pt").resolve()) in noted


# ---------------------------------------------------------------------------------------------
# make reproduce

def _repo_copy(tmp_path: Path) -> Path:
    """The parts of the repository a plan reads, with its committed results and figures, to edit freely."""
    root = tmp_path / "repo"
    for sub in ("cmr_lib", "params", "notebooks", "results", "figures"):
        shutil.copytree(repo_root() / sub, root / sub, ignore=shutil.ignore_patterns("__pycache__", "runs", "notebooks"))
    return root


def _keys(**kw) -> dict:
    return {p["dst"].name: p["key"] for p in rp.make_plan(**kw)["steps"]}


def test_a_comment_or_a_key_no_step_reads_reruns_nothing_and_an_edited_label_reruns_every_step(
        tiny_phantom, tmp_path, monkeypatch):
    root = _repo_copy(tmp_path)
    monkeypatch.setenv("CMR_REPO", str(root))
    data = _data(tiny_phantom, tmp_path / "data")
    plan = dict(profile="smoke", data_dir=data, seeds=2, output_root=tmp_path / "out")
    keys = _keys(**plan)
    smoke = root / "params" / "smoke.yaml"
    smoke.write_text("# a comment at the top\n" + smoke.read_text().replace("  seeds: 1", "  seeds: 3  # another"))
    paper = root / "params" / "paper.yaml"
    paper.write_text(paper.read_text().replace("iterations:", "iterations: 7 #", 1))   # another profile's value
    assert _keys(**plan) == keys
    smoke.write_text(smoke.read_text().replace("examples: 4", "examples: 3"))
    changed = {k for k, v in _keys(**plan).items() if v != keys[k]}
    assert "prepare_stylizers_seed1" not in changed and "05_settings_setting0.ipynb" in changed   # who shows examples
    keys = _keys(**plan)
    _edit_label(open_source(data).label_path(1, "C0"))
    assert all(v != keys[k] for k, v in _keys(**plan).items())      # every step reads the data


def test_a_smoke_run_leaves_every_committed_file_unchanged(tmp_path, monkeypatch):
    root = _repo_copy(tmp_path)
    monkeypatch.setenv("CMR_REPO", str(root))
    before = {f: f.read_bytes() for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts}
    rp.reproduce("smoke", steps_list=[("DRU-Net", "04_drunet.ipynb", {})])           # no output_root given
    after = {f: f.read_bytes() for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts}
    assert {f: after.get(f) for f in before} == before
    new = {f.relative_to(root).parts[:2] for f in after if f not in before}
    assert new and new <= {("phantom", "smoke"), ("data", "phantom")}, new
    assert (root / "phantom" / "smoke" / "figures").is_dir()


def test_a_folder_named_like_a_command_is_only_a_name(tmp_path):
    """Through Snakemake (both ways of giving it the options) and through make."""
    from test_snakemake import SNAKEFILE, SNAKEMAKE
    pwned = tmp_path / "pwned"
    out = tmp_path / f"out$(touch {pwned})`touch {pwned}`"
    nb = tiny_notebook(tmp_path / "a.ipynb", "import pathlib\np = pathlib.Path(output_root)\np.mkdir(parents=True, "
                   "exist_ok=True)\n(p / 'a.txt').write_text('ran')")
    (tmp_path / "steps.json").write_text(json.dumps([["a", str(nb), {}, False]]))
    # (Snakemake's --config strips a quote that ends the value: the folder is not the last option there)
    argv = ["--output-root", str(out), "--steps-file", str(tmp_path / "steps.json"), "--profile", "smoke"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"argv": argv}))
    for how in (["--configfile", str(config)], ["--config", f"args={shlex.join(argv)}"]):
        run = subprocess.run([str(SNAKEMAKE), "-s", str(SNAKEFILE), "--cores", "1", "--nolock", *how], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert (out / "a.txt").read_text() == "ran" and not pwned.exists()
        (out / "a.txt").unlink()
        shutil.rmtree(out / "results")
    folder = tmp_path / "x$(shell touch cmr_pwned_39)$(touch cmr_pwned_39)`touch cmr_pwned_39`"   # make runs in the repo
    folder.mkdir()
    run = subprocess.run(["make", "-s", "-C", str(repo_root()), "reproduce", f"DATA_DIR={folder}", "PROFILE=smoke"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "data folder is empty" in run.stderr and str(folder) in run.stderr, run.stderr
    assert not (repo_root() / "cmr_pwned_39").exists() and not pwned.exists()


WRITE = ("from cmr_lib.core.atomic import write_text\nwrite_text(output_root + '/{n}.txt', '{n}')")


def test_a_step_whose_files_vanished_runs_again(tmp_path):
    from test_snakemake import _snake
    a = tiny_notebook(tmp_path / "a.ipynb", WRITE.format(n="a"))
    b = tiny_notebook(tmp_path / "b.ipynb", "x = 1")
    steps = [("a", str(a), {}), ("b", str(b), {})]
    out = tmp_path / "builtin"
    rp.reproduce("smoke", steps_list=steps, output_root=out)
    ledger = json.loads((out / "results" / "notebooks" / "smoke" / "steps.json").read_text())
    assert ledger["a.ipynb"]["files"] == [str(out / "a.txt")]
    (out / "a.txt").unlink()                                         # e.g. a deleted checkpoint
    rp.reproduce("smoke", steps_list=steps, output_root=out)
    rec = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in rec["steps"]] == [False, True] and (out / "a.txt").is_file()
    (tmp_path / "steps.json").write_text(json.dumps([list(s) + [False] for s in steps]))
    args = f"--profile smoke --output-root {tmp_path / 'snake'} --steps-file {tmp_path / 'steps.json'}"
    assert _snake(tmp_path, args).returncode == 0
    (tmp_path / "snake" / "a.txt").unlink()
    again = _snake(tmp_path, args)
    assert again.returncode == 0 and (tmp_path / "snake" / "a.txt").is_file(), again.stdout + again.stderr
    rec = json.loads((tmp_path / "snake" / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in rec["steps"]] == [False, True]


def test_stale_temporaries_go_and_fresh_ones_stay(tmp_path):
    out = tmp_path / "out"
    stale = out / "checkpoints" / "settings" / "x" / ".final.pt.k2j3h.tmp.pt"
    fresh = out / "results" / ".table2.md.a8b7.tmp.md"
    for f in (stale, fresh):
        f.parent.mkdir(parents=True)
        f.write_text("half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    nb = tiny_notebook(tmp_path / "a.ipynb", "x = 1")
    rp.reproduce("smoke", steps_list=[("a", str(nb), {})], output_root=out)
    assert not stale.exists() and fresh.exists()


def test_the_download_command_refuses_to_replace_a_users_file_without_force(tmp_path):
    from test_bad_inputs import _set_for_download

    from cmr_lib.data.download import download
    mirror, manifest, dest = _set_for_download(tmp_path)
    mine = dest / "myops2020" / "myops_training_101_gd.nii.gz"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    with pytest.raises(CmrError, match="this command did not write it"):
        download(dest, mirror=mirror, manifest=manifest, only=("myops2020",), progress=False)
    assert mine.read_bytes() == b"mine" and not (dest / "myops2020" / "myops_training_101_C0.nii.gz").exists()
    assert download(dest, mirror=mirror, manifest=manifest, only=("myops2020",), progress=False,
                    force=True) == {"fetched": 2, "kept": 0}


def test_make_reproduce_keeps_one_engine_per_output_folder_on_the_command_line(tmp_path):
    """The module's command line: --engine snakemake is refused like the built-in one while the folder is locked."""
    from cmr_lib.pipeline.plan import output_lock
    nb = tiny_notebook(tmp_path / "a.ipynb", "x = 1")
    (tmp_path / "steps.json").write_text(json.dumps([["a", str(nb), {}]]))
    args = ["--profile", "smoke", "--output-root", str(tmp_path / "out"), "--steps-file", str(tmp_path / "steps.json")]
    with output_lock(make_config(profile="smoke", output_root=tmp_path / "out")):
        run = subprocess.run([sys.executable, "-m", "cmr_lib.pipeline.reproduce", *args, "--engine", "snakemake"],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "another make reproduce is writing here (pid" in run.stderr, run.stderr
    run = subprocess.run([sys.executable, "-m", "cmr_lib.pipeline.reproduce", *args, "--engine", "snakemake",
                          "--cores", "1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads((tmp_path / "out" / "results" / "reproduce.json").read_text())["engine"] == "snakemake"
