"""Where every model runs and in what precision: chosen here only, for training and inference alike."""
from __future__ import annotations

import atexit
import os
import tempfile
from contextlib import nullcontext
from pathlib import Path

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


def memory_format(precision: str, dev: torch.device) -> torch.memory_format:
    """Channels-last where bf16 is used, else NCHW: on a bf16 CPU it speeds every convolution net's step
    (benchmarks/results/demo_before_after/profile_rows/, per row and phase)."""
    return torch.channels_last if precision_used(precision, dev) == "bf16" else torch.contiguous_format


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # someone else's live process
        return True
    return True


def check_cores(registry=None) -> int:
    """Warn when the cmr-stylize processes training at once ask for more threads than there are cores.

    Two notebooks started side by side by hand each take every core and run about ten times slower
    (measured). Each process registers its pid in a folder; when the live ones ask for more threads than
    cores, one line says so. The thread count is not changed here: float results depend on it (measured:
    a DRU-Net's gradients differ between 1 and 2 threads), so the same seed gives the same table only with
    the same threads. The reproduce driver sets OMP_NUM_THREADS per notebook and is never warned. Returns
    the number of live processes (0 when not checked)."""
    if os.environ.get("OMP_NUM_THREADS") or device().type == "cuda":
        return 0
    folder = Path(registry or os.environ.get("CMR_THREADS_DIR") or Path(tempfile.gettempdir()) / "cmr-stylize-threads")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mine = folder / str(os.getpid())
        if not mine.exists():
            mine.write_text(str(torch.get_num_threads()))
            atexit.register(mine.unlink, missing_ok=True)
        live = {}
        for f in folder.iterdir():
            if f.name.isdigit() and _alive(int(f.name)):
                live[f] = int(f.read_text() or 1)
            elif f.name.isdigit():
                f.unlink(missing_ok=True)
    except (OSError, ValueError):          # an unwritable or odd temp folder must not stop a run
        return 0
    cores = os.cpu_count() or 1
    if sum(live.values()) > cores:
        print(f"cmr: {len(live)} cmr-stylize processes are training at once with {sum(live.values())} threads on "
              f"{cores} cores: each will be far slower (about 10x measured). Run them one after the other, or "
              f"give each OMP_NUM_THREADS={max(1, cores // len(live))} (the thread count changes the float "
              f"results), or use `make reproduce`, which does this for you.", flush=True)
    return len(live)
