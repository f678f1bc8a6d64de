"""RAIN: random AdaIN with a style VAE (Luo et al., the RoyalVane/ASM design), paper eq. (2)-(6).

The style of an image is the 1024-d vector [mean ⊕ std] of its relu4_1 features. A VAE maps it to a
512-d latent z (and back); any z decodes to a style that AdaIN applies to the content, so styles can
be sampled around a real one and *mined*: `explore` (models.style_search) pushes z along the gradient of
a downstream (segmentation) loss to find harder styles (ASM's rule z <- z + (20 / loss) * grad).

Design choices (differ from the reference), both about keeping the VAE well-defined on MR data:
- the VAE predicts the log-variance, so sigma = exp(logvar/2) is always positive and the KL term always
  defined; the reference uses a raw linear sigma that can be negative. Decoded stds are clamped at 1e-5.
- the VAE sees *standardised* style vectors (per-dimension shift and scale measured once on the training
  styles, kept as buffers) and L_rec is measured in those units. MR styles vary far less than the
  reference's paintings (per-dimension variance ~0.01), and on raw vectors the KL term won: the posterior
  collapsed to the prior (measured: sigma ~ 1, every style decoded to the same washed-out average).

    L = L_c + lambda1 L_s + lambda2 L_KL + lambda3 L_rec      (reference weights 1, 1, 1, 5)

The image decoder learns from L_c + L_s only and the VAE from L_KL + L_rec only (the decoded style is
detached on the image path), which is what the reference's two-stage update does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmr_lib.core.errors import CmrError
from cmr_lib.models.adain import (EPS, Decoder, PatchCritic, SkipDecoder, adain_stats, content_loss, deviation_losses,
                                  grain_noise, mean_std, style_loss)
from cmr_lib.models.style_search import LatentStyleSearch
from cmr_lib.models.vgg import VGGEncoder


def style_vector(feat: torch.Tensor) -> torch.Tensor:
    """relu4_1 features (B, C, H, W) -> style vector [mean ⊕ std] (B, 2C)."""
    m, s = mean_std(feat)
    return torch.cat([m.flatten(1), s.flatten(1)], dim=1)


def split_style(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Style vector (B, 2C) -> mean, std as (B, C, 1, 1); std clamped positive."""
    c = vec.shape[1] // 2
    return vec[:, :c, None, None], vec[:, c:, None, None].clamp_min(EPS)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Paper eq. (5): KL(N(mu, sigma^2) || N(0, 1)) averaged over batch and dimensions; zero at mu=0, sigma=1."""
    return 0.5 * torch.mean(mu.pow(2) + logvar.exp() - logvar - 1.0)


class StyleVAE(nn.Module):
    """Style vector (B, 2C) <-> latent (B, C): three Linear layers each way (1024-1024-1024-512 at width 1)."""

    def __init__(self, *, style_dim: int = 1024, latent_dim: int = 512, hidden: int = 1024):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Linear(style_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * latent_dim))           # -> [mu | logvar]
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, style_dim))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        self.register_buffer("shift", torch.zeros(style_dim))                      # style standardisation
        self.register_buffer("scale", torch.ones(style_dim))

    def calibrate(self, vecs: torch.Tensor) -> None:
        """Set the standardisation from style vectors (B, 2C) of training styles."""
        with torch.no_grad():
            self.shift.copy_(vecs.float().mean(0))
            self.scale.copy_(vecs.float().std(0).clamp_min(1e-3))

    def standardise(self, vec: torch.Tensor) -> torch.Tensor:
        return (vec - self.shift) / self.scale

    def encode(self, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(self.standardise(vec)).chunk(2, dim=1)           # (B, C), (B, C)
        return mu, logvar.clamp(-20.0, 10.0)

    def decode_standardised(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)                                                      # (B, 2C) standardised

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) * self.scale + self.shift                            # (B, 2C) style vector

    @staticmethod
    def sample(mu, logvar, generator=None) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + eps * (0.5 * logvar).exp()


class RAIN(LatentStyleSearch, nn.Module):
    """VGG encoder (frozen) + style VAE + AdaIN + mirror decoder."""

    kind = "rain"

    def __init__(self, encoder: VGGEncoder, *, content_weight=1.0, style_weight=1.0, kl_weight=1.0,
                 rec_weight=5.0, detail_weight=0.0, intensity_weight=0.0, skips: bool = False, grain: bool = False,
                 adversarial_weight: float = 0.0):
        super().__init__()
        self.encoder = encoder
        c4 = encoder.out_channels["relu4_1"]
        self.skips = bool(skips)
        if grain and not skips:
            raise CmrError("parameter 'stylizer.rain.grain' = true: needs stylizer.rain.skips: true")
        self.decoder = SkipDecoder(width=encoder.width, grain=grain) if self.skips else Decoder(width=encoder.width)
        self.vae = StyleVAE(style_dim=2 * c4, latent_dim=c4, hidden=2 * c4)
        self.weights = dict(content=content_weight, style=style_weight, kl=kl_weight, rec=rec_weight,
                            detail=detail_weight, intensity=intensity_weight, adversarial=adversarial_weight)
        self.critic = PatchCritic() if adversarial_weight > 0 else None            # only trained, never used to stylize

    def trainable(self):
        """Parameters the optimizer updates (the encoder stays frozen)."""
        critic = [] if self.critic is None else list(self.critic.parameters())
        return list(self.decoder.parameters()) + list(self.vae.parameters()) + critic

    def calibrate(self, styles: torch.Tensor) -> None:
        """Measure the style standardisation on training style images (B, 1, H, W); call before training."""
        with torch.no_grad():
            self.vae.calibrate(style_vector(self.encoder(styles, last_only=True)))

    def losses(self, content: torch.Tensor, style: torch.Tensor, *, generator=None) -> dict:
        """One training step's losses (eq. 2-6): content (B,1,H,W) and style (B,1,H,W) in [0, 1]."""
        need_levels = self.skips or self.weights["detail"] > 0
        levels_c = self.encoder(content) if need_levels else None
        f_c = levels_c[-1] if need_levels else self.encoder(content, last_only=True)   # (B, C, H/8, W/8)
        f_s = self.encoder(style)                                                  # 4 levels
        vec = style_vector(f_s[-1]).detach()                                       # (B, 2C)
        mu, logvar = self.vae.encode(vec)
        rec_std = self.vae.decode_standardised(self.vae.sample(mu, logvar, generator))
        vec_hat = rec_std * self.vae.scale + self.vae.shift
        l_kl = kl_loss(mu, logvar)
        l_rec = F.mse_loss(rec_std.float(), self.vae.standardise(vec).float())     # in standardised units
        t = adain_stats(f_c, *split_style(vec_hat.detach()))                      # AdaIN with the VAE's style
        out = (self.decoder(t, levels_c[:3], noise=grain_noise(self, content, generator)) if self.skips
               else self.decoder(t))                                               # (B, 1, H, W)
        f_o = self.encoder(out)
        l_c = content_loss(f_o[-1], t.detach())
        l_s = style_loss(f_o, f_s)
        w = self.weights
        total = w["content"] * l_c + w["style"] * l_s + w["kl"] * l_kl + w["rec"] * l_rec
        return deviation_losses({"total": total, "content": l_c, "style": l_s, "kl": l_kl, "rec": l_rec}, w,
                                feats_out=f_o, feats_content=levels_c, image=out, style=style, critic=self.critic)

    # ---- stylization -------------------------------------------------------------------------
    def style_code(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the style images' latent: (B, C) each."""
        return self.vae.encode(style_vector(self.encoder(style, last_only=True)))

    def render(self, content_feat, z: torch.Tensor, noise=None) -> torch.Tensor:
        """Decode latent z (B, C) to a style and apply it to the content's features (content_features: relu4_1, or
        every level with skips; noise: the grain's, see adain.grain_noise); image in [0, 1]."""
        if isinstance(content_feat, (list, tuple)):
            t = adain_stats(content_feat[-1], *split_style(self.vae.decode(z)))
            return self.decoder(t, list(content_feat[:3]), noise=noise).clamp(0.0, 1.0)
        t = adain_stats(content_feat, *split_style(self.vae.decode(z)))
        return self.decoder(t).clamp(0.0, 1.0)                                     # (B, 1, H, W)
