"""Training loops with checkpoints: the stylizers (RAIN, AdaConv) and the offline MR encoder.

Every step draws its batch, its augmentation and its noise from (seed, step) alone, so a run killed
and resumed from its last checkpoint ends with the same weights as an uninterrupted one (CPU), and a
finished run whose configuration and data have not changed is reused instead of retrained.
Checkpoints hold state_dict + optimizer + step + config, are written atomically and loaded with
`torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cmr_lib.adain import Decoder
from cmr_lib.atomic import atomic_path, write_json, write_text
from cmr_lib.data import CMRSource, default_split, split_for
from cmr_lib.errors import CmrError
from cmr_lib.slices import SliceDataset
from cmr_lib.vgg import VGGEncoder, build_encoder, imagenet_available, load_weights_file

STYLIZER_VERSION = 2            # bump when a change makes old stylizer checkpoints invalid
STYLIZERS = {"rain": "RAIN", "adaconv": "AdaConv"}


# ---------------------------------------------------------------------------------------------
# device and precision

def device() -> torch.device:
    """Where every model runs, chosen here only: CMR_DEVICE (cpu, cuda, cuda:N) if set, else CUDA when
    present, else the CPU. On CUDA, cuDNN picks its fastest kernels for the fixed crop sizes."""
    import os

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


def autocast(precision: str, dev: torch.device):
    """A bf16 autocast context when asked for ('bf16') or when it helps ('auto'), else nothing (fp32)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise CmrError(f"parameter 'precision' = {precision!r}: choose 'auto', 'bf16' or 'fp32'")
    use = precision == "bf16" or (precision == "auto" and bf16_supported(dev))
    return torch.autocast(dev.type, dtype=torch.bfloat16) if use else nullcontext()


def precision_used(precision: str, dev: torch.device) -> str:
    return "bf16" if precision == "bf16" or (precision == "auto" and bf16_supported(dev)) else "fp32"


# ---------------------------------------------------------------------------------------------
# checkpoints

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
    path = Path(path)
    if not path.is_file():
        raise CmrError(f"{path}: checkpoint not found")
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
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-able configuration (names run folders)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def data_fingerprint(source: CMRSource, patients: dict) -> dict:
    """What identifies the data a model saw: layout, patients per role, and each used file's size."""
    files = {}
    for role, (seq, pats) in patients.items():
        for p in pats:
            path = source.image_path(p, seq)
            files[path.name] = path.stat().st_size
    return {"layout": source.name, "patients": {r: [s, list(p)] for r, (s, p) in patients.items()},
            "files": dict(sorted(files.items()))}


def _batch(ds: SliceDataset, rng: np.random.Generator, batch: int, step: int, *, labels=False):
    """A random batch drawn by `rng` with augmentation epoch `step`: images (B, 1, S, S) [, labels (B, S, S)]."""
    ds.set_epoch(step)
    items = [ds[int(i)] for i in rng.integers(len(ds), size=batch)]
    images = torch.stack([it["image"] for it in items])
    return (images, torch.stack([it["label"] for it in items])) if labels else images


def checkpoint_root(cfg) -> Path:
    return cfg.output_root / "checkpoints"


# ---------------------------------------------------------------------------------------------
# the autoencoder: the offline MR encoder ('mr' weights) and the decoders' warm start

