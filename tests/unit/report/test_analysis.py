"""Notebook 06's library: tables from run.json records, the paper comparison, the claims, the bars."""
import json

import numpy as np
import pandas as pd
import pytest

from cmr_lib.core import grid
from cmr_lib.core.errors import CmrError
from cmr_lib.evaluation.evaluate import STRUCTURES
from cmr_lib.report import cross, paper, stats, summary_figures, tables


def _record(setting, stylizer, eps=0, dice=(0.7, 0.8, 0.6), hd=(30.0, 20.0, 40.0), *, seed=0, profile="demo",
            root="data/phantom", part="test", cases=3, select=("source", "C0", [7])):
    """A run.json record as run_setting writes it, with per-patient metrics equal to the given means."""
    metrics = [{"case": f"patient{c}_LGE", "structure": s, "dice": d, "hd": h, "hd95": h / 2, "assd": h / 10}
               for c in range(cases) for s, d, h in zip(STRUCTURES, dice, hd)]
    df = pd.DataFrame(metrics)
    summary = {}
    for m in ("dice", "hd", "hd95", "assd"):
        means = df.groupby("structure")[m].mean()
        vals = [float(means[s]) for s in STRUCTURES]
        summary[m] = {**dict(zip(STRUCTURES, vals)), "AVG": float(np.mean(vals)), "STD": float(np.std(vals)),
                      "cases": cases}
    name = f"{profile}_setting{setting}_{stylizer}" + (f"_eps{eps}" if stylizer == "rain" else "") + f"_seed{seed}"
    return {"run_name": name, "setting": setting, "stylizer": stylizer, "epsilon_iterations": eps, "seed": seed,
            "profile": profile, "data": {"root": root, "split": {"val": [1, 2]}},
            "segmenter": {"selection": dict(zip(("rule", "sequence", "patients"), select))},
            "summary": {"test": summary if part == "test" else {}, "val": summary},
            "metrics": {"test": metrics if part == "test" else [], "val": metrics}}


def _write(results, rec):
    d = results / "runs" / rec["run_name"]
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps(rec))


@pytest.fixture
def table2_records():
    return [_record(0, "none", dice=(0.6, 0.7, 0.5), hd=(40, 30, 50)),
            _record(1, "rain", 5, dice=(0.65, 0.75, 0.55), hd=(20, 15, 25)),
            _record(1, "adaconv", dice=(0.6, 0.7, 0.5), hd=(35, 30, 40)),
            _record(2, "rain", 5, dice=(0.7, 0.8, 0.6), hd=(18, 14, 22)),
            _record(2, "adaconv", dice=(0.66, 0.76, 0.56), hd=(33, 28, 38)),
            _record(3, "rain", 5, dice=(0.75, 0.85, 0.65), hd=(16, 12, 20)),
            _record(3, "adaconv", dice=(0.67, 0.77, 0.57), hd=(30, 25, 35))]


def test_load_runs_filters_and_refuses_mixing(tmp_path):
    _write(tmp_path, _record(0, "none"))
    _write(tmp_path, _record(1, "rain", 5, seed=1))
    _write(tmp_path, _record(0, "none", profile="smoke"))
    assert len(tables.load_runs(tmp_path, profile="demo")) == 2
    assert [r["seed"] for r in tables.load_runs(tmp_path, profile="demo", seed=1)] == [1]
    with pytest.raises(CmrError, match="several profiles"):
        tables.load_runs(tmp_path)
    assert len(tables.load_runs(tmp_path, allow_mixed=True)) == 3
    _write(tmp_path, _record(2, "rain", 5, root="/elsewhere/mscmrseg2019"))
    with pytest.raises(CmrError, match="several data sources"):
        tables.load_runs(tmp_path, profile="demo")
    with pytest.raises(CmrError, match="no run.json for profile 'paper'"):
        tables.load_runs(tmp_path, profile="paper")


