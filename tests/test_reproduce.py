"""`make reproduce`'s driver: step order, reuse of unchanged steps, rerun of changed ones, failures."""
import json

import nbformat
import pytest

from cmr_lib import reproduce as rp
from cmr_lib.errors import CmrError


def _notebook(path, code):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'smoke'\nseed = 0\ndata_dir = None\noutput_root = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, str(path))
    return path


def test_steps_follow_the_paper_order():
    names = [rp.executed_name(nb, extra) for _, nb, extra in rp.STEPS]
    assert names[:4] == ["01_data_exploration.ipynb", "02_rain.ipynb", "03_adaconv.ipynb", "04_drunet.ipynb"]
    assert names[4] == "05_settings_setting0.ipynb"
    assert {n for n in names if n.startswith("05_")} == {
        "05_settings_setting0.ipynb", *(f"05_settings_setting{s}_{k}.ipynb" for s in (1, 2, 3) for k in
                                        ("rain_eps5", "adaconv")),
        "05_settings_setting1_rain_eps1.ipynb", "05_settings_setting1_rain_eps3.ipynb"}
    assert names[-1] == "06_analysis.ipynb" and len(names) == len(set(names)) == 14


def test_second_run_reuses_and_a_change_reruns(tmp_path, capsys):
    a = _notebook(tmp_path / "a.ipynb", "import pathlib\n"
                  "pathlib.Path(output_root).mkdir(parents=True, exist_ok=True)\n"
                  "pathlib.Path(output_root, 'a.txt').write_text(str(seed))")
    b = _notebook(tmp_path / "b.ipynb", "x = 1")
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
    _notebook(b, "x = 2")                                             # an edited notebook runs again
    rp.reproduce("smoke", steps_list=steps, output_root=out)
    third = json.loads((out / "results" / "reproduce.json").read_text())
    assert [s["reused"] for s in third["steps"]] == [True, False]
    rp.reproduce("smoke", steps_list=steps, output_root=out, force=True)
    assert not any(s["reused"] for s in json.loads((out / "results" / "reproduce.json").read_text())["steps"])
    assert "unchanged, reused" in capsys.readouterr().out


def test_a_failing_step_names_itself_and_keeps_finished_ones(tmp_path):
    a = _notebook(tmp_path / "a.ipynb", "y = 1")
    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('broken on purpose')")
    out = tmp_path / "out"
    with pytest.raises(CmrError, match=r"step 2 \(.*bad.ipynb\) failed: .*broken on purpose"):
        rp.reproduce("smoke", steps_list=[("a", a, {}), ("bad", bad, {})], output_root=out)
    ledger = json.loads((out / "results" / "notebooks" / "smoke" / "steps.json").read_text())
    assert list(ledger) == ["a.ipynb"]


def test_device_selection(monkeypatch):
    import torch

    from cmr_lib import train

    monkeypatch.delenv("CMR_DEVICE", raising=False)
    assert train.device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("CMR_DEVICE", "cpu")
    assert train.device() == torch.device("cpu")
    monkeypatch.setenv("CMR_DEVICE", "tpu7")
    with pytest.raises(CmrError, match="CMR_DEVICE = 'tpu7': choose cpu, cuda or cuda:N"):
        train.device()
    monkeypatch.setenv("CMR_DEVICE", "cuda:9")
    if torch.cuda.device_count() < 10:
        with pytest.raises(CmrError, match="no such CUDA device"):
            train.device()
    monkeypatch.delenv("CMR_DEVICE")                   # a machine with CUDA: picked, cuDNN autotuning on
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert train.device().type == "cuda" and torch.backends.cudnn.benchmark is True
    assert train.precision_used("fp32", torch.device("cpu")) == "fp32"
    assert train.precision_used("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(CmrError, match="parameter 'precision'"):
        train.autocast("fp8", torch.device("cpu"))


def test_real_data_options_reach_every_notebook(tmp_path):
    nb = _notebook(tmp_path / "p.ipynb", "import pathlib\n"
                   "pathlib.Path(output_root).mkdir(parents=True, exist_ok=True)\n"
                   "pathlib.Path(output_root, 'p.txt').write_text(f'{c0_spacing} {t2_dir}')")
    t2 = tmp_path / "t2"
    t2.mkdir()
    out = tmp_path / "out"
    rp.reproduce("smoke", steps_list=[("p", nb, {})], output_root=out, c0_spacing="lge", t2_dir=t2)
    assert (out / "p.txt").read_text() == f"lge {t2.resolve()}"
    with pytest.raises(CmrError, match="parameter 't2_dir' is not a folder"):
        rp.reproduce("smoke", steps_list=[("p", nb, {})], output_root=out, t2_dir=tmp_path / "missing")