def pretrain_autoencoder(cfg, source: CMRSource, *, encoder: VGGEncoder | None = None, encoder_record=None,
                         progress=True) -> Path:
    """Train the mirror decoder to reconstruct MR slices of every sequence from relu4_1 features.

    encoder=None: the encoder trains too (from He init): the offline 'mr' encoder, fitted to MR slices
    rather than ImageNet. Otherwise the given encoder stays frozen and only the decoder learns: a warm
    start that lets the stylizers' decoders begin from an image-preserving mapping. Saved as one .pth in
    torchvision names (`features.N.*`) plus `decoder.*`, cached by configuration.
    """
    st = cfg.sizes.stylizer
    split = split_for(source, cfg.split)
    roles = {"C0": ("C0", split["train"])}
    for seq in ("LGE", "T2"):
        pats = [p for p in split["style"] if source.has(p, seq)]
        if pats:
            roles[seq] = (seq, pats)
    train_encoder = encoder is None
    config = {"kind": "autoencoder", "train_encoder": train_encoder, "width": st.encoder_width,
              "encoder": None if train_encoder else {k: v for k, v in (encoder_record or {}).items() if k != "requested"},
              "iterations": st.autoencoder.iterations, "batch": st.autoencoder.batch, "lr": st.autoencoder.lr,
              "crop": cfg.sizes.preprocess.crop.none, "preprocess": cfg.sizes.preprocess.to_dict(),
              "precision": st.precision, "seed": cfg.seed, "data": data_fingerprint(source, roles)}
    name = "mr" if train_encoder else "decoder"
    out = checkpoint_root(cfg) / "autoencoders" / f"{name}_w{st.encoder_width:g}_{config_key(config)}.pth"
    if out.is_file():
        return out
    torch.manual_seed(cfg.seed)
    enc = VGGEncoder(width=st.encoder_width) if train_encoder else encoder
    if train_encoder:
        enc.requires_grad_(True)
    dec = Decoder(width=st.encoder_width)
    dsets = [SliceDataset.from_source(source, pats, seq, cfg, train=True, label="skip", crop=config["crop"])
             for seq, pats in roles.values()]
    params = list(dec.parameters()) + (list(enc.parameters()) if train_encoder else [])
    opt = torch.optim.Adam(params, lr=st.autoencoder.lr)
    dev = device()
    enc.to(dev), dec.to(dev)
    from tqdm.auto import tqdm

    for step in tqdm(range(st.autoencoder.iterations), desc=f"autoencoder ({name})", disable=not progress):
        rng = np.random.default_rng([cfg.seed, step, 5])
        x = torch.cat([_batch(ds, rng, max(1, st.autoencoder.batch // len(dsets)), step) for ds in dsets]).to(dev)
        with autocast(st.precision, dev):
            loss = F.mse_loss(dec(enc(x, last_only=True)).float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if train_encoder:
        enc.requires_grad_(False)
    state = {k: v.detach().cpu() for k, v in enc.state_dict().items()}       # torchvision names: features.N.*
    state.update({f"decoder.{k}": v.detach().cpu() for k, v in dec.state_dict().items()})
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return out


def warm_start(model, path) -> None:
    """Copy the pretrained decoder's convolutions into a stylizer's decoder, in order (RAIN: all of them;
    AdaConv: its ordinary convolutions, which mirror the AdaIN decoder's one to one)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    pretrained = Decoder(width=model.encoder.width)
    pretrained.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")})
    src = [m for m in pretrained.modules() if isinstance(m, torch.nn.Conv2d)]
    convs = (model.decoder.plain_convs() if hasattr(model.decoder, "plain_convs")
             else [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)])
    if len(convs) != len(src) or any(c.weight.shape != p.weight.shape for c, p in zip(convs, src)):
        raise CmrError(f"{path}: pretrained decoder does not match the {model.kind} decoder")
    with torch.no_grad():
        for conv, p in zip(convs, src):
            conv.weight.copy_(p.weight)
            conv.bias.copy_(p.bias)
    if hasattr(model.decoder, "blocks"):
        for block in model.decoder.blocks:
            block.predict.identity_init()


def resolve_encoder(cfg, source: CMRSource, *, progress=True):
    """The stylizers' encoder per `stylizer.encoder_weights`: (VGGEncoder, record for run.json)."""
    st = cfg.sizes.stylizer
    spec = st.encoder_weights
    if spec == "auto":
        spec = "imagenet" if st.encoder_width == 1.0 and imagenet_available(allow_download=True) else st.offline_fallback
    if spec == "mr":
        path = pretrain_autoencoder(cfg, source, progress=progress)
        enc = load_weights_file(VGGEncoder(width=st.encoder_width), path)
        return enc, {"weights": "mr", "source": path.name, "width": st.encoder_width, "requested": st.encoder_weights}
    enc, record = build_encoder(spec, width=st.encoder_width, seed=cfg.seed)
    record["requested"] = st.encoder_weights
    return enc, record


def prepare_encoder(cfg, source: CMRSource, *, progress=True) -> dict:
    """Train (or reuse) what every stylizer shares: the encoder weights and the decoders' warm-start
    autoencoder. `make reproduce` does this first so that the stylizers can then train side by side."""
    encoder, record = resolve_encoder(cfg, source, progress=progress)
    if cfg.sizes.stylizer.warm_start and record["weights"] != "mr":
        pretrain_autoencoder(cfg, source, encoder=encoder, encoder_record=record, progress=progress)
    return record


# ---------------------------------------------------------------------------------------------
# stylizers

def build_stylizer(kind: str, encoder: VGGEncoder, cfg):
    """A RAIN or AdaConv model with the profile's loss weights (and AdaConv's kernel size and input size)."""
    st = cfg.sizes.stylizer
    if kind == "rain":
        from cmr_lib.rain import RAIN

        r = st.rain
        return RAIN(encoder, content_weight=r.content_weight, style_weight=r.style_weight, kl_weight=r.kl_weight,
                    rec_weight=r.rec_weight)
    if kind == "adaconv":
        from cmr_lib.adaconv import AdaConv

        a = st.adaconv
        return AdaConv(encoder, image_size=cfg.sizes.preprocess.crop.adaconv, kernel_size=a.kernel_size,
                       style_dim=a.style_dim, content_weight=a.content_weight, style_weight=a.style_weight)
    raise CmrError(f"parameter 'stylizer' = {kind!r}: choose 'rain' or 'adaconv'")


@dataclass
class TrainedStylizer:
    """A trained (or reused) stylizer with where it lives and how it got there."""

    model: torch.nn.Module
    kind: str
    pretrain: tuple          # (content sequence, style sequence)
    run_dir: Path
    history: dict            # step -> losses
    info: dict               # config, encoder record, timings, reused?


def stylizer_data(cfg, source: CMRSource, pretrain, *, style_source: CMRSource | None = None):
    """Content (bSSFP heart slices of training patients) and style (all slices of the style sequence) sets."""
    kind_crop = cfg.sizes.preprocess.crop
    split = split_for(source, cfg.split)
    content_seq, style_seq = pretrain
    style_src = style_source or source
    style_split = default_split(style_src) if style_source is not None else split
    style_patients = [p for p in style_split["style"] if style_src.has(p, style_seq)]
    if not style_patients:
        raise CmrError(f"{style_src.root}: no {style_seq} images to train a {content_seq}->{style_seq} stylizer "
                       f"(for T2 with MS-CMRSeg, pass t2_dir pointing at MyoPS 2020 data)")
    roles = {"content": (content_seq, split["train"]), "style": (style_seq, style_patients)}
    return roles, style_src, kind_crop


def train_stylizer(cfg, source: CMRSource, kind: str, pretrain=("C0", "LGE"), *, style_source=None,
                   progress=True, stop_after: int | None = None, reuse_only: bool = False) -> TrainedStylizer:
    """Train (or reuse, or resume) a stylizer on content -> style slices; see the module docstring.

    stop_after: end the run after this many steps of this call (tests use it to simulate a kill);
    reuse_only: never train, raise a one-line error when no finished stylizer matches (analysis).
    """
    st = cfg.sizes.stylizer
    roles, style_src, crops = stylizer_data(cfg, source, pretrain, style_source=style_source)
    encoder, enc_record = resolve_encoder(cfg, source, progress=progress)
    crop = crops[kind]
    fingerprint = data_fingerprint(source, {"content": roles["content"]})
    fingerprint["style"] = data_fingerprint(style_src, {"style": roles["style"]})
    sub = st[kind].to_dict()
    config = {"version": STYLIZER_VERSION, "kind": kind, "pretrain": list(pretrain), "crop": crop,
              "preprocess": cfg.sizes.preprocess.to_dict(), "augment": cfg.sizes.augment.to_dict(),
              "batch": st.batch, "iterations": st.iterations, "lr": st.lr, kind: sub, "precision": st.precision,
              "warm_start": st.warm_start,
              "encoder": {k: v for k, v in enc_record.items() if k != "requested"}, "seed": cfg.seed,
              "data": fingerprint}
    run_dir = checkpoint_root(cfg) / "stylizers" / f"{kind}_{pretrain[0]}-{pretrain[1]}_{config_key(config)}"
    if reuse_only and not (run_dir / "final.pt").is_file():
        raise CmrError(f"{run_dir}: no finished {STYLIZERS[kind]} {'->'.join(pretrain)} stylizer for this "
                       f"configuration; run its notebook first")
    dev = device()
    torch.manual_seed(cfg.seed)
    model = build_stylizer(kind, encoder, cfg)
    if st.warm_start:
        path = (checkpoint_root(cfg) / "autoencoders" / enc_record["source"] if enc_record["weights"] == "mr"
                else pretrain_autoencoder(cfg, source, encoder=encoder, encoder_record=enc_record, progress=progress))
        warm_start(model, path)
        enc_record = {**enc_record, "decoder_warm_start": path.name}
    if (run_dir / "final.pt").is_file():
        state = load_checkpoint(run_dir / "final.pt", model=model, config=config)
        return TrainedStylizer(model.to(dev).eval(), kind, tuple(pretrain), run_dir, state["history"],
                               {"config": config, "encoder": enc_record, "reused": True,
                                **json.loads((run_dir / "meta.json").read_text())})
    t0 = time.perf_counter()
    content = SliceDataset.from_source(source, roles["content"][1], pretrain[0], cfg, train=True,
                                       heart_only=True, label="require", crop=crop)
    style = SliceDataset.from_source(style_src, roles["style"][1], pretrain[1], cfg, train=True, label="skip",
                                     crop=crop)
    t_data = time.perf_counter() - t0
    optimizer = torch.optim.Adam(model.trainable(), lr=st.lr)
    decay = sub["lr_decay"]
    if hasattr(model, "calibrate"):          # RAIN: standardise style vectors on 64 training styles (seeded)
        model.calibrate(_batch(style, np.random.default_rng([cfg.seed, 7]), 64, 0))

    # channels-last pays with bf16 (measured on this CPU at demo sizes: RAIN 1.41x, AdaConv 1.23x per step;
    # the DRU-Net is slower with it, 0.77x, so segmentation keeps NCHW)
    fmt = torch.channels_last if precision_used(st.precision, dev) == "bf16" else torch.contiguous_format

    def step_fn(step):
        rng = np.random.default_rng([cfg.seed, step, 1])
        c = _batch(content, rng, st.batch, step).to(dev).contiguous(memory_format=fmt)
        s = _batch(style, rng, st.batch, step).to(dev).contiguous(memory_format=fmt)
        gen = torch.Generator(device=dev).manual_seed(int(cfg.seed) * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = st.lr / (1.0 + decay * step)                    # the reference inverse decay
        with autocast(st.precision, dev):
            losses = model.losses(c, s, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        return losses

    keys = ("total", "content", "style", "kl", "rec") if kind == "rain" else ("total", "content", "style")
    model.to(dev).to(memory_format=fmt).train()
    history, meta = _run_loop(run_dir, config, model, optimizer, step_fn, keys=keys, iterations=st.iterations,
                              checkpoint_every=st.checkpoint_every, desc=f"{STYLIZERS[kind]} {pretrain[0]}->{pretrain[1]}",
                              progress=progress, stop_after=stop_after)
    meta.update({"seconds_data": round(t_data, 2), "device": str(dev), "precision": precision_used(st.precision, dev),
                 "channels_last": fmt == torch.channels_last, "content_slices": len(content), "style_slices": len(style)})
    write_json(run_dir / "meta.json", {**meta, "config": config, "encoder": enc_record})
    return TrainedStylizer(model.eval(), kind, tuple(pretrain), run_dir, history,
                           {"config": config, "encoder": enc_record, "reused": False, **meta})


def _run_loop(run_dir: Path, config: dict, model, optimizer, step_fn, *, keys, iterations: int,
              checkpoint_every: int, desc: str, progress: bool, stop_after: int | None, after_step=None):
    """The loop every training shares: resume from last.pt, step, checkpoint, write losses and final.pt.

    step_fn(step) does one optimisation step and returns its losses (dict with `keys`); after_step(step,
    history), if given, runs after it (validation) and may add to `history`, which checkpoints keep.
    """
    from tqdm.auto import tqdm

    last, final = run_dir / "last.pt", run_dir / "final.pt"
    history = {k: [] for k in ("step", *keys)}
    start = 0
    if last.is_file():
        state = load_checkpoint(last, model=model, optimizer=optimizer, config=config)
        start, history = state["step"], state["history"]
    t1 = time.perf_counter()
    done_here = 0
    bar = tqdm(range(start, iterations), desc=desc, initial=start, total=iterations, disable=not progress)
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
    save_checkpoint(final, model=model, optimizer=None, step=iterations, config=config, history=history)
    if last.is_file():
        last.unlink()
    return history, {"seconds_train": round(time.perf_counter() - t1, 2), "steps_this_run": done_here,
                     "resumed_from": start}


# ---------------------------------------------------------------------------------------------
# segmentation (DRU-Net)

@dataclass
class TrainedSegmenter:
    """A trained (or reused) DRU-Net with where it lives and how it got there."""

    model: torch.nn.Module
    run_dir: Path
    history: dict
    info: dict


def build_segmenter(cfg):
    from cmr_lib.drunet import DRUNet

    sg = cfg.sizes.segmenter
    return DRUNet(depth=sg.depth, root=sg.root, head_relu=sg.head_relu)


def train_segmenter(cfg, source: CMRSource, *, name: str = "bssfp", progress=True,
                    stop_after: int | None = None) -> TrainedSegmenter:
    """Train (or reuse, or resume) a DRU-Net on the training patients' labelled bSSFP slices.

    Loss: cross-entropy + soft Dice (profile weights); Adam, lr halved every `lr_halve_every` steps.
    """
    from cmr_lib.drunet import segmentation_loss

    sg = cfg.sizes.segmenter
    split = split_for(source, cfg.split)
    crop = cfg.crop
    config = {"version": STYLIZER_VERSION, "kind": "segmenter", "name": name, "crop": crop,
              "preprocess": cfg.sizes.preprocess.to_dict(), "augment": cfg.sizes.augment.to_dict(),
              "segmenter": sg.to_dict(), "seed": cfg.seed,
              "data": data_fingerprint(source, {"train": ("C0", split["train"])})}
    run_dir = checkpoint_root(cfg) / "segmenters" / f"{name}_{config_key(config)}"
    dev = device()
    torch.manual_seed(cfg.seed)
    model = build_segmenter(cfg)
    if (run_dir / "final.pt").is_file():
        state = load_checkpoint(run_dir / "final.pt", model=model, config=config)
        return TrainedSegmenter(model.to(dev).eval(), run_dir, state["history"], {"config": config, "reused": True})
    data = SliceDataset.from_source(source, split["train"], "C0", cfg, train=True, label="require", crop=crop)
    optimizer = torch.optim.Adam(model.parameters(), lr=sg.lr)

    def step_fn(step):
        rng = np.random.default_rng([cfg.seed, step, 2])
        x, y = _batch(data, rng, sg.batch, step, labels=True)
        for group in optimizer.param_groups:
            group["lr"] = sg.lr * 0.5 ** (step // sg.lr_halve_every)
        with autocast(sg.precision, dev):
            logits = model(x.to(dev))
        loss = segmentation_loss(logits, y.to(dev), ce_weight=sg.ce_weight, dice_weight=sg.dice_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss}

    model.to(dev).train()
    history, meta = _run_loop(run_dir, config, model, optimizer, step_fn, keys=("loss",), iterations=sg.iterations,
                              checkpoint_every=sg.checkpoint_every, desc=f"DRU-Net ({name})", progress=progress,
                              stop_after=stop_after)
    write_json(run_dir / "meta.json", {**meta, "config": config})
    return TrainedSegmenter(model.eval(), run_dir, history, {"config": config, "reused": False, **meta})


def _items(ds: SliceDataset, rng: np.random.Generator, batch: int, step: int) -> list[dict]:
    ds.set_epoch(step)
    return [ds[int(i)] for i in rng.integers(len(ds), size=batch)]


class StylePicker:
    """Style slices for a batch, per Table 1's pairing: 'random' (any style slice) or 'same_patient_level'
    (the same patient's slice at the nearest relative level between base and apex; unlabelled style
    volumes take their level from the stack position, since their labels must not be used in training)."""

    def __init__(self, styles: SliceDataset, pairing: str):
        self.styles, self.pairing = styles, pairing
        self.by_patient: dict[int, list] = {}
        for idx, (vi, z) in enumerate(styles.items):
            v = styles.volumes[vi]
            self.by_patient.setdefault(v.patient, []).append((idx, float(v.levels[z])))
        self.fallbacks = 0

    def __call__(self, content_items: list[dict], rng: np.random.Generator, step: int) -> torch.Tensor:
        self.styles.set_epoch(step)
        picks = []
        for it in content_items:
            options = self.by_patient.get(it["patient"]) if self.pairing == "same_patient_level" else None
            if options:
                picks.append(min(options, key=lambda o: abs(o[1] - it["level"]))[0])
            else:
                self.fallbacks += self.pairing == "same_patient_level"
                picks.append(int(rng.integers(len(self.styles))))
        return torch.stack([self.styles[i]["image"] for i in picks])


def validation_dice(model, volumes, cfg, crop: int) -> float:
    """Mean Dice over MYO, LV, RV and validation volumes (3-D, original grids): model selection."""
    from cmr_lib.inference import predict_volume
    from cmr_lib.metrics import evaluate_volume

    pre = cfg.sizes.preprocess
    scores = []
    for vol in volumes:
        pred = predict_volume(model, vol, crop=crop, spacing_mm=pre.spacing_mm, percentiles=tuple(pre.percentiles))
        m = evaluate_volume(pred, vol.label, vol.spacing)
        scores.extend(v["dice"] for v in m.values())
    return float(np.nanmean(scores))


def train_setting(cfg, source: CMRSource, *, stylizer: TrainedStylizer | None = None,
                  style_source: CMRSource | None = None, epsilon_iterations: int = 1, include_original: bool = True,
                  progress=True, stop_after: int | None = None) -> TrainedSegmenter:
    """Train a DRU-Net for cfg.setting (Table 1): bSSFP batches, stylized with the pre-trained `stylizer`.

    RAIN: each batch's style code (sampled around its LGE style) is pushed `epsilon_iterations` times up the
    gradient of the current network's loss (adversarial style search); the network then learns from the
    mined style, and from the unstylized batch too if `include_original`. AdaConv: the batch is restyled.
    Baselines (cfg.baseline): histmatch takes the picked LGE slice's histogram; intensity and gin remap
    the batch (after the stylizer for 'rain+intensity'). The weights with the best validation Dice (LGE of
    validation patients) are kept.
    """
    from cmr_lib.baselines import augment, histogram_match
    from cmr_lib.drunet import segmentation_loss

    spec, sg = cfg.setting_spec, cfg.sizes.segmenter
    network, baseline = cfg.network, cfg.baseline
    if network and stylizer is None:
        raise CmrError(f"setting {cfg.setting} stylizes: pass a {network} stylizer pre-trained on "
                       f"{spec.pretrain.content}->{spec.pretrain.style}")
    if network and tuple(stylizer.pretrain) != (spec.pretrain.content, spec.pretrain.style):
        raise CmrError(f"setting {cfg.setting} needs a {spec.pretrain.content}->{spec.pretrain.style} stylizer, "
                       f"got {'->'.join(stylizer.pretrain)}")
    if isinstance(epsilon_iterations, bool) or not isinstance(epsilon_iterations, int) or epsilon_iterations < 0:
        raise CmrError(f"parameter 'epsilon_iterations' = {epsilon_iterations!r}: must be a non-negative integer")
    augmenting = bool(network or baseline)
    uses_styles = bool(network) or baseline == "histmatch"
    split = split_for(source, cfg.split)
    style_src = style_source or source
    crop = cfg.crop
    style_split = default_split(style_src) if style_source is not None else split
    style_patients = [p for p in style_split["style"] if style_src.has(p, "LGE")] if uses_styles else []
    config = {"version": STYLIZER_VERSION, "kind": "setting", "setting": cfg.setting, "stylizer": cfg.stylizer,
              "stylizer_run": stylizer.run_dir.name if network else None,
              "epsilon_iterations": epsilon_iterations if network == "rain" else 0,
              "include_original": include_original if augmenting else False, "crop": crop,
              "preprocess": cfg.sizes.preprocess.to_dict(), "augment": cfg.sizes.augment.to_dict(),
              "segmenter": sg.to_dict(), "explore": cfg.sizes.stylizer.explore.to_dict(), "seed": cfg.seed,
              "data": data_fingerprint(source, {"train": ("C0", split["train"]), "val": ("LGE", split["val"])})}
    if baseline in ("intensity", "gin"):
        config["baseline"] = cfg.sizes.baselines[baseline].to_dict()
    if uses_styles:
        config["data"]["style"] = data_fingerprint(style_src, {"style": ("LGE", style_patients)})
    name = f"setting{cfg.setting}_{cfg.stylizer}" + (f"_eps{epsilon_iterations}" if network == "rain" else "")
    run_dir = checkpoint_root(cfg) / "settings" / f"{name}_{config_key(config)}"
    dev = device()
    torch.manual_seed(cfg.seed)
    model = build_segmenter(cfg).to(dev)
    if (run_dir / "final.pt").is_file():
        state = load_checkpoint(run_dir / "final.pt", model=model, config=config)
        return TrainedSegmenter(model.eval(), run_dir, state["history"],
                                {"config": config, "reused": True, **json.loads((run_dir / "meta.json").read_text())})
    t0 = time.perf_counter()
    content = SliceDataset.from_source(source, split["train"], "C0", cfg, train=True, label="require", crop=crop)
    picker = None
    if uses_styles:
        styles = SliceDataset.from_source(style_src, style_patients, "LGE", cfg, train=True, label="skip", crop=crop)
        picker = StylePicker(styles, spec.style_pairing)
    val_volumes = [source.load(p, "LGE", label="require") for p in split["val"] if source.has_label(p, "LGE")]
    t_data = time.perf_counter() - t0
    optimizer = torch.optim.Adam(model.parameters(), lr=sg.lr)
    sty = stylizer.model.to(dev).eval() if network else None
    ex = cfg.sizes.stylizer.explore
    stats = {"seconds_stylize": 0.0, "seconds_validate": 0.0}
    mining = network == "rain" and epsilon_iterations > 0

    def seg_loss(logits, y):
        return segmentation_loss(logits, y, ce_weight=sg.ce_weight, dice_weight=sg.dice_weight)

    def stylize_net(s, x, y, step):
        gen = torch.Generator(device=dev).manual_seed(int(cfg.seed) * 1_000_003 + step)
        if network == "adaconv":
            with torch.no_grad(), autocast(cfg.sizes.stylizer.precision, dev):
                return sty.stylize(x, s).float()
        with torch.no_grad(), autocast(cfg.sizes.stylizer.precision, dev):
            feat = sty.encoder(x, last_only=True)
            mu, logvar = sty.style_code(s)
            z0 = sty.vae.sample(mu.float(), logvar.float(), gen)            # a random style around the anchor
        if epsilon_iterations == 0:
            with torch.no_grad():
                return sty.render(feat.float(), z0)
        model.eval()                                                        # mining must not move BN statistics

        def mined_loss(img):
            # The style decoding stays fp32: under bf16 the search's small moves of z vanished (gain ~1e-6).
            # Only the network runs in bf16 here: the same mined images, judged in fp32, gained as much
            # (0.00278 both, 48 batches) and it is 1.35x faster (README).
            with autocast(sg.precision, dev):
                logits = model(img)
            return seg_loss(logits.float(), y)

        found = sty.explore(x, z0, mined_loss, iterations=epsilon_iterations, step=ex.step, rule=ex.rule,
                            content_feat=feat.float())
        model.train()
        stats["explore_gain"] = found.losses[-1] - found.losses[0]          # how much the search raised the loss
        return found.images[-1].float()

    def stylize(items, x, y, rng, step):
        """The training images of one batch: stylized (network), histogram-matched, and/or remapped."""
        s = picker(items, rng, step).to(dev) if picker else None
        if network:
            xs = stylize_net(s, x, y, step)
        elif baseline == "histmatch":
            xs = histogram_match(x, s)
        else:
            xs = x
        if baseline in ("intensity", "gin"):
            gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step + 500_000)
            xs = augment(baseline, xs.clamp(0.0, 1.0), gen, cfg.sizes.baselines)
        return xs

    def step_fn(step):
        rng = np.random.default_rng([cfg.seed, step, 3])
        items = _items(content, rng, sg.batch, step)
        x = torch.stack([it["image"] for it in items]).to(dev)
        y = torch.stack([it["label"] for it in items]).to(dev)
        if augmenting:
            t = time.perf_counter()
            xs = stylize(items, x, y, rng, step)
            stats["seconds_stylize"] += time.perf_counter() - t
            x, y = (torch.cat([xs, x]), torch.cat([y, y])) if include_original else (xs, y)
        for group in optimizer.param_groups:
            group["lr"] = sg.lr * 0.5 ** (step // sg.lr_halve_every)
        with autocast(sg.precision, dev):
            logits = model(x)
        loss = seg_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss, **({"explore_gain": stats["explore_gain"]} if mining else {})}

    def after_step(step, history):
        if not val_volumes or ((step + 1) % sg.val_every and step + 1 != sg.iterations):
            return
        t = time.perf_counter()
        dice = validation_dice(model, val_volumes, cfg, crop)
        stats["seconds_validate"] += time.perf_counter() - t
        history.setdefault("val_step", []).append(step + 1)
        history.setdefault("val_dice", []).append(dice)
        if dice >= max(history["val_dice"]):
            save_checkpoint(run_dir / "best.pt", model=model, optimizer=None, step=step + 1, config=config,
                            history={"val_dice": dice})

    model.train()
    history, meta = _run_loop(run_dir, config, model, optimizer, step_fn,
                              keys=("loss", "explore_gain") if mining else ("loss",), iterations=sg.iterations,
                              checkpoint_every=sg.checkpoint_every, desc=f"DRU-Net {name}", progress=progress,
                              stop_after=stop_after, after_step=after_step)
    best = None
    if (run_dir / "best.pt").is_file():
        best = load_checkpoint(run_dir / "best.pt", model=model, config=config)["step"]
        save_checkpoint(run_dir / "final.pt", model=model, optimizer=None, step=sg.iterations, config=config,
                        history=history)
    meta.update({"seconds_data": round(t_data, 2), "seconds_stylize": round(stats["seconds_stylize"], 2),
                 "seconds_validate": round(stats["seconds_validate"], 2), "best_step": best,
                 "style_fallbacks": picker.fallbacks if picker else 0, "device": str(dev),
                 "precision": precision_used(sg.precision, dev)})
    write_json(run_dir / "meta.json", {**meta, "config": config})
    return TrainedSegmenter(model.eval(), run_dir, history, {"config": config, "reused": False, **meta})