def test_a_broken_record_is_named(tmp_path):
    d = tmp_path / "runs" / "broken"
    d.mkdir(parents=True)
    (d / "run.json").write_text("{not json")
    with pytest.raises(CmrError, match=r"broken/run.json: run record is not valid JSON"):
        tables.load_runs(tmp_path)
    (d / "run.json").write_text('{"setting": 1}')
    with pytest.raises(CmrError, match="not a run record"):
        tables.load_runs(tmp_path)


def test_a_row_that_chose_on_reported_labels_is_marked_and_the_rule_is_named():
    clean = _record(0, "none", part="val", cases=3)                        # chose on bSSFP 7: reports 0-2
    paper = _record(1, "rain", 5, part="val", cases=3, select=("target", "LGE", [1, 2]))
    old = _record(2, "rain", 5, part="val", cases=3)
    del old["segmenter"]                                                   # before the rule: LGE validation
    assert tables.selection_is_clean(clean) and not tables.selection_is_clean(paper)
    assert not tables.selection_is_clean(old) and tables.selection_of(old)["rule"] == "target"
    assert tables.selection_is_clean(_record(3, "rain", 5, part="val", select=("last", None, [])))
    md = tables.markdown(tables.table([clean, paper]))
    assert "| 0 | none |" in md and "| 1 | RAIN † | 5 |" in md
    assert "Checkpoints chosen on: held-out bSSFP; LGE validation (paper). † these rows" in md
    assert "†" not in tables.markdown(tables.table([clean]))


def test_table2_rows_values_and_markdown(table2_records):
    t = tables.table(list(reversed(table2_records)))           # record order does not matter
    assert list(zip(t["setting"], t["stylizer"])) == [(0, "none"), (1, "RAIN"), (1, "AdaConv"), (2, "RAIN"),
                                                      (2, "AdaConv"), (3, "RAIN"), (3, "AdaConv")]
    row = t.iloc[5]
    assert row["DC MYO"] == pytest.approx(0.75) and row["DC AVG"] == pytest.approx(0.75)
    assert row["DC STD"] == pytest.approx(np.std([0.75, 0.85, 0.65]))
    assert row["HD AVG"] == pytest.approx(16.0) and row["patients"] == "test" and row["seeds"] == 1
    md = tables.markdown(t)
    assert "| 3 | RAIN | 5 | 0.750 | 0.850 | 0.650 | 0.750 ± 0.082 | 16.0 | 12.0 | 20.0 | 16.0 ± 3.3 |" in md
    assert md.count("\n") == 11 and md.endswith("\nCheckpoints chosen on: held-out bSSFP.\n")   # header, rule, 7 rows, note


def test_seeds_are_averaged_and_val_reported_without_test_labels():
    recs = [_record(1, "rain", 1, dice=(0.5, 0.5, 0.5), seed=0, part="val"),
            _record(1, "rain", 1, dice=(0.7, 0.7, 0.7), seed=1, part="val")]
    t = tables.table(recs, grid.table_rows("table3"))
    assert len(t) == 1 and t.iloc[0]["seeds"] == 2 and t.iloc[0]["patients"] == "val"
    assert t.iloc[0]["DC AVG"] == pytest.approx(0.6)
    with pytest.raises(CmrError, match="no run matches"):
        tables.table(recs, grid.table_rows('table2'))


def test_write_table_is_readable(tmp_path, table2_records):
    csv, md = tables.write_table(tables.table(table2_records), tmp_path / "table2")
    back = pd.read_csv(csv)
    assert len(back) == 7 and back.loc[0, "DC AVG"] == pytest.approx(0.6)
    assert md.read_text().startswith("| setting | stylizer | ε | DC MYO")


