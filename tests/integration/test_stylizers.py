import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmr_lib.core.config import make_config
from cmr_lib.core.errors import CmrError
from cmr_lib.data.sources import open_source
from cmr_lib.models.adaconv import AdaConv, _adaptive_conv, adaptive_conv
from cmr_lib.models.adain import Decoder, adain, mean_std, style_loss
from cmr_lib.models.drunet import segmentation_loss
from cmr_lib.models.rain import RAIN, StyleVAE, kl_loss, split_style, style_vector
from cmr_lib.models.vgg import VGGEncoder, build_encoder, load_state, load_weights_file
from cmr_lib.study.stylizers import geometry_kept, stylize_examples
from cmr_lib.data.splits import split_for
from cmr_lib.training import augment, checkpoints, segmenters, stylizers


def _encoder(width=0.25, seed=0):
    return build_encoder("random", width=width, seed=seed)[0]


# ---------------------------------------------------------------------------------------------
# AdaIN

def test_adain_output_has_the_styles_channel_statistics():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 16, 12, 12, generator=g) * 3 + 1
    style = torch.randn(2, 16, 10, 14, generator=g) * 0.5 - 2
    out = adain(content, style)
    (mo, so), (ms, ss) = mean_std(out), mean_std(style)
    assert torch.allclose(mo, ms, atol=1e-4) and torch.allclose(so, ss, atol=1e-4)


def test_constant_and_black_inputs_stay_finite():
    black = torch.zeros(2, 8, 6, 6)
    assert torch.isfinite(adain(black, torch.randn(2, 8, 6, 6))).all()
    assert torch.isfinite(adain(torch.randn(2, 8, 6, 6), black)).all()
    enc = _encoder()
    for model in (RAIN(enc), AdaConv(enc, image_size=64)):
        for img in (torch.zeros(2, 1, 64, 64), torch.full((2, 1, 64, 64), 0.7)):
            with torch.no_grad():
                assert torch.isfinite(model.stylize(img, img)).all()
            assert torch.isfinite(model.losses(img, torch.rand(2, 1, 64, 64))["total"])


def test_style_loss_is_zero_for_identical_features():
    feats = [torch.rand(1, 4, 8, 8), torch.rand(1, 8, 4, 4)]
    assert float(style_loss(feats, feats)) == 0.0


# ---------------------------------------------------------------------------------------------
# RAIN

def test_kl_is_zero_at_the_prior():
    assert float(kl_loss(torch.zeros(4, 8), torch.zeros(4, 8))) == 0.0
    assert float(kl_loss(torch.ones(4, 8), torch.zeros(4, 8))) > 0.0


