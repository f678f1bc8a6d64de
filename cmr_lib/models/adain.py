"""AdaIN (Huang & Belongie 2017), the core of RAIN: paper eq. (1) and the losses eq. (3)-(4).

AdaIN(c, s) = sigma(s) * (c - mu(c)) / sigma(c) + mu(s), per channel over space. The decoder mirrors
the encoder to relu4_1 (reflection padding, nearest upsampling) and returns one grey channel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_lib.models.vgg import scaled

EPS = 1e-5


def mean_std(feat: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over space: (B, C, H, W) -> two (B, C, 1, 1); eps keeps std > 0."""
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1).float()
    var = flat.var(dim=2, unbiased=False) + eps
    return flat.mean(dim=2).view(b, c, 1, 1), var.sqrt().view(b, c, 1, 1)


def adain_stats(content: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Normalise content per channel, then give it the target mean and std (each (B, C, 1, 1))."""
    c_mean, c_std = mean_std(content, eps)
    return ((content.float() - c_mean) / c_std * std + mean).to(content.dtype)


def adain(content_feat: torch.Tensor, style_feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Paper eq. (1): content features with the style features' channel statistics (black regions stay finite)."""
    s_mean, s_std = mean_std(style_feat, eps)
    return adain_stats(content_feat, s_mean, s_std, eps)


def _conv(cin, cout):
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.ReLU()]


