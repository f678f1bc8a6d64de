"""`make reproduce`'s driver: step order, reuse of unchanged steps, rerun of changed ones, failures."""
import json

import nbformat
import pytest

from cmr_lib.core import device as devices
from cmr_lib.core import grid
from cmr_lib.core.errors import CmrError
from cmr_lib.pipeline import reproduce as rp
from conftest import tiny_notebook


def test_steps_follow_the_paper_order_and_run_the_grid():
    names = [rp.executed_name(st[1], st[2]) for st in rp.STEPS]
    assert names[:4] == ["01_data_exploration.ipynb", "02_rain.ipynb", "03_adaconv.ipynb", "04_drunet.ipynb"]
    assert names[4] == "05_settings_setting0.ipynb" and names[-1] == "06_analysis.ipynb"
    rows = [st for st in rp.STEPS if st[1] == "05_settings.ipynb"]
    ran = [(p["setting"], p["stylizer"], p["epsilon_iterations"] if grid.uses_epsilon(p["stylizer"]) else 0)
           for _, _, p, *_ in rows]
    assert ran == grid.reproduce_rows()                                   # each row of the grid once, in order
    assert all(len(st) > 3 and st[3] for st in rows) and len(names) == len(set(names))
    every = [r for t in ("table2", "table3") for r in grid.load_grid()[t]]
    assert {r.key for r in every if r.reproduce} == set(ran)              # rows marked reproduce: false are not run
    assert {r.key for r in every if not r.reproduce}.isdisjoint(ran) and any(not r.reproduce for r in every)
    assert set(grid.table_rows("table3", "paper")) <= set(ran) and (0, "none", 0) in ran   # the paper's Table 3 runs


def test_the_grid_file_is_checked(tmp_path):
    bad = tmp_path / "grid.yaml"
    bad.write_text("table2:\n  - {setting: 1, stylizer: rain}\ntable3: []\n")
    with pytest.raises(CmrError, match="rows with a style search .RAIN, AdaConv . VAE., and only they, give epsilon"):
        grid.load_grid(bad)
    bad.write_text("table2:\n  - {setting: 0, stylizer: none}\n  - {setting: 0, stylizer: none}\ntable3: []\n")
    with pytest.raises(CmrError, match="lists a row twice"):
        grid.load_grid(bad)
    bad.write_text("table2: []\n")
    with pytest.raises(CmrError, match="exactly the lists"):
        grid.load_grid(bad)


def test_more_seeds_train_their_stylizers_first_then_repeat_every_row():
    steps = rp.with_seeds(rp.STEPS, [0, 1, 2])
    names = [rp.executed_name(st[1], st[2]) for st in steps]
    rows = [n for n in names if n.startswith("05_")]
    assert len(rows) == 3 * len(grid.reproduce_rows()) and len(names) == len(set(names))
    assert "05_settings_setting3_rain+intensity_eps5_seed2.ipynb" in names
    assert names.index("prepare_stylizers_seed1") < names.index("05_settings_setting1_rain_eps5_seed1.ipynb")
    assert names.index("prepare_stylizers_seed2") < min(i for i, n in enumerate(names) if n.endswith("_seed1.ipynb"))
    assert steps[-1][1] == "06_analysis.ipynb" and steps[-1][2]["seeds"] == [0, 1, 2]
    assert rp.with_seeds(rp.STEPS, [0]) == rp.STEPS
    assert rp.cost_hint({"setting": 1, "stylizer": "rain", "epsilon_iterations": 5}) > \
        rp.cost_hint({"setting": 1, "stylizer": "adaconv"}) > rp.cost_hint({"setting": 0, "stylizer": "gin"})


def test_beyond_adds_the_adaconv_vae_rows_their_stylizers_and_notebook_07():
    plain, beyond = rp.steps(), rp.steps(beyond=True)
    assert plain == rp.STEPS and "07_beyond.ipynb" not in [st[1] for st in plain]
    names = [rp.executed_name(st[1], st[2]) for st in beyond]
    vae_rows = [n for n in names if "adaconv-vae" in n and n.startswith("05_")]
    assert len(vae_rows) == len(set(grid.table_rows("table2", "beyond")) | set(grid.table_rows("table3", "beyond")))
    assert names.index("prepare_stylizers_adaconv-vae") < names.index(vae_rows[0])
    assert names[-2:] == ["06_analysis.ipynb", "07_beyond.ipynb"]
    seeded = rp.with_seeds(beyond, [0, 1])
    assert seeded[-1][1] == "07_beyond.ipynb" and seeded[-1][2]["seeds"] == [0, 1]
    prep = next(st for st in seeded if st[1] == "prepare:stylizers" and st[2].get("seed") == 1)
    assert prep[2]["kinds"] == ["rain", "adaconv", "adaconv-vae"]
    plain_prep = next(st for st in rp.with_seeds(plain, [0, 1]) if st[1] == "prepare:stylizers")
    assert "kinds" not in plain_prep[2] and rp.default_kinds() == ["rain", "adaconv"]


