"""benchmarks/compare_runs.py: two reproductions of the same rows compared seed by seed (speed changes must
move results only within seed noise)."""
import json
import sys

import pytest

from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import repo_root
from test_analysis import _record, _write

sys.path.insert(0, str(repo_root() / "benchmarks"))
import compare_runs  # noqa: E402

ROWS = [(0, "none", 0), (1, "rain", 5), (1, "adaconv", 0), (2, "rain", 5), (3, "rain", 5), (0, "slaug", 0)]


def _side(folder, shift=0.0, *, spread=0.02, wall=None, drop=(), seeds=3):
    for i, (setting, stylizer, eps) in enumerate(ROWS):
        if (setting, stylizer, eps) in drop:
            continue
        for seed in range(seeds):
            d = 0.5 + 0.04 * i + spread * (seed - 1) + shift
            _write(folder, _record(setting, stylizer, eps, dice=(d, d, d), hd=(30.0 - 50 * shift,) * 3, seed=seed))
    if wall:
        (folder / "reproduce.json").write_text(json.dumps({"profile": "demo", "seeds": [0, 1, 2], "jobs": 2,
                                                           "total_seconds": wall, "total_seconds_when_run": 2 * wall}))


def test_same_rows_within_noise_and_the_speed_ratio(tmp_path):
    _side(tmp_path / "a", wall=1800.0)
    _side(tmp_path / "b", shift=0.005, wall=900.0)
    r = compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"),
                           "--out", str(tmp_path / "cmp")])
    assert [x["row"] for x in r["rows"]][:2] == ["setting 0 (none)", "setting 1, RAIN ε5"]
    assert len(r["rows"]) == len(ROWS) and not r["missing"]
    row = r["rows"][0]["DC AVG"]
    assert row["diff"] == pytest.approx(0.005) and row["sd_before"] == pytest.approx(0.02)
    assert all(x["within_noise"] for x in r["rows"])
    # a shift of +0.005 on every row is below each row's seed noise, but common to all six rows
    assert r["shift"]["DC AVG"]["mean_diff"] == pytest.approx(0.005) and r["shift"]["DC AVG"]["p"] < 0.05
    assert not r["within_noise"]
    text = (tmp_path / "cmp.md").read_text()
    assert "wall time after / before: 0.50" in text and "not within seed noise" in text
    assert r["same_seed"] == {"pairs": 18, "identical": 0} and "0 of 18 gave identical" in text


def test_a_rerun_of_the_same_code_is_identical_seed_by_seed(tmp_path):
    _side(tmp_path / "a")
    _side(tmp_path / "b", seeds=1)                       # seed 0 again, every row
    r = compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"),
                           "--out", str(tmp_path / "cmp")])
    assert r["same_seed"] == {"pairs": len(ROWS), "identical": len(ROWS)}
    assert f"{len(ROWS)} of {len(ROWS)} gave identical" in (tmp_path / "cmp.md").read_text()
    assert r["rows"][0]["DC AVG"]["diff"] != 0                # seed 0 against the three-seed mean ...
    r = compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"), "--seeds", "0",
                           "--out", str(tmp_path / "cmp")])
    assert all(x["DC AVG"]["diff"] == 0 and x["seeds_before"] == [0] for x in r["rows"])   # ... and seed 0 alone
    assert r["within_noise"] is None and r["same_seed"]["identical"] == len(ROWS)


def test_a_real_change_is_flagged_and_missing_rows_listed(tmp_path):
    _side(tmp_path / "a", spread=0.005)
    _side(tmp_path / "b", shift=-0.1, spread=0.005, drop=[(0, "slaug", 0)])
    r = compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"),
                           "--out", str(tmp_path / "cmp")])
    assert not any(x["within_noise"] for x in r["rows"])
    assert r["rows"][0]["DC AVG"]["p"] < 0.01
    assert r["missing"] == [{"row": "setting 0, SLAug", "side": "after"}]
    assert "| setting 0 (none) | 3/3 | 0.500 ± 0.005 | 0.400 ± 0.005 | -0.100 |" in (tmp_path / "cmp.md").read_text()


