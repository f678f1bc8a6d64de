"""The CUDA paths: every kind of training row runs on the GPU with its tensors, generators and autocast on
the device, the figures rebuild what the network trained on, and GPU inference agrees with the CPU's.
Marked `cuda`: skipped with the reason on a machine without a CUDA GPU (benchmarks/gpu_check.sh runs them)."""
import numpy as np
import pytest
import torch
from conftest import run_row

from cmr_lib.core.config import make_config
from cmr_lib.core.device import device, precision_used
from cmr_lib.data.sources import open_source
from cmr_lib.evaluation.inference import predict
from cmr_lib.study.rebuild import run_training_examples
from cmr_lib.training import segmenters
from cmr_lib.training.stylizers import train_stylizer
from test_augment import CASES

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


@pytest.fixture(autouse=True)
def on_cuda(monkeypatch):
    monkeypatch.setenv("CMR_DEVICE", "cuda")


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_runs")


def test_the_device_is_the_gpu_and_auto_precision_is_bf16():
    dev = device()
    assert dev.type == "cuda" and torch.backends.cudnn.benchmark is True
    assert precision_used("auto", dev) == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


@pytest.mark.parametrize("kind", ["rain", "adaconv"])
def test_stylizers_train_on_the_gpu(tiny_phantom, shared_out, kind):
    cfg = make_config(profile="smoke", data_dir=tiny_phantom, output_root=shared_out)
    run = train_stylizer(cfg, open_source(tiny_phantom), kind, ("C0", "LGE"), progress=False)
    assert {p.device.type for p in run.model.parameters()} == {"cuda"}
    assert run.info["device"].startswith("cuda") and run.info["precision"] == precision_used("auto", device())
    assert all(np.isfinite(v).all() for v in run.history.values())


@pytest.mark.parametrize("setting, stylizer, eps", CASES)
def test_every_row_kind_trains_on_the_gpu_and_its_figure_matches(tiny_phantom, shared_out, optimiser_spy,
                                                                 setting, stylizer, eps):
    seen, devices = optimiser_spy
    cfg, src, run = run_row(tiny_phantom, shared_out, setting, stylizer, eps)
    assert run.segmenter.info["device"].startswith("cuda") and len(seen) == cfg.sizes.segmenter.iterations
    assert set(devices) == {("cuda", "cuda")}
    summary = run.record["summary"]["test"] or run.record["summary"]["val"]
    assert np.isfinite(summary["dice"]["AVG"])
    network_dependent = (cfg.network == "rain" and eps > 0) or cfg.baseline == "slaug"
    torch.manual_seed(cfg.seed)
    ex = run_training_examples(run.record, src, steps=(0,), output_root=shared_out,
                               segmenter=segmenters.build_segmenter(cfg.sizes.segmenter) if network_dependent else None)
    k = 2 if cfg.baseline == "slaug" else 1
    trained_on = seen[0][:k * cfg.sizes.segmenter.batch]
    # cuDNN may pick other kernels in another process: the same images up to float rounding, not bit for bit
    assert ex.stylized.shape == trained_on.shape
    assert float((ex.stylized - trained_on).abs().max()) < 2e-2


def test_gpu_and_cpu_predictions_agree(tiny_phantom, shared_out, monkeypatch):
    cfg = make_config(profile="smoke", data_dir=tiny_phantom, output_root=shared_out,
                      overrides={"segmenter.precision": "fp32"})
    vol = open_source(tiny_phantom).load(3, "LGE", label="require")
    torch.manual_seed(0)
    model = segmenters.build_segmenter(cfg.sizes.segmenter)
    on_gpu = predict(model, vol, cfg.inference)
    monkeypatch.setenv("CMR_DEVICE", "cpu")
    on_cpu = predict(model, vol, cfg.inference)
    # cuDNN runs fp32 convolutions in TF32: an untrained network's near-ties may flip (measured 0.99898 on an H100)
    assert on_gpu.shape == on_cpu.shape and (on_gpu == on_cpu).mean() > 0.99
