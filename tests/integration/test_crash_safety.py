"""No run loses work (issue 6): a training killed with SIGKILL resumes from its last checkpoint and ends
with the same metrics as an uninterrupted run; an interrupted `make reproduce` completes the same way."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import tiny_notebook

TRAIN = """
import sys
from cmr_lib.study.runs import run_setting
from cmr_lib.core.config import make_config
cfg = make_config(profile="smoke", setting=0, stylizer="{stylizer}", data_dir=sys.argv[1], output_root=sys.argv[2],
                  overrides={{"segmenter.iterations": 60, "segmenter.checkpoint_every": 5, "segmenter.val_every": 20}})
run_setting(cfg, progress=False)
"""


def _train(phantom, out, *, kill_after_checkpoint=False, stylizer="gin"):
    cmd = [sys.executable, "-c", TRAIN.format(stylizer=stylizer), str(phantom), str(out)]
    if not kill_after_checkpoint:
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        return None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = list(Path(out).glob("checkpoints/settings/*/last.pt"))
        if found:
            last = found[0]
            os.kill(proc.pid, signal.SIGKILL)                 # no chance to clean up or flush anything
            break
        time.sleep(0.02)
    proc.wait()
    return proc.returncode, last


def test_a_killed_training_resumes_from_its_checkpoint_with_the_same_metrics(tiny_phantom, tmp_path):
    _train(tiny_phantom, tmp_path / "whole")
    rc, last = _train(tiny_phantom, tmp_path / "killed", kill_after_checkpoint=True)
    assert rc == -signal.SIGKILL and last is not None
    run_dir = last.parent
    assert not (run_dir / "final.pt").exists()
    assert not list((tmp_path / "killed").glob("results/runs/*/run.json"))      # no half-written record
    from cmr_lib.training.checkpoints import load_checkpoint
    killed_at = load_checkpoint(run_dir / "last.pt")["step"]                     # the checkpoint is whole
    assert 0 < killed_at < 60
    _train(tiny_phantom, tmp_path / "killed")
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["resumed_from"] >= killed_at and meta["steps_this_run"] == 60 - meta["resumed_from"]
    whole = json.loads(next((tmp_path / "whole").glob("results/runs/*/run.json")).read_text())
    resumed = json.loads(next((tmp_path / "killed").glob("results/runs/*/run.json")).read_text())
    assert resumed["metrics"] == whole["metrics"] and resumed["summary"] == whole["summary"]
    assert resumed["segmenter"]["val_dice"] == whole["segmenter"]["val_dice"]
    leftovers = [p.name for p in (tmp_path / "killed").rglob(".*.tmp*")]
    assert all(p.startswith((".last.pt.", ".best.pt.")) for p in leftovers), leftovers


REPRODUCE = """
import sys
from cmr_lib.pipeline.reproduce import reproduce
steps = [("a", sys.argv[1], {}), ("b", sys.argv[2], {})]
reproduce("smoke", steps_list=steps, output_root=sys.argv[3])
"""


def test_an_interrupted_reproduce_completes_with_the_same_results(tmp_path):
    a = tiny_notebook(tmp_path / "a.ipynb", "import pathlib\np = pathlib.Path(output_root)\np.mkdir(exist_ok=True)\n"
                  "(p / 'a.txt').write_text('A')")
    b = tiny_notebook(tmp_path / "b.ipynb", "import pathlib, time\np = pathlib.Path(output_root)\n"
                  "(p / 'b_started').write_text('x')\ntime.sleep(4)\n(p / 'b.txt').write_text('B')")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", REPRODUCE, str(a), str(b), str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "b_started").exists() and time.time() < deadline:
        assert proc.poll() is None, "the driver ended before step b started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)                       # the driver, papermill and the kernel at once
    proc.wait()
    assert (out / "a.txt").read_text() == "A" and not (out / "b.txt").exists()
    ledger = json.loads((out / "results" / "notebooks" / "smoke" / "steps.json").read_text())
    assert list(ledger) == ["a.ipynb"]
    subprocess.run([sys.executable, "-c", REPRODUCE, str(a), str(b), str(out)], check=True, capture_output=True,
                   timeout=180)
    rec = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in rec["steps"]] == [True, False]
    assert (out / "b.txt").read_text() == "B"
