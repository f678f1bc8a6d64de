"""Running one notebook with papermill in its own process, and what the machine and the run used.

`python -m cmr_lib.pipeline.execution SRC DST CWD PARAMETERS_JSON` is that process: papermill, started again when
its kernel dies while starting (see `execute_with_retry`)."""
from __future__ import annotations

import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
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


def start_notebook(src: Path, dst: Path, parameters: dict, *, threads: int | None = None, gpu: str | None = None,
                   env: dict | None = None):
    """Start executing one notebook with papermill in its own process (kernel python3, working directory =
    the repository root), writing to a temporary file beside `dst`; `gpu` (a CUDA device number) is the only
    GPU it sees; `env` adds variables to its environment. Returns (process, temporary path, log)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".tmp.ipynb", dir=dst.parent)
    os.close(fd)
    env = {**os.environ, **(env or {})}
    if threads:                                    # each kernel's torch uses this many threads
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    # the process below imports cmr_lib itself: found from any working directory, installed or not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root()), env.get("PYTHONPATH")) if p)
    log = open(Path(tmp).with_suffix(".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "cmr_lib.pipeline.execution", str(src), tmp, str(repo_root()),
                             json.dumps(parameters)], stdout=log, stderr=subprocess.STDOUT, env=env)
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


# What a kernel that never became ready raises (jupyter_client's wait_for_ready): no cell has run yet.
STARTUP_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")


def execute_with_retry(src, dst, parameters: dict, cwd, *, attempts: int = 3, execute=None):
    """papermill.execute_notebook, started again (up to `attempts` times in all, after a short random pause) when
    the kernel dies while starting: kernels started side by side can race for one ZMQ port and the loser exits
    with 'Address already in use' (papermill issue #511). A kernel that dies mid-run is not retried."""
    if execute is None:
        import papermill
        execute = papermill.execute_notebook
    for attempt in range(1, attempts + 1):
        try:
            return execute(str(src), str(dst), parameters=parameters, kernel_name="python3", cwd=str(cwd),
                           progress_bar=False, start_timeout=60)
        except RuntimeError as exc:
            if attempt == attempts or not any(s in str(exc) for s in STARTUP_FAILURES):
                raise
            print(f"the kernel did not start ({exc}); starting it again, try {attempt + 1} of {attempts}",
                  file=sys.stderr, flush=True)
            time.sleep(random.uniform(0.5, 2.0))


def main(argv: list[str]) -> int:
    """The notebook's process: as `papermill SRC DST -k python3 --cwd CWD -y PARAMETERS_JSON`, with the retry."""
    import logging
    import traceback

    import nbclient
    src, dst, cwd, parameters = argv
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    logging.basicConfig(level="INFO", format="%(message)s")
    try:
        execute_with_retry(src, dst, json.loads(parameters), cwd)
    except nbclient.exceptions.DeadKernelError:
        traceback.print_exc()
        return 138                                  # papermill's own exit code for a dead kernel
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
