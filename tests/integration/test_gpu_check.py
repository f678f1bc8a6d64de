"""The prepared GPU check must not rot between GPU loans: it runs here on the CPU at the smoke sizes."""
import json
import sys

import pytest

from cmr_lib.core.grid import reproduce_rows
from cmr_lib.core.paths import repo_root

sys.path.insert(0, str(repo_root() / "benchmarks"))
import gpu_check  # noqa: E402


def test_gpu_check_times_every_trainer_and_row_and_extrapolates(tmp_path, capsys):
    out = tmp_path / "steps.json"
    assert gpu_check.main(["--profile", "smoke", "--reps", "1", "--matmul-n", "256", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    steps = result["steps"]["fp32"]
    rows = [f"setting{s}_{st}_eps{e}" for s, st, e in reproduce_rows()]
    assert list(steps) == ["autoencoder", "rain", "adaconv", *rows]
    assert all(v["seconds"] > 0 for v in steps.values())
    assert steps["setting1_rain_eps5"]["tflop"] is None and steps["setting0_none_eps0"]["tflop"] > 0
    ext = result["extrapolation"]["fp32"]
    parts = ext["seconds_per_part_one_seed"]
    assert set(parts) == {"autoencoder", "rain C0-T2", "rain C0-LGE", "adaconv C0-T2", "adaconv C0-LGE", *rows}
    # smoke: 6 autoencoder and stylizer steps, 10 DRU-Net steps per row
    assert abs(parts["setting0_none_eps0"] - 10 * steps["setting0_none_eps0"]["seconds"]) < 0.05
    assert abs(ext["hours_all_seeds"] - ext["hours_one_seed"] * ext["seeds"]) < 0.01
    assert "| setting1_rain_eps5 |" in capsys.readouterr().out


def test_profile_row_splits_a_step_into_its_phases(tmp_path):
    import profile_row
    result = profile_row.main(["--profile", "smoke", "--reps", "1", "--rows", "0,4", "--out", str(tmp_path)])
    none, rain = result["rows"]["setting 0, none"], result["rows"]["setting 1, rain, eps 5"]
    assert set(none["phases"]) == {"optimiser step (forward, backward, Adam)"}
    assert set(profile_row.SEARCH) <= set(rain["phases"]) and "augmentation: the rest" in rain["phases"]
    for r in (none, rain):          # the phases are parts of the step, and the profiler saw convolutions
        assert 0 < sum(r["phases"].values()) <= r["seconds_per_step"] * 1.05
        assert any("conv" in op for op, _ in r["top_ops"])
        assert r["training_seconds"] == pytest.approx(r["seconds_per_step"] * 10, abs=0.06)   # smoke: 10 steps
    text = (tmp_path / "profile_row_smoke.md").read_text()
    assert "| setting 1, rain, eps 5 |" in text and "search: network forward" in text


def test_bench_compile_times_a_row_and_says_when_compiling_pays(tmp_path):
    import bench_compile
    from cmr_lib.core.config import make_config
    r = bench_compile.timed_row(make_config(profile="smoke", setting=1, stylizer="rain"), 1, 1, compiled=False)
    assert r["warmup_seconds"] > 0 and r["seconds_per_step"] > 0
    fast = {"eager": {"seconds_per_step": 1.0, "warmup_seconds": 3.0},
            "compiled": {"seconds_per_step": 0.5, "warmup_seconds": 100.0}}
    slow = {"eager": {"seconds_per_step": 1.0, "warmup_seconds": 3.0},
            "compiled": {"seconds_per_step": 1.2, "warmup_seconds": 180.0}}
    text = bench_compile.markdown({"profile": "demo", "threads": 1, "precision": "bf16", "iterations": 250,
                                   "rows": {"a": fast, "b": slow}})
    assert "| a | 1.000 | 0.500 | 0.50 | 100 | 200 | 250 |" in text     # 100 s warm-up / 0.5 s saved a step
    assert "| b | 1.000 | 1.200 | 1.20 | 180 | never" in text


def test_rows_per_gpu_times_k_rows_at_once_and_writes_its_table(tmp_path):
    """benchmarks/rows_per_gpu.py on the CPU at smoke sizes: one and two rows of setting 1 RAIN at once, each its
    own process; the table gives the aggregate steps per second and the ratio to one row."""
    import json
    import subprocess
    import sys
    from cmr_lib.core.paths import repo_root
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(repo_root() / "benchmarks" / "rows_per_gpu.py"), "--profile", "smoke",
                        "--row", "1:rain:5", "--rows", "1", "2", "--steps", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = json.loads(out.read_text())["runs"]
    assert [x["rows"] for x in runs] == [1, 2] and all(x["steps_per_second"] > 0 for x in runs)
    md = out.with_suffix(".md").read_text()
    assert "| rows at once | wall (s) | steps/s, all rows | × one row |" in md and "| 1 |" in md and "| 2 |" in md