def test_vae_reconstructs_style_vectors_after_training():
    torch.manual_seed(0)
    base = torch.rand(6, 32) + torch.cat([torch.zeros(6, 16), torch.ones(6, 16)], 1)     # means | positive stds
    vae = StyleVAE(style_dim=32, latent_dim=8, hidden=64)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(400):
        mu, logvar = vae.encode(base)
        loss = 5 * F.mse_loss(vae.decode(vae.sample(mu, logvar)), base) + 0.01 * kl_loss(mu, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = F.mse_loss(vae.decode(vae.encode(base)[0]), base)
    assert float(err) < 0.05 * float(base.var())


def test_style_vector_round_trip():
    feat = torch.rand(3, 8, 5, 5)
    mean, std = split_style(style_vector(feat))
    ref_mean, ref_std = mean_std(feat)
    assert torch.allclose(mean, ref_mean) and torch.allclose(std, ref_std)


# ---------------------------------------------------------------------------------------------
# AdaConv

def test_identity_kernels_pass_content_through():
    b, c, g, k = 3, 8, 4, 3
    x = torch.randn(b, c, 10, 12)
    cg = c // g
    depthwise = torch.zeros(b, c, cg, k, k)
    pointwise = torch.zeros(b, c, cg, 1, 1)
    for o in range(c):
        depthwise[:, o, o % cg, k // 2, k // 2] = 1.0
        pointwise[:, o, o % cg] = 1.0
    out = adaptive_conv(x, depthwise, pointwise, torch.zeros(b, c), groups=g)
    assert torch.allclose(out, F.instance_norm(x), atol=1e-5)


def test_grouped_batch_equals_a_loop_over_samples():
    torch.manual_seed(1)
    b, c, g, k = 4, 8, 2, 5
    x = torch.randn(b, c, 9, 9)
    dw, pw, bias = torch.randn(b, c, c // g, k, k), torch.randn(b, c, c // g, 1, 1), torch.randn(b, c)
    batched = _adaptive_conv(x, dw, pw, bias, g)
    for i in range(b):
        xi = F.pad(F.instance_norm(x[i:i + 1]), (k // 2,) * 4, mode="reflect")
        ref = F.conv2d(F.conv2d(xi, dw[i], groups=g), pw[i], bias[i], groups=g)
        assert torch.allclose(batched[i:i + 1], ref, atol=1e-4)


@pytest.mark.parametrize("k", [3, 5])
def test_adaconv_kernel_size_and_fixed_style_size(k):
    model = AdaConv(_encoder(), image_size=64, kernel_size=k)
    w = model.style_descriptor(torch.rand(2, 1, 64, 64))
    assert w.shape == (2, model.style_dim, k, k)
    assert model.stylize(torch.rand(2, 1, 96, 96), torch.rand(2, 1, 64, 64)).shape == (2, 1, 96, 96)
    with pytest.raises(ValueError, match="must be 64x64"):
        model.style_descriptor(torch.rand(1, 1, 128, 128))
    with pytest.raises(CmrError, match="odd"):
        AdaConv(_encoder(), image_size=64, kernel_size=4)


# ---------------------------------------------------------------------------------------------
# encoder weights

def _torchvision_state(width=1.0, seed=0):
    """A state dict shaped like torchvision's vgg19(): features 0..34 and a classifier."""
    full = VGGEncoder(width=width).state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) for k, v in full.items()}
    for i, (cin, cout) in {21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512)}.items():
        state[f"features.{i}.weight"] = torch.zeros(cout, cin, 1, 1)
    state["classifier.0.weight"] = torch.zeros(4, 8)
    return state


def test_loader_accepts_a_torchvision_state_dict(tmp_path):
    state = _torchvision_state()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    enc = load_weights_file(VGGEncoder(), path)
    assert torch.equal(enc.features[19].weight, state["features.19.weight"])
    enc2, record = build_encoder(str(path))
    assert record["weights"] == "file" and len(record["sha256"]) == 16
    wrapped = load_state(VGGEncoder(), {"state_dict": {f"module.{k}": v for k, v in state.items()}}, "wrapped")
    assert torch.equal(wrapped.features[0].bias, state["features.0.bias"])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loader_rejects_wrong_or_unsafe_files(tmp_path):
    with pytest.raises(CmrError, match=r"'features.0.weight' has shape \(64, 3, 3, 3\), the encoder \(width 0.5\)"):
        load_state(VGGEncoder(width=0.5), _torchvision_state(), "tv")
    partial = {k: v for k, v in _torchvision_state().items() if not k.startswith("features.19")}
    with pytest.raises(CmrError, match="missing 'features.19.weight'"):
        load_state(VGGEncoder(), partial, "partial")
    good = tmp_path / "good.pth"
    torch.save(_torchvision_state(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CmrError, match="truncated.pth: cannot be loaded as weights"):
        load_weights_file(VGGEncoder(), truncated)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"features.0.weight": Evil()}))
    with pytest.raises(CmrError, match="evil.pth: cannot be loaded as weights"):
        load_weights_file(VGGEncoder(), evil)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CmrError, match="imagenet' needs encoder width 1"):
        build_encoder("imagenet", width=0.5)
    with pytest.raises(CmrError, match="encoder_weights' = 'resnet'"):
        build_encoder("resnet")


def test_encoder_is_frozen_and_channels_follow_the_width():
    enc = VGGEncoder(width=0.5)
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    feats = enc(torch.rand(1, 1, 32, 32))
    assert [f.shape[1] for f in feats] == [32, 64, 128, 256] and feats[-1].shape[-1] == 4
    assert list(VGGEncoder().state_dict())[0] == "features.0.weight"
    assert Decoder(width=0.5)(feats[-1]).shape == (1, 1, 32, 32)


