"""bf16 on the CPU: the path `precision: auto` takes on CPUs with AVX-512 BF16 or AMX (the smoke profile pins
fp32 so that every other test gives the same floats on every CPU; this one asks for bf16 on any CPU)."""
import math

import torch

from cmr_lib.core.config import make_config
from cmr_lib.core.device import bf16_supported, memory_format
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
    assert seg.info["channels_last"] is True
    conv = seg.model.down[0].conv1.weight                               # 1 input channel: the stem is both
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(math.isfinite(v) for v in seg.history["loss"])
    assert next(seg.model.parameters()).dtype == torch.float32          # autocast: the weights stay fp32


def test_the_memory_layout_follows_the_precision():
    cpu = torch.device("cpu")
    assert memory_format("bf16", cpu) == torch.channels_last
    assert memory_format("fp32", cpu) == torch.contiguous_format
    assert memory_format("auto", cpu) == (torch.channels_last if bf16_supported(cpu) else torch.contiguous_format)


def test_an_fp32_row_trains_in_the_default_layout(tiny_phantom, tmp_path):
    cfg = make_config(profile="smoke", setting=0, data_dir=tiny_phantom, output_root=tmp_path,
                      overrides={"segmenter.iterations": 2, "segmenter.checkpoint_every": 2, "segmenter.val_every": 2})
    seg = segmenters.train_setting(cfg, open_source(tiny_phantom), progress=False)
    assert seg.info["channels_last"] is False and seg.model.down[0].conv1.weight.is_contiguous()
