"""Training the DRU-Net: on bSSFP alone (notebook 04) and per setting of Table 1 (notebook 05).

Loss: cross-entropy + soft Dice (profile weights); Adam, lr halved every `lr_halve_every` steps. In a
setting run each batch goes through training.augment.BatchAugmenter; the checkpoint is chosen by the profile's
segmenter.select (selection_set): by Dice on held-out labelled bSSFP ('source', the default: no target label
seen), the last one ('last'), or by Dice on the LGE validation patients ('target', the paper's protocol).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmr_lib.core.checks import check_epsilon_iterations
from cmr_lib.core.device import autocast, device, memory_format, precision_used
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import recorded_path
from cmr_lib.core.sections import SegmenterConfig
from cmr_lib.data.slices import SliceDataset
from cmr_lib.data.sources import CMRSource
from cmr_lib.data.splits import run_split, style_pool
from cmr_lib.evaluation.inference import score_volumes
from cmr_lib.models.drunet import DRUNet, segmentation_loss
from cmr_lib.training.augment import BatchAugmenter, setting_data, training_batch, uses_styles
from cmr_lib.training.checkpoints import (
    VERSION,
    checkpoint_root,
    config_key,
    data_fingerprint,
    draw_items,
    finish_run,
    finished,
    load_checkpoint,
    reuse_run,
    run_loop,
    save_checkpoint,
)
from cmr_lib.training.stylizers import TrainedStylizer


@dataclass
class TrainedSegmenter:
    """A trained (or reused) DRU-Net with where it lives and how it got there."""

    model: torch.nn.Module
    run_dir: Path
    history: dict
    info: dict


def build_segmenter(sg: SegmenterConfig):
    """A DRU-Net of the segmenter section's depth and width."""
    return DRUNet(depth=sg.depth, root=sg.root, head_relu=sg.head_relu)


def segmenter_for_training(sg: SegmenterConfig, dev):
    """A fresh DRU-Net on `dev` in the memory layout its training runs fastest in (core.device.memory_format)."""
    return build_segmenter(sg).to(dev, memory_format=memory_format(sg.precision, dev))


def segmenter_optimizer(sg: SegmenterConfig, model) -> torch.optim.Optimizer:
    """The DRU-Net's optimiser: Adam at the section's learning rate (its schedule is set per step by _optimise)."""
    return torch.optim.Adam(model.parameters(), lr=sg.lr)


def _optimise(sg: SegmenterConfig, model, optimizer, x, y, step, dev):
    """One Adam step on (x, y) with the section's loss and learning-rate schedule; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = sg.lr * 0.5 ** (step // sg.lr_halve_every)
    with autocast(sg.precision, dev):
        logits = model(x)
    loss = segmentation_loss(logits, y, ce_weight=sg.ce_weight, dice_weight=sg.dice_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train_segmenter(cfg, source: CMRSource, *, name: str = "bssfp", split: dict | None = None, progress=True,
                    stop_after: int | None = None) -> TrainedSegmenter:
    """Train (or reuse, or resume) a DRU-Net on the training patients' labelled bSSFP slices."""
    sg = cfg.sizes.segmenter
    split = split or run_split(source, cfg.split, cfg.sizes.segmenter)
    crop = cfg.crop
    config = {"version": VERSION, "kind": "segmenter", "name": name, "crop": crop,
              "preprocess": cfg.sizes.preprocess.to_dict(), "augment": cfg.sizes.augment.to_dict(),
              "segmenter": sg.to_dict(), "seed": cfg.seed,
              "data": data_fingerprint(source, {"train": ("C0", split["train"])})}
    run_dir = checkpoint_root(cfg.output_root) / "segmenters" / f"{name}_{config_key(config)}"
    dev = device()
    torch.manual_seed(cfg.seed)
    model = segmenter_for_training(cfg.sizes.segmenter, dev)
    if finished(run_dir):
        state, meta = reuse_run(run_dir, model=model, config=config)
        return TrainedSegmenter(model.eval(), run_dir, state["history"], {**meta, "config": config, "reused": True})
    data = SliceDataset.from_source(source, split["train"], "C0", **cfg.slicing(train=True, crop=crop), label="require")
    optimizer = segmenter_optimizer(sg, model)

    def step_fn(step):
        rng = np.random.default_rng([cfg.seed, step, 2])
        items = draw_items(data, rng, sg.batch, step)
        x, y = torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])
        return {"loss": _optimise(cfg.sizes.segmenter, model, optimizer, x.to(dev), y.to(dev), step, dev)}

    model.train()
    history, meta = run_loop(run_dir, config, model, optimizer, step_fn, keys=("loss",), iterations=sg.iterations,
                             checkpoint_every=sg.checkpoint_every, desc=f"DRU-Net ({name})", progress=progress,
                             stop_after=stop_after)
    finish_run(run_dir, model=model, config=config, history=history, meta={**meta, "config": config},
               iterations=sg.iterations)
    return TrainedSegmenter(model.eval(), run_dir, history, {"config": config, "reused": False, **meta})


