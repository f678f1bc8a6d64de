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
