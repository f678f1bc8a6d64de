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
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cmr_lib.adain import Decoder
from cmr_lib.atomic import atomic_path, write_json, write_text
from cmr_lib.data import CMRSource, default_split
from cmr_lib.errors import CmrError
from cmr_lib.slices import SliceDataset
from cmr_lib.vgg import VGGEncoder, build_encoder, imagenet_available, load_weights_file

STYLIZER_VERSION = 1            # bump when a change makes old stylizer checkpoints invalid
STYLIZERS = {"rain": "RAIN", "adaconv": "AdaConv"}


# ---------------------------------------------------------------------------------------------
# device and precision

def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CmrError(f"{path}: not a loadable checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or not {"model", "step", "config"} <= set(state):
        raise CmrError(f"{path}: not a cmr-stylize checkpoint (needs model, step and config)")
    if config is not None and state["config"] != config:
        diff = sorted(k for k in set(config) | set(state["config"]) if config.get(k) != state["config"].get(k))
        raise CmrError(f"{path}: checkpoint was made with another configuration (differs in: {', '.join(diff)})")
    if model is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CmrError(f"{path}: checkpoint is for another architecture "
                           f"({str(exc).splitlines()[0][:160]})") from None
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


def _batch(ds: SliceDataset, rng: np.random.Generator, batch: int, step: int) -> torch.Tensor:
    ds.set_epoch(step)
    idx = rng.integers(len(ds), size=batch)
    return torch.stack([ds[int(i)]["image"] for i in idx])                  # (B, 1, S, S)


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
    split = default_split(source)
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
    split = default_split(source)
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
                   progress=True, stop_after: int | None = None) -> TrainedStylizer:
    """Train (or reuse, or resume) a stylizer on content -> style slices; see the module docstring.

    stop_after: end the run after this many steps of this call (tests use it to simulate a kill).
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
    dev = device()
    torch.manual_seed(cfg.seed)
    model = build_stylizer(kind, encoder, cfg)
    if st.warm_start:
        path = (checkpoint_root(cfg) / "autoencoders" / enc_record["source"] if enc_record["weights"] == "mr"
                else pretrain_autoencoder(cfg, source, encoder=encoder, encoder_record=enc_record, progress=progress))
        warm_start(model, path)
        enc_record = {**enc_record, "decoder_warm_start": path.name}
    final, last = run_dir / "final.pt", run_dir / "last.pt"
    if final.is_file():
        state = load_checkpoint(final, model=model, config=config)
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
    history = {k: [] for k in ("step", "total", *("content", "style", "kl", "rec")[: 4 if kind == "rain" else 2])}
    start = 0
    if last.is_file():
        state = load_checkpoint(last, model=model, optimizer=optimizer, config=config)
        start, history = state["step"], state["history"]
    model.to(dev).train()
    decay = sub["lr_decay"]
    from tqdm.auto import tqdm

    t1 = time.perf_counter()
    done_here = 0
    bar = tqdm(range(start, st.iterations), desc=f"{STYLIZERS[kind]} {pretrain[0]}->{pretrain[1]}",
               initial=start, total=st.iterations, disable=not progress)
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step, 1])
        c = _batch(content, rng, st.batch, step).to(dev)
        s = _batch(style, rng, st.batch, step).to(dev)
        gen = torch.Generator(device=dev).manual_seed(int(cfg.seed) * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = st.lr / (1.0 + decay * step)                    # the reference inverse decay
        with autocast(st.precision, dev):
            losses = model.losses(c, s, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        history["step"].append(step)
        for k in history:
            if k != "step":
                history[k].append(float(losses[k].detach()))
        bar.set_postfix(loss=f"{history['total'][-1]:.3g}", refresh=False)
        done_here += 1
        at_end = step + 1 == st.iterations
        if (step + 1) % st.checkpoint_every == 0 or at_end or (stop_after and done_here >= stop_after):
            save_checkpoint(last, model=model, optimizer=optimizer, step=step + 1, config=config, history=history)
        if stop_after and done_here >= stop_after and not at_end:
            bar.close()
            raise KeyboardInterrupt(f"stopped after {done_here} steps (stop_after)")
    bar.close()
    t_train = time.perf_counter() - t1
    meta = {"seconds_data": round(t_data, 2), "seconds_train": round(t_train, 2), "steps_this_run": done_here,
            "resumed_from": start, "device": str(dev), "precision": precision_used(st.precision, dev),
            "content_slices": len(content), "style_slices": len(style)}
    write_json(run_dir / "meta.json", {**meta, "config": config, "encoder": enc_record})
    write_text(run_dir / "losses.csv", "\n".join(
        [",".join(history)] + [",".join(f"{history[k][i]:.6g}" for k in history) for i in range(len(history["step"]))]) + "\n")
    save_checkpoint(final, model=model, optimizer=None, step=st.iterations, config=config, history=history)
    if last.is_file():
        last.unlink()
    return TrainedStylizer(model.eval(), kind, tuple(pretrain), run_dir, history,
                           {"config": config, "encoder": enc_record, "reused": False, **meta})