def test_parallel_steps_run_side_by_side_with_fewer_threads(tmp_path):
    import os

    # each step says it started, then waits (up to a minute) for the other to say so: side by side they both end at
    # once whatever a loaded machine does to kernel start-up; one after the other, the first waits out the minute
    code = ("import os, time, pathlib\n"
            "p = pathlib.Path(output_root)\np.mkdir(parents=True, exist_ok=True)\n"
            "t0 = time.time(); (p / f'{name}.started').write_text('')\n"
            "other = p / ('b.started' if name == 'a' else 'a.started')\n"
            "while not other.exists() and time.time() - t0 < 60:\n    time.sleep(0.05)\n"
            "(p / f'{name}.txt').write_text(f\"{t0} {time.time()} {os.environ.get('OMP_NUM_THREADS')}\")")
    nbs = []
    for name in ("a", "b"):
        nb = tiny_notebook(tmp_path / f"{name}.ipynb", f"name = '{name}'\n" + code)
        nbs.append((name, nb, {}, True))
    out = tmp_path / "out"
    rp.reproduce("smoke", steps_list=nbs, output_root=out, jobs=2)
    (a0, a1, ta), (b0, b1, tb) = [(out / f"{n}.txt").read_text().split() for n in ("a", "b")]
    assert float(a0) < float(b1) and float(b0) < float(a1)                         # they overlapped
    assert ta == tb == str(max(1, (os.cpu_count() or 1) // 2))
    rec = json.loads((out / "results" / "reproduce.json").read_text())
    assert rec["jobs"] == 2 and all(s["ran_beside_others"] for s in rec["steps"])
    bad = tiny_notebook(tmp_path / "bad.ipynb", "import time\ntime.sleep(1)\nraise ValueError('broken on purpose')")
    ok = tiny_notebook(tmp_path / "ok.ipynb", "x = 3")
    with pytest.raises(CmrError, match=r"step 1 \(.*bad.ipynb\) failed: ValueError: broken on purpose; see .*"
                                       r"bad.failed.ipynb"):
        rp.reproduce("smoke", steps_list=[("bad", bad, {}, True), ("ok", ok, {}, True)], output_root=out, jobs=2)
    ledger = json.loads((out / "results" / "notebooks" / "smoke" / "steps.json").read_text())
    assert "ok.ipynb" in ledger and "bad.ipynb" not in ledger                        # the finished one is kept
    assert (out / "results" / "notebooks" / "smoke" / "bad.failed.ipynb").is_file()
    with pytest.raises(CmrError, match="parameter 'jobs' = 0"):
        rp.reproduce("smoke", steps_list=nbs, output_root=out, jobs=0)


def test_second_run_reuses_and_a_change_reruns(tmp_path, capsys):
    a = tiny_notebook(tmp_path / "a.ipynb", "import pathlib\n"
                  "pathlib.Path(output_root).mkdir(parents=True, exist_ok=True)\n"
                  "pathlib.Path(output_root, 'a.txt').write_text(str(seed))")
    b = tiny_notebook(tmp_path / "b.ipynb", "x = 1")
    steps = [("step a", a, {}), ("step b", b, {"seed": 0})]
    out = tmp_path / "out"
    assert rp.reproduce("smoke", steps_list=steps, output_root=out) == 0
    first = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in first["steps"]] == [False, False]
    assert (out / "a.txt").read_text() == "0"
    assert first["machine"]["cpus"] >= 1 and first["peak_memory_mb"] > 0
    (out / "a.txt").unlink()
    rp.reproduce("smoke", steps_list=steps, output_root=out)
    second = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in second["steps"]] == [True, True] and not (out / "a.txt").exists()
    assert second["steps"][0]["seconds_when_run"] == first["steps"][0]["seconds"]
    assert second["total_seconds_when_run"] == pytest.approx(first["total_seconds_when_run"], abs=0.05)
    assert second["peak_memory_mb_when_run"] == first["peak_memory_mb_when_run"] > 0
    tiny_notebook(b, "x = 2")                                             # an edited notebook runs again
    rp.reproduce("smoke", steps_list=steps, output_root=out)
    third = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in third["steps"]] == [True, False]
    rp.reproduce("smoke", steps_list=steps, output_root=out, force=True)
    assert not any(s["reused"] for s in json.loads((out / "results" / "reproduce.json").read_text())["steps"])
    assert "unchanged, reused" in capsys.readouterr().out