# ---------------------------------------------------------------------------------------------
# training: resume, reuse, checkpoints

def _smoke(tiny_phantom, out, **overrides):
    return make_config(profile="smoke", data_dir=tiny_phantom, output_root=out,
                       overrides={"stylizer.iterations": 6, "stylizer.checkpoint_every": 2, **overrides})


def test_killed_training_resumes_to_the_same_weights(tiny_phantom, tmp_path):
    src = open_source(tiny_phantom)
    whole = stylizers.train_stylizer(_smoke(tiny_phantom, tmp_path / "a"), src, "rain", ("C0", "LGE"), progress=False)
    cfg = _smoke(tiny_phantom, tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        stylizers.train_stylizer(cfg, src, "rain", ("C0", "LGE"), progress=False, stop_after=3)
    resumed = stylizers.train_stylizer(cfg, src, "rain", ("C0", "LGE"), progress=False)
    assert resumed.info["resumed_from"] == 3 and resumed.info["steps_this_run"] == 3
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.history["total"] == resumed.history["total"]
    again = stylizers.train_stylizer(cfg, src, "rain", ("C0", "LGE"), progress=False)
    assert again.info["reused"] and all(torch.equal(a[k], again.model.state_dict()[k]) for k in a)
    assert (again.run_dir / "losses.csv").read_text().startswith("step,total,content,style,kl,rec")


def test_checkpoints_refuse_other_configs_and_architectures(tiny_phantom, tmp_path):
    src = open_source(tiny_phantom)
    ts = stylizers.train_stylizer(_smoke(tiny_phantom, tmp_path), src, "adaconv", ("C0", "T2"), progress=False)
    final = ts.run_dir / "final.pt"
    with pytest.raises(CmrError, match="another configuration"):
        checkpoints.load_checkpoint(final, config={**ts.info["config"], "iterations": 7})
    with pytest.raises(CmrError, match="another architecture"):
        checkpoints.load_checkpoint(final, model=RAIN(_encoder()))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(final.read_bytes()[:2000])
    with pytest.raises(CmrError, match="bad.pt: not a loadable checkpoint"):
        checkpoints.load_checkpoint(bad)


def _trained(kind, tiny_phantom, tmp_path_factory):
    # AdaConv's warm start zeroes the kernel predictors' weights (identity kernels), so after 30 steps W, and the
    # latent behind it, barely moves the image yet: the search is tested from a cold start there
    cold = {"stylizer.warm_start": False} if kind == "adaconv-vae" else {}
    cfg = _smoke(tiny_phantom, tmp_path_factory.mktemp(kind),
                 **{"stylizer.autoencoder.iterations": 150, "stylizer.iterations": 30, "stylizer.checkpoint_every": 30,
                    **cold})
    src = open_source(tiny_phantom)
    return cfg, src, stylizers.train_stylizer(cfg, src, kind, ("C0", "LGE"), progress=False)


@pytest.fixture(scope="module")
def trained_rain(tiny_phantom, tmp_path_factory):
    """RAIN bSSFP->LGE trained briefly on the tiny phantom (decoder warm-started from the MR autoencoder)."""
    return _trained("rain", tiny_phantom, tmp_path_factory)


# How much larger an asm step AdaConv + VAE needs than RAIN for the same change of image on the tiny phantom: its
# W hardly differs between styles (the VAE's standardisation scale is ~0.005), so a move of its z changes the
# image ~100x less; at RAIN's step its search gains only 1e-6 to 6e-5 here, around float32 rounding
ASM_STEP_SCALE = {"rain": 1.0, "adaconv-vae": 100.0}


@pytest.fixture(scope="module", params=["rain", "adaconv-vae"])
def trained_searcher(request, trained_rain, tiny_phantom, tmp_path_factory):
    """Each stylizer with a style VAE (RAIN, AdaConv + VAE), trained as briefly: the style search is theirs."""
    return trained_rain if request.param == "rain" else _trained(request.param, tiny_phantom, tmp_path_factory)


def test_stylizing_keeps_the_label_geometry(trained_rain):
    """Edge maps of content and stylized images overlap well (the labels still fit the stylized image)."""
    cfg, src, ts = trained_rain
    st = stylize_examples(ts, cfg, src, max_slices=8)
    kept = geometry_kept(st)
    mirrored = type(st)(st.content, st.style, st.stylized.flip(-1), st.content_label, st.style_label)
    unrelated = geometry_kept(mirrored)                     # same images, boundaries moved
    assert kept > 0.45 and kept > unrelated + 0.15, (kept, unrelated)


def test_exploration_raises_the_loss_it_follows(trained_searcher):
    cfg, src, ts = trained_searcher
    seg = segmenters.train_segmenter(cfg, src, progress=False).model.eval()
    for p in list(seg.parameters()) + list(ts.model.parameters()):
        p.grad = None                                        # training leaves its last gradients behind
    st = stylize_examples(ts, cfg, src, max_slices=4)
    with torch.no_grad():
        z0 = ts.model.style_code(st.style)[0]

    grad_modes = []

    def loss_fn(img):
        grad_modes.append(torch.is_grad_enabled())
        return segmentation_loss(seg(img), st.content_label)
    # 'plain' moves z by the raw gradient, whose scale is the stylizer's own, so step 1 only suits RAIN; asm (a
    # step relative to the loss) takes ASM_STEP_SCALE; sign moves every latent dimension alike
    rules = ((("asm", 20.0 * ASM_STEP_SCALE[ts.kind]), ("sign", 0.05))
             + ((("plain", 1.0),) if ts.kind == "rain" else ()))
    for rule, step in rules:
        grad_modes.clear()
        with torch.no_grad():                                # the search needs its graphs even so
            ex = ts.model.explore(st.content, z0, loss_fn, iterations=3, step=step, rule=rule)
        assert len(ex.images) == len(ex.losses) == 4
        assert grad_modes == [True, True, True, False]       # the last image is only scored: no graph
        assert ex.losses[-1] > ex.losses[0], (rule, ex.losses)
        assert all(0.0 <= float(im.min()) and float(im.max()) <= 1.0 for im in ex.images)   # clipped
    assert all(p.grad is None for p in list(seg.parameters()) + list(ts.model.parameters()))   # only z moved
    with pytest.raises(CmrError, match="iterations"):
        ts.model.explore(st.content, z0, loss_fn, iterations=1.5, step=0.1, rule="sign")


def test_setting_mining_raises_the_segmentation_loss_before_each_update(trained_searcher, tmp_path):
    """In a RAIN setting, the epsilon loop runs before each update and records how far it raised the loss.

    Against a network trained on bSSFP, as training's own BatchAugmenter runs it, the search must raise the
    loss far beyond float32 rounding (~2e-7 of a loss near 2): a search whose moves vanish (gain ~1e-6, as
    once measured with the style decoded in bf16; a step 1000x too small gives ~1e-8) fails here. A nearly untrained network barely reacts to its
    input, so the 6-step setting run below only shows that the gain is measured at every step."""
    cfg, src, ts = trained_searcher
    over = {"stylizer.autoencoder.iterations": 150, "stylizer.iterations": 30, "stylizer.checkpoint_every": 30}
    step = cfg.sizes.stylizer.explore.step * ASM_STEP_SCALE[ts.kind]
    cfg2 = make_config(profile="smoke", setting=2, stylizer=ts.kind, data_dir=cfg.data_dir, output_root=tmp_path,
                       overrides={**over, "segmenter.iterations": 6, "stylizer.explore.step": step})
    seg = segmenters.train_setting(cfg2, src, stylizer=ts, epsilon_iterations=2, progress=False)
    gains = seg.history["explore_gain"]
    assert len(gains) == 6 and min(gains) >= -1e-6, gains          # never below rounding
    cfg3 = make_config(profile="smoke", data_dir=cfg.data_dir, output_root=tmp_path / "bssfp",
                       overrides={"segmenter.iterations": 150, "segmenter.checkpoint_every": 150})
    trained = segmenters.train_segmenter(cfg3, src, progress=False).model            # in eval mode
    content, styles = augment.setting_data(cfg2, src, split_for(src))
    search = augment.BatchAugmenter(cfg2, stylizer=ts.model, styles=styles, epsilon_iterations=3)
    found = []
    for step in range(4):
        items, x, y, rng = augment.training_batch(cfg2, content, step)
        search(items, x, y, rng, step, segmenter=trained)
        found.append(search.last_gain)
    # 10x the vanishing search's gain (~1e-6), 50x float32 rounding; measured 4e-3 to 9e-3 for both (scaled steps)
    assert min(found) > 1e-5, found
    assert not trained.training and all(p.requires_grad for p in trained.parameters())   # given back as it came


def test_a_frozen_model_leaves_autograd_and_comes_back_as_it_was():
    """The search and SLAug's saliency want the image's or latent's gradient only; afterwards the network
    trains on with its own flags (a layer its owner froze stays frozen) and mode."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).train()
    net[0].bias.requires_grad_(False)
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    with augment._frozen(net):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        (grad,) = torch.autograd.grad(net(x).sum(), x)
        assert grad.abs().sum() > 0
    assert net.training and [p.requires_grad for p in net.parameters()] == [True, False, True, True]
    with pytest.raises(RuntimeError, match="boom"), augment._frozen(net):
        raise RuntimeError("boom")
    assert net.training and [p.requires_grad for p in net.parameters()] == [True, False, True, True]


# ---------------------------------------------------------------------------------------------
# AdaConv + VAE (issue 16): AdaConv's descriptor W through RAIN's style VAE

def test_adaconv_vae_losses_and_shapes():
    from cmr_lib.models.adaconv_vae import AdaConvVAE
    torch.manual_seed(0)
    model = AdaConvVAE(_encoder(), image_size=64, kernel_size=3, style_dim=64)
    content, style = torch.rand(3, 1, 64, 64), torch.rand(3, 1, 64, 64)
    model.calibrate(torch.rand(5, 1, 64, 64))
    flat = model.descriptors(style)
    assert flat.shape == (3, model.style_dim * 9) and not flat.requires_grad
    assert model.vae.standardise(model.descriptors(torch.rand(5, 1, 64, 64))).shape == (5, model.style_dim * 9)
    losses = model.train().losses(content, style, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"total", "kl", "rec"} and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["total"].detach()) == pytest.approx(float((losses["kl"] + 5.0 * losses["rec"]).detach()))
    losses["total"].backward()
    assert model.vae.encoder[0].weight.grad.abs().sum() > 0
    assert model.style_encoder.fc.weight.grad is None                 # the AdaConv around the VAE stays as trained
    assert {id(p) for p in model.trainable()} == {id(p) for p in model.vae.parameters()}
    mu, logvar = model.eval().style_code(style)
    assert mu.shape == logvar.shape == (3, model.style_dim)
    assert model.vae.decode(mu).shape == (3, model.style_dim * 9)
    with torch.no_grad():
        out = model.stylize(content, style[:1])
    assert out.shape == (3, 1, 64, 64) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_adaconv_vae_is_the_trained_adaconv_with_a_fitted_vae(tiny_phantom, tmp_path):
    """Its AdaConv weights are those of the AdaConv of the same configuration (trained or reused first); the
    VAE, fitted on that AdaConv's W, lowers its reconstruction loss; its decoded W stylizes close to W itself."""
    src = open_source(tiny_phantom)
    cfg = _smoke(tiny_phantom, tmp_path, **{"stylizer.iterations": 40, "stylizer.checkpoint_every": 40})
    vae = stylizers.train_stylizer(cfg, src, "adaconv-vae", ("C0", "LGE"), progress=False)
    base = stylizers.train_stylizer(cfg, src, "adaconv", ("C0", "LGE"), progress=False)
    assert base.info["reused"] and vae.info["base"] == base.run_dir.name == vae.info["config"]["base"]
    a, b = base.model.state_dict(), vae.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and any(k.startswith("vae.") for k in b)
    rec = vae.history["rec"]
    assert np.mean(rec[-5:]) < 0.7 * np.mean(rec[:5]), rec
    bad = stylizers.build_stylizer("adaconv-vae", _encoder(), cfg.sizes.stylizer, cfg.crop_for("adaconv-vae"))
    wrong = type(base)(RAIN(_encoder()), "rain", base.pretrain, base.run_dir, {}, {})
    with pytest.raises(CmrError, match="does not match the AdaConv . VAE"):
        stylizers.take_trained(bad, wrong)


@pytest.mark.parametrize("k", [3, 7])
def test_the_kernel_size_reaches_the_grouped_convolution(k, monkeypatch):
    from cmr_lib.models import adaconv
    from cmr_lib.models.adaconv_vae import AdaConvVAE
    seen = []
    conv2d = adaconv.F.conv2d

    def spy(*args, **kw):
        groups = kw.get("groups", args[6] if len(args) > 6 else 1)
        if groups > 1:
            seen.append((tuple(args[1].shape[-2:]), groups))
        return conv2d(*args, **kw)
    monkeypatch.setattr(adaconv.F, "conv2d", spy)
    for cls in (AdaConv, AdaConvVAE):
        seen.clear()
        model = cls(_encoder(), image_size=64, kernel_size=k, style_dim=64).eval()
        with torch.no_grad():
            model.stylize(torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64))
        depthwise = [shape for shape, _ in seen if shape != (1, 1)]
        assert depthwise and all(shape == (k, k) for shape in depthwise), (cls.__name__, seen)
        assert all(g % 2 == 0 for _, g in seen)                     # the batch folded into the groups