def setting_run_dir(cfg, config: dict, epsilon_iterations: int) -> Path:
    """checkpoints/settings/setting<S>_<stylizer>[_eps<E>]_<config hash>."""
    name = f"setting{cfg.setting}_{cfg.stylizer}" + (f"_eps{epsilon_iterations}" if cfg.searches else "")
    return checkpoint_root(cfg.output_root) / "settings" / f"{name}_{config_key(config)}"


def selection_set(cfg, source: CMRSource, split: dict) -> dict:
    """What picks a setting run's checkpoint (segmenter.select): the rule, the sequence and patients whose labels
    are scored every val_every steps ('source': held-out bSSFP; 'target': the LGE validation patients; 'last':
    none, the last checkpoint is kept)."""
    rule = cfg.sizes.segmenter.select
    seq, patients = {"source": ("C0", split.get("select", [])), "target": ("LGE", split["val"]),
                     "last": (None, [])}[rule]
    patients = [p for p in patients if source.has_label(p, seq)] if seq else []
    if rule != "last" and not patients:
        raise CmrError(f"{source.root}: segmenter.select '{rule}' needs labelled {seq} of "
                       f"{'held-out bSSFP' if rule == 'source' else 'LGE validation'} patients; none here")
    return {"rule": rule, "sequence": seq, "patients": patients}


def train_setting(cfg, source: CMRSource, *, stylizer: TrainedStylizer | None = None, split: dict | None = None,
                  epsilon_iterations: int = 1, include_original: bool = True, progress=True,
                  stop_after: int | None = None) -> TrainedSegmenter:
    """Train a DRU-Net for cfg.setting (Table 1) on bSSFP batches augmented by BatchAugmenter (the network
    learns from the augmented batch, and from the unaugmented one too if `include_original`); keep the
    weights that selection_set picks (best Dice on its patients, or the last)."""
    _check_stylizer(cfg, stylizer)
    epsilon_iterations = check_epsilon_iterations(epsilon_iterations)
    split = split or run_split(source, cfg.split, cfg.sizes.segmenter)
    chooser = selection_set(cfg, source, split)
    dev = device()
    pool = style_pool(source, split, "LGE", t2_dir=cfg.t2_dir) if uses_styles(cfg) else None
    config = setting_config(cfg, source, split, chooser, pool, stylizer=stylizer,
                            epsilon_iterations=epsilon_iterations, include_original=include_original)
    run_dir = setting_run_dir(cfg, config, epsilon_iterations)
    torch.manual_seed(cfg.seed)
    model = segmenter_for_training(cfg.sizes.segmenter, dev)
    if finished(run_dir):
        state, meta = reuse_run(run_dir, model=model, config=config)
        return TrainedSegmenter(model.eval(), run_dir, state["history"], {**meta, "config": config, "reused": True})
    return _fit_setting(cfg, source, model, split, chooser, pool, config, run_dir, stylizer=stylizer,
                        epsilon_iterations=epsilon_iterations, include_original=include_original, progress=progress,
                        stop_after=stop_after)


def _check_stylizer(cfg, stylizer) -> None:
    """A stylizing setting needs a stylizer trained in its direction (Table 1's pretrain)."""
    spec, network = cfg.setting_spec, cfg.network
    if network and stylizer is None:
        raise CmrError(f"setting {cfg.setting} stylizes: pass a {network} stylizer pre-trained on "
                       f"{spec.pretrain.content}->{spec.pretrain.style}")
    if network and tuple(stylizer.pretrain) != (spec.pretrain.content, spec.pretrain.style):
        raise CmrError(f"setting {cfg.setting} needs a {spec.pretrain.content}->{spec.pretrain.style} stylizer, "
                       f"got {'->'.join(stylizer.pretrain)}")


def setting_config(cfg, source: CMRSource, split: dict, chooser: dict, pool, *, stylizer, epsilon_iterations: int,
                   include_original: bool) -> dict:
    """What identifies a setting run (its checkpoint folder's hash): setting, stylizer run, search rounds, sizes,
    seed, the checkpoint rule and its patients, and the training, selection and style data by content."""
    augmenting = bool(cfg.network or cfg.baseline)
    config = {"version": VERSION, "kind": "setting", "setting": cfg.setting, "stylizer": cfg.stylizer,
              "stylizer_run": stylizer.run_dir.name if cfg.network else None,
              "epsilon_iterations": epsilon_iterations if cfg.searches else 0,
              "include_original": include_original if augmenting else False, "crop": cfg.crop,
              "preprocess": cfg.sizes.preprocess.to_dict(), "augment": cfg.sizes.augment.to_dict(),
              "segmenter": cfg.sizes.segmenter.to_dict(), "explore": cfg.sizes.stylizer.explore.to_dict(),
              "seed": cfg.seed, "selection": chooser,
              "data": data_fingerprint(source, {"train": ("C0", split["train"]),
                                                **({"select": (chooser["sequence"], chooser["patients"])}
                                                   if chooser["patients"] else {})})}
    if cfg.baseline in cfg.sizes.baselines:                 # its profile parameters, if it has any
        config["baseline"] = cfg.sizes.baselines[cfg.baseline].to_dict()
    if pool:
        config["data"]["style"] = data_fingerprint(pool[0], {"style": ("LGE", pool[1])})
    return config


