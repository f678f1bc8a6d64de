"""The built-in engine of `make reproduce` (ENGINE=builtin; Snakemake is the default): run every notebook of
the study with papermill, in order, on one profile.

    python -m cmr_lib.pipeline.reproduce --profile demo [--data-dir DIR] [--seed 0]

Executed notebooks go to results/notebooks/<profile>/; one progress line per step; the wall time
of each step, peak memory and the machine are written to results/reproduce.json (for reused steps, also
the seconds and running peak memory recorded when they last ran). A step whose executed
notebook exists and whose inputs (notebook, parameters, profile, library code, data) are unchanged is
reused, so a second run takes seconds and an interrupted one picks up at the step it stopped in (whose
trainings resume from their checkpoints).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cmr_lib.core.atomic import read_json, write_json
from cmr_lib.core.digests import FORCE_ENV, STEP_FILES_ENV
from cmr_lib.core.errors import CmrError, cli_main
from cmr_lib.core.paths import repo_root
from cmr_lib.data.real import DATA_SETS, resolve_data
from cmr_lib.pipeline.execution import finish_notebook, peak_memory_mb, start_notebook
from cmr_lib.pipeline.plan import (ANALYSES, BASE_STEPS, STEPS, cost_hint, default_kinds, executed_name,  # noqa: F401
                                finished_step_files, fingerprint, make_plan, output_lock, prepare, read_ledger,
                                row_step_name, shared_inputs, step_done, step_files_list, step_result, steps,
                                update_ledger, with_seeds, write_summary)


def parse_args(argv=None) -> tuple[argparse.Namespace, dict]:
    """The driver's command line (what `make reproduce` passes, and what workflow/Snakefile reads from
    --config args=...): the parsed options and make_plan's keyword arguments."""
    ap = argparse.ArgumentParser(prog="cmr-reproduce", description=__doc__.split("\n\n")[0],
                                 epilog="example: cmr-reproduce --data mscmrseg2019 --seeds 3   (as make reproduce DATA=mscmrseg2019)")
    ap.add_argument("--profile", default=None, help="default: 'real' with --data, else 'demo'")
    ap.add_argument("--data", default=None, choices=sorted(DATA_SETS),
                    help="a real sample set by name: found in $CMR_REAL_DATA or ../shared/data, its C0 voxel size "
                    "checked, T2 from MyoPS when it has none; results/ and figures/ go to real/<name>/")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0, help="the first seed (and the only one when --seeds is 1)")
    ap.add_argument("--seeds", type=int, default=None, help="run every Table 2/3 row with this many seeds "
                    "(default: the profile's reproduce.seeds)")
    ap.add_argument("--jobs", type=int, default=None, help="notebooks run side by side where they may (default 2; "
                    "with --gpus, plan.ROWS_PER_GPU per GPU)")
    ap.add_argument("--c0-spacing", default=None, help="'lge' for the cropped MS-CMRSeg copy (stale C0 voxel size)")
    ap.add_argument("--t2-dir", default=None, help="T2 images for setting 1 when the data set has none (MyoPS)")
    ap.add_argument("--output-root", default=None, help="write results/ and figures/ here (default: the repository)")
    ap.add_argument("--gpus", default=None, help="CUDA devices to spread parallel notebooks over, e.g. 0,1,2,3 "
                    "(JOBS in all; several per GPU when JOBS is larger)")
    ap.add_argument("--force", action="store_true", help="rerun every notebook and retrain every network made before "
                    "this run, even if its inputs are unchanged")
    ap.add_argument("--engine", choices=("builtin", "snakemake"), default="builtin",
                    help="run the plan here (builtin) or on Snakemake (what `make reproduce` uses)")
    ap.add_argument("--cores", type=int, default=None, help="Snakemake's --cores (default: every core)")
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
    if args.engine == "snakemake":
        return run_snakemake(argv if argv is not None else sys.argv[1:], kw, cores=args.cores, force=args.force)
    return reproduce(**kw, force=args.force)


