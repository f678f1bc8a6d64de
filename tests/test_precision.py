"""bf16 on the CPU: the path `precision: auto` takes on CPUs with AVX-512 BF16 or AMX (the smoke profile pins
fp32 so that every other test gives the same floats on every CPU; this one asks for bf16 on any CPU)."""
import math

import torch

from cmr_lib.core.config import make_config
from cmr_lib.data.sources import open_source
from cmr_lib.training import segmenters
from cmr_lib.training.stylizers import train_stylizer

BF16 = {"stylizer.precision": "bf16", "segmenter.precision": "bf16", "stylizer.iterations": 4,
        "stylizer.checkpoint_every": 4, "stylizer.autoencoder.iterations": 4, "segmenter.iterations": 4,
        "segmenter.checkpoint_every": 4, "segmenter.val_every": 4}


def test_bf16_trains_a_stylizer_and_a_searching_row_on_the_cpu(tiny_phantom, tmp_path):
    cfg = make_config(profile="smoke", setting=2, stylizer="rain", data_dir=tiny_phantom, output_root=tmp_path,
                      overrides=BF16)
    src = open_source(tiny_phantom)
    ts = train_stylizer(cfg, src, "rain", progress=False)
    assert ts.info["precision"] == "bf16" and ts.info["channels_last"] is True
    assert all(math.isfinite(v) for v in ts.history["total"]) and len(ts.history["total"]) == 4
    seg = segmenters.train_setting(cfg, src, stylizer=ts, epsilon_iterations=2, progress=False)
    assert seg.info["precision"] == "bf16" and len(seg.history["explore_gain"]) == 4
    assert all(math.isfinite(v) for v in seg.history["loss"])
    assert next(seg.model.parameters()).dtype == torch.float32          # autocast: the weights stay fp32