class Decoder(nn.Module):
    """The mirror of VGG-19 to relu4_1: relu4_1 features (B, 512w, H/8, W/8) -> grey image (B, 1, H, W)."""

    def __init__(self, *, width: float = 1.0, out_channels: int = 1):
        super().__init__()
        c512, c256, c128, c64 = (scaled(c, width) for c in (512, 256, 128, 64))
        up = [nn.Upsample(scale_factor=2, mode="nearest")]
        self.net = nn.Sequential(
            *_conv(c512, c256), *up,                                            # (B, 256w, H/4, W/4)
            *_conv(c256, c256), *_conv(c256, c256), *_conv(c256, c256), *_conv(c256, c128), *up,   # H/2
            *_conv(c128, c128), *_conv(c128, c64), *up,                         # (B, 64w, H, W)
            *_conv(c64, c64), nn.ReflectionPad2d(1), nn.Conv2d(c64, out_channels, 3),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(t)


class SkipDecoder(Decoder):
    """The mirror decoder with the content's own detail added back (a deviation from the paper, profile option
    stylizer.rain.skips): after each upsampling, a 1x1 convolution of the content's instance-normalised features
    of that scale (relu3_1, relu2_1, relu1_1). Their means and stds are normalised away, so the style still comes
    from relu4_1 alone (and from the style VAE, which the search moves); the skips start at zero, so the decoder
    starts as the plain one and its warm start holds."""

    def __init__(self, *, width: float = 1.0, out_channels: int = 1, grain: bool = False):
        super().__init__(width=width, out_channels=out_channels)
        self.skips = zero_skips(width)
        self.grain = Grain(scaled(64, width)) if grain else None

    def plain_convs(self) -> list[nn.Conv2d]:
        """The convolutions the plain decoder has too, in order (what a warm start copies)."""
        return [m for m in self.net.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, t: torch.Tensor, skips=None, noise=None) -> torch.Tensor:
        """t: relu4_1 target; skips: the content's [relu1_1, relu2_1, relu3_1] (None: the plain decoder);
        noise: the grain's (B, 1, H, W) noise map."""
        if skips is None:
            return self.net(t)
        k, x = 0, t
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                x = x + self.skips[k](instance_norm(skips[2 - k]).to(x.dtype))
                k += 1
                if k == 3 and self.grain is not None:
                    x = self.grain(x, noise)
        return x


def content_features(encoder, content: torch.Tensor, every_level: bool):
    """What a decoder needs of the content: its relu4_1 features, or every level [relu1_1..relu4_1] for a decoder
    with skips."""
    return encoder(content) if every_level else encoder(content, last_only=True)


def zero_skips(width: float) -> nn.ModuleList:
    """The 1x1 convolutions that add the content's normalised relu3_1, relu2_1, relu1_1 back after each
    upsampling (the skips deviation), zero at the start so that a warm-started decoder starts unchanged."""
    convs = nn.ModuleList([nn.Conv2d(scaled(c, width), scaled(c, width), 1) for c in (256, 128, 64)])
    for conv in convs:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return convs


class Grain(nn.Module):
    """Per-pixel noise added at full resolution with a learned gain per channel (a deviation, profile option
    stylizer.<kind>.grain): LGE's texture and within-structure spread cannot be drawn from the content's features
    alone. The gain starts at zero, so a warm-started decoder starts unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:                                  # no generator given: the same noise every call
            noise = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=torch.Generator().manual_seed(0))
        return x + self.gain.to(x.dtype)[None, :, None, None] * noise.to(x.device, x.dtype)


def grain_noise(model, content: torch.Tensor, generator=None) -> torch.Tensor | None:
    """The noise map (B, 1, H, W) a stylizer with grain adds to this content, drawn from `generator` (None for a
    stylizer without grain, or without a generator: then Grain's fixed noise)."""
    if getattr(model.decoder, "grain", None) is None or generator is None:
        return None
    return torch.randn((content.shape[0], 1, *content.shape[2:]), generator=generator, device=generator.device)


def instance_norm(feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Features with each channel's spatial mean and std removed: structure without intensity."""
    m, s = mean_std(feat, eps)
    return (feat.float() - m) / s


def detail_loss(feats_out: list[torch.Tensor], feats_content: list[torch.Tensor]) -> torch.Tensor:
    """How much of the content's structure the output lost (profile option stylizer.rain.detail_weight, a
    deviation): MSE of instance-normalised features at relu1_1..relu3_1, so that intensities are free to change
    (the style loss moves their statistics) while edges must stay where they were."""
    loss = feats_out[0].new_zeros((), dtype=torch.float32)
    for fo, fc in zip(feats_out[:3], feats_content[:3]):
        loss = loss + F.mse_loss(instance_norm(fo), instance_norm(fc.detach()))
    return loss


def intensity_loss(image: torch.Tensor, style: torch.Tensor, quantiles: int = 64) -> torch.Tensor:
    """How far the output's grey-level distribution is from its style image's (profile option
    stylizer.<kind>.intensity_weight, a deviation): MSE between the two images' quantiles, in [0, 1] units. The
    feature statistics of the style loss leave the grey levels of each structure loose; this pins them."""
    q = torch.linspace(0.0, 1.0, quantiles, device=image.device)

    def at(x):                                                       # (B, quantiles) of each image
        v = x.flatten(1).float().sort(dim=1).values
        return v[:, (q * (v.shape[1] - 1)).round().long()]
    return F.mse_loss(at(image), at(style.detach()))


class PatchCritic(nn.Module):
    """A small convolutional critic that scores every ~38-px patch of a slice as real target (high) or stylized
    (low): the adversarial deviation, which asks for the target's look where it sits in the anatomy."""

    def __init__(self, channels: int = 16):
        super().__init__()
        c = channels
        self.net = nn.Sequential(nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 2 * c, 4, 2, 1),
                                 nn.LeakyReLU(0.2), nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(4 * c, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)                                             # (B, 1, H/8, W/8) logits


def adversarial_losses(critic: nn.Module, image: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss, stylizer loss), non-saturating: the critic learns real vs the detached stylized image; the
    stylizer's term scores the image through a frozen copy of the critic's weights, so one optimizer step
    updates each on its own objective."""
    l_critic = F.softplus(-critic(real).float()).mean() + F.softplus(critic(image.detach()).float()).mean()
    frozen = {k: v.detach() for k, v in critic.named_parameters()}
    l_gen = F.softplus(-torch.func.functional_call(critic, frozen, (image,)).float()).mean()
    return l_critic, l_gen


def deviation_losses(losses: dict, weights: dict, *, feats_out, feats_content, image, style, critic=None) -> dict:
    """Add the deviations' losses that have a weight (detail, intensity, adversarial: needs `critic`) to a
    stylizer's losses and total."""
    if weights.get("detail", 0) > 0:
        losses["detail"] = detail_loss(feats_out, feats_content)
        losses["total"] = losses["total"] + weights["detail"] * losses["detail"]
    if weights.get("intensity", 0) > 0:
        losses["intensity"] = intensity_loss(image, style)
        losses["total"] = losses["total"] + weights["intensity"] * losses["intensity"]
    if weights.get("adversarial", 0) > 0:
        losses["critic"], losses["adversarial"] = adversarial_losses(critic, image, style)
        losses["total"] = losses["total"] + weights["adversarial"] * (losses["critic"] + losses["adversarial"])
    return losses


def content_loss(feat_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Paper eq. (3): MSE between the output's relu4_1 features and the AdaIN target t."""
    return F.mse_loss(feat_out.float(), target.float())


def style_loss(feats_out: list[torch.Tensor], feats_style: list[torch.Tensor]) -> torch.Tensor:
    """Paper eq. (4): sum over relu1_1..relu4_1 of MSE of channel means plus MSE of channel stds."""
    loss = feats_out[0].new_zeros((), dtype=torch.float32)
    for fo, fs in zip(feats_out, feats_style):
        mo, so = mean_std(fo)
        ms, ss = mean_std(fs)
        loss = loss + F.mse_loss(mo, ms) + F.mse_loss(so, ss)
    return loss
