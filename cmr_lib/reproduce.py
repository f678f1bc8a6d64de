"""`make reproduce`: run every notebook of the study with papermill, in order, on one profile.

    python -m cmr_lib.reproduce --profile demo [--data-dir DIR] [--seed 0]

Executed notebooks go to results/notebooks/<profile>/; one progress line per step; the wall time
of each step, peak memory and the machine are written to results/reproduce.json (for reused steps, also
the seconds and running peak memory recorded when they last ran). A step whose executed
notebook exists and whose inputs (notebook, parameters, profile, library code, data) are unchanged is
reused, so a second run takes seconds and an interrupted one picks up at the step it stopped in (whose
trainings resume from their checkpoints).
"""
from __future__ import annotations

import argparse
import hashlib
import json
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
# Table 3: RAIN in setting 1 with 1 and 3 epsilon iterations (5 is Table 2's row)
STEPS += [(f"Table 3 row: setting 1, rain, {e} epsilon iteration{'s' if e > 1 else ''}", "05_settings.ipynb",
           {"setting": 1, "stylizer": "rain", "epsilon_iterations": e}) for e in (1, 3)]
STEPS += [("analysis: Tables 2 and 3, Figs. 6 and 8, bars", "06_analysis.ipynb", {})]


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
    nb = str(nb)
    if not extra:
        return nb
    if extra.get("setting") == 0:
        extra = {"setting": 0}
    elif extra.get("stylizer") != "rain":
        extra = {k: v for k, v in extra.items() if k != "epsilon_iterations"}
    tag = "_".join(f"{'eps' if k == 'epsilon_iterations' else k if k == 'setting' else ''}{v}" for k, v in extra.items())
    return nb.replace(".ipynb", f"_{tag}.ipynb")


def shared_inputs(cfg) -> str:
    """A digest of what every step depends on: the profiles and settings, the library code and the data
    (file names and sizes). Computed once per `make reproduce`."""
    root = repo_root()
    h = hashlib.sha256()
    for path in [*sorted((root / "params").glob("*.yaml")), *sorted((root / "cmr_lib").glob("*.py"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    data = cfg.data_dir or cfg.phantom_dir
    if data is not None and Path(data).is_dir():
        for f in sorted(Path(data).rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(data)}:{f.stat().st_size}".encode())
    return h.hexdigest()


def fingerprint(nb: Path, parameters: dict, shared: str) -> str:
    """What a step's result depends on: its notebook, its parameters and the shared inputs; a step is rerun
    when any of these changed."""
    h = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode())
    h.update(Path(nb).read_bytes())
    h.update(shared.encode())
    return h.hexdigest()[:16]


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
    ap.add_argument("--c0-spacing", default=None, help="'lge' for the cropped MS-CMRSeg copy (stale C0 voxel size)")
    ap.add_argument("--t2-dir", default=None, help="T2 images for setting 1 when the data set has none (MyoPS)")
    ap.add_argument("--force", action="store_true", help="rerun every notebook even if its inputs are unchanged")
    args = ap.parse_args(argv)
    return reproduce(args.profile, data_dir=args.data_dir, seed=args.seed, force=args.force,
                     c0_spacing=args.c0_spacing, t2_dir=args.t2_dir)


def reproduce(profile="demo", *, data_dir=None, seed=0, force=False, steps_list=None, output_root=None,
              c0_spacing=None, t2_dir=None) -> int:
    """Run `steps_list` (default: STEPS; notebooks by name in notebooks/ or by path) in order; see the module
    docstring. `output_root` (default: the repository) receives results/ and figures/; `c0_spacing` and
    `t2_dir` go to every notebook when given (the real MS-CMRSeg copy needs both)."""
    steps_list = STEPS if steps_list is None else steps_list
    cfg = make_config(profile=profile, data_dir=data_dir, seed=seed, output_root=output_root,
                      c0_spacing=c0_spacing or "header", t2_dir=None if t2_dir is None else str(t2_dir))
    if t2_dir is not None and not Path(t2_dir).is_dir():
        raise CmrError(f"{t2_dir}: parameter 't2_dir' is not a folder")
    os.environ.setdefault("TQDM_DISABLE", "1")   # the kernels' progress bars would only clutter saved notebooks
    from cmr_lib.data import source_for

    root = repo_root()
    source_for(cfg)                     # generate the phantom first: its files are part of every fingerprint
    shared = shared_inputs(cfg)
    out_dir = cfg.results_dir / "notebooks" / cfg.profile
    params = {"profile": profile, "seed": cfg.seed,
              "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
              **({"output_root": str(cfg.output_root)} if output_root is not None else {}),
              **({"c0_spacing": cfg.c0_spacing} if c0_spacing is not None else {}),
              **({"t2_dir": str(Path(t2_dir).resolve())} if t2_dir is not None else {})}
    t_all = time.perf_counter()
    steps = []
    ledger_path = out_dir / "steps.json"                  # fingerprints of the finished steps
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() and not force else {}
    print(f"reproduce: profile {cfg.profile}, data {cfg.data_dir or 'built-in phantom'}, {len(steps_list)} steps")
    for i, (name, nb, extra) in enumerate(steps_list, 1):
        t0 = time.perf_counter()
        dst = out_dir / executed_name(Path(nb).name, extra)
        key = fingerprint(root / "notebooks" / nb, {**params, **extra}, shared)
        done = ledger.get(dst.name, {})
        reused = dst.is_file() and done.get("key") == key
        if not reused:
            try:
                run_notebook(root / "notebooks" / nb, dst, {**params, **extra})
            except Exception as exc:  # papermill raises PapermillExecutionError with the cell's error
                msg = str(exc).strip().splitlines()
                raise CmrError(f"step {i} ({nb}) failed: {msg[-1] if msg else type(exc).__name__}; "
                               f"see {dst}") from None
        dt = time.perf_counter() - t0
        if not reused:               # the kernel has exited: its peak is in RUSAGE_CHILDREN (a running max)
            done = ledger[dst.name] = {"key": key, "seconds": round(dt, 1), "peak_memory_mb_so_far": peak_memory_mb()}
            write_json(ledger_path, ledger)
        steps.append({"step": name, "notebook": nb, "executed": dst.name, "parameters": extra,
                      "seconds": round(dt, 1), "reused": reused, "seconds_when_run": done["seconds"],
                      "peak_memory_mb_so_far_when_run": done.get("peak_memory_mb_so_far")})
        print(f"[{i}/{len(steps_list)}] {name}: " + ("unchanged, reused" if reused else f"{dt:.1f} s"), flush=True)
    total = time.perf_counter() - t_all
    write_json(cfg.results_dir / "reproduce.json", {
        "profile": cfg.profile, "data_source": str(cfg.data_dir) if cfg.data_dir else "phantom",
        "seed": cfg.seed, "steps": steps, "total_seconds": round(total, 1),
        "total_seconds_when_run": round(sum(st["seconds_when_run"] for st in steps), 1),
        "peak_memory_mb": peak_memory_mb(),
        "peak_memory_mb_when_run": max((st["peak_memory_mb_so_far_when_run"] or 0.0 for st in steps), default=None),
        "machine": machine(),
    })
    print(f"done in {total:.1f} s ({total / 60:.1f} min); executed notebooks in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