def test_a_failing_step_names_itself_and_keeps_finished_ones(tmp_path):
    a = tiny_notebook(tmp_path / "a.ipynb", "y = 1")
    bad = tiny_notebook(tmp_path / "bad.ipynb", "raise ValueError('broken on purpose')")
    out = tmp_path / "out"
    with pytest.raises(CmrError, match=r"step 2 \(.*bad.ipynb\) failed: .*broken on purpose"):
        rp.reproduce("smoke", steps_list=[("a", a, {}), ("bad", bad, {})], output_root=out)
    ledger = json.loads((out / "results" / "notebooks" / "smoke" / "steps.json").read_text())
    assert list(ledger) == ["a.ipynb"]
    failed = out / "results" / "notebooks" / "smoke" / "bad.failed.ipynb"
    assert failed.is_file()
    tiny_notebook(bad, "z = 1")                                           # mended: the rerun succeeds ...
    rp.reproduce("smoke", steps_list=[("a", a, {}), ("bad", bad, {})], output_root=out)
    assert not failed.exists() and not failed.with_suffix(".log").exists()   # ... and its failure is gone


def test_a_killed_step_says_it_was_killed(tmp_path):
    import signal
    import subprocess

    from cmr_lib.pipeline.execution import exit_reason, finish_notebook, start_notebook
    nb = tiny_notebook(tmp_path / "slow.ipynb", "import time\ntime.sleep(60)")
    proc, tmp, log = start_notebook(nb, tmp_path / "out" / "slow.ipynb", {})
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    reason = finish_notebook(proc, tmp, log, tmp_path / "out" / "slow.ipynb")
    assert reason.startswith("the notebook's process was killed by SIGKILL (out of memory"), reason
    assert "Kernel died" in exit_reason(1, "nbclient.exceptions.DeadKernelError: Kernel died")
    assert "before any cell reported an error" in exit_reason(1, "Executing notebook with kernel: python3")


def test_a_kernel_that_dies_while_starting_is_started_again(tmp_path, monkeypatch):
    """Kernels started side by side can race for a port and die before kernel_info (CI lost that race once):
    a 'python3' kernel that exits on its first start must cost a retry, not the step."""
    import sys

    from cmr_lib.pipeline.execution import finish_notebook, start_notebook
    flag, spec = tmp_path / "started_once", tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "flaky.py").write_text(
        "import pathlib, sys\n"
        f"flag = pathlib.Path({str(flag)!r})\n"
        "if not flag.exists():\n"
        "    flag.write_text('x')\n"
        "    sys.exit('zmq.error.ZMQError: Address already in use (simulated)')\n"
        "from ipykernel import kernelapp\n"
        "kernelapp.launch_new_instance()\n")
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, str(spec / "flaky.py"), "-f",
                                                           "{connection_file}"],
                                                  "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = tiny_notebook(tmp_path / "nb.ipynb", "x = 1")
    dst = tmp_path / "out" / "nb.ipynb"
    proc, tmp, log = start_notebook(nb, dst, {})
    proc.wait()
    text = tmp.with_suffix(".log").read_text()              # read before finish_notebook removes it
    assert finish_notebook(proc, tmp, log, dst) is None, text
    assert flag.exists() and "starting it again, try 2 of 3" in text
    assert any(c.get("execution_count") for c in nbformat.read(str(dst), as_version=4).cells)