def test_claims_hold_fail_and_cannot_tell(table2_records):
    t2 = tables.table(table2_records)
    t3 = tables.table([_record(1, "rain", e, dice=(d, d, d)) for e, d in ((1, 0.5), (3, 0.55), (5, 0.6))],
                        grid.table_rows("table3"))
    v = paper.claims(t2, t3).set_index("claim")["holds"]
    assert list(v) == [True, True, True, True]
    t2_nan = t2.copy()
    t2_nan.loc[(t2_nan["setting"] == 2) & (t2_nan["stylizer"] == "AdaConv"), "HD AVG"] = np.nan
    assert "setting 2: HD undefined" in paper.claims(t2_nan, t3).loc[0, "evidence"]
    close = paper.claims(t2, t3, hd_margin=0.6)                 # RAIN 17-50 % below AdaConv: not "far"
    assert close.loc[0, "holds"] is False and "setting 3: RAIN 16.0 mm vs AdaConv 30.0 mm (47% below)" in close.loc[0, "evidence"]
    t2_up = t2.copy()
    t2_up.loc[(t2_up["setting"] == 3) & (t2_up["stylizer"] == "RAIN"), "HD AVG"] = 45.0
    assert "RAIN 45.0 mm vs AdaConv 30.0 mm (50% above)" in paper.claims(t2_up, t3).loc[0, "evidence"]
    worse = tables.table([_record(1, "rain", e, dice=(d, d, d)) for e, d in ((1, 0.6), (3, 0.5))],
                           grid.table_rows("table3"))
    v = paper.claims(t2.iloc[:3], worse)
    assert v.loc[0, "holds"] is True and v.loc[1, "holds"] is None and v.loc[2, "holds"] is False
    assert v.loc[3, "holds"] is False and "+0.050" in v.loc[3, "evidence"]
    md = paper.claims_markdown(v)
    assert "**cannot tell**" in md and "**does not hold**" in md and "means only, not tested" in md


def test_a_claim_holds_only_when_a_paired_test_over_patients_says_so(table2_records):
    t2 = tables.table(table2_records)
    t3 = tables.table([_record(1, "rain", e, dice=(d, d, d)) for e, d in ((0, 0.4), (1, 0.5), (3, 0.55), (5, 0.6))],
                      grid.table_rows("table3"))
    assert list(t3["epsilon"]) == [0, 1, 3, 5]                    # Table 3's ε = 0 row: RAIN without search
    few = paper.claims(t2, t3, scores=paper.record_scores(table2_records))   # 3 patients each: p >= 0.25
    assert list(few["verdict"]) == ["not shown", "not shown", "cannot tell", "not shown"]
    assert "smallest possible 0.25" in few.loc[0, "evidence"]

    def scores(key, metric):                                     # 12 patients, every difference one way
        rng = np.random.default_rng(abs(hash(key)) % 2**32)
        v = value(t2, key, "DC AVG" if metric == "dice" else "HD AVG")
        return pd.Series(v + rng.normal(0, 1e-4, 12), index=[f"patient{i}" for i in range(12)])

    from cmr_lib.report.tables import value
    many = paper.claims(t2, None, scores=scores)
    assert list(many["verdict"]) == ["holds", "holds", "cannot tell", "holds"]
    assert many.loc[0, "holds"] is True and many.loc[2, "holds"] is None
    worse = paper.claims(t2, None, scores=scores, central_margin=0.5)          # the means fall short: no test saves it
    assert worse.loc[3, "verdict"] == "does not hold" and worse.loc[3, "holds"] is False
    across = paper.verdicts_across({"LGE": many, "MyoPS": few})
    assert list(across["differs"]) == [True, True, False, True]
    md = paper.across_markdown(across, "test sets")
    assert "| LGE | MyoPS |" in md and "The verdict differs between test sets for: RAIN's HD" in md


def test_holm_and_the_smallest_attainable_p():
    assert stats.min_attainable_p(5) == 0.0625 and stats.min_attainable_p(10) == pytest.approx(2 / 1024)
    adj = stats.holm([0.01, 0.04, np.nan, 0.03])
    assert adj[0] == pytest.approx(0.03) and adj[3] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)
    assert np.isnan(adj[2])
    t = stats.with_holm(pd.DataFrame({"metric": ["DC AVG", "DC AVG", "HD AVG"], "patients": [5, 5, 5],
                                      "p (Wilcoxon)": [0.02, 0.5, 0.02]}))
    assert list(t["p (Holm)"]) == pytest.approx([0.04, 0.5, 0.02]) and list(t["min p"]) == [0.0625] * 3


