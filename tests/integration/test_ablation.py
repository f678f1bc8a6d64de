"""Structure preservation (issue 16): the measures behind the kernel-size table tell kept anatomy from moved."""
import numpy as np
import torch
from conftest import heart_label

import pandas as pd

from cmr_lib.study.ablation import (kernel_claims, kernel_table, label_dice, per_slice, preservation_markdown,
                                    structure_preservation)
from cmr_lib.training.augment import Stylization


class _Oracle(torch.nn.Module):
    """A 'network trained on the content': perfect on the content images, background on anything else."""

    def __init__(self, images, labels):
        super().__init__()
        self.images, self.labels = images, labels

    def forward(self, x):
        out = torch.zeros(x.shape[0], 4, *x.shape[-2:])
        for i, img in enumerate(x):
            hit = [j for j, c in enumerate(self.images) if torch.equal(c, img)]
            cls = self.labels[hit[0]] if hit else torch.zeros(x.shape[-2:], dtype=torch.long)
            out[i].scatter_(0, cls[None].long(), 1.0)
        return out


def _slices(n=4):
    lab = heart_label((48, 48, n), codes=(1, 2, 3), dtype=np.uint8)
    labels = torch.from_numpy(np.moveaxis(lab, -1, 0).astype(np.int64))            # (n, S, S)
    base = torch.tensor([0.1, 0.3, 0.9, 0.6])[labels]
    images = (base + 0.02 * torch.rand(labels.shape, generator=torch.Generator().manual_seed(0)))[:, None]
    return images, labels


def test_kept_anatomy_scores_high_and_moved_anatomy_low():
    images, labels = _slices()
    styles = images.flip(0) * 0.5
    oracle = _Oracle(images, labels)
    kept = structure_preservation(Stylization(images, styles, images.clone(), labels, labels.flip(0)), oracle, 32)
    shifted = images.roll(6, dims=-2)                                             # the anatomy moved by 6 px
    moved = structure_preservation(Stylization(images, styles, shifted, labels, labels.flip(0)), oracle, 32)
    assert kept["dice_content"] == kept["dice_stylized"] == kept["dice_kept"] == 1.0
    assert kept["edge_overlap"] > 0.99 and moved["edge_overlap"] < kept["edge_overlap"] - 0.2
    assert moved["dice_stylized"] == 0.0 and moved["dice_kept"] == 0.0
    assert kept["kl_stylized_to_style"] == kept["kl_content_to_style"] > 0
    table = preservation_markdown([{"kind": "adaconv", "kernel_size": 3, "seed": 0, **kept},
                                   {"kind": "adaconv", "kernel_size": 7, "seed": 0, **moved}])
    assert table.count("\n") == 4 and "| adaconv | 7 | 1 | " in table
    kept_slices = per_slice(Stylization(images, styles, images.clone(), labels, labels.flip(0)), oracle)
    moved_slices = per_slice(Stylization(images, styles, shifted, labels, labels.flip(0)), oracle)
    assert (kept_slices["dice_stylized"] == 1.0).all() and (moved_slices["dice_stylized"] == 0.0).all()
    assert (moved_slices["edge_overlap"] < kept_slices["edge_overlap"]).all()


def test_seeds_average_with_a_confidence_interval():
    rows = pd.DataFrame([{"kind": "adaconv", "kernel_size": 3, "seed": s, "edge_overlap": e, "dice_content": 0.8,
                          "dice_stylized": 0.6, "dice_kept": 0.75, "kl_stylized_to_style": 0.1,
                          "kl_content_to_style": 0.2, "slices": 8} for s, e in enumerate((0.5, 0.6, 0.7))])
    t = kernel_table(rows)
    assert t["edge_overlap"].iloc[0] == 0.6 and t["seeds"].iloc[0] == 3 and t["edge_overlap ci95"].iloc[0] > 0
    assert "| adaconv | 3 | 3 | 0.600 ± " in preservation_markdown(rows)


def test_the_kernel_claim_pairs_slices_and_says_which_way():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 12)

    def slices(kind, gain, seeds=(0, 1)):                            # 24 slices of 12 patients, each seen per seed
        return pd.concat([pd.DataFrame({"kind": kind, "kernel_size": k, "seed": seed, "slice": np.arange(24),
                                        "patient": np.arange(24) // 2,
                                        "edge_overlap": np.repeat(base, 2) + g + rng.normal(0, 0.01, 24),
                                        "dice_stylized": np.repeat(base, 2) + g + rng.normal(0, 0.01, 24)})
                          for k, g in ((3, 0.0), (7, gain / 2), (11, gain)) for seed in seeds])
    claims = kernel_claims(pd.concat([slices("adaconv", -0.2), slices("adaconv-vae", 0.2)])).set_index("claim")
    assert claims.loc["AdaConv: larger kernels change structure less", "verdict"] == "does not hold"
    vae = claims.loc["AdaConv + VAE: larger kernels change structure less"]
    assert vae["verdict"] == "holds" and vae["holds"] is True
    assert "k 11 minus k 3 +0.2" in vae["evidence"] and "over 12 patients" in vae["evidence"]   # not 48 slices
    assert "smallest attainable p with 12 patients: 0.00049" in vae["evidence"]
    one = kernel_claims(slices("adaconv", 0.1).query("kernel_size == 3"))
    assert one["holds"].iloc[0] is None


