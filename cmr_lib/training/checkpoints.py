"""Checkpoints and the loop every training shares: resume, step, checkpoint, write losses and final.pt.

Every step draws its batch, its augmentation and its noise from (seed, step) alone, so a run killed
and resumed from its last checkpoint ends with the same weights as an uninterrupted one (CPU), and a
finished run whose configuration and data have not changed is reused instead of retrained.
Checkpoints hold state_dict + optimizer + step + config, are written atomically and loaded with
`torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import pickle
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cmr_lib.core.atomic import atomic_path, read_json, write_json, write_text
from cmr_lib.core.device import check_cores
from cmr_lib.core.digests import files_digest, fingerprint, note_step_file, reusable
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import check_file
from cmr_lib.data.slices import SliceDataset
from cmr_lib.data.sources import CMRSource

VERSION = 3            # bump when a change makes old checkpoints invalid


def save_checkpoint(path, *, model, optimizer, step: int, config: dict, history: dict) -> Path:
    """state_dict + optimizer + step + config (+ loss history), written atomically."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
             "step": int(step), "config": config, "history": history}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path, *, model=None, optimizer=None, config: dict | None = None) -> dict:
    """Load safely (weights_only=True); a truncated file, a pickle that runs code, another architecture or
    another configuration is a one-line CmrError."""
    path = check_file(path, "checkpoint")
    note_step_file(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CmrError(f"{path}: not a loadable checkpoint: refused, it holds objects other than tensors{what}, "
                       f"which could run code on load") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CmrError(f"{path}: not a loadable checkpoint: corrupt or truncated ({first[:80]})") from None
    if not isinstance(state, dict) or not {"model", "step", "config"} <= set(state):
        raise CmrError(f"{path}: not a cmr-stylize checkpoint (needs model, step and config)")
    if config is not None and state["config"] != config:
        diff = sorted(k for k in set(config) | set(state["config"]) if config.get(k) != state["config"].get(k))
        raise CmrError(f"{path}: checkpoint was made with another configuration (differs in: {', '.join(diff)})")
    if model is not None:
        load_weights(model, state, path)
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def load_weights(model, state: dict, path) -> None:
    """A loaded checkpoint's weights into `model`; another architecture is a one-line CmrError naming `path`."""
    theirs, ours = state["model"], model.state_dict()
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    shapes = [k for k in ours if k in theirs and tuple(theirs[k].shape) != tuple(ours[k].shape)]
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise CmrError(f"{path}: checkpoint is for another architecture ({len(missing)} tensors missing, "
                       f"{len(extra)} unexpected, {len(shapes)} of another shape; first: {first}) "
                       f"than {type(model).__name__}") from None
    model.load_state_dict(theirs)


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-able configuration (names run folders): the one fingerprint, cut to 10 digits."""
    return fingerprint(config, length=10)


def data_fingerprint(source: CMRSource, patients: dict) -> dict:
    """What identifies the data a model saw: layout, patients per role, and the content (SHA-256) of each image
    and label file it read, so that an edited label makes another fingerprint whatever its size."""
    files = []
    for role, (seq, pats) in patients.items():
        for p in pats:
            files.append(source.image_path(p, seq))
            if source.has_label(p, seq):
                files.append(source.label_path(p, seq))
    return {"layout": source.name, "patients": {r: [s, list(p)] for r, (s, p) in patients.items()},
            "sha256": files_digest(files)}


def checkpoint_root(output_root) -> Path:
    """Where a run's trained networks live: <output_root>/checkpoints."""
    return Path(output_root) / "checkpoints"


def draw_items(ds: SliceDataset, rng: np.random.Generator, batch: int, step: int) -> list[dict]:
    """`batch` random slices drawn by `rng`, with the augmentation of epoch `step`."""
    ds.set_epoch(step)
    return [ds[int(i)] for i in rng.integers(len(ds), size=batch)]


def draw_images(ds: SliceDataset, rng: np.random.Generator, batch: int, step: int) -> torch.Tensor:
    """A random (B, 1, S, S) image batch (see draw_items)."""
    return torch.stack([it["image"] for it in draw_items(ds, rng, batch, step)])


def run_loop(run_dir: Path, config: dict, model, optimizer, step_fn, *, keys, iterations: int,
             checkpoint_every: int, desc: str, progress: bool, stop_after: int | None, after_step=None):
    """Resume from last.pt, step, checkpoint (last.pt holds the last step when it returns); returns (history, meta).
    The caller ends the run with finish_run, which writes its record before final.pt.

    step_fn(step) does one optimisation step and returns its losses (dict with `keys`); after_step(step,
    history), if given, runs after it (validation) and may add to `history`, which checkpoints keep.
    stop_after ends the run after that many steps of this call (tests use it to simulate a kill).
    """
    last = run_dir / "last.pt"
    history = {k: [] for k in ("step", *keys)}
    start = 0
    if last.is_file():
        state = load_checkpoint(last, model=model, optimizer=optimizer, config=config)
        start, history = state["step"], state["history"]
        for k in keys:                           # a loss logged since the run began: unknown (NaN) for earlier steps
            history.setdefault(k, [float("nan")] * len(history["step"]))
    t1 = time.perf_counter()
    done_here = 0
    bar = tqdm(range(start, iterations), desc=desc, initial=start, total=iterations, disable=not progress)
    check_cores()                               # runs started by hand side by side: warn, once per training
    for step in bar:
        losses = step_fn(step)
        history["step"].append(step)
        for k in keys:
            v = losses[k]
            history[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))
        if after_step is not None:
            after_step(step, history)
        bar.set_postfix(loss=f"{history[keys[0]][-1]:.3g}", refresh=False)
        done_here += 1
        at_end = step + 1 == iterations
        stopping = bool(stop_after) and done_here >= stop_after and not at_end
        if (step + 1) % checkpoint_every == 0 or at_end or stopping:
            save_checkpoint(last, model=model, optimizer=optimizer, step=step + 1, config=config, history=history)
        if stopping:
            bar.close()
            raise KeyboardInterrupt(f"stopped after {done_here} steps (stop_after)")
    bar.close()
    cols = ["step", *keys]
    write_text(run_dir / "losses.csv", "\n".join(
        [",".join(cols)] + [",".join(f"{history[k][i]:.6g}" for k in cols) for i in range(len(history["step"]))]) + "\n")
    return history, {"seconds_train": round(time.perf_counter() - t1, 2), "steps_this_run": done_here,
                     "resumed_from": start, "torch_threads": torch.get_num_threads()}


def finish_run(run_dir: Path, *, model, config: dict, history: dict, meta: dict, iterations: int) -> None:
    """End a training: its record (meta.json) first, then final.pt with the weights the record describes, then
    last.pt goes. A run is finished only once final.pt exists; killed before that, it resumes from last.pt
    (already at its last step) and finishes again, so final.pt never holds other weights than its record says."""
    write_json(run_dir / "meta.json", meta)
    save_checkpoint(run_dir / "final.pt", model=model, optimizer=None, step=iterations, config=config,
                    history=history)
    (run_dir / "last.pt").unlink(missing_ok=True)


def finished(run_dir: Path) -> bool:
    """A finished training that may be reused: final.pt (written last) and its record are there (and FORCE does
    not ask for it again)."""
    return reusable(run_dir / "final.pt") and (run_dir / "meta.json").is_file()


def reuse_run(run_dir: Path, *, model, config: dict) -> tuple[dict, dict]:
    """A finished training's final.pt loaded into `model` (its configuration checked) and its record:
    (checkpoint state, meta)."""
    state = load_checkpoint(run_dir / "final.pt", model=model, config=config)
    return state, read_json(run_dir / "meta.json", "training record")
