"""AdaConv: adaptive convolutions for style transfer (Chandran et al., CVPR 2021; RElbers' design).

A style image's relu4_1 features go through a global style encoder to a descriptor W (S x k x k; a
fully connected layer, so the style image has a fixed size). At each of 4 decoder scales, kernel
predictors turn W into per-sample depthwise kernels (C x C/g x k x k), pointwise kernels
(C x C/g x 1 x 1) and biases (C); an AdaConv block instance-normalises the content features and
convolves them with those kernels. The kernel size k is a parameter (the paper's future work asks for
larger ones). Per-sample kernels run as one grouped convolution over the whole batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_lib.core.errors import CmrError, check_int
from cmr_lib.models.adain import (Grain, PatchCritic, content_features, content_loss, deviation_losses, grain_noise,
                                  instance_norm, style_loss, zero_skips)
from cmr_lib.models.vgg import VGGEncoder, scaled

GROUP_DIVISORS = (1, 2, 4, 8)        # groups = channels / divisor: 512, 128, 32, 8 at width 1


def _conv(cin, cout, k=3):
    return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="reflect")


class GlobalStyleEncoder(nn.Module):
    """relu4_1 (B, C, s, s) -> W (B, S, k, k): 3 x [conv, LeakyReLU, avg-pool 2], then a fully connected layer."""

    def __init__(self, *, channels: int, style_dim: int, kernel_size: int, image_size: int):
        super().__init__()
        self.shape = (style_dim, kernel_size, kernel_size)
        blocks = []
        for _ in range(3):
            blocks += [_conv(channels, channels), nn.LeakyReLU(), nn.AvgPool2d(2)]
        self.convs = nn.Sequential(*blocks)
        side = image_size // 8                                   # relu4_1 side
        for _ in range(3):
            side //= 2
        if side < 1:
            raise ValueError(f"AdaConv needs style images of at least 64 px (got {image_size})")
        self.image_size = image_size
        self.fc = nn.Linear(channels * side * side, style_dim * kernel_size * kernel_size)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        if feat.shape[-1] * 8 != self.image_size or feat.shape[-2] * 8 != self.image_size:
            raise ValueError(f"AdaConv style images must be {self.image_size}x{self.image_size} "
                             f"(its fully connected layer fixes the size), got {feat.shape[-2] * 8}x{feat.shape[-1] * 8}")
        x = self.convs(feat)                                     # (B, C, s/8, s/8)
        return self.fc(x.flatten(1)).view(-1, *self.shape)       # (B, S, k, k)


class KernelPredictor(nn.Module):
    """W (B, S, k, k) -> depthwise (B, C, C/g, k, k), pointwise (B, C, C/g, 1, 1), bias (B, C)."""

    def __init__(self, *, style_dim: int, channels: int, groups: int, kernel_size: int):
        super().__init__()
        self.c, self.g, self.k = channels, groups, kernel_size
        self.spatial = _conv(style_dim, channels * channels // groups)
        self.pointwise = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(style_dim, channels * channels // groups, 1))
        self.bias = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(style_dim, channels, 1))

    def identity_init(self):
        """Style-independent start: depthwise = box filter on each channel, pointwise = identity, bias = 0."""
        cg = self.c // self.g
        eye = torch.zeros(self.c, cg)
        eye[torch.arange(self.c), torch.arange(self.c) % cg] = 1.0
        with torch.no_grad():
            for layer in (self.spatial, self.pointwise[1], self.bias[1]):
                layer.weight.zero_()
            self.spatial.bias.copy_(eye.flatten() / (self.k * self.k))
            self.pointwise[1].bias.copy_(eye.flatten())
            self.bias[1].bias.zero_()

    def forward(self, w: torch.Tensor):
        b, cg = w.shape[0], self.c // self.g
        depthwise = self.spatial(w).view(b, self.c, cg, self.k, self.k)
        pointwise = self.pointwise(w).view(b, self.c, cg, 1, 1)
        return depthwise, pointwise, self.bias(w).view(b, self.c)


def adaptive_conv(x: torch.Tensor, depthwise, pointwise, bias, groups: int) -> torch.Tensor:
    """Per-sample kernels as one grouped convolution: the batch is folded into the channels.

    Runs in fp32 even under bf16 autocast: on CPU the backward of a convolution with B*g groups is
    several times slower in bf16 (measured: 23.6 vs 9.3 s per training step at 224 px).
    """
    with torch.autocast(x.device.type, enabled=False):
        return _adaptive_conv(x.float(), depthwise.float(), pointwise.float(), bias.float(), groups)


def _adaptive_conv(x, depthwise, pointwise, bias, groups):
    b, c, h, w = x.shape
    k = depthwise.shape[-1]
    x = F.instance_norm(x)                                                    # (B, C, H, W), no affine
    x = F.pad(x.reshape(1, b * c, h, w), (k // 2,) * 4, mode="reflect")       # (1, B*C, H+k-1, W+k-1)
    x = F.conv2d(x, depthwise.reshape(b * c, c // groups, k, k), groups=b * groups)
    x = F.conv2d(x, pointwise.reshape(b * c, c // groups, 1, 1), bias.reshape(b * c), groups=b * groups)
    return x.reshape(b, c, h, w)


class AdaConvBlock(nn.Module):
    """Kernel predictor + adaptive convolution + an ordinary 3x3 convolution (C -> C_out)."""

    def __init__(self, *, style_dim, channels, out_channels, groups, kernel_size):
        super().__init__()
        self.groups = groups
        self.predict = KernelPredictor(style_dim=style_dim, channels=channels, groups=groups, kernel_size=kernel_size)
        self.conv = _conv(channels, out_channels)

    def forward(self, x, w):
        return self.conv(adaptive_conv(x, *self.predict(w), groups=self.groups))


class AdaConvDecoder(nn.Module):
    """relu4_1 content (B, 512w, H/8, W/8) + W -> grey image (B, 1, H, W); AdaConv blocks at 4 scales. With
    skips (a deviation, stylizer.adaconv.skips), the content's normalised relu3_1..relu1_1 are added back after
    each upsampling, as in RAIN's SkipDecoder."""

    def __init__(self, *, width: float, style_dim: int, kernel_size: int, skips: bool = False, grain: bool = False):
        super().__init__()
        c512, c256, c128, c64 = (scaled(c, width) for c in (512, 256, 128, 64))
        up = nn.Upsample(scale_factor=2, mode="nearest")
        blk = dict(style_dim=style_dim, kernel_size=kernel_size)
        self.blocks = nn.ModuleList([
            AdaConvBlock(channels=c512, out_channels=c256, groups=c512 // GROUP_DIVISORS[0], **blk),
            AdaConvBlock(channels=c256, out_channels=c256, groups=c256 // GROUP_DIVISORS[1], **blk),
            AdaConvBlock(channels=c128, out_channels=c128, groups=c128 // GROUP_DIVISORS[2], **blk),
            AdaConvBlock(channels=c64, out_channels=c64, groups=c64 // GROUP_DIVISORS[3], **blk),
        ])
        self.after = nn.ModuleList([
            nn.Sequential(nn.ReLU(), up),                                                          # -> H/4
            nn.Sequential(nn.ReLU(), _conv(c256, c256), nn.ReLU(), _conv(c256, c256), nn.ReLU(),
                          _conv(c256, c128), nn.ReLU(), up),                                       # -> H/2
            nn.Sequential(nn.ReLU(), _conv(c128, c64), nn.ReLU(), up),                             # -> H
            nn.Sequential(nn.ReLU(), _conv(c64, 1)),                                               # grey
        ])
        self.skips = zero_skips(width) if skips else None
        self.grain = Grain(c64) if grain else None

    def plain_convs(self) -> list[nn.Conv2d]:
        """The ordinary convolutions in data-flow order: they mirror the AdaIN decoder's nine, one to one."""
        out = []
        for block, after in zip(self.blocks, self.after):
            out += [block.conv] + [m for m in after if isinstance(m, nn.Conv2d)]
        return out

    def forward(self, x: torch.Tensor, w: torch.Tensor, levels=None, noise=None) -> torch.Tensor:
        """x: relu4_1 content; w: style descriptor; levels: the content's [relu1_1, relu2_1, relu3_1] (skips);
        noise: the grain's (B, 1, H, W) noise map."""
        for k, (block, after) in enumerate(zip(self.blocks, self.after)):
            x = after(block(x, w))
            if self.skips is not None and k < 3:
                x = x + self.skips[k](instance_norm(levels[2 - k]).to(x.dtype))
            if self.grain is not None and k == 2:
                x = self.grain(x, noise)
        return x


class AdaConv(nn.Module):
    """VGG encoder (frozen) + global style encoder + AdaConv decoder."""

    kind = "adaconv"

    def __init__(self, encoder: VGGEncoder, *, image_size: int, kernel_size: int = 3, style_dim: int = 512,
                 content_weight=1.0, style_weight=10.0, detail_weight=0.0, intensity_weight=0.0, skips=False,
                 grain=False, adversarial_weight=0.0):
        super().__init__()
        if check_int("kernel_size", kernel_size, minimum=1, hint=" and odd") % 2 == 0:
            raise CmrError(f"parameter 'kernel_size' = {kernel_size!r}: must be a positive integer and odd")
        self.encoder = encoder
        self.style_dim = scaled(style_dim, encoder.width)
        c4 = encoder.out_channels["relu4_1"]
        self.style_encoder = GlobalStyleEncoder(channels=c4, style_dim=self.style_dim, kernel_size=kernel_size,
                                                image_size=image_size)
        self.skips = bool(skips)
        self.decoder = AdaConvDecoder(width=encoder.width, style_dim=self.style_dim, kernel_size=kernel_size,
                                      skips=self.skips, grain=grain)
        self.weights = dict(content=content_weight, style=style_weight, detail=detail_weight,
                            intensity=intensity_weight, adversarial=adversarial_weight)
        self.critic = PatchCritic() if adversarial_weight > 0 else None            # only trained, never used to stylize

    def trainable(self):
        critic = [] if self.critic is None else list(self.critic.parameters())
        return list(self.style_encoder.parameters()) + list(self.decoder.parameters()) + critic

    def losses(self, content: torch.Tensor, style: torch.Tensor, *, generator=None) -> dict:
        """Content loss on relu4_1 against the content's own features; mean/std style loss (weight 10); the
        deviations' detail and intensity losses where the profile weighs them."""
        levels_c = self.encoder(content) if self.weights["detail"] > 0 or self.skips else None
        f_c = levels_c[-1] if levels_c is not None else self.encoder(content, last_only=True)
        f_s = self.encoder(style)
        out = self.decode(levels_c if self.skips else f_c, self.style_encoder(f_s[-1]),
                          noise=grain_noise(self, content, generator))
        f_o = self.encoder(out)
        l_c = content_loss(f_o[-1], f_c)
        l_s = style_loss(f_o, f_s)
        total = self.weights["content"] * l_c + self.weights["style"] * l_s
        return deviation_losses({"total": total, "content": l_c, "style": l_s}, self.weights, feats_out=f_o,
                                feats_content=levels_c, image=out, style=style, critic=self.critic)

    def decode(self, content_feat, w: torch.Tensor, noise=None) -> torch.Tensor:
        """The decoder on content features (relu4_1, or every level with skips) and a descriptor W (unclipped)."""
        if isinstance(content_feat, (list, tuple)):
            return self.decoder(content_feat[-1], w, list(content_feat[:3]), noise=noise)
        return self.decoder(content_feat, w, noise=noise)

    def style_descriptor(self, style: torch.Tensor) -> torch.Tensor:
        """W (B, S, k, k) of style images (computed once, reusable for many contents)."""
        return self.style_encoder(self.encoder(style, last_only=True))

    def stylize(self, content: torch.Tensor, style: torch.Tensor, *, generator=None, **_) -> torch.Tensor:
        """Content restyled like `style` (one style per content, or one for all), clipped to [0, 1]; `generator`
        draws the grain's noise."""
        w = self.style_descriptor(style)
        if w.shape[0] == 1 and content.shape[0] > 1:
            w = w.expand(content.shape[0], -1, -1, -1)
        return self.decode(content_features(self.encoder, content, self.skips), w,
                           noise=grain_noise(self, content, generator)).clamp(0.0, 1.0)