def test_label_dice_averages_the_structures_present():
    _, labels = _slices(2)
    pred = labels.numpy().copy()
    pred[pred == 3] = 0                                               # RV missed everywhere
    assert abs(label_dice(pred, labels.numpy()) - 2 / 3) < 1e-9


def test_the_kernel_ablation_driver_writes_its_table(tmp_path):
    import importlib.util
    import json

    from cmr_lib.core.paths import repo_root
    spec = importlib.util.spec_from_file_location("kernel_ablation", repo_root() / "benchmarks" / "kernel_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.run(profile="smoke", kernels=(3, 5), kinds=("adaconv-vae",), work=tmp_path / "w", out_dir=tmp_path,
                   max_slices=8).rows.to_dict("records")
    assert [(r["kind"], r["kernel_size"]) for r in rows] == [("adaconv-vae", 3), ("adaconv-vae", 5)]
    saved = json.loads((tmp_path / "kernel_ablation_phantom_smoke.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and all(0 <= r["edge_overlap"] <= 1 for r in rows)
    assert (tmp_path / "kernel_ablation_phantom_smoke.md").read_text().count("| adaconv-vae |") == 2
    assert saved["claims"][0]["claim"] == "AdaConv + VAE: larger kernels change structure less"
    assert (tmp_path / "kernel_ablation_phantom_smoke_adaconv-vae.png").stat().st_size > 10_000


def test_the_adaconv_vae_check_writes_its_tables(tmp_path):
    import importlib.util
    import json

    from cmr_lib.core.paths import repo_root
    spec = importlib.util.spec_from_file_location("vae_check", repo_root() / "benchmarks" / "adaconv_vae_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.run(profile="smoke", work=tmp_path / "w", out_dir=tmp_path, slices=6, search=4)
    rows = {r["kind"]: r for r in out["rows"]}
    assert set(rows) == {"adaconv", "adaconv-vae", "rain"}
    assert set(rows["adaconv-vae"]["kept"]) == {"as stylized", "W itself", "W's mean"}
    assert rows["adaconv-vae"]["kept"]["W itself"] == rows["adaconv"]["kept"]["as stylized"]   # the same AdaConv
    assert len(rows["rain"]["search"]["losses"]) == 6 and "search" not in rows["adaconv"]
    saved = json.loads((tmp_path / "adaconv_vae_check_phantom_smoke.json").read_text())
    assert saved["rows"][1]["vae_rec_mse_std_units"] >= 0
    assert "| adaconv-vae | W's mean |" in (tmp_path / "adaconv_vae_check_phantom_smoke.md").read_text()


def test_kernel_size_rows_are_runs_of_their_own_kept_out_of_table_2(tiny_phantom, tmp_path):
    from cmr_lib.report import tables
    from cmr_lib.study.ablation import kernel_runs
    where = dict(profile="smoke", data_dir=tiny_phantom, output_root=tmp_path)
    seg = kernel_runs([3, 5], "adaconv", setting=2, **where)
    assert list(seg["kernel_size"]) == [3, 5] and seg["DC AVG"].between(0, 1).all()
    assert seg["run"].iloc[0].endswith("setting2_adaconv_seed0") and seg["run"].iloc[1].endswith("_k5_seed0")
    runs = tables.load_runs(tmp_path / "results", profile="smoke")
    assert [r["run_name"] for r in runs] == [seg["run"].iloc[0]]                   # the k = 5 run is not a Table 2 row
    again = kernel_runs([5], "adaconv", setting=2, **where)                          # reused, not retrained
    assert again["DC AVG"].iloc[0] == seg["DC AVG"].iloc[1]
    rows = pd.DataFrame([{"kind": "adaconv", "kernel_size": k, "seed": 0, "edge_overlap": 0.5, "dice_content": 0.8,
                          "dice_stylized": 0.6, "dice_kept": 0.75, "kl_stylized_to_style": 0.1, "kl_content_to_style": 0.2,
                          "slices": 8} for k in (3, 5, 7)])
    md = preservation_markdown(rows, seg)
    assert "setting 2 DC AVG | HD AVG (mm) | HD95 AVG (mm) |" in md
    assert f"| {seg['DC AVG'].iloc[1]:.3f} |" in md.splitlines()[3]
    assert md.splitlines()[4].endswith("| 8 |  |  |  |")                           # k = 7 has no run
