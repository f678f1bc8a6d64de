"""`make reproduce` on Snakemake (workflow/Snakefile): one job per step of the driver's plan, reuse of unchanged
steps, a failed row kept out while the others finish, resume after SIGKILL, and the SLURM dry run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from cmr_lib.core import grid
from cmr_lib.core.paths import repo_root
from cmr_lib.pipeline import reproduce as rp
from conftest import tiny_notebook

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SNAKEFILE = repo_root() / "workflow" / "Snakefile"


def _snake(work: Path, args: str, *extra, wait=True):
    """snakemake in its own working directory (its .snakemake/ goes there), as `make reproduce` calls it."""
    cmd = [str(SNAKEMAKE), "-s", str(SNAKEFILE), "--cores", "2", "--keep-going", "--rerun-incomplete", "--nolock",
           "--config", f"args={args}", *extra]
    env = {**os.environ, "CMR_REPRODUCE_STARTED": str(time.time())}
    if not wait:
        return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600, env=env)


def _steps(tmp_path, spec) -> tuple[str, Path]:
    """A steps file for the plan (name, notebook, extra, parallel) and the driver arguments that use it."""
    steps = [(name, str(tiny_notebook(tmp_path / f"{name}.ipynb", code)), {}, par) for name, code, par in spec]
    f = tmp_path / "steps.json"
    f.write_text(json.dumps(steps))
    out = tmp_path / "out"
    return f"--profile smoke --output-root {out} --steps-file {f} --jobs 2", out


WRITE = ("import pathlib, time\np = pathlib.Path(output_root)\np.mkdir(parents=True, exist_ok=True)\n"
         "(p / '{n}.txt').write_text(str(time.time()))")


def test_a_failed_row_is_kept_out_then_only_what_changed_runs(tmp_path):
    args, out = _steps(tmp_path, [("a", WRITE.format(n="a"), False), ("bad", "raise ValueError('broken')", True),
                                  ("c", WRITE.format(n="c"), True)])
    first = _snake(tmp_path, args)
    assert first.returncode != 0                                              # the failure is reported ...
    nbs = out / "results" / "notebooks" / "smoke"
    assert (out / "c.txt").is_file() and (nbs / "bad.failed.ipynb").is_file()  # ... and the other row finished
    assert "ValueError: broken" in (nbs / "snakemake" / "bad.ipynb.log").read_text()
    assert not (out / "results" / "reproduce.json").exists()                 # no summary of an unfinished plan
    stamps = {n: (out / f"{n}.txt").read_text() for n in "ac"}
    tiny_notebook(tmp_path / "bad.ipynb", "y = 1")                                  # mended: only it runs
    second = _snake(tmp_path, args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {n: (out / f"{n}.txt").read_text() for n in "ac"} == stamps and not (nbs / "bad.failed.ipynb").exists()
    rec = json.loads((out / "results" / "reproduce.json").read_text())
    assert rec["engine"] == "snakemake" and [s["executed"] for s in rec["steps"]] == ["a.ipynb", "bad.ipynb", "c.ipynb"]
    assert [s["reused"] for s in rec["steps"]] == [True, False, True] and rec["total_seconds"] > 0
    assert [s["ran_beside_others"] for s in rec["steps"]] == [False, True, True]
    assert all(s["snakemake"]["seconds"] > 0 for s in rec["steps"])
    assert set(json.loads((nbs / "steps.json").read_text())) == {"a.ipynb", "bad.ipynb", "c.ipynb"}   # one ledger
    third = _snake(tmp_path, args)
    assert third.returncode == 0 and "Nothing to be done" in third.stdout + third.stderr
    other = _snake(tmp_path, args + " --jobs 3")         # another driver option that changes no step's key
    assert other.returncode == 0 and "Nothing to be done" in other.stdout + other.stderr, other.stdout
    tiny_notebook(tmp_path / "c.ipynb", WRITE.format(n="c") + "\nx = 2")          # an edited notebook runs again
    fourth = _snake(tmp_path, args)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert (out / "a.txt").read_text() == stamps["a"] and (out / "c.txt").read_text() != stamps["c"]
    rec = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in rec["steps"]] == [True, True, False]


def test_a_run_killed_with_sigkill_resumes(tmp_path):
    slow = "import time\ntime.sleep(4)\n" + WRITE.format(n="slow")
    args, out = _steps(tmp_path, [("a", WRITE.format(n="a"), False), ("slow", slow, False)])
    proc = _snake(tmp_path, args, wait=False)
    marker = out / "results" / "notebooks" / "smoke" / "snakemake" / "a.ipynb.done"
    for _ in range(300):
        if marker.is_file():
            break
        time.sleep(0.1)
    time.sleep(1.0)                                                             # 'slow' has started
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "slow.txt").exists()
    resumed = _snake(tmp_path, args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (out / "slow.txt").is_file()
    rec = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in rec["steps"]] == [True, False]


def test_the_slurm_dry_run_has_one_job_per_row(tmp_path):
    run = _snake(tmp_path, "--profile smoke --seeds 2", "--workflow-profile", str(repo_root() / "workflow" / "profiles"
                                                                                   / "slurm"), "-n")
    assert run.returncode == 0, run.stdout + run.stderr
    text = run.stdout + run.stderr
    plan = rp.make_plan("smoke", seeds=2)["steps"]
    rows = [p for p in plan if p["nb"] == "05_settings.ipynb"]
    assert len(rows) == 2 * len(grid.reproduce_rows())
    counts = [line.split() for line in text.splitlines() if line.startswith("step")]   # (the stats come twice)
    assert len({c[0] for c in counts}) == len(plan) and all(c[-1] == "1" for c in counts)
    assert any(line.split()[:2] == ["total", str(len(plan) + 2)] for line in text.splitlines())


def test_both_engines_write_the_same_table_row(tmp_path):
    """A real smoke row (setting 0 + intensity: it needs no stylizer) through the built-in driver and through
    Snakemake: the same per-patient metrics, so the engines' tables agree."""
    row = ["Table 2 row: setting 0, intensity", str(repo_root() / "notebooks" / "05_settings.ipynb"),
           {"setting": 0, "stylizer": "intensity", "epsilon_iterations": 5}, True]
    (tmp_path / "steps.json").write_text(json.dumps([row]))
    args = f"--profile smoke --steps-file {tmp_path / 'steps.json'} --jobs 2 --output-root "
    assert rp.main((args + str(tmp_path / "builtin")).split()) == 0
    run = _snake(tmp_path, args + str(tmp_path / "snake"))
    assert run.returncode == 0, run.stdout + run.stderr
    found = {engine: sorted((tmp_path / engine / "results" / "runs").glob("*/run.json")) for engine in ("builtin", "snake")}
    assert len(found["builtin"]) == len(found["snake"]) == 1
    a, b = (json.loads(found[e][0].read_text()) for e in ("builtin", "snake"))
    assert a["torch_threads"] == b["torch_threads"] == 1           # a row alone runs on the plan's threads too
    assert a["metrics"] and a["metrics"] == b["metrics"] and a["summary"] == b["summary"]
    for engine in ("builtin", "snake"):
        assert json.loads((tmp_path / engine / "results" / "reproduce.json").read_text())["engine"] == \
            {"builtin": "built-in", "snake": "snakemake"}[engine]
