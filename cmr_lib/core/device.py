"""Where every model runs and in what precision: chosen here only, for training and inference alike."""
from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from cmr_lib.core.errors import CmrError

PRECISIONS = ("auto", "bf16", "fp32")


def device() -> torch.device:
    """CMR_DEVICE (cpu, cuda, cuda:N) if set, else CUDA when present, else the CPU. On CUDA, cuDNN picks its
    fastest kernels for the fixed crop sizes."""
    want = os.environ.get("CMR_DEVICE", "").strip()
    if want:
        try:
            dev = torch.device(want)
        except RuntimeError:
            raise CmrError(f"CMR_DEVICE = {want!r}: choose cpu, cuda or cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise CmrError(f"CMR_DEVICE = {want!r}: choose cpu, cuda or cuda:N")
        if dev.type == "cuda" and (not torch.cuda.is_available()
                                   or (dev.index or 0) >= torch.cuda.device_count()):
            raise CmrError(f"CMR_DEVICE = {want!r}: no such CUDA device on this machine")
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def bf16_supported(dev: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with AVX-512 BF16 or AMX (measured 2x on this one)."""
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return bool(cpu and (getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                         or getattr(cpu, "_is_amx_tile_supported", lambda: False)()))


def precision_used(precision: str, dev: torch.device) -> str:
    """'bf16' when asked for, or when 'auto' and the device supports it; else 'fp32'."""
    if precision not in PRECISIONS:
        raise CmrError(f"parameter 'precision' = {precision!r}: choose 'auto', 'bf16' or 'fp32'")
    return "bf16" if precision == "bf16" or (precision == "auto" and bf16_supported(dev)) else "fp32"


def autocast(precision: str, dev: torch.device):
    """A bf16 autocast context where `precision_used` says bf16, else nothing (fp32)."""
    if precision_used(precision, dev) == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return nullcontext()