def test_one_seed_is_not_judged_within_noise(tmp_path):
    _side(tmp_path / "a", seeds=1)
    _side(tmp_path / "b", shift=0.2, seeds=3)            # a large change, but the before side has no seed noise
    r = compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"),
                           "--out", str(tmp_path / "cmp")])
    assert [x["within_noise"] for x in r["rows"]] == [None] * len(ROWS)
    assert r["within_noise"] is not True
    text = (tmp_path / "cmp.md").read_text()
    assert "untested (1 seed)" in text and "every row and the overall shift are within" not in text


def test_nothing_in_common_is_an_error(tmp_path):
    _write(tmp_path / "a", _record(0, "none"))
    _write(tmp_path / "b", _record(1, "adaconv"))
    with pytest.raises(CmrError, match="no row was run on both sides"):
        compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"),
                           "--out", str(tmp_path / "cmp")])


def test_one_seed_time_is_modelled_from_the_steps_ledger(tmp_path):
    ledger = {"01.ipynb": {"seconds": 10.0, "parallel": False}, "02.ipynb": {"seconds": 100.0, "parallel": False},
              "r1.ipynb": {"seconds": 50.0, "parallel": True}, "r2.ipynb": {"seconds": 40.0, "parallel": True},
              "r3.ipynb": {"seconds": 30.0, "parallel": True}, "r4.ipynb": {"seconds": 20.0, "parallel": True},
              "prepare_stylizers_seed2": {"seconds": 500.0, "parallel": False},
              "r1_seed2.ipynb": {"seconds": 900.0, "parallel": True}}
    m = compare_runs.modelled_wall(ledger, jobs=2)
    # the later seed's steps are left out; rows packed longest first: {50, 20} and {40, 30}
    assert m["steps"] == 6 and m["serial_seconds"] == 110.0 and m["rows_seconds_summed"] == 140.0
    assert m["total_seconds"] == 180.0
    assert compare_runs.modelled_wall(ledger, jobs=1)["total_seconds"] == 250.0
    _side(tmp_path / "a")
    _side(tmp_path / "b")
    (tmp_path / "a.json").write_text(json.dumps(ledger))
    half = {k: {**v, "seconds": v["seconds"] / 2} for k, v in ledger.items()}
    (tmp_path / "b.json").write_text(json.dumps(half))
    r = compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"), "--before-steps",
                           str(tmp_path / "a.json"), "--after-steps", str(tmp_path / "b.json"), "--out", str(tmp_path / "c")])
    assert r["modelled"]["after"]["total_seconds"] == 90.0
    assert "modelled one-seed time after / before: 0.50" in (tmp_path / "c.md").read_text()
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(CmrError, match="bad.json: not a steps ledger"):
        compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"), "--before-steps",
                           str(tmp_path / "bad.json"), "--out", str(tmp_path / "c")])
    with pytest.raises(CmrError, match="no steps of a first seed"):
        compare_runs.modelled_wall({"r1_seed2.ipynb": {"seconds": 1.0, "parallel": True}})


def test_a_lost_structure_leaves_that_row_hd_undefined_not_an_error(tmp_path):
    """A network that never predicts the RV has no RV HD (None in run.json): the row's HD mean is NaN, said so,
    and left out of the shift, while its Dice still counts."""
    _side(tmp_path / "a")
    _side(tmp_path / "b", shift=0.01)
    path = tmp_path / "b" / "runs" / "demo_setting0_none_seed2" / "run.json"
    rec = json.loads(path.read_text())
    rec["summary"]["test"]["hd"].update(RV=None, AVG=None, STD=None)
    path.write_text(json.dumps(rec))
    r = compare_runs.main(["--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"),
                           "--out", str(tmp_path / "cmp")])
    first = r["rows"][0]
    assert first["row"] == "setting 0 (none)" and first["HD AVG"]["after"] != first["HD AVG"]["after"]   # NaN
    assert first["DC AVG"]["diff"] == pytest.approx(0.01)
    assert r["shift"]["HD AVG"]["rows"] == len(ROWS) - 1 and r["shift"]["DC AVG"]["rows"] == len(ROWS)
    assert "never predicted a structure" in (tmp_path / "cmp.md").read_text()
