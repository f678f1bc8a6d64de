"""Training the stylizers (RAIN, AdaConv, AdaConv + VAE) and what they share: the encoder and the decoders' warm start.

See training.checkpoints for how runs are resumed and reused.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cmr_lib.core.atomic import atomic_path
from cmr_lib.core.digests import note_step_file, reusable
from cmr_lib.core.device import autocast, device, memory_format, precision_used
from cmr_lib.core.errors import CmrError
from cmr_lib.core.sections import Params, StylizerConfig
from cmr_lib.data.slices import SliceDataset
from cmr_lib.data.sources import CMRSource
from cmr_lib.data.splits import run_split, style_pool
from cmr_lib.models.adaconv import AdaConv
from cmr_lib.models.adaconv_vae import AdaConvVAE
from cmr_lib.models.adain import Decoder
from cmr_lib.models.rain import RAIN
from cmr_lib.models.vgg import VGGEncoder, build_encoder, imagenet_available, load_weights_file
from cmr_lib.training.checkpoints import (
    VERSION,
    checkpoint_root,
    config_key,
    data_fingerprint,
    draw_images,
    finish_run,
    finished,
    reuse_run,
    run_loop,
)

STYLIZERS = {"rain": "RAIN", "adaconv": "AdaConv", "adaconv-vae": "AdaConv + VAE"}


def pretrain_autoencoder(cfg, source: CMRSource, *, encoder: VGGEncoder | None = None, encoder_record=None,
                         split: dict | None = None, progress=True) -> Path:
    """Train the mirror decoder to reconstruct MR slices of every sequence from relu4_1 features.

    encoder=None: the encoder trains too (from He init): the offline 'mr' encoder, fitted to MR slices
    rather than ImageNet. Otherwise the given encoder stays frozen and only the decoder learns: a warm
    start that lets the stylizers' decoders begin from an image-preserving mapping. Saved as one .pth in
    torchvision names (`features.N.*`) plus `decoder.*`, cached by configuration.
    """
    st = cfg.sizes.stylizer
    split = split or run_split(source, cfg.split, cfg.sizes.segmenter)
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
    out = checkpoint_root(cfg.output_root) / "autoencoders" / f"{name}_w{st.encoder_width:g}_{config_key(config)}.pth"
    if reusable(out):
        note_step_file(out)
        return out
    torch.manual_seed(cfg.seed)
    enc = VGGEncoder(width=st.encoder_width) if train_encoder else encoder
    if train_encoder:
        enc.requires_grad_(True)
    dec = Decoder(width=st.encoder_width)
    dsets = [SliceDataset.from_source(source, pats, seq, **cfg.slicing(train=True, crop=config["crop"]), label="skip")
             for seq, pats in roles.values()]
    params = list(dec.parameters()) + (list(enc.parameters()) if train_encoder else [])
    opt = torch.optim.Adam(params, lr=st.autoencoder.lr)
    dev = device()
    enc.to(dev), dec.to(dev)
    for step in tqdm(range(st.autoencoder.iterations), desc=f"autoencoder ({name})", disable=not progress):
        rng = np.random.default_rng([cfg.seed, step, 5])
        x = torch.cat([draw_images(ds, rng, max(1, st.autoencoder.batch // len(dsets)), step) for ds in dsets]).to(dev)
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


def load_decoder(path, width: float) -> Decoder:
    """The mirror decoder saved in an autoencoder file (pretrain_autoencoder's `decoder.*` keys)."""
    note_step_file(path)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    decoder = Decoder(width=width)
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")})
    return decoder


def warm_start(model, path) -> None:
    """Copy the pretrained decoder's convolutions into a stylizer's decoder, in order (RAIN: all of them;
    AdaConv: its ordinary convolutions, which mirror the AdaIN decoder's one to one)."""
    pretrained = load_decoder(path, model.encoder.width)
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


def resolve_encoder(cfg, source: CMRSource, *, split: dict | None = None, progress=True):
    """The stylizers' encoder per `stylizer.encoder_weights`: (VGGEncoder, record for run.json)."""
    st = cfg.sizes.stylizer
    spec = st.encoder_weights
    if spec == "auto":
        spec = "imagenet" if st.encoder_width == 1.0 and imagenet_available(allow_download=True) else st.offline_fallback
    if spec == "mr":
        path = pretrain_autoencoder(cfg, source, split=split, progress=progress)
        enc = load_weights_file(VGGEncoder(width=st.encoder_width), path)
        return enc, {"weights": "mr", "source": path.name, "width": st.encoder_width, "requested": st.encoder_weights}
    enc, record = build_encoder(spec, width=st.encoder_width, seed=cfg.seed)
    record["requested"] = st.encoder_weights
    return enc, record


def stylizer_parameters(st: StylizerConfig, kind: str, *, identity: bool = False) -> dict:
    """The stylizer section's parameters of one stylizer: its own subsection; AdaConv + VAE takes AdaConv's and
    RAIN's VAE weights (kl_weight, rec_weight), so that its style VAE is weighed as RAIN's is. identity: as
    checkpoint names hash them (Params.identity)."""
    as_dict = Params.identity if identity else Params.to_dict
    if kind == "adaconv-vae":
        return {**as_dict(st.adaconv), "kl_weight": st.rain.kl_weight, "rec_weight": st.rain.rec_weight}
    if kind not in ("rain", "adaconv"):
        raise CmrError(f"parameter 'stylizer' = {kind!r}: choose one of {', '.join(STYLIZERS)}")
    return as_dict(st[kind])


def build_stylizer(kind: str, encoder: VGGEncoder, st: StylizerConfig, image_size: int):
    """A RAIN, AdaConv or AdaConv + VAE model with the section's loss weights (and AdaConv's kernel size and
    `image_size`, its input size)."""
    p = stylizer_parameters(st, kind)
    if kind == "rain":
        return RAIN(encoder, content_weight=p["content_weight"], style_weight=p["style_weight"],
                    kl_weight=p["kl_weight"], rec_weight=p["rec_weight"], detail_weight=p["detail_weight"],
                    intensity_weight=p["intensity_weight"], skips=p["skips"], grain=p["grain"],
                    adversarial_weight=p["adversarial_weight"])
    common = dict(image_size=image_size, kernel_size=p["kernel_size"], style_dim=p["style_dim"],
                  content_weight=p["content_weight"], style_weight=p["style_weight"], skips=p["skips"],
                  grain=p["grain"])
    if kind == "adaconv":
        return AdaConv(encoder, **common, detail_weight=p["detail_weight"], intensity_weight=p["intensity_weight"],
                       adversarial_weight=p["adversarial_weight"])
    return AdaConvVAE(encoder, **common, kl_weight=p["kl_weight"], rec_weight=p["rec_weight"])


def optimise_stylizer(st: StylizerConfig, kind: str, seed: int, model, optimizer, content, style, step: int,
                      dev) -> dict:
    """One Adam step of a stylizer on (content, style) batches with the section's losses and inverse
    learning-rate decay; the VAE's sample is drawn from (seed, step). Returns the losses."""
    gen = torch.Generator(device=dev).manual_seed(int(seed) * 1_000_003 + step)
    for group in optimizer.param_groups:
        group["lr"] = st.lr / (1.0 + stylizer_parameters(st, kind)["lr_decay"] * step)   # the reference decay
    with autocast(st.precision, dev):
        losses = model.losses(content, style, generator=gen)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return losses


@dataclass
class TrainedStylizer:
    """A trained (or reused) stylizer with where it lives and how it got there."""

    model: torch.nn.Module
    kind: str
    pretrain: tuple          # (content sequence, style sequence)
    run_dir: Path
    history: dict            # step -> losses
    info: dict               # config, encoder record, timings, reused?


def train_stylizer(cfg, source: CMRSource, kind: str, pretrain=("C0", "LGE"), *, split: dict | None = None,
                   progress=True, stop_after: int | None = None, reuse_only: bool = False) -> TrainedStylizer:
    """Train (or reuse, or resume) a stylizer on content -> style slices: the training patients' bSSFP heart
    slices and every slice of the style pool (data.splits.style_pool; T2 from `t2_dir` when needed).

    stop_after: end the run after this many steps of this call (tests use it to simulate a kill);
    reuse_only: never train, raise a one-line error when no finished stylizer matches (analysis).
    """
    split = split or run_split(source, cfg.split, cfg.sizes.segmenter)
    content_seq, style_seq = pretrain
    # AdaConv + VAE is the trained AdaConv of this configuration with a style VAE fitted on its W
    base = train_stylizer(cfg, source, "adaconv", pretrain, split=split, progress=progress, stop_after=stop_after,
                          reuse_only=reuse_only) if kind == "adaconv-vae" else None
    style_src, style_patients = style_pool(source, split, style_seq, t2_dir=cfg.t2_dir)
    if not style_patients:
        raise CmrError(f"{style_src.root}: no {style_seq} images to train a {content_seq}->{style_seq} stylizer "
                       f"(for T2 with MS-CMRSeg, pass t2_dir pointing at MyoPS 2020 data)")
    encoder, enc_record = resolve_encoder(cfg, source, split=split, progress=progress)
    config = stylizer_config(cfg, source, kind, pretrain, split, (style_src, style_patients), enc_record, base)
    run_dir = (checkpoint_root(cfg.output_root) / "stylizers"
               / f"{kind}_{content_seq}-{style_seq}_{config_key(config)}")
    if reuse_only and not finished(run_dir):
        raise CmrError(f"{run_dir}: no finished {STYLIZERS[kind]} {'->'.join(pretrain)} stylizer for this "
                       f"configuration; run its notebook first")
    dev = device()
    torch.manual_seed(cfg.seed)
    model = build_stylizer(kind, encoder, cfg.sizes.stylizer, cfg.crop_for(kind))
    enc_record = _initialise(cfg, source, model, base, encoder, enc_record, split, progress)
    if finished(run_dir):
        state, meta = reuse_run(run_dir, model=model, config=config)
        return TrainedStylizer(model.to(dev).eval(), kind, tuple(pretrain), run_dir, state["history"],
                               {"config": config, "encoder": enc_record, **meta, "reused": True})
    if base is not None:
        return fit_style_vae(cfg, model, base, style_src, style_patients, config, run_dir, enc_record,
                             progress=progress, stop_after=stop_after)
    return _fit(cfg, source, kind, tuple(pretrain), model, split, (style_src, style_patients), config, run_dir,
                enc_record, progress=progress, stop_after=stop_after)


def stylizer_config(cfg, source: CMRSource, kind: str, pretrain, split: dict, pool, enc_record: dict, base) -> dict:
    """What identifies a stylizer run (its checkpoint folder's hash): kind, direction, sizes, its parameters, the
    encoder, the seed and the content and style data by content; AdaConv + VAE also names its AdaConv."""
    st = cfg.sizes.stylizer
    fingerprint = data_fingerprint(source, {"content": (pretrain[0], split["train"])})
    fingerprint["style"] = data_fingerprint(pool[0], {"style": (pretrain[1], pool[1])})
    return {"version": VERSION, "kind": kind, "pretrain": list(pretrain), "crop": cfg.crop_for(kind),
            "preprocess": cfg.sizes.preprocess.to_dict(), "augment": cfg.sizes.augment.to_dict(),
            "batch": st.batch, "iterations": st.iterations, "lr": st.lr,
            kind: stylizer_parameters(st, kind, identity=True),
            "precision": st.precision, "warm_start": st.warm_start,
            "encoder": {k: v for k, v in enc_record.items() if k != "requested"}, "seed": cfg.seed,
            "data": fingerprint, **({"base": base.run_dir.name} if base is not None else {})}


def _initialise(cfg, source: CMRSource, model, base, encoder, enc_record: dict, split: dict, progress) -> dict:
    """Start a stylizer from its trained AdaConv (AdaConv + VAE) or from the MR autoencoder's decoder (warm start);
    returns the encoder record, naming the decoder it started from."""
    if base is not None:
        take_trained(model, base)
    elif cfg.sizes.stylizer.warm_start:
        path = (checkpoint_root(cfg.output_root) / "autoencoders" / enc_record["source"]
                if enc_record["weights"] == "mr"
                else pretrain_autoencoder(cfg, source, encoder=encoder, encoder_record=enc_record, split=split,
                                          progress=progress))
        warm_start(model, path)
        enc_record = {**enc_record, "decoder_warm_start": path.name}
    return enc_record


def _fit(cfg, source: CMRSource, kind: str, pretrain: tuple, model, split: dict, pool, config: dict, run_dir,
         enc_record: dict, *, progress, stop_after) -> TrainedStylizer:
    """The training loop of RAIN or AdaConv on random content and style batches, checkpointed and resumable."""
    st, dev = cfg.sizes.stylizer, device()
    t0 = time.perf_counter()
    crop = cfg.crop_for(kind)
    content = SliceDataset.from_source(source, split["train"], pretrain[0], **cfg.slicing(train=True, crop=crop),
                                       heart_only=True, label="require")
    style = SliceDataset.from_source(pool[0], pool[1], pretrain[1], **cfg.slicing(train=True, crop=crop), label="skip")
    t_data = time.perf_counter() - t0
    optimizer = torch.optim.Adam(model.trainable(), lr=st.lr)
    if hasattr(model, "calibrate"):          # a style VAE: standardise its inputs on 64 training styles (seeded)
        model.calibrate(draw_images(style, np.random.default_rng([cfg.seed, 7]), 64, 0))
    fmt = memory_format(st.precision, dev)

    def step_fn(step):
        rng = np.random.default_rng([cfg.seed, step, 1])
        c = draw_images(content, rng, st.batch, step).to(dev).contiguous(memory_format=fmt)
        s = draw_images(style, rng, st.batch, step).to(dev).contiguous(memory_format=fmt)
        return optimise_stylizer(cfg.sizes.stylizer, kind, cfg.seed, model, optimizer, c, s, step, dev)

    keys = ("total", "content", "style", "kl", "rec") if hasattr(model, "vae") else ("total", "content", "style")
    keys += tuple(k for k in ("detail", "intensity") if getattr(model, "weights", {}).get(k, 0) > 0)
    if getattr(model, "weights", {}).get("adversarial", 0) > 0:
        keys += ("critic", "adversarial")                      # a collapsed critic shows in losses.csv
    model.to(dev).to(memory_format=fmt).train()
    history, meta = run_loop(run_dir, config, model, optimizer, step_fn, keys=keys, iterations=st.iterations,
                             checkpoint_every=st.checkpoint_every, desc=f"{STYLIZERS[kind]} {'->'.join(pretrain)}",
                             progress=progress, stop_after=stop_after)
    meta.update({"seconds_data": round(t_data, 2), "device": str(dev), "precision": precision_used(st.precision, dev),
                 "channels_last": fmt == torch.channels_last, "content_slices": len(content), "style_slices": len(style)})
    finish_run(run_dir, model=model, config=config, history=history,
               meta={**meta, "config": config, "encoder": enc_record}, iterations=st.iterations)
    return TrainedStylizer(model.eval(), kind, pretrain, run_dir, history,
                           {"config": config, "encoder": enc_record, "reused": False, **meta})


def take_trained(model, base: TrainedStylizer) -> None:
    """Copy a trained AdaConv (base) into an AdaConv + VAE: every weight but the VAE's, which must be all it lacks
    (the AdaConv's patch critic, a training aid, is left behind)."""
    own = {k for k in model.state_dict() if not k.startswith("vae.")}
    state = {k: v for k, v in base.model.state_dict().items() if not k.startswith("critic.")}
    if set(state) != own:
        raise CmrError(f"{base.run_dir}: this AdaConv does not match the AdaConv + VAE built around it "
                       f"(missing {sorted(own - set(state))[:3]}, unexpected {sorted(set(state) - own)[:3]})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CmrError(f"{base.run_dir}: this AdaConv does not match the AdaConv + VAE built around it "
                       f"({str(exc).splitlines()[-1].strip()})") from None


def fit_style_vae(cfg, model, base: TrainedStylizer, style_src, style_patients, config: dict, run_dir: Path,
                  enc_record: dict, *, progress=True, stop_after=None, batch: int = 64) -> TrainedStylizer:
    """AdaConv + VAE's own training: W of every style-pool slice through the frozen, trained AdaConv (once), the
    VAE's standardisation measured on them, then `stylizer.iterations` Adam steps of RAIN's VAE losses on random
    batches of them (seeded)."""
    st = cfg.sizes.stylizer
    dev = device()
    t0 = time.perf_counter()
    style = SliceDataset.from_source(style_src, style_patients, base.pretrain[1],
                                     **cfg.slicing(train=False, crop=cfg.crop_for(model.kind)), label="skip")
    model.to(dev).eval()
    images = torch.stack([style[i]["image"] for i in range(len(style))])
    flat = model.descriptors(images.to(dev))                  # in batches of 64, once
    model.vae.calibrate(flat)
    t_data = time.perf_counter() - t0
    optimizer = torch.optim.Adam(model.trainable(), lr=st.lr)

    def step_fn(step):
        rng = np.random.default_rng([cfg.seed, step, 1])
        gen = torch.Generator(device=dev).manual_seed(int(cfg.seed) * 1_000_003 + step)
        losses = model.vae_losses(flat[torch.from_numpy(rng.integers(len(flat), size=batch)).to(dev)], generator=gen)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        return losses

    model.vae.train()
    history, meta = run_loop(run_dir, config, model, optimizer, step_fn, keys=("total", "kl", "rec"),
                             iterations=st.iterations, checkpoint_every=st.checkpoint_every,
                             desc=f"{STYLIZERS[model.kind]} {'->'.join(base.pretrain)} (style VAE)", progress=progress,
                             stop_after=stop_after)
    meta.update({"seconds_data": round(t_data, 2), "device": str(dev), "precision": "fp32", "style_slices": len(style),
                 "base": base.run_dir.name, "seconds_base": base.info.get("seconds_train")})
    finish_run(run_dir, model=model, config=config, history=history,
               meta={**meta, "config": config, "encoder": enc_record}, iterations=st.iterations)
    return TrainedStylizer(model.eval(), model.kind, tuple(base.pretrain), run_dir, history,
                           {"config": config, "encoder": enc_record, "reused": False, **meta})
