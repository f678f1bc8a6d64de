"""The prepared GPU check must not rot between GPU loans: it runs here on the CPU at the smoke sizes."""
import json
import sys

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