def test_adaconv_vae_training_is_deterministic_per_seed(tiny_phantom, tmp_path):
    src = open_source(tiny_phantom)
    runs = [stylizers.train_stylizer(_smoke(tiny_phantom, tmp_path / d), src,
                                     "adaconv-vae", ("C0", "LGE"), progress=False) for d in ("a", "b")]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a) and runs[0].history["total"] == runs[1].history["total"]
    assert (runs[0].run_dir / "losses.csv").read_text().startswith("step,total,kl,rec")
    other = stylizers.train_stylizer(make_config(profile="smoke", seed=1, data_dir=tiny_phantom, output_root=tmp_path / "c",
                                                 overrides={"stylizer.iterations": 6, "stylizer.checkpoint_every": 2}),
                                     src, "adaconv-vae", ("C0", "LGE"), progress=False)
    assert other.history["total"] != runs[0].history["total"]


def test_the_skip_decoder_starts_as_the_plain_one_and_the_detail_loss_sees_blur():
    """The deviations of issue 34 (stylizer.rain.skips, detail_weight): zero skips leave the plain decoder's output;
    the detail loss is 0 for the content itself, positive for a blurred one, and blind to a brightness change."""
    import torch.nn.functional as F

    from cmr_lib.models.adain import Decoder, SkipDecoder, detail_loss
    from cmr_lib.models.rain import RAIN
    from cmr_lib.models.vgg import VGGEncoder
    torch.manual_seed(0)
    enc = VGGEncoder(width=0.125)
    x = torch.rand(2, 1, 32, 32)
    levels = enc(x)
    plain, skip = Decoder(width=0.125), SkipDecoder(width=0.125)
    skip.net.load_state_dict(plain.net.state_dict())
    assert torch.allclose(skip(levels[-1], levels[:3]), plain(levels[-1]))
    assert len(skip.plain_convs()) == len([m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)])
    blurred = F.avg_pool2d(x, 5, stride=1, padding=2)
    assert float(detail_loss(enc(x), levels)) < 1e-6 < float(detail_loss(enc(blurred), levels))
    model = RAIN(enc, skips=True, detail_weight=1.0)
    model.calibrate(torch.rand(4, 1, 32, 32))
    out = model.losses(x, torch.rand(2, 1, 32, 32))
    assert out["detail"] >= 0 and torch.isfinite(out["total"])
    feats = model.content_features(x)
    assert isinstance(feats, list) and len(feats) == 4
    found = model.explore(x, model.style_code(x)[0], lambda img: img.mean(), iterations=2, step=1.0, rule="asm")
    assert len(found.images) == 3 and found.images[-1].shape == x.shape


