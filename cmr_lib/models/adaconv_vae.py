"""AdaConv + VAE: AdaConv whose global style descriptor W passes through a style VAE, so that the paper's
adversarial style search (RAIN's, models.style_search) works for predicted kernels too (its Section 7).

The flattened descriptor W (S*k*k) is standardised and encoded to a latent z (S); z decodes back to a W
that the kernel predictors turn into kernels. The VAE is RAIN's (`StyleVAE`: log-variance, standardised
inputs, the same KL and reconstruction losses and weights). One difference: RAIN's style vector comes
from the frozen encoder, so its standardisation is measured once; W is learnt, so its standardisation
follows W during training (running mean and std, momentum 0.01) and is frozen afterwards.

The decoder sees the VAE's decoded W (a sample around the style), as RAIN's decoder sees the VAE's style;
the style encoder still learns from the content and style losses through a straight-through copy
(forward: decoded W; backward: as if W itself), and the VAE learns from L_KL + L_rec only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cmr_lib.models.adain import content_loss, style_loss
from cmr_lib.models.adaconv import AdaConv
from cmr_lib.models.rain import StyleVAE, kl_loss
from cmr_lib.models.style_search import LatentStyleSearch
from cmr_lib.models.vgg import VGGEncoder

MOMENTUM = 0.01          # running standardisation of W while it is learnt


class AdaConvVAE(LatentStyleSearch, AdaConv):
    """VGG encoder (frozen) + global style encoder + style VAE on W + AdaConv decoder."""

    kind = "adaconv-vae"

    def __init__(self, encoder: VGGEncoder, *, image_size: int, kernel_size: int = 3, style_dim: int = 512,
                 content_weight=1.0, style_weight=10.0, kl_weight=1.0, rec_weight=5.0):
        super().__init__(encoder, image_size=image_size, kernel_size=kernel_size, style_dim=style_dim,
                         content_weight=content_weight, style_weight=style_weight)
        self.w_shape = (self.style_dim, kernel_size, kernel_size)
        flat = self.style_dim * kernel_size * kernel_size
        self.vae = StyleVAE(style_dim=flat, latent_dim=self.style_dim, hidden=2 * self.style_dim)
        self.weights.update(kl=kl_weight, rec=rec_weight)

    def trainable(self):
        return super().trainable() + list(self.vae.parameters())

    def calibrate(self, styles: torch.Tensor) -> None:
        """Start the W standardisation from training style images (B, 1, H, W); call before training."""
        with torch.no_grad():
            self.vae.calibrate(self.style_descriptor(styles).flatten(1))

    def _track(self, flat: torch.Tensor) -> None:
        """Follow the learnt W's per-dimension mean and std (training only)."""
        with torch.no_grad():
            self.vae.shift.lerp_(flat.float().mean(0), MOMENTUM)
            self.vae.scale.lerp_(flat.float().std(0).clamp_min(1e-3), MOMENTUM)

    def losses(self, content: torch.Tensor, style: torch.Tensor, *, generator=None) -> dict:
        """AdaConv's content and style losses on the image decoded with the VAE's W, plus the VAE's KL and
        reconstruction losses (RAIN's eq. 5-6, in standardised units)."""
        f_c = self.encoder(content, last_only=True)
        f_s = self.encoder(style)
        w = self.style_encoder(f_s[-1])                                           # (B, S, k, k)
        flat = w.flatten(1)
        if self.training:
            self._track(flat.detach())
        mu, logvar = self.vae.encode(flat.detach())
        rec_std = self.vae.decode_standardised(self.vae.sample(mu, logvar, generator))
        w_hat = (rec_std * self.vae.scale + self.vae.shift).view_as(w)
        l_kl = kl_loss(mu, logvar)
        l_rec = F.mse_loss(rec_std.float(), self.vae.standardise(flat.detach()).float())
        out = self.decoder(f_c, w + (w_hat - w).detach())                         # straight-through
        f_o = self.encoder(out)
        l_c = content_loss(f_o[-1], f_c)
        l_s = style_loss(f_o, f_s)
        wt = self.weights
        total = wt["content"] * l_c + wt["style"] * l_s + wt["kl"] * l_kl + wt["rec"] * l_rec
        return {"total": total, "content": l_c, "style": l_s, "kl": l_kl, "rec": l_rec}

    def style_code(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the style images' latent: (B, S) each."""
        return self.vae.encode(self.style_descriptor(style).flatten(1))

    def render(self, content_feat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decode latent z (B, S) to W, predict kernels and restyle content relu4_1 features; image in [0, 1]."""
        w = self.vae.decode(z).view(-1, *self.w_shape)
        return self.decoder(content_feat, w).clamp(0.0, 1.0)