def test_paper_file_and_comparison(tmp_path, table2_records):
    shipped = paper.paper_tables()
    assert len(shipped["table2"]) == 7 and len(shipped["table3"]) == 3
    t2 = tables.table(table2_records)
    theirs = [{"setting": 3, "stylizer": "rain", "epsilon": 5, "DC AVG": 0.8, "HD AVG": 10.0},
              {"setting": 0, "stylizer": "none", "DC AVG": None, "HD AVG": 50.0}]
    c = paper.compare_with_paper(t2, theirs).set_index(["setting", "stylizer"])
    assert c.loc[(3, "RAIN"), "DC AVG difference"] == pytest.approx(-0.05)
    assert c.loc[(3, "RAIN"), "HD AVG difference"] == pytest.approx(6.0)
    assert np.isnan(c.loc[(0, "none"), "DC AVG paper"]) and c.loc[(0, "none"), "HD AVG paper"] == 50.0
    assert np.isnan(c.loc[(1, "AdaConv"), "DC AVG difference"])
    md = paper.comparison_markdown(t2, None, {"table2": theirs, "table3": []})
    assert "| 2 | 3 | RAIN | 5 | 0.750 | 0.800 | -0.050 | 16.0 | 10.0 | 6.0 |" in md
    assert "| 2 | 1 | AdaConv |  | " in md and md.count("\n") == 2 + len(t2)
    (tmp_path / "p.yaml").write_text("table2: []\n")
    with pytest.raises(CmrError, match="needs a list 'table3'"):
        paper.paper_tables(tmp_path / "p.yaml")
    with pytest.raises(CmrError, match="not found"):
        paper.paper_tables(tmp_path / "none.yaml")


def test_bars_draw_every_row_and_patient(table2_records):
    fig = summary_figures.table2_bars(table2_records)
    left = fig.axes[0]
    assert len(left.patches) == 7 * 3
    heights = sorted(p.get_height() for p in left.patches)
    assert heights[0] == pytest.approx(0.5) and heights[-1] == pytest.approx(0.85)
    dots = sum(len(line.get_xdata()) for line in left.lines)
    assert dots == 7 * 3 * 3