def test_the_intensity_loss_pulls_grey_levels_to_the_style_and_both_stylizers_weigh_it():
    """stylizer.<kind>.intensity_weight (issue 34): the quantile loss is 0 for the style's own grey levels (in any
    arrangement), positive for others, and descending it moves an image's histogram to the style's (the KL
    falls); RAIN and AdaConv add it, and AdaConv's detail loss, to their totals only when weighed."""
    from cmr_lib.evaluation.quality import structure_kl
    from cmr_lib.models.adain import intensity_loss
    torch.manual_seed(0)
    style = torch.rand(1, 1, 24, 24) ** 3                         # dark-heavy grey levels
    shuffled = style.flatten()[torch.randperm(style.numel())].view_as(style)
    assert float(intensity_loss(shuffled, style)) < 1e-12
    image = (0.3 + 0.4 * torch.rand(1, 1, 24, 24)).requires_grad_()
    start = float(intensity_loss(image.detach(), style))
    ones = np.ones((1, 24, 24), int)

    def kl():
        return structure_kl(image.detach().numpy(), ones, style.numpy(), ones, 1)
    kl_before = kl()
    opt = torch.optim.SGD([image], lr=50.0)
    for _ in range(40):
        opt.zero_grad()
        intensity_loss(image, style).backward()
        opt.step()
    assert start > 0.01 and float(intensity_loss(image.detach(), style)) < start / 10
    assert kl() < kl_before / 2
    enc = VGGEncoder(width=0.125)
    x, s = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    rain = RAIN(enc, intensity_weight=5.0)
    rain.calibrate(s)
    assert "intensity" in rain.losses(x, s) and "intensity" not in RAIN(enc).losses(x, s)
    x, s = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    ada = AdaConv(enc, image_size=64, detail_weight=1.0, intensity_weight=5.0)
    with torch.no_grad():
        got, plain = ada.losses(x, s), AdaConv(enc, image_size=64).losses(x, s)
    assert {"detail", "intensity"} <= set(got) and not {"detail", "intensity"} & set(plain)
    assert float(got["total"]) > float(got["content"] + 10 * got["style"])