def _fit_setting(cfg, source: CMRSource, model, split: dict, chooser: dict, pool, config: dict, run_dir, *,
                 stylizer, epsilon_iterations: int, include_original: bool, progress, stop_after) -> TrainedSegmenter:
    """The training loop of a setting run: augmented batches, validation on the selection patients every
    val_every steps (best.pt), and final.pt holding the weights the rule picks."""
    sg, dev = cfg.sizes.segmenter, device()
    augmenting = bool(cfg.network or cfg.baseline)
    t0 = time.perf_counter()
    content, styles = setting_data(cfg, source, split, pool)
    val_volumes = [source.load(p, chooser["sequence"], label="require") for p in chooser["patients"]]
    t_data = time.perf_counter() - t0
    optimizer = segmenter_optimizer(sg, model)
    augmenter = BatchAugmenter(cfg, stylizer=stylizer.model if cfg.network else None, styles=styles,
                               epsilon_iterations=epsilon_iterations)
    stats = {"seconds_stylize": 0.0, "seconds_validate": 0.0}

    def step_fn(step):
        items, x, y, rng = training_batch(cfg, content, step)
        x, y = x.to(dev), y.to(dev)
        if augmenting:
            t = time.perf_counter()
            xs, ys = augmenter(items, x, y, rng, step, segmenter=model)
            stats["seconds_stylize"] += time.perf_counter() - t
            x, y = (torch.cat([xs, x]), torch.cat([ys, y])) if include_original else (xs, ys)
        loss = _optimise(cfg.sizes.segmenter, model, optimizer, x, y, step, dev)
        return {"loss": loss, **({"explore_gain": augmenter.last_gain} if augmenter.mining else {})}

    if not (run_dir / "last.pt").is_file():                 # a fresh start (or FORCE): no best of an older run
        (run_dir / "best.pt").unlink(missing_ok=True)
    model.train()
    history, meta = run_loop(run_dir, config, model, optimizer, step_fn,
                             keys=("loss", "explore_gain") if augmenter.mining else ("loss",),
                             iterations=sg.iterations, checkpoint_every=sg.checkpoint_every,
                             desc=f"DRU-Net {run_dir.name}", progress=progress, stop_after=stop_after,
                             after_step=_validator(cfg, model, val_volumes, run_dir, config, stats))
    best = None
    if (run_dir / "best.pt").is_file():                     # final.pt holds the best weights, as its record says
        best = load_checkpoint(run_dir / "best.pt", model=model, config=config)["step"]
    meta.update({"seconds_data": round(t_data, 2), "seconds_stylize": round(stats["seconds_stylize"], 2),
                 "seconds_validate": round(stats["seconds_validate"], 2), "best_step": best,
                 "style_fallbacks": augmenter.picker.fallbacks if augmenter.picker else 0, "device": str(dev),
                 "precision": precision_used(sg.precision, dev), "selection": chooser,
                 "channels_last": memory_format(sg.precision, dev) == torch.channels_last})
    finish_run(run_dir, model=model, config=config, history=history, meta={**meta, "config": config},
               iterations=sg.iterations)
    return TrainedSegmenter(model.eval(), run_dir, history, {"config": config, "reused": False, **meta})


def _validator(cfg, model, val_volumes: list, run_dir, config: dict, stats: dict):
    """run_loop's after_step: every val_every steps (and at the last), the Dice on the selection patients; the
    best so far goes to best.pt."""
    sg = cfg.sizes.segmenter

    def after_step(step, history):
        if not val_volumes or ((step + 1) % sg.val_every and step + 1 != sg.iterations):
            return
        t = time.perf_counter()
        scores, _ = score_volumes(model, val_volumes, cfg.inference)
        dice = float(np.nanmean(scores["dice"].to_numpy(dtype=float)))
        stats["seconds_validate"] += time.perf_counter() - t
        history.setdefault("val_step", []).append(step + 1)
        history.setdefault("val_dice", []).append(dice)
        if dice >= max(history["val_dice"]):
            save_checkpoint(run_dir / "best.pt", model=model, optimizer=None, step=step + 1, config=config,
                            history={"val_dice": dice})
    return after_step


def run_checkpoint(record: dict) -> Path:
    """The final.pt of the DRU-Net a run record names."""
    return recorded_path(record["segmenter"]["checkpoint"]) / "final.pt"


def load_run_segmenter(record: dict, cfg) -> torch.nn.Module:
    """The trained DRU-Net a run record names (its checkpoint folder's final.pt), in eval mode."""
    model = build_segmenter(cfg.sizes.segmenter)
    load_checkpoint(run_checkpoint(record), model=model)
    return model.eval()
