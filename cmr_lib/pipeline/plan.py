"""The plan of `make reproduce`, whichever engine runs it: the steps (notebooks 01-07, one notebook-05 run per
row of the experiment grid and seed), their fingerprints and dependencies, the ledger of finished steps, and
results/reproduce.json. The engines are in pipeline.reproduce (built-in) and workflow/Snakefile (Snakemake)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from cmr_lib.core.atomic import remove_stale_temporaries, write_json
from cmr_lib.core.digests import fingerprint as digest_of, folder_digest, read_step_files
from cmr_lib.core.config import make_config
from cmr_lib.core.errors import CmrError, check_int
from cmr_lib.core.grid import reproduce_rows, table_rows, uses_epsilon
from cmr_lib.core.schema import NETWORKS, load_yaml
from cmr_lib.core.paths import display_path, recorded_path, repo_root
from cmr_lib.data.sources import find_real_data, source_for
from cmr_lib.pipeline.execution import machine
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
    06 and 07 (ANALYSES) get the list of seeds."""
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


def seed_of(executed: str) -> int | None:
    """The seed an executed step name carries (executed_name's _seedN), None for the run's first seed."""
    m = re.search(r"_seed(\d+)(\.ipynb)?$", executed)
    return int(m.group(1)) if m else None


# parameter files read as data (their comments and layout are not part of any result)
DATA_FILES = ("settings.yaml", "experiments.yaml", "paper_tables.yaml")
# profile sections a step does not read, beyond `reproduce` (seeds come as parameters; no step reads it)
UNREAD_SECTIONS = {"prepare:stylizers": ("analysis",)}


def shared_inputs(cfg, *, t2_dir=None) -> dict:
    """What the steps of one `make reproduce` depend on, each by content: the library code, the parameter files
    read as data (parsed, so a comment changes nothing), the run's profile as validated, and the data (every
    file's SHA-256: the data folder or phantom, the T2 folder, and the real sample sets that notebooks 01, 06
    and 07 show beside the run's own). Computed once per `make reproduce`; `step_inputs` picks each step's part."""
    root = repo_root()
    code = digest_of(*(part for path in sorted((root / "cmr_lib").rglob("*.py"))
                       for part in (str(path.relative_to(root)).encode(), path.read_bytes())), length=64)
    params = {name: load_yaml(root / "params" / name) for name in DATA_FILES}
    return {"code": code, "params": params, "profile": cfg.sizes.to_dict(),
            "data": folder_digest(cfg.data_dir or cfg.phantom_dir), "t2": folder_digest(t2_dir),
            "shown_beside": {k: folder_digest(v) for k, v in sorted(find_real_data().items())}}


def step_inputs(nb: str, shared: dict) -> dict:
    """The part of the shared inputs that one step reads: its profile sections (not `reproduce`, nor those in
    UNREAD_SECTIONS), and the real sets shown beside the run only for the steps that show them."""
    unread = ("reproduce", *UNREAD_SECTIONS.get(str(nb), ()))
    out = {**shared, "profile": {k: v for k, v in shared["profile"].items() if k not in unread}}
    if Path(str(nb)).name not in ("01_data_exploration.ipynb", *ANALYSES):
        out.pop("shown_beside")
    return out


def fingerprint(nb: Path | None, parameters: dict, inputs) -> str:
    """What a step's result depends on: its notebook (None for library steps), its parameters and its inputs
    (step_inputs); a step is rerun when any of these changed."""
    return digest_of(parameters, *([Path(nb).read_bytes()] if nb is not None else []), inputs)


def prepare(what: str, parameters: dict) -> None:
    """The library step of `make reproduce`: 'stylizers' trains every stylizer of a seed, so that the rows of
    that seed (or those in parameters['kinds']), running side by side, only reuse them."""
    if what != "stylizers":
        raise CmrError(f"unknown reproduce step 'prepare:{what}'")
    keys = ("profile", "seed", "data_dir", "output_root", "c0_spacing", "t2_dir")
    cfg = make_config(**{k: v for k, v in parameters.items() if k in keys and v is not None})
    source = source_for(**cfg.source_args, progress=False)
    for kind in parameters.get("kinds") or default_kinds():
        train_pairs(cfg, source, kind, progress=False)