def test_adaconv_skips_start_as_the_plain_decoder_and_the_vae_renders_through_them():
    """stylizer.adaconv.skips (issue 34): zero skips leave AdaConv's output as without them, the warm start still
    finds its nine convolutions, and AdaConv + VAE renders and searches with every level of the content."""
    from cmr_lib.models.adaconv_vae import AdaConvVAE
    torch.manual_seed(0)
    enc = VGGEncoder(width=0.125)
    x, s = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    plain, skip = AdaConv(enc, image_size=64), AdaConv(enc, image_size=64, skips=True)
    missing = skip.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("decoder.skips.") for k in missing.missing_keys) and missing.missing_keys
    with torch.no_grad():
        assert torch.allclose(skip.stylize(x, s), plain.stylize(x, s))
    assert len(skip.decoder.plain_convs()) == len(plain.decoder.plain_convs())
    with torch.no_grad():
        skip.decoder.skips[2].weight.normal_()
        assert not torch.allclose(skip.stylize(x, s), plain.stylize(x, s))
    assert "content" in skip.losses(x, s)
    vae = AdaConvVAE(enc, image_size=64, skips=True)
    vae.calibrate(s)
    feats = vae.content_features(x)
    assert isinstance(feats, list) and len(feats) == 4
    found = vae.explore(x, vae.style_code(s)[0], lambda img: img.mean(), iterations=1, step=0.1, rule="sign")
    assert found.images[-1].shape == x.shape


