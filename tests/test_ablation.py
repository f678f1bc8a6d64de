"""Structure preservation (issue 16): the measures behind the kernel-size table tell kept anatomy from moved."""
import numpy as np
import torch
from conftest import heart_label

from cmr_lib.study.ablation import label_dice, preservation_markdown, structure_preservation
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
    table = preservation_markdown([{"kind": "adaconv", "kernel_size": 3, **kept},
                                   {"kind": "adaconv", "kernel_size": 7, **moved}])
    assert table.count("\n") == 4 and "| adaconv | 7 | " in table


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
                   max_slices=8)
    assert [(r["kind"], r["kernel_size"]) for r in rows] == [("adaconv-vae", 3), ("adaconv-vae", 5)]
    saved = json.loads((tmp_path / "kernel_ablation_phantom_smoke.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and all(0 <= r["edge_overlap"] <= 1 for r in rows)
    assert (tmp_path / "kernel_ablation_phantom_smoke.md").read_text().count("| adaconv-vae |") == 2
    assert (tmp_path / "kernel_ablation_phantom_smoke_adaconv-vae.png").stat().st_size > 10_000