def test_only_a_kernel_start_failure_is_retried():
    from nbclient.exceptions import DeadKernelError

    from cmr_lib.pipeline.execution import execute_with_retry
    calls = []

    def flaky(*args, **kwargs):
        calls.append(kwargs["kernel_name"])
        if len(calls) < 3:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "done"
    assert execute_with_retry("a", "b", {}, ".", execute=flaky) == "done" and len(calls) == 3
    calls.clear()

    def always(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Kernel died before replying to kernel_info")
    with pytest.raises(RuntimeError, match="kernel_info"):
        execute_with_retry("a", "b", {}, ".", attempts=2, execute=always)
    assert len(calls) == 2                                  # gives up after `attempts`
    calls.clear()

    def mid_run(*args, **kwargs):
        calls.append(1)
        raise DeadKernelError("Kernel died")
    with pytest.raises(DeadKernelError):
        execute_with_retry("a", "b", {}, ".", execute=mid_run)
    assert len(calls) == 1                                  # a kernel lost mid-run may have written results


def test_device_selection(monkeypatch):
    import torch


    monkeypatch.delenv("CMR_DEVICE", raising=False)
    assert devices.device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("CMR_DEVICE", "cpu")
    assert devices.device() == torch.device("cpu")
    monkeypatch.setenv("CMR_DEVICE", "tpu7")
    with pytest.raises(CmrError, match="CMR_DEVICE = 'tpu7': choose cpu, cuda or cuda:N"):
        devices.device()
    monkeypatch.setenv("CMR_DEVICE", "cuda:9")
    if torch.cuda.device_count() < 10:
        with pytest.raises(CmrError, match="no such CUDA device"):
            devices.device()
    monkeypatch.delenv("CMR_DEVICE")                   # a machine with CUDA: picked, cuDNN autotuning on
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert devices.device().type == "cuda" and torch.backends.cudnn.benchmark is True
    assert devices.precision_used("fp32", torch.device("cpu")) == "fp32"
    assert devices.precision_used("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(CmrError, match="parameter 'precision'"):
        devices.autocast("fp8", torch.device("cpu"))


def test_real_data_options_reach_every_notebook(tmp_path):
    nb = tiny_notebook(tmp_path / "p.ipynb", "import pathlib\n"
                   "pathlib.Path(output_root).mkdir(parents=True, exist_ok=True)\n"
                   "pathlib.Path(output_root, 'p.txt').write_text(f'{c0_spacing} {t2_dir}')")
    t2 = tmp_path / "t2"
    t2.mkdir()
    out = tmp_path / "out"
    rp.reproduce("smoke", steps_list=[("p", nb, {})], output_root=out, c0_spacing="lge", t2_dir=t2)
    assert (out / "p.txt").read_text() == f"lge {t2.resolve()}"
    with pytest.raises(CmrError, match="parameter 't2_dir' = '.*missing': no such folder"):
        rp.reproduce("smoke", steps_list=[("p", nb, {})], output_root=out, t2_dir=tmp_path / "missing")


def test_gpus_spread_the_parallel_rows_and_the_placement_is_recorded(tmp_path):
    code = ("import os, time, pathlib\n"
            "p = pathlib.Path(output_root)\np.mkdir(parents=True, exist_ok=True)\n"
            "t0 = time.time(); time.sleep(2)\n"
            "(p / f'{name}.txt').write_text(f\"{t0} {time.time()} {os.environ.get('CUDA_VISIBLE_DEVICES')}\")")
    nbs = [(n, tiny_notebook(tmp_path / f"{n}.ipynb", f"name = '{n}'\n" + code), {}, True) for n in "abcd"]
    serial = tiny_notebook(tmp_path / "s.ipynb", code.replace("{name}", "s"))
    out = tmp_path / "out"
    rp.reproduce("smoke", steps_list=[("s", serial, {}), *nbs], output_root=out, jobs=4, gpus=["0", "1"])
    seen = {n: (out / f"{n}.txt").read_text().split() for n in "sabcd"}
    assert seen["s"][2] == "0" and sorted(seen[n][2] for n in "abcd") == ["0", "0", "1", "1"]   # two rows per GPU
    rec = json.loads((out / "results" / "reproduce.json").read_text())
    assert rec["gpus"] == ["0", "1"] and [s["gpu"] for s in rec["steps"]] == [seen[n][2] for n in "sabcd"]
    with pytest.raises(CmrError, match="GPUS = '0,0': give distinct CUDA device numbers"):
        rp.reproduce("smoke", steps_list=nbs, output_root=out, gpus=["0", "0"])