def test_the_grain_starts_at_zero_and_its_noise_comes_from_the_generator():
    """stylizer.<kind>.grain (issue 34): a zero gain leaves the output unchanged; with a gain, one generator
    seed gives one image and another seed another; the search holds one noise map; RAIN refuses grain without
    skips."""
    from cmr_lib.models.adain import grain_noise
    torch.manual_seed(0)
    enc = VGGEncoder(width=0.125)
    x, s = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    plain, grained = RAIN(enc, skips=True), RAIN(enc, skips=True, grain=True)
    grained.load_state_dict(plain.state_dict(), strict=False)
    plain.calibrate(s)
    grained.calibrate(s)
    gen = lambda k: torch.Generator().manual_seed(k)          # noqa: E731
    with torch.no_grad():
        assert torch.allclose(grained.stylize(x, s, generator=gen(1)), plain.stylize(x, s))
        grained.decoder.grain.gain.fill_(0.5)
        a, b = grained.stylize(x, s, generator=gen(1)), grained.stylize(x, s, generator=gen(1))
        assert torch.equal(a, b) and not torch.allclose(a, grained.stylize(x, s, generator=gen(2)))
        assert torch.equal(grained.stylize(x, s), grained.stylize(x, s))     # no generator: a fixed noise
    assert grain_noise(plain, x, gen(1)) is None and grain_noise(grained, x, gen(1)).shape == (2, 1, 32, 32)
    noise = grain_noise(grained, x, gen(3))
    z = grained.style_code(s)[0]
    found = grained.explore(x, z, lambda img: img.mean(), iterations=1, step=1e-9, rule="plain", noise=noise)
    assert torch.allclose(found.images[0], found.images[1], atol=1e-6)
    assert "total" in grained.losses(x, s, generator=gen(4))
    ada = AdaConv(enc, image_size=64, skips=True, grain=True)
    with torch.no_grad():
        ada.decoder.grain.gain.fill_(0.5)
        xx, ss = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
        assert not torch.allclose(ada.stylize(xx, ss, generator=gen(1)), ada.stylize(xx, ss, generator=gen(2)))
    with pytest.raises(CmrError, match="needs stylizer.rain.skips"):
        RAIN(enc, grain=True)