def test_bars_give_every_row_its_own_colour_an_interval_over_seeds_and_a_key_off_the_data():
    """Issue 36: thirteen rows, thirteen colours (tab10 repeated from the eleventh); two seeds give a 95% interval
    per bar; the key sits under the panels, not on them."""
    from matplotlib.colors import to_hex
    stylizers = ["none", "intensity", "gin", "histmatch", "slaug", "rain+slaug", "rain", "adaconv", "adaconv-vae"]
    recs = []
    for k in range(13):
        setting, sty = (0, stylizers[k]) if k < 6 else (1 + (k - 6) % 3, stylizers[6 + (k - 6) // 3])
        eps = 5 if sty == "rain" else 0
        recs += [_record(setting, sty, eps, dice=(0.5 + 0.02 * k, 0.6, 0.7), seed=sd) for sd in (0, 1)]
    recs[1]["metrics"]["test"] = [{**m, "dice": m["dice"] - 0.1} for m in recs[1]["metrics"]["test"]]
    rows = list(tables.by_row(recs))
    assert len(rows) == 13
    fig = summary_figures.table2_bars(recs, rows)
    left = fig.axes[0]
    per_row = [to_hex(left.patches[3 * i].get_facecolor()) for i in range(13)]
    assert len(set(per_row)) == 13
    assert len(left.containers) >= 13 * 3 and any(c.__class__.__name__ == "ErrorbarContainer" for c in left.containers)
    assert left.get_legend() is None and fig.axes[1].get_legend() is None and len(fig.legends) == 1


def test_contour_figures_carry_a_key_that_names_each_colour():
    import torch

    from cmr_lib.report import plots
    from cmr_lib.training.augment import Stylization
    lab = torch.zeros(3, 16, 16, dtype=torch.long)
    lab[:, 4:12, 4:12] = 1
    lab[:, 6:10, 6:10] = 2
    st = Stylization(content=torch.rand(3, 1, 16, 16), style=None, stylized=torch.rand(3, 1, 16, 16),
                     content_label=lab, style_label=None)
    fig = plots.contour_overlay(st, n=3)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["MYO contour", "LV contour", "RV contour"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["content"] and not fig.axes[0].get_title()


def _varied(setting, stylizer, eps=0, shift=0.0, *, seed=0, cases=8, noise=0.0):
    """A record whose per-patient Dice vary by patient (0.5 + 0.03 case) plus `shift` (+ seeded noise)."""
    rec = _record(setting, stylizer, eps, seed=seed, cases=cases)
    rng = np.random.default_rng([seed, setting, len(stylizer)])
    for m in rec["metrics"]["test"]:
        c = int(m["case"].split("_")[0].removeprefix("patient"))
        m["dice"] = 0.5 + 0.03 * c + shift + noise * float(rng.normal())
        m["hd"] = 30.0 - 10 * shift - c
    df = pd.DataFrame(rec["metrics"]["test"])
    for metric in ("dice", "hd"):
        means = df.groupby("structure")[metric].mean()
        vals = [float(means[s]) for s in STRUCTURES]
        rec["summary"]["test"][metric].update({**dict(zip(STRUCTURES, vals)), "AVG": float(np.mean(vals)),
                                               "STD": float(np.std(vals))})
    return rec


def test_seeds_give_mean_and_95_percent_interval():
    recs = [_varied(3, "rain", 5, shift=s, seed=i) for i, s in enumerate((0.0, 0.02, 0.04))]
    t = tables.table(recs, [(3, "rain", 5)])
    assert t["seeds"].iloc[0] == 3
    dc = [r["summary"]["test"]["dice"]["AVG"] for r in recs]
    assert t["DC AVG"].iloc[0] == pytest.approx(np.mean(dc))
    from scipy import stats
    want = stats.t.ppf(0.975, 2) * np.std(dc, ddof=1) / np.sqrt(3)
    assert t["DC AVG ci95"].iloc[0] == pytest.approx(want)
    md = tables.markdown(t)
    assert f"{np.mean(dc):.3f} ± {want:.3f}" in md and "95 % confidence interval over seeds" in md
    single = tables.table(recs[:1], [(3, "rain", 5)])
    assert "DC AVG ci95" not in single and "confidence" not in tables.markdown(single)


def test_paired_wilcoxon_finds_a_consistent_gain_and_not_noise():
    recs = [_varied(0, "none"), _varied(3, "rain", 5, shift=0.05), _varied(3, "adaconv", shift=0.0, noise=0.05),
            _varied(0, "intensity", shift=0.02), _varied(3, "rain+intensity", 5, shift=0.06)]
    t = stats.paired_tests(recs)
    got = {(r["row"], r["against"], r["metric"]): r for _, r in t.iterrows()}
    gain = got[("setting 3, RAIN ε5", "setting 0 (none)", "DC AVG")]
    assert gain["patients"] == 8 and gain["mean difference"] == pytest.approx(0.05)
    assert gain["p (Wilcoxon)"] < 0.01                         # 8 of 8 patients better: exact p = 2/256
    noisy = got[("setting 3, AdaConv", "setting 0 (none)", "DC AVG")]
    assert noisy["p (Wilcoxon)"] > 0.05
    assert ("setting 3, RAIN ε5", "setting 3, AdaConv", "DC AVG") in got
    assert ("setting 3, RAIN + intensity ε5", "setting 3, RAIN ε5", "DC AVG") in got
    assert ("setting 3, RAIN + intensity ε5", "setting 0, intensity", "HD AVG") in got
    for stylizer in ("RAIN ε5", "AdaConv"):                     # each stylizer alone against the intensity control
        assert (f"setting 3, {stylizer}", "setting 0, intensity", "DC AVG") in got
    assert ("setting 3, RAIN + intensity ε5", "setting 0, intensity", "DC AVG") in got
    md = stats.tests_markdown(t)
    assert "| setting 3, RAIN ε5 | setting 0 (none) | DC AVG | 8 | +0.050 |" in md
    best = stats.best_baseline_key(tables.table(recs))
    assert best == (0, "intensity", 0)
    vs_best = stats.paired_tests(recs, best_baseline=best)
    against = vs_best[vs_best["against"] == "setting 0, intensity"]
    assert set(against["row"]) == {"setting 3, RAIN ε5", "setting 3, AdaConv", "setting 3, RAIN + intensity ε5"}
    assert len(vs_best) == len(t)                     # the best baseline is the control: no pair is new
    without = stats.paired_tests(recs[:3] + recs[4:])     # no intensity row: no control pairs, 5 pairs x 2 metrics
    assert len(without) == 2 * 5 and "setting 0, intensity" not in set(without["against"])


def test_adaconv_vae_rows_are_tested_against_adaconv_and_rain_of_their_setting():
    recs = [_varied(0, "none"), _varied(1, "rain", 5, shift=0.05), _varied(1, "adaconv", shift=0.01),
            _varied(1, "adaconv-vae", 5, shift=0.03), _varied(2, "adaconv-vae", 5, shift=0.02)]
    rows = [grid.row_key(r) for r in recs]
    t = stats.paired_tests(recs, rows, metrics=("dice",))
    pairs = {(r["row"], r["against"]): r["mean difference"] for _, r in t.iterrows()}
    assert pairs[("setting 1, AdaConv + VAE ε5", "setting 1, AdaConv")] == pytest.approx(0.02)
    assert pairs[("setting 1, AdaConv + VAE ε5", "setting 1, RAIN ε5")] == pytest.approx(-0.02)
    assert not any(a == "setting 2, AdaConv + VAE ε5" and "setting 1" in b for a, b in pairs)   # own setting only


def test_wilcoxon_skips_undefined_patients_and_identical_rows():
    a = pd.Series([0.5, 0.6, np.nan, 0.7], index=list("abcd"))
    out = stats.wilcoxon(a, a)
    assert out["patients"] == 3 and np.isnan(out["p (Wilcoxon)"])


def test_the_baseline_reading_says_which_wins_and_by_how_much():
    recs = [_varied(0, "none"), _varied(3, "rain", 5, shift=0.05), _varied(0, "intensity", shift=0.08),
            _varied(2, "histmatch", shift=-0.02), _varied(3, "rain+intensity", 5, shift=0.09)]
    t2 = tables.table(recs)
    text = stats.baseline_reading(t2, stats.paired_tests(recs), recs, data="a test set")
    assert text.startswith("On a test set (8 test patients, setting 0 Dice")
    assert "Best style transfer: setting 3, RAIN ε5" in text and "best appearance baseline: setting 0, intensity" in text
    assert "Difference -0.030" in text and "Style-transfer rows above the best baseline: none." in text
    assert "setting 2, histmatch against setting 0: -0.020 Dice" in text
    assert "Adding intensity to RAIN in setting 3: +0.040 Dice (significant" in text


def test_the_cross_reading_names_the_winner_on_each_data_set():
    df = pd.DataFrame([
        {"setting": 0, "key": "none", "stylizer": "none", "epsilon": None, "own DC": 0.6, "own HD": 30.0, "MyoPS DC": 0.3, "MyoPS HD": 40.0},
        {"setting": 3, "key": "rain", "stylizer": "RAIN", "epsilon": 5, "own DC": 0.7, "own HD": 30.0, "MyoPS DC": 0.5, "MyoPS HD": 40.0},
        {"setting": 0, "key": "intensity", "stylizer": "intensity", "epsilon": None, "own DC": 0.65, "own HD": 30.0, "MyoPS DC": 0.6,
         "MyoPS HD": 40.0}])
    df.attrs["patients"] = {"own": 5, "MyoPS": 20}
    text = cross.cross_reading(df)
    assert ("- own (5 patients): setting 0 0.600; best style transfer setting 3, RAIN ε5 0.700; best baseline "
            "setting 0, intensity 0.650: style transfer ahead by 0.050.") in text
    assert "MyoPS (20 patients): setting 0 0.300" in text and "style transfer behind by 0.100" in text


def test_the_post_processed_table_reads_its_own_scores(table2_records):
    recs = [dict(r) for r in table2_records]
    for r in recs:
        lcc = json.loads(json.dumps(r["summary"]))
        for part in lcc.values():
            if part:
                part["hd"] = {k: (v / 2 if k != "cases" else v) for k, v in part["hd"].items()}
        r["summary_largest_component"] = lcc
    raw, kept = tables.table(recs), tables.table(recs, postprocess="largest_component")
    assert np.allclose(kept["HD AVG"], raw["HD AVG"] / 2) and np.allclose(kept["DC AVG"], raw["DC AVG"])
    del recs[0]["summary_largest_component"]
    with pytest.raises(CmrError, match="has no largest_component scores; rerun it"):
        tables.table(recs, postprocess="largest_component")


def test_cross_tests_pair_each_stylizer_row_with_setting0_the_control_and_the_best_baseline():
    from cmr_lib.report import cross
    cases = [f"p{i}" for i in range(10)]
    base = pd.Series(np.linspace(0.4, 0.6, 10), index=cases)
    df = pd.DataFrame()
    df.attrs["per_patient"] = {"MyoPS 2020": {
        (0, "none", 0): base, (1, "rain", 5): base + 0.1, (0, "gin", 0): base + 0.05,
        (0, "intensity", 0): base - 0.02, (2, "adaconv", 0): base + np.r_[[0.01, -0.01] * 5],
        (2, "adaconv-vae", 5): base + 0.02}}
    t = cross.cross_tests(df)
    got = {(r["row"], r["against"]): r for _, r in t.iterrows()}
    assert set(got) == {(row, against) for row in ("setting 1, RAIN ε5", "setting 2, AdaConv",
                                                   "setting 2, AdaConv + VAE ε5")
                        for against in ("setting 0 (none)", "setting 0, GIN", "setting 0, intensity")} | {
        ("setting 2, AdaConv + VAE ε5", "setting 2, AdaConv")}            # the future work against its AdaConv
    gain = got[("setting 1, RAIN ε5", "setting 0 (none)")]
    assert gain["patients"] == 10 and gain["mean difference"] == pytest.approx(0.1) and gain["p (Wilcoxon)"] < 0.01
    assert got[("setting 2, AdaConv", "setting 0 (none)")]["p (Wilcoxon)"] > 0.5
    assert set(t["metric"]) == {"MyoPS 2020 DC AVG"} and cross.cross_tests(pd.DataFrame()).empty
    assert "| setting 1, RAIN ε5 | setting 0 (none) | MyoPS 2020 DC AVG | 10 | +0.100 |" in stats.tests_markdown(t)


def test_two_cross_data_folders_of_one_layout_get_a_column_each(tiny_phantom, tmp_path):
    import shutil

    from cmr_lib.data.sources import open_source
    from cmr_lib.report import cross
    a, b = tmp_path / "site_a", tmp_path / "site_b"
    for d in (a, b):
        shutil.copytree(tiny_phantom, d)
    own = open_source(tiny_phantom)
    name = cross.DATA_NAMES.get(own.name, own.name)
    got = cross.other_sources(own, real={"a": a, "b": b})
    assert sorted(got) == [f"{name} (site_a)", f"{name} (site_b)"]
    assert got[f"{name} (site_b)"].root == b.resolve()
    assert cross.other_sources(own, real={"a": a}).keys() == {name}                    # alone: its plain name


def test_the_vae_comparison_and_the_future_work_claims(tmp_path):
    from cmr_lib.study import ablation
    kernel = pd.DataFrame([{"claim": "AdaConv: larger kernels change structure less", "holds": False, "evidence": "x"}])
    empty = ablation.vae_comparison(tmp_path, profile="demo", seeds=[0], data_root="data/phantom")
    assert empty.table is None and empty.table3 is None and "setting 1, AdaConv + VAE ε5" in empty.missing
    verdicts = paper.future_work_claims(kernel, empty.table, empty.tests)
    assert verdicts["holds"].tolist()[0] is False and verdicts["holds"].tolist()[1] is None
    for rec in (_record(0, "none", dice=(0.5, 0.6, 0.4)), _record(1, "rain", 5, dice=(0.7, 0.8, 0.6)),
                _record(1, "adaconv", dice=(0.55, 0.65, 0.45)), _record(1, "adaconv-vae", 5, dice=(0.6, 0.7, 0.5)),
                _record(1, "adaconv-vae", 3, dice=(0.58, 0.68, 0.48))):
        rec["run_name"] += f"_{rec['epsilon_iterations']}"
        _write(tmp_path, rec)
    vae = ablation.vae_comparison(tmp_path, profile="demo", seeds=[0], data_root="data/phantom")
    assert list(vae.table["key"]) == ["none", "rain", "adaconv", "adaconv-vae"]
    assert set(vae.tests["row"]) == {"setting 1, AdaConv + VAE ε5"}                 # only the tests it is in
    assert set(vae.tests["against"]) == {"setting 0 (none)", "setting 1, AdaConv", "setting 1, RAIN ε5"}
    assert list(vae.table3["key"]) == ["rain", "adaconv-vae", "adaconv-vae"]
    claim = paper.future_work_claims(kernel, vae.table, vae.tests).iloc[1]
    assert "AdaConv + VAE 0.600, AdaConv 0.550" in claim["evidence"] and "Holm over both tests" in claim["evidence"]
    assert claim["verdict"] == "not shown" and claim["holds"] is False        # its way, but 3 patients: p >= 0.25
    worse = paper.future_work_claims(kernel, vae.table.assign(**{"DC AVG": [0.5, 0.7, 0.65, 0.6]}), vae.tests)
    assert worse.iloc[1]["verdict"] == "does not hold"                              # below AdaConv alone


def test_the_protocol_summary_names_who_chose_and_who_is_reported_and_flags_each_leak(tmp_path):
    """Issue 35: results/protocol.json; a checkpoint chosen on reported patients, reported patients used as styles
    and scored MyoPS patients used as styles are each flagged; every committed protocol.json is clean."""
    import glob
    import types
    from pathlib import Path

    from cmr_lib.core.paths import repo_root

    def stylizer(name, layout, patients):
        d = tmp_path / name
        d.mkdir()
        (d / "meta.json").write_text(json.dumps({"config": {"data": {"style": {
            "layout": layout, "patients": {"style": ["T2" if layout == "myops" else "LGE", patients]}}}}}))
        return str(d)
    clean = _record(1, "rain", 5, select=("source", "C0", [31, 32]))
    clean["stylizer_run"] = {"checkpoint": stylizer("t2", "myops", [101, 102])}
    leaky = _record(2, "rain", 5, select=("target", "LGE", [0, 1]))
    leaky["stylizer_run"] = {"checkpoint": stylizer("lge", "mscmrseg", [1, 6, 7])}
    own = types.SimpleNamespace(name="mscmrseg")
    myops = types.SimpleNamespace(name="myops", layout="myops", patients=list(range(101, 121)),
                                  has_label=lambda p, s: True)
    summary = cross.protocol([clean], own, {"MyoPS": myops})
    assert summary["other_test_sets"]["MyoPS"]["scored"] == list(range(111, 121))
    assert summary["other_test_sets"]["MyoPS"]["served_as_styles"] == [101, 102]
    assert cross.protocol_problems(summary) == []
    problems = cross.protocol_problems(cross.protocol([clean, leaky], own, {"MyoPS": myops}))
    assert len(problems) == 2 and "chosen on reported patients [0, 1]" in problems[0]
    assert "reported patients [1] served as styles" in problems[1]
    late = _record(1, "rain", 5)
    late["stylizer_run"] = {"checkpoint": stylizer("t2late", "myops", [101, 115])}
    assert cross.protocol_problems(cross.protocol([late], own, {"MyoPS": myops})) == [
        "MyoPS: scored patients [115] served as styles"]
    for committed in glob.glob(str(repo_root() / "**" / "results" / "protocol.json"), recursive=True):
        assert cross.protocol_problems(json.loads(Path(committed).read_text())) == [], committed