# rows sharing one GPU when GPUS is given without JOBS: the paper profile's DRU-Net rows are launch-bound (15-53 % of
# the fp32 matmul rate on an H100, benchmarks/results/gpu_check_h100.md), so two keep it busier than one;
# benchmarks/rows_per_gpu.py measures 1, 2 and 4 on a lent GPU (not yet run there: this is the unmeasured guess)
ROWS_PER_GPU = 2


def default_jobs(gpus) -> int:
    """Notebooks side by side when JOBS is not given: two on a CPU machine, ROWS_PER_GPU per GPU with GPUS."""
    return ROWS_PER_GPU * len(gpus) if gpus else 2


def make_plan(profile="demo", *, data_dir=None, seed=0, seeds=None, jobs=None, steps_list=None, output_root=None,
              c0_spacing=None, t2_dir=None, gpus=None, beyond=False) -> dict:
    """What `make reproduce` will do, whichever engine runs it: the configuration, the seeds, and one entry per
    step (its executed notebook, parameters, fingerprint, threads, the steps it waits for and, with `gpus`, the
    GPU the Snakemake engine gives it). Generates the phantom first: its files are part of every fingerprint."""
    cfg = make_config(profile=profile, data_dir=data_dir, seed=seed, output_root=output_root,
                      c0_spacing=c0_spacing or "header", t2_dir=None if t2_dir is None else str(t2_dir))
    gpus = [str(g).strip() for g in gpus] if gpus else []
    if any(not g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise CmrError(f"GPUS = {','.join(gpus)!r}: give distinct CUDA device numbers, e.g. GPUS=0,1,2,3")
    jobs = check_int("jobs", default_jobs(gpus) if jobs is None else jobs, minimum=1)
    n_seeds = check_int("seeds", cfg.sizes.reproduce.seeds if seeds is None else seeds, minimum=1)
    seed_list = list(range(cfg.seed, cfg.seed + n_seeds))
    steps_list = with_seeds(steps(beyond) if steps_list is None else steps_list, seed_list)
    root = repo_root()
    source_for(**cfg.source_args)
    shared = shared_inputs(cfg, t2_dir=t2_dir)
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
                     "parameters": parameters, "parallel": parallel,
                     "key": fingerprint(src, parameters, step_inputs(nb, shared)),
                     "threads": threads if parallel else (os.cpu_count() or 1), "deps": deps,
                     "gpu": gpus[(len(since) if parallel else 0) % len(gpus)] if gpus else None})
        if parallel:
            since.append(dst.name)
        else:
            barrier, since = dst.name, []
    return {"cfg": cfg, "seeds": seed_list, "jobs": jobs, "threads": threads, "gpus": gpus, "out_dir": out_dir,
            "steps": plan}


def read_ledger(path: Path) -> dict:
    """The finished steps' fingerprints and timings (steps.json), {} when there is none yet; a damaged one is a
    one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        ledger = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CmrError(f"{path}: not valid JSON") from None
    if not isinstance(ledger, dict):
        raise CmrError(f"{path}: not a steps ledger (expected an object of step name -> entry)")
    return ledger


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
    """A step is reused when its executed notebook exists (library steps have none), its fingerprint matches, and
    every file it wrote or rested on (its ledger entry's `files`: records, tables, checkpoints) is still there."""
    exists = p["src"] is None or p["dst"].is_file()
    entry = ledger.get(p["dst"].name, {})
    return (exists and entry.get("key") == p["key"]
            and all(recorded_path(f).is_file() for f in entry.get("files", ())))


def step_files_list(p: dict) -> Path:
    """Where a running step's process notes the files it writes or reuses (core.digests.note_step_file)."""
    return p["dst"].parent / "files" / f"{p['dst'].name}.txt"


def finished_step_files(p: dict) -> list[str]:
    """The files a step noted while it ran that still exist, as records name paths; the list is then removed."""
    where = step_files_list(p)
    files = [display_path(f) for f in read_step_files(where)]
    where.unlink(missing_ok=True)
    return files


@contextlib.contextmanager
def output_lock(cfg):
    """One `make reproduce` per output folder at a time: a second one is refused with one line naming the first.
    Inside the lock, temporary files that killed writers left there are removed."""
    import fcntl

    path = cfg.results_dir / "notebooks" / "reproduce.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise CmrError(f"{cfg.output_root}: another make reproduce is writing here ({who}); wait for it to end, "
                       f"or stop it first") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        for where in (cfg.results_dir, cfg.figures_dir, cfg.output_root / "checkpoints"):
            remove_stale_temporaries(where, older_than_s=60.0)
        yield path
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


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
