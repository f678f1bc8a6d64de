"""Notebook 06's cross-dataset table from trained networks (study.rebuild.cross_dataset): each row's DRU-Nets
scored on the other data sets, each run's scores cached beside its run.json."""
import copy
import json

import pandas as pd
import pytest

from cmr_lib.report import cross


def test_cross_dataset_scores_each_network_on_the_other_data_sets(tiny_phantom, tmp_path, monkeypatch):
    from cmr_lib.core.config import make_config
    from cmr_lib.data import phantom
    from cmr_lib.data.sources import open_source
    from cmr_lib.study import rebuild
    from cmr_lib.study.runs import run_setting

    cfg = make_config(profile="smoke", setting=0, data_dir=tiny_phantom, output_root=tmp_path)
    run = run_setting(cfg, open_source(tiny_phantom), progress=False)
    other_dir = tmp_path / "other"
    phantom.generate(other_dir, patients=4, seed=11, workers=1, progress=False)
    own = open_source(tiny_phantom)
    assert cross.other_sources(own, real={"same": tiny_phantom}) == {}            # never its own data
    others = cross.other_sources(own, real={"x": other_dir})
    assert list(others) == ["phantom"] and len(others["phantom"].patients_with("LGE", labelled=True)) == 4
    assert cross.scored_patients(others["phantom"]) == [3, 4]       # the half that could never serve a run
    df = rebuild.cross_dataset([run.record], own, others, output_root=tmp_path)
    assert df.attrs["patients"] == {"phantom (own test)": 1, "phantom": 2}
    assert df["phantom (own test) DC"].iloc[0] == run.record["summary"]["test"]["dice"]["AVG"]
    assert 0.0 <= df["phantom DC"].iloc[0] <= 1.0
    md = cross.cross_markdown(df)
    assert "| phantom (own test) (1 pat.) DC |" in md and "| phantom (2 pat.) DC |" in md
    # each run's scores are cached beside its run.json: a second table loads no network and runs no inference
    cache = run.run_dir / "cross_phantom.json"
    assert json.loads(cache.read_text())["patients"] == [3, 4]
    with monkeypatch.context() as m:
        m.setattr(rebuild, "load_run_segmenter", lambda *a: pytest.fail("the cached scores were not used"))
        again = rebuild.cross_dataset([run.record], own, others, output_root=tmp_path)
    pd.testing.assert_frame_equal(again, df)
    # another network in the same folder (FORCE=1, or a deleted final.pt retrained): the weights are the key
    loaded = []
    with monkeypatch.context() as m:
        m.setattr(rebuild, "file_digest", lambda path: "other weights")
        real_load = rebuild.load_run_segmenter
        m.setattr(rebuild, "load_run_segmenter", lambda *a: loaded.append(1) or real_load(*a))
        rebuild.cross_dataset([run.record], own, others, output_root=tmp_path)
    assert loaded == [1]
    # a set with no scored patient caches an empty table, which reads back with its columns
    from cmr_lib.core.config import Config
    from cmr_lib.evaluation.evaluate import COLUMNS
    run_cfg = Config.from_record(run.record, output_root=tmp_path)
    for _ in range(2):
        empty = rebuild.cross_scores(run.record, run_cfg, "nobody", others["phantom"], [], [], {})
    assert list(empty.columns) == COLUMNS and empty.empty
    # several seeds of a row: every network is scored and a cell is the mean over seeds, as in Table 2
    other_seed = copy.deepcopy(run.record.to_dict())
    other_seed["seed"] = 1
    other_seed["summary"]["test"]["dice"]["AVG"] = run.record["summary"]["test"]["dice"]["AVG"] - 0.1
    df2 = rebuild.cross_dataset([run.record, other_seed], own, others, output_root=tmp_path)
    assert df2["seeds"].iloc[0] == 2
    assert df2["phantom (own test) DC"].iloc[0] == pytest.approx(df["phantom (own test) DC"].iloc[0] - 0.05)
    assert df2["phantom DC"].iloc[0] == pytest.approx(df["phantom DC"].iloc[0])     # the same network twice
    assert "mean over 2 seeds per row" in cross.cross_reading(df2)
