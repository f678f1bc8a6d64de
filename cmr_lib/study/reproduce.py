"""`make reproduce`: run every notebook of the study with papermill, in order, on one profile.

    python -m cmr_lib.study.reproduce --profile demo [--data-dir DIR] [--seed 0]

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
import sys
import time
from pathlib import Path

from cmr_lib.core.atomic import write_json
from cmr_lib.core.config import make_config
from cmr_lib.core.errors import CmrError, check_int, cli_main
from cmr_lib.core.grid import reproduce_rows, table_rows, uses_epsilon
from cmr_lib.core.schema import NETWORKS
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import DATA_SETS, resolve_data
from cmr_lib.data.sources import source_for
from cmr_lib.study.execution import finish_notebook, machine, peak_memory_mb, start_notebook
from cmr_lib.study.stylizers import train_pairs

# (step name, notebook, extra parameters[, may run beside its neighbours]). A notebook name "prepare:<what>"
# is a library call instead (see `prepare`). Parallel steps that follow each other run `jobs` at a time.
BASE_STEPS = [
    ("data exploration (Fig. 1)", "01_data_exploration.ipynb", {}),
    # 02 and 03 side by side (one thread each, after a shared-encoder step) took 437 s against 435 s one after
    # the other: the stylizers' convolutions use both cores well, so they stay sequential
    ("RAIN stylizers, bSSFP->T2 and bSSFP->LGE (Figs. 5, 7-9)", "02_rain.ipynb", {}),
    ("AdaConv stylizers, bSSFP->T2 and bSSFP->LGE (Figs. 7-9)", "03_adaconv.ipynb", {}),
    ("DRU-Net, setting 0 and the domain gap (Fig. 6)", "04_drunet.ipynb", {}),
]
ANALYSES = ("06_analysis.ipynb", "07_beyond.ipynb")          # read every seed's runs: they get the seed list


def row_step_name(key: tuple) -> str:
    """'Table 2 row: setting 3, rain+intensity' / 'Table 3 row: setting 1, rain, 3 epsilon iterations'."""
    s, k, e = key
    if key in table_rows("table2"):
        return f"Table 2 row: setting {s}" + (f", {k}" if (s, k) != (0, "none") else "")
    return f"Table 3 row: setting {s}, {k}, {e} epsilon iteration{'s' if e != 1 else ''}"


def steps(beyond: bool = False) -> list:
    """The steps of `make reproduce`: notebooks 01-04, one notebook-05 run per row of the experiment grid that
    it runs (params/experiments.yaml), then 06. With `beyond` (BEYOND=1: the paper's future work), the AdaConv
    + VAE stylizers first, the grid's 'beyond' rows too, and notebook 07 at the end."""
    out = list(BASE_STEPS)
    if beyond:
        out.append(("AdaConv + VAE stylizers, bSSFP->T2 and bSSFP->LGE", "prepare:stylizers",
                    {"kinds": ["adaconv-vae"]}))
    out += [(row_step_name(key), "05_settings.ipynb",
             {"setting": key[0], "stylizer": key[1], "epsilon_iterations": key[2] if uses_epsilon(key[1]) else 5}, True)
            for key in reproduce_rows(beyond)]
    out.append(("analysis: Tables 2 and 3, tests, Figs. 6 and 8, bars", "06_analysis.ipynb", {}))
    if beyond:
        out.append(("beyond the paper: kernel sizes, AdaConv + VAE (07)", "07_beyond.ipynb", {}))
    return out


STEPS = steps()


def with_seeds(steps: list, seeds: list[int]) -> list:
    """The steps for several seeds: each seed after the first gets its stylizers trained first (so rows
    running side by side never train the same one twice), then every Table 2/3 row again with that seed;
    06 gets the list of seeds."""
    if len(seeds) <= 1:
        return steps
    extra_seeds = seeds[1:]
    rows = [st for st in steps if (*st, False)[3] and st[1] == "05_settings.ipynb"]
    kinds = [n for n in NETWORKS if any(r[2]["stylizer"].split("+")[0] == n for r in rows)]
    out = []
    for step in steps:
        name, nb, extra, parallel = (*step, False)[:4]
        if nb == "06_analysis.ipynb":
            out += [(f"stylizers, seed {s}", "prepare:stylizers",
                     {"seed": s, **({"kinds": kinds} if kinds != default_kinds() else {})}) for s in extra_seeds]
            out += [(f"{r[0]} (seed {s})", r[1], {**r[2], "seed": s}, True) for s in extra_seeds for r in rows]
        if nb in ANALYSES:
            out.append((name, nb, {**extra, "seeds": seeds}))
        else:
            out.append(step)
    return out


def default_kinds() -> list[str]:
    """The stylizers the rows of a plain `make reproduce` use (what prepare:stylizers trains by default)."""
    return [n for n in NETWORKS if any(key[1].split("+")[0] == n for key in reproduce_rows())]


def cost_hint(extra: dict) -> float:
    """Rough relative cost of a step, so parallel steps start longest first (rows with a style search pay for it)."""
    k = str(extra.get("stylizer", ""))
    if extra.get("setting", 1) == 0 or not extra:
        return 1.0
    if uses_epsilon(k):
        return 2.0 + extra.get("epsilon_iterations", 5)
    return 1.5 if k.startswith("adaconv") else 1.0


def executed_name(nb: str, extra: dict) -> str:
    """05_settings.ipynb + {setting: 3, stylizer: 'rain'} -> 05_settings_setting3_rain_eps5.ipynb; a seed
    given to one step is appended (_seed1); 'prepare:stylizers' + {seed: 1} -> prepare_stylizers_seed1."""
    nb = str(nb)
    if nb.startswith("prepare:"):
        return (f"prepare_{nb.split(':', 1)[1]}" + "".join(f"_{k}" for k in extra.get("kinds", ()))
                + (f"_seed{extra['seed']}" if "seed" in extra else ""))
    extra = {k: v for k, v in extra.items() if k != "seeds"}
    if not extra:
        return nb
    seed = extra.pop("seed", None)
    if extra.get("setting") == 0 and extra.get("stylizer", "rain") in ("rain", "adaconv", "none"):
        extra = {"setting": 0}
    elif not uses_epsilon(str(extra.get("stylizer", ""))):
        extra = {k: v for k, v in extra.items() if k != "epsilon_iterations"}
    if seed is not None:
        extra["seed"] = seed
    tag = "_".join(f"{'eps' if k == 'epsilon_iterations' else k if k in ('setting', 'seed') else ''}{v}"
                   for k, v in extra.items())
    return nb.replace(".ipynb", f"_{tag}.ipynb")


def shared_inputs(cfg) -> str:
    """A digest of what every step depends on: the profiles and settings, the library code and the data
    (file names and sizes). Computed once per `make reproduce`."""
    root = repo_root()
    h = hashlib.sha256()
    for path in [*sorted((root / "params").glob("*.yaml")), *sorted((root / "cmr_lib").rglob("*.py"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    data = cfg.data_dir or cfg.phantom_dir
    if data is not None and Path(data).is_dir():
        for f in sorted(Path(data).rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(data)}:{f.stat().st_size}".encode())
    return h.hexdigest()


def fingerprint(nb: Path | None, parameters: dict, shared: str) -> str:
    """What a step's result depends on: its notebook (None for library steps), its parameters and the
    shared inputs; a step is rerun when any of these changed."""
    h = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode())
    if nb is not None:
        h.update(Path(nb).read_bytes())
    h.update(shared.encode())
    return h.hexdigest()[:16]


def prepare(what: str, parameters: dict) -> None:
    """The library step of `make reproduce`: 'stylizers' trains every stylizer of a seed, so that the rows of
    that seed (or those in parameters['kinds']), running side by side, only reuse them."""
    if what != "stylizers":
        raise CmrError(f"unknown reproduce step 'prepare:{what}'")
    keys = ("profile", "seed", "data_dir", "output_root", "c0_spacing", "t2_dir")
    cfg = make_config(**{k: v for k, v in parameters.items() if k in keys and v is not None})
    source = source_for(cfg, progress=False)
    for kind in parameters.get("kinds") or default_kinds():
        train_pairs(cfg, source, kind, progress=False)


def parse_args(argv=None) -> tuple[argparse.Namespace, dict]:
    """The driver's command line (what `make reproduce` passes, and what workflow/Snakefile reads from
    --config args=...): the parsed options and make_plan's keyword arguments."""
    ap = argparse.ArgumentParser(prog="python -m cmr_lib.study.reproduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=None, help="default: 'real' with --data, else 'demo'")
    ap.add_argument("--data", default=None, choices=sorted(DATA_SETS),
                    help="a real sample set by name: found in $CMR_REAL_DATA or ../shared/data, its C0 voxel size "
                    "checked, T2 from MyoPS when it has none; results/ and figures/ go to real/<name>/")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0, help="the first seed (and the only one when --seeds is 1)")
    ap.add_argument("--seeds", type=int, default=None, help="run every Table 2/3 row with this many seeds "
                    "(default: the profile's reproduce.seeds)")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks run side by side where they may (default 2)")
    ap.add_argument("--c0-spacing", default=None, help="'lge' for the cropped MS-CMRSeg copy (stale C0 voxel size)")
    ap.add_argument("--t2-dir", default=None, help="T2 images for setting 1 when the data set has none (MyoPS)")
    ap.add_argument("--output-root", default=None, help="write results/ and figures/ here (default: the repository)")
    ap.add_argument("--gpus", default=None, help="CUDA devices to spread parallel notebooks over, e.g. 0,1,2,3 "
                    "(JOBS in all; several per GPU when JOBS is larger)")
    ap.add_argument("--force", action="store_true", help="rerun every notebook even if its inputs are unchanged")
    ap.add_argument("--beyond", action="store_true", help="also the paper's future work: the AdaConv + VAE rows "
                    "and notebook 07 (kernel sizes)")
    ap.add_argument("--steps-file", default=None, help=argparse.SUPPRESS)       # tests: a JSON list of steps
    engine = ap.add_mutually_exclusive_group()
    engine.add_argument("--step", default=None, metavar="EXECUTED",
                        help="Snakemake's job: run (or reuse) the one step whose executed notebook is EXECUTED")
    engine.add_argument("--summary", action="store_true", help="Snakemake's last job: write results/reproduce.json")
    engine.add_argument("--plan", action="store_true", help="print the steps, their fingerprints and dependencies")
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)   # --step: the cores Snakemake gave
    ap.add_argument("--started", type=float, default=os.environ.get("CMR_REPRODUCE_STARTED"),
                    help=argparse.SUPPRESS)                 # --summary: the run's start (Unix time; make sets it)
    args = ap.parse_args(argv)
    data_dir, c0_spacing, t2_dir, output_root = args.data_dir, args.c0_spacing, args.t2_dir, args.output_root
    if args.data:
        if data_dir:
            raise CmrError("give DATA (a sample set by name) or DATA_DIR (a folder), not both")
        named = resolve_data(args.data)
        if not (args.step or args.summary or args.plan):
            print(f"reproduce: {named.describe()}")
        data_dir, c0_spacing = named.data_dir, c0_spacing or named.c0_spacing
        t2_dir = t2_dir or named.t2_dir
        output_root = output_root or repo_root() / "real" / args.data
    steps_list = None
    if args.steps_file:
        steps_list = [tuple(st) for st in json.loads(Path(args.steps_file).read_text())]
    profile = args.profile or ("real" if args.data else "demo")
    return args, dict(profile=profile, data_dir=data_dir, seed=args.seed, seeds=args.seeds, jobs=args.jobs,
                      c0_spacing=c0_spacing, t2_dir=t2_dir, output_root=output_root,
                      gpus=args.gpus.split(",") if args.gpus else None, beyond=args.beyond, steps_list=steps_list)


@cli_main
def main(argv=None) -> int:
    args, kw = parse_args(argv)
    if args.step:
        run_step(make_plan(**kw), args.step, threads=args.threads, force=args.force)
        return 0
    if args.summary:
        snakemake_summary(make_plan(**kw), started=args.started)
        return 0
    if args.plan:
        made = make_plan(**kw)
        print(json.dumps([{k: (str(v) if isinstance(v, Path) else v) for k, v in p.items()} for p in made["steps"]],
                         indent=1))
        return 0
    return reproduce(**kw, force=args.force)


def make_plan(profile="demo", *, data_dir=None, seed=0, seeds=None, jobs=2, steps_list=None, output_root=None,
              c0_spacing=None, t2_dir=None, gpus=None, beyond=False) -> dict:
    """What `make reproduce` will do, whichever engine runs it: the configuration, the seeds, and one entry per
    step (its executed notebook, parameters, fingerprint, threads, the steps it waits for and, with `gpus`, the
    GPU the Snakemake engine gives it). Generates the phantom first: its files are part of every fingerprint."""
    cfg = make_config(profile=profile, data_dir=data_dir, seed=seed, output_root=output_root,
                      c0_spacing=c0_spacing or "header", t2_dir=None if t2_dir is None else str(t2_dir))
    check_int("jobs", jobs, minimum=1)
    gpus = [str(g).strip() for g in gpus] if gpus else []
    if any(not g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise CmrError(f"GPUS = {','.join(gpus)!r}: give distinct CUDA device numbers, e.g. GPUS=0,1,2,3")
    n_seeds = check_int("seeds", cfg.sizes.reproduce.seeds if seeds is None else seeds, minimum=1)
    seed_list = list(range(cfg.seed, cfg.seed + n_seeds))
    steps_list = with_seeds(steps(beyond) if steps_list is None else steps_list, seed_list)
    root = repo_root()
    source_for(cfg)
    shared = shared_inputs(cfg)
    out_dir = cfg.results_dir / "notebooks" / cfg.profile
    params = {"profile": profile, "seed": cfg.seed,
              "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
              **({"output_root": str(cfg.output_root)} if output_root is not None else {}),
              **({"c0_spacing": cfg.c0_spacing} if c0_spacing is not None else {}),
              **({"t2_dir": str(Path(t2_dir).resolve())} if t2_dir is not None else {})}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    plan, barrier, since = [], None, []
    for i, step in enumerate(steps_list, 1):
        name, nb, extra, parallel = (*step, False)[:4]
        library = isinstance(nb, str) and nb.startswith("prepare:")
        nb = nb if library else str(nb)
        src = None if library else root / "notebooks" / nb            # an absolute path stays as it is
        dst = out_dir / executed_name(nb if library else Path(nb).name, extra)
        parameters = {**params, **extra}
        parallel = bool(parallel) and jobs > 1
        # a parallel step waits for the last step that is not; any other step waits for everything before it
        deps = ([barrier] if barrier else []) if parallel else [*([barrier] if barrier else []), *since]
        plan.append({"i": i, "name": name, "nb": nb, "src": src, "dst": dst, "extra": extra,
                     "parameters": parameters, "parallel": parallel, "key": fingerprint(src, parameters, shared),
                     "threads": threads if parallel else (os.cpu_count() or 1), "deps": deps,
                     "gpu": gpus[(len(since) if parallel else 0) % len(gpus)] if gpus else None})
        if parallel:
            since.append(dst.name)
        else:
            barrier, since = dst.name, []
    return {"cfg": cfg, "seeds": seed_list, "jobs": jobs, "threads": threads, "gpus": gpus, "out_dir": out_dir,
            "steps": plan}


def reproduce(profile="demo", *, data_dir=None, seed=0, seeds=None, jobs=2, force=False, steps_list=None,
              output_root=None, c0_spacing=None, t2_dir=None, gpus=None, beyond=False) -> int:
    """Run `steps_list` (default: steps(beyond), for `seeds` seeds; notebooks by name in notebooks/ or by path) in
    order, parallel neighbours `jobs` at a time with cpu_count // jobs threads each; see the module
    docstring. `output_root` (default: the repository) receives results/ and figures/; `c0_spacing` and
    `t2_dir` go to every notebook when given (the real MS-CMRSeg copy needs both). `gpus` (CUDA device
    numbers, e.g. ['0', '1']) spreads the `jobs` parallel notebooks over those GPUs, each to the one with the
    fewest running (several rows share a GPU when jobs > len(gpus)); the placement goes into reproduce.json.
    This is the built-in engine; `make reproduce` runs the same plan with Snakemake (workflow/Snakefile)."""
    made = make_plan(profile, data_dir=data_dir, seed=seed, seeds=seeds, jobs=jobs, steps_list=steps_list,
                     output_root=output_root, c0_spacing=c0_spacing, t2_dir=t2_dir, gpus=gpus, beyond=beyond)
    cfg, plan, gpus, out_dir, threads = made["cfg"], made["steps"], made["gpus"], made["out_dir"], made["threads"]
    seed_list = made["seeds"]
    os.environ.setdefault("TQDM_DISABLE", "1")   # the kernels' progress bars would only clutter saved notebooks
    t_all = time.perf_counter()
    ledger_path = out_dir / "steps.json"                  # fingerprints of the finished steps
    ledger = read_ledger(ledger_path) if not force else {}
    print(f"reproduce: profile {cfg.profile}, data {cfg.data_dir or 'built-in phantom'}, seeds {seed_list}, "
          f"{len(plan)} steps, {jobs} at a time where they may ({threads} threads each)")
    results: dict[int, dict] = {}

    placement: dict[int, str | None] = {}

    def pick_gpu(running=()):
        """The GPU with the fewest notebooks running on it (None without GPUS)."""
        if not gpus:
            return None
        load = {g: sum(placement.get(i) == g for i in running) for g in gpus}
        return min(gpus, key=lambda g: load[g])

    def record(p, dt, reused, ran_parallel):
        done = ledger.get(p["dst"].name, {})
        if not reused:               # the kernel has exited: its peak is in RUSAGE_CHILDREN (a running max)
            done = ledger[p["dst"].name] = update_ledger(ledger_path, p["dst"].name, {
                "key": p["key"], "seconds": round(dt, 1), "peak_memory_mb_so_far": peak_memory_mb(),
                "parallel": ran_parallel})
        results[p["i"]] = step_result(p, dt, reused, done, placement.get(p["i"]) if gpus and not reused else None)
        print(f"[{p['i']}/{len(plan)}] {p['name']}: " + ("unchanged, reused" if reused else f"{dt:.1f} s"), flush=True)

    def is_done(p):
        return step_done(p, ledger)

    k = 0
    while k < len(plan):
        group = [plan[k]]
        while group[0]["parallel"] and k + len(group) < len(plan) and plan[k + len(group)]["parallel"]:
            group.append(plan[k + len(group)])
        k += len(group)
        todo = []
        for p in group:
            if is_done(p):
                record(p, 0.0, True, False)
            else:
                todo.append(p)
        if len(todo) <= 1 or not group[0]["parallel"]:
            for p in todo:
                t0 = time.perf_counter()
                if p["src"] is None:
                    prepare(p["nb"].split(":", 1)[1], p["parameters"])
                else:
                    placement[p["i"]] = pick_gpu()
                    err = finish_notebook(*start_notebook(p["src"], p["dst"], p["parameters"],
                                                          gpu=placement[p["i"]]), p["dst"])
                    if err:
                        raise CmrError(f"step {p['i']} ({p['nb']}) failed: {err}")
                record(p, time.perf_counter() - t0, False, False)
            continue
        queue = sorted(todo, key=lambda p: -cost_hint(p["extra"]))        # longest first
        running, failures = {}, []
        while queue or running:
            while queue and len(running) < jobs and not failures:
                p = queue.pop(0)
                placement[p["i"]] = pick_gpu(running)
                running[p["i"]] = (p, time.perf_counter(), start_notebook(p["src"], p["dst"], p["parameters"],
                                                                          threads=threads, gpu=placement[p["i"]]))
            finished = None
            while finished is None:
                for i, (p, t0, started) in running.items():
                    if started[0].poll() is not None:
                        finished = i
                        break
                else:
                    time.sleep(0.2)
            p, t0, started = running.pop(finished)
            err = finish_notebook(*started, p["dst"])
            if err:
                failures.append(f"step {p['i']} ({p['nb']}) failed: {err}")
                queue.clear()
            else:
                record(p, time.perf_counter() - t0, False, True)
        if failures:
            raise CmrError(failures[0])
    total = time.perf_counter() - t_all
    write_summary(made, [results[i] for i in sorted(results)], total, peak_memory_mb(), engine="built-in")
    print(f"done in {total:.1f} s ({total / 60:.1f} min); executed notebooks in {out_dir}")
    return 0


def read_ledger(path: Path) -> dict:
    """The finished steps' fingerprints and timings (steps.json), {} when there is none yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def update_ledger(path: Path, name: str, entry: dict) -> dict:
    """Record one finished step in the ledger, under a file lock: Snakemake's jobs finish side by side."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = read_ledger(path)
        ledger[name] = entry
        write_json(path, ledger)
    return entry


def step_done(p: dict, ledger: dict) -> bool:
    """A step is reused when its executed notebook exists (library steps have none) and its fingerprint matches."""
    exists = p["src"] is None or p["dst"].is_file()
    return exists and ledger.get(p["dst"].name, {}).get("key") == p["key"]


def step_result(p: dict, seconds: float, reused: bool, done: dict, gpu=None) -> dict:
    """One step's line of reproduce.json."""
    return {"step": p["name"], "notebook": p["nb"], "executed": p["dst"].name, "parameters": p["extra"],
            "seconds": round(seconds, 1), "reused": reused, "ran_beside_others": done.get("parallel", False),
            "seconds_when_run": done["seconds"], "peak_memory_mb_so_far_when_run": done.get("peak_memory_mb_so_far"),
            **({"gpu": gpu} if gpu is not None else {})}


def write_summary(made: dict, steps: list[dict], total: float | None, peak: float, *, engine: str) -> None:
    """results/reproduce.json: the plan's seeds and jobs, each step's line, wall time, peak memory, machine."""
    cfg = made["cfg"]
    write_json(cfg.results_dir / "reproduce.json", {
        "profile": cfg.profile, "data_source": str(cfg.data_dir) if cfg.data_dir else "phantom", "engine": engine,
        "seed": cfg.seed, "seeds": made["seeds"], "jobs": made["jobs"], "threads_per_parallel_step": made["threads"],
        **({"gpus": made["gpus"]} if made["gpus"] else {}),
        "steps": steps, "total_seconds": None if total is None else round(total, 1),
        "total_seconds_when_run": round(sum(st["seconds_when_run"] for st in steps), 1),
        "peak_memory_mb": peak,
        "peak_memory_mb_when_run": max((st["peak_memory_mb_so_far_when_run"] or 0.0 for st in steps), default=None),
        "peak_memory_note": f"the largest single process; up to {made['jobs']} notebooks ran at once",
        "machine": machine(),
    })



def snakemake_dir(made: dict) -> Path:
    """Where the Snakemake engine keeps each step's marker, result line and benchmark."""
    return made["out_dir"] / "snakemake"


def run_step(made: dict, executed: str, *, threads: int | None = None, force=False) -> dict:
    """Snakemake's job for one step: run it (or reuse it, as the built-in engine does: same fingerprint, same
    ledger), then write its line of reproduce.json to snakemake/<executed>.json."""
    p = next((p for p in made["steps"] if p["dst"].name == executed), None)
    if p is None:
        raise CmrError(f"no step named {executed!r} in this plan (see --plan)")
    ledger_path = made["out_dir"] / "steps.json"
    ledger = read_ledger(ledger_path)
    threads = min(p["threads"], threads) if threads else p["threads"]
    os.environ.setdefault("TQDM_DISABLE", "1")
    t0 = time.perf_counter()
    if not force and step_done(p, ledger):
        result = step_result(p, 0.0, True, ledger[executed])
    else:
        if p["src"] is None:
            import torch
            torch.set_num_threads(threads)
            prepare(p["nb"].split(":", 1)[1], p["parameters"])
        else:
            err = finish_notebook(*start_notebook(p["src"], p["dst"], p["parameters"], threads=threads, gpu=p["gpu"]),
                                  p["dst"])
            if err:
                raise CmrError(f"step {p['i']} ({p['nb']}) failed: {err}")
        dt = time.perf_counter() - t0
        done = update_ledger(ledger_path, executed, {"key": p["key"], "seconds": round(dt, 1),
                                                     "peak_memory_mb_so_far": peak_memory_mb(),
                                                     "parallel": p["parallel"]})
        result = step_result(p, dt, False, done, p["gpu"])
    write_json(snakemake_dir(made) / f"{executed}.json", result)
    print(f"[{p['i']}/{len(made['steps'])}] {p['name']}: "
          + ("unchanged, reused" if result["reused"] else f"{result['seconds']:.1f} s"), flush=True)
    return result


def snakemake_summary(made: dict, *, started: float | None = None) -> None:
    """Snakemake's last job: reproduce.json from every step's result line and Snakemake's benchmark of it (wall
    seconds, peak resident memory), with the wall time since `started` (a Unix time) when given; a step whose
    line predates `started` was not run this time (reused)."""
    where = snakemake_dir(made)
    steps = []
    for p in made["steps"]:
        path = where / f"{p['dst'].name}.json"
        line = json.loads(path.read_text())
        if started is not None and path.stat().st_mtime < started:     # Snakemake had no reason to run it
            line.update(reused=True, seconds=0.0)
        bench = where / f"{p['dst'].name}.benchmark.tsv"
        if bench.is_file():
            rows = bench.read_text().splitlines()
            head, vals = rows[0].split("\t"), rows[-1].split("\t")
            got = dict(zip(head, vals))
            line["snakemake"] = {"seconds": float(got["s"]), "max_rss_mb": float(got["max_rss"])
                                 if got.get("max_rss", "NA") not in ("NA", "-") else None}
        steps.append(line)
    peak = max((st["peak_memory_mb_so_far_when_run"] or 0.0 for st in steps if not st["reused"]), default=0.0)
    write_summary(made, steps, None if started is None else time.time() - started, peak, engine="snakemake")


if __name__ == "__main__":
    sys.exit(main())
