"""benchmarks/table_delta.py: two tabulated reproductions side by side from their table2.csv and
cross_dataset.csv (the committed real tables against a rerun under the new protocol)."""
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def _tables(folder: Path, dc: float, seeds: int, select: str | None):
    folder.mkdir()
    rows = [{"setting": 0, "key": "none", "stylizer": "none", "epsilon": None, "seeds": seeds, "DC AVG": dc,
             "HD AVG": 40.0}, {"setting": 1, "key": "rain", "stylizer": "RAIN", "epsilon": 5.0, "seeds": seeds,
                               "DC AVG": dc + 0.1, "HD AVG": 30.0}]
    t2 = pd.DataFrame(rows)
    if select:
        t2["select"] = select
    t2.to_csv(folder / "table2.csv", index=False)
    cross = t2[["setting", "key", "stylizer", "epsilon", "seeds"]].copy()
    cross["MS-CMRSeg 2019 (own val) DC"] = t2["DC AVG"]
    cross["MyoPS 2020 DC"] = [0.3, 0.6 + dc - 0.5]
    cross["MyoPS 2020 HD"] = [30.0, 20.0]
    cross.to_csv(folder / "cross_dataset.csv", index=False)


def test_rows_are_matched_and_the_differences_and_the_protocols_shown(tmp_path):
    _tables(tmp_path / "old", 0.5, 3, None)
    _tables(tmp_path / "new", 0.45, 1, "source")
    out = tmp_path / "delta.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "table_delta.py"), "--before", str(tmp_path / "old"),
                        "--after", str(tmp_path / "new"), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "| 0 | none |  | 3 → 1 | target → source | 0.500 → 0.450 (-0.050) | 40.0 → 40.0 (+0.0) |" in text
    assert "| 1 | RAIN | 5 | 3 → 1 | target → source | 0.600 → 0.550 (-0.050) |" in text
    assert "0.600 → 0.550 (-0.050) | 20.0 → 20.0 (+0.0) |" in text              # MyoPS DC and HD
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "table_delta.py"), "--before", str(tmp_path),
                        "--after", str(tmp_path / "new")], capture_output=True, text=True)
    assert r.returncode == 2 and "table2.csv: no such table" in r.stderr and r.stderr.count("\n") == 1


def test_same_rows_compare_names_any_row_whose_fingerprint_or_metrics_moved():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from same_rows import compare
    row = {"segmenter": "setting0_none_abc", "stylizer": None, "metrics": {"test": [{"dice": 0.5}]},
           "summary": {"test": {"dice": {"AVG": 0.5}}}}
    old = {"lib": "aaa", "rows": {"r": row, "s": row}}
    new = {"lib": "bbb", "rows": {"r": row, "s": {**row, "segmenter": "setting0_none_def",
                                                  "metrics": {"test": [{"dice": 0.6}]}}}}
    text = compare(old, new)
    assert "| r | same (`setting0_none_abc`) | 0.5000 → 0.5000 | identical |" in text
    assert "| s | DIFFERENT (`setting0_none_def`) | 0.5000 → 0.5000 | DIFFERENT |" in text
    assert "commit `aaa`; after: commit `bbb`" in text


def test_the_test_crop_is_chosen_on_the_tuning_columns_only():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_experiments import crop_choice
    table = ("| run | seed | tuning: T image | test: A image | tuning: T heart | test: A heart |\n|---|---|---|---|---|---|\n"
             "| r1 | 0 | 0.50 | 0.10 | 0.60 | 0.90 |\n| r2 | 0 | 0.70 | 0.10 | 0.65 | 0.90 |\n")
    text = crop_choice(table)                      # the test columns favour `heart` by far: they must not count
    assert "over 2 networks: image 0.600, heart 0.625; the heart-centred crop was better for 1 of them" in text
    assert text.rstrip().endswith("Chosen: `heart`.")