def engine_argv(argv: list[str]) -> list[str]:
    """The driver's options as each step's job gets them: without the launcher's own (--engine, --cores)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--engine", "--cores"):
            skip = True
            continue
        if a.startswith(("--engine=", "--cores=")):
            continue
        out.append(a)
    return out


def run_snakemake(argv: list[str], kw: dict, *, cores: int | None, force: bool) -> int:
    """`make reproduce`: Snakemake over the plan, under the output folder's lock. The options reach Snakemake
    in a config file (a list, quoted again for each job's shell: a folder named `x$(cmd)` runs nothing), and
    FORCE retrains what was made before this run (core.digests.reusable)."""
    import subprocess

    made = make_plan(**kw)
    started = time.time()
    with output_lock(made["cfg"]):
        config = snakemake_dir(made) / "config.json"
        write_json(config, {"argv": engine_argv(argv)})
        env = {**os.environ, "CMR_REPRODUCE_STARTED": str(started)}
        if force:
            env[FORCE_ENV] = str(started)
        cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(repo_root() / "workflow" / "Snakefile"),
               "--cores", str(cores or os.cpu_count() or 1), "--keep-going", "--rerun-incomplete", "--nolock",
               "--quiet", "rules", "--configfile", str(config), *(["--forceall"] if force else [])]
        return subprocess.run(cmd, cwd=repo_root(), env=env).returncode


def reproduce(profile="demo", *, data_dir=None, seed=0, seeds=None, jobs=None, force=False, steps_list=None,
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
    with output_lock(made["cfg"]):
        if force:                      # every network made before now is trained again, each once (digests.reusable)
            os.environ[FORCE_ENV] = str(time.time())
        try:
            return _run_plan(made, force=force)
        finally:
            if force:
                os.environ.pop(FORCE_ENV, None)


def _run_plan(made: dict, *, force: bool) -> int:
    """The built-in engine's loop over a plan (reproduce holds the output folder's lock): each group of steps that
    may run side by side, up to `jobs` at a time, the others one by one; finished steps are reused."""
    cfg, plan, out_dir = made["cfg"], made["steps"], made["out_dir"]
    os.environ.setdefault("TQDM_DISABLE", "1")   # the kernels' progress bars would only clutter saved notebooks
    t_all = time.perf_counter()
    run = _BuiltinRun(made, ledger_path=out_dir / "steps.json", force=force)
    print(f"reproduce: profile {cfg.profile}, data {cfg.data_dir or 'built-in phantom'}, seeds {made['seeds']}, "
          f"{len(plan)} steps, {made['jobs']} at a time where they may ({made['threads']} threads each)")
    for group in _groups(plan):
        todo = []
        for p in group:
            if step_done(p, run.ledger):
                run.record(p, 0.0, True, False)
            else:
                todo.append(p)
        if len(todo) <= 1 or not group[0]["parallel"]:
            for p in todo:
                t0 = time.perf_counter()
                if p["src"] is not None:
                    run.placement[p["i"]] = run.pick_gpu()
                execute_step(p, gpu=run.placement.get(p["i"]))
                run.record(p, time.perf_counter() - t0, False, False)
        else:
            run.side_by_side(todo)
    total = time.perf_counter() - t_all
    write_summary(made, [run.results[i] for i in sorted(run.results)], total, peak_memory_mb(), engine="built-in")
    print(f"done in {total:.1f} s ({total / 60:.1f} min); executed notebooks in {out_dir}")
    return 0


def _groups(plan: list):
    """The plan cut into groups: each run of consecutive steps that may run side by side, and each other step."""
    k = 0
    while k < len(plan):
        group = [plan[k]]
        while group[0]["parallel"] and k + len(group) < len(plan) and plan[k + len(group)]["parallel"]:
            group.append(plan[k + len(group)])
        k += len(group)
        yield group


class _BuiltinRun:
    """The built-in engine's state over one plan: the ledger of finished steps, each step's result, which GPU
    each notebook ran on."""

    def __init__(self, made: dict, *, ledger_path: Path, force: bool):
        self.made, self.ledger_path = made, ledger_path
        self.ledger = read_ledger(ledger_path) if not force else {}        # fingerprints of the finished steps
        self.results: dict[int, dict] = {}
        self.placement: dict[int, str | None] = {}

    def pick_gpu(self, running=()):
        """The GPU with the fewest notebooks running on it (None without GPUS)."""
        gpus = self.made["gpus"]
        if not gpus:
            return None
        load = {g: sum(self.placement.get(i) == g for i in running) for g in gpus}
        return min(gpus, key=lambda g: load[g])

    def record(self, p: dict, dt: float, reused: bool, ran_parallel: bool) -> None:
        """A step's result, and for a step that ran, its ledger entry (the kernel has exited: its peak memory is in
        RUSAGE_CHILDREN, a running max)."""
        done = self.ledger.get(p["dst"].name, {})
        if not reused:
            done = self.ledger[p["dst"].name] = update_ledger(self.ledger_path, p["dst"].name, {
                "key": p["key"], "seconds": round(dt, 1), "peak_memory_mb_so_far": peak_memory_mb(),
                "parallel": ran_parallel, "files": finished_step_files(p)})
        gpu = self.placement.get(p["i"]) if self.made["gpus"] and not reused else None
        self.results[p["i"]] = step_result(p, dt, reused, done, gpu)
        print(f"[{p['i']}/{len(self.made['steps'])}] {p['name']}: " + ("unchanged, reused" if reused else f"{dt:.1f} s"),
              flush=True)

    def side_by_side(self, todo: list) -> None:
        """Run steps that may run together, longest first, up to `jobs` at a time; the first failure stops new
        starts and, once the running ones end, the run (one line)."""
        queue = sorted(todo, key=lambda p: -cost_hint(p["extra"]))
        running, failures = {}, []
        while queue or running:
            while queue and len(running) < self.made["jobs"] and not failures:
                p = queue.pop(0)
                self.placement[p["i"]] = self.pick_gpu(running)
                running[p["i"]] = (p, time.perf_counter(),
                                   start_step(p, threads=p["threads"], gpu=self.placement[p["i"]]))
            finished = None
            while finished is None:
                finished = next((i for i, (_, _, started) in running.items() if started[0].poll() is not None), None)
                if finished is None:
                    time.sleep(0.2)
            p, t0, started = running.pop(finished)
            err = finish_notebook(*started, p["dst"])
            if err:
                failures.append(f"step {p['i']} ({p['nb']}) failed: {err}")
                queue.clear()
            else:
                self.record(p, time.perf_counter() - t0, False, True)
        if failures:
            raise CmrError(failures[0])


def execute_step(p: dict, *, threads: int | None = None, gpu: str | None = None) -> None:
    """Run one step of the plan here and now (a library call, or its notebook with papermill) on `threads` (default:
    the plan's, whatever runs beside it, since the thread count changes the floats); a failed notebook is a
    one-line CmrError naming the step. Both engines run their steps through this."""
    threads = threads or p["threads"]
    if p["src"] is None:
        import torch
        torch.set_num_threads(threads)
        files = step_files_list(p)
        files.parent.mkdir(parents=True, exist_ok=True)
        files.unlink(missing_ok=True)
        before = os.environ.get(STEP_FILES_ENV)
        os.environ[STEP_FILES_ENV] = str(files)
        try:
            prepare(p["nb"].split(":", 1)[1], p["parameters"])
        finally:
            if before is None:
                os.environ.pop(STEP_FILES_ENV, None)
            else:
                os.environ[STEP_FILES_ENV] = before
        return
    err = finish_notebook(*start_step(p, threads=threads, gpu=gpu), p["dst"])
    if err:
        raise CmrError(f"step {p['i']} ({p['nb']}) failed: {err}")


def start_step(p: dict, *, threads: int, gpu: str | None):
    """Start a notebook step's process (execution.start_notebook), its written and reused files noted in its list."""
    files = step_files_list(p)
    files.parent.mkdir(parents=True, exist_ok=True)
    files.unlink(missing_ok=True)
    return start_notebook(p["src"], p["dst"], p["parameters"], threads=threads, gpu=gpu,
                          env={STEP_FILES_ENV: str(files)})


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
    os.environ.setdefault("TQDM_DISABLE", "1")
    t0 = time.perf_counter()
    if not force and step_done(p, ledger):
        result = step_result(p, 0.0, True, ledger[executed])
    else:
        execute_step(p, threads=min(p["threads"], threads) if threads else None, gpu=p["gpu"])   # None: the plan's
        dt = time.perf_counter() - t0
        done = update_ledger(ledger_path, executed, {"key": p["key"], "seconds": round(dt, 1),
                                                     "peak_memory_mb_so_far": peak_memory_mb(),
                                                     "parallel": p["parallel"], "files": finished_step_files(p)})
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
        line = read_json(path, "step result")
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