def test_the_patch_critic_trains_on_its_own_loss_and_the_decoder_on_its_own():
    """stylizer.rain.adversarial_weight (issue 34): with a weight, RAIN owns a patch critic that the optimizer
    updates; the critic's loss reaches the critic only (the stylized image is detached), the stylizer's
    adversarial term reaches the decoder only (a frozen copy of the critic scores it); without a weight there is
    no critic and the state dict is the paper's."""
    torch.manual_seed(0)
    enc = VGGEncoder(width=0.125)
    x, s = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    assert RAIN(enc, skips=True).critic is None
    assert not any(k.startswith("critic.") for k in RAIN(enc, skips=True).state_dict())
    model = RAIN(enc, skips=True, adversarial_weight=0.5)
    model.calibrate(s)
    assert set(map(id, model.critic.parameters())) <= set(map(id, model.trainable()))
    gen = torch.Generator().manual_seed(1)

    def grads(name):
        model.zero_grad(set_to_none=True)
        model.losses(x, s, generator=torch.Generator().manual_seed(1))[name].backward()
        norm = lambda ps: sum(float(p.grad.abs().sum()) for p in ps if p.grad is not None)   # noqa: E731
        return norm(model.critic.parameters()), norm(model.decoder.parameters())
    losses = model.losses(x, s, generator=gen)
    assert {"critic", "adversarial"} <= set(losses) and torch.isfinite(losses["total"])
    critic_c, decoder_c = grads("critic")
    critic_a, decoder_a = grads("adversarial")
    assert critic_c > 0 and decoder_c == 0
    assert critic_a == 0 and decoder_a > 0
    ada = AdaConv(enc, image_size=64, skips=True, adversarial_weight=0.5)      # AdaConv's, and its VAE leaves it
    xx, ss = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    assert {"critic", "adversarial"} <= set(ada.losses(xx, ss)) and ada.critic is not None
    from pathlib import Path

    from cmr_lib.models.adaconv_vae import AdaConvVAE
    from cmr_lib.training.stylizers import TrainedStylizer, take_trained
    vae = AdaConvVAE(enc, image_size=64, skips=True)
    take_trained(vae, TrainedStylizer(ada, "adaconv", ("C0", "LGE"), Path("."), {}, {}))
    assert torch.equal(vae.decoder.state_dict()[next(iter(vae.decoder.state_dict()))],
                       ada.decoder.state_dict()[next(iter(ada.decoder.state_dict()))])
