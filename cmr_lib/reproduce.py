"""`make reproduce`: run every notebook of the study with papermill, in order, on one profile.

    python -m cmr_lib.reproduce --profile demo [--data-dir DIR] [--seed 0]

Executed notebooks go to results/notebooks/<profile>/; one progress line per step; the wall time
of each step, peak memory and the machine are written to results/reproduce.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

from cmr_lib.atomic import atomic_path, write_json
from cmr_lib.errors import CmrError, cli_main
from cmr_lib.params import make_config, repo_root

# (step name, notebook, extra parameters): grows with the study (stylizers, DRU-Net, settings, analysis)
STEPS = [
    ("data exploration (Fig. 1)", "01_data_exploration.ipynb", {}),
    ("RAIN stylizers, bSSFP->T2 and bSSFP->LGE (Figs. 5, 7-9)", "02_rain.ipynb", {}),
    ("AdaConv stylizers, bSSFP->T2 and bSSFP->LGE (Figs. 7-9)", "03_adaconv.ipynb", {}),
    ("DRU-Net, setting 0 and the domain gap (Fig. 6)", "04_drunet.ipynb", {}),
]
# Table 2: setting 0, then settings 1-3 with each stylizer (RAIN with 5 epsilon iterations)
STEPS += [(f"Table 2 row: setting {s}" + (f", {k}" if s else ""), "05_settings.ipynb",
           {"setting": s, "stylizer": k, "epsilon_iterations": 5})
          for s, k in [(0, "rain"), (1, "rain"), (1, "adaconv"), (2, "rain"), (2, "adaconv"), (3, "rain"),
                       (3, "adaconv")]]


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


def executed_name(nb: str, extra: dict) -> str:
    """05_settings.ipynb + {setting: 3, stylizer: 'rain'} -> 05_settings_setting3_rain_eps5.ipynb."""
    if not extra:
        return nb
    if extra.get("setting") == 0:
        extra = {"setting": 0}
    elif extra.get("stylizer") != "rain":
        extra = {k: v for k, v in extra.items() if k != "epsilon_iterations"}
    tag = "_".join(f"{'eps' if k == 'epsilon_iterations' else k if k == 'setting' else ''}{v}" for k, v in extra.items())
    return nb.replace(".ipynb", f"_{tag}.ipynb")


def run_notebook(src: Path, dst: Path, parameters: dict, *, log_output=False):
    """Execute one notebook with papermill (kernel python3, working directory = repository root)."""
    import papermill as pm

    with atomic_path(dst) as tmp:
        pm.execute_notebook(str(src), str(tmp), parameters=parameters, kernel_name="python3",
                            cwd=str(repo_root()), progress_bar=False, log_output=log_output)


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cmr_lib.reproduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = make_config(profile=args.profile, data_dir=args.data_dir, seed=args.seed)   # validates early
    os.environ.setdefault("TQDM_DISABLE", "1")   # the kernels' progress bars would only clutter saved notebooks
    root = repo_root()
    out_dir = cfg.results_dir / "notebooks" / cfg.profile
    params = {"profile": args.profile, "seed": cfg.seed,
              "data_dir": str(cfg.data_dir) if cfg.data_dir else None}
    t_all = time.perf_counter()
    steps = []
    print(f"reproduce: profile {cfg.profile}, data {cfg.data_dir or 'built-in phantom'}, {len(STEPS)} steps")
    for i, (name, nb, extra) in enumerate(STEPS, 1):
        t0 = time.perf_counter()
        try:
            run_notebook(root / "notebooks" / nb, out_dir / executed_name(nb, extra), {**params, **extra})
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's error
            msg = str(exc).strip().splitlines()
            raise CmrError(f"step {i} ({nb}) failed: {msg[-1] if msg else type(exc).__name__}; "
                           f"see {out_dir / executed_name(nb, extra)}") from None
        dt = time.perf_counter() - t0
        steps.append({"step": name, "notebook": nb, "parameters": extra, "seconds": round(dt, 1)})
        print(f"[{i}/{len(STEPS)}] {name}: {dt:.1f} s")
    total = time.perf_counter() - t_all
    write_json(cfg.results_dir / "reproduce.json", {
        "profile": cfg.profile, "data_source": str(cfg.data_dir) if cfg.data_dir else "phantom",
        "seed": cfg.seed, "steps": steps, "total_seconds": round(total, 1),
        "peak_memory_mb": peak_memory_mb(), "machine": machine(),
    })
    print(f"done in {total:.1f} s ({total / 60:.1f} min); executed notebooks in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
