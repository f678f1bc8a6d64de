"""Running one notebook with papermill in its own process, and what the machine and the run used."""
from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from cmr_lib.core.paths import repo_root


def machine() -> dict:
    """CPU count and GPU name (if any): recorded with every timing."""
    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # torch missing or broken: timings are still worth writing
        info["gpu"] = None
    return info


def peak_memory_mb() -> float:
    """Peak resident memory of this process and of its finished children (kernels), in MiB (Linux units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024.0, 1)


def _notebook_error(path: Path) -> str | None:
    """'ExcName: message' of the first error output in an executed notebook, if any."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}"
    return None


def start_notebook(src: Path, dst: Path, parameters: dict, *, threads: int | None = None, gpu: str | None = None):
    """Start executing one notebook with papermill in its own process (kernel python3, working directory =
    the repository root), writing to a temporary file beside `dst`; `gpu` (a CUDA device number) is the only
    GPU it sees. Returns (process, temporary path, log)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".tmp.ipynb", dir=dst.parent)
    os.close(fd)
    env = dict(os.environ)
    if threads:                                    # each kernel's torch uses this many threads
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    log = open(Path(tmp).with_suffix(".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "papermill", str(src), tmp, "-k", "python3", "--cwd",
                             str(repo_root()), "--no-progress-bar", "-y", json.dumps(parameters)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, Path(tmp), log


def finish_notebook(proc, tmp: Path, log, dst: Path) -> str | None:
    """Wait for a started notebook; on success rename it onto `dst` (None), else keep it as
    <name>.failed.ipynb and return a one-line reason."""
    rc = proc.wait()
    log.close()
    log_path = Path(log.name)
    failed = dst.with_name(dst.stem + ".failed.ipynb")
    if rc == 0:
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
        log_path.unlink(missing_ok=True)
        for stale in (failed, failed.with_suffix(".log")):     # an earlier failure of this step is history now
            stale.unlink(missing_ok=True)
        return None
    reason = _notebook_error(tmp) if tmp.is_file() and tmp.stat().st_size else None
    if tmp.is_file():
        os.replace(tmp, failed)
    if reason is None:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        reason = exit_reason(rc, lines[-1] if lines else "")
    log_path.replace(failed.with_suffix(".log"))
    return f"{reason}; see {failed}"


def exit_reason(rc: int, last_line: str) -> str:
    """Why papermill stopped, in words: a signal by name (a kill leaves only papermill's start line in the
    log), a dead kernel, or the log's last line."""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (out of memory, or stopped by hand?)" if -rc in (signal.SIGKILL, signal.SIGTERM) else ""
        return f"the notebook's process was killed by {name}{hint}"
    if "DeadKernelError" in last_line or "Kernel died" in last_line:
        return f"the notebook's kernel died, e.g. killed for memory ({last_line.strip()})"
    if not last_line or last_line.startswith("Executing notebook with kernel"):
        return f"papermill exited with code {rc} before any cell reported an error"
    return last_line
